"""The generic invoice run: source records in, draft invoices out.

For each selected filter (in Sequence order) the run

1. **selects** the unbilled header records of the filter's target
   (``ON_Invoice<sfx>`` empty, the filter's condition compiled to SQL), reads
   them as plain records and evaluates their controlling fields (formulas
   included); records outside the run's period or not marked ``ON_IsItem``
   (single-object mode) are left alone;
2. **resolves** each record's account (by id or external id), template and
   group key, and sorts the records by group key;
3. **builds and writes in batches**: each batch re-reads its records inside a
   write transaction (so a record billed meanwhile is skipped; one whose row
   is unchanged keeps its evaluation from step 1, one changed meanwhile is
   evaluated again), reads the line records, builds one invoice per group
   (:mod:`engine.billing.build`), and writes invoices, lines, billing claims
   and the write-back to the sources in that same transaction. A crash loses
   at most the batch in flight, and the next run bills exactly what is left.

The run only reads the columns its getters and formulas need, resolves
accounts in bulk, and pauses the cyclic garbage collector while a batch is
built (see :func:`_cyclic_gc_paused`); ``bench/invoice_run.py`` measures it.

A record that cannot be billed gets ``ON_InvoiceBuildError<sfx>`` and
``ON_LastInvoiceRun<sfx>``; the rest is billed. Running the same period and
filters again joins the existing invoice run and bills nothing twice. A dry
run goes through the same code inside one transaction that is rolled back.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, FieldType, SettingRecord
from engine.config.values import ValueProblem, coerce
from engine.domain.batching import chunks
from engine.domain.naming import on_copy_target
from engine.domain.values import read_value
from engine.storage.bulk import RowWriter, insert_tuples, now_utc, update_by_id
from engine.storage.db import copy_rows
from engine.storage.ids import next_autonumbers
from engine.storage.reader import RecordReader
from engine.storage.retry import run_in_transaction
from engine.storage.schema import CLAIM

from .build import (
    FINAL_TYPE,
    STANDARD_TYPE,
    SUB_TYPES,
    BuildError,
    DraftInvoice,
    RunContext,
    SourceHeader,
    SourceLine,
    SubInvoice,
    build_invoice,
)
from .plan import FilterPlan, Level, PlanError, coercer, getter, plan_filter
from .sqlcondition import compile_condition
from .tax import TaxResolver
from engine.storage.context import Context

ERROR_LENGTH = 255
ID_CHUNK = 500
# Header records whose accounts are resolved together (one query per kind of
# lookup instead of up to three per account).
ACCOUNT_PREFETCH = 2000
_INT4 = 2**31 - 1

_T = TypeVar("_T")


def lock_class(kind: str) -> sa.ColumnElement[int]:
    """The first key of PostgreSQL's two-key advisory locks of ``kind``
    ("run": run records per period and filters, "account": accounts being
    billed, see ``_FilterRun._claim_accounts``), for the current schema.

    Advisory locks belong to the whole database, and several metabill
    databases may live in one as schemas (tenants, the test suite's private
    schemas): without the schema in the key, a run in one schema would wait
    for, or skip, account 1 because another schema is billing its account 1.
    A hash collision between schemas costs a wait, never correctness."""
    return sa.func.hashtext(sa.func.concat(sa.func.current_schema(), f":metabill:{kind}"))


class RunError(ValueError):
    """The run cannot start (unknown filter, invalid filter metadata, bad period)."""


@dataclass(frozen=True)
class RunRequest:
    filters: tuple[str, ...]
    period_start: date
    period_end: date
    invoice_date: date | None = None
    dry_run: bool = False
    batch_size: int = 2000
    today: date | None = None


@dataclass(frozen=True)
class RecordFailure:
    object_name: str
    record_id: int
    message: str


@dataclass
class FilterReport:
    name: str
    records_read: int = 0
    invoices: int = 0
    lines: int = 0
    failures: list[RecordFailure] = field(default_factory=list)


@dataclass(frozen=True)
class InvoiceSummary:
    id: int
    name: str
    account: str
    type: str
    lines: int
    total_net: Decimal
    grand_total: Decimal
    currency: str


@dataclass
class RunReport:
    run_id: int
    run_name: str
    joined_existing: bool
    dry_run: bool
    filters: list[FilterReport] = field(default_factory=list)
    invoices: list[InvoiceSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def invoice_count(self) -> int:
        return sum(f.invoices for f in self.filters)

    @property
    def line_count(self) -> int:
        return sum(f.lines for f in self.filters)

    @property
    def failure_count(self) -> int:
        return sum(len(f.failures) for f in self.filters)


Progress = Callable[[str, int, int], None]  # (filter name, done, total)


class _Session:
    """Where batches are written. A real run commits each batch in a
    transaction of its own, run again from the start when PostgreSQL aborts
    it for a lost race (:func:`engine.storage.retry.run_in_transaction`); a
    dry run keeps one outer transaction, runs each batch in a savepoint, and
    rolls everything back at the end."""

    def __init__(self, engine: sa.Engine, dry_run: bool):
        self.engine = engine
        self.dry_run = dry_run
        self._conn: sa.Connection | None = None

    def __enter__(self) -> "_Session":
        if self.dry_run:
            self._conn = self.engine.connect()
            self._outer = self._conn.begin()
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            self._outer.rollback()
            self._conn.close()

    def write(self, work: Callable[[sa.Connection], _T]) -> _T:
        """``work(conn)`` in one write transaction (a savepoint in a dry run).
        ``work`` may be called more than once (after a retryable failure), so
        it must leave no trace outside the database: it returns what the
        caller should record, and the caller records it after the commit."""
        if self._conn is not None:
            with self._conn.begin_nested():
                return work(self._conn)
        return run_in_transaction(self.engine, work)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        if self._conn is not None:
            yield self._conn
        else:
            with self.engine.connect() as conn:
                if conn.dialect.name == "sqlite":
                    conn = conn.execution_options(metabill_sqlite_begin="DEFERRED")
                with conn.begin():
                    yield conn


def run_invoices(engine: sa.Engine, ctx: Context, request: RunRequest, progress: Progress | None = None) -> RunReport:
    """Run the given filters over the period; see the module docstring.
    (``engine.billing.workers.run_invoices_parallel`` runs the same over
    several processes.)"""
    plans = check_request(ctx, request)
    started = time.perf_counter()
    tables = ctx.metadata
    today = request.today or date.today()
    if not request.dry_run:
        refresh_statistics(engine, ctx, plans)
    with _Session(engine, request.dry_run) as session:
        report, run = open_run(session, ctx, request, plans)
        for plan in plans:
            runner = _FilterRun(session, ctx, tables, plan, run, today, request.batch_size, progress)
            report.filters.append(runner.run())
            report.invoices.extend(runner.summaries)
        report.seconds = time.perf_counter() - started
        session.write(lambda conn: _close_run(conn, ctx, run.run_id, report))
    return report


def check_request(ctx: Context, request: RunRequest) -> list[FilterPlan]:
    """The request's filter plans in Sequence order, or RunError."""
    if request.period_end < request.period_start:
        raise RunError("the period ends before it starts")
    if not request.filters:
        raise RunError("name at least one filter (--filter NAME)")
    return _plans(ctx, request.filters)


