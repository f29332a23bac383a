"""Learning on shards of whole streams: the shards, the evaluators' sums, the racing
schedule, resume, and learning within a memory budget."""

import numpy as np
import pytest
from typer.testing import CliRunner

from ami_engine import cli
from ami_engine.config import load_config
from ami_engine.engine import DIRECT_MAX_CONFIGS, ScoreTable, direct_sums
from ami_engine.engine import _kernel as K
from ami_engine.io.tomlfile import dumps_toml, toml_ready
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.learning.racing import FINALISTS, describe, plan, rung_shards
from ami_engine.learning.shards import (
    InProcessEvaluator,
    Shards,
    ShardScorer,
    make_shards,
    merge,
    table_bytes,
)
from ami_engine.scenario import generate

BASE = load_config("base")


def test_shards_are_whole_streams_cover_every_state_once_and_are_seeded():
    states = generate("chaos", 3000, 2, streams=12)
    a = make_shards(states, seed=5, target=600)
    b = make_shards(states, seed=5, target=600)
    other = make_shards(states, seed=6, target=600)
    streams_of = [set(s.streams) for s in a.shards]
    for i, first in enumerate(streams_of):  # a stream never spans two shards
        for second in streams_of[i + 1:]:
            assert not first & second
    assert sorted(map(tuple, np.concatenate([s.values for s in a.shards]))) == sorted(map(tuple, states.values))
    assert all(np.array_equal(x.values, y.values) and x.streams == y.streams for x, y in zip(a.shards, b.shards))
    assert [s.streams for s in a.shards] != [s.streams for s in other.shards]
    assert all(len(s) >= 600 for s in a.shards[:-1])
    # inside a shard each stream keeps its input order
    codes, _ = states.stream_codes()
    for shard in a.shards:
        for name in set(shard.streams):
            mine = shard.values[[i for i, s in enumerate(shard.streams) if s == name]]
            where = [i for i, s in enumerate(states.streams) if s == name]
            assert np.array_equal(mine, states.values[where])


def test_shards_of_some_positions_hold_only_those_states():
    states = generate("balanced", 1000, 1, streams=10)
    keep = np.flatnonzero(np.isin(np.array(states.streams), states.streams[:1] + states.streams[500:501]))
    sharding = make_shards(states, seed=0, target=10, positions=keep)
    assert sum(len(s) for s in sharding.shards) == keep.size
    assert len(sharding) == len({states.streams[i] for i in keep})


