"""The cash commands as services: one function per command of the CLI.

Each function takes the database engine and the command's runtime context,
typed arguments (amounts are ``Decimal``, dates ``date``; parsing the command
line is the CLI's part), opens the transaction its work needs, and returns a
typed result for the CLI to render. Failures are the
:class:`~engine.domain.errors.EngineError` subclasses of
:mod:`engine.cash.errors` (codes R400-R499).

Transactions:

* everything that writes runs in :func:`write`: one transaction per
  command, retried by :func:`engine.storage.retry.run_in_transaction`
  (concurrent commands race for the same invoice or account, and
  PostgreSQL's answer to a lost race is to run the transaction again; the
  work locks the rows it changes); ``dry_run`` (``collect-balances
  --dry-run``, ``fix-invoices --dry-run``) runs exactly the same work in a
  :func:`engine.storage.db.unit_of_work` that is rolled back;
* listings read a consistent snapshot (``transaction(readonly=True)``).

Run ids (the ``Run`` provenance of the balances written) default to
``<command>@<UTC time>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import sqlalchemy as sa

from engine.booking.finalize import FinalizeReport
from engine.domain.batching import chunks
from engine.storage.context import Context
from engine.storage.db import transaction, unit_of_work
from engine.storage.retry import run_in_transaction

from . import cm_plans, cm_settlement, collection, fixtasks, imports, jobs, payments
from .cm_core import Changes, invoice_where
from .errors import CashManagementError, FixTasksIncomplete
from .payments import AccountPayment, PaymentDetails, Registered

T = TypeVar("T")

#: The configuration change ``fix-invoices --enable-integration`` runs under
#: (it goes into the config hash of the records written that way).
ENABLE_INTEGRATION = "GlobalSettings.EnableCashManagementIntegration=true"


def write(engine: sa.Engine, work: Callable[[sa.Connection], T], *, dry_run: bool = False) -> T:
    """``work(conn)`` as one write transaction of a command: retried as a
    whole when PostgreSQL aborts it for a lost race
    (:func:`engine.storage.retry.run_in_transaction`; the work takes the row
    locks it needs), or, for a dry run, in a unit of work that is rolled
    back (:func:`engine.storage.db.unit_of_work`)."""
    if dry_run:
        with unit_of_work(engine, dry_run=True) as conn:
            return work(conn)
    return run_in_transaction(engine, work)


def run_id(command: str, now: datetime | None = None) -> str:
    """The run id of a command's records: ``<command>@<UTC yyyymmddThhmmss>``."""
    return f"{command}@{(now or datetime.now(timezone.utc)):%Y%m%dT%H%M%S}"


# --- payments, refunds, write-offs ---------------------------------------------------------


def register_payment(engine: sa.Engine, ctx: Context, invoice: str, amount: Decimal, when: date, *,
                     details: PaymentDetails | None = None, run: str | None = None) -> Registered:
    """``metabill payment register``: ``amount`` received on the invoice
    numbered ``invoice`` (overpayment policy, automatic write-off,
    cash-management payment). :class:`~engine.cash.errors.PaymentError`."""
    run = run or run_id("payment register")
    return run_in_transaction(engine, lambda conn: payments.register_payment(
        conn, ctx, invoice, amount, when, details=details, run=run))


def register_account_payment(engine: sa.Engine, ctx: Context, account: str, amount: Decimal, when: date, *,
                             balance_type: str = "Payment", details: PaymentDetails | None = None,
                             run: str | None = None) -> AccountPayment:
    """``metabill payment on-account``: a free Payment or Prepayment balance
    on the account numbered ``account``. :class:`~engine.cash.errors.PaymentError`."""
    run = run or run_id("payment on-account")
    return run_in_transaction(engine, lambda conn: payments.register_account_payment(
        conn, ctx, account, amount, when, balance_type=balance_type, details=details, run=run))


@dataclass(frozen=True)
class Refund:
    """A refund registered: its balance, and where it went."""

    name: str
    balance_id: int
    amount: Decimal
    invoice: str | None
    account: str | None

    @property
    def target(self) -> str:
        """``INV-...`` or ``account 10001``."""
        return self.invoice if self.invoice is not None else f"account {self.account}"


