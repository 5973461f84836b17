"""Failures of the environment, as runtime errors a user can act on.

A command can fail because of the database rather than its input: SQLite
stayed locked by another process, the server cannot be reached (wrong URL,
server down, access refused, no such database), or the database was never
migrated to the org's model, or does not exist at all (a SQLite file is
never created by a command other than ``metabill db migrate``,
:class:`DatabaseMissing`). Or because of the file system: the disk is
full, a folder is read-only or not accessible (:class:`FileSystemError`;
every file the engine writes is staged, so such a failure leaves no partial
file and, for exports, nothing marked exported). The driver reports these as SQLAlchemy
``DBAPIError``s with driver-specific texts and SQLSTATEs;
:func:`environment_error` recognizes them and returns the
:class:`~engine.domain.errors.EngineError` to show instead (codes R9xx), so
the one place that renders errors (the CLI) needs no knowledge of drivers.
Anything it does not recognize stays what it is: a bug to report.
"""

from __future__ import annotations

import errno

import sqlalchemy as sa

from engine.domain.errors import EngineError

from .retry import DatabaseBusyError, busy_message, is_sqlite_busy, sqlstate

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


class DatabaseMissing(EngineError):
    """The SQLite database file does not exist: no database has been made
    here yet (or the command runs in another folder than intended). It is
    not created: only ``metabill db migrate`` creates a database."""

    code = "R140"

    @classmethod
    def for_file(cls, path: str) -> "DatabaseMissing":
        return cls(f"there is no database {path}: run 'metabill db migrate' to create it",
                   hint="or name another one with --db (or METABILL_DB_URL)")


class FileSystemError(EngineError):
    """A file could not be written or read: the disk is full, the folder is
    read-only, access is refused, or the file system failed; no partial file
    was left and nothing that depends on the file was recorded."""

    code = "R904"


#: OS errors that are the environment's, not a bug: full disk or quota,
#: read-only file system, permission, missing folder, I/O failure, too long a name.
_FILE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
                errno.EISDIR, errno.EIO, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.EFBIG}


def environment_error(error: BaseException) -> EngineError | None:
    """The environment failure ``error`` stands for, or None when it is
    something else (the error itself is left untouched)."""
    if isinstance(error, OSError) and not isinstance(error, sa.exc.DBAPIError) and error.errno in _FILE_ERRNOS:
        where = f" ({error.filename})" if error.filename else ""
        hint = {errno.ENOSPC: "free disk space (or choose another folder) and run the command again",
                errno.EDQUOT: "free space within your quota and run the command again"}.get(
            error.errno, "check the path and its permissions, then run the command again")
        return FileSystemError(f"cannot write or read a file{where}: {error.strerror or error}", hint=hint)
    if not isinstance(error, sa.exc.DBAPIError):
        return None
    if is_sqlite_busy(error):
        from .db import SQLITE_BUSY_TIMEOUT_MS

        return DatabaseBusyError(busy_message(SQLITE_BUSY_TIMEOUT_MS / 1000))
    detail = _driver_text(error)
    state = sqlstate(error) or ""
    lowered = detail.lower()
    if state == "53100" or "database or disk is full" in lowered:  # PostgreSQL disk_full, SQLITE_FULL
        return FileSystemError(f"the database cannot grow: {detail}",
                               hint="free disk space for the database and run the command again; nothing was changed")
    if state in _UNDEFINED or "no such table" in lowered or "no such column" in lowered:
        return SchemaNotMigrated(f"the database is empty or not migrated to the org's model ({detail}): "
                                 "run 'metabill db migrate'",
                                 hint="with the same --org and --db; 'metabill db plan' shows what it changes first")
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
