"""Work on a Dask cluster gives the same bytes as in one process (docs/scale.md): config
sums over shards, with any number of workers and when a worker dies mid-evaluation."""

import os
import signal
import threading
import time

import numpy as np
import pytest
from distributed import Client, LocalCluster

from ami_engine.cluster import ClusterError, ClusterSpec, DaskShardEvaluator, cluster_client, local_cluster_options
from ami_engine.config import LEARNED_BOUNDS, load_config
from ami_engine.engine import ScoreTable, kernel
from ami_engine.scenario import generate


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
    total = np.zeros((len(configs), kernel.N_SUMS))
    for i in sorted(chosen):
        total = total + ScoreTable(shards[i], baseline).evaluate(configs)
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


# -------------------------------------------------------------------- the evaluator


def test_shard_sums_equal_the_in_process_sums_bit_for_bit_on_two_workers(client, shards, configs):
    baseline = configs[0]
    with DaskShardEvaluator(client, shards, baseline) as evaluator:
        for chosen in ([0, 1, 2], [2, 0], [1]):
            got = evaluator.evaluate(configs, chosen)
            assert got.shape == (len(configs), kernel.N_SUMS)
            assert got.tobytes() == _in_process(shards, baseline, configs, chosen).tobytes()
        # The tables stay where they were built: a second round sends only configs.
        assert evaluator.evaluate(configs[:3], [0, 1, 2]).tobytes() == \
            _in_process(shards, baseline, configs[:3], [0, 1, 2]).tobytes()
        assert evaluator.evaluate([], [0]).shape == (0, kernel.N_SUMS)
        with pytest.raises(ValueError):
            evaluator.evaluate(configs, [0, 0])
        with pytest.raises(ValueError):
            evaluator.evaluate(configs, [3])


def test_shard_sums_on_one_worker_are_the_same_bytes(shards, configs):
    baseline = configs[0]
    with cluster_client("local:1") as one, DaskShardEvaluator(one, shards, baseline) as evaluator:
        got = evaluator.evaluate(configs, [0, 1, 2])
    assert got.tobytes() == _in_process(shards, baseline, configs, [0, 1, 2]).tobytes()


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
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("sums", evaluator.evaluate(many, [0, 1])))
        thread.start()
        victim = None
        while victim is None and thread.is_alive():
            busy = [w for w, keys in client.processing().items() if any("_evaluate" in str(k) for k in keys)]
            victim = busy[0] if busy else None
            time.sleep(0.01)
        assert victim is not None and thread.is_alive(), "the evaluation ended before a worker could be killed"
        os.kill(pids_before[victim], signal.SIGKILL)
        thread.join()
        assert result["sums"].tobytes() == expected.tobytes()
        client.wait_for_workers(2)
        assert set(client.run(os.getpid).values()) != set(pids_before.values())  # a new process took its place
    finally:
        evaluator.close()
