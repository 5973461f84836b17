"""The transactions of one invoice run, real or dry.

A real run commits each batch in a transaction of its own, run again from
the start when PostgreSQL aborts it for a lost race
(:func:`engine.storage.retry.run_in_transaction`): a crash loses at most the
batch in flight. A dry run is the same code inside the engine's one dry-run
mechanism, :func:`engine.storage.db.unit_of_work` with ``dry_run=True``: one
outer transaction, rolled back at the end, in which each batch runs in a
savepoint where the real run has its own transaction. So a batch of the dry
run sees exactly what the same batch of a real run would see, the batches
before it included.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import date
from typing import Callable, Iterable, Iterator, TypeVar

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.db import SQLITE_BUSY_TIMEOUT_MS, unit_of_work
from engine.storage.retry import DatabaseBusyError, busy_message, is_sqlite_busy, run_in_transaction

from .accounts import AccountCache
from .runrecord import RunOwner, touch_owner

T = TypeVar("T")
U = TypeVar("U")
B = TypeVar("B")
P = TypeVar("P")
F = TypeVar("F")
R = TypeVar("R")


class RunSession:
    """Where the batches of a run are read and written; see the module
    docstring. A real run's session needs no ``with`` block; a dry run's
    holds its unit of work while the block is open."""

    def __init__(self, engine: sa.Engine, dry_run: bool):
        self.engine = engine
        self.dry_run = dry_run
        #: The process's ownership of the run, once opened: every committed
        #: write of a real run carries its heartbeat.
        self.owner: RunOwner | None = None
        #: The owner the run record is opened with (before it heartbeats).
        self.pending_owner: RunOwner | None = None
        self._unit: ExitStack | None = None
        self._conn: sa.Connection | None = None
        self._accounts: tuple[Context, date, AccountCache] | None = None

    def account_cache(self, ctx: Context, today: date) -> AccountCache:
        """The run's account records and resolutions, shared by its filters:
        three filters billing the same accounts read each account once, not
        three times (issue 19: a third of the accounts' cost). Within one
        filter the cache already lived from pass 1 to its last batch; sharing
        it only lengthens that life to the run's, and it stays bounded the
        same way (``filterrun.ACCOUNTS_KEPT`` empties it). Another
        configuration or day gets a cache of its own."""
        found = self._accounts
        if found is None or found[0] is not ctx or found[1] != today:
            found = self._accounts = (ctx, today, AccountCache(ctx, today))
        return found[2]

    def __enter__(self) -> "RunSession":
        if self.dry_run:
            self._unit = ExitStack()
            self._conn = self._unit.enter_context(unit_of_work(self.engine, dry_run=True))
        return self

    def __exit__(self, *exc) -> bool | None:
        if self._unit is None:
            return None
        unit, self._unit, self._conn = self._unit, None, None
        return unit.__exit__(*exc)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def write(self, work: Callable[[sa.Connection], T]) -> T:
        """``work(conn)`` in one write transaction (a savepoint in a dry run).
        ``work`` may be called more than once (after a retryable failure), so
        it must leave no trace outside the database: it returns what the
        caller should record, and the caller records it after the commit."""
        if self._conn is not None:
            with self._conn.begin_nested():
                return work(self._conn)
        owner = self.owner
        if owner is None:
            return run_in_transaction(self.engine, work)

        def with_heartbeat(conn: sa.Connection) -> T:
            result = work(conn)
            touch_owner(conn, owner)
            return result

        return run_in_transaction(self.engine, with_heartbeat)

    def write_behind(self, front: Callable[[sa.Connection], T | None], back: Callable[[sa.Connection, T], U],
                     writer: Executor) -> "Future[U] | None":
        """One write transaction in two parts: ``front(conn)`` here, then,
        unless it returns None (the transaction is then rolled back and None
        returned), ``back(conn, what front returned)``, the heartbeat and the
        commit in ``writer`` (one thread: the transactions of a run are
        written one after the other). Returns the future of ``back``'s
        result; the caller waits for it before its next write. Not retried:
        a failure of either part rolls the transaction back and is raised
        (by the future for ``back``). Not for a dry run (its one
        connection stays in this thread)."""
        assert self._conn is None, "a dry run writes in its own connection"
        conn = self.engine.connect()
        try:
            transaction = conn.begin()
            value = front(conn)
        except BaseException as error:
            conn.close()  # rolls back
            if isinstance(error, sa.exc.DBAPIError) and is_sqlite_busy(error):
                raise DatabaseBusyError(busy_message(SQLITE_BUSY_TIMEOUT_MS / 1000)) from error
            raise
        if value is None:
            conn.close()
            return None
        owner = self.owner

        def finish() -> U:
            try:
                result = back(conn, value)
                if owner is not None:
                    touch_owner(conn, owner)
                transaction.commit()
                return result
            finally:
                conn.close()  # rolls back what was not committed

        return writer.submit(finish)

    def batches_behind(self, batches: Iterable[B], prepare: Callable[[B], P],
                       front: Callable[[sa.Connection, P], F | None], back: Callable[[sa.Connection, F, P], R],
                       again: Callable[[B], R], done: Callable[[B, R], None]) -> None:
        """Write ``batches`` behind: each is prepared here (``prepare(batch)``:
        reads, in read transactions), then written in one transaction whose
        first part, ``front(conn, prepared)``, runs here and whose rest,
        ``back(conn, what front returned, prepared)``, and commit run in a
        writer thread (:meth:`write_behind`) while the next batch is
        prepared. One write transaction at a time, in batch order;
        ``done(batch, what back returned)`` after each commit, in batch
        order. A batch whose ``front`` returns None, or whose ``back`` fails
        on a constraint (``IntegrityError``: rows written meanwhile by
        someone else), is done ``again(batch)`` (the whole way, in a
        transaction of its own). Any other failure is raised once the write
        in flight has ended."""
        with ThreadPoolExecutor(1, "metabill-writer") as writer:
            pending: tuple[B, Future] | None = None
            try:
                for batch in batches:
                    prepared = prepare(batch)
                    if pending is not None:
                        _finish(pending, again, done)
                        pending = None
                    # Bound now: the writer thread calls back after this loop has moved on.
                    future = self.write_behind(lambda conn, p=prepared: front(conn, p),  # type: ignore[misc]
                                               lambda conn, value, p=prepared: back(conn, value, p), writer)
                    if future is None:
                        done(batch, again(batch))
                    else:
                        pending = (batch, future)
                if pending is not None:
                    _finish(pending, again, done)
                    pending = None
            finally:
                if pending is not None:  # raising: the write in flight ends (commits or not) first
                    pending[1].exception()

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for reading: the dry run's own, else a read
        transaction (``BEGIN DEFERRED`` on SQLite: reading takes no write
        lock)."""
        if self._conn is not None:
            yield self._conn
        else:
            with self.engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    conn = conn.execution_options(metabill_sqlite_begin="DEFERRED")
                with conn.begin():
                    yield conn


def _finish(pending: tuple, again: Callable, done: Callable) -> None:
    """Wait for a batch written behind; do it again when its write was refused."""
    batch, future = pending
    try:
        outcome = future.result()
    except sa.exc.IntegrityError:
        outcome = again(batch)
    done(batch, outcome)