def register_refund(engine: sa.Engine, ctx: Context, amount: Decimal, when: date, *, invoice: str | None = None,
                    account: str | None = None, details: PaymentDetails | None = None,
                    run: str | None = None) -> Refund:
    """``metabill payment refund``: pay ``amount`` back on the invoice's
    credit or the account's free credit (exactly one of ``invoice`` and
    ``account``). :class:`~engine.cash.errors.PaymentError`."""
    run = run or run_id("payment refund")
    row = run_in_transaction(engine, lambda conn: payments.register_refund(
        conn, ctx, amount, when, invoice_name=invoice, account_number=account, details=details, run=run))
    return Refund(str(row["name"]), row["id"], Decimal(row["amount"]), invoice, account)


@dataclass(frozen=True)
class WrittenOff:
    """A manual write-off: its balance and the amount written off (positive
    when a receivable was written off, negative for a credit)."""

    invoice: str
    name: str
    balance_id: int
    amount: Decimal
    reason: str


def write_off(engine: sa.Engine, ctx: Context, invoice: str, amount: Decimal | None, *, reason: str,
              when: date | None = None, calculate_tax: bool = True, run: str | None = None) -> WrittenOff:
    """``metabill write-off``: write off ``amount`` (None: all that is open)
    of the invoice numbered ``invoice`` with ``reason``, dated ``when``
    (default today). :class:`~engine.cash.errors.PaymentError`."""
    run = run or run_id("write-off")
    day = when or date.today()
    row = run_in_transaction(engine, lambda conn: payments.manual_write_off(
        conn, ctx, invoice, amount, day, reason=reason, calculate_tax=calculate_tax, run=run))
    return WrittenOff(invoice, str(row["name"]), row["id"], -Decimal(row["amount"]), reason)


def import_payments(engine: sa.Engine, ctx: Context, path: Path, *, run: str | None = None) -> imports.ImportReport:
    """``metabill payment import``: the payments of a CSV file, all or
    nothing. :class:`~engine.cash.errors.ImportFailed` (one problem per bad
    row) when anything is wrong; nothing is written then."""
    run = run or run_id("payment import")
    return write(engine, lambda conn: imports.import_payments(conn, ctx, Path(path), run=run))


def collect_balances(engine: sa.Engine, ctx: Context, business_entity: str, *, today: date | None = None,
                     dry_run: bool = False, run: str | None = None) -> collection.CollectionReport:
    """``metabill collect-balances``: write off the business entity's free
    payments past the statute of limitations. A dry run does the same and
    rolls it back; its report lists the balances and no write-offs (they
    were not kept). :class:`~engine.cash.errors.CollectionError`."""
    run = run or run_id("collect-balances")
    report = write(engine, lambda conn: collection.collect_balances(conn, ctx, business_entity, today or date.today(),
                                                                    run=run), dry_run=dry_run)
    if dry_run:
        report.write_offs.clear()  # rolled back: those ids name nothing
    return report


# --- jobs ----------------------------------------------------------------------------------


def run_job(engine: sa.Engine, ctx: Context, job: str, *, today: date | None = None,
            now: datetime | None = None) -> jobs.JobRun:
    """``metabill jobs run``: ``job`` now, in one transaction. :class:`~engine.cash.errors.JobError`."""
    return jobs.run_job(engine, ctx, job, today=today, now=now)


@dataclass(frozen=True)
class ScheduleStatus:
    """A job schedule as ``jobs list`` shows it."""

    schedule: jobs.Schedule
    #: This version can run the schedule's job.
    available: bool
    #: The next fire time; None when the schedule is inactive or invalid.
    next_run: datetime | None
    #: Why the next fire time cannot be computed (a bad cron or time zone).
    invalid: str | None
    #: The latest slot executed (``_mb_job_slot``), if any.
    last_slot: str | None


def list_jobs(engine: sa.Engine | None, ctx: Context, now: datetime | None = None) -> list[ScheduleStatus]:
    """``metabill jobs list``: every schedule with its next run after ``now``
    and its last executed slot. ``engine`` None (no database yet), a database
    without the slot table, or one that cannot be read: nothing executed."""
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    last: dict[str, str] = {}
    if engine is not None:
        try:
            with transaction(engine, readonly=True) as conn:
                last = jobs.executed_slots(conn)
        except sa.exc.SQLAlchemyError:
            last = {}
    out = []
    for schedule in jobs.schedules(ctx):
        upcoming, invalid = None, None
        if schedule.active:
            try:
                upcoming = jobs.fire_times(schedule, now, 1)[0]
            except Exception as error:  # noqa: BLE001 - croniter raises several kinds; shown as the schedule's state
                invalid = str(error)
        available = schedule.job in jobs.JOBS or schedule.job == "InvoiceRun"
        out.append(ScheduleStatus(schedule, available, upcoming, invalid, last.get(schedule.name)))
    return out


