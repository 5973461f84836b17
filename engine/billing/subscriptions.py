"""The subscription run: the items of subscriptions, billed period by period.

A filter with UseCase ``Subscription`` returns Subscription records (its
condition selects among them); the invoice run bills each one that is Active
or Canceled and has started by the end of the run period, next to the
generic filters of the same run (:func:`engine.billing.run.run_invoices`).

For every item, :func:`engine.billing.periods.due_charges` decides the
service periods due and their per-unit amounts; one draft invoice per
subscription gets one line per item and period (quantity, prorated unit
price, service period, the item it bills), built and checked as
:func:`engine.billing.build.build_invoice` builds every other invoice. In the
ordinary case (no ON copies to the lines, tax rounded per line) the lines
are built as rows, not dicts (:mod:`engine.billing.subscription_lines`: same
values, same errors, a fraction of the time); otherwise by ``build_invoice``.

**Billed exactly once.** Each billed period is claimed in ``_mb_service_claim``
(item, first day of the period -> invoice) in the transaction that writes
its invoice; the primary key refuses a second claim, so re-running a period,
or two runs at once, never bill a period twice. A claim whose invoice was
deleted as a draft or cancelled no longer counts: the period is billed again
by the next run (re-billing after a cancellation). ``NextServicePeriodStart``
is advanced when the invoice is finalized and set back when it is cancelled
(:mod:`engine.billing.subscription_state`); the decision starts there, so a
run's work follows what is due, not the subscription's history.

Subscriptions are billed in batches, one transaction each; on PostgreSQL a
batch first takes the advisory locks of its accounts, like the generic run.
On a SQLite file the end of each batch's transaction is written behind, in
a writer thread, while the next batch is read and drafted
(:meth:`SubscriptionRun._in_batches_behind`).
A subscription that cannot be billed gets ``InvoiceBuildError`` and is listed
in the report; the others are billed.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, ObjectDef, SettingRecord
from engine.config.values import ValueProblem, coerce
from engine.domain.batching import chunks
from engine.domain.errors import EngineError, Where
from engine.domain.naming import copy_incompatibility, on_copy_target
from engine.domain.values import field_paths, read_value
from engine.storage.bulk import RowWriter, insert_tuples, record_keys, update_by_id
from engine.storage.context import Context
from engine.storage.db import ensure_table, sqlite_file
from engine.storage.reader import RecordReader
from engine.storage.types import TextTooLong, ValueOutOfRange

from .accounts import AccountCache
from .build import STANDARD_TYPE, BuildError, DraftInvoice, RunFacts, SourceHeader, SourceLine, build_invoice
from .condition import Condition
from .condition.sql import compile_condition
from .evaluate import BillingDefaults
from .filterrun import cyclic_gc_paused, exact_arithmetic
from .periods import BILLED_TYPES, ONE_TIME, Decision, PeriodError, preferred_invoice_date
from .plan import filter_condition
from .report import FilterReport, InvoiceSummary, Progress, RecordFailure
from .runrecord import lock_class
from .service_claims import SERVICE_CLAIM, delete_claims, read_claims
from .subscription_checks import SUBSCRIPTION_OBJECT, SUBSCRIPTION_USE_CASE
from .subscription_lines import Due, LineRows, RowDraft, line_fields, rows_apply
from .subscription_set import StagedTemplates, mark_billed, stage_lines, write_staged
from .subscription_terms import SubscriptionTerms, item_decision, subscription_terms
from .subscription_set_items import NarrowItems
from .writing import ERROR_LENGTH, ID_CHUNK, insert_drafts, insert_headers

#: Subscription statuses the run bills (a canceled one until its cancellation takes effect).
BILLED_STATUSES = ("Active", "Canceled")
#: The fields the run (and the usage run, :mod:`engine.billing.usage`) reads
#: of a subscription and of an item, besides the sources of their ON copies:
#: only these are fetched and converted.
SUBSCRIPTION_FIELDS = ("Name", "Account", "Status", "StartDate", "EndDate", "BillingPeriod", "BillingFactor",
                       "BillingPractice", "Alignment", "ProrationMethod", "CancellationDate", "NoticePeriod",
                       "PreferredInvoiceDay", "Template", "BusinessEntity", "PaymentDue", "CurrencyIsoCode")
ITEM_FIELDS = ("Subscription", "Name", "Title", "BillingType", "Quantity", "UnitPrice", "PricePeriod",
               "PriceChangeDate", "NewUnitPrice", "StartDate", "EndDate", "NextServicePeriodStart",
               "ProductGroup", "ProductTaxClass", "Unit")
_INT4 = 2**31 - 1
#: The item fields :func:`item_terms` and :func:`item_decision` read (with the
#: subscription's terms they make the key of a decision); at most
#: ``_DECISION_MEMO`` decisions are kept.
_DECISION_FIELDS = ("startdate", "enddate", "unitprice", "priceperiod", "billingtype", "pricechangedate",
                    "newunitprice", "nextserviceperiodstart")
_DECISION_MEMO = 50_000
#: The subscription fields :func:`subscription_terms` reads: the key of its terms.
_TERM_FIELDS = ("startdate", "billingperiod", "billingfactor", "alignment", "status", "cancellationdate",
                "enddate", "noticeperiod", "billingpractice", "prorationmethod")


class SubscriptionRunError(EngineError, ValueError):
    """A subscription filter cannot run (wrong target, a condition that does
    not compile), or subscriptions were asked of the parallel run."""

    code = "R220"


@dataclass(frozen=True)
class SubscriptionPlan:
    """A Filter record of use case Subscription, bound to the metadata."""

    record: SettingRecord
    obj: ObjectDef  # Subscription
    item_obj: ObjectDef  # SubscriptionItem
    condition: Condition | None

    @property
    def name(self) -> str:
        return self.record.name

    def table_names(self) -> set[str]:
        return {self.obj.table_name, self.item_obj.table_name}


def is_subscription_filter(record: SettingRecord) -> bool:
    return record.get("UseCase") == SUBSCRIPTION_USE_CASE


def plan_subscriptions(ctx: Context, record: SettingRecord) -> SubscriptionPlan:
    """Bind a subscription filter; :class:`SubscriptionRunError` when it cannot run."""
    where = Where(object="Filter", record=record.name)
    if str(record.get("Target") or "").lower() != SUBSCRIPTION_OBJECT.lower():
        raise SubscriptionRunError(f"filter '{record.name}' of use case Subscription must target Subscription",
                                   where=where)
    obj, item_obj = ctx.obj(SUBSCRIPTION_OBJECT), ctx.obj("SubscriptionItem")
    condition = filter_condition(record, obj, ctx.model, lambda message: SubscriptionRunError(message, where=where))
    return SubscriptionPlan(record, obj, item_obj, condition)


class SubscriptionRun:
    """The run of one subscription filter within an invoice run (see the module docstring)."""

    def __init__(self, session, ctx: Context, plan: SubscriptionPlan, run: RunFacts, today: date,
                 batch_size: int, progress: Progress | None):
        self.session = session
        self.ctx = ctx
        self.plan = plan
        self.run = run
        self.today = today
        self.batch_size = max(1, batch_size)
        self.progress = progress
        self.report = FilterReport(plan.name)
        self.summaries: list[InvoiceSummary] = []
        self.table = ctx.table(plan.obj.name)
        self.item_table = ctx.table(plan.item_obj.name)
        self.accounts = AccountCache(ctx, today)
        self.defaults = ctx.service(BillingDefaults)
        self.invoice_obj = ctx.obj("Invoice")
        self.line_obj = ctx.obj("InvoiceLineItem")
        self.header_copies = _on_copies(plan.obj, self.invoice_obj)
        self.line_copies = _on_copies(plan.item_obj, self.line_obj)
        self.reader = _reader(ctx, plan.obj, SUBSCRIPTION_FIELDS, self.header_copies, session.dialect)
        self.item_reader = _reader(ctx, plan.item_obj, ITEM_FIELDS, self.line_copies, session.dialect)
        self._parent = self.item_table.c[plan.item_obj.field("Subscription").column_name]  # type: ignore[union-attr]
        self._decisions: dict[SubscriptionTerms, dict[tuple, Decision]] = {}
        self._raw_decisions: dict[SubscriptionTerms, dict[tuple, Decision]] = {}  # keyed by raw item values
        self._terms: dict[tuple, SubscriptionTerms] = {}  # by the subscription's _TERM_FIELDS
        self._memo_size = 0
        #: Line amounts computed in the current batch (see ``build_invoice``'s ``amounts_memo``).
        self._amounts_memo: dict = {}
        #: The lines as rows, when the run's case allows (:func:`rows_apply`); else dicts.
        self._rows = LineRows(run, record_keys(self.line_obj), "SubscriptionItem") \
            if rows_apply(run, self.line_copies) else None
        if self._rows is not None:  # its items are read as raw rows (rows_apply: no ON copies to read)
            self._rows.items = NarrowItems(ctx, plan.item_obj, ITEM_FIELDS, _DECISION_FIELDS, session.dialect)
        self._stage = StagedTemplates()  # the row path's templates staged for the run (see stage_lines)
        self._done = 0  # subscriptions of committed batches

    # -- selection ----------------------------------------------------------------

    def _selection(self) -> sa.ColumnElement[bool]:
        """The subscriptions the run looks at: billed statuses, started by the
        run's end, the filter's condition, and at least one item that may be
        due (:meth:`_open_items`)."""
        t, items = self.table, self.item_table
        where = sa.and_(t.c[self.plan.obj.field("Status").column_name].in_(BILLED_STATUSES),  # type: ignore[union-attr]
                        t.c[self.plan.obj.field("StartDate").column_name] <= self.run.period_end,  # type: ignore[union-attr]
                        sa.exists(sa.select(items.c.id).where(self._parent == t.c.id, self._open_items())))
        if self.plan.condition is not None:
            condition, source = compile_condition(self.plan.condition, self.ctx, t, today=self.today)
            where = sa.and_(where, t.c.id.in_(sa.select(t.c.id).select_from(source).where(condition).scalar_subquery()))
        return where

    def _open_items(self, of_item_only: bool = False) -> sa.ColumnElement[bool]:
        """Items that may have a period due, in SQL: a billed type, and either
        never billed or billed up to a day on or before the run's end and
        before the item's end date, and (unless ``of_item_only``: then only
        the item's own columns are read) before the end date of the
        subscription in the enclosing query, a one-time item billed once
        being done. A necessary condition, so that each month reads what may
        be due and not every item ever sold; :func:`item_decision` decides."""
        items, subs, item_obj = self.item_table, self.table, self.plan.item_obj
        col = lambda name: items.c[item_obj.field(name).column_name]  # type: ignore[union-attr]  # noqa: E731
        nsps, start = col("NextServicePeriodStart"), col("StartDate")
        billed_on = sa.and_(nsps <= self.run.period_end, sa.or_(col("EndDate").is_(None), nsps <= col("EndDate")))
        if not of_item_only:
            sub_end = subs.c[self.plan.obj.field("EndDate").column_name]  # type: ignore[union-attr]
            sub_start = subs.c[self.plan.obj.field("StartDate").column_name]  # type: ignore[union-attr]
            billed_on = sa.and_(billed_on, sa.or_(sub_end.is_(None), nsps <= sub_end),
                                sa.or_(col("BillingType") != ONE_TIME, nsps <= sa.func.coalesce(start, sub_start)))
        return sa.and_(col("BillingType").in_(BILLED_TYPES), sa.or_(nsps.is_(None), billed_on))

    def execute(self) -> FilterReport:
        """Select the subscriptions, then bill them batch by batch."""
        account = self.table.c[self.plan.obj.field("Account").column_name]  # type: ignore[union-attr]
        self.session.write(lambda conn: SERVICE_CLAIM.create(conn, checkfirst=True)) if self.session.dry_run \
            else ensure_table(self.session.engine, SERVICE_CLAIM)
        with self.session.read() as conn:
            rows = conn.execute(sa.select(self.table.c.id, account).where(self._selection())
                                .order_by(account, self.table.c.id)).all()
        self.report.records_read = len(rows)
        accounts = {row[0]: row[1] for row in rows}
        bill = lambda conn, batch: self._batch(conn, batch, accounts)  # noqa: E731
        if self._write_behind():
            return self._in_batches_behind([row[0] for row in rows], bill)
        return self._in_batches([row[0] for row in rows], bill)

    def _in_batches(self, ids: list[int], bill: Callable[[sa.Connection, list[int]], tuple]) -> FilterReport:
        """Bill ``ids`` (subscriptions) batch by batch, each in its own
        transaction (``bill(conn, batch)`` -> invoices, lines, failures,
        summaries), adding up the report and telling the progress; the
        subscription and the usage run share it.

        The cyclic collector is paused for the whole run (see
        ``cyclic_gc_paused``) and the two young generations are collected
        after each batch, once the batch's objects are gone: what a batch
        left as cyclic garbage is collected there, and only its survivors are
        traversed. Re-enabling the collector at the end of each batch, while
        the batch's drafts were still alive, had it traverse all of them
        (about 4 % of a 100k run)."""
        with cyclic_gc_paused():
            for batch in chunks(ids, self.batch_size):
                self._billed(batch, self.session.write(lambda conn: bill(conn, batch)), len(ids))
        return self.report

    def _in_batches_behind(self, ids: list[int], bill: Callable[[sa.Connection, list[int]], tuple]) -> FilterReport:
        """:meth:`_in_batches` with the end of each batch's transaction
        written behind (:meth:`RunSession.batches_behind`, see
        :meth:`_write_behind`): a batch is read and drafted in read
        transactions (:meth:`_prepare`), its headers and staged lines written
        here (:meth:`_write_front`), and the rest, the lines' INSERT ...
        SELECT, the claims, the marks and the commit (:meth:`_write_back`:
        long statements, during which SQLite runs without Python's lock), in
        a writer thread while the next batch is read and drafted. A batch
        whose write is refused (a value that does not fit its column, a
        period claimed meanwhile by a run elsewhere) is read and billed again
        the whole way by ``bill``, in one transaction."""
        with cyclic_gc_paused():
            self.session.batches_behind(
                chunks(ids, self.batch_size), self._prepare,
                lambda conn, prepared: self._write_front(conn, prepared[0], prepared[2]),
                lambda conn, front, prepared: self._write_back(conn, front, prepared[0], prepared[1]),
                lambda batch: self.session.write(lambda conn: bill(conn, batch)),
                lambda batch, outcome: self._billed(batch, outcome, len(ids)))
        return self.report

    def _billed(self, batch: list[int], outcome: tuple, total: int) -> None:
        """A batch committed (``outcome``: invoices, lines, failures,
        summaries): its templates stay staged, the report adds it up, the
        progress is told, and the young generations are collected."""
        self._stage.settle()
        invoices, lines, failures, summaries = outcome
        self.report.invoices += invoices
        self.report.lines += lines
        self.report.failures.extend(failures)
        self.summaries.extend(summaries)
        self._done += len(batch)
        if self.progress:
            self.progress(self.plan.name, self._done, total)
        gc.collect(1)

    # -- one batch ----------------------------------------------------------------

    def _lock_accounts(self, conn: sa.Connection, account_ids: Sequence[int]) -> None:
        """PostgreSQL: queue for the advisory locks of the batch's accounts,
        in account order (no deadlock), so that no other run bills them now;
        one statement for the batch, as the generic run does."""
        if conn.dialect.name != "postgresql" or self.session.dry_run or not account_ids:
            return
        ordered = sa.select(sa.func.unnest(sa.literal(sorted(set(account_ids)), type_=ARRAY(sa.BigInteger)))
                            .label("a")).order_by(sa.text("1")).subquery()
        conn.execute(sa.select(ordered.c.a, sa.func.pg_advisory_xact_lock(
            lock_class("account"), sa.cast(ordered.c.a % _INT4, sa.Integer)))).all()

    def _batch(self, conn: sa.Connection, ids: list[int], accounts: dict[int, int]):
        self._stage.begin()  # a retried batch starts again
        self._lock_accounts(conn, [accounts[i] for i in ids if accounts.get(i) is not None])
        with cyclic_gc_paused(), exact_arithmetic():
            subscriptions, items, claimed, stale = self._read(conn, ids)
            delete_claims(conn, stale)
            self._amounts_memo = {}  # per batch: what it holds lives as long as the batch's drafts
            if self._rows is None:
                return self._write_fitting(conn, *self._drafts(conn, subscriptions, items, claimed))
            self._rows.new_batch()
            drafts, failures = self._drafts(conn, subscriptions, items, claimed, self._row_draft)
            outcome = self._write_rows(conn, drafts, failures)
            if outcome is not None:
                return outcome
            # A value that does not fit its column: the dict path finds which, per subscription.
            narrow = self._rows.items
            dicts = {key: [narrow.record(row) for row in rows] for key, rows in items.items()}
            return self._write_fitting(conn, *self._drafts(conn, subscriptions, dicts, claimed))

    def _read(self, conn: sa.Connection, ids: list[int]
              ) -> tuple[list[dict], dict[int, list], set[tuple[int, date]], list[dict]]:
        """The batch's subscriptions (those of ``ids`` the run still selects),
        their open items (raw rows when the lines are rows), the periods
        claimed of those and the stale claims among them (to be deleted by
        the batch's write, :func:`delete_claims`); the accounts are read into the cache."""
        subscriptions = list(self.reader.read(conn, where=sa.and_(self.table.c.id.in_(ids), self._selection()),
                                              order_by=[self.table.c.id]))
        items: dict[int, list] = defaultdict(list)
        parent = self._parent
        narrow = self._rows.items if self._rows is not None else None
        selections = []
        for chunk in chunks([s["id"] for s in subscriptions], ID_CHUNK):
            open_items = sa.and_(parent.in_(chunk), self._open_items(of_item_only=True))
            selections.append(open_items)
            if narrow is not None:  # raw rows (see subscription_set_items)
                at = narrow.at["subscription"]
                for row in narrow.read(conn, open_items, [parent, self.item_table.c.id]):
                    items[row[at]].append(row)
                continue
            for item in self.item_reader.read(conn, where=open_items, order_by=[parent, self.item_table.c.id]):
                items[_ref(item.get("subscription"))].append(item)
        claimed, stale = read_claims(conn, self.ctx, [], selections)  # the items just read, by the same conditions
        self.accounts.prefetch(conn, (_ref(s.get("account")) for s in subscriptions))
        return subscriptions, items, claimed, stale

    def _write_behind(self) -> bool:
        """Whether the run writes behind (:meth:`_in_batches_behind`): the
        lines are rows, and the database is a SQLite file (another
        connection reads while one writes). Not in a dry run (one
        connection holds it), not on an in-memory database, and not on
        PostgreSQL, where a batch reads after taking its accounts' locks."""
        return (self._rows is not None and not self.session.dry_run and self.session.dialect == "sqlite"
                and sqlite_file(self.session.engine.url) is not None)

    def _prepare(self, ids: list[int]) -> tuple[list[RowDraft], list[RecordFailure], list[dict]]:
        """Read and draft a batch (lines as rows) in a read transaction of its
        own: its drafts, record errors and the stale claims its write deletes.
        What it reads (the batch's subscriptions, their open items and their
        claims) no other batch of the run writes; a run elsewhere that bills
        the same periods meanwhile makes the write fail on the claims'
        primary key, and the batch is read and billed again: never billed twice."""
        assert self._rows is not None
        with self.session.read() as conn, exact_arithmetic():
            subscriptions, items, claimed, stale = self._read(conn, ids)
        self._rows.new_batch()
        # A second read transaction, in case drafting reads (an account not
        # prefetched): the first one ended, so that no snapshot is held while
        # drafting, which would keep each commit from checkpointing the WAL.
        with self.session.read() as conn, exact_arithmetic():
            drafts, failures = self._drafts(conn, subscriptions, items, claimed, self._row_draft)
        return drafts, failures, stale

    def _drafts(self, conn: sa.Connection, subscriptions: list[dict], items: dict[int, list[dict]],
                claimed: set[tuple[int, date]], build: Callable | None = None) -> tuple[list, list[RecordFailure]]:
        """The batch's drafts (by ``build``, default :meth:`_draft`) and the
        record errors of the subscriptions that cannot be billed."""
        build = build or self._draft
        drafts: list = []
        failures: list[RecordFailure] = []
        for subscription in subscriptions:
            try:
                draft = build(conn, subscription, items.get(subscription["id"], []), claimed)
            except (PeriodError, BuildError, FormulaEvaluationError, ValueProblem, ArithmeticError) as error:
                failures.append(RecordFailure(self.plan.obj.name, subscription["id"], _message(error)))
                continue
            if draft is not None:
                drafts.append(draft)
        return drafts, failures

    def _due(self, subscription: dict, items: list[dict], claimed: set[tuple[int, date]]) -> list[Due]:
        """The lines due of one subscription: each unclaimed charge of its
        billed items, in item order. Raises :class:`PeriodError`."""
        due: list[Due] = []
        term_key = tuple(map(subscription.get, _TERM_FIELDS))
        base = self._terms.get(term_key)
        if base is None:
            base = subscription_terms(subscription)
            if len(self._terms) < _DECISION_MEMO:
                self._terms[term_key] = base
        narrow = self._rows.items if self._rows is not None and items and not isinstance(items[0], dict) else None
        # Raw rows and dicts are keyed apart: a raw scaled integer may equal another item's Decimal.
        memos = self._decisions if narrow is None else self._raw_decisions
        memo = memos.get(base)  # once per subscription: hashing the terms is not free
        if memo is None:
            memo = memos[base] = {}
        for item in items:
            if narrow is None:
                item_id, billing_type, key = item["id"], item.get("billingtype"), tuple(map(item.get, _DECISION_FIELDS))
            else:
                item_id, billing_type, key = item[0], item[narrow.at["billingtype"]], narrow.decision_key(item)
            if billing_type not in BILLED_TYPES:
                continue
            decision = memo.get(key)
            if decision is None:
                record = item if narrow is None else narrow.record(item)
                decision, memo = self._decision(subscription, record, base, key, memos)
            for order, charge in enumerate(decision.charges):
                if (item_id, charge.start) in claimed:
                    continue
                due.append(Due(item, charge, (item_id, charge.start, order)))
        return due

    def _draft(self, conn: sa.Connection, subscription: dict, items: list[dict],
               claimed: set[tuple[int, date]]) -> DraftInvoice | None:
        """The draft invoice of one subscription, or None when nothing is due."""
        due = self._due(subscription, items, claimed)
        if not due:
            return None
        lines = [SourceLine("SubscriptionItem", d.item["id"], d.order,
                            line_fields(d.item, subscription, d.charge, self._copies(self.line_copies, d.item)))
                 for d in due]
        source, account_id = self._source(conn, subscription)
        source.lines = lines
        return build_invoice(self.run, [source], self.accounts.record(account_id), self.accounts.copies(account_id),
                             amounts_memo=self._amounts_memo)

    def _row_draft(self, conn: sa.Connection, subscription: dict, items: list[dict],
                   claimed: set[tuple[int, date]]) -> RowDraft | None:
        """:meth:`_draft` with the lines as rows (:mod:`engine.billing.subscription_lines`)."""
        due = self._due(subscription, items, claimed)
        if not due:
            return None
        source, account_id = self._source(conn, subscription)
        assert self._rows is not None
        return self._rows.build(source, due, subscription, self.accounts.record(account_id),
                                self.accounts.copies(account_id))

    def _source(self, conn: sa.Connection, subscription: dict) -> tuple[SourceHeader, int]:
        """The subscription as the source of its invoice (without lines), and its account."""
        account_id = self.accounts.resolve(conn, _ref(subscription.get("account")))
        if account_id is None:
            raise BuildError(f"no account with id {subscription.get('account')}")
        account = self.accounts.record(account_id)
        invoice_fields = self._copies(self.header_copies, subscription)
        invoice_fields["subscription"] = subscription["id"]
        if subscription.get("paymentdue") is not None:
            invoice_fields["paymentdue"] = subscription["paymentdue"]
        if self.run.invoice_date is None and subscription.get("preferredinvoiceday") is not None:
            invoice_fields["date"] = preferred_invoice_date(subscription["preferredinvoiceday"], self.run.period_end)
        source = SourceHeader(
            object_name=self.plan.obj.name,
            record_id=subscription["id"],
            account_id=account_id,
            template=self._template(subscription.get("template")),
            invoice_type=STANDARD_TYPE,
            assignment_key=None,
            criterion=None,
            currency=str(subscription.get("currencyisocode") or account.get("currencyisocode")
                         or self.defaults.default_currency),
            business_entity=(subscription.get("businessentity") or self.accounts.copies(account_id).get("businessentity")
                             or self.defaults.default_entity),
            invoice_fields=invoice_fields,
            lines=[],
        )
        return source, account_id

    def _decision(self, subscription: dict, item: dict, base: "SubscriptionTerms", key: tuple,
                  memos: dict) -> tuple[Decision, dict[tuple, Decision]]:
        """:func:`item_decision` without a trace, remembered under the item's
        ``key`` (its :data:`_DECISION_FIELDS`) among the decisions of the
        terms ``base``: items of the same terms and billing state (most of a
        month's items share a few price lists and one grid) share it. Returns
        the decision and the memo of ``base`` (a new one when the memo was
        full and started afresh)."""
        memo = memos.get(base)
        if memo is None or self._memo_size >= _DECISION_MEMO:
            if self._memo_size >= _DECISION_MEMO:  # bounded memory: start afresh
                self._decisions.clear()
                self._raw_decisions.clear()
                self._memo_size = 0
            memo = memos[base] = {}
        decision = memo[key] = item_decision(subscription, item, self.run.period_end, explain=False, base=base)
        self._memo_size += 1
        return decision, memo

    def _copies(self, plan: list[tuple[FieldDef, FieldDef]], record: dict) -> dict:
        out = {}
        for source, target in plan:
            value = read_value(source, record, self.today)
            if value not in (None, ""):
                out[target.key] = coerce(target, value)
        return out

    def _template(self, name: object) -> SettingRecord:
        if name in (None, ""):
            if self.defaults.default_template is None:
                raise BuildError("no template given and no template is marked Default")
            return self.defaults.default_template
        found = self.defaults.templates.get(str(name).lower())
        if found is None:
            raise BuildError(f"no template named '{name}'")
        return found

    def _write_fitting(self, conn: sa.Connection, drafts: list[DraftInvoice], failures: list[RecordFailure]):
        """:meth:`_write`; when a value does not fit its column, the batch is
        written again without the drafts that hold one (each becomes the
        record error of its source)."""
        keys = [(record, set(record)) for draft in drafts for record in (draft.header, *draft.lines)]
        savepoint = conn.begin_nested()
        try:
            outcome = self._write(conn, drafts, failures)
        except (ValueOutOfRange, TextTooLong):
            savepoint.rollback()
        else:
            savepoint.commit()
            return outcome
        for record, before in keys:  # take back the ids and names the rolled-back write gave them
            for key in set(record) - before:
                del record[key]
        kept = []
        for draft in drafts:
            problem = self._unfit(conn, draft)
            if problem is None:
                kept.append(draft)
            else:
                failures.extend(self._draft_failures(draft, problem))
        return self._write(conn, kept, failures)

    def _draft_failures(self, draft: DraftInvoice, problem: str) -> list[RecordFailure]:
        """The record errors of a draft that cannot be written: its subscription's."""
        return [RecordFailure(s.object_name, s.record_id, problem) for s in draft.sources]

    def _unfit(self, conn: sa.Connection, draft: DraftInvoice) -> str | None:
        """Why a draft cannot be stored (the first value that does not fit its column), or None."""
        try:
            RowWriter(conn, self.line_obj).rows(draft.lines)
            RowWriter(conn, self.invoice_obj).rows([draft.header])
        except (ValueOutOfRange, TextTooLong) as error:
            return f"{error}"[:ERROR_LENGTH]
        return None

    def _write(self, conn: sa.Connection, drafts: list[DraftInvoice], failures: list[RecordFailure]):
        """Insert the drafts, claim their periods, and write the outcome to the subscriptions."""
        summaries = []
        line_count = 0
        if drafts:
            headers, all_lines = insert_drafts(conn, self.invoice_obj, self.line_obj, drafts)
            line_count = len(all_lines)
            self._claim(conn, drafts, all_lines)
            counts = {draft.header["id"]: len(draft.lines) for draft in drafts}
            for header in headers:
                summaries.append(InvoiceSummary(
                    header["id"], header["name"], str(header.get("accountname") or header["account"]), header["type"],
                    counts[header["id"]], header["totalnet"],
                    header["grandtotal"], str(header.get("currencyisocode") or "")))
        self._outcome(conn, drafts, failures)
        return len(drafts), line_count, failures, summaries

    def _write_rows(self, conn: sa.Connection, drafts: list[RowDraft], failures: list[RecordFailure]):
        """:meth:`_write` of drafts whose lines are rows, in a savepoint; None
        (and nothing written) when a value does not fit its column."""
        front = self._write_front(conn, drafts)
        return None if front is None else self._write_back(conn, front, drafts, failures)

    def _write_front(self, conn: sa.Connection, drafts: list[RowDraft], stale: Sequence[dict] = ()) -> tuple | None:
        """The first part of :meth:`_write_rows`: the ``stale`` claims deleted
        (a claim deleted meanwhile, or claimed anew, is not: the new claim
        then fails the batch's claims), then in a savepoint, the headers
        (by the row writer, ids and DRAFT names as
        :func:`~engine.billing.writing.insert_drafts` gives them) and the
        lines staged; None, the savepoint rolled back, when a value does not
        fit its column. Returns what :meth:`_write_back` needs."""
        self._stage.begin()
        delete_claims(conn, list(stale))
        savepoint = conn.begin_nested()
        try:
            headers = insert_headers(conn, self.invoice_obj, [d.header for d in drafts]) if drafts else []
            invoice_ids = [h["id"] for h in headers]
            staged = stage_lines(conn, self.line_obj, invoice_ids, drafts, self._stage)
        except (ValueOutOfRange, TextTooLong):
            savepoint.rollback()
            self._stage.discard()  # what it staged is rolled back too
            return None
        summaries = [InvoiceSummary(h["id"], h["name"], str(h.get("accountname") or h["account"]), h["type"],
                                    len(d.lines), h["totalnet"], h["grandtotal"], str(h.get("currencyisocode") or ""))
                     for h, d in zip(headers, drafts)]
        return savepoint, invoice_ids, staged, summaries

    def _write_back(self, conn: sa.Connection, front: tuple, drafts: list[RowDraft],
                    failures: list[RecordFailure]) -> tuple:
        """The rest of :meth:`_write_rows`: the staged lines written, their
        periods claimed, the savepoint released and the outcome written to
        the subscriptions; returns (invoices, lines, failures, summaries)."""
        savepoint, invoice_ids, staged, summaries = front
        count = 0
        if staged is not None:
            count = write_staged(conn, self.invoice_obj, invoice_ids, staged)
            self._claim(conn, drafts, [])  # type: ignore[arg-type]
        savepoint.commit()
        self._outcome(conn, drafts, failures)  # type: ignore[arg-type]
        return len(drafts), count, failures, summaries

    def _claim(self, conn: sa.Connection, drafts: list[DraftInvoice], lines: list[dict]) -> None:
        """Claim every service period the lines bill (the primary key refuses a
        second claim). The lines are written: one INSERT ... SELECT copies
        (item, period, invoice) from them, reading the batch's invoices by
        their id range (one block of ids, reserved together); were the ids
        ever not one block, one driver ``executemany`` of the same rows."""
        invoice_ids = [draft.header["id"] for draft in drafts]
        low, high = min(invoice_ids, default=0), max(invoice_ids, default=-1)
        if invoice_ids and high - low + 1 == len(invoice_ids):
            table, line = self.ctx.table(self.line_obj.name), self.line_obj
            column = lambda name: table.c[line.field(name).column_name]  # type: ignore[union-attr]  # noqa: E731
            invoice = column("Invoice")
            copied = sa.select(column("SubscriptionItem"), column("ServicePeriodStart"), column("ServicePeriodEnd"),
                               invoice, sa.literal(self.run.run_id, sa.BigInteger())).where(invoice.between(low, high))
            conn.execute(sa.insert(SERVICE_CLAIM).from_select(
                ["item_id", "period_start", "period_end", "invoice_id", "run_id"], copied))
            return
        # Dates as ISO text on SQLite, as SQLAlchemy's Date stores them there.
        day = date.isoformat if conn.dialect.name == "sqlite" else (lambda value: value)
        insert_tuples(conn, SERVICE_CLAIM, ("item_id", "period_start", "period_end", "invoice_id", "run_id"), [
            (line["subscriptionitem"], day(line["serviceperiodstart"]), day(line["serviceperiodend"]),
             line["invoice"], self.run.run_id)
            for line in lines
        ])

    def _outcome(self, conn: sa.Connection, drafts: list[DraftInvoice], failures: list[RecordFailure]) -> None:
        """The run, and the error or none, on each subscription of the batch.
        The billed ones by one UPDATE of the subscriptions of the batch's
        invoices (one block of ids, as in :meth:`_claim`), else by id."""
        invoice_ids = [draft.header["id"] for draft in drafts]
        low, high = min(invoice_ids, default=0), max(invoice_ids, default=-1)
        outcome = [(f.record_id, (self.run.run_id, f.message[:ERROR_LENGTH])) for f in failures]
        if invoice_ids and high - low + 1 == len(invoice_ids):
            mark_billed(conn, self.plan.obj, self.invoice_obj, self.run.run_id, low, high)
        else:
            outcome = [(d.header["subscription"], (self.run.run_id, None)) for d in drafts] + outcome
        if outcome:
            update_by_id(conn, self.plan.obj, ["LastInvoiceRun", "InvoiceBuildError"], outcome)


def _reader(ctx: Context, obj: ObjectDef, names: Sequence[str], copies: list[tuple[FieldDef, FieldDef]],
            dialect: str) -> RecordReader:
    """A reader of ``obj`` that fetches the ``names`` it declares and what the ON copies read."""
    paths = {(fdef.key,) for fdef in (obj.field(name) for name in names) if fdef is not None and fdef.is_stored}
    for source, _ in copies:
        paths |= set(field_paths(source))
    return RecordReader.of(ctx, obj, paths, dialect, all_fields=False)


def _on_copies(source: ObjectDef, target: ObjectDef) -> list[tuple[FieldDef, FieldDef]]:
    """The ON fields of ``source`` and the ``target`` fields they are copied to."""
    out = []
    for fdef in source.fields:
        if not (fdef.name.lower().startswith("on_") and fdef.is_custom):
            continue
        dest = on_copy_target(fdef.name, "", target)
        if dest is not None and copy_incompatibility(fdef, dest) is None:
            out.append((fdef, dest))
    return out


def _ref(value: object) -> object:
    return value.get("id") if isinstance(value, dict) else value


def _message(error: Exception) -> str:
    if isinstance(error, ArithmeticError):
        return f"its amounts cannot be computed ({type(error).__name__}): check the item's numbers"
    return str(error)[:ERROR_LENGTH]

