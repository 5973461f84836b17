"""Finalization: a draft invoice becomes a legally binding, numbered invoice.

For each draft, in one transaction of its own (domain-spec §4.2, §4.3):

1. the invoice date is kept, or set to the finalization date;
2. the payment due date is the invoice date plus the payment-due days;
3. the final number is drawn from the invoice's counter: the counter of the
   template for credits (``CreditCounter``) when the invoice is a credit, else
   the business entity's counter, else the template's, else ``Default``. A
   number range per counter and reset period (and account, with account
   counters) is incremented under the write lock of that transaction, so
   numbers are unique and gapless even with concurrent finalizations;
4. the status becomes ``Open`` and the invoice balance (type ``Invoice``, the
   grand total) is created.

Booking details, write-offs, installments and cash-management entries are the
later stages of the same chain (not built yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Sequence

import sqlalchemy as sa

from engine.config.model import OrgModel, SettingRecord
from engine.storage.bulk import RowWriter
from engine.storage.schema import build_metadata

_MASK = re.compile(r"\{(0+)\}")
_PLACEHOLDER = re.compile(r"\[(Year|Month|Day|AccountNo)\]")


class FinalizeError(ValueError):
    """An invoice cannot be finalized (message for the user)."""


@dataclass(frozen=True)
class Finalized:
    invoice_id: int
    draft_name: str
    number: str
    date: date
    grand_total: Decimal


@dataclass
class FinalizeReport:
    finalized: list[Finalized] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (invoice name, message)


def choose_counter(model: OrgModel, invoice: dict) -> SettingRecord:
    """The counter for an invoice (credit counter, business entity, template, Default)."""
    template = model.setting_record("Template", str(invoice.get("template") or ""))
    entity = model.setting_record("BusinessEntity", str(invoice.get("businessentity") or ""))
    candidates = []
    if invoice.get("class") == "Credit" and template is not None:
        candidates.append(template.get("CreditCounter"))
    if entity is not None:
        candidates.append(entity.get("Counter"))
    if template is not None:
        candidates.append(template.get("Counter"))
    candidates.append("Default")
    for name in candidates:
        if name:
            counter = model.setting_record("Counter", str(name))
            if counter is not None:
                return counter
    raise FinalizeError("no Counter record found (not even 'Default')")


def range_key(counter: SettingRecord, when: date, account_id: int | None) -> tuple[str, dict]:
    """The number range a counter uses for an invoice date: the counter name,
    the reset period's year/month/day and, with account counters, the account."""
    reset = str(counter.get("Reset") or "NONE").upper()
    parts = {"year": None, "month": None, "day": None}
    if reset in ("YEARLY", "MONTHLY", "DAILY"):
        parts["year"] = when.year
    if reset in ("MONTHLY", "DAILY"):
        parts["month"] = when.month
    if reset == "DAILY":
        parts["day"] = when.day
    account = account_id if counter.get("UseAccountCounters") else None
    key = "|".join(str(v) for v in (counter.name, parts["year"], parts["month"], parts["day"], account))
    return key, {**parts, "account": account}


def render_number(pattern: str, value: int, when: date, account_number: str | None) -> str:
    """Fill a counter pattern: [Year] [Month] [Day] [AccountNo] and the digit
    mask {00000} (a wider number is written in full, never truncated)."""
    mask = _MASK.search(pattern)
    if mask is None:
        raise FinalizeError(f"counter pattern {pattern!r} has no digit mask like {{00000}}")

    def placeholder(match: re.Match) -> str:
        name = match.group(1)
        if name == "Year":
            return f"{when.year:04d}"
        if name == "Month":
            return f"{when.month:02d}"
        if name == "Day":
            return f"{when.day:02d}"
        return account_number or ""

    head = _PLACEHOLDER.sub(placeholder, pattern[: mask.start()])
    tail = _PLACEHOLDER.sub(placeholder, pattern[mask.end():])
    return f"{head}{value:0{len(mask.group(1))}d}{tail}"


