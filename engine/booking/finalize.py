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
    lines = _lines(conn, model, invoice_id)  # read once: G/L assignment and bookings use them
    if not lines:
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
    settings = model.hierarchy_default("GlobalSettings")
    if settings is not None and settings.get("CreateBookkeepingData"):
        _assign_gl_accounts(conn, model, invoice, lines)  # while the lines are still editable
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
    draft_name = invoice["name"]
    invoice.update(name=number, status="Open", date=when, paymentduedate=when + timedelta(days=due_days))
    settings = model.hierarchy_default("GlobalSettings")
    book = bool(settings is not None and settings.get("CreateBookkeepingData"))
    if invoice.get("type") == "Cancelation":
        from .cancel import CancelError, finalize_cancellation

        try:
            finalize_cancellation(conn, model, invoice, when, book)
        except CancelError as error:
            raise FinalizeError(str(error)) from None
        return Finalized(invoice_id, draft_name, number, when, grand_total)
    if invoice.get("type") == "Final":
        _settle_sub_invoices(conn, model, invoice, when)
    if book:
        _book(conn, model, invoice, lines, today)
    return Finalized(invoice_id, draft_name, number, when, grand_total)


def _assign_gl_accounts(conn: sa.Connection, model: OrgModel, invoice: dict, lines: list[dict]) -> None:
    """Store each line's G/L accounts and the rule that chose them (§4.2 d):
    the same decision the revenue bookings use. ``lines`` are updated too."""
    from engine.booking.accounts import AccountResolver

    resolver = AccountResolver.for_model(model)
    line_table = build_metadata(model).tables[model.require("InvoiceLineItem").table_name]
    updates = []
    for line in lines:
        choice = resolver.gl_account(invoice, line)
        second = choice.decision.winner.get("GLAccount2") if choice.decision and choice.decision.winner else None
        line.update(glaccount=choice.account, glaccount2=second, glaccountrule=choice.rule)
        updates.append({"line_id": line["id"], "gl": choice.account, "gl2": second, "rule": choice.rule})
    if updates:
        conn.execute(
            sa.update(line_table).where(line_table.c.id == sa.bindparam("line_id"))
            .values(glaccount=sa.bindparam("gl"), glaccount2=sa.bindparam("gl2"), glaccountrule=sa.bindparam("rule")),
            updates,
        )


def _lines(conn: sa.Connection, model: OrgModel, invoice_id: int) -> list[dict]:
    line_table = build_metadata(model).tables[model.require("InvoiceLineItem").table_name]
    query = sa.select(line_table).where(line_table.c.invoice == invoice_id).order_by(line_table.c.sequence, line_table.c.id)
    return [dict(row) for row in conn.execute(query).mappings()]


def _book(conn: sa.Connection, model: OrgModel, invoice: dict, lines: list[dict], today: date) -> None:
    """The invoice's booking details, in the finalization's transaction."""
    from engine.booking.accounts import AccountResolver
    from engine.booking.invoices import BookingError, invoice_bookings
    from engine.booking.write import load_account, write_bookings

    invoice_table = build_metadata(model).tables[model.require("Invoice").table_name]
    sub_ids = sorted({int(line["subinvoice"]) for line in lines if line.get("subinvoice")})
    sub_types = {}
    if sub_ids:
        sub_types = dict(conn.execute(sa.select(invoice_table.c.id, invoice_table.c.type).where(invoice_table.c.id.in_(sub_ids))).all())
    account = load_account(conn, model, invoice["account"], today)
    provenance = {"run": str(invoice.get("invoicerun") or ""), "confighash": model.config_hash}
    try:
        bookings = invoice_bookings(model, AccountResolver.for_model(model), invoice, lines, account, sub_types, provenance)
    except BookingError as error:
        raise FinalizeError(str(error)) from None
    write_bookings(conn, model, bookings)


