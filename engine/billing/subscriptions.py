"""The subscription run: the items of subscriptions, billed period by period.

A filter with UseCase ``Subscription`` returns Subscription records (its
condition selects among them); the invoice run bills each one that is Active
or Canceled and has started by the end of the run period, next to the
generic filters of the same run (:func:`engine.billing.run.run_invoices`).

For every item, :func:`engine.billing.periods.due_charges` decides the
service periods due and their per-unit amounts; one draft invoice per
subscription gets one line per item and period (quantity, prorated unit
price, service period, the item it bills), built and checked by
:func:`engine.billing.build.build_invoice` like every other invoice.

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
A subscription that cannot be billed gets ``InvoiceBuildError`` and is listed
in the report; the others are billed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Sequence

import sqlalchemy as sa

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, ObjectDef, SettingRecord
from engine.config.values import ValueProblem, coerce
from engine.domain.batching import chunks
from engine.domain.errors import EngineError, Where
from engine.domain.naming import copy_incompatibility, on_copy_target
from engine.domain.values import field_paths, read_value
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context
from engine.storage.db import transaction
from engine.storage.reader import RecordReader
from engine.storage.types import TextTooLong, ValueOutOfRange

from .accounts import AccountCache
from .build import STANDARD_TYPE, BuildError, DraftInvoice, RunFacts, SourceHeader, SourceLine, build_invoice
from .condition import Condition
from .condition.sql import compile_condition
from .evaluate import BillingDefaults
from .filterrun import cyclic_gc_paused, exact_arithmetic
from .periods import (
    BILLED_TYPES,
    CALENDAR,
    PERIOD_MONTHS,
    Decision,
    PeriodError,
    Terms,
    due_charges,
    effective_end,
)
from .plan import filter_condition
from .report import FilterReport, InvoiceSummary, Progress, RecordFailure
from .runrecord import lock_class
from .service_claims import SERVICE_CLAIM, live_claims, release_stale_claims
from .subscription_checks import SUBSCRIPTION_OBJECT, SUBSCRIPTION_USE_CASE
from .writing import ERROR_LENGTH, ID_CHUNK, insert_drafts

#: Subscription statuses the run bills (a canceled one until its cancellation takes effect).
BILLED_STATUSES = ("Active", "Canceled")
_INT4 = 2**31 - 1


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
        paths = set().union(*(field_paths(s) for s, _ in self.header_copies)) if self.header_copies else set()
        self.reader = RecordReader.of(ctx, plan.obj, paths, session.dialect)
        item_paths = set().union(*(field_paths(s) for s, _ in self.line_copies)) if self.line_copies else set()
        self.item_reader = RecordReader.of(ctx, plan.item_obj, item_paths, session.dialect)

    # -- selection ----------------------------------------------------------------

    def _selection(self) -> sa.ColumnElement[bool]:
        t = self.table
        where = sa.and_(t.c[self.plan.obj.field("Status").column_name].in_(BILLED_STATUSES),  # type: ignore[union-attr]
                        t.c[self.plan.obj.field("StartDate").column_name] <= self.run.period_end)  # type: ignore[union-attr]
        if self.plan.condition is not None:
            condition, source = compile_condition(self.plan.condition, self.ctx, t, today=self.today)
            where = sa.and_(where, t.c.id.in_(sa.select(t.c.id).select_from(source).where(condition).scalar_subquery()))
        return where

    def execute(self) -> FilterReport:
        """Select the subscriptions, then bill them batch by batch."""
        account = self.table.c[self.plan.obj.field("Account").column_name]  # type: ignore[union-attr]
        self.session.write(lambda conn: SERVICE_CLAIM.create(conn, checkfirst=True)) if self.session.dry_run \
            else ensure_claim_table(self.session.engine)
        with self.session.read() as conn:
            rows = conn.execute(sa.select(self.table.c.id, account).where(self._selection())
                                .order_by(account, self.table.c.id)).all()
        self.report.records_read = len(rows)
        accounts = {row[0]: row[1] for row in rows}
        done = 0
        for batch in chunks([row[0] for row in rows], self.batch_size):
            outcome = self.session.write(lambda conn: self._batch(conn, batch, accounts))
            invoices, lines, failures, summaries = outcome
            self.report.invoices += invoices
            self.report.lines += lines
            self.report.failures.extend(failures)
            self.summaries.extend(summaries)
            done += len(batch)
            if self.progress:
                self.progress(self.plan.name, done, len(rows))
        return self.report

    # -- one batch ----------------------------------------------------------------

    def _lock_accounts(self, conn: sa.Connection, account_ids: Sequence[int]) -> None:
        """PostgreSQL: queue for the advisory locks of the batch's accounts,
        in account order (no deadlock), so that no other run bills them now."""
        if conn.dialect.name != "postgresql" or self.session.dry_run:
            return
        for account_id in sorted(set(account_ids)):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_class("account"), account_id % _INT4)))

    def _batch(self, conn: sa.Connection, ids: list[int], accounts: dict[int, int]):
        self._lock_accounts(conn, [accounts[i] for i in ids if accounts.get(i) is not None])
        with cyclic_gc_paused(), exact_arithmetic():
            subscriptions = list(self.reader.read(conn, where=sa.and_(self.table.c.id.in_(ids), self._selection()),
                                                  order_by=[self.table.c.id]))
            items: dict[int, list[dict]] = defaultdict(list)
            parent = self.item_table.c[self.plan.item_obj.field("Subscription").column_name]  # type: ignore[union-attr]
            for chunk in chunks([s["id"] for s in subscriptions], ID_CHUNK):
                for item in self.item_reader.read(conn, where=parent.in_(chunk), order_by=[parent, self.item_table.c.id]):
                    items[_ref(item.get("subscription"))].append(item)
            item_ids = [i["id"] for group in items.values() for i in group]
            release_stale_claims(conn, self.ctx, item_ids)
            claimed = live_claims(conn, item_ids)
            self.accounts.prefetch(conn, (_ref(s.get("account")) for s in subscriptions))
            drafts: list[DraftInvoice] = []
            failures: list[RecordFailure] = []
            for subscription in subscriptions:
                try:
                    draft = self._draft(conn, subscription, items.get(subscription["id"], []), claimed)
                except (PeriodError, BuildError, FormulaEvaluationError, ValueProblem, ArithmeticError) as error:
                    failures.append(RecordFailure(self.plan.obj.name, subscription["id"], _message(error)))
                    continue
                if draft is not None:
                    drafts.append(draft)
            return self._write_fitting(conn, drafts, failures)

    def _draft(self, conn: sa.Connection, subscription: dict, items: list[dict],
               claimed: set[tuple[int, date]]) -> DraftInvoice | None:
        """The draft invoice of one subscription, or None when nothing is due."""
        lines: list[SourceLine] = []
        for item in items:
            if item.get("billingtype") not in BILLED_TYPES:
                continue
            decision = item_decision(subscription, item, self.run.period_end, explain=False)
            for order, charge in enumerate(decision.charges):
                if (item["id"], charge.start) in claimed:
                    continue
                fields = self._line_fields(item, subscription, charge)
                lines.append(SourceLine("SubscriptionItem", item["id"], (item["id"], charge.start, order), fields))
        if not lines:
            return None
        account_id = self.accounts.resolve(conn, _ref(subscription.get("account")))
        if account_id is None:
            raise BuildError(f"no account with id {subscription.get('account')}")
        account = self.accounts.record(account_id)
        invoice_fields = self._copies(self.header_copies, subscription)
        invoice_fields["subscription"] = subscription["id"]
        if subscription.get("paymentdue") is not None:
            invoice_fields["paymentdue"] = subscription["paymentdue"]
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
            lines=lines,
        )
        return build_invoice(self.run, [source], account, self.accounts.copies(account_id))

    def _line_fields(self, item: dict, subscription: dict, charge) -> dict:
        fields = self._copies(self.line_copies, item)
        fields.update({
            "title": item.get("title"),
            "quantity": item.get("quantity") if item.get("quantity") is not None else Decimal(1),
            "unitprice": charge.amount,
            "serviceperiodstart": charge.start,
            "serviceperiodend": charge.end,
            "subscriptionitem": item["id"],
        })
        for key in ("productgroup", "producttaxclass", "unit"):
            if item.get(key) not in (None, ""):
                fields.setdefault(key, item[key])
        if item.get("billingtype") != "One-Time":
            fields.setdefault("billingpractice", subscription.get("billingpractice"))
        if charge.prorated or len(charge.pieces) > 1:
            fields.setdefault("description", "; ".join(
                f"{p.start}..{p.end} at {p.unit_price}" for p in charge.pieces)[:4000])
        return fields

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

    def _claim(self, conn: sa.Connection, drafts: list[DraftInvoice], lines: list[dict]) -> None:
        """Claim every service period the lines bill (the primary key refuses a second claim)."""
        conn.execute(sa.insert(SERVICE_CLAIM), [
            {"item_id": line["subscriptionitem"], "period_start": line["serviceperiodstart"],
             "period_end": line["serviceperiodend"], "invoice_id": line["invoice"], "run_id": self.run.run_id}
            for line in lines
        ])

    def _outcome(self, conn: sa.Connection, drafts: list[DraftInvoice], failures: list[RecordFailure]) -> None:
        """The run, and the error or none, on each subscription of the batch."""
        outcome = [(d.header["subscription"], (self.run.run_id, None)) for d in drafts]
        outcome += [(f.record_id, (self.run.run_id, f.message[:ERROR_LENGTH])) for f in failures]
        if outcome:
            update_by_id(conn, self.plan.obj, ["LastInvoiceRun", "InvoiceBuildError"], outcome)


# -- the decision of one item, shared with explain -------------------------------------


def item_terms(subscription: dict, item: dict) -> tuple[Terms, str]:
    """The terms of an item (subscription and item fields defaulted), and
    why the service ends when it does. Raises :class:`PeriodError`."""
    start = subscription.get("startdate")
    if start is None:
        raise PeriodError("the subscription has no StartDate")
    months = PERIOD_MONTHS.get(str(subscription.get("billingperiod") or "Month"))
    if months is None:
        raise PeriodError(f"unknown BillingPeriod '{subscription.get('billingperiod')}'")
    raw_factor = subscription.get("billingfactor")
    factor = int(raw_factor) if raw_factor is not None else 1
    if factor < 1 or (raw_factor is not None and factor != raw_factor):
        raise PeriodError(f"BillingFactor must be a whole number of at least 1, is {subscription.get('billingfactor')}")
    anchor = date(start.year, 1, 1) if subscription.get("alignment") == CALENDAR else start
    if subscription.get("status") == "Canceled" and not subscription.get("cancellationdate") \
            and not subscription.get("enddate"):
        raise PeriodError("a canceled subscription needs a CancellationDate or an EndDate")
    notice = subscription.get("noticeperiod")
    end, why = effective_end(subscription.get("enddate"), subscription.get("cancellationdate"),
                             int(notice or 0), anchor, months * factor)
    item_end = item.get("enddate")
    if item_end is not None and (end is None or item_end < end):
        end, why = item_end, f"the item ends {item_end}"
    price_period = item.get("priceperiod") or subscription.get("billingperiod") or "Month"
    price = item.get("unitprice")
    if price is None:
        raise PeriodError(f"item {item.get('name') or item['id']} has no UnitPrice")
    terms = Terms(
        start=item.get("startdate") or start,
        end=end,
        anchor=anchor,
        cycle_months=months * factor,
        practice=str(subscription.get("billingpractice") or "Advance"),
        proration=str(subscription.get("prorationmethod") or "Day Exact"),
        billing_type=str(item.get("billingtype") or "Recurring"),
        price_months=PERIOD_MONTHS[str(price_period)],
        unit_price=Decimal(price),
        change_date=item.get("pricechangedate"),
        new_unit_price=item.get("newunitprice"),
    )
    return terms, why


def item_decision(subscription: dict, item: dict, run_end: date, explain: bool = True) -> Decision:
    """:func:`~engine.billing.periods.due_charges` for an item as stored, its trace
    opened with why the service ends when it does."""
    terms, why = item_terms(subscription, item)
    decision = due_charges(terms, item.get("nextserviceperiodstart"), run_end, explain)
    return Decision(decision.charges, decision.next_start, (f"item {item.get('name') or item['id']}: {why}",
                                                           *decision.trace))


def ensure_claim_table(engine: sa.Engine) -> None:
    """Create ``_mb_service_claim`` when the database has none yet (a
    concurrent creator may win the race: then it exists, which is all we need)."""
    try:
        with transaction(engine) as conn:
            SERVICE_CLAIM.create(conn, checkfirst=True)
    except sa.exc.DBAPIError:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(SERVICE_CLAIM.name):
                raise


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

