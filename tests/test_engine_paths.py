"""The engine's three paths (direct, sweep, sums) are one engine: equal results."""

import numpy as np
import pytest

from ami_engine.config import LEARNED_BOUNDS, load_config
from ami_engine.engine import REASONS, EngineSums, ScoreTable, direct_sums, run
from ami_engine.engine import _kernel as K
from ami_engine.scenario import generate

FLOAT_COLUMNS = ("cus", "cus_raw", "cus_mean", "confidence", "W", "J", "H", "C", "raw_action", "final_action")


def random_configs(base, n, seed):
    rng = np.random.default_rng(seed)
    names = list(LEARNED_BOUNDS)
    lo = np.array([LEARNED_BOUNDS[k][0] for k in names])
    hi = np.array([LEARNED_BOUNDS[k][1] for k in names])
    return [base.replace(**dict(zip(names, row))) for row in rng.uniform(lo, hi, size=(n, len(names)))]


def assert_same_columns(a, b):
    for name in FLOAT_COLUMNS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=0, atol=1e-12, err_msg=name)
    for name in ("delta_cus", "delta_confidence"):
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(np.isnan(x), np.isnan(y)), name
        np.testing.assert_allclose(x[~np.isnan(x)], y[~np.isnan(y)], rtol=0, atol=1e-12, err_msg=name)
    for name in ("level", "reason", "soft_clamp", "human_escalation"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("profile", ["base", "production_safe", "high_critical", "chaos_tuning"])
def test_sweep_path_equals_direct_path(profile):
    states = generate("curriculum", 1200, 5, streams=3)
    table = ScoreTable(states, load_config(profile))
    for cfg in [load_config(profile), *random_configs(load_config(profile), 3, 1)]:
        assert_same_columns(table.run(cfg), run(states, cfg))


def test_sums_equal_the_metrics_of_the_full_columns():
    states = generate("chaos", 1500, 2, streams=4)
    configs = random_configs(load_config("base"), 20, 3)
    sums = ScoreTable(states, configs[0]).evaluate(configs)
    assert len(sums) == len(configs)
    for row, cfg in zip(sums, configs):
        cols = run(states, cfg)
        n = len(states)
        assert row.n == n
        assert row.n_fail_safe == np.sum(cols.level == 2)
        assert row.level_rates == tuple(np.sum(cols.level == level) / n for level in range(3))
        assert row.mean_cus == pytest.approx(cols.cus.mean(), abs=1e-12)
        dist = np.where(cols.soft_clamp, np.abs(cols.final_action - cols.raw_action).mean(axis=1), 0.0)
        assert row.clamp_distortion == pytest.approx(dist.mean(), abs=1e-12)
        assert row.soft_clamp_rate == np.sum(cols.soft_clamp) / n
        assert row.mean_H == pytest.approx(cols.H.mean(), abs=1e-12)
        assert row.reason_counts == {name: np.sum(cols.reason == r) for r, name in enumerate(REASONS)}


def test_chunking_the_configs_does_not_change_the_sums():
    states = generate("balanced", 800, 4)
    configs = random_configs(load_config("base"), 9, 5)
    table = ScoreTable(states, configs[0])
    whole = table.evaluate(configs)
    tiny = table.evaluate(configs, memory_bytes=1)  # one config per kernel call
    assert whole == tiny


def test_configs_with_another_grid_are_refused_by_a_score_table():
    states = generate("safe", 50, 1)
    table = ScoreTable(states, load_config("base"))
    other = load_config("base").replace(SCORE_WEIGHTS=[0.25, 0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="SCORE_WEIGHTS"):
        table.evaluate([other])


def test_expected_level_mix_with_base():
    """docs/engine.md §15: roughly safe 63/37/0, balanced 64/18/18, critical 0/4/96, chaos 5/31/64 (%)."""
    expected = {"safe": (63, 37, 0), "balanced": (64, 18, 18), "critical": (0, 4, 96), "chaos": (5, 31, 64)}
    for name, mix in expected.items():
        cols = run(generate(name, 8000, 11), load_config("base"))
        got = np.bincount(cols.level, minlength=3) / len(cols.level) * 100
        assert np.all(np.abs(got - np.array(mix)) < 4), (name, got)


def test_decide_with_its_stream_history_equals_the_batch_path():
    from ami_engine.engine import decide, run_records
    from ami_engine.io.stateset import STATE_FIELDS

    cfg = load_config("base").replace(CUS_MEAN_WINDOW=4, DELTA_CUS_THRESHOLD=0.05)
    states = generate("chaos", 60, 8, streams=1)
    records = [dict(zip(STATE_FIELDS, map(float, row))) for row in states.values]
    batch = run_records(records, cfg)
    history: list[float] = []
    for record, expected in zip(records, batch):
        got = decide(record, cfg, history=history)
        for key, value in expected.items():
            if key == "t":
                continue
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, abs=1e-12), key
            else:
                assert got[key] == value, key
        history.append(got["cus_raw"])
    assert {r["reason"] for r in batch} >= {"drift"}


def test_sweep_with_mixed_c_bounds_in_one_chunk_equals_direct_runs():
    states = generate("chaos", 600, 6, streams=3)
    base = load_config("base")
    configs = [base, base.replace(C_MIN=0.2, C_MAX=0.9), base.replace(C_MIN=0.45, C_MAX=0.6, J_MIN=0.6)]
    sums = ScoreTable(states, base).evaluate(configs)
    for row, cfg in zip(sums, configs):
        cols = run(states, cfg)
        assert row.level_rates[2] == np.mean(cols.level == 2) and row.level_rates[1] == np.mean(cols.level == 1)
        assert row.mean_cus == pytest.approx(cols.cus.mean(), abs=1e-12)


def lattice_states(n, seed, share):
    """States with a share of their fields on a coarse lattice: exact score ties across
    actions and groups abound."""
    from ami_engine.io.states import states_from_records
    from ami_engine.io.stateset import STATE_FIELDS

    rng = np.random.default_rng(seed)
    shape = (n, len(STATE_FIELDS))
    lattice = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, 1e-13, 0.3], size=shape)
    values = np.where(rng.random(shape) < share, lattice, rng.random(shape))
    return states_from_records([dict(zip(STATE_FIELDS, map(float, row)), stream=i % 3) for i, row in
                                enumerate(values)])


