"""Work on a Dask cluster gives the same bytes as in one process (docs/scale.md): config
sums over shards, with any number of workers and when a worker dies mid-evaluation."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from typer.testing import CliRunner

from ami_engine import ENGINE_MODEL
from ami_engine.cli import app
from ami_engine.cluster import (
    ClusterError,
    ClusterSpec,
    DaskShardEvaluator,
    cluster_client,
    local_cluster_options,
    metrics_on_cluster,
    run_on_cluster,
)
from ami_engine.config import LEARNED_BOUNDS, load_config
from ami_engine.engine import DIRECT_MAX_CONFIGS, ScoreTable, direct_sums, run
from ami_engine.engine import _kernel as kernel
from ami_engine.io import parquet as parquet_module
from ami_engine.io.files import InputError
from ami_engine.io.parquet import write_traces as write_parquet_traces
from ami_engine.io.stateset import StateSet
from ami_engine.io.traces import write_traces
from ami_engine.learning.feedback_metrics import metrics_from_traces
from ami_engine.scenario import generate

BASE = load_config("base")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def client():
    with LocalCluster(**local_cluster_options(2)) as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def shards():
    states = generate("chaos", 3000, seed=3, streams=12)
    codes, n_streams = states.stream_codes()
    return [states.subset(np.flatnonzero(codes % 3 == k)) for k in range(3)]


@pytest.fixture(scope="module")
def configs():
    base = load_config("base")
    rng = np.random.default_rng(5)
    out = [base]
    for _ in range(7):
        out.append(base.replace(**{k: float(rng.uniform(lo, hi)) for k, (lo, hi) in LEARNED_BOUNDS.items()}))
    return out


def _in_process(shards, baseline, configs, chosen):
    """The contract: each shard's sums (directly for a few configs, else through its score
    table), added in ascending shard index from zeros."""
    total = np.zeros((len(configs), kernel.N_SUMS))
    for i in sorted(chosen):
        if len(configs) <= DIRECT_MAX_CONFIGS:
            part = direct_sums(shards[i], configs)
        else:
            part = ScoreTable(shards[i], baseline).evaluate(configs)
        total = total + part.to_array()
    return total


# ------------------------------------------------------------------------- the spec


@pytest.mark.parametrize("text, workers, address", [
    ("local:1", 1, None), ("local:16", 16, None), ("tcp://127.0.0.1:8786", None, "tcp://127.0.0.1:8786"),
    ("tcp://scheduler.example:8786", None, "tcp://scheduler.example:8786"),
])
def test_cluster_spec_names_local_workers_or_a_scheduler(text, workers, address):
    spec = ClusterSpec.parse(text)
    assert (spec.workers, spec.address) == (workers, address)
    assert str(spec) == text


@pytest.mark.parametrize("text", ["local", "local:0", "local:x", "local:-1", "local:257", "tcp://host",
                                  "tcp://:8786", "tcp://host:0", "tcp://host:99999", "http://host:8786", "", "2"])
def test_a_bad_cluster_spec_is_refused(text):
    with pytest.raises(ClusterError):
        ClusterSpec.parse(text)


def test_no_scheduler_at_the_address_is_a_cluster_error():
    with pytest.raises(ClusterError, match="no Dask scheduler answered"):
        with cluster_client("tcp://127.0.0.1:9", connect_timeout=0.5):
            pass


_ENGINE_SERVER_RUN = """
import json, os, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_cluster import _evaluate_killing_a_worker, _in_process
from ami_engine.cluster import DaskShardEvaluator, cluster_client
from ami_engine.config import load_config
from ami_engine.scenario import generate