def refresh_statistics(engine: sa.Engine, ctx: Context, plans: Sequence[FilterPlan]) -> None:
    """PostgreSQL: ANALYZE the tables the run reads when their planner
    statistics are missing or stale (a fifth of the rows changed since).

    Right after a bulk load the planner believes the source tables are
    nearly empty and picks plans that, through the run's server-side cursors,
    made a 20k-line run ten times slower (2.7 s with statistics, 26 s
    without). Autovacuum would analyze them eventually; the run does not
    wait for it. ANALYZE only samples (cheap) and does not block readers or
    writers; SQLite needs nothing of the kind."""
    model = ctx.model
    if engine.dialect.name != "postgresql":
        return
    tables = ctx.metadata.tables
    names = {model.require("Account").table_name}
    for plan in plans:
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


def open_run(session: "_Session", ctx: Context, request: RunRequest,
             plans: Sequence[FilterPlan]) -> tuple[RunReport, RunContext]:
    """Create or join the InvoiceRun record; the empty report and the build context."""
    run_id, run_name, joined, invoice_date = session.write(lambda conn: _open_run(conn, ctx, request, plans))
    return RunReport(run_id, run_name, joined, request.dry_run), run_context(ctx, request, run_id, invoice_date)


def run_context(ctx: Context, request: RunRequest, run_id: int, invoice_date: date | None) -> RunContext:
    model = ctx.model
    return RunContext(
        model=model,
        run_id=run_id,
        period_start=request.period_start,
        period_end=request.period_end,
        invoice_date=invoice_date,
        config_hash=ctx.config_hash,
        rounding=_rounding_mode(ctx),
        tax=TaxResolver(ctx),
    )


def _rounding_mode(ctx: Context) -> str:
    """Global Settings RoundingMode (PerLine or PerTaxGroup; PerLine when unset)."""
    model = ctx.model
    settings = model.hierarchy_default("GlobalSettings")
    return str((settings.get("RoundingMode") if settings is not None else None) or "PerLine")


def _plans(ctx: Context, names: Sequence[str]) -> list[FilterPlan]:
    model = ctx.model
    plans = []
    for name in dict.fromkeys(names):
        record = model.setting_record("Filter", name)
        if record is None:
            known = ", ".join(r.name for r in model.setting_records("Filter"))
            raise RunError(f"unknown filter '{name}' (filters: {known})")
        try:
            plans.append(plan_filter(ctx, record))
        except PlanError as error:
            raise RunError(str(error)) from None
    return sorted(plans, key=lambda p: (p.record.get("Sequence") or Decimal(0), p.name.lower()))


# --- the invoice run record ---------------------------------------------------------


def _filters_key(plans: Sequence[FilterPlan]) -> str:
    return ";".join(sorted(p.name for p in plans))


def _open_run(conn: sa.Connection, ctx: Context, request: RunRequest, plans) -> tuple[int, str, bool, date | None]:
    """Find the run with the same period and filters (and join it) or create one."""
    model = ctx.model
    obj = model.require("InvoiceRun")
    table = ctx.metadata.tables[obj.table_name]
    key = _filters_key(plans)
    if conn.dialect.name == "postgresql":
        # Two runs of the same period and filters started at the same moment
        # (several machines, several workers) must find one run record, not
        # create one each: the check-then-insert below runs under a lock per
        # (period, filters), held until this transaction commits. SQLite's
        # BEGIN IMMEDIATE already serializes it.
        lock_key = f"{request.period_start}|{request.period_end}|{key}"
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_class("run"), sa.func.hashtext(lock_key))))
    row = conn.execute(
        sa.select(table.c.id, table.c.name, table.c.invoicedate)
        .where(table.c.periodstartdate == request.period_start)
        .where(table.c.periodenddate == request.period_end)
        .where(table.c.genericfilters == key)
        .order_by(table.c.id)
        .limit(1)
    ).first()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if row is not None:
        conn.execute(
            sa.update(table).where(table.c.id == row.id).values(status="Running", startedat=now, lastmodifieddate=now)
        )
        return row.id, row.name, True, row.invoicedate
    record = {
        "periodstartdate": request.period_start,
        "periodenddate": request.period_end,
        "invoicedate": request.invoice_date,
        "genericfilters": key,
        "status": "Running",
        "startedat": now,
        "confighash": ctx.config_hash,
    }
    RowWriter(conn, obj).insert([record])
    return record["id"], record["name"], False, request.invoice_date