def test_group_summary_equals_the_per_config_scan_where_ties_abound():
    """The sweep answers each config from per-group sums (kernel.rank_groups) unless a
    state's ties defeat them; with grouped=False every config scans every candidate."""
    base = load_config("base")
    for states in (lattice_states(1000, 1, 1.0), lattice_states(1000, 2, 0.4), generate("chaos", 1000, 9, streams=2)):
        configs = [base, *random_configs(base, 6, 2),
                   base.replace(J_MIN=0.5, H_MAX=0.15), base.replace(J_MIN=0.75, H_MAX=0.25)]
        grouped, scanned = ScoreTable(states, base), ScoreTable(states, base, grouped=False)
        for cfg in configs:
            assert_same_columns(grouped.run(cfg), scanned.run(cfg))
            assert_same_columns(grouped.run(cfg), run(states, cfg))
        np.testing.assert_allclose(grouped.evaluate(configs).to_array(), scanned.evaluate(configs).to_array(), rtol=0,
                                   atol=1e-9)


def test_group_summary_declines_ties_it_cannot_summarise():
    actions = np.zeros((625, 4))
    state = np.full(9, 0.5)

    def summary(ks, kj):
        m0 = len(ks)
        kh = np.zeros(m0)
        kc = np.full(m0, 0.5)
        ka = np.arange(m0, dtype=np.int64) * 5  # one action from each of m0 groups
        ke = np.exp((np.asarray(ks) - ks[0]) / 0.01)
        grp = np.empty((K.GROUP_ROWS, 125))
        return K.group_clusters(state, actions, np.asarray(ks), np.asarray(kj, dtype=float), kh, kc, ka, ke, m0,
                                ks[0], 0.01, 5, np.empty(125, dtype=np.int64), grp), grp

    n, grp = summary([0.9, 0.9, 0.8], [0.7, 0.7, 0.7])  # an exact tie across two groups, same J, H, C
    assert n == 2 and grp[K.G_N, 0] == 1 and grp[K.G_BEST, 0] == 0 and grp[K.G_SECOND, 0] == -np.inf
    assert summary([0.9, 0.9, 0.8], [0.7, 0.6, 0.7])[0] == -1  # tied scores, different J: filters differ
    assert summary([0.9, 0.9 - 0.6e-12, 0.9 - 1.2e-12], [0.7] * 3)[0] == -1  # a chain longer than TIE


