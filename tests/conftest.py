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