def _close_run(conn: sa.Connection, ctx: Context, run_id: int, report: RunReport) -> None:
    model = ctx.model
    obj = model.require("InvoiceRun")
    table = ctx.metadata.tables[obj.table_name]
    invoice = ctx.metadata.tables[model.require("Invoice").table_name]
    counts = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((invoice.c.grandtotal >= 0, 1), else_=0)),
        ).where(invoice.c.invoicerun == run_id)
    ).first()
    total = int(counts[0] or 0)
    positive = int(counts[1] or 0)
    log_lines = [
        f"{f.name}: {f.records_read} read, {f.invoices} invoices, {f.lines} lines, {len(f.failures)} errors"
        for f in report.filters
    ]
    for f in report.filters:
        for failure in f.failures[:50]:
            log_lines.append(f"  {failure.object_name} {failure.record_id}: {failure.message}")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    conn.execute(
        sa.update(table)
        .where(table.c.id == run_id)
        .values(
            status="Completed",
            finishedat=now,
            lastmodifieddate=now,
            numinvoices=Decimal(total),
            numpositiveinvoices=Decimal(positive),
            numnegativeinvoices=Decimal(total - positive),
            errorcount=Decimal(report.failure_count),
            duration=Decimal(str(round(report.seconds, 2))),
            log="\n".join(log_lines)[:131072],
        )
    )


