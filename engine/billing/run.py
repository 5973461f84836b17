"""The generic invoice run: source records in, draft invoices out.

:func:`run_invoices` checks the request, opens (or joins) the InvoiceRun
record of the period and filters, runs each filter in Sequence order
(:class:`~engine.billing.filterrun.FilterRun`: select and evaluate, then
build and write in batches, one transaction each) and closes the record
with the totals.

The run only reads the columns its getters and formulas need, resolves
accounts in bulk, and pauses the cyclic garbage collector while a batch is
built; ``bench/invoice_run.py`` measures it.

A record that cannot be billed gets ``ON_InvoiceBuildError<sfx>`` and
``ON_LastInvoiceRun<sfx>`` and is listed in the report; the rest is billed.
Running the same period and filters again joins the existing invoice run and
bills nothing twice. The process owns the run while it works
(:func:`owned_run`): a run that fails is marked Failed, and one whose process
was killed is recognized as dead and recovered by the next run
(:mod:`engine.billing.runrecord`). A dry run goes through the same code inside one
transaction that is rolled back (:mod:`engine.billing.session`).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Iterator, Sequence

import sqlalchemy as sa

from engine.domain.errors import EngineError, Where
from engine.storage.context import Context

from .build import RunFacts
from .filterrun import FilterRun
from .plan import FilterPlan, PlanError, plan_filter
from .report import FilterReport, InvoiceSummary, Progress, RecordFailure, RunReport
from .runrecord import OwnerLock, RunOwner, close_run_record, fail_run_record, lock_class, open_run_record
from .session import RunSession
from .recurring import is_recurring, plan_recurring, recurring_runner
from .tax import TaxResolver


class RunError(EngineError, ValueError):
    """The invoice run cannot start: an unknown or invalid filter, no filter
    named, or a period that ends before it starts."""

    code = "R201"


@dataclass(frozen=True)
class RunRequest:
    """What to bill: the filters (by name), the period, the invoice date
    (None: set at finalization), a dry run or not, the batch size, and the
    day relative dates are evaluated against (default: today)."""

    filters: tuple[str, ...]
    period_start: date
    period_end: date
    invoice_date: date | None = None
    dry_run: bool = False
    batch_size: int = 2000
    today: date | None = None


def run_invoices(engine: sa.Engine, ctx: Context, request: RunRequest, progress: Progress | None = None) -> RunReport:
    """Run the given filters over the period; see the module docstring.
    (:func:`engine.billing.workers.run_invoices_parallel` runs the same over
    several processes.)"""
    plans = check_request(ctx, request)
    started = time.perf_counter()
    today = request.today or date.today()
    if not request.dry_run:
        refresh_statistics(engine, ctx, plans)
    with RunSession(engine, request.dry_run) as session, owned_run(session, ctx) as ownership:
        report, run = open_run(session, ctx, request, plans)
        ownership.opened(run.run_id)
        for plan in plans:
            kind = recurring_runner(plan) or FilterRun
            runner = kind(session, ctx, plan, run, today, request.batch_size, progress)  # type: ignore[arg-type]
            report.filters.append(runner.execute())
            report.invoices.extend(runner.summaries)
        report.seconds = time.perf_counter() - started
        ownership.close(report)
    return report


class _Ownership:
    """This process's ownership of the run it works on (see
    :mod:`engine.billing.runrecord`): the run's record is closed by
    :meth:`close`, or marked Failed when the work stops with an error."""

    def __init__(self, session: RunSession, ctx: Context, owner: RunOwner | None):
        self.session = session
        self.ctx = ctx
        self.owner = owner
        self.run_id: int | None = None

    def opened(self, run_id: int) -> None:
        self.run_id = run_id
        self.session.owner = self.owner

    def close(self, report: RunReport) -> None:
        run_id, owner, ctx = self.run_id, self.owner, self.ctx
        self.session.write(lambda conn: close_run_record(conn, ctx, run_id, report, owner))  # type: ignore[arg-type]
        self.run_id = None

    def fail(self, error: BaseException) -> None:
        run_id, owner, ctx = self.run_id, self.owner, self.ctx
        reason = f"{type(error).__name__}: {error}"[:1000]
        self.session.owner = None
        self.session.write(lambda conn: fail_run_record(conn, ctx, run_id, owner, reason))  # type: ignore[arg-type]


@contextmanager
def owned_run(session: RunSession, ctx: Context) -> Iterator[_Ownership]:
    """Own the run for the block (a real run; a dry run owns nothing): the
    owner lock is taken first (PostgreSQL), the run opened with the owner
    recorded (:func:`open_run`), and when the block raises before the run is
    closed, the run is marked Failed. A process killed outright leaves its
    owner row, which the next run or ``metabill runs`` recognizes as dead."""
    if session.dry_run:
        yield _Ownership(session, ctx, None)
        return
    owner = RunOwner.this_process()
    ownership = _Ownership(session, ctx, owner)
    session.pending_owner = owner
    with OwnerLock(session.engine, owner):
        try:
            yield ownership
        except BaseException as error:
            if ownership.run_id is not None:
                try:
                    ownership.fail(error)
                except Exception:  # noqa: BLE001 - the database may be what failed; the run then stays for recovery
                    pass
            raise


def check_request(ctx: Context, request: RunRequest) -> list[FilterPlan]:
    """The request's filter plans in Sequence order, or RunError."""
    if request.period_end < request.period_start:
        raise RunError("the period ends before it starts")
    if not request.filters:
        raise RunError("name at least one filter (--filter NAME)")
    return filter_plans(ctx, request.filters)


