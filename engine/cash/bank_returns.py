"""Returned collections with cash management on, and the return fee charged
to the customer (issue 18, gaps 1 and 2).

**The reversal with cash management.** A collection assigned from a bank
statement became, with the integration on, a CM payment (``Payment``,
End-to-End Id = the balance's TransactionNo) whose parts settled the
invoice's entries through entry items (:mod:`.cm_payments`). Its return
(camt.054 / camt.053 return) is reversed in the same terms:

* a positive ``Payment`` balance of the returned amount on the invoice,
  booked through the collective accounts like the payment the other way
  round (:func:`engine.booking.balances.create_balance`), marked JPAY1 with
  the CM payment's End-to-End Id, so the payment's amount (−Σ of its JPAY1
  balances, :func:`.cm_payments.refresh_payments`) drops by what came back;
  a payment whose amount is zero then is ``Reversed``;
* one reversing entry item per entry item of the returned payment on that
  invoice (latest due first, up to the returned amount), each with its own
  part of the return balance (:func:`.cm_core.write_moves`: one balance per
  entry item, §8.4), so the entries they settled are open again with their
  outstanding amount restored;
* the line is assigned to the invoice as a return, which is what makes the
  mandate unused again after a returned first collection
  (``engine.exports.sepa_selection.used_mandates``): the next collection is
  FRST.

The payment reversed is the one registered from the statement line with
the same end-to-end id and amount; for a collection registered by hand (or
by a CSV import) the bank's data name only the invoice, so it is the
invoice's one CM payment of exactly the returned amount that is not
reversed yet (:func:`hand_registered_balances`). When the invoice has
several such payments, or none, the return waits for review: guessing would
reopen the wrong payment.

**The return fee.** The bank's charge of a return (``ChargebackFee``) is
charged to the customer when ``GlobalSettings.ChargeReturnFees`` is on: a
``Dunning Fee`` balance with ClearingReason ``Return Fee`` of the fee on the
customer's account (free: no invoice, the returned invoice as
``RelatedInvoice``), booked against the collective account of type Dunning
Fee that matches that clearing reason (validate-config, E265, checks one
exists); with cash management on, also an open item for it: an ``Entry`` of
statement type ``Fee`` without invoice. The fee is owed on the account, not
added to the invoice, so the invoice's entries and its next collection stay
exactly what was invoiced (docs: decisions of issue 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import create_balance, refresh_accounts, refresh_invoices
from engine.domain.errors import Where
from engine.domain.money import ZERO
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .cm_core import ORIGIN, Move, payments_by_reference, refresh_entries, select_in, write_moves
from .cm_payments import refresh_payments
from .errors import BankAssignmentError

FEE_TYPE = "Dunning Fee"
FEE_REASON = "Return Fee"
FEE_STATEMENT = "Fee"
RULE_FEE = "bank return fee"
PROCESS_RETURN = "Payment return"


def charges_fees(ctx: Context) -> bool:
    """GlobalSettings.ChargeReturnFees (off when the org has no such field)."""
    return ctx.settings.charge_return_fees


def returned_balances(conn: sa.Connection, ctx: Context, original_line: str, invoice_id: int) -> list[dict]:
    """The CM balances (JPAY1) on ``invoice_id`` that the statement line named
    ``original_line`` paid, with their entry items (newest first)."""
    entries = ctx.table("PaymentEntry")
    line_id = conn.execute(sa.select(entries.c.id).where(entries.c.name == original_line)).scalar()
    if line_id is None:
        return []
    b = ctx.table("Balance")
    rows = select_in(conn, ctx, "Balance", "paymententry", [line_id], b.c.origin == ORIGIN,
                     b.c.invoice == invoice_id, b.c.type == "Payment", order=("date", "id"))
    return sorted(rows, key=lambda r: r["id"], reverse=True)


def hand_registered_balances(conn: sa.Connection, ctx: Context, invoice_id: int, amount: Decimal) -> list[dict] | None:
    """The JPAY1 Payment balances on ``invoice_id`` of its one CM payment
    (status Final) of exactly ``amount`` that no statement line registered;
    None when there is no such payment or more than one."""
    b = ctx.table("Balance")
    rows = select_in(conn, ctx, "Balance", "invoice", [invoice_id], b.c.origin == ORIGIN, b.c.type == "Payment",
                     b.c.paymententry.is_(None), b.c.transactionno.is_not(None), order=("date", "id"))
    flows: dict[str, list[dict]] = {}
    for row in rows:
        flows.setdefault(str(row["transactionno"]), []).append(row)
    payments = payments_by_reference(conn, ctx, list(flows))
    fitting = [reference for reference, payment in payments.items()
               if payment.get("status") == "Final" and Decimal(payment["amount"] or 0) == amount
               and -sum((Decimal(r["amount"]) for r in flows[reference]), ZERO) == amount]
    if len(fitting) != 1:
        return None
    return sorted(flows[fitting[0]], key=lambda r: r["id"], reverse=True)


def reverse_cm_payment(conn: sa.Connection, ctx: Context, row: dict, invoice: dict, original_line: str,
                       paid: list[dict], *, run: str) -> str:
    """Reverse the CM payment whose balances ``paid`` (on ``invoice``) the
    returned line ``row`` takes back (see the module docstring); returns the note."""
    amount = Decimal(row["debit"] or 0)
    reversal = CmReversal(amount=amount, when=row["bookingdate"], line_id=row["id"],
                          text=f"return {row['returnreason'] or ''} of {original_line}".replace("  ", " "),
                          rule=f"bank return {row['returnreason'] or ''}".strip(), process=PROCESS_RETURN)
    reference, items = reverse_cm_balances(conn, ctx, paid, invoice, reversal, run=run,
                                           where=Where(object="PaymentEntry", record=str(row["name"])),
                                           what=f"the payment of {original_line}")
    return (f"return ({row['returnreason'] or 'no reason'}) of {original_line} on {invoice['name']}: {amount} "
            f"reopened; payment {reference} reversed by {items} entry item(s)")


@dataclass(frozen=True)
class CmReversal:
    """What reverses (part of) a CM payment: ``amount`` (> 0) back on the
    invoice or account, dated ``when``, linked to statement line
    ``line_id``, with its reference text, booking rule and the business
    process of the reversing entry items."""

    amount: Decimal
    when: object
    line_id: int
    text: str
    rule: str
    process: str


def reverse_cm_balances(conn: sa.Connection, ctx: Context, paid: list[dict], invoice: dict | None,
                        reversal: CmReversal, *, run: str, where: Where, what: str,
                        account: int | None = None) -> tuple[str, int]:
    """Take ``reversal.amount`` of the CM payment behind the JPAY1 balances
    ``paid`` back (a bank return, a payment moved to another invoice): one
    positive Payment balance on ``invoice`` (or, None, free on ``account``)
    with the payment's End-to-End Id, booked like any payment the other way
    round; reversing entry items for the entry items of ``paid`` (latest due
    first), so the entries they settled are open again; the payment's amount
    recomputed, ``Reversed`` at zero. Returns (End-to-End Id, entry items
    reversed)."""
    reference = next((b["transactionno"] for b in paid if b.get("transactionno")), None)
    payments = payments_by_reference(conn, ctx, [reference]) if reference else {}
    if reference is None or reference not in payments:
        raise BankAssignmentError(f"{where.record}: {what} has no cash-management payment to reverse", where=where,
                                  hint="run the fix task create-payments-and-migrate-balances, then settle by hand")
    on_account = invoice["account"] if invoice is not None else account
    try:
        back = create_balance(conn, ctx, {"account": on_account, "invoice": invoice["id"] if invoice else None,
                                          "type": "Payment", "amount": reversal.amount, "date": reversal.when,
                                          "reference": reversal.text[:255], "transactionno": reference,
                                          "origin": ORIGIN, "paymententry": reversal.line_id,
                                          "paymentmethod": "Bank Transfer"},
                              invoice=invoice, rule=reversal.rule, run=run)
    except Exception as error:  # BalanceError: a date or amount the books refuse
        raise BankAssignmentError(f"{where.record}: the reversal cannot be booked: {error}", where=where) from None
    items = select_in(conn, ctx, "EntryItem", "id", [b["entryitem"] for b in paid if b.get("entryitem")])
    by_id = {e["id"]: e for e in select_in(conn, ctx, "Entry", "id", [i["entry"] for i in items])}
    moves, rest = [], reversal.amount
    for item in sorted(items, key=lambda i: (by_id[i["entry"]]["duedate"], i["id"]), reverse=True):
        if rest <= 0:
            break
        part = min(rest, -Decimal(item["amount"]))
        if part > 0:
            moves.append(Move(back, by_id[item["entry"]], part))
            rest -= part
    if rest > 0 and moves:  # more than the entry items hold: the last entry takes it
        moves[-1].amount += rest
    write_moves(conn, ctx, moves, reversal.process, run, payments)
    refresh_payments(conn, ctx, [reference])
    payment = payments_by_reference(conn, ctx, [reference])[reference]
    if Decimal(payment["amount"] or 0) == ZERO and payment.get("status") != "Reversed":
        update_by_id(conn, ctx.obj("Payment"), ["Status"], [(payment["id"], ("Reversed",))])
    if invoice is not None:
        refresh_entries(conn, ctx, [invoice["id"]])
        refresh_invoices(conn, ctx, [invoice["id"]])
    refresh_accounts(conn, ctx, [on_account])
    return reference, len(moves)


def charge_fee(conn: sa.Connection, ctx: Context, row: dict, invoice: dict, *, run: str) -> Decimal:
    """Charge the line's bank fee to the invoice's customer (see the module
    docstring); returns the fee charged (zero: none, or charging is off)."""
    fee = Decimal(row["chargebackfee"] or 0)
    if fee <= 0 or not charges_fees(ctx):
        return ZERO
    where = Where(object="PaymentEntry", record=str(row["name"]))
    try:
        create_balance(conn, ctx, {"account": invoice["account"], "type": FEE_TYPE, "amount": fee,
                                   "clearingreason": FEE_REASON, "relatedinvoice": invoice["id"],
                                   "date": row["bookingdate"], "paymententry": row["id"],
                                   "currencyisocode": invoice.get("currencyisocode"),
                                   "businessentity": invoice.get("businessentity"),
                                   "reference": f"return fee {row['returnreason'] or ''} of {invoice['name']}"
                                                .replace("  ", " ")},
                       invoice=None, rule=RULE_FEE, run=run)
    except Exception as error:  # BalanceError/BookingError: no collective account for the fee
        raise BankAssignmentError(f"{row['name']}: the return fee {fee} cannot be charged: {error}", where=where,
                                  hint="add a CollectiveAccount of Type 'Dunning Fee' (ClearingReason 'Return Fee'), "
                                       "or set GlobalSettings.ChargeReturnFees to false") from None
    if ctx.settings.cash_management_integration:
        fee_entry(conn, ctx, row, invoice, fee, run=run)
    refresh_accounts(conn, ctx, [invoice["account"]])
    return fee


def fee_entry(conn: sa.Connection, ctx: Context, row: dict, invoice: dict, fee: Decimal, *, run: str) -> None:
    """The open item of a charged return fee in cash management: an Entry
    without invoice (so the invoice's own entries stay its statement), keyed
    by the returned line (once per line)."""
    number = f"{invoice['name']}/fee/{row['name']}"
    RowWriter(conn, ctx.obj("Entry")).insert([{
        "account": invoice["account"], "accountname": (invoice.get("accountname") or None),
        "businessentity": invoice.get("businessentity"), "currencyisocode": invoice.get("currencyisocode"),
        "type": "Debit", "bptype": "Debtor", "status": "Open", "openamount": fee, "amount": fee,
        "duedate": row["bookingdate"], "statementtype": FEE_STATEMENT, "statementno": number[:80],
        "statementdate": row["bookingdate"], "paymentreference": str(invoice["name"])[:140],
        "title": f"Return fee of {invoice['name']} ({row['returnreason'] or 'no reason'})"[:255],
        "assignmentkey": f"fee:{row['name']}", "run": run[:64], "confighash": ctx.config_hash}])


__all__ = ["CmReversal", "FEE_REASON", "FEE_STATEMENT", "FEE_TYPE", "charge_fee", "charges_fees", "fee_entry",
           "hand_registered_balances", "returned_balances", "reverse_cm_balances", "reverse_cm_payment"]