# --- one filter ---------------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class _FilterRun:
    def __init__(self, session: _Session, ctx: Context, tables: sa.MetaData, plan: FilterPlan, run: RunContext,
                 today: date, batch_size: int, progress: Progress | None):
        model = ctx.model
        self.ctx = ctx
        self.session = session
        self.model = model
        self.tables = tables
        self.plan = plan
        self.job = run
        self.today = today
        self.batch_size = max(1, batch_size)
        self.progress = progress
        self.report = FilterReport(plan.name)
        self.summaries: list[InvoiceSummary] = []
        self.header_table = tables.tables[plan.header.obj.table_name]
        self.invoice_obj = model.require("Invoice")
        self.line_obj = model.require("InvoiceLineItem")
        self.accounts = _Accounts(ctx, tables, today)
        self.templates = {r.name.lower(): r for r in model.setting_records("Template")}
        self.default_template = next((r for r in model.setting_records("Template") if r.get("Default")), None)
        settings = model.hierarchy_default("GlobalSettings")
        self.default_currency = str((settings.get("DefaultCurrency") if settings else None) or "EUR")
        entities = model.setting_records("BusinessEntity")
        self.default_entity = next((r.name for r in entities if r.get("Default")), None)
        self.invoice_type_values = self.invoice_obj.field("Type").values  # type: ignore[union-attr]
        self._header_controls, self._header_copies = self._programs(plan.header)
        if plan.single:
            self._line_controls, self._line_copies = self._header_controls, self._header_copies
        else:
            self._line_controls, self._line_copies = self._programs(plan.line)
        self._line_steps = self._line_program()
        # Pass 1's evaluated headers with the rows they came from (see
        # _current_header), until their batch is built.
        self._evaluated: dict[int, tuple[Sequence[object], SourceHeader]] = {}
        # The account of each record to bill, from its group key (see bill()).
        self._account_of: dict[int, int] = {}
        # The run reads exactly the fields its getters and formulas need
        # (plus the header's own CurrencyIsoCode, a currency fallback), not
        # every column of the source objects.
        dialect = self._dialect()
        header_paths = plan.header.paths()
        currency_field = plan.header.obj.field("CurrencyIsoCode")
        if currency_field is not None and currency_field.is_stored:
            header_paths = header_paths | {(currency_field.key,)}
        self._header_reader = RecordReader(model, tables, plan.header.obj, header_paths, dialect, all_fields=False)
        self._child_reader: RecordReader | None = None
        if not plan.single:
            child_paths = plan.line.paths() | {(plan.child_lookup.key,)}  # type: ignore[union-attr]
            self._child_reader = RecordReader(model, tables, plan.line.obj, child_paths, dialect, all_fields=False)

    # -- selection ----------------------------------------------------------------

    def _unbilled(self) -> sa.ColumnElement[bool]:
        column = self.header_table.c[self.plan.header_writeback["ON_Invoice"].column_name]
        return column.is_(None)

    def _condition(self) -> sa.ColumnElement[bool] | None:
        if self.plan.condition is None:
            return None
        where, source = compile_condition(
            self.plan.condition, self.ctx, self.tables.tables, self.header_table, today=self.today
        )
        matching = sa.select(self.header_table.c.id).select_from(source).where(where)
        return self.header_table.c.id.in_(matching.scalar_subquery())

    def run(self) -> FilterReport:
        self.bill(self.evaluate())
        return self.report

    def evaluate(self, partition: tuple[int, int] | None = None) -> list[tuple[tuple, int]]:
        """Pass 1: select and evaluate the unbilled header records; write the
        errors of those that cannot be billed. Returns ``(group key, record
        id)`` of the rest, sorted by key. ``partition=(i, n)`` evaluates only
        the records with ``id % n == i`` (workers share pass 1 that way)."""
        header_reader = self._header_reader
        where = self._unbilled()
        condition = self._condition()
        if condition is not None:
            where = sa.and_(where, condition)
        if partition is not None:
            index, count = partition
            where = sa.and_(where, self.header_table.c.id % count == index)
        keyed: list[tuple[tuple, int]] = []
        failures: list[RecordFailure] = []
        with self.session.read() as conn, _cyclic_gc_paused():
            rows = header_reader.read_with_rows(conn, where=where, order_by=[self.header_table.c.id])
            for chunk in _batched(rows, ACCOUNT_PREFETCH):
                self.accounts.prefetch(conn, (self._raw_account(record) for _, record in chunk))
                for row, record in chunk:
                    try:
                        source = self._header(conn, record)
                    except _Failed as failed:
                        self.report.records_read += 1
                        failures.append(RecordFailure(self.plan.header.obj.name, record["id"], failed.message))
                        continue
                    if source is None:
                        continue
                    self.report.records_read += 1
                    keyed.append((source.group_key(), record["id"]))
                    self._evaluated[record["id"]] = (row, source)
        if failures:
            self._apply(self.session.write(lambda conn: self._write_failures(conn, failures, _Outcome())))
        keyed.sort()
        return keyed

    def bill(self, keyed: list[tuple[tuple, int]]) -> None:
        """Pass 2: build and write the records of ``keyed`` (sorted by group
        key) batch by batch, one transaction each.

        On PostgreSQL, where other processes may bill the same data at the
        same time, a batch first claims the accounts it bills (advisory locks,
        see :meth:`_claim_accounts`); records of an account another process
        is billing right now are left out, so that both keep working, and
        after the last batch they are tried once more, waiting for the other
        process this time: by then it has billed them (the re-read skips
        them), or it failed and they are billed here."""
        self._account_of = {record_id: key[1] for key, record_id in keyed}
        total = len(keyed)
        done = 0
        deferred: set[int] = set()
        for wait, items in ((False, keyed), (True, None)):
            if items is None:
                if not deferred:
                    break
                items = [(key, record_id) for key, record_id in keyed if record_id in deferred]
            for batch in self._batches(items):
                outcome = self.session.write(lambda conn: self._process(conn, batch, wait))
                self._apply(outcome)
                deferred.update(outcome.skipped)
                done += len(batch) - len(outcome.skipped)
                if self.progress:
                    self.progress(self.plan.name, done, total)
        self._evaluated.clear()  # records billed by someone else meanwhile

    def _apply(self, outcome: "_Outcome") -> None:
        """Record what a committed batch did."""
        self.report.invoices += outcome.invoices
        self.report.lines += outcome.lines
        self.report.failures.extend(outcome.failures)
        self.summaries.extend(outcome.summaries)

    def _claim_accounts(self, conn: sa.Connection, ids: list[int], wait: bool) -> tuple[list[int], list[int]]:
        """PostgreSQL: take the transaction-scoped advisory lock of every
        account the batch bills, so that no two processes bill one account at
        the same time (a group, and so an invoice, never spans accounts).
        Without ``wait`` accounts locked elsewhere are skipped
        (``pg_try_advisory_xact_lock``); with it the batch queues for them.
        Locks are taken in account order and before anything else of the
        transaction, so queuing batches cannot deadlock. Returns the ids to
        bill now and the ids skipped. SQLite needs none of this: its write
        transactions run one at a time (BEGIN IMMEDIATE).

        The ``_mb_claim`` primary key stays the backstop: a record whose
        account changed since pass 1 may be billed under an account not
        locked here; the loser of such a race fails on the claim, is retried,
        and its re-read skips the record."""
        if conn.dialect.name != "postgresql" or self.session.dry_run:
            return ids, []
        accounts = sorted({self._account_of.get(i) for i in ids} - {None})
        if not accounts:
            return ids, []
        ordered = sa.select(sa.func.unnest(sa.literal(accounts, type_=ARRAY(sa.BigInteger))).label("a")) \
            .order_by(sa.text("1")).subquery()
        lock = sa.func.pg_advisory_xact_lock if wait else sa.func.pg_try_advisory_xact_lock
        rows = conn.execute(
            sa.select(ordered.c.a, lock(lock_class("account"), sa.cast(ordered.c.a % _INT4, sa.Integer)))
        ).all()
        if wait:
            return ids, []
        busy = {account for account, ok in rows if not ok}
        if not busy:
            return ids, []
        return ([i for i in ids if self._account_of.get(i) not in busy],
                [i for i in ids if self._account_of.get(i) in busy])

    def _dialect(self) -> str:
        return self.session.engine.dialect.name

    def _batches(self, keyed: list[tuple[tuple, int]]) -> Iterator[list[int]]:
        """Consecutive groups of equal keys, cut into batches of about
        ``batch_size`` records without splitting a group. Final invoices never
        share a batch with other records: they must see the sub invoices the
        earlier batches wrote."""
        batch: list[int] = []
        previous = None
        for key, record_id in keyed:
            phase_change = previous is not None and key[0] != previous[0]
            if batch and key != previous and (len(batch) >= self.batch_size or phase_change):
                yield batch
                batch = []
            batch.append(record_id)
            previous = key
        if batch:
            yield batch

    # -- evaluation ---------------------------------------------------------------

    def _programs(self, level: Level) -> tuple[dict, dict]:
        """Getters of the level's controlling fields, and its ON copies as
        (source, target, getter, coercer) per target object; built once."""
        controls = {base: (fdef, getter(self.ctx, fdef)) for base, fdef in level.controls.items()}
        copies: dict[str, list] = defaultdict(list)
        for source, target, target_object in level.copies:
            copies[target_object].append((source, target, getter(self.ctx, source), coercer(target)))
        return controls, copies

    def _line_program(self) -> list[tuple]:
        """The steps that turn a line record into InvoiceLineItem fields, built
        once: first the level's ON copies, then the controlling fields Title,
        Quantity and UnitPrice (which win over a copy of the same target).
        Each step is (target key, getter, coercer, is a reference target,
        errors caught, error message prefix)."""
        steps: list[tuple] = []
        copy_errors = (FormulaEvaluationError, ValueProblem, ValueError)
        for source, target, get, fit in self._line_copies.get("InvoiceLineItem", ()):
            prefix = f"{source.name} -> InvoiceLineItem.{target.name}"
            steps.append((target.key, get, fit, target.type.is_reference, copy_errors, prefix))
        controls = self._line_controls
        for base, key in (("ON_Title", "title"), ("ON_Quantity", "quantity"), ("ON_UnitPrice", "unitprice")):
            found = controls.get(base)
            if found is None:
                continue
            fdef, get = found
            fit = coercer(self.line_obj.field(key))  # type: ignore[arg-type]
            steps.append((key, get, fit, False, (FormulaEvaluationError, ValueProblem), fdef.name))
        return steps

    def _value(self, level: Level, base: str, record: dict) -> object:
        controls = self._header_controls if level is self.plan.header else self._line_controls
        found = controls.get(base)
        if found is None:
            return None
        fdef, get = found
        try:
            return get(record, self.today)
        except FormulaEvaluationError as error:
            raise _Failed(f"{fdef.name}: {error}") from None

    def _raw_account(self, record: dict) -> object:
        """The record's ON_Account value for :meth:`_Accounts.prefetch`; None
        when it cannot be evaluated (:meth:`_header` reports that)."""
        try:
            return self._value(self.plan.header, "ON_Account", record)
        except _Failed:
            return None

    def _header(self, conn: sa.Connection, record: dict) -> SourceHeader | None:
        """The evaluated header record without lines; None when the run leaves
        it alone (service date outside the period, not an item)."""
        plan, level = self.plan, self.plan.header
        service_date = self._value(level, "ON_ServiceDate", record)
        if isinstance(service_date, datetime):
            service_date = service_date.date()
        if service_date is not None and not (self.job.period_start <= service_date <= self.job.period_end):
            return None
        if plan.single and not self._value(level, "ON_IsItem", record):
            return None
        raw_account = self._value(level, "ON_Account", record)
        account_id = self.accounts.resolve(conn, raw_account)
        if account_id is None:
            if raw_account in (None, ""):
                raise _Failed(f"{level.field('ON_Account').name} is empty")  # type: ignore[union-attr]
            raise _Failed(f"no account with id or {self.accounts.external_field} '{raw_account}'")
        template = self._template(self._value(level, "ON_Template", record))
        invoice_type = str(self._value(level, "ON_Type", record) or "").strip() or STANDARD_TYPE
        if invoice_type not in self.invoice_type_values or invoice_type in ("Cancelation", "Credit", "Dunning"):
            raise _Failed(f"ON_Type '{invoice_type}' is not an invoice type the run creates")
        key = self._value(level, "ON_SubInvoiceAssignmentKey", record)
        key = str(key).strip() if key not in (None, "") else None
        if invoice_type in SUB_TYPES + (FINAL_TYPE,) and not key:
            raise _Failed(f"a {invoice_type} invoice needs ON_SubInvoiceAssignmentKey")
        criterion = self._value(level, "ON_InvoiceCriterion", record)
        invoice_fields = self._copies(level, record, "Invoice")
        account = self.accounts.record(account_id)
        currency = str(
            invoice_fields.get("currencyisocode") or record.get("currencyisocode") or account.get("currencyisocode")
            or self.default_currency
        )
        entity = invoice_fields.get("businessentity") or self.accounts.copies(account_id).get("businessentity") or self.default_entity
        source = SourceHeader(
            object_name=level.obj.name,
            record_id=record["id"],
            account_id=account_id,
            template=template,
            invoice_type=invoice_type,
            assignment_key=key,
            criterion=str(criterion) if criterion not in (None, "") else None,
            currency=currency,
            business_entity=entity,
            invoice_fields=invoice_fields,
        )
        return source

    def _current_header(self, conn: sa.Connection, row: Sequence[object], record: dict) -> SourceHeader | None:
        """The header as evaluated in pass 1 when its row (joined records
        included) is still the same, else evaluated afresh. Evaluation is a
        function of the row (and of the run's cached accounts, shared by both
        passes), so reusing it gives the same result without evaluating every
        header twice; a record changed in between is evaluated again."""
        remembered = self._evaluated.pop(record["id"], None)
        if remembered is not None and remembered[0] == row:
            return remembered[1]
        return self._header(conn, record)

    def _add_lines(self, source: SourceHeader, record: dict, children: Sequence[dict]) -> None:
        line_records = [record] if self.plan.single else children
        source.lines.extend(map(self._line, line_records))

    def _template(self, name: object) -> SettingRecord:
        if name in (None, ""):
            if self.default_template is None:
                raise _Failed("no template given and no template is marked Default")
            return self.default_template
        found = self.templates.get(str(name).strip().lower())
        if found is None:
            raise _Failed(f"unknown template '{name}'")
        return found

    def _copies(self, level: Level, record: dict, target_object: str) -> dict:
        copies = self._header_copies if level is self.plan.header else self._line_copies
        out = {}
        for source, target, get, fit in copies.get(target_object, ()):
            try:
                value = get(record, self.today)
                if _blank(value):
                    continue
                if target.type.is_reference and isinstance(value, str):
                    value = int(value) if value.strip().isdigit() else value
                out[target.key] = fit(value)
            except (FormulaEvaluationError, ValueProblem, ValueError) as error:
                raise _Failed(f"{source.name} -> {target_object}.{target.name}: {error}") from None
        return out

    def _line(self, record: dict) -> SourceLine:
        """One line record as a SourceLine; runs the steps of
        :meth:`_line_program` (the same checks and messages as the header's
        copies and controlling fields, without their per-call lookups)."""
        level = self.plan.line
        today = self.today
        fields: dict = {}
        for key, get, fit, reference, errors, prefix in self._line_steps:
            try:
                value = get(record, today)
                if value is None or (isinstance(value, str) and not value):  # _blank(), inlined
                    continue
                if reference and isinstance(value, str):
                    value = int(value) if value.strip().isdigit() else value
                fields[key] = fit(value)
            except errors as error:
                raise _Failed(f"{prefix}: {error}") from None
        if not fields.get("title"):
            raise _Failed(f"{level.field('ON_Title').name} is empty")  # type: ignore[union-attr]
        if fields.get("unitprice") is None:
            raise _Failed(f"{level.field('ON_UnitPrice').name} is empty")  # type: ignore[union-attr]
        sequence = fields.get("sequence")
        record_id = record["id"]
        order = (0, sequence, record_id) if sequence is not None else (1, _NO_SEQUENCE, record_id)
        criterion = None
        if not self.plan.single and "ON_InvoiceCriterion" in self._line_controls:
            value = self._value(level, "ON_InvoiceCriterion", record)
            criterion = None if _blank(value) else str(value)
        return SourceLine(level.obj.name, record_id, order, fields, criterion)

    # -- one batch ----------------------------------------------------------------

    def _process(self, conn: sa.Connection, ids: list[int], wait: bool = True) -> "_Outcome":
        """One batch, inside its transaction: what it did, for :meth:`_apply`
        after the commit (the transaction may be run again)."""
        out = _Outcome()
        ids, out.skipped = self._claim_accounts(conn, ids, wait)
        with _cyclic_gc_paused():
            self._build_and_write(conn, ids, out)
        return out

    def _build_and_write(self, conn: sa.Connection, ids: list[int], out: "_Outcome") -> None:
        plan = self.plan
        header_reader = self._header_reader
        children: dict[int, list[dict]] = defaultdict(list)
        headers: list[tuple[Sequence[object], dict]] = []
        for chunk in chunks(ids, ID_CHUNK):
            headers.extend(
                header_reader.read_with_rows(
                    conn, where=sa.and_(self.header_table.c.id.in_(chunk), self._unbilled()),
                    order_by=[self.header_table.c.id],
                )
            )
        if not plan.single and headers:
            child_table = self.tables.tables[plan.line.obj.table_name]
            fk = child_table.c[plan.child_lookup.column_name]  # type: ignore[union-attr]
            child_reader = self._child_reader
            assert child_reader is not None
            parent_key = plan.child_lookup.key  # type: ignore[union-attr]
            for chunk in chunks([record["id"] for _, record in headers], ID_CHUNK):
                for child in child_reader.read(conn, where=fk.in_(chunk), order_by=[fk, child_table.c.id]):
                    parent = child.get(parent_key)
                    if isinstance(parent, dict):
                        parent = parent.get("id")
                    children[parent].append(child)
        failures: list[RecordFailure] = []
        groups: dict[tuple, list[SourceHeader]] = defaultdict(list)
        for row, record in headers:
            try:
                source = self._current_header(conn, row, record)
                if source is None:
                    continue
                self._add_lines(source, record, children.get(record["id"], ()))
                if not source.lines:
                    raise _Failed(f"{plan.header.obj.name} {record['id']} has no {plan.line.obj.name} records to bill")
            except _Failed as failed:
                failures.append(RecordFailure(plan.header.obj.name, record["id"], failed.message))
                continue
            for part in _split_by_line_criterion(source):
                groups[part.group_key()].append(part)
        subs = self._sub_invoices(conn, groups)
        drafts: list[DraftInvoice] = []
        for key in sorted(groups):
            sources = groups[key]
            try:
                account = self.accounts.record(sources[0].account_id)
                related = [s for s in subs.get((sources[0].account_id, sources[0].assignment_key), [])]
                drafts.append(build_invoice(self.job, sources, account, self.accounts.copies(sources[0].account_id), related))
            except (BuildError, _Failed) as error:
                message = str(error)
                failures.extend(RecordFailure(s.object_name, s.record_id, message) for s in sources)
        drafts = self._check_references(conn, drafts, failures)
        self._write(conn, drafts, out)
        if failures:
            self._write_failures(conn, failures, out)

    def _sub_invoices(self, conn: sa.Connection, groups) -> dict[tuple[int, str], list[SubInvoice]]:
        keys = {s.assignment_key for group in groups.values() for s in group if s.invoice_type == FINAL_TYPE}
        if not keys:
            return {}
        invoice = self.tables.tables[self.invoice_obj.table_name]
        line = self.tables.tables[self.line_obj.table_name]
        balance_obj = self.model.object("Balance")
        found: dict[tuple[int, str], list[SubInvoice]] = defaultdict(list)
        rows = conn.execute(
            sa.select(invoice.c.id, invoice.c.name, invoice.c.type, invoice.c.status, invoice.c.grandtotal,
                      invoice.c.account, invoice.c.subinvoiceassignmentkey)
            .where(invoice.c.subinvoiceassignmentkey.in_(sorted(keys)))
            .where(invoice.c.type.in_(SUB_TYPES))
            .where(invoice.c.status.not_in(("Canceled", "Settled")))
            .where(invoice.c.finalinvoice.is_(None))
            .order_by(invoice.c.id)
        ).all()
        if not rows:
            return {}
        ids = [r.id for r in rows]
        line_rows: dict[int, list[dict]] = defaultdict(list)
        for chunk in chunks(ids, ID_CHUNK):
            for lr in conn.execute(sa.select(line).where(line.c.invoice.in_(chunk)).order_by(line.c.sequence, line.c.id)).mappings():
                line_rows[lr["invoice"]].append(dict(lr))
        received: dict[int, Decimal] = defaultdict(Decimal)
        if balance_obj is not None:
            balance = self.tables.tables[balance_obj.table_name]
            for chunk in chunks(ids, ID_CHUNK):
                for br in conn.execute(
                    sa.select(balance.c.invoice, balance.c.amount)
                    .where(balance.c.invoice.in_(chunk))
                    .where(balance.c.type.in_(("Payment", "Prepayment", "Prepaid")))
                ):
                    received[br.invoice] -= br.amount or Decimal(0)
        for r in rows:
            found[(r.account, r.subinvoiceassignmentkey)].append(
                SubInvoice(r.id, r.name, r.type, r.status, r.grandtotal or Decimal(0), received[r.id], line_rows[r.id])
            )
        return found

    # -- writing ------------------------------------------------------------------

    def _check_references(self, conn: sa.Connection, drafts: list[DraftInvoice],
                          failures: list[RecordFailure]) -> list[DraftInvoice]:
        """Lookups filled from ON fields must point to existing records: a
        draft that refers to a missing record becomes a record error of its
        sources instead of failing the whole batch on the foreign key."""
        targets = [
            (target, name)
            for name, copies in (("Invoice", self._header_copies.get("Invoice", ())),
                                 ("InvoiceLineItem", self._line_copies.get("InvoiceLineItem", ())))
            for _, target, _, _ in copies
            if target.type.is_reference and target.reference_to
        ]
        if not targets or not drafts:
            return drafts
        wanted: dict[str, set[int]] = defaultdict(set)
        for draft in drafts:
            for target, name in targets:
                rows = [draft.header] if name == "Invoice" else draft.lines
                for row in rows:
                    value = row.get(target.key)
                    if isinstance(value, int):
                        wanted[target.reference_to].add(value)  # type: ignore[index]
        existing: dict[str, set[int]] = {}
        for object_name, ids in wanted.items():
            table = self.tables.tables[self.model.require(object_name).table_name]
            found: set[int] = set()
            for chunk in chunks(sorted(ids), ID_CHUNK):
                found.update(conn.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))).scalars())
            existing[object_name] = found
        kept = []
        for draft in drafts:
            missing = None
            for target, name in targets:
                rows = [draft.header] if name == "Invoice" else draft.lines
                for row in rows:
                    value = row.get(target.key)
                    if isinstance(value, int) and value not in existing[target.reference_to]:  # type: ignore[index]
                        missing = f"{name}.{target.name}: no {target.reference_to} with id {value}"
                        break
                if missing:
                    break
            if missing:
                failures.extend(RecordFailure(s.object_name, s.record_id, missing) for s in draft.sources)
            else:
                kept.append(draft)
        return kept

    def _write(self, conn: sa.Connection, drafts: list[DraftInvoice], out: "_Outcome") -> None:
        if not drafts:
            return
        invoices = RowWriter(conn, self.invoice_obj)
        lines = RowWriter(conn, self.line_obj)
        headers = [d.header for d in drafts]
        invoices.assign_ids(headers)
        for header in headers:
            header["name"] = f"DRAFT-{header['id']:06d}"
        all_lines = []
        for draft in drafts:
            for line in draft.lines:
                line["invoice"] = draft.header["id"]
                all_lines.append(line)
        invoices.insert(headers)
        _insert_many(conn, lines, all_lines)
        suffix = self.plan.suffix
        source_table = self.plan.header.obj.table_name
        # A header record whose lines were split by a line-level invoice
        # criterion feeds several invoices; it is claimed by, and points to,
        # the first of them.
        first_invoice: dict[int, int] = {}
        for draft in drafts:
            for source in draft.sources:
                first_invoice.setdefault(source.record_id, draft.header["id"])
        claims = [
            (source_table, record_id, suffix, invoice_id, self.job.run_id)
            for record_id, invoice_id in first_invoice.items()
        ]
        insert_tuples(conn, CLAIM, ("source_table", "source_id", "suffix", "invoice_id", "run_id"), claims)
        wb = self.plan.header_writeback
        update_by_id(
            conn,
            self.plan.header.obj,
            [wb["ON_Invoice"].name, wb["ON_LastInvoiceRun"].name, wb["ON_InvoiceBuildError"].name],
            [(record_id, (invoice_id, self.job.run_id, None)) for record_id, invoice_id in first_invoice.items()],
        )
        out.invoices += len(drafts)
        out.lines += len(all_lines)
        for draft in drafts:
            header = draft.header
            out.summaries.append(
                InvoiceSummary(
                    header["id"], header["name"], str(header.get("accountname") or header["account"]),
                    header["type"], len(draft.lines), header["totalnet"], header["grandtotal"],
                    str(header.get("currencyisocode") or ""),
                )
            )

    def _write_failures(self, conn: sa.Connection, failures: list[RecordFailure], out: "_Outcome") -> "_Outcome":
        wb = self.plan.header_writeback
        update_by_id(
            conn,
            self.plan.header.obj,
            [wb["ON_LastInvoiceRun"].name, wb["ON_InvoiceBuildError"].name],
            [(f.record_id, (self.job.run_id, f.message[:ERROR_LENGTH])) for f in failures],
        )
        out.failures.extend(failures)
        return out