def next_runs(ctx: Context, after: datetime | None = None, count: int = 5) -> list[tuple[datetime, jobs.Schedule]]:
    """``metabill jobs next``: the next ``count`` fire times over all active
    schedules after ``after`` (default now), one per slot.
    :class:`~engine.cash.errors.JobError`."""
    return jobs.next_runs(ctx, after or datetime.now(timezone.utc).replace(microsecond=0), count)


def tick(engine: sa.Engine, ctx: Context, now: datetime | None = None, finalize=None) -> list[jobs.TickResult]:
    """``metabill jobs tick``: run every active schedule's due slot that has
    not run yet; ``finalize`` (``engine.project.finalize_drafts``) finalizes
    scheduled invoice runs that ask for it. :class:`~engine.cash.errors.JobError`."""
    return jobs.tick(engine, ctx, now, finalize)


# --- cash management -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    """What one fix task changed."""

    task: str
    changes: Changes


@dataclass
class FixReport:
    """The fix tasks run, in order, and whether they were rolled back."""

    dry_run: bool
    tasks: list[TaskResult] = field(default_factory=list)

    @property
    def problems(self) -> int:
        """Invoices (or free balances) a task could not prepare."""
        return sum(len(result.changes.errors) for result in self.tasks)

    @property
    def failure(self) -> FixTasksIncomplete | None:
        """The error that ends the command after the report is shown, when
        some invoices could not be prepared (the others were)."""
        if not self.problems:
            return None
        return FixTasksIncomplete(f"{self.problems} problem(s); see CM_IntegrationError__c of the invoices named above",
                                  partly_done=not self.dry_run)


_FIX_TASKS: dict[str, Callable[..., Changes]] = {
    fixtasks.TASK_ENTRIES: fixtasks.create_or_fix_entries,
    fixtasks.TASK_PAYMENTS: fixtasks.create_payments_and_migrate_balances,
}


def fix_invoices(engine: sa.Engine, ctx: Context, tasks: Sequence[str], names: Iterable[str] = (), *,
                 when: date | None = None, dry_run: bool = False, enable_integration: bool = False) -> FixReport:
    """``metabill fix-invoices``: the invoice fix tasks in the order given,
    in one unit of work (rolled back with ``dry_run``), for the invoices
    numbered ``names`` (default all). ``enable_integration`` runs them as if
    the integration were on (records written carry that configuration's
    hash). Problems of single invoices are in the report (and in
    CM_IntegrationError__c); :class:`~engine.cash.errors.CashManagementError`
    when a task cannot run at all."""
    unknown = [task for task in tasks if task not in _FIX_TASKS]
    if unknown:
        raise CashManagementError(f"unknown fix task(s) {', '.join(unknown)}; the tasks are: {', '.join(_FIX_TASKS)}")
    if enable_integration and not ctx.settings.cash_management_integration:
        ctx = ctx.with_settings(ctx.settings.with_cash_management(), ENABLE_INTEGRATION)
    day = when or date.today()
    scope = list(names) or None

    def work(conn: sa.Connection) -> FixReport:
        report = FixReport(dry_run)  # made anew by each attempt
        for task in tasks:
            report.tasks.append(TaskResult(task, _FIX_TASKS[task](conn, ctx, scope, when=day)))
        return report

    return write(engine, work, dry_run=dry_run)


def change_payment_plan(engine: sa.Engine, ctx: Context, invoice: str, plan: str | None, *,
                        when: date | None = None) -> Changes:
    """``metabill payment-plan change``: give the Open invoice ``invoice`` the
    InstallmentPlan ``plan`` (None or ``none``: no plan). Its entries are
    created anew, the payments received re-attached.
    :class:`~engine.cash.errors.CashManagementError`."""
    plan_name = None if plan is None or plan.strip().lower() == "none" else plan
    return write(engine, lambda conn: cm_plans.change_payment_plan(conn, ctx, invoice, plan_name,
                                                                  when or date.today()))


