"""Engine setup: URL resolution, SQLite pragmas and write-lock queueing."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from engine.storage.db import DEFAULT_URL, URL_ENV, open_engine, resolve_url, transaction


def test_url_comes_from_argument_then_environment_then_default(monkeypatch):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert resolve_url() == DEFAULT_URL == "sqlite:///metabill.db"
    monkeypatch.setenv(URL_ENV, "sqlite:///from-env.db")
    assert resolve_url() == "sqlite:///from-env.db"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"


def test_default_database_is_a_file_in_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    engine = open_engine()
    try:
        with transaction(engine) as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    finally:
        engine.dispose()
    assert (tmp_path / "metabill.db").is_file()


def test_sqlite_connections_are_configured(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
    finally:
        engine.dispose()


def test_sqlite_transactions_are_real_and_roll_back_ddl(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with pytest.raises(RuntimeError):
            with transaction(engine) as conn:
                conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("abort")
        with engine.connect() as conn:
            assert not sa.inspect(conn).has_table("t")
    finally:
        engine.dispose()


def test_sqlite_writers_queue_instead_of_failing(tmp_path):
    """Read-modify-write from several connections at once: BEGIN IMMEDIATE
    makes them take turns, so no update is lost and none fails with
    "database is locked" (which deferred transactions do in WAL mode)."""
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with transaction(engine) as conn:
        conn.execute(sa.text("CREATE TABLE counter (n INTEGER NOT NULL)"))
        conn.execute(sa.text("INSERT INTO counter VALUES (0)"))
    failures: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(5):
                with transaction(engine) as conn:
                    n = conn.execute(sa.text("SELECT n FROM counter")).scalar_one()
                    time.sleep(0.005)
                    conn.execute(sa.text("UPDATE counter SET n = :n"), {"n": n + 1})
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT n FROM counter")).scalar_one() == 20
    finally:
        engine.dispose()


def test_readonly_transactions_do_not_wait_for_the_writer(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with transaction(engine) as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        with transaction(engine) as writer:
            writer.execute(sa.text("INSERT INTO t VALUES (1)"))
            started = time.monotonic()
            with transaction(engine, readonly=True) as reader:
                assert reader.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 0
            assert time.monotonic() - started < 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_engine_works_inside_its_test_schema(pg_schema_url, engine_for):
    engine = engine_for(pg_schema_url)
    with transaction(engine) as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        where = conn.execute(sa.text("SELECT table_schema FROM information_schema.tables WHERE table_name = 't'")).scalars().all()
    assert schema.startswith("mbt_") and where == [schema]


@pytest.mark.postgres
def test_private_schema_is_dropped_also_when_its_user_fails(pg_url):
    """A failing test or benchmark must not leave its schema on the shared
    server; its own error is what reaches the caller."""
    from sqlalchemy.engine import make_url

    from engine.storage.db import private_schema

    def schemas() -> set[str]:
        admin = sa.create_engine(pg_url)
        try:
            with admin.connect() as conn:
                return set(conn.execute(sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'mbdrop%'"))
                           .scalars())
        finally:
            admin.dispose()

    before = schemas()
    seen = []
    with pytest.raises(ZeroDivisionError):
        with private_schema(pg_url, "mbdrop") as url:
            seen.append(make_url(url).query["options"].split("=", 1)[1])
            engine = open_engine(url)
            try:
                with transaction(engine) as conn:
                    conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            finally:
                engine.dispose()
            assert seen[0] in schemas()
            1 / 0
    with private_schema(pg_url, "mbdrop") as url:
        seen.append(make_url(url).query["options"].split("=", 1)[1])
    assert len(seen) == 2 and schemas() == before