@dataclass
class _Outcome:
    """What one committed transaction of a filter run did."""

    invoices: int = 0
    lines: int = 0
    failures: list[RecordFailure] = field(default_factory=list)
    summaries: list[InvoiceSummary] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # records of accounts billed elsewhere right now


class _Accounts:
    """Resolves ON_Account values and caches account records with their ON
    field copies for the invoice header."""

    def __init__(self, ctx: Context, tables: sa.MetaData, today: date):
        model = ctx.model
        self.ctx = ctx
        self.model = model
        self.today = today
        self.obj = model.require("Account")
        self.table = tables.tables[self.obj.table_name]
        settings = model.hierarchy_default("GlobalSettings")
        name = str((settings.get("AccountExternalIdField") if settings else None) or "AccountNumber")
        external = self.obj.field(name)
        self.external_field = external.name if external else "AccountNumber"
        self.external = external
        invoice = model.require("Invoice")
        self.copy_plan: list[tuple[FieldDef, FieldDef]] = []
        for fdef in self.obj.fields:
            if fdef.is_custom and fdef.name.lower().startswith("on_"):
                target = on_copy_target(fdef.name, "", invoice)
                if target is not None and target.type not in (FieldType.FORMULA, FieldType.AUTONUMBER) and not target.system:
                    self.copy_plan.append((fdef, target))
        self._tables = tables
        self._reader: RecordReader | None = None
        self._records: dict[int, dict] = {}
        self._copies: dict[int, dict] = {}
        self._refs: dict[object, int | None] = {}

    def resolve(self, conn: sa.Connection, raw: object) -> int | None:
        if raw in (None, ""):
            return None
        if isinstance(raw, dict):
            raw = raw.get("id")
        if raw in self._refs:
            return self._refs[raw]
        found: int | None = None
        text = str(raw).strip()
        # The record id first, then the external id (domain-spec 3.2).
        if text.isdigit() and text.isascii():
            row = conn.execute(sa.select(self.table.c.id).where(self.table.c.id == int(text))).first()
            found = row.id if row else None
        if found is None and self.external is not None and not isinstance(raw, int):
            column = self.table.c[self.external.column_name]
            row = conn.execute(sa.select(self.table.c.id).where(column == text).order_by(self.table.c.id)).first()
            found = row.id if row else None
        if found is not None and found not in self._records:
            self._load(conn, found)
        self._refs[raw] = found
        return found

    def prefetch(self, conn: sa.Connection, raws: Iterable[object]) -> None:
        """Resolve many ON_Account values at once, exactly as :meth:`resolve`
        would one by one (the record id first, then the external id, the
        lowest id if it is not unique), but with one query
        per lookup kind and chunk of values instead of up to three queries per
        account. :meth:`resolve`
        then answers from its cache; values this method does not handle
        (unusual types, a non-text external id field) are left to it."""
        pending: dict[object, str] = {}
        for raw in raws:
            if raw in (None, ""):
                continue
            if isinstance(raw, dict):
                raw = raw.get("id")
            if not isinstance(raw, (str, int, Decimal)) or isinstance(raw, bool):
                continue
            if raw not in self._refs and raw not in pending:
                pending[raw] = str(raw).strip()
        if not pending:
            return
        found: dict[object, int | None] = dict.fromkeys(pending)
        # Record ids first (domain-spec 3.2) ...
        numbers = {raw: int(text) for raw, text in pending.items() if text.isdigit() and text.isascii()}
        existing: set[int] = set()
        for chunk in chunks(sorted(set(numbers.values())), ID_CHUNK):
            existing.update(conn.execute(sa.select(self.table.c.id).where(self.table.c.id.in_(chunk))).scalars())
        for raw, number in numbers.items():
            if number in existing:
                found[raw] = number
        # ... then the external id, for what is not a record id.
        if self.external is not None:
            if self.external.type not in (FieldType.TEXT, FieldType.AUTONUMBER):
                return
            column = self.table.c[self.external.column_name]
            texts = sorted({text for raw, text in pending.items() if not isinstance(raw, int) and found[raw] is None})
            by_text: dict[str, int] = {}
            for chunk in chunks(texts, ID_CHUNK):  # type: ignore[arg-type]
                query = sa.select(self.table.c.id, column).where(column.in_(chunk)).order_by(self.table.c.id)
                for account_id, value in conn.execute(query):
                    by_text.setdefault(value, account_id)
            for raw, text in pending.items():
                if not isinstance(raw, int) and found[raw] is None:
                    found[raw] = by_text.get(text)
        for raw, text in pending.items():
            if found[raw] is None and text.isdigit() and not text.isascii():
                del found[raw]  # int() of non-ASCII digits: resolve() shows what happens
        self._load_many(conn, sorted({i for i in found.values() if i is not None and i not in self._records}))
        self._refs.update(found)

    def _load(self, conn: sa.Connection, account_id: int) -> None:
        self._load_many(conn, [account_id])

    def _load_many(self, conn: sa.Connection, account_ids: Sequence[int]) -> None:
        if self._reader is None:
            self._reader = RecordReader(self.model, self._tables, self.obj, self.reader_paths(), conn.dialect.name)
        for chunk in chunks(account_ids, ID_CHUNK):
            for record in self._reader.read(conn, where=self.table.c.id.in_(chunk)):
                self._remember(record)

    def _remember(self, record: dict) -> None:
        """Cache an account record and its ON field copies for the invoice."""
        account_id = record["id"]
        self._records[account_id] = record
        copies = {}
        for source, target in self.copy_plan:
            try:
                value = read_value(source, record, self.today)
                if value not in (None, ""):
                    copies[target.key] = coerce(target, value)
            except (FormulaEvaluationError, ValueProblem):
                continue
        self._copies[account_id] = copies

    def reader_paths(self) -> set[tuple[str, ...]]:
        paths: set[tuple[str, ...]] = set()
        for fdef, _ in self.copy_plan:
            if fdef.formula is not None and fdef.formula.compiled is not None:
                paths |= set(fdef.formula.compiled.references)
        return paths

    def record(self, account_id: int) -> dict:
        return self._records[account_id]

    def copies(self, account_id: int) -> dict:
        return self._copies.get(account_id, {})