if __name__ == "__main__":
    base = load_config("base")
    states = generate("chaos", 6000, seed=4, streams=8)
    codes, _ = states.stream_codes()
    shards = [states.subset(np.flatnonzero(codes % 2 == k)) for k in range(2)]
    many = [base.replace(J_MIN=0.5 + i / 400, H_MAX=0.2 + i / 800) for i in range(160)]
    with cluster_client("local:2", engine=True, lazy=True) as connect:
        assert not connect.started
        client = connect()
        def facts():
            import numba
            from numba.core.registry import CPUDispatcher
            from ami_engine.engine import _kernel
            loaded = sorted(name for name, f in vars(_kernel).items() if isinstance(f, CPUDispatcher) and f.signatures)
            try:
                layer = numba.threading_layer()
            except ValueError:  # no compiled loop has started its threads here
                layer = None
            return os.getppid(), "ami_engine.engine" in sys.modules, loaded, layer
        before = client.run(facts)
        def threads(share, i):
            import numba
            from ami_engine.cluster._evaluator import use_cores
            use_cores(share=share)
            return numba.get_num_threads()
        threads = [client.gather([client.submit(threads, share, i, pure=False) for i in range(4)])
                   for share in (True, False)]
        with DaskShardEvaluator(client, shards, base) as evaluator:
            evaluator.evaluate(many[:1], [0, 1])
            killed = _evaluate_killing_a_worker(client, evaluator, many, [0, 1])
            again = evaluator.evaluate(many, [0, 1]).to_array().tobytes()
        after = client.run(facts)
    expected = _in_process(shards, base, many, [0, 1]).tobytes()
    print(json.dumps({"server": os.getpid(), "before": list(before.values()), "after": list(after.values()),
                      "threads": threads, "same": [killed == expected, again == expected]}))
