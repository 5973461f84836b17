"""Entry settlement and reduction: an invoice offset against a credit, and
partial credits (domain-spec §8.1, §8.5; seed 000 "invoice/credit offset →
entry settlement", "partial credit → entry reduction").

:func:`settle_invoices` offsets a receivable invoice against a credit of the
same account: cross-linked reductions on both sides' entries (reason Entry
Settlement, the debit side negative, the credit side positive), and on the
billing side a ``Settlement`` balance on each invoice (``RelatedInvoice`` =
the counterpart, ``Origin`` JPAY1), so both invoice balances follow while
the account balance does not move. The amount is at most what the debit
entries still have open and what the credit entries still owe (§8.5).

:func:`create_partial_credit` makes a draft credit (type ``Credit``,
``RelatedInvoice`` = the invoice) for some of the invoice's lines, each
mirrored with negated amounts. Finalizing it with the integration on (the
entries stage, :mod:`engine.cash.entries`) reduces the invoice's entries by
the credit (reason Partial Credit) as far as they are open; a credit larger
than that keeps the rest as a credit entry of its own.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import BalanceError, create_balance, refresh_accounts, refresh_invoices
from engine.booking.cancel import NOT_COPIED, mirrored_lines
from engine.domain.money import CENT, ZERO
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .cm_core import ORIGIN, enabled, invoice_where, live_entries, locked_invoice, refresh_entries, spread
from .errors import CashManagementError

RULE_OFFSET = "cash management: entry settlement"
RULE_PARTIAL_CREDIT = "cash management: partial credit"


def settle_invoices(conn: sa.Connection, ctx: Context, debit_name: str, credit_name: str,
                    amount: Decimal | None, when: date, *, rule: str = RULE_OFFSET,
                    reason: str = "Entry Settlement") -> Decimal:
    """Offset invoice ``debit_name`` against credit ``credit_name`` (see the
    module docstring); returns the amount settled."""
    if not enabled(ctx):
        raise CashManagementError("the cash-management integration is off (GlobalSettings.EnableCashManagementIntegration)",
                                  hint="entry settlement offsets cash-management entries; switch the integration on "
                                       "in custom_settings/GlobalSettings.yaml")
    debit, credit = locked_invoice(conn, ctx, debit_name), locked_invoice(conn, ctx, credit_name)
    return settle(conn, ctx, debit, credit, amount, when, rule=rule, reason=reason)


def settle(conn: sa.Connection, ctx: Context, debit: dict, credit: dict, amount: Decimal | None, when: date,
           *, rule: str, reason: str) -> Decimal:
    """The settlement itself, for two invoice rows (locked by the caller)."""
    for invoice in (debit, credit):
        if invoice["status"] not in ("Open", "Paid"):
            raise CashManagementError(f"{invoice['name']} is {invoice['status']}: only Open invoices can be settled",
                                      where=invoice_where(invoice["name"]))
    if debit["account"] != credit["account"]:
        raise CashManagementError(f"{debit['name']} and {credit['name']} belong to different accounts",
                                  where=invoice_where(credit["name"]))
    if debit.get("currencyisocode") != credit.get("currencyisocode"):
        raise CashManagementError(f"{debit['name']} and {credit['name']} are in different currencies",
                                  where=invoice_where(credit["name"]))
    entries = live_entries(conn, ctx, [debit["id"], credit["id"]])
    receivable = sum((e["amount"] for e in entries.get(debit["id"], []) if e["amount"] > 0), ZERO)
    payable = -sum((e["amount"] for e in entries.get(credit["id"], []) if e["amount"] < 0), ZERO)
    if receivable <= 0:
        raise CashManagementError(f"{debit['name']} has no open receivable entry", where=invoice_where(debit["name"]))
    if payable <= 0:
        raise CashManagementError(f"{credit['name']} has no open credit entry", where=invoice_where(credit["name"]))
    limit = min(receivable, payable)
    if amount is None:
        amount = limit
    if not isinstance(amount, Decimal) or amount <= 0 or amount.quantize(CENT) != amount:
        raise CashManagementError(f"the settlement amount must be positive with at most two decimals, got {amount}")
    if amount > limit:
        raise CashManagementError(f"the settlement amount {amount} exceeds what {debit['name']} has open ({receivable}) "
                                  f"or {credit['name']} owes ({payable})")
    try:
        on_debit = create_balance(conn, ctx, {
            "account": debit["account"], "invoice": debit["id"], "relatedinvoice": credit["id"], "type": "Settlement",
            "amount": -amount, "date": when, "origin": ORIGIN}, invoice=debit, rule=rule, run="entry settlement")
        on_credit = create_balance(conn, ctx, {
            "account": credit["account"], "invoice": credit["id"], "relatedinvoice": debit["id"], "type": "Settlement",
            "amount": amount, "date": when, "origin": ORIGIN}, invoice=credit, rule=rule, run="entry settlement")
    except BalanceError as error:
        raise CashManagementError(str(error), where=invoice_where(debit["name"])) from None
    rows = []
    for balance, own, other in ((on_debit, debit, credit), (on_credit, credit, debit)):
        for entry, part in spread(balance["amount"], [e for e in entries.get(own["id"], [])]):
            rows.append({"entry": entry["id"], "amount": part, "date": when, "reason": reason,
                         "balance": balance["id"], "invoice": credit["id"], "confighash": ctx.config_hash,
                         "description": f"{reason} {own['name']} / {other['name']}"[:255], "_side": own["id"]})
    writer = RowWriter(conn, ctx.obj("Reduction"))
    writer.assign_ids(rows)
    debit_side = [r for r in rows if r["_side"] == debit["id"]]
    credit_side = [r for r in rows if r["_side"] == credit["id"]]
    links = [(r["id"], (credit_side[0]["id"],)) for r in debit_side] + \
            [(r["id"], (debit_side[0]["id"],)) for r in credit_side]
    for row in rows:
        row.pop("_side")
    writer.insert(rows)
    update_by_id(conn, ctx.obj("Reduction"), ["RelatedReduction"], links)  # both rows exist now
    refresh_entries(conn, ctx, [debit["id"], credit["id"]])
    refresh_invoices(conn, ctx, [debit["id"], credit["id"]])
    refresh_accounts(conn, ctx, [debit["account"]])
    return amount


def create_partial_credit(conn: sa.Connection, ctx: Context, invoice_name: str, line_names: list[str],
                          reason: str | None) -> int:
    """A draft partial credit of the named lines of ``invoice_name``; returns its id."""
    lines_t = ctx.table("InvoiceLineItem")
    original = locked_invoice(conn, ctx, invoice_name)
    where = invoice_where(invoice_name)
    if original["status"] not in ("Open", "Paid"):
        raise CashManagementError(f"{invoice_name} is {original['status']}: only Open or Paid invoices can be credited",
                                  where=where)
    if original.get("type") == "Cancelation" or original.get("class") == "Credit":
        raise CashManagementError(f"{invoice_name} is a credit or cancellation: it cannot be credited", where=where)
    lines = [dict(r) for r in conn.execute(sa.select(lines_t).where(lines_t.c.invoice == original["id"])
                                           .order_by(lines_t.c.sequence, lines_t.c.id)).mappings()]
    wanted = list(dict.fromkeys(line_names))
    chosen = [line for line in lines if line["name"] in wanted] if wanted else lines
    unknown = sorted(set(wanted) - {line["name"] for line in lines})
    if unknown:
        raise CashManagementError(f"{invoice_name} has no line(s) {', '.join(unknown)}", where=where)
    if not chosen:
        raise CashManagementError(f"{invoice_name} has no lines to credit", where=where)
    header = {k: v for k, v in original.items() if k not in NOT_COPIED and not k.startswith("cm_")}
    header.update(
        type="Credit", status="Draft", relatedinvoice=original["id"], cancelationreason=reason,
        installmenttype=None, confighash=ctx.config_hash,
        **{"class": "Credit"},
        totalnet=-sum((line["postotalnet"] or ZERO for line in chosen), ZERO),
        totaltax=-sum((line["postotaltax"] or ZERO for line in chosen), ZERO),
        grandtotal=-sum((line["postotalgross"] or ZERO for line in chosen), ZERO),
    )
    writer = RowWriter(conn, ctx.obj("Invoice"))
    writer.assign_ids([header])
    header["name"] = f"DRAFT-{header['id']:06d}"
    writer.insert([header])
    RowWriter(conn, ctx.obj("InvoiceLineItem")).insert(mirrored_lines(chosen, header["id"]))
    return header["id"]


def apply_partial_credits(conn: sa.Connection, ctx: Context, credits: list[dict]) -> int:
    """Finalization: each just-finalized partial credit (type Credit with a
    related Open invoice) reduces that invoice's entries as far as they are
    open. Returns how many credits were applied."""
    applied = 0
    for credit in credits:
        t = ctx.table("Invoice")
        original = conn.execute(sa.select(t).where(t.c.id == credit["relatedinvoice"])).mappings().first()
        if original is None or original["status"] != "Open":
            continue
        entries = live_entries(conn, ctx, [original["id"]]).get(original["id"], [])
        receivable = sum((e["amount"] for e in entries if e["amount"] > 0), ZERO)
        amount = min(receivable, -Decimal(credit.get("grandtotal") or 0))
        if amount <= 0:
            continue
        fresh = conn.execute(sa.select(t).where(t.c.id == credit["id"])).mappings().one()
        settle(conn, ctx, dict(original), dict(fresh), amount, credit.get("date") or date.today(),
               rule=RULE_PARTIAL_CREDIT, reason="Partial Credit")
        applied += 1
    return applied


__all__ = ["settle_invoices", "settle", "create_partial_credit", "apply_partial_credits"]
