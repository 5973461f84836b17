"""Bringing the database schema in line with the metadata model.

:func:`plan_migration` compares the model with what the database holds and
returns the changes as data; :func:`apply_migration` carries them out. The
work is split by responsibility: :mod:`.migration_plan` computes the diff
and the plan (from the ``_mb_schema_field`` snapshot of :mod:`.snapshot`
plus reflection), :mod:`.migration_apply` executes it, :mod:`.snapshot`
records the new state. Everything a caller needs is importable from here.

Only tables the snapshot records are ever dropped: a table that the model
does not know and that metabill did not create is left alone.

Applying happens in **one transaction**; PostgreSQL and SQLite both have
transactional DDL, so a failure leaves the schema and every row as they were.
Destructive changes (see :attr:`Change.data_loss`) are refused unless
explicitly allowed, before anything is touched, and a backup is written
before they are applied (:mod:`.backup`). A change that would rewrite a
finalized record is refused whatever is allowed (:attr:`Change.refused`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

import sqlalchemy as sa

from engine.config.model import OrgModel

from . import schema as s
from .backup import backup_before_changes, discard_backup
from .db import raw_dbapi, transaction
from .guards import install_guards, remove_guards
from .migration_apply import execute_diff
from .migration_plan import (
    ADD_COLUMN,
    ADD_INDEX,
    CHANGE_TYPE,
    CREATE_TABLE,
    DROP_COLUMN,
    DROP_INDEX,
    DROP_TABLE,
    Change,
    DataLossRefused,
    FinalizedRecordsProtected,
    MigrationError,
    MigrationPlan,
    compute_diff,
    describe,
)
from .snapshot import STORAGE_FORMAT, read_meta, write_meta, write_snapshot

__all__ = [
    "ADD_COLUMN", "ADD_INDEX", "CHANGE_TYPE", "CREATE_TABLE", "DROP_COLUMN", "DROP_INDEX", "DROP_TABLE",
    "STORAGE_FORMAT", "Change", "DataLossRefused", "FinalizedRecordsProtected", "MigrationError", "MigrationPlan", "apply_migration",
    "describe", "plan_migration", "read_meta",
]

# Any constant: serialises concurrent migrations on one PostgreSQL database.
_PG_LOCK_KEY = 0x6D62_6D69_6772


def plan_migration(engine: sa.Engine, model: OrgModel) -> MigrationPlan:
    """The changes that would bring the database in line with ``model``."""
    with transaction(engine, readonly=True) as conn:
        return compute_diff(conn, model).plan


def apply_migration(engine: sa.Engine, model: OrgModel, *, allow_data_loss: bool = False) -> MigrationPlan:
    """Apply every change of the plan in one transaction and record the new
    snapshot; return the plan that was applied (empty when nothing changed).

    Raises :class:`FinalizedRecordsProtected` (before changing anything,
    whatever is allowed) when a change would rewrite finalized invoices, their
    lines or booking details; :class:`DataLossRefused` (before changing
    anything) when the plan has destructive changes and ``allow_data_loss``
    is false; :class:`MigrationError` when existing data prevents a change.

    Destructive changes are preceded by a backup (:mod:`.backup`: a copy of
    the SQLite file, or of the affected tables into a ``mb_backup_*`` schema
    on PostgreSQL), written inside the migration before the first change;
    the returned plan's ``backup`` says where.
    """
    backup: str | None = None
    with _migration_connection(engine) as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
            diff = compute_diff(conn, model)
            if diff.plan.refused:
                raise FinalizedRecordsProtected(diff.plan)
            if diff.plan.destructive and not allow_data_loss:
                raise DataLossRefused(diff.plan)
            if diff.plan.destructive:
                backup = backup_before_changes(conn, destructive_tables(diff))
            try:
                s.INTERNAL.create_all(conn, checkfirst=True)
                remove_guards(conn)
                execute_diff(conn, diff)
                snapshot_changed = write_snapshot(conn, diff.target)
                write_meta(conn, model, bump=bool(diff.plan) or snapshot_changed)
                install_guards(conn, model)
                if conn.dialect.name == "sqlite":
                    _check_foreign_keys(conn)
            except BaseException:
                discard_backup(backup)
                raise
    return replace(diff.plan, backup=backup) if backup else diff.plan


def destructive_tables(diff) -> list[str]:
    """The tables a diff's destructive changes touch (what a backup must hold)."""
    lossy = {change.object_name.lower() for change in diff.plan.destructive}
    tables = [t.table for t in diff.tables if t.object_name.lower() in lossy]
    return tables + [table for table, _, _ in diff.drop_tables]


@contextmanager
def _migration_connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection for DDL. On SQLite, foreign keys are switched off for the
    duration: rebuilding a parent table (DROP + rename) would otherwise fire
    ON DELETE CASCADE/SET NULL on its children. The pragma only works outside
    a transaction, hence it is set on the raw connection before BEGIN;
    integrity is checked with ``PRAGMA foreign_key_check`` before COMMIT."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            yield conn
            return
        raw = raw_dbapi(conn)
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(conn: sa.Connection) -> None:
    problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        sample = ", ".join(f"{p[0]} row {p[1]} -> {p[2]}" for p in problems[:5])
        raise MigrationError(f"the migration would leave {len(problems)} dangling references ({sample})")