def _next_number(conn: sa.Connection, model: OrgModel, counter: SettingRecord, when: date,
                 account_id: int | None, invoice_id: int) -> int:
    obj = model.require("NumberRange")
    table = build_metadata(model).tables[obj.table_name]
    key, parts = range_key(counter, when, account_id)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # The UPDATE takes the row lock (PostgreSQL) inside the writer's transaction
    # (SQLite BEGIN IMMEDIATE), so two finalizations never draw the same value.
    bumped = conn.execute(
        sa.update(table)
        .where(table.c.rangekey == key)
        .values(counter=table.c.counter + 1, targetid=str(invoice_id), timestamp=now, lastmodifieddate=now)
        .returning(table.c.counter)
    ).scalar_one_or_none()
    if bumped is not None:
        return int(bumped)
    start = int(counter.get("StartCount") or 0) + 1
    RowWriter(conn, obj).insert(
        [
            {
                "name": key[:80],
                "countername": counter.name,
                "rangekey": key,
                "account": parts["account"],
                "counter": Decimal(start),
                "year": Decimal(parts["year"]) if parts["year"] else None,
                "month": Decimal(parts["month"]) if parts["month"] else None,
                "day": Decimal(parts["day"]) if parts["day"] else None,
                "targetid": str(invoice_id),
                "timestamp": now,
            }
        ]
    )
    return start


def finalize_invoices(engine: sa.Engine, model: OrgModel, invoice_ids: Sequence[int], *,
                      today: date | None = None) -> FinalizeReport:
    """Finalize the given drafts, each in its own transaction, in id order."""
    report = FinalizeReport()
    today = today or date.today()
    for invoice_id in sorted(set(invoice_ids)):
        try:
            with engine.begin() as conn:
                report.finalized.append(_finalize_one(conn, model, invoice_id, today))
        except FinalizeError as error:
            report.failures.append((str(invoice_id), str(error)))
    return report


def _finalize_one(conn: sa.Connection, model: OrgModel, invoice_id: int, today: date) -> Finalized:
    tables = build_metadata(model).tables
    invoice_table = tables[model.require("Invoice").table_name]
    row = conn.execute(sa.select(invoice_table).where(invoice_table.c.id == invoice_id)).mappings().first()
    if row is None:
        raise FinalizeError(f"no invoice with id {invoice_id}")
    invoice = dict(row)
    if invoice["status"] != "Draft":
        raise FinalizeError(f"{invoice['name']} is {invoice['status']}, not a draft")
    line_table = tables[model.require("InvoiceLineItem").table_name]
    if conn.execute(sa.select(sa.func.count()).where(line_table.c.invoice == invoice_id)).scalar_one() == 0:
        raise FinalizeError(f"{invoice['name']} has no lines")
    when = invoice.get("date") or today
    due_days = int(invoice.get("paymentdue") or 0)
    counter = choose_counter(model, invoice)
    account_table = tables[model.require("Account").table_name]
    account_number = conn.execute(
        sa.select(account_table.c.accountnumber).where(account_table.c.id == invoice["account"])
    ).scalar_one_or_none()
    value = _next_number(conn, model, counter, when, invoice["account"], invoice_id)
    number = render_number(str(counter.get("Pattern") or "{00000}"), value, when, account_number)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    grand_total = invoice.get("grandtotal") or Decimal("0.00")
    range_table = tables[model.require("NumberRange").table_name]
    conn.execute(
        sa.update(range_table).where(range_table.c.rangekey == range_key(counter, when, invoice["account"])[0])
        .values(lastgeneratedname=number)
    )
    conn.execute(
        sa.update(invoice_table)
        .where(invoice_table.c.id == invoice_id)
        .values(
            name=number,
            status="Open" if grand_total != 0 else "Paid",
            date=when,
            paymentduedate=when + timedelta(days=due_days),
            balance=grand_total,
            lastmodifieddate=now,
        )
    )
    RowWriter(conn, model.require("Balance")).insert(
        [
            {
                "account": invoice["account"],
                "invoice": invoice_id,
                "type": "Invoice",
                "amount": grand_total,
                "date": when,
                "currencyisocode": invoice.get("currencyisocode"),
                "confighash": model.config_hash,
            }
        ]
    )
    return Finalized(invoice_id, invoice["name"], number, when, grand_total)
