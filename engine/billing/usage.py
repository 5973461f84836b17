"""Usage billing: usage records matched to subscription items, billed exactly once.

A Filter of use case ``Continuous`` (or ``Continuous Daily``, the same run
scheduled daily) names the object holding usage records (its ``Target``),
a condition and a transactional suffix. Controlling fields on that object,
with the suffix before ``__c`` (domain-spec, transaction builder):

* ``ON_OrderNo`` (text): the ``OrderNo`` of the subscription item the usage
  belongs to (an item of billing type Usage or Transactional);
* ``ON_Quantity`` (number), ``ON_ServiceDate`` (date): how much, and when;
* ``ON_Criterion`` (text, optional): usage of one item is aggregated per
  criterion (the line's ``TransactionCriterion``);
* ``ON_UnitPrice`` (number, optional): the record's own price, else the item's;
* ``ON_Invoice`` (lookup to Invoice), ``ON_InvoiceBuildError`` (text) and
  ``ON_LastInvoiceRun`` (optional): written back, as by the generic run.

A run bills every unbilled record whose service date is on or before the
run period's end (usage a run missed is billed by the next one): one invoice
per subscription, one line per item, criterion and unit price (quantity the
sum, service period the first to the last service date). Each record is
claimed in ``_mb_claim`` and points to its invoice (``ON_Invoice<sfx>``), in
the transaction that writes the invoice: billed exactly once, released by
``delete-drafts`` and by cancellation like every source record of a run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, ObjectDef, SettingRecord
from engine.config.values import ValueProblem
from engine.domain.batching import chunks
from engine.domain.errors import EngineError, Where
from engine.domain.values import field_paths, read_value
from engine.storage.bulk import insert_tuples, update_by_id
from engine.storage.context import Context
from engine.storage.reader import RecordReader
from engine.storage.schema import CLAIM

from .build import STANDARD_TYPE, BuildError, DraftInvoice, RunFacts, SourceHeader, SourceLine, build_invoice
from .condition import Condition
from .condition.sql import compile_condition
from .filterrun import cyclic_gc_paused, exact_arithmetic
from .plan import filter_condition
from .report import FilterReport, Progress, RecordFailure
from .subscription_checks import controlling_fields
from .subscriptions import BILLED_STATUSES, SubscriptionRun
from .writing import ERROR_LENGTH, ID_CHUNK

USAGE_USE_CASES = ("Continuous", "Continuous Daily")
#: Item billing types usage is billed for.
USAGE_TYPES = ("Usage", "Transactional")
#: Controlling fields of usage records: base -> required.
USAGE_CONTROLS = {
    "ON_OrderNo": True, "ON_Quantity": True, "ON_ServiceDate": True, "ON_Invoice": True,
    "ON_InvoiceBuildError": True, "ON_LastInvoiceRun": False, "ON_Criterion": False, "ON_UnitPrice": False,
}


class UsageRunError(EngineError, ValueError):
    """A usage (Continuous) filter cannot run: its target or controlling fields are missing."""

    code = "R224"


class _Unbillable(Exception):
    pass


@dataclass(frozen=True)
class UsagePlan:
    record: SettingRecord
    source: ObjectDef  # the usage records
    suffix: str
    controls: dict[str, FieldDef]
    condition: Condition | None
    obj: ObjectDef  # Subscription (what SubscriptionRun bills)
    item_obj: ObjectDef  # SubscriptionItem

    @property
    def name(self) -> str:
        return self.record.name

    def table_names(self) -> set[str]:
        return {self.source.table_name, self.obj.table_name, self.item_obj.table_name}


def is_usage_filter(record: SettingRecord) -> bool:
    return record.get("UseCase") in USAGE_USE_CASES


def plan_usage(ctx: Context, record: SettingRecord) -> UsagePlan:
    where = Where(object="Filter", record=record.name)
    source = ctx.model.object(str(record.get("Target") or ""))
    if source is None or source.is_setting:
        raise UsageRunError(f"filter '{record.name}': unknown target '{record.get('Target')}'", where=where)
    suffix = str(record.get("TransactionalSuffix") or "")
    controls = controlling_fields(source, suffix, USAGE_CONTROLS.items(), lambda name: UsageRunError(
        f"filter '{record.name}': {source.name} has no {name}", where=where,
        hint="validate-config names every missing field (E234)"))
    condition = filter_condition(record, source, ctx.model, lambda message: UsageRunError(message, where=where))
    return UsagePlan(record, source, suffix, controls, condition, ctx.obj("Subscription"), ctx.obj("SubscriptionItem"))


@dataclass
class _Usage:
    record_id: int
    item_id: int
    subscription_id: int
    quantity: Decimal
    unit_price: Decimal
    day: date
    criterion: str | None


class UsageRun(SubscriptionRun):
    """The run of one usage filter within an invoice run (see the module docstring)."""

    def __init__(self, session, ctx: Context, plan: UsagePlan, run: RunFacts, today: date, batch_size: int,
                 progress: Progress | None):
        super().__init__(session, ctx, plan, run, today, batch_size, progress)  # type: ignore[arg-type]
        self.usage = plan
        self.source_table = ctx.table(plan.source.name)
        paths: set[tuple[str, ...]] = set()
        for fdef in plan.controls.values():
            paths |= field_paths(fdef)
        self.source_reader = RecordReader.of(ctx, plan.source, paths, session.dialect, all_fields=False)
        self._records_of: dict[int, list[int]] = {}  # id(draft header) -> usage records

    def _unbilled(self) -> sa.ColumnElement[bool]:
        return self.source_table.c[self.usage.controls["ON_Invoice"].column_name].is_(None)

    def _value(self, base: str, record: dict) -> object:
        fdef = self.usage.controls.get(base)
        value = read_value(fdef, record, self.today) if fdef is not None else None
        return None if value == "" else value

    def execute(self) -> FilterReport:
        where = self._unbilled()
        if self.usage.condition is not None:
            condition, source = compile_condition(self.usage.condition, self.ctx, self.source_table, today=self.today)
            where = sa.and_(where, self.source_table.c.id.in_(
                sa.select(self.source_table.c.id).select_from(source).where(condition).scalar_subquery()))
        failures: list[RecordFailure] = []
        with self.session.read() as conn:
            records = list(self.source_reader.read(conn, where=where, order_by=[self.source_table.c.id]))
            items = self._items(conn, {str(self._value("ON_OrderNo", r) or "").strip() for r in records})
        by_subscription: dict[int, list[int]] = defaultdict(list)
        for record in records:
            try:
                day = self._value("ON_ServiceDate", record)
                day = day.date() if isinstance(day, datetime) else day
                if day is None:
                    raise _Unbillable(f"{self.usage.controls['ON_ServiceDate'].name} is empty")
                if day > self.run.period_end:
                    continue  # not due yet
                self.report.records_read += 1
                order_no = str(self._value("ON_OrderNo", record) or "").strip()
                found = items.get(order_no, [])
                if len(found) != 1:
                    raise _Unbillable(f"no subscription item of type Usage or Transactional with OrderNo '{order_no}'"
                                      if not found else f"OrderNo '{order_no}' names {len(found)} subscription items")
                by_subscription[found[0][1]].append(record["id"])
            except (_Unbillable, FormulaEvaluationError, ValueProblem) as error:
                failures.append(RecordFailure(self.usage.source.name, record["id"], str(error)[:ERROR_LENGTH]))
        if failures:
            self.session.write(lambda conn: self._outcome(conn, [], failures))
            self.report.failures.extend(failures)
        subscription_ids = sorted(by_subscription)
        with self.session.read() as conn:
            account_column = self.table.c[self.plan.obj.field("Account").column_name]  # type: ignore[union-attr]
            accounts = {}
            for chunk in chunks(subscription_ids, ID_CHUNK):
                accounts.update({row[0]: row[1] for row in conn.execute(
                    sa.select(self.table.c.id, account_column).where(self.table.c.id.in_(chunk)))})
        return self._in_batches(subscription_ids, lambda conn, batch: self._usage_batch(
            conn, {record_id: sub for sub in batch for record_id in by_subscription[sub]}, accounts))

    def _items(self, conn: sa.Connection, order_nos: set[str]) -> dict[str, list[tuple[int, int]]]:
        """OrderNo -> [(item, subscription)] of the usage items with these numbers."""
        table, obj = self.item_table, self.plan.item_obj
        order = table.c[obj.field("OrderNo").column_name]  # type: ignore[union-attr]
        kind = table.c[obj.field("BillingType").column_name]  # type: ignore[union-attr]
        parent = table.c[obj.field("Subscription").column_name]  # type: ignore[union-attr]
        out: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for chunk in chunks(sorted(n for n in order_nos if n), ID_CHUNK):
            for item_id, number, subscription in conn.execute(
                    sa.select(table.c.id, order, parent).where(order.in_(chunk), kind.in_(USAGE_TYPES))):
                out[number].append((item_id, subscription))
        return out

    def _usage_batch(self, conn: sa.Connection, wanted: dict[int, int], accounts: dict[int, int]):
        self._lock_accounts(conn, [accounts[s] for s in set(wanted.values()) if accounts.get(s) is not None])
        self._records_of = {}
        with cyclic_gc_paused(), exact_arithmetic():
            records = []
            for chunk in chunks(sorted(wanted), ID_CHUNK):
                records.extend(self.source_reader.read(conn, where=sa.and_(self.source_table.c.id.in_(chunk),
                                                                           self._unbilled())))
            items = {}
            order_nos = {str(self._value("ON_OrderNo", r) or "").strip() for r in records}
            for number, found in self._items(conn, order_nos).items():
                if len(found) == 1:
                    items[number] = found[0][0]
            item_rows = {}
            for chunk in chunks(sorted(set(items.values())), ID_CHUNK):
                item_rows.update({r["id"]: r for r in self.item_reader.read(conn, where=self.item_table.c.id.in_(chunk))})
            subscriptions = {}
            for chunk in chunks(sorted(set(wanted.values())), ID_CHUNK):
                subscriptions.update({r["id"]: r for r in self.reader.read(conn, where=self.table.c.id.in_(chunk))})
            grouped: dict[int, list[_Usage]] = defaultdict(list)
            failures: list[RecordFailure] = []
            for record in records:
                try:
                    usage = self._evaluate(record, items, item_rows)
                    status = subscriptions[usage.subscription_id].get("status")
                    if status not in BILLED_STATUSES:
                        raise _Unbillable(f"its subscription is {status}, not billed")
                except (_Unbillable, FormulaEvaluationError, ValueProblem, ArithmeticError, KeyError) as error:
                    failures.append(RecordFailure(self.usage.source.name, record["id"], str(error)[:ERROR_LENGTH]))
                    continue
                grouped[usage.subscription_id].append(usage)
            self.accounts.prefetch(conn, (s.get("account") for s in subscriptions.values()))
            drafts: list[DraftInvoice] = []
            for subscription_id, usages in sorted(grouped.items()):
                try:
                    draft = self._usage_draft(conn, subscriptions[subscription_id], usages, item_rows)
                except (_Unbillable, BuildError, ArithmeticError) as error:
                    failures.extend(RecordFailure(self.usage.source.name, u.record_id, str(error)[:ERROR_LENGTH])
                                    for u in usages)
                    continue
                self._records_of[id(draft.header)] = [u.record_id for u in usages]
                drafts.append(draft)
            return self._write_fitting(conn, drafts, failures)

    def _evaluate(self, record: dict, items: dict[str, int], item_rows: dict[int, dict]) -> _Usage:
        order_no = str(self._value("ON_OrderNo", record) or "").strip()
        if order_no not in items:
            raise _Unbillable(f"no single subscription item of type Usage or Transactional with OrderNo '{order_no}'")
        item = item_rows[items[order_no]]
        quantity = self._value("ON_Quantity", record)
        if quantity is None:
            raise _Unbillable(f"{self.usage.controls['ON_Quantity'].name} is empty")
        price = self._value("ON_UnitPrice", record)
        price = item.get("unitprice") if price is None else price
        if price is None:
            raise _Unbillable(f"no unit price: neither the record nor item {item.get('name')} has one")
        day = self._value("ON_ServiceDate", record)
        criterion = self._value("ON_Criterion", record)
        subscription = item.get("subscription")
        return _Usage(record["id"], item["id"], subscription.get("id") if isinstance(subscription, dict) else subscription,
                      Decimal(quantity), Decimal(price), day.date() if isinstance(day, datetime) else day,  # type: ignore[arg-type]
                      str(criterion) if criterion not in (None, "") else None)

    def _usage_draft(self, conn: sa.Connection, subscription: dict, usages: list[_Usage],
                     item_rows: dict[int, dict]) -> DraftInvoice:
        groups: dict[tuple, list[_Usage]] = defaultdict(list)
        for usage in usages:
            groups[(usage.item_id, usage.criterion or "", usage.unit_price)].append(usage)
        lines = []
        for (item_id, criterion, price), members in sorted(groups.items(), key=lambda g: (g[0][0], g[0][1], g[0][2])):
            item = item_rows[item_id]
            fields = self._copies(self.line_copies, item)
            fields.update({
                "title": f"{item.get('title')}: {criterion}" if criterion else item.get("title"),
                "quantity": sum((m.quantity for m in members), Decimal(0)),
                "unitprice": price,
                "serviceperiodstart": min(m.day for m in members),
                "serviceperiodend": max(m.day for m in members),
                "subscriptionitem": item_id,
                "transactioncriterion": criterion or None,
            })
            for key in ("productgroup", "producttaxclass", "unit"):
                if item.get(key) not in (None, ""):
                    fields.setdefault(key, item[key])
            first = min(m.record_id for m in members)
            lines.append(SourceLine(self.usage.source.name, first, (item_id, criterion, price), fields))
        account_id = self.accounts.resolve(conn, subscription.get("account"))
        if account_id is None:
            raise _Unbillable(f"subscription {subscription.get('name')} has no account")
        account = self.accounts.record(account_id)
        invoice_fields = self._copies(self.header_copies, subscription)
        invoice_fields["subscription"] = subscription["id"]
        if subscription.get("paymentdue") is not None:
            invoice_fields["paymentdue"] = subscription["paymentdue"]
        source = SourceHeader(
            object_name=self.usage.source.name, record_id=min(u.record_id for u in usages), account_id=account_id,
            template=self._template(subscription.get("template")), invoice_type=STANDARD_TYPE, assignment_key=None,
            criterion=None,
            currency=str(subscription.get("currencyisocode") or account.get("currencyisocode")
                         or self.defaults.default_currency),
            business_entity=(subscription.get("businessentity") or self.accounts.copies(account_id).get("businessentity")
                             or self.defaults.default_entity),
            invoice_fields=invoice_fields, lines=lines)
        return build_invoice(self.run, [source], account, self.accounts.copies(account_id))

    def _draft_failures(self, draft: DraftInvoice, problem: str) -> list[RecordFailure]:
        """The record errors of a draft that cannot be written: each of its usage records'."""
        return [RecordFailure(self.usage.source.name, record_id, problem)
                for record_id in self._records_of.get(id(draft.header), [])]

    def _claim(self, conn: sa.Connection, drafts: list[DraftInvoice], lines: list[dict]) -> None:
        """One billing claim per usage record (the ``_mb_claim`` primary key
        refuses a second one), and the write-back of the invoice to it."""
        billed = [(record_id, draft.header["id"]) for draft in drafts
                  for record_id in self._records_of.get(id(draft.header), [])]
        insert_tuples(conn, CLAIM, ("source_table", "source_id", "suffix", "invoice_id", "run_id"),
                      [(self.usage.source.table_name, record_id, self.usage.suffix, invoice_id, self.run.run_id)
                       for record_id, invoice_id in billed])
        names, values = self._writeback_fields()
        update_by_id(conn, self.usage.source, [controls.name for controls in names],
                     [(record_id, values(invoice_id, None)) for record_id, invoice_id in billed])

    def _writeback_fields(self):
        controls = self.usage.controls
        fields = [controls["ON_Invoice"], controls["ON_InvoiceBuildError"]]
        run_field = controls.get("ON_LastInvoiceRun")
        if run_field is not None:
            fields.append(run_field)

        def values(invoice_id, error):
            row = (invoice_id, error)
            return row + (self.run.run_id,) if run_field is not None else row
        return fields, values

    def _outcome(self, conn: sa.Connection, drafts: list[DraftInvoice], failures: list[RecordFailure]) -> None:
        """The errors of the records that could not be billed."""
        if not failures:
            return
        fields, values = self._writeback_fields()
        update_by_id(conn, self.usage.source, [f.name for f in fields[1:]],
                     [(f.record_id, values(None, f.message[:ERROR_LENGTH])[1:]) for f in failures])
