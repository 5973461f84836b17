"""The billing commands' entry points: one function per command.

The CLI parses its arguments, calls one of these with the command's runtime
context and renders what comes back; everything a command decides or asks
the database is here. Failures are :class:`~engine.domain.errors.EngineError`
subclasses of this package (R2xx, ``docs/runtime-errors.md``).

* ``invoice-run``: :func:`invoice_run` (in this process or over workers);
* ``delete-drafts``: :func:`delete_drafts_of`;
* ``finalize --run/--invoice``, ``render --run``: :func:`find_drafts` and
  :func:`find_run` find what to work on;
* ``runs``: :func:`list_runs` (the runs with their state: a Running run
  whose process died is ``Dead``) and, with ``--recover``,
  :func:`recover_runs`.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Iterable

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.db import resolve_url, unit_of_work

from .drafts import DraftError, delete_drafts, draft_ids
from .subscription_build import BuildReport, build_subscriptions
from .report import Progress, RunReport
from .run import RunRequest
from .runrecord import RunNotFound, RunState, find_run, recover_dead_runs, runs_state
from .workers import run_invoices_parallel


def invoice_run(db_url: str | None, org_dir: Path, ctx: Context, request: RunRequest, *, workers: int = 1,
                progress: Progress | None = None) -> RunReport:
    """``invoice-run``: bill ``request`` on the database at ``db_url`` (the
    default database when None), in this process or, with ``workers`` > 1,
    over that many processes that load the org at ``org_dir`` (``ctx`` must
    be its context). A dry run always runs here, in one transaction that is
    rolled back. Raises RunError (R201), WorkerError (R207)."""
    return run_invoices_parallel(resolve_url(db_url), org_dir, ctx, request, workers, progress)


def build_subscriptions_of(db_url: str | None, ctx: Context, filter_name: str, *, dry_run: bool = False,
                           today: date | None = None) -> BuildReport:
    """``build-subscriptions``: the subscriptions of a SubscriptionBuilder
    filter's unbuilt records (:mod:`engine.billing.subscription_build`).
    Raises SubscriptionBuildError (R222)."""
    from engine.storage.db import open_engine

    engine = open_engine(resolve_url(db_url), create=False)
    try:
        return build_subscriptions(engine, ctx, filter_name, dry_run=dry_run, today=today)
    finally:
        engine.dispose()


def delete_drafts_of(engine: sa.Engine, ctx: Context, *, run: str | int | None = None,
                     names: Iterable[str] = ()) -> int:
    """``delete-drafts``: delete the drafts of the invoice run ``run`` (name
    or id) and/or the drafts named ``names``, and release their source
    records; returns how many were deleted. All or nothing, in one
    transaction: named invoices that are not drafts or do not exist (when no
    run is given) refuse the whole command. Raises RunNotFound (R210),
    DraftError (R211)."""
    names = list(names)
    with unit_of_work(engine) as conn:
        run_id = find_run(conn, ctx, run) if run else None
        ids = draft_ids(conn, ctx, run_id=run_id, names=names)
        if names and run_id is None and len(ids) != len(set(names)):
            raise DraftError("some of the named invoices are not drafts or do not exist; nothing was deleted")
        return delete_drafts(conn, ctx, ids)


def find_drafts(engine: sa.Engine, ctx: Context, *, run: str | int | None = None,
                names: Iterable[str] = ()) -> list[int]:
    """The ids of the drafts of the invoice run ``run`` (name or id) and/or
    named ``names`` (``finalize``, ``invoice-run --finalize``); raises
    RunNotFound (R210) for an unknown run."""
    with engine.connect() as conn:
        run_id = find_run(conn, ctx, run) if run else None
        return draft_ids(conn, ctx, run_id=run_id, names=names)


def list_runs(engine: sa.Engine, ctx: Context, *, names: Iterable[str] = (), limit: int | None = 20) -> list[RunState]:
    """``runs``: the invoice runs, newest first (at most ``limit``; all of
    them when ``names`` picks runs by name or id), each with its owners and
    its state: the status, or ``Dead`` for a Running run none of whose
    processes still works on it. Raises RunNotFound (R210)."""
    names = list(names)
    with engine.connect() as conn:
        return runs_state(conn, ctx, names=names, limit=None if names else limit)


def recover_runs(engine: sa.Engine, ctx: Context, *, names: Iterable[str] = ()) -> list[RunState]:
    """``runs --recover``: mark every dead run (of ``names``, or all) Failed,
    naming the processes that stopped in its log, and return them (as they
    were). Their committed batches stay; running the same invoice run again
    bills the rest. Runs whose processes are alive are left alone. Raises
    RunNotFound (R210)."""
    with unit_of_work(engine) as conn:
        return recover_dead_runs(conn, ctx, names=list(names))


__all__ = ["RunNotFound", "RunState", "delete_drafts_of", "find_drafts", "find_run", "invoice_run", "list_runs",
           "recover_runs"]
