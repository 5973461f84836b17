"""Failures of the environment, as runtime errors a user can act on.

A command can fail because of the database rather than its input: SQLite
stayed locked by another process, the server cannot be reached (wrong URL,
server down, access refused, no such database), or the database was never
migrated to the org's model. The driver reports these as SQLAlchemy
``DBAPIError``s with driver-specific texts and SQLSTATEs;
:func:`environment_error` recognizes them and returns the
:class:`~engine.domain.errors.EngineError` to show instead (codes R9xx), so
the one place that renders errors (the CLI) needs no knowledge of drivers.
Anything it does not recognize stays what it is: a bug to report.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.domain.errors import EngineError

from .retry import DatabaseBusyError, busy_message, is_sqlite_busy, sqlstate

MIGRATE_HINT = "run 'metabill db migrate' for this org and database first"

# SQLSTATE classes and codes (PostgreSQL, appendix A) that mean "cannot use
# this database at all" and "the schema lacks something".
_CONNECTION_CLASSES = ("08", "28")  # connection exception, invalid authorization
_NO_DATABASE = "3D000"  # invalid catalog name
_UNDEFINED = ("42P01", "42703")  # undefined table, undefined column


class DatabaseUnreachable(EngineError):
    """The database cannot be opened or reached (wrong URL, server down,
    access refused, no such database or file location)."""

    code = "R902"


class SchemaNotMigrated(EngineError):
    """The database lacks a table or column of the org's model: the schema
    migration has not been applied to it."""

    code = "R903"


def environment_error(error: BaseException) -> EngineError | None:
    """The environment failure ``error`` stands for, or None when it is
    something else (the error itself is left untouched)."""
    if not isinstance(error, sa.exc.DBAPIError):
        return None
    if is_sqlite_busy(error):
        from .db import SQLITE_BUSY_TIMEOUT_MS

        return DatabaseBusyError(busy_message(SQLITE_BUSY_TIMEOUT_MS / 1000))
    detail = _driver_text(error)
    state = sqlstate(error) or ""
    lowered = detail.lower()
    if state in _UNDEFINED or "no such table" in lowered or "no such column" in lowered:
        return SchemaNotMigrated(f"the database does not match the org's model: {detail}", hint=MIGRATE_HINT)
    if (
        state.startswith(_CONNECTION_CLASSES)
        or state == _NO_DATABASE
        or "unable to open database file" in lowered
        or (isinstance(error, sa.exc.OperationalError) and error.statement is None)
    ):
        return DatabaseUnreachable(f"cannot open the database: {detail}",
                                   hint="check the --db URL (or METABILL_DB_URL) and that the server is running")
    return None


def _driver_text(error: sa.exc.DBAPIError) -> str:
    """The driver's own message, first line only (SQLAlchemy appends the
    statement and a link)."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__
