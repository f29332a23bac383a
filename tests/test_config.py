"""Configs as TOML data: profiles, extends, domains, config_id (docs/formats.md, docs/engine.md §14)."""

import pytest

from ami_engine.config import LEARNED_BOUNDS, PARAMS, PROFILE_NAMES, ConfigError, load_config


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_base_profile_has_every_parameter_with_the_spec_defaults():
    base = load_config("base")
    assert set(base.values) == set(PARAMS)
    assert base["J_MIN"] == 0.85 and base["H_MAX"] == 0.30
    assert base["CUS_WEIGHTS"] == (0.4, 0.35, 0.25)
    assert base["SCORE_WEIGHTS"] == (0.3, 0.35, 0.2, 0.15)
    assert base["CUS_MEAN_WINDOW"] == 10
    assert base["SAFE_ACTION"] == (0.0, 0.5, 0.0, 1.0)


@pytest.mark.parametrize(
    "name, changes",
    [
        ("production_safe", dict(J_MIN=0.65, H_MAX=0.40, C_MIN=0.30, C_MAX=0.80, J_CRITICAL=0.55, H_CRITICAL=0.70)),
        ("high_critical", dict(J_MIN=0.90, H_MAX=0.20, J_CRITICAL=0.75, H_CRITICAL=0.55)),
        ("chaos_tuning", dict(J_MIN=0.55, H_MAX=0.55, C_MIN=0.25, C_MAX=0.90, J_CRITICAL=0.35, H_CRITICAL=0.80,
                              CONFIDENCE_ESCALATION_FORCE=0.12)),
    ],
)
def test_profiles_change_only_what_the_spec_lists(name, changes):
    base, prof = load_config("base"), load_config(name)
    for key in PARAMS:
        assert prof[key] == changes.get(key, base[key]), key


def test_profile_may_set_a_learned_parameter_outside_its_learning_bounds():
    assert load_config("chaos_tuning")["H_MAX"] > LEARNED_BOUNDS["H_MAX"][1]


def test_extends_a_profile_and_a_file(tmp_path):
    first = write(tmp_path, 'extends = "high_critical"\nJ_MIN = 0.8\n', "first.toml")
    second = write(tmp_path, f'extends = "{first}"\nH_MAX = 0.25\n[meta]\nnote = "ignored"\n', "second.toml")
    cfg = load_config(second)
    assert cfg["J_MIN"] == 0.8 and cfg["H_MAX"] == 0.25 and cfg["J_CRITICAL"] == 0.75
    assert cfg.meta == {"note": "ignored"}


@pytest.mark.parametrize(
    "text, key",
    [
        ("J_MINN = 0.8", "J_MINN"),
        ('J_MIN = "0.8"', "J_MIN"),
        ("J_MIN = true", "J_MIN"),
        ("J_MIN = 1.5", "J_MIN"),
        ("SIGMA_MAX = 0", "SIGMA_MAX"),
        ("CUS_WEIGHTS = [0.5, 0.5, 0.5]", "CUS_WEIGHTS"),
        ("SCORE_WEIGHTS = [0.3, -0.1, 0.2, 0.1]", "SCORE_WEIGHTS"),
        ("CUS_MEAN_WINDOW = 0", "CUS_MEAN_WINDOW"),
        ("CUS_MEAN_WINDOW = 2.5", "CUS_MEAN_WINDOW"),
        ("ACTION_GRID = [0.0, 0.5, 0.25, 1.0]", "ACTION_GRID"),
        ("ACTION_GRID = [0.0, 0.25, 0.75, 1.0]", "ACTION_GRID"),
        ("C_MIN = 0.8", "C_MIN"),
        ("SAFE_ACTION = [0.0, 0.5, 0.0]", "SAFE_ACTION"),
    ],
)
def test_bad_config_values_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text))


def test_unknown_profile_or_missing_file_is_an_error():
    with pytest.raises(ConfigError, match="no such profile"):
        load_config("no_such_profile")


def test_extends_cycle_is_an_error(tmp_path):
    a = tmp_path / "a.toml"
    b = tmp_path / "b.toml"
    a.write_text(f'extends = "{b}"\n')
    b.write_text(f'extends = "{a}"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(a))


def test_config_id_is_equal_for_equal_configs_and_changes_with_any_value(tmp_path):
    base = load_config("base")
    same = load_config(write(tmp_path, "J_MIN = 0.85\nCUS_MEAN_WINDOW = 10\n"))
    assert same.config_id == base.config_id and len(base.config_id) == 16
    ids = {base.config_id}
    for key in ("J_MIN", "DE_TEMPERATURE", "SOFT_CLAMP_GAMMA"):
        ids.add(base.replace(**{key: base[key] / 2}).config_id)
    ids.add(base.replace(CUS_MEAN_WINDOW=11).config_id)
    assert len(ids) == 5


def test_all_profiles_load():
    assert len({load_config(p).config_id for p in PROFILE_NAMES}) == len(PROFILE_NAMES)
