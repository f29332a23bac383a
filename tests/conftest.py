"""Test options: `--postgres` runs the tests that need a PostgreSQL server (marked
`postgres`) and makes them fail when AMI_ENGINE_TEST_POSTGRES_URL names none; without it
they run only when that variable is set (`.ci/with-postgres` starts a server and sets it)."""

import os
import secrets

import pytest

POSTGRES_URL = "AMI_ENGINE_TEST_POSTGRES_URL"


def pytest_addoption(parser):
    parser.addoption("--postgres", action="store_true", help="run the PostgreSQL tests; fail when no server is set")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--postgres") or os.environ.get(POSTGRES_URL):
        return
    kept = [item for item in items if "postgres" not in item.keywords]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if "postgres" in item.keywords])
        items[:] = kept


@pytest.fixture
def postgres_url():
    """The URL of a new, empty database on the test server, dropped after the test."""
    base = os.environ.get(POSTGRES_URL)
    if not base:
        pytest.fail(f"{POSTGRES_URL} is not set: start the tests with .ci/with-postgres")
    import psycopg

    name = f"ami_engine_test_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# -- gate runs shared by the whole test run --------------------------------------------
# A gate run takes each config through its invariant suite (the chaos suite and every
# scenario profile, 40,000 decisions, twice over the chaos suite). The runs that several
# test files make alike are made once here; the tests only read them.


@pytest.fixture(scope="session")
def base_gate():
    """The gate's report on the base profile against itself, with 1,000 balanced held-out states."""
    from ami_engine.config import load_config
    from ami_engine.gate import run_gate
    from ami_engine.scenario import generate

    base = load_config("base")
    return run_gate(base, base, held_out=generate("balanced", 1000, 2))


@pytest.fixture(scope="session")
def gated_learning():
    """A real, gated learning run (chaos data): what `learn --out` makes a suggestion of."""
    from ami_engine.config import load_config
    from ami_engine.gate import run_gate
    from ami_engine.learning.offline_loop import LearnSettings, data_from_scenario, learn

    return learn(data_from_scenario("chaos", 1500, 4), load_config("base"),
                 LearnSettings(strategy="random", budget=16, seed=4), gate_fn=run_gate)