def test_a_table_kept_in_parts_gives_the_same_bytes_as_a_whole_one():
    """Above its memory budget a ScoreTable scores its states part by part on every call;
    drift windows carry over between parts, so nothing changes but the memory used."""
    from ami_engine.io.states import states_from_records
    from ami_engine.io.stateset import STATE_FIELDS

    rng = np.random.default_rng(12)
    states = states_from_records([dict(zip(STATE_FIELDS, map(float, row)), stream=int(s)) for row, s in
                                  zip(rng.random((900, len(STATE_FIELDS))), rng.integers(0, 7, 900))])
    base = load_config("base")
    configs = [base, *random_configs(base, 5, 8), base.replace(CUS_MEAN_WINDOW=3, DELTA_CUS_THRESHOLD=0.05)]
    whole = ScoreTable(states, base)
    parts = ScoreTable(states, base, memory_bytes=100 * 8300)  # about 100 states a part
    assert whole.part_states == len(states) and parts.part_states < 120
    assert parts.evaluate(configs) == whole.evaluate(configs)
    assert parts.evaluate(configs, memory_bytes=1) == whole.evaluate(configs)
    for cfg in configs[-2:]:
        a, b = parts.run(cfg), whole.run(cfg)
        assert_same_columns(a, b)
        assert np.array_equal(a.cus, b.cus) and np.array_equal(a.cus_mean, b.cus_mean)
        assert_same_columns(a, run(states, cfg))


@pytest.mark.parametrize("grid", [[0.0, 0.5, 1.0], [0.0, 0.125, 0.25, 0.5, 0.75, 0.875, 1.0]])
def test_sweep_path_equals_direct_path_on_other_action_grids(grid):
    base = load_config("base").replace(ACTION_GRID=grid)
    for states in (generate("chaos", 500, 3, streams=3), lattice_states(400, 3, 0.4)):
        table = ScoreTable(states, base)
        for cfg in [base, *random_configs(base, 3, 1)]:
            assert_same_columns(table.run(cfg), run(states, cfg))


def test_configs_decided_together_on_the_direct_path_are_each_decided_alone():
    """The direct path scores a state once for all its configs (by their loosest bounds) and
    each config takes its own candidates: the same bytes as deciding each config alone,
    where some configs have no candidate (section 8's action, found once per state) and
    exact ties abound."""
    base = load_config("base")
    configs = [base, base.replace(J_MIN=0.95, H_MAX=0.15), base.replace(C_MIN=0.45, C_MAX=0.6, J_MIN=0.6),
               *random_configs(base, 2, 7)]
    for states in (generate("chaos", 900, 8, streams=4), lattice_states(900, 9, 0.6)):
        together = direct_sums(states, configs)
        alone = EngineSums.concat([direct_sums(states, [cfg]) for cfg in configs])
        assert together.to_array().tobytes() == alone.to_array().tobytes()
        assert (np.asarray(together.level_rates)[:, 2] > 0).all()  # every config fails safe somewhere
        strict = run(states, configs[1])
        assert (strict.reason == REASONS.index("no_valid_candidate")).any()


def test_a_grid_of_more_actions_than_16_bit_indices_hold_gives_the_same_decisions_on_every_path():
    # 14 values: 38,416 actions, beyond the 32,767 a 16-bit index holds; the score table
    # keeps 32-bit indices then.
    grid = [0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0]
    states = generate("chaos", 60, 2, streams=3)
    for profile in ("base", "production_safe"):
        cfg = load_config(profile).replace(ACTION_GRID=grid)
        table = ScoreTable(states, cfg)
        assert table.space.actions.shape[0] == 14**4 and table.space.index_type is np.int32
        assert_same_columns(table.run(cfg), run(states, cfg))
        configs = [cfg, *random_configs(cfg, 6, 2)]
        np.testing.assert_allclose(table.evaluate(configs).to_array(), direct_sums(states, configs).to_array(), rtol=0,
                                   atol=1e-9)


def test_the_compiled_kernels_are_cached_under_a_key_of_every_source_they_are_made_from(monkeypatch):
    from ami_engine.engine import _cache

    locator = K.finish._cache._impl.locator
    assert type(locator).__name__.startswith("Engine")  # the engine's own locator took it
    stamp = locator.get_source_stamp()
    monkeypatch.setattr(_cache, "_DIGEST", "rules.py changed")  # as after an edit of the rules only
    assert locator.get_source_stamp() != stamp  # so the kernel cached before is not loaded
    assert type(locator).from_function(K.finish.py_func, __file__) is None  # nobody else's functions
