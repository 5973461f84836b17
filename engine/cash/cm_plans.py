"""Installments of invoices in the database, and payment plan changes
(domain-spec §4.9; seed 000 "payment plan modification → entry cancellation
+ entry creation").

:func:`build_installments` turns an invoice's ``InstallmentType`` into
Installment rows (see :mod:`engine.cash.installments` for dates and
amounts); what was already settled on the invoice (payments, write-offs,
settlements: grand total − balance) becomes the deposit installment.

:func:`change_payment_plan` replaces the plan of an Open invoice in one
transaction: its live entries are canceled (their payment associations
reversed), its installments replaced, new entries created and the invoice's
cash-management balances re-attached to them (the deposit installment first).
An invoice already exported to SEPA keeps its plan: its installments record
what each direct debit collected, and new ones would be collected again.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Iterable

import sqlalchemy as sa

from engine.booking.dues import refresh_installments
from engine.config.model import SettingRecord
from engine.domain.batching import chunks
from engine.domain.money import ZERO
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .cm_core import (
    PROCESS_REATTACH,
    Changes,
    cancel_entries,
    enabled,
    expected_entries,
    insert_entries,
    invoice_where,
    live_entries,
    locked_invoice,
    mirror_balances,
    select_in,
)
from .errors import CashManagementError, InstallmentError
from .installments import plan_installments


def plan_record(ctx: Context, invoice: dict) -> SettingRecord | None:
    """The invoice's InstallmentPlan record; None without a plan."""
    name = invoice.get("installmenttype")
    if name in (None, ""):
        return None
    record = ctx.model.setting_record("InstallmentPlan", str(name))
    if record is None:
        raise InstallmentError(f"Invoice.InstallmentType {name!r} names no InstallmentPlan record",
                               where=invoice_where(invoice.get("name")),
                               hint="name one of the InstallmentPlan records of custom_settings/")
    return record


def open_amounts(conn: sa.Connection, ctx: Context, invoice_ids: Iterable[int]) -> dict[int, Decimal]:
    """Σ of each invoice's balances (its open amount), straight from the Balance table."""
    b = ctx.table("Balance")
    ids = sorted({int(i) for i in invoice_ids})
    out: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for chunk in chunks(ids, 900):
        for row in conn.execute(sa.select(b.c.invoice, b.c.amount).where(b.c.invoice.in_(chunk))):
            out[row.invoice] += row.amount
    return out


def build_installments(ctx: Context, invoice: dict, open_amount: Decimal) -> list[dict]:
    """Installment rows (not yet written) for the invoice's plan; none when
    it has no plan or nothing is open. InstallmentError names the problem."""
    record = plan_record(ctx, invoice)
    total = Decimal(invoice.get("grandtotal") or 0)
    if record is None or total == 0 or open_amount == 0:
        return []
    reference = str(record.get("DateReference") or "Payment Due Date")
    base = invoice.get("date") if reference == "Invoice Date" else (invoice.get("paymentduedate") or invoice.get("date"))
    if base is None:
        raise InstallmentError("the invoice has no date to base its installments on",
                               where=invoice_where(invoice.get("name")))
    planned = plan_installments(total, str(record.get("Period") or ""), base, rates=record.get("Rates"),
                                received=total - open_amount, invoice_date=invoice.get("date"))
    return [{"invoice": invoice["id"], "sequence": Decimal(p.sequence), "date": p.due, "amount": p.amount,
             "openpaymentamount": p.amount, "isdeposit": p.is_deposit, "confighash": ctx.config_hash}
            for p in planned]


def change_payment_plan(conn: sa.Connection, ctx: Context, invoice_name: str, plan_name: str | None,
                        when: date) -> Changes:
    """Give the Open invoice ``invoice_name`` the plan ``plan_name`` (None:
    no plan, one entry again); see the module docstring."""
    invoice = locked_invoice(conn, ctx, invoice_name)
    where = invoice_where(invoice_name)
    if invoice["status"] != "Open":
        raise CashManagementError(f"{invoice_name} is {invoice['status']}: only an Open invoice can get a new "
                                  "payment plan", where=where)
    if invoice.get("type") == "Cancelation":
        raise CashManagementError(f"{invoice_name} is a cancellation: it has no payment plan", where=where)
    if int(invoice.get("timesexported") or 0) > 0:
        # Its installments record which direct debit collected them; new ones
        # would be collected again (over-collection, audit A511).
        raise CashManagementError(
            f"{invoice_name} was exported to SEPA {int(invoice['timesexported'])} time(s) (a direct debit collects "
            "its installments): a new payment plan would collect that money again", where=where,
            hint="keep the plan; register what the bank received, and write off or cancel what is not owed")
    invoice["installmenttype"] = plan_name or None
    try:
        plan_record(ctx, invoice)
    except InstallmentError as error:
        raise CashManagementError(f"{invoice_name}: {error}", where=where, hint=error.hint) from None
    changes = Changes()
    old_entries = live_entries(conn, ctx, [invoice["id"]]).get(invoice["id"], [])
    changes.entries_canceled = cancel_entries(conn, ctx, old_entries, "Payment plan changed")
    inst = ctx.table("Installment")
    conn.execute(sa.delete(inst).where(inst.c.invoice == invoice["id"]))
    update_by_id(conn, ctx.obj("Invoice"), ["InstallmentType"], [(invoice["id"], (invoice["installmenttype"],))])
    try:
        rows = build_installments(ctx, invoice, open_amounts(conn, ctx, [invoice["id"]])[invoice["id"]])
    except InstallmentError as error:
        raise CashManagementError(f"{invoice_name}: {error}", where=where, hint=error.hint) from None
    RowWriter(conn, ctx.obj("Installment")).insert(rows)
    refresh_installments(conn, ctx, [invoice["id"]])  # open amounts and NextPaymentDue follow the balance
    changes.installments_created = len(rows)
    if enabled(ctx):
        account = select_in(conn, ctx, "Account", "id", [invoice["account"]])[0]
        entries = insert_entries(conn, ctx, expected_entries(ctx, invoice, rows, account), "payment plan change")
        changes.entries_created = len(entries)
        changes.entry_items_created, changes.reductions_created = mirror_balances(
            conn, ctx, [invoice["id"]], when, process=PROCESS_REATTACH, run="payment plan change")
    changes.lines.append(f"{invoice_name}: plan {plan_name or '(none)'}: {len(rows)} installment(s), "
                         f"{changes.entries_canceled} entr(y/ies) canceled, {changes.entries_created} created")
    return changes
