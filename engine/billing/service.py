"""The billing commands' entry points: one function per command.

The CLI parses its arguments, calls one of these with the command's runtime
context and renders what comes back; everything a command decides or asks
the database is here. Failures are :class:`~engine.domain.errors.EngineError`
subclasses of this package (R2xx, ``docs/runtime-errors.md``).

* ``invoice-run``: :func:`invoice_run` (in this process or over workers);
* ``delete-drafts``: :func:`delete_drafts_of`;
* ``finalize --run/--invoice``, ``render --run``: :func:`find_drafts` and
  :func:`find_run` find what to work on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.db import resolve_url, unit_of_work

from .drafts import DraftError, delete_drafts, draft_ids
from .report import Progress, RunReport
from .run import RunRequest
from .runrecord import RunNotFound, find_run
from .workers import run_invoices_parallel


def invoice_run(db_url: str | None, org_dir: Path, ctx: Context, request: RunRequest, *, workers: int = 1,
                progress: Progress | None = None) -> RunReport:
    """``invoice-run``: bill ``request`` on the database at ``db_url`` (the
    default database when None), in this process or, with ``workers`` > 1,
    over that many processes that load the org at ``org_dir`` (``ctx`` must
    be its context). A dry run always runs here, in one transaction that is
    rolled back. Raises RunError (R201), WorkerError (R207)."""
    return run_invoices_parallel(resolve_url(db_url), org_dir, ctx, request, workers, progress)


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


__all__ = ["RunNotFound", "delete_drafts_of", "find_drafts", "find_run", "invoice_run"]