@dataclass(frozen=True)
class EntryLine:
    """One entry as ``entries list`` shows it."""

    name: str
    statement_type: str | None
    statement_no: str | None
    due_date: date | None
    open_amount: Decimal
    outstanding: Decimal
    status: str
    entry_items: int
    reductions: int


def list_entries(engine: sa.Engine, ctx: Context, invoices: Iterable[str] = (), *,
                 include_canceled: bool = False) -> list[EntryLine]:
    """``metabill entries list``: the entries of the invoices numbered
    ``invoices`` (default all), by invoice and due date, with their numbers
    of entry items and reductions; canceled ones only with ``include_canceled``."""
    entries, items, reductions, invoice_table = (ctx.table(n) for n in ("Entry", "EntryItem", "Reduction", "Invoice"))
    names = list(invoices)
    query = sa.select(entries).order_by(entries.c.invoice, entries.c.duedate, entries.c.id)
    if names:
        query = query.where(entries.c.invoice.in_(sa.select(invoice_table.c.id).where(invoice_table.c.name.in_(names))))
    if not include_canceled:
        query = query.where(entries.c.status != "Canceled")
    with transaction(engine, readonly=True) as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        ids = [r["id"] for r in rows]
        item_counts: dict[int, int] = {}
        reduction_counts: dict[int, int] = {}
        for chunk in chunks(ids):
            for table, counts in ((items, item_counts), (reductions, reduction_counts)):
                counts.update(conn.execute(sa.select(table.c.entry, sa.func.count()).where(table.c.entry.in_(chunk))
                                           .group_by(table.c.entry)).all())
    return [EntryLine(r["name"], r["statementtype"], r["statementno"], r["duedate"], r["openamount"], r["amount"],
                      r["status"], item_counts.get(r["id"], 0), reduction_counts.get(r["id"], 0)) for r in rows]


@dataclass(frozen=True)
class Settlement:
    """An invoice offset against a credit."""

    invoice: str
    credit: str
    amount: Decimal


def settle(engine: sa.Engine, ctx: Context, invoice: str, credit: str, amount: Decimal | None = None, *,
           when: date | None = None) -> Settlement:
    """``metabill entries settle``: offset the invoice numbered ``invoice``
    against the credit ``credit`` of the same account, by ``amount`` (None:
    as much as both allow). :class:`~engine.cash.errors.CashManagementError`."""
    settled = write(engine, lambda conn: cm_settlement.settle_invoices(conn, ctx, invoice, credit, amount,
                                                                       when or date.today()))
    return Settlement(invoice, credit, settled)


@dataclass(frozen=True)
class PartialCredit:
    """A partial credit created and finalized."""

    invoice: str
    number: str
    date: date
    grand_total: Decimal


#: The product's finalization chain, ``engine.project.finalize`` (cash does
#: not import the composition root; the caller hands it in).
Finalize = Callable[..., FinalizeReport]


def partial_credit(engine: sa.Engine, ctx: Context, invoice: str, lines: Iterable[str] = (),
                   reason: str | None = None, *, finalize: Finalize, today: date | None = None) -> PartialCredit:
    """``metabill partial-credit``: a credit for some lines of the invoice
    numbered ``invoice`` (default all), finalized at once by ``finalize``
    (called as ``finalize(engine, ctx, [draft id], today=today)``); with
    cash management its finalization reduces the invoice's entries.
    :class:`~engine.cash.errors.CashManagementError`, also when the credit
    was created but could not be finalized (it stays a draft)."""
    draft = write(engine, lambda conn: cm_settlement.create_partial_credit(conn, ctx, invoice, list(lines), reason))
    report = finalize(engine, ctx, [draft], today=today)
    for _, message in report.failures:
        raise CashManagementError(f"the credit for {invoice} could not be finalized: {message}",
                                  where=invoice_where(invoice))
    item = report.finalized[0]
    return PartialCredit(invoice, item.number, item.date, item.grand_total)


__all__ = [
    "ENABLE_INTEGRATION", "EntryLine", "FixReport", "PartialCredit", "Refund", "ScheduleStatus", "Settlement",
    "TaskResult", "WrittenOff", "change_payment_plan", "collect_balances", "fix_invoices", "import_payments",
    "list_entries", "list_jobs", "next_runs", "partial_credit", "register_account_payment", "register_payment",
    "register_refund", "run_id", "run_job", "settle", "tick", "write_off",
]
