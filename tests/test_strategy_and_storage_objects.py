"""`learn` takes a strategy by name or as an object, and a study by path or URL or as a
storage object, as optuna's create_study(sampler=, storage=) does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ami_engine.config import load_config
from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn
from ami_engine.learning.policy_optimizer import (
    STRATEGIES,
    RandomStrategy,
    SearchSpace,
    Strategy,
    TpeStrategy,
    make_strategy,
)
from ami_engine.learning.study import (
    InMemoryStorage,
    JournalStorage,
    PostgresStorage,
    SqliteStorage,
    StudyError,
    StudyStorage,
    StudyStore,
    finished_evaluations,
    make_fingerprint,
    study_location,
)

BASE = load_config("base")
SPACE = SearchSpace()

# --- strategies ---------------------------------------------------------------------------


def test_every_strategy_is_named_in_the_registry_and_derives_from_the_base_class():
    assert set(STRATEGIES) == {"grid", "random", "sobol", "tpe", "cmaes"}
    for name, cls in STRATEGIES.items():
        assert issubclass(cls, Strategy) and cls.name == name


def test_a_strategy_object_is_used_as_it_is():
    tpe = TpeStrategy(SPACE, seed=5)
    assert make_strategy(tpe, SPACE, seed=5) is tpe


def test_a_strategy_object_of_another_seed_or_options_is_refused():
    strategy = RandomStrategy(SPACE, seed=5, mode="perturb", step_scale=0.2)
    with pytest.raises(ValueError, match="seeded with 5, but the run's seed is 6"):
        make_strategy(strategy, SPACE, seed=6)
    with pytest.raises(ValueError, match="differ from the strategy object's own"):
        make_strategy(strategy, SPACE, seed=5, step_scale=0.3)
    with pytest.raises(ValueError, match="seeded with 5, but the run's seed is 0"):
        LearnSettings(strategy=strategy)


def test_settings_record_a_strategy_object_by_its_name_and_options():
    strategy = RandomStrategy(SPACE, seed=2, mode="perturb", step_scale=0.2)
    settings = LearnSettings(strategy=strategy, seed=2)
    assert settings.strategy == "random"
    assert settings.strategy_options == strategy.options
    assert settings.strategy_object is strategy
    assert dataclasses.replace(settings, budget=10).strategy_object is strategy
    assert dataclasses.replace(settings, strategy="tpe").strategy_object is None


# --- storages -----------------------------------------------------------------------------


def test_a_location_text_and_its_storage_object_are_the_same_study(tmp_path):
    path = tmp_path / "s.journal"
    assert study_location(str(path)) == JournalStorage(path)
    assert study_location(f"sqlite:///{tmp_path}/s.db") == SqliteStorage(tmp_path / "s.db")
    assert study_location(None) == InMemoryStorage()
    pg = PostgresStorage("postgresql://user:secret@db.example/studies")
    assert study_location("postgresql://user:secret@db.example/studies") == pg
    assert pg.url == "postgresql+psycopg://user:secret@db.example/studies"
    assert "secret" not in str(pg)
    for storage in (JournalStorage(path), SqliteStorage(tmp_path / "s.db"), pg, InMemoryStorage()):
        assert isinstance(storage, StudyStorage)
        assert study_location(storage) is storage


def test_a_storage_object_of_the_wrong_kind_is_refused(tmp_path):
    with pytest.raises(StudyError, match="expected a postgresql:// URL"):
        PostgresStorage(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(StudyError, match="a sqlite URL names a file"):
        SqliteStorage("sqlite://")


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_study_kept_through_a_storage_object_is_resumed_through_its_path(tmp_path, kind):
    storage = JournalStorage(tmp_path / "s.journal") if kind == "journal" else SqliteStorage(tmp_path / "s.db")
    fingerprint = make_fingerprint(data="x", seed=1)
    with StudyStore.open(storage, fingerprint) as store:
        store.record_batch(0, np.vstack([SPACE.lower, SPACE.upper]), [1.0, 2.0])
    assert finished_evaluations(storage) == 2
    assert finished_evaluations(storage.text) == 2


# --- both, in learn -----------------------------------------------------------------------


def test_learn_takes_a_strategy_object_and_a_storage_object_as_it_takes_their_names(tmp_path):
    data = data_from_scenario("chaos", 300, 4, 4)
    journal = tmp_path / "run.journal"
    by_name = learn(data, BASE, LearnSettings(strategy="sobol", seed=4, budget=6, batch_size=3), study=str(journal),
                    existing_study="refuse")
    settings = LearnSettings(strategy=make_strategy("sobol", SPACE, seed=4), seed=4, budget=6, batch_size=3)
    by_object = learn(data, BASE, settings, study=JournalStorage(journal), existing_study="resume")
    assert finished_evaluations(journal) == 6  # resumed: the same run, nothing evaluated twice
    assert by_object.history == by_name.history
    assert by_object.suggestion_toml["meta"]["strategy"] == "sobol"
