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

from contextlib import ExitStack, contextmanager
from datetime import date
from typing import Callable, Iterator, TypeVar

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.db import unit_of_work
from engine.storage.retry import run_in_transaction

from .accounts import AccountCache
from .runrecord import RunOwner, touch_owner

T = TypeVar("T")


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