def filter_plans(ctx: Context, names: Sequence[str]) -> list[FilterPlan]:
    """The plans of the named filters (each once) in Sequence order, then by
    name; RunError for an unknown filter or one that cannot run."""
    plans = []
    for name in dict.fromkeys(names):
        record = ctx.model.setting_record("Filter", name)
        if record is None:
            known = ", ".join(r.name for r in ctx.model.setting_records("Filter"))
            raise RunError(f"unknown filter '{name}' (filters: {known})", where=Where(object="Filter", record=name))
        try:
            plans.append(plan_recurring(ctx, record) or plan_filter(ctx, record))
        except PlanError as error:
            raise RunError(str(error), where=error.where, hint=error.hint) from None
    return sorted(plans, key=lambda p: (p.record.get("Sequence") or Decimal(0), p.name.lower()))


def refresh_statistics(engine: sa.Engine, ctx: Context, plans: Sequence[FilterPlan]) -> None:
    """PostgreSQL: ANALYZE the tables the run reads when their planner
    statistics are missing or stale (a fifth of the rows changed since).

    Right after a bulk load the planner believes the source tables are
    nearly empty and picks plans that, through the run's server-side cursors,
    made a 20k-line run ten times slower (2.7 s with statistics, 26 s
    without). Autovacuum would analyze them eventually; the run does not
    wait for it. ANALYZE only samples (cheap) and does not block readers or
    writers; SQLite needs nothing of the kind."""
    if engine.dialect.name != "postgresql":
        return
    tables = ctx.metadata.tables
    names = {ctx.obj("Account").table_name}
    for plan in plans:
        if is_recurring(plan):
            names.update(plan.table_names())  # type: ignore[union-attr]
            continue
        names.add(plan.header.obj.table_name)
        if not plan.single:
            names.add(plan.line.obj.table_name)
    stale = sa.text(
        "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname IN :names "
        "AND (COALESCE(last_analyze, last_autoanalyze) IS NULL OR n_mod_since_analyze > GREATEST(n_live_tup, 1000) / 5)"
    ).bindparams(sa.bindparam("names", expanding=True))
    with engine.connect() as conn:
        for name in conn.execute(stale, {"names": sorted(names)}).scalars().all():
            conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.quote(tables[name].name)}")
        conn.commit()


def open_run(session: RunSession, ctx: Context, request: RunRequest,
             plans: Sequence[FilterPlan]) -> tuple[RunReport, RunFacts]:
    """Create or join the InvoiceRun record; the empty report and the run's facts."""
    names = [p.name for p in plans]
    owner = session.pending_owner
    opened = session.write(lambda conn: open_run_record(conn, ctx, request.period_start, request.period_end,
                                                        request.invoice_date, names, owner))
    report = RunReport(opened.run_id, opened.name, opened.joined_existing, request.dry_run)
    report.recovered = opened.recovered
    return report, run_facts(ctx, request, opened.run_id, opened.invoice_date)


def run_facts(ctx: Context, request: RunRequest, run_id: int, invoice_date: date | None) -> RunFacts:
    """What every invoice of the run shares (see :class:`RunFacts`)."""
    return RunFacts(
        run_id=run_id,
        period_start=request.period_start,
        period_end=request.period_end,
        invoice_date=invoice_date,
        config_hash=ctx.config_hash,
        rounding=ctx.settings.rounding_mode,
        tax=ctx.service(TaxResolver),
    )


__all__ = [
    "FilterReport", "InvoiceSummary", "Progress", "RecordFailure", "RunError", "RunReport", "RunRequest",
    "check_request", "filter_plans", "lock_class", "open_run", "owned_run", "refresh_statistics", "run_facts",
    "run_invoices",
]