def _settle_sub_invoices(conn: sa.Connection, model: OrgModel, invoice: dict, when: date) -> None:
    """Link the deducted sub invoices to the final invoice, and clear what is
    still unpaid on its progress invoices: a Clearing balance (reason Final
    Invoice) settles the sub invoice, and its interim revenue is reversed by
    the same amount (domain-spec §3.8 step 5, §5.6)."""
    tables = build_metadata(model).tables
    invoice_table = tables[model.require("Invoice").table_name]
    line_table = tables[model.require("InvoiceLineItem").table_name]
    sub_ids = sorted({
        int(r.subinvoice) for r in conn.execute(
            sa.select(line_table.c.subinvoice).where(line_table.c.invoice == invoice["id"]).where(line_table.c.subinvoice.is_not(None))
        )
    })
    key = invoice.get("subinvoiceassignmentkey")
    if key:
        # Progress invoices with nothing received have no deduction line but belong to the project too.
        sub_ids = sorted(set(sub_ids) | {
            r.id for r in conn.execute(
                sa.select(invoice_table.c.id)
                .where(invoice_table.c.subinvoiceassignmentkey == key)
                .where(invoice_table.c.account == invoice["account"])
                .where(invoice_table.c.type.in_(("Partial", "Progress")))
                .where(invoice_table.c.status.in_(("Open", "Paid")))
                .where(invoice_table.c.finalinvoice.is_(None))
            )
        })
    if not sub_ids:
        return
    conn.execute(sa.update(invoice_table).where(invoice_table.c.id.in_(sub_ids)).values(finalinvoice=invoice["id"]))
    settings = model.hierarchy_default("GlobalSettings")
    book = bool(settings is not None and settings.get("CreateBookkeepingData"))
    for sub in conn.execute(sa.select(invoice_table).where(invoice_table.c.id.in_(sub_ids))).mappings().all():
        open_amount = sub["balance"] or Decimal("0.00")
        if sub["type"] != "Progress" or open_amount <= 0:
            continue
        RowWriter(conn, model.require("Balance")).insert([{
            "account": sub["account"], "invoice": sub["id"], "relatedinvoice": invoice["id"], "type": "Clearing",
            "clearingreason": "Final Invoice", "amount": -open_amount, "date": when,
            "currencyisocode": sub.get("currencyisocode"), "confighash": model.config_hash,
        }])
        conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sub["id"])
                     .values(balance=Decimal("0.00"), status="Paid", paymentdate=when))
        if book:
            _reverse_interim_revenue(conn, model, dict(sub), open_amount, when, invoice)


def _reverse_interim_revenue(conn: sa.Connection, model: OrgModel, sub: dict, amount: Decimal, when: date,
                             final: dict) -> None:
    from engine.booking.accounts import AccountResolver
    from engine.booking.invoices import Booking, BookingError, _collective, _common_fields, copied_fields, custom_values
    from engine.booking.postings import check_postings, debit_credit_flag
    from engine.booking.write import load_account, write_bookings

    account = load_account(conn, model, sub["account"], when)
    debtor = sub.get("debtorno__c") or account.get("on_debtorno__c")
    lines = _lines(conn, model, sub["id"])
    taxed = next((line for line in lines if line.get("taxcode")), {})
    tax_code = taxed.get("taxcode")
    context = {"taxcode": tax_code, "businessentity": sub.get("businessentity"), "region": sub.get("region")}
    try:
        choice = _collective(AccountResolver(model), "Interim Revenue", context, sub)
    except BookingError as error:
        raise FinalizeError(str(error)) from None
    fields = {
        **_common_fields(sub, account, str(debtor), {"run": "", "confighash": model.config_hash}),
        "type": "Interim Revenue", "amount": -amount, "accountno": choice.account, "contraaccountno": choice.contra,
        "accountrule": choice.rule, "taxcode": tax_code, "taxrate": taxed.get("taxrate"),
        "appliedtaxrule": taxed.get("appliedtaxrule"), "isgross": True, "bookingdate": when,
        "invoicelineitems": f"cleared by final invoice {final.get('name')}",
        **dict(custom_values(copied_fields(model), sub, None)),
    }
    fields["debitcredit"] = debit_credit_flag(fields)
    check_postings([fields])
    write_bookings(conn, model, [Booking(fields, choice)])
