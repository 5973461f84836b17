"""CM payments from billing balances (domain-spec §8.4, §8.6).

A money flow on the billing side (a Payment, Prepayment, Prepaid, Refund or
Payout balance, with the parts split off it) is, in cash management, one
*payment* (Payment record, status Final) whose parts settle entries through
*entry items*. Once a balance has a CM payment it is marked ``Origin`` =
JPAY1: cash management owns it, the balance assignment job leaves it alone
(engine.cash.assignment) and this integration assigns it instead.

The link from a balance to its payment is the balance's ``TransactionNo``,
which is the payment's ``EndToEndId`` (§8.4): the transaction number the
balance already had, else one generated as ``JPAY-<payment id>``. A
payment's amount is always −Σ of its JPAY1 balances (money received is
positive), recomputed by :func:`refresh_payments`.

* :func:`record_cash_payment` is called right after a payment registration
  (``engine.cash.payments.register_payment``) with the balance it created;
* :func:`migrate_balances` is the work of the fix task "Create Payments and
  Migrate Balances" and of prepaid entry assignment at finalization.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal
from typing import Iterable

import sqlalchemy as sa

from engine.booking.balances import refresh_accounts
from engine.domain.batching import chunks
from engine.domain.errors import Where
from engine.domain.money import ZERO
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .cm_core import MONEY_TYPES, ORIGIN, PROCESS_REGISTRATION, enabled, mirror_balances, select_in
from .errors import MigrationError

END_TO_END_LENGTH = 35


def _flow_key(balance: dict) -> str:
    """Balances of one money flow: the same transaction number, else the
    same root balance (a split-off part and its original)."""
    if balance.get("transactionno"):
        return f"tx:{balance['transactionno']}"
    return f"root:{balance.get('splitfrom') or balance['id']}"


def migrate_balances(conn: sa.Connection, ctx: Context, balances: list[dict], *, process: str,
                     run: str, one_flow: bool = False) -> tuple[int, int, list[tuple[dict, str]]]:
    """Give every balance (origin empty, a money type) its CM payment, one
    payment per money flow (reused when one with the same End-to-End Id
    exists; ``one_flow``: all balances are one money flow, e.g. a payment
    and its overpayment excess), mark them JPAY1 and link them by
    TransactionNo. Returns
    (payments created, balances migrated, refused (balance, message)).
    Entry items follow with :func:`engine.cash.cm_core.mirror_balances`."""
    refused: list[tuple[dict, str]] = []
    flows: dict[str, list[dict]] = defaultdict(list)
    for balance in balances:
        if balance.get("origin") == ORIGIN or balance.get("type") not in MONEY_TYPES:
            continue
        reference = balance.get("transactionno")
        if reference and len(str(reference)) > END_TO_END_LENGTH:
            refused.append((balance, f"balance {balance.get('name')}: transaction no. {reference!r} is longer "
                                     f"than the {END_TO_END_LENGTH} characters of an End-to-End Id"))
            continue
        flows["one" if one_flow else _flow_key(balance)].append(balance)
    if not flows:
        return 0, 0, refused
    existing = {p["endtoendid"]: p for p in select_in(
        conn, ctx, "Payment", "endtoendid", [b[0]["transactionno"] for b in flows.values() if b[0].get("transactionno")])}
    writer = RowWriter(conn, ctx.obj("Payment"))
    new_payments: list[dict] = []
    updates: list[tuple[int, tuple]] = []
    for group in flows.values():
        first = min(group, key=lambda b: (b["date"], b["id"]))
        reference = next((b["transactionno"] for b in group if b.get("transactionno")), None)
        if not reference or reference not in existing:
            payment = {
                "account": first["account"], "amount": -sum((b["amount"] for b in group), ZERO),
                "currencyisocode": first.get("currencyisocode"), "date": first["date"], "status": "Final",
                "paymentmethod": first.get("paymentmethod"), "paymentprovider": first.get("paymentprovider"),
                "bankaccount": (str(first["bankaccountid"])[:34] if first.get("bankaccountid") else None),
                "businessentity": first.get("businessentity"), "reference": first.get("reference"),
                "origin": process[:40], "balance": first["id"], "confighash": ctx.config_hash,
            }
            writer.assign_ids([payment])
            payment["endtoendid"] = reference or f"JPAY-{payment['id']}"
            new_payments.append(payment)
            existing[payment["endtoendid"]] = payment
            reference = payment["endtoendid"]
        for balance in group:
            balance.update(origin=ORIGIN, transactionno=reference)
            updates.append((balance["id"], (ORIGIN, reference)))
    writer.insert(new_payments)
    update_by_id(conn, ctx.obj("Balance"), ["Origin", "TransactionNo"], updates)
    refresh_payments(conn, ctx, [p for p in existing])
    return len(new_payments), len(updates), refused


def refresh_payments(conn: sa.Connection, ctx: Context, references: Iterable[str]) -> None:
    """Payment.Amount = −Σ of its JPAY1 balances (by End-to-End Id)."""
    refs = sorted({r for r in references if r})
    if not refs:
        return
    b = ctx.table("Balance")
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for chunk in chunks(refs, 900):
        for row in conn.execute(sa.select(b.c.transactionno, b.c.amount).where(
                b.c.transactionno.in_(chunk), b.c.origin == ORIGIN)):
            sums[row.transactionno] += row.amount
    payments = select_in(conn, ctx, "Payment", "endtoendid", refs)
    update_by_id(conn, ctx.obj("Payment"), ["Amount"],
                 [(p["id"], (-sums[p["endtoendid"]],)) for p in payments if p["amount"] != -sums[p["endtoendid"]]])


def record_cash_payment(conn: sa.Connection, ctx: Context, invoice: dict | None, balance: dict,
                        amount: Decimal, when: date, *, free: dict | None = None) -> dict | None:
    """After a payment registration: the CM payment of ``amount`` (status
    Final), ``balance`` (the one registered on the invoice, or the free one)
    and the free excess ``free`` (overpayment split) marked JPAY1, and the
    invoice's entries settled by entry items (installments oldest due first).
    Does nothing when the integration is off or the balance is a CM balance
    already (calling it twice records nothing twice). Returns the payment."""
    if not enabled(ctx):
        return None
    ids = [b["id"] for b in (balance, free) if b is not None]
    rows = {r["id"]: r for r in select_in(conn, ctx, "Balance", "id", ids)}
    targets = [rows[i] for i in dict.fromkeys(ids) if i in rows]
    if not targets or all(r.get("origin") == ORIGIN for r in targets):
        reference = targets[0].get("transactionno") if targets else None
        found = select_in(conn, ctx, "Payment", "endtoendid", [reference]) if reference else []
        return found[0] if found else None
    created, _, refused = migrate_balances(conn, ctx, [r for r in targets if r.get("origin") != ORIGIN],
                                           process=PROCESS_REGISTRATION, run="payment register", one_flow=True)
    if refused:
        balance_name = refused[0][0].get("name")
        raise MigrationError(refused[0][1], where=Where(object="Balance", record=balance_name),
                             hint=f"a transaction number of at most {END_TO_END_LENGTH} characters can become "
                                  "the payment's End-to-End Id")
    reference = targets[0]["transactionno"]
    payment = select_in(conn, ctx, "Payment", "endtoendid", [reference])[0]
    if payment["date"] != when:
        update_by_id(conn, ctx.obj("Payment"), ["Date"], [(payment["id"], (when,))])
        payment["date"] = when
    invoice_ids = {r["invoice"] for r in targets if r.get("invoice") is not None}
    if invoice is not None and invoice.get("id") is not None:
        invoice_ids.add(invoice["id"])
    mirror_balances(conn, ctx, invoice_ids, when, process=PROCESS_REGISTRATION, run="payment register")
    refresh_accounts(conn, ctx, {r["account"] for r in targets})
    for target, original in ((rows.get(balance["id"]), balance), (rows.get(free["id"]) if free else None, free)):
        if target is not None and original is not None:
            original.update(origin=ORIGIN, transactionno=target["transactionno"])
    return payment


def unmigrated_balances(conn: sa.Connection, ctx: Context, *, invoice_ids: list[int] | None,
                        include_free: bool) -> list[dict]:
    """Money balances without Origin: on the given invoices (all invoices
    with None) and, with ``include_free``, the free ones (no invoice)."""
    b = ctx.table("Balance")
    base = [sa.or_(b.c.origin.is_(None), b.c.origin != ORIGIN), b.c.type.in_(MONEY_TYPES),
            sa.or_(b.c.draft.is_(None), b.c.draft == sa.false())]
    if invoice_ids is not None:
        rows = select_in(conn, ctx, "Balance", "invoice", invoice_ids, *base, order=("date", "id"))
    else:
        rows = [dict(r) for r in conn.execute(sa.select(b).where(*base, b.c.invoice.is_not(None))
                                              .order_by(b.c.date, b.c.id)).mappings()]
    if include_free:
        rows += [dict(r) for r in conn.execute(sa.select(b).where(*base, b.c.invoice.is_(None))
                                               .order_by(b.c.date, b.c.id)).mappings()]
    return rows


__all__ = ["record_cash_payment", "migrate_balances", "refresh_payments", "unmigrated_balances",
           "MigrationError"]
