"""Opening the database and running transactions.

One engine setup for both supported backends. PostgreSQL needs nothing
special. SQLite is tuned for an engine that has several processes writing to
one file (invoice runs next to loads):

* ``PRAGMA foreign_keys=ON`` on every connection, because SQLite leaves
  foreign keys unenforced unless asked, per connection;
* ``journal_mode=WAL`` so readers never block the writer and vice versa;
* ``busy_timeout=10000`` so a writer waits up to 10 s for the lock instead of
  failing at once with "database is locked";
* write transactions start with ``BEGIN IMMEDIATE``. pysqlite's own
  transaction handling starts transactions lazily (deferred), which in WAL
  mode lets two writers both read and then fail when upgrading to a write
  lock (SQLITE_BUSY, not retried by the busy timeout). Taking the write lock
  up front makes concurrent writers queue on the busy timeout instead.

Concurrent writers are therefore safe on SQLite by construction: they take
turns (several invoice-run workers on one SQLite file serialize their write
transactions). On PostgreSQL they really run side by side, and a transaction
that loses a race is aborted by the server; :mod:`engine.storage.retry` runs
such transactions again and turns SQLite's lock timeout into a clear message.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress
from typing import Iterable, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy import event

#: Environment variable naming the database URL.
URL_ENV = "METABILL_DB_URL"
#: The database used when neither an URL nor the environment names one.
DEFAULT_URL = "sqlite:///metabill.db"
#: Milliseconds a SQLite connection waits for a lock before giving up
#: (``$METABILL_SQLITE_BUSY_TIMEOUT_MS`` overrides it, e.g. for tests).
SQLITE_BUSY_TIMEOUT_MS = int(os.environ.get("METABILL_SQLITE_BUSY_TIMEOUT_MS") or 10_000)

# Execution option read by the "begin" hook: how a SQLite transaction begins.
_BEGIN_OPTION = "metabill_sqlite_begin"


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$METABILL_DB_URL``, else a
    ``metabill.db`` file in the working directory."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def open_engine(url: str | None = None, *, create: bool = True) -> sa.Engine:
    """Create the engine for ``url`` (see :func:`resolve_url`).

    For PostgreSQL, driver options can travel in the URL query, e.g.
    ``?options=-csearch_path%3Dmyschema`` to work inside one schema.

    SQLite creates a missing database file on the first connection. With
    ``create=False`` (every command but ``db migrate``) a missing file is
    :class:`~engine.storage.environment.DatabaseMissing` instead, so that a
    command run in the wrong folder neither leaves an empty ``metabill.db``
    behind nor fails later on a table that is not there.
    """
    engine = sa.create_engine(resolve_url(url))
    if engine.dialect.name == "sqlite":
        path = sqlite_file(engine.url)
        if not create and path is not None and not os.path.exists(path):
            from .environment import DatabaseMissing

            engine.dispose()
            raise DatabaseMissing.for_file(path)
        _configure_sqlite(engine)
    return engine


def sqlite_file(url: sa.URL) -> str | None:
    """The file of a SQLite URL; None for an in-memory database or a URI
    (``file:...?mode=...``, whose options decide themselves)."""
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("uri"):
        return None
    return database


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - trivial
        # Take transaction control away from pysqlite: it would otherwise emit
        # a deferred BEGIN itself, and only before DML (not before DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get(_BEGIN_OPTION, "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


def ensure_table(engine: sa.Engine, table: sa.Table) -> None:
    """Create ``table`` when the database has none yet: for the engine's
    bookkeeping tables made on first use, which databases migrated before
    them lack. Two processes may race to create it; the loser finds it
    there, which is all it needs (anything else is raised)."""
    try:
        with transaction(engine) as conn:
            table.create(conn, checkfirst=True)
    except sa.exc.DBAPIError:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table.name):
                raise


@contextmanager
def transaction(engine: sa.Engine, *, readonly: bool = False) -> Iterator[sa.Connection]:
    """A connection inside one transaction: committed when the block ends,
    rolled back when it raises.

    ``readonly=True`` is for reading a consistent snapshot: a deferred
    transaction on SQLite, which does not take the write lock and so does not
    queue behind writers; a REPEATABLE READ, READ ONLY transaction on
    PostgreSQL. Do not write inside it.
    """
    with engine.connect() as connection:
        if readonly:
            if connection.dialect.name == "sqlite":
                connection.execution_options(**{_BEGIN_OPTION: "DEFERRED"})
            elif connection.dialect.name == "postgresql":
                # One snapshot for the whole block, as SQLite gives readers.
                connection.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with connection.begin():
            yield connection


def copy_rows(connection: sa.Connection, table_name: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """PostgreSQL: ``COPY table (columns) FROM STDIN`` of driver rows, inside
    the connection's current transaction.

    For big inserts: psycopg's ``executemany`` sends one INSERT per row (in a
    pipeline) and the server parses and executes each; COPY streams the rows
    into one command (PostgreSQL docs, "Populating a Database"), several
    times faster for the invoice run's lines. ``rows`` hold driver values as
    for ``executemany`` (``RowWriter.rows``); psycopg's dumpers turn them into
    COPY text, escaping included."""
    if connection.dialect.name != "postgresql":
        raise ValueError("COPY is PostgreSQL only")
    quote = connection.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table_name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"
    count = 0
    cursor = connection.connection.dbapi_connection.cursor()
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    finally:
        cursor.close()
    return count


def raw_dbapi(connection: sa.Connection):
    """The driver connection underneath ``connection`` (for PRAGMAs that must
    run outside any transaction)."""
    return connection.connection.driver_connection


@contextmanager
def private_schema(server_url: str, prefix: str) -> Iterator[str]:
    """A URL whose connections work inside a new, empty PostgreSQL schema
    (``<prefix>_<random>``, named as the connections' search_path), dropped
    on exit: for tests and benchmarks that share one server."""
    import uuid

    from sqlalchemy.engine import make_url

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(server_url).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        except BaseException:
            # A failed test or benchmark leaves no schema behind on the shared
            # server either; its own error is the one that matters, so a drop
            # that fails too (a lock still held elsewhere) is not raised over it.
            with suppress(sa.exc.DBAPIError):
                _drop_schema(admin, schema)
            raise
        _drop_schema(admin, schema)
    finally:
        admin.dispose()


def _drop_schema(admin: sa.Engine, schema: str) -> None:
    """Drop a schema of :func:`private_schema`, waiting at most 10 s for locks
    (a connection left open in a transaction on it must not hang the caller)."""
    with admin.connect() as conn:
        conn.execute(sa.text("SET lock_timeout = '10s'"))
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@contextmanager
def unit_of_work(engine: sa.Engine, *, dry_run: bool = False) -> Iterator[sa.Connection]:
    """One write transaction for one command's changes: committed when the
    block ends, rolled back when it raises, and rolled back instead of
    committed when ``dry_run`` is set.

    This is the one dry-run mechanism of the engine: a command that offers
    ``--dry-run`` runs exactly the code of the real run inside a unit of work
    that is not committed (and writes no file: :mod:`engine.storage.files`),
    so what it reports is what the real run would do."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
