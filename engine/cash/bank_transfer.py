"""Moving a payment to another invoice or account (seed 000: "balance transfer
replaced by payment account modification on manual settlement";
``metabill bank reassign ENTRY INVOICE``).

A statement line assigned to the wrong invoice (a wrong automatic match, a
payer who paid for a sister company) is moved in two booked steps, both
through the normal payment bookings and their collective accounts:

1. every Payment balance the line created (on the invoice, and a free excess
   on the account) is reversed by a Payment balance of the opposite amount,
   dated the day of the move, linked to the line; the old invoice is open
   again and the old account's debtor moves back;
2. the line is assigned to the new invoice like any line
   (:func:`.bank.assign`: overpayment policy, write-off threshold), under the
   transaction number ``<bank reference>/<n>`` (n = how often it moved), so
   that each registration keeps a number of its own.

With the cash-management integration on, the line's balances belong to CM
payments (JPAY1, linked by End-to-End Id) whose entry items settled the old
invoice's entries. Step 1 then reverses each of those payments as a bank
return does (:func:`.bank_returns.reverse_cm_balances`: the reversal balance
carries the payment's End-to-End Id, reversing entry items open the old
entries again, the payment drops to zero and is ``Reversed``); step 2
registers the line again, which gives the new registration a CM payment of
its own (End-to-End Id ``<bank reference>/<n>``) settling the new invoice's
entries.

Refused, with the reason, when the line is not assigned, is a return, or
when the first assignment led to an automatic write-off (reversing a
write-off with its tax correction is a booking decision of its own).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import create_balance, refresh_accounts, refresh_invoices
from engine.domain.errors import Where
from engine.storage.context import Context

from .bank import Settled, assign, load_entry, update_entry
from .bank_returns import CmReversal, reverse_cm_balances
from .cm_core import ORIGIN
from .errors import BankAssignmentError
from .payments import RULE_THRESHOLD, lock_invoice
from .statement_import import ASSIGNED, UNASSIGNED

RULE_MOVE = "payment moved (balance transfer)"
PROCESS_MOVE = "Payment moved"


def reassign(conn: sa.Connection, ctx: Context, entry_name: str, invoice_name: str, *, when: date,
             run: str) -> Settled:
    """Move the assigned line ``entry_name`` to ``invoice_name`` (see the module docstring)."""
    entry = load_entry(conn, ctx, entry_name, lock=True)
    where = Where(object="PaymentEntry", record=entry_name)
    if entry["status"] != ASSIGNED or entry["isreturn"] or not entry["credit"]:
        raise BankAssignmentError(f"{entry_name} is not money received that was assigned", where=where,
                                  hint="metabill bank assign assigns a line that waits for review")
    balances, invoices = ctx.table("Balance"), ctx.table("Invoice")
    old = conn.execute(sa.select(invoices).where(invoices.c.id == entry["invoice"])).mappings().first()
    if old is not None and str(old["name"]) == invoice_name:
        raise BankAssignmentError(f"{entry_name} is assigned to {invoice_name} already", where=where)
    if old is not None and conn.execute(sa.select(balances.c.id).where(
            balances.c.invoice == old["id"], balances.c.type == "Write off", balances.c.rule == RULE_THRESHOLD,
            balances.c.run == entry["run"])).first() is not None:
        raise BankAssignmentError(f"{entry_name}: its payment on {old['name']} led to an automatic write-off; "
                                  "it cannot be moved", where=where,
                                  hint="register a refund and a new payment instead")
    linked = [dict(r) for r in conn.execute(sa.select(balances).where(
        balances.c.paymententry == entry["id"], balances.c.type == "Payment").order_by(balances.c.id)).mappings()]
    # the balances of the line's latest assignment (earlier ones were reversed by earlier moves)
    paid = [b for b in linked if b["run"] == entry["run"] and Decimal(b["amount"]) < 0]
    if not paid or sum((Decimal(b["amount"]) for b in paid), Decimal(0)) != -Decimal(entry["credit"]):
        raise BankAssignmentError(f"{entry_name}: its payment balances do not add up to the line's amount any "
                                  "more (moved or split since); it cannot be moved", where=where)
    # a split line (engine.cash.splitting) paid several invoices: each reversal belongs to its own
    names = dict(conn.execute(sa.select(invoices.c.id, invoices.c.name).where(
        invoices.c.id.in_(sorted({int(b["invoice"]) for b in paid if b["invoice"] is not None})))).all())
    locked = {invoice_id: lock_invoice(conn, ctx, str(name)) for invoice_id, name in sorted(names.items())}
    if ctx.settings.cash_management_integration:
        _reverse_cm_payments(conn, ctx, entry, paid, locked, invoice_name, when=when, run=run, where=where)
    else:
        _reverse_balances(conn, ctx, entry, paid, locked, invoice_name, when=when, run=run)
    moves = len({b["run"] for b in linked if b["rule"] == RULE_MOVE}) + 1  # this move included
    update_entry(conn, ctx, entry["id"], Status=UNASSIGNED)
    entry = load_entry(conn, ctx, entry_name)
    note = f"manual: moved from {old['name'] if old is not None else 'the account'} to {invoice_name}"
    return assign(conn, ctx, entry, invoice_name, run=run, score=None, note=note,
                  transaction_no=f"{entry['externaltransactionid']}/{moves + 1}"[:255])


def _reverse_balances(conn: sa.Connection, ctx: Context, entry: dict, paid: list[dict], locked: dict[int, dict],
                      invoice_name: str, *, when: date, run: str) -> None:
    """Step 1 without cash management: a reversing Payment balance per balance."""
    for balance in paid:
        on_invoice = locked.get(balance["invoice"]) if balance["invoice"] is not None else None
        create_balance(conn, ctx, {"account": balance["account"], "invoice": balance["invoice"], "type": "Payment",
                                   "amount": -Decimal(balance["amount"]), "date": when,
                                   "reference": f"{entry['name']} moved to {invoice_name}", "paymententry": entry["id"],
                                   "paymentmethod": balance.get("paymentmethod")},
                       invoice=on_invoice, rule=RULE_MOVE, run=run)
    refresh_invoices(conn, ctx, sorted(locked))
    refresh_accounts(conn, ctx, sorted({int(b["account"]) for b in paid}))


def _reverse_cm_payments(conn: sa.Connection, ctx: Context, entry: dict, paid: list[dict], locked: dict[int, dict],
                         invoice_name: str, *, when: date, run: str, where: Where) -> None:
    """Step 1 with cash management: each CM payment behind the line's
    balances (one per invoice it paid, and a free excess) reversed with its
    entry items."""
    flows: dict[tuple, list[dict]] = {}
    for balance in paid:
        if balance.get("origin") != ORIGIN:
            raise BankAssignmentError(f"{entry['name']}: its payment has no cash-management payment yet", where=where,
                                      hint="run the fix task create-payments-and-migrate-balances first")
        flows.setdefault((balance["invoice"], balance["account"], balance["transactionno"]), []).append(balance)
    for (invoice_id, account, _), balances in flows.items():
        amount = -sum((Decimal(b["amount"]) for b in balances), Decimal(0))
        reversal = CmReversal(amount=amount, when=when, line_id=entry["id"], rule=RULE_MOVE, process=PROCESS_MOVE,
                              text=f"{entry['name']} moved to {invoice_name}")
        reverse_cm_balances(conn, ctx, balances, locked.get(invoice_id) if invoice_id is not None else None,
                            reversal, run=run, where=where, what="its payment", account=int(account))


__all__ = ["PROCESS_MOVE", "RULE_MOVE", "reassign"]
