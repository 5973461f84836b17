"""Write transactions that survive concurrency: retried on PostgreSQL, and a
clear message when SQLite stays locked.

PostgreSQL aborts a transaction that lost a race with SQLSTATE ``40001``
(serialization failure: a REPEATABLE READ or SERIALIZABLE transaction
touched a row a concurrent one changed) or ``40P01`` (deadlock detected);
the documented answer is to run the whole transaction again
(postgresql.org/docs/15/mvcc-serialization-failure-handling.html). ``23505``
(unique violation) is retried too, because the engine's unique keys are also
its race backstops: two finalizations creating the same number range, two
runs claiming the same source record. The second attempt re-reads, sees what
the winner committed and does the right thing (uses the range, skips the
billed record). A genuine duplicate fails again on every attempt and is
raised after the last one.

SQLite has one writer at a time: write transactions start with ``BEGIN
IMMEDIATE`` and wait up to the busy timeout (:mod:`engine.storage.db`), so a
lost race cannot happen there, only a long wait. When the wait runs out,
sqlite3 raises "database is locked"; :func:`run_in_transaction` turns it into
:class:`DatabaseBusyError` with a message a user can act on.

The unit of retry is a callable ``work(conn)`` that does everything of one
transaction and has no effect outside the database until it returns: it is
called again from the start on a fresh connection after a retryable failure.
"""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

import sqlalchemy as sa

from engine.domain.errors import EngineError

T = TypeVar("T")

#: SQLSTATEs after which the whole transaction is run again.
RETRYABLE_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "23505": "unique violation (a concurrent transaction won the race)",
}
#: Attempts in all (the first one included) before the failure is raised.
DEFAULT_ATTEMPTS = 10
#: First back-off in seconds; doubled per attempt (with jitter), capped.
BACKOFF_START = 0.02
BACKOFF_CAP = 1.0


class DatabaseBusyError(EngineError, RuntimeError):
    """The SQLite database stayed locked by another metabill process longer
    than the busy timeout.

    Nothing of the transaction that waited was written; the command can be
    run again when the other process has finished."""

    code = "R901"


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error wrapped by SQLAlchemy (psycopg sets
    ``sqlstate``; sqlite3 has none)."""
    orig = getattr(error, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_retryable(error: BaseException) -> bool:
    """True for a PostgreSQL error after which running the transaction again can succeed."""
    return isinstance(error, sa.exc.DBAPIError) and sqlstate(error) in RETRYABLE_SQLSTATES


def is_sqlite_busy(error: BaseException) -> bool:
    if not isinstance(error, sa.exc.OperationalError):
        return False
    text = str(getattr(error, "orig", error)).lower()
    return "database is locked" in text or "database is busy" in text


def busy_message(seconds: float) -> str:
    return (
        f"the SQLite database stayed locked by another metabill process for more than {seconds:g} s "
        "(one writer at a time: concurrent runs, finalizations and payments queue for the write lock). "
        "Try again when the other process has finished, or use PostgreSQL for concurrent work."
    )


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1``: exponential with full
    jitter, so that the racers of a failed round do not meet again."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_START * (2 ** (attempt - 1))))


def run_in_transaction(
    engine: sa.Engine,
    work: Callable[[sa.Connection], T],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    isolation_level: str | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run ``work(conn)`` inside one transaction and return its result.

    Committed when ``work`` returns, rolled back when it raises. A retryable
    PostgreSQL failure (see :data:`RETRYABLE_SQLSTATES`) rolls back, waits a
    little and calls ``work`` again on a fresh connection, up to ``attempts``
    times; the last failure is raised. ``isolation_level`` (e.g.
    ``"REPEATABLE READ"``) applies on PostgreSQL only: SQLite's write
    transactions are serializable anyway. SQLite's "database is locked"
    becomes :class:`DatabaseBusyError`. Any other exception propagates at
    once, after the rollback.
    """
    from .db import SQLITE_BUSY_TIMEOUT_MS

    attempt = 0
    while True:
        attempt += 1
        try:
            with engine.connect() as conn:
                if isolation_level and conn.dialect.name == "postgresql":
                    conn.execution_options(isolation_level=isolation_level)
                with conn.begin():
                    return work(conn)
        except sa.exc.DBAPIError as error:
            if is_sqlite_busy(error):
                raise DatabaseBusyError(busy_message(SQLITE_BUSY_TIMEOUT_MS / 1000)) from error
            if not is_retryable(error) or attempt >= attempts:
                raise
            if on_retry is not None:
                on_retry(attempt, error)
            time.sleep(backoff(attempt))


__all__ = [
    "DatabaseBusyError", "RETRYABLE_SQLSTATES", "run_in_transaction", "is_retryable", "is_sqlite_busy", "sqlstate",
]