"""


def test_local_workers_start_with_the_engine_loaded_use_the_cores_asked_and_survive_a_kill(tmp_path):
    """A local cluster for engine work forks its workers from a server that loaded the
    engine and its compiled loops once: each worker has them before its first task, runs
    on its share of the cores or on all of them as the work asks, and one killed
    mid-evaluation is forked again with them, the sums the in-process bytes. (A fresh
    process: this one's server is running.)"""
    script = tmp_path / "engine_server.py"
    script.write_text(_ENGINE_SERVER_RUN)
    done = subprocess.run([sys.executable, str(script), os.path.dirname(__file__)], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    cpus = len(os.sched_getaffinity(0))
    assert facts["same"] == [True, True]
    # Deciding slices: one compiled-loop thread per core, not per core per worker; scoring
    # configs on uneven shards: every core, for a worker done early leaves its cores.
    assert facts["threads"] == [[max(1, cpus // 2)] * 4, [numba.config.NUMBA_NUM_THREADS] * 4]
    for parent, engine, loaded, layer in facts["before"] + facts["after"]:  # the replacement too
        assert parent != facts["server"] and engine  # forked by the server, not started from the driver
        assert loaded == ["build_score_table", "finish", "pre_direct", "pre_sweep"]
        assert layer in ("workqueue", "tbb")  # fork-safe: GNU OpenMP refuses to run in a forked child


def test_a_lazy_connection_starts_a_local_cluster_when_first_called():
    with cluster_client("local:1", lazy=True) as connect:
        assert not connect.started
        client = connect()
        assert connect.started and connect() is client and len(client.scheduler_info()["workers"]) == 1


def test_a_lazy_connection_reaches_a_scheduler_elsewhere_at_once():
    with pytest.raises(ClusterError, match="no Dask scheduler answered"):
        with cluster_client("tcp://127.0.0.1:9", connect_timeout=0.5, lazy=True):
            pass


def test_summing_metrics_needs_neither_the_engine_nor_its_compiled_kernels():
    code = ("import sys; from ami_engine.cluster import cluster_client, metrics_on_cluster; "
            "import ami_engine.cluster._metrics; print(sorted(m for m in ('numba', 'ami_engine.engine') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# -------------------------------------------------------------------- the evaluator


def test_shard_sums_equal_the_in_process_sums_bit_for_bit_on_two_workers(client, shards, configs):
    baseline = configs[0]
    with DaskShardEvaluator(client, shards, baseline) as evaluator:
        for chosen in ([0, 1, 2], [2, 0], [1]):
            got = evaluator.evaluate(configs, chosen)
            assert got.to_array().shape == (len(configs), kernel.N_SUMS)
            assert got.to_array().tobytes() == _in_process(shards, baseline, configs, chosen).tobytes()
        # The tables stay where they were built: a second round sends only configs.
        assert evaluator.evaluate(configs[:3], [0, 1, 2]).to_array().tobytes() == \
            _in_process(shards, baseline, configs[:3], [0, 1, 2]).tobytes()
        assert len(evaluator.evaluate([], [0])) == 0
        with pytest.raises(ValueError):
            evaluator.evaluate(configs, [0, 0])
        with pytest.raises(ValueError):
            evaluator.evaluate(configs, [3])


def test_each_worker_takes_every_core_for_a_call_whose_shards_fall_unevenly_on_the_workers(client, configs):
    """Shards are dealt to the two workers in turn; a call whose decisions fall more
    unevenly than 1.25 to 1 on them lets each worker's loops take every core."""
    states = generate("chaos", 2600, seed=9, streams=26)
    codes, _ = states.stream_codes()
    sizes = (1000, 1000, 300, 300)  # whole streams of 100 states: worker 0 gets shards 0 and 2, worker 1 1 and 3
    bounds = np.cumsum((0, *sizes))
    shards = [states.subset(np.flatnonzero((codes >= a // 100) & (codes < b // 100)))
              for a, b in zip(bounds, bounds[1:], strict=False)]
    assert [len(s) for s in shards] == list(sizes)
    with DaskShardEvaluator(client, shards, configs[0]) as evaluator:
        assert not evaluator._uneven([0, 1, 2, 3]) and not evaluator._uneven([0, 1])  # 1300 : 1300, 1000 : 1000
        assert evaluator._uneven([0, 1, 2]) and evaluator._uneven([1])  # 1300 : 1000, 0 : 1000
        assert not evaluator._uneven([])


def test_only_the_first_shards_keep_their_tables_when_asked_and_the_sums_do_not_change(client, shards, configs):
    baseline = configs[0]
    with DaskShardEvaluator(client, shards, baseline, keep_first=1) as evaluator:
        got = evaluator.evaluate(configs, [0, 1, 2])
        assert got.to_array().tobytes() == _in_process(shards, baseline, configs, [0, 1, 2]).tobytes()
        held = client.gather(evaluator._tables)
        assert [s.scorer.holds_table for s in held] == [True, False, False]


def _evaluate_killing_a_worker(client, evaluator, configs, shards):
    """The bytes of `evaluator.evaluate(configs, shards)` with a worker killed while it
    evaluates; returns once the cluster has its two workers again."""
    pids = client.run(os.getpid)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("sums", evaluator.evaluate(configs, shards)))
    thread.start()
    victim = None
    while victim is None and thread.is_alive():
        busy = [w for w, keys in client.processing().items() if any("_evaluate" in str(k) for k in keys)]
        victim = busy[0] if busy else None
        time.sleep(0.01)
    assert victim is not None and thread.is_alive(), "the evaluation ended before a worker could be killed"
    os.kill(pids[victim], signal.SIGKILL)
    thread.join()
    client.wait_for_workers(2)
    return result["sums"].to_array().tobytes()


def test_a_worker_killed_mid_evaluation_is_replaced_and_the_sums_are_the_same_bytes(client, configs):
    baseline = configs[0]
    states = generate("chaos", 6000, seed=4, streams=8)
    codes, _ = states.stream_codes()
    shards = [states.subset(np.flatnonzero(codes % 2 == k)) for k in range(2)]
    many = configs * 20  # long enough an evaluation to be caught running
    expected = _in_process(shards, baseline, many, [0, 1])
    evaluator = DaskShardEvaluator(client, shards, baseline)
    try:
        evaluator.evaluate(many[:1], [0, 1])  # the tables are built and kept
        pids_before = client.run(os.getpid)
        assert _evaluate_killing_a_worker(client, evaluator, many, [0, 1]) == expected.tobytes()
        assert set(client.run(os.getpid).values()) != set(pids_before.values())  # a new process took its place
    finally:
        evaluator.close()


def test_local_workers_read_spilled_shards_themselves_with_the_same_bytes_when_one_is_killed(client, configs,
                                                                                            tmp_path):
    """Learning's states spilled to a file (Parquet traces): the tasks carry each shard's
    positions in it, the workers read the values, and the sums are the in-process ones,
    a worker killed mid-evaluation or not."""
    from ami_engine.cluster._evaluator import _Shard
    from ami_engine.learning.data import data_from_traces_file
    from ami_engine.learning.shards import InProcessEvaluator, make_shards

    baseline = configs[0]
    states = generate("chaos", 6000, seed=8, streams=16)
    path = tmp_path / "t.parquet"
    write_parquet_traces(path, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    data = data_from_traces_file(str(path))
    shards = make_shards(data.states, 1, 1500).shards
    assert len(shards) >= 3 and shards.recipe(0) is not None
    recipe = shards.recipe(1)
    assert callable(_Shard(recipe, baseline, keep=False).scorer._shard)  # read for each call, not held
    assert _Shard(recipe, baseline, keep=True).scorer.states().values.tobytes() == shards[1].values.tobytes()
    many = configs * 20
    everything = list(range(len(shards)))
    here = InProcessEvaluator(shards, baseline, 1 << 30, keep_first=1)
    expected = [here.evaluate(c, everything).to_array().tobytes() for c in (many, configs[:2])]
    evaluator = DaskShardEvaluator(client, shards, baseline, keep_first=1, files_shared=True)
    try:
        assert [evaluator.evaluate(c, everything).to_array().tobytes() for c in (many, configs[:2])] == expected
        assert _evaluate_killing_a_worker(client, evaluator, many, everything) == expected[0]
    finally:
        evaluator.close()


# ------------------------------------------------------------------------------ run


def _awkward_states():
    """States whose part files differ in layout: streams and ids missing in some streams,
    times missing in some, repairs on a few."""
    base = generate("chaos", 2400, seed=6, streams=8)
    codes, _ = base.stream_codes()
    streams = [None if c == 0 else f"s{c}" for c in codes.tolist()]
    ids = [None if c in (1, 2) else i for i, c in enumerate(codes.tolist())]
    t = [None if c in (3, 4) else i * 0.5 for i, c in enumerate(codes.tolist())]
    repairs = [{"risk": "clipped"} if i % 97 == 0 else None for i in range(len(base))]
    return StateSet(base.values, streams, t, ids, repairs)


def test_run_on_the_cluster_writes_the_file_run_writes_in_one_process(client, tmp_path):
    states = _awkward_states()
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    write_parquet_traces(here, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    counts = run_on_cluster(client, states, BASE, str(there), chaos=True)
    assert there.read_bytes() == here.read_bytes()
    levels = pq.read_table(here, columns=["level"]).column("level").to_numpy()
    assert counts.tolist() == np.bincount(levels, minlength=3).tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here.parquet", "there.parquet"]  # no parts left


def test_run_on_the_cluster_slice_by_slice_writes_the_same_file(client, tmp_path, monkeypatch):
    """Many slices, each pre-decided on a worker ahead of the one finished here: every
    stream's drift window carried across them, the file the one written in one process."""
    monkeypatch.setattr(parquet_module, "ROW_GROUP_ROWS", 256)
    states = _awkward_states()
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    write_parquet_traces(here, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=False)
    assert pq.ParquetFile(here).metadata.num_row_groups == 10
    counts = run_on_cluster(client, states, BASE, str(there), rows=300)  # rounded up to 512: five slices
    assert there.read_bytes() == here.read_bytes()
    assert counts.sum() == len(states)


def test_mixed_stream_types_are_refused_as_in_one_process(client, tmp_path):
    states = generate("safe", 10, seed=1, streams=2)
    states = StateSet(states.values, ["a"] * 5 + [7] * 5, states.t, states.ids)
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError) as in_process:
        write_parquet_traces(out, run(states, BASE), states, config_id=BASE.config_id, model=ENGINE_MODEL,
                             chaos=False)
    with pytest.raises(InputError) as on_cluster:
        run_on_cluster(client, states, BASE, str(out))
    assert str(on_cluster.value) == str(in_process.value) and ":6: stream: mixes" in str(in_process.value)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module")
def trace_files(tmp_path_factory):
    """Chaos decisions as JSONL, gzip JSONL, and a folder of two Parquet files of many row groups."""
    folder = tmp_path_factory.mktemp("traces")
    states = generate("chaos", 3000, seed=7, streams=10)
    cols = run(states, BASE)
    paths = {"jsonl": folder / "t.jsonl", "gz": folder / "t.jsonl.gz", "parquet": folder / "t.parquet"}
    for path in paths.values():
        write_traces(path, cols, states, config_id=BASE.config_id, model=ENGINE_MODEL, chaos=True)
    table = pq.read_table(paths["parquet"])
    (folder / "set").mkdir()
    pq.write_table(table.slice(0, 1700), folder / "set" / "day=1.parquet", row_group_size=100)
    pq.write_table(table.slice(1700), folder / "set" / "day=2.parquet", row_group_size=100)
    paths["set"] = folder / "set"
    return paths


def test_metric_sums_on_the_cluster_are_the_exact_sums_in_one_process(client, trace_files):
    paths = [trace_files[k] for k in ("jsonl", "gz", "parquet", "set")]
    got = metrics_on_cluster(client, [str(p) for p in paths], block_bytes=16 << 10)
    assert got == [metrics_from_traces(p, workers=1) for p in paths]


def test_a_bad_record_on_the_cluster_is_reported_as_in_one_process(client, trace_files, tmp_path):
    lines = trace_files["jsonl"].read_text().splitlines()
    record = json.loads(lines[2500])
    record["level"] = 7
    lines[2500] = json.dumps(record)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    table = pq.read_table(trace_files["parquet"])
    levels = table.column("level").to_pylist()
    levels[2345] = 9
    table = table.set_column(table.schema.get_field_index("level"), "level",
                             pa.array(levels, type=table.schema.field("level").type))
    pq.write_table(table, tmp_path / "bad.parquet", row_group_size=100)
    for path, where in ((bad, "bad.jsonl:2501: level"), (tmp_path / "bad.parquet", "bad.parquet row 2346: level")):
        with pytest.raises(InputError) as in_process:
            metrics_from_traces(path, workers=1)
        with pytest.raises(InputError) as on_cluster:
            metrics_on_cluster(client, [str(path)], block_bytes=16 << 10)
        assert str(on_cluster.value) == str(in_process.value) and where in str(in_process.value)


# ------------------------------------------------------------------------------ CLI


def test_run_and_metrics_with_cluster_give_the_same_file_and_figures(tmp_path, trace_files):
    here, there = tmp_path / "here.parquet", tmp_path / "there.parquet"
    args = ["run", "--scenario", "chaos", "--n", 2000, "--seed", 3, "--streams", 12]
    assert invoke(*args, "--out", here).exit_code == 0
    result = invoke(*args, "--out", there, "--cluster", "local:1")
    assert result.exit_code == 0, result.output
    assert there.read_bytes() == here.read_bytes()
    files = [trace_files["jsonl"], trace_files["set"]]
    alone = invoke("metrics", *files, "--json")
    shared = invoke("metrics", *files, "--json", "--cluster", "local:1")
    assert alone.exit_code == shared.exit_code == 0
    assert shared.stdout == alone.stdout and json.loads(alone.stdout)["records"] == 6000


@pytest.mark.parametrize("args, message", [
    (["metrics", "x.jsonl", "--cluster", "local:0"], "--cluster: local:N needs a number of workers"),
    (["metrics", "x.jsonl", "--cluster", "localhost:8786"], "--cluster: must be local:N"),
    (["run", "--scenario", "safe", "--n", 5, "--out", "t.jsonl", "--cluster", "local:1"],
     "--cluster: the workers write Parquet"),
])
def test_a_bad_cluster_option_is_a_usage_error(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(*args)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_without_dask_the_cluster_option_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = invoke("run", "--scenario", "safe", "--n", 5, "--out", tmp_path / "t.parquet", "--cluster", "local:2")
    assert result.exit_code == 2 and "pip install 'ami-engine[cluster]'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and list(tmp_path.iterdir()) == []


def test_a_dask_that_cannot_be_imported_is_a_cluster_error(monkeypatch):
    import importlib.machinery
    import types

    broken = types.ModuleType("distributed")  # found, but without what the cluster needs
    broken.__spec__ = importlib.machinery.ModuleSpec("distributed", None)
    monkeypatch.setitem(sys.modules, "distributed", broken)
    with pytest.raises(ClusterError, match="Dask cannot be imported .*pip install 'ami-engine\\[cluster\\]'"):
        with cluster_client("tcp://127.0.0.1:9"):
            pass


def test_learn_with_cluster_hands_the_loop_an_evaluator_whose_sums_on_one_worker_are_the_same_bytes(
        tmp_path, monkeypatch, shards, configs):
    from ami_engine.learning import offline_loop

    seen = {}

    def loop(data, baseline, settings, **kwargs):
        with kwargs["evaluator"](shards, baseline) as evaluator:
            seen["sums"] = evaluator.evaluate(configs, [0, 1, 2])
        raise offline_loop.LearnError("stopped after the evaluator was tried")

    monkeypatch.setattr(offline_loop, "learn", loop)
    result = invoke("learn", "--scenario", "chaos", "--n", 500, "--out", tmp_path / "s.toml", "--cluster", "local:1")
    assert result.exit_code == 2 and "stopped after the evaluator was tried" in result.output
    assert seen["sums"].to_array().tobytes() == _in_process(shards, configs[0], configs, [0, 1, 2]).tobytes()


def test_learn_tells_a_local_clusters_evaluator_that_its_workers_share_the_files(tmp_path, monkeypatch):
    import ami_engine.cluster as cluster_module
    from ami_engine.learning import offline_loop

    given = {}

    def evaluator(client, shards, baseline, **kwargs):
        given.update(kwargs)
        raise offline_loop.LearnError("stopped after the evaluator was made")

    def loop(data, baseline, settings, **kwargs):
        kwargs["evaluator"]([], baseline)

    monkeypatch.setattr(cluster_module, "DaskShardEvaluator", evaluator)
    monkeypatch.setattr(offline_loop, "learn", loop)
    result = invoke("learn", "--scenario", "chaos", "--n", 500, "--out", tmp_path / "s.toml", "--cluster", "local:1")
    assert result.exit_code == 2 and given == {"keep_first": None, "files_shared": True}


def test_learning_on_the_cluster_reads_its_needless_fail_safes_off_the_workers(client, monkeypatch):
    """The finalists' needless parts come back from the workers with their sums: no pass of
    this process's own, and the suggestion document of learning in one process."""
    from ami_engine.learning import offline_loop
    from ami_engine.learning.needless import needless_fail_safes

    data = offline_loop.data_from_scenario("chaos", 3000, 3)
    settings = offline_loop.LearnSettings(strategy="tpe", budget=60, seed=2, batch_size=8, rung0=300)
    here = offline_loop.learn(data, BASE, settings)
    passes = []

    def whole_pass(*args, **kwargs):
        passes.append(args)
        return needless_fail_safes(*args, **kwargs)

    monkeypatch.setattr(offline_loop, "needless_fail_safes", whole_pass)

    def on_the_cluster(shards, baseline, *, keep_first=None):
        return DaskShardEvaluator(client, shards, baseline, keep_first=keep_first)

    there = offline_loop.learn(data, BASE, settings, evaluator=on_the_cluster)
    assert not passes and there.needless["count"] > 0
    same = {k: v for k, v in here.suggestion_toml["meta"].items() if k != "created"}
    assert {k: v for k, v in there.suggestion_toml["meta"].items() if k != "created"} == same
    assert there.history == here.history
    whole = needless_fail_safes(data.states, BASE, there.suggestion)
    assert there.suggestion_toml["meta"]["needless"] == {k: v for k, v in whole.items() if not k.startswith("_")}
