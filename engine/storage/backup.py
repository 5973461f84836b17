"""Backups written before a migration destroys data.

``db migrate --allow-data-loss`` drops columns and tables, cuts texts and
rounds numbers. Before it does, inside the migration's own transaction and
before the first change, :func:`backup_before_changes` writes a copy the user
can restore:

* **SQLite**: a copy of the whole database file, taken with SQLite's online
  backup API by a reader beside the migrating connection, once the migration
  holds the write lock and before it changes anything: exactly the state the
  migration starts from (no other writer can get in between). It is written as
  ``<database>.before-migration-<UTC time>.db.part``, synced and renamed, in
  the folder of the database. Restore: stop metabill, copy it over the
  database file.
* **PostgreSQL**: a copy of every table the destructive changes touch (and
  of metabill's schema snapshot ``_mb_schema_field``) into a new schema
  ``mb_backup_<UTC time>`` of the same database, created in the migration's
  transaction: it exists exactly when the migration committed. Restore a
  table with ``INSERT INTO t SELECT ... FROM mb_backup_....t`` (or rename
  the schema's tables back); drop the schema when it is no longer needed.

The location is returned and reported by the command
(:attr:`engine.storage.migration_plan.MigrationPlan.backup`).
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import sqlalchemy as sa

from .files import sync_folder

#: Prefix of the PostgreSQL schemas holding backups.
SCHEMA_PREFIX = "mb_backup_"


def backup_before_changes(conn: sa.Connection, tables: Iterable[str], *, now: datetime | None = None) -> str:
    """Write the backup (see the module docstring) inside ``conn``'s open
    migration transaction and return where it is: a file path (SQLite) or
    ``schema mb_backup_...`` (PostgreSQL). ``tables`` are the tables the
    destructive changes touch."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S%fZ")
    if conn.dialect.name == "sqlite":
        return _sqlite_copy(conn, stamp)
    return _postgresql_copy(conn, sorted(set(tables)), stamp)


def discard_backup(location: str | None) -> None:
    """Remove a SQLite backup file again (the migration it preceded failed and
    changed nothing); a PostgreSQL backup schema goes with the rollback."""
    if location and not location.startswith("schema ") and location != MEMORY:
        Path(location).unlink(missing_ok=True)


#: The backup "location" of an in-memory SQLite database, which has no file to copy.
MEMORY = "none: the database is in memory"


def _sqlite_copy(conn: sa.Connection, stamp: str) -> str:
    database = conn.engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return MEMORY
    source = Path(database).resolve()
    target = source.with_name(f"{source.name}.before-migration-{stamp}.db")
    part = target.with_name(target.name + ".part")
    # A second connection reads the last committed state: the state the
    # migration starts from, since it has changed nothing yet and holds the
    # write lock (WAL lets a reader work beside it; no writer can commit).
    source_conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    copy = sqlite3.connect(part)
    try:
        source_conn.backup(copy)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        copy.close()
        source_conn.close()
    descriptor = os.open(part, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(part, target)
    sync_folder(target.parent)
    return str(target)


def _postgresql_copy(conn: sa.Connection, tables: list[str], stamp: str) -> str:
    quote = conn.dialect.identifier_preparer.quote
    schema = f"{SCHEMA_PREFIX}{stamp.lower()}"
    current = conn.execute(sa.select(sa.func.current_schema())).scalar_one()
    conn.exec_driver_sql(f"CREATE SCHEMA {quote(schema)}")
    existing = set(sa.inspect(conn).get_table_names())
    for table in [*tables, "_mb_schema_field"]:
        if table in existing:
            conn.exec_driver_sql(f"CREATE TABLE {quote(schema)}.{quote(table)} AS TABLE {quote(current)}.{quote(table)}")
    return f"schema {schema}"
