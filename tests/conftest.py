"""Database fixtures shared by the test suite.

``db_url`` runs a test once on SQLite (a file in ``tmp_path``) and once on
PostgreSQL. PostgreSQL comes from ``METABILL_TEST_PG_URL``; without it (or
when the server cannot be reached) those runs are skipped, except in CI
(``CI=true``), where a silently skipped backend would hide failures, so they
fail instead.

``prepared`` gives a database in a prepared state (migrated, sample data
loaded, ...): see tests/databases.py.

Every PostgreSQL test gets a schema of its own (``mbt_<random>``), named as
the connection's ``search_path`` in the URL, and dropped afterwards: tests
never see each other's tables, and anything opened from ``db_url`` (engines,
CLI runs) lands in that schema.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.storage.db import open_engine, private_schema

from databases import PreparedDatabases

PG_ENV = "METABILL_TEST_PG_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL server URL for tests (skips or, in CI, fails without one)."""
    url = os.environ.get(PG_ENV)
    if not url:
        if _in_ci():
            pytest.fail(f"{PG_ENV} not set: PostgreSQL tests cannot run, and CI=true forbids skipping them", pytrace=False)
        pytest.skip(f"{PG_ENV} not set: PostgreSQL tests skipped")
    probe = sa.create_engine(url)
    try:
        with probe.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any driver or network failure means "unreachable"
        _unavailable(f"PostgreSQL at {make_url(url).render_as_string()} is unreachable: {exc}")
    finally:
        probe.dispose()
    return url


@pytest.fixture
def pg_schema_url(pg_url: str):
    """A URL whose connections work inside a fresh, private schema."""
    with private_schema(pg_url, "mbt") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metabill.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def engine_for():
    """Open engines on demand (``engine_for(url)``); all are disposed after the
    test, before a PostgreSQL test schema is dropped."""
    opened: list[sa.Engine] = []

    def open_one(url: str) -> sa.Engine:
        engine = open_engine(url)
        opened.append(engine)
        return engine

    yield open_one
    for engine in opened:
        engine.dispose()


@pytest.fixture
def engine(db_url: str, engine_for) -> sa.Engine:
    """An engine on the empty database of ``db_url``."""
    return engine_for(db_url)


@pytest.fixture(scope="session")
def prepared_files(tmp_path_factory) -> PreparedDatabases:
    return PreparedDatabases(tmp_path_factory.mktemp("prepared"))


@pytest.fixture
def prepared(prepared_files, engine_for):
    """``prepared(url, model, prepare=migrate_and_load, key="")``: an engine on
    the database at ``url`` in the state ``prepare`` leaves it (see
    tests/databases.py); SQLite files are prepared once per session and copied."""

    def open_prepared(url: str, model, prepare=None, key: str = "") -> sa.Engine:
        from databases import migrate_and_load

        return prepared_files.open(url, model, engine_for, prepare or migrate_and_load, key)

    return open_prepared


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """The URL of a SQLite file of the test (for cases that do not depend on the backend)."""
    return f"sqlite:///{tmp_path / 'metabill.db'}"