#: Rows from which an insert on PostgreSQL goes through COPY.
COPY_MIN_ROWS = 500


def _insert_many(conn: sa.Connection, writer: RowWriter, records: list[dict]) -> None:
    """``writer.insert(records)``; on PostgreSQL, for many records, the rows
    (built by the writer, ids, names and timestamps as it sets them) travel
    by COPY instead of executemany: a third of a 100k-line run's time went
    into the server executing one INSERT per line."""
    if conn.dialect.name != "postgresql" or len(records) < COPY_MIN_ROWS:
        writer.insert(records)
        return
    writer.assign_ids(records)
    if writer.autonumber is not None:
        unnamed = [r for r in records if not r.get("name")]
        for record, name in zip(unnamed, next_autonumbers(conn, writer.obj, len(unnamed))):
            record["name"] = name
    stamp = now_utc()
    for record in records:
        record.setdefault("createddate", stamp)
        record.setdefault("lastmodifieddate", stamp)
    names, rows = writer.rows(records)
    copy_rows(conn, writer.obj.table_name, names, rows)


# The order of a line without a sequence sorts after all sequenced ones; one
# shared Decimal keeps these sort keys cheap to compare.
_NO_SEQUENCE = Decimal(0)


def _blank(value: object) -> bool:
    """None or the empty string. Not ``value == ""``: comparing a Decimal
    with a str goes through an isinstance check against numbers.Rational (an
    ABC), which costs more than the rest of evaluating a line field."""
    return value is None or (isinstance(value, str) and not value)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection inside the block.

    A batch allocates hundreds of thousands of short-lived objects (records,
    line dicts, Decimals) that reference counting frees; none of them form
    cycles that need the collector. Yet every few hundred allocations CPython
    would run the cyclic collector, and as the batch's live objects pile up
    it keeps re-traversing them: about a sixth of the run's time went there.
    The collector runs normally again between batches, so whatever cyclic
    garbage a batch leaves (at most a batch's worth) is collected then. The
    previous state is restored, also when the block raises."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _batched(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _split_by_line_criterion(source: SourceHeader) -> list[SourceHeader]:
    """A header whose lines carry different invoice criteria (a line-level
    ON_InvoiceCriterion) becomes one source per criterion: only lines with the
    same criterion go into one invoice (domain-spec 2.3)."""
    criteria = sorted({line.criterion for line in source.lines if line.criterion is not None})
    if not criteria:
        return [source]
    parts = []
    for criterion in [None, *criteria]:
        lines = [line for line in source.lines if line.criterion == criterion]
        if not lines:
            continue
        combined = "/".join(c for c in (source.criterion, criterion) if c) or None
        parts.append(replace(source, lines=lines, criterion=combined))
    return parts




__all__ = ["RunRequest", "RunReport", "RunError", "run_invoices", "FilterReport", "RecordFailure"]