def _shards_by_sorting(states, seed, target, positions):
    """The rule of make_shards written with whole sorts: streams renumbered in code order,
    grouped stably, dealt in the seeded order."""
    all_codes, _ = states.stream_codes()
    pos = np.asarray(positions, dtype=np.int64)
    present, codes = np.unique(all_codes[pos], return_inverse=True)
    order = pos[np.argsort(codes, kind="stable")]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=present.size))])
    where, pending = [], []
    for s in np.random.default_rng(np.random.SeedSequence([seed, 0x5A4D])).permutation(present.size):
        pending.append(order[ptr[s]:ptr[s + 1]])
        if sum(p.size for p in pending) >= target:
            where.append(np.concatenate(pending))
            pending = []
    return where + ([np.concatenate(pending)] if pending else [])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shards_are_those_of_the_rule_written_with_whole_sorts(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    labels = rng.integers(0, 300, n)  # streams of uneven sizes, some absent from the positions
    states = generate("chaos", n, seed)
    from ami_engine.io.stateset import StateSet

    states = StateSet(states.values, [f"s{x}" for x in labels.tolist()], states.t, states.ids)
    positions = np.flatnonzero(rng.random(n) < 0.7)
    sharding = make_shards(states, seed, 150, positions)
    expected = _shards_by_sorting(states, seed, 150, positions)
    assert len(sharding.positions) == len(expected)
    assert all(p.dtype == np.int32 and np.array_equal(p, e) for p, e in zip(sharding.positions, expected, strict=True))
    for i, where in enumerate(expected):
        shard = sharding.shards[i]
        assert shard.values.tobytes() == states.values[where].tobytes()
        assert shard.streams == [states.streams[j] for j in where.tolist()]


def _configs():
    return [BASE, BASE.replace(J_MIN=0.7, H_MAX=0.4), BASE.replace(DELTA_CUS_THRESHOLD=0.06, CUS_MEAN_THRESHOLD=0.6)]


class _CountedShards(Shards):
    def __init__(self, shards: Shards) -> None:
        self.__dict__.update(shards.__dict__)
        self.built: list[int] = []

    def __getitem__(self, i):
        if isinstance(i, int):
            self.built.append(i)
        return super().__getitem__(i)


def test_an_evaluator_holds_only_the_shards_whose_tables_it_keeps():
    """Shards built on demand from the state set: the evaluator builds those whose tables it
    keeps once, every other one for each call that decides it, and lets it go (at 10M
    decisions the training shards are another copy of the states)."""
    states = generate("chaos", 1600, 4, streams=9)
    shards = _CountedShards(make_shards(states, seed=1, target=300).shards)
    configs = (_configs() * 8)[:DIRECT_MAX_CONFIGS + 4]
    expected = InProcessEvaluator(list(shards), BASE, 1 << 34).evaluate(configs, range(len(shards))).to_array()
    shards.built.clear()
    ev = InProcessEvaluator(shards, BASE, 1 << 34, keep_first=2)
    assert shards.built == [0, 1]
    for _ in range(2):
        assert ev.evaluate(configs, range(len(shards))).to_array().tobytes() == expected.tobytes()
    assert shards.built == [0, 1, *range(2, len(shards)), *range(2, len(shards))]


@pytest.mark.parametrize("n_configs", [3, DIRECT_MAX_CONFIGS + 4])  # the direct path, then the table's
def test_evaluator_totals_are_the_shard_sums_added_in_shard_order_whatever_the_memory(n_configs):
    states = generate("chaos", 1600, 4, streams=9)
    shards = make_shards(states, seed=1, target=300).shards
    configs = (_configs() * 8)[:n_configs]
    per_shard = [ShardScorer(s, BASE, keep=False).sums(configs) for s in shards]
    expected = np.zeros((len(configs), K.N_SUMS))
    for part in per_shard:
        expected = expected + part.to_array()
    wanted = [0, 2, 3]
    some = merge([per_shard[i] for i in wanted], len(configs)).to_array()
    roomy = InProcessEvaluator(shards, BASE, 1 << 34)
    tight = InProcessEvaluator(shards, BASE, 1 << 20)  # no table kept: every shard streamed in parts
    half = InProcessEvaluator(shards, BASE, 2 * (table_bytes(len(shards[0]), BASE) + table_bytes(len(shards[1]), BASE)))
    assert roomy.keeps == len(shards) and tight.keeps == 0 and 0 < half.keeps < len(shards)
    for ev in (roomy, tight, half):
        for _ in range(2):  # the second time from the tables kept
            assert ev.evaluate(configs, range(len(shards))).to_array().tobytes() == expected.tobytes()
            assert ev.evaluate(configs, [3, 0, 2]).to_array().tobytes() == some.tobytes()
        assert ev.kept == (ev.keeps if n_configs > DIRECT_MAX_CONFIGS else 0)  # tables only where needed
        ev.close()
        assert ev.kept == 0


def test_a_few_configs_go_the_direct_way_more_through_a_table_kept_once_built():
    shard = generate("chaos", 500, 4, streams=5)
    configs = (_configs() * 8)[:DIRECT_MAX_CONFIGS + 1]
    scorer = ShardScorer(shard, BASE, keep=True)
    few = scorer.sums(configs[:DIRECT_MAX_CONFIGS])
    assert not scorer.holds_table and few == direct_sums(shard, configs[:DIRECT_MAX_CONFIGS])
    many = scorer.sums(configs)
    assert scorer.holds_table and many == ScoreTable(shard, BASE).evaluate(configs)
    # the same decisions either way; floats to the last bits
    np.testing.assert_allclose(few.to_array(), many[:DIRECT_MAX_CONFIGS].to_array(), rtol=1e-12, atol=1e-12)
    assert np.array_equal(few.level_rates, many[:DIRECT_MAX_CONFIGS].level_rates)
    for name, count in few.reason_counts.items():
        assert np.array_equal(count, many[:DIRECT_MAX_CONFIGS].reason_counts[name]), name
    other = BASE.replace(SCORE_WEIGHTS=[0.25, 0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="SCORE_WEIGHTS"):
        scorer.sums([other])


def test_an_evaluator_refuses_a_shard_asked_twice_or_one_that_does_not_exist():
    shards = make_shards(generate("chaos", 400, 4, streams=6), seed=1, target=100).shards
    ev = InProcessEvaluator(shards, BASE, 1 << 30)
    for wrong in ([0, 0], [len(shards)], [-1]):
        with pytest.raises(ValueError, match="distinct indices"):
            ev.evaluate([BASE], wrong)


def test_the_racing_schedule_is_nested_and_its_cost_grows_slowly():
    sizes = np.full(100, 5_000)
    counts = rung_shards(sizes, eta=3, rung0=20_000)
    assert counts == [4, 12, 36, 100]
    s = plan(sizes, 300, 7)
    assert s == plan(sizes, 300, 7)
    assert [r.shards for r in s.rungs] == counts and s.rungs[-1].decisions == 500_000
    c = [r.candidates for r in s.rungs]
    assert c[0] + s.refine == 300 and s.refine == 84 and s.refine_rung == 1
    assert c[1] == -(-c[0] // 3)  # up to the refinement rung: the best third promoted
    assert c[2] == max(FINALISTS, -(-c[1] // 9)) and c[3] == FINALISTS  # above it: far fewer
    one = plan(np.array([5_000, 5_000, 5_000]), 300, 7)  # small data: one rung, one evaluation per candidate
    assert len(one.rungs) == 1 and one.candidates + one.refine == 300 and one.refine_rung == 0
    assert plan(np.array([100]), 4, 7).candidates == 4 and plan(np.array([100]), 4, 7).refine == 0
    # a rung almost as large as all the data is merged into the top rung
    assert rung_shards(np.full(13, 5_000), eta=3, rung0=20_000) == [4, 13]
    assert describe(s.meta())[0] == "Racing: 4 rung(s), eta 3, budget 300 = 216 candidates + 84 refinement evaluations"
    # 100x the data: a rung that would promote all it evaluates is left out, the finalists stay few
    big = plan(np.full(10_000, 5_000), 300, 7)
    assert [r.candidates for r in big.rungs] == [216, 72, 8, FINALISTS]
    assert [r.decisions for r in big.rungs] == [20_000, 60_000, 180_000, 50_000_000]
    work = [r.candidates * r.decisions for r in s.rungs]
    big_work = [r.candidates * r.decisions for r in big.rungs]
    assert sum(big_work[:-1]) == sum(work[:-1]) and big_work[-1] == FINALISTS * 50_000_000


def _learn(study=None, progress=None, memory=4 << 30, evaluator=None):
    data = data_from_scenario("chaos", 3000, 3)
    settings = LearnSettings(strategy="tpe", budget=60, seed=2, batch_size=8, rung0=300, memory=memory)
    return learn(data, BASE, settings, study=study, progress=progress, evaluator=evaluator)


@pytest.fixture(scope="module")
def raced():
    return _learn()


def test_a_raced_learn_promotes_refines_and_records_its_schedule(raced):
    racing = raced.suggestion_toml["meta"]["racing"]
    rungs = racing["rungs"]
    assert len(rungs) == 3 and rungs[-1]["decisions"] == raced.suggestion_toml["meta"]["split"]["n_train"]
    assert rungs[0]["decisions"] < rungs[1]["decisions"] < rungs[2]["decisions"]
    assert rungs[0]["candidates"] == 60 - racing["refine_evaluations"] and racing["refine_rung"] == 1
    assert racing["evaluated"] == [rungs[0]["candidates"], rungs[1]["candidates"] + racing["refine_evaluations"],
                                   rungs[2]["candidates"]]
    assert rungs[2]["candidates"] == racing["finalists"] == FINALISTS
    phases = [(h["rung"], h["phase"]) for h in raced.history]
    assert phases == sorted(phases, key=lambda p: (p[0], ["search", "promote", "refine"].index(p[1])))
    assert {h["rung"] for h in raced.history if h["phase"] == "refine"} == {1}
    assert {h["heldout_decisions"] for h in raced.history} == {raced.suggestion_toml["meta"]["split"]["n_heldout"]}
    train = raced.suggestion_toml["meta"]["metrics"]["train"]
    assert train["suggestion"]["L"] < train["baseline"]["L"]
    assert "[meta.racing]" in dumps_toml(toml_ready(raced.suggestion_toml))


def test_a_raced_learn_resumes_to_the_same_suggestion(tmp_path, raced):
    class Interrupt(Exception):
        pass

    def stop_in_the_promotions(done, total):
        if done > raced.suggestion_toml["meta"]["racing"]["rungs"][0]["candidates"]:
            raise Interrupt

    study = str(tmp_path / "s.journal")
    with pytest.raises(Interrupt):
        _learn(study, progress=stop_in_the_promotions)
    resumed = _learn(study)
    assert resumed.suggestion.config_id == raced.suggestion.config_id
    assert resumed.history == raced.history
    assert resumed.suggestion_toml["meta"]["needless"] == raced.suggestion_toml["meta"]["needless"]
    # Every batch from the study, the finalists' among them: their needless fail-safes from a pass of their own.
    again = _learn(study)
    assert again.history == raced.history
    assert again.suggestion_toml["meta"]["needless"] == raced.suggestion_toml["meta"]["needless"]


def test_any_memory_budget_or_evaluator_gives_the_same_result():
    def small(memory=4 << 30, evaluator=None):
        settings = LearnSettings(strategy="random", budget=8, seed=1, batch_size=8, rung0=150, memory=memory)
        return learn(data_from_scenario("chaos", 600, 2), BASE, settings, evaluator=evaluator)

    made = []

    def roomy_evaluator(shards, baseline, *, keep_first=None):
        made.append(len(shards))
        return InProcessEvaluator(shards, baseline, 1 << 34)

    roomy = small(evaluator=roomy_evaluator)
    assert len(made) == 2  # the training shards and the held-out shards
    assert len(roomy.suggestion_toml["meta"]["racing"]["rungs"]) > 1
    tiny = small(memory=1 << 20)  # every shard scored afresh, in parts
    assert tiny.suggestion.config_id == roomy.suggestion.config_id
    assert tiny.history == roomy.history
    assert tiny.suggestion_toml["meta"]["metrics"] == roomy.suggestion_toml["meta"]["metrics"]


@pytest.mark.parametrize("value", ["0", "12Q", "-4G", "0.5M", "nan", "G"])
def test_bad_memory_is_a_usage_error(tmp_path, value):
    out = tmp_path / "s.toml"
    result = CliRunner().invoke(cli.app, ["learn", "--scenario", "chaos", "--n", "800", "--budget", "4",
                                          "--memory", value, "--out", str(out)])
    assert result.exit_code == 2 and "--memory" in result.output
    assert not out.exists() and not any(tmp_path.iterdir())


def test_learn_in_a_tiny_memory_prints_its_schedule(tmp_path):
    out = tmp_path / "s.toml"
    result = CliRunner().invoke(cli.app, ["learn", "--scenario", "chaos", "--n", "800", "--seed", "1", "--budget",
                                          "1", "--memory", "1M", "--out", str(out)])
    assert result.exit_code == 0, result.output  # one candidate, the baseline: nothing to suggest
    assert "Racing: 1 rung(s)" in result.output and "1 candidates" in result.output


def test_the_report_shows_the_racing_schedule(raced):
    from ami_engine.report import render_report

    html = render_report(toml_ready(raced.suggestion_toml), raced.history)
    racing = raced.suggestion_toml["meta"]["racing"]
    assert "Racing schedule (successive halving, eta 3" in html
    table = html[html.index('class="data racing"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 1 + len(racing["rungs"]) + 1  # header, the rungs, the refinement
    assert f"<td>{racing['rungs'][0]['decisions']:,}</td>" in table


def test_a_study_whose_top_rung_batch_lost_its_sums_is_refused(tmp_path, raced):
    from ami_engine.learning.study import StudyError

    study = tmp_path / "s.journal"
    _learn(str(study))
    text = study.read_text()
    assert '"sums"' in text
    study.write_text(text.replace('"sums"', '"sumz"'))
    with pytest.raises(StudyError, match="does not hold its sums; start the study over with --fresh"):
        _learn(str(study))


def test_reading_the_decisions_leaves_the_sums_as_they_are_and_needs_the_direct_path():
    from ami_engine.learning.shards import Reading

    sharding = make_shards(generate("chaos", 900, 4, streams=6), seed=1, target=300)
    configs = [BASE, BASE.replace(J_MIN=0.7, H_MAX=0.2), BASE.replace(SOFT_CLAMP_ALPHA=0.4)]
    taken = {}
    reading = Reading(lambda pos, cols, args: (args, int(pos.size), [int((c.level == 2).sum()) for c in cols]),
                      lambda shard: f"shard {shard}", lambda shard, results: taken.setdefault(shard, results))
    ev = InProcessEvaluator(sharding.shards, BASE, 1 << 30)
    read = ev.evaluate(configs, range(len(sharding)), reading=reading)
    assert read.to_array().tobytes() == ev.evaluate(configs, range(len(sharding))).to_array().tobytes()
    assert sorted(taken) == list(range(len(sharding)))
    for shard, results in taken.items():
        assert {args for args, _, _ in results} == {f"shard {shard}"}
        assert sum(n for _, n, _ in results) == sharding.sizes[shard]
    many = configs + [BASE.replace(J_MIN=0.6 + 0.01 * k) for k in range(DIRECT_MAX_CONFIGS)]
    with pytest.raises(ValueError, match="direct path only"):
        ev.evaluate(many, [0], reading=reading)
