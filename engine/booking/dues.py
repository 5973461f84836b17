"""What is due on an invoice with a payment plan (domain-spec §4.9).

An invoice's installments (object Installment: due date, amount, open
amount) are created at finalization or by a payment plan change
(:mod:`engine.cash.plans`, :mod:`engine.cash.cm_plans`); afterwards their
open amounts follow the invoice's balances, with or without cash
management: what is settled on the invoice (grand total − balance: payments,
write-offs, assigned free balances, clearings) pays the installments in
their order (the deposit installment first, then by sequence), and the
invoice's ``NextPaymentDue`` / ``NextPaymentDueDate`` name the first
installment with something open (empty when nothing is open or there is no
plan). SEPA direct debits collect the installments that are due
(:mod:`engine.exports.sepa_selection`), never the whole open amount.

:func:`refresh_installments` recomputes all of that set-based from the
Balance sums; :func:`engine.booking.balances.refresh_invoices` calls it, so
every process that moves money keeps the plan in step. :func:`open_amounts`
is the pure rule.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

import sqlalchemy as sa

from engine.domain.batching import chunks
from engine.domain.money import ZERO
from engine.storage.bulk import fetch_records, update_by_id
from engine.storage.context import Context


def open_amounts(grand_total: Decimal, balance: Decimal, amounts: Sequence[Decimal]) -> list[Decimal]:
    """The open amount of each installment (``amounts`` in plan order) of an
    invoice of ``grand_total`` whose balance is ``balance`` (pure).

    What is settled (grand total − balance) pays the installments in order;
    for a credit (negative total) the same with the signs turned. Nothing
    settled (or a balance above the total): every installment is open in
    full; everything settled: none is open."""
    sign = Decimal(-1) if grand_total < 0 else Decimal(1)
    settled = (Decimal(grand_total) - Decimal(balance)) * sign
    out = []
    for amount in amounts:
        due = Decimal(amount) * sign
        paid = min(max(settled, ZERO), max(due, ZERO))
        settled -= paid
        out.append((due - paid) * sign)
    return out


def next_due(installments: Sequence[Mapping[str, object]], opened: Sequence[Decimal]) -> tuple[Decimal | None,
                                                                                               date | None]:
    """(NextPaymentDue, NextPaymentDueDate): the first installment with an
    open amount, or (None, None)."""
    for installment, amount in zip(installments, opened):
        if amount != 0:
            return amount, installment["date"]  # type: ignore[return-value]
    return None, None


def plan_order(installments: Iterable[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """Installments in the order they are paid: by sequence, then id."""
    return sorted(installments, key=lambda i: (int(i.get("sequence") or 0), int(i.get("id") or 0)))  # type: ignore[call-overload]


def refresh_installments(conn: sa.Connection, ctx: Context, invoice_ids: Iterable[int]) -> None:
    """Recompute the open amounts of the given invoices' installments and
    their NextPaymentDue / NextPaymentDueDate from the invoices' current
    balances (see the module docstring); writes only what changed."""
    model = ctx.model
    if model.object("Installment") is None:
        return
    ids = sorted({int(i) for i in invoice_ids if i is not None})
    if not ids:
        return
    invoice_table, installment_table = ctx.table("Invoice"), ctx.table("Installment")
    installment_updates: list[tuple[int, tuple]] = []
    invoice_updates: list[tuple[int, tuple]] = []
    for chunk in chunks(ids):
        plans: dict[int, list[dict]] = {}
        for row in fetch_records(conn, sa.select(installment_table).where(installment_table.c.invoice.in_(chunk))):
            plans.setdefault(row["invoice"], []).append(row)
        invoices = conn.execute(
            sa.select(invoice_table.c.id, invoice_table.c.grandtotal, invoice_table.c.balance,
                      invoice_table.c.nextpaymentdue, invoice_table.c.nextpaymentduedate)
            .where(invoice_table.c.id.in_(chunk))).all()
        for invoice in invoices:
            plan = plan_order(plans.get(invoice.id, []))
            opened = open_amounts(invoice.grandtotal or ZERO, invoice.balance or ZERO,
                                  [Decimal(i["amount"]) for i in plan])  # type: ignore[arg-type]
            for installment, amount in zip(plan, opened):
                if installment.get("openpaymentamount") != amount:
                    installment_updates.append((int(installment["id"]), (amount,)))  # type: ignore[call-overload]
            due = next_due(plan, opened)
            if (invoice.nextpaymentdue, invoice.nextpaymentduedate) != due:
                invoice_updates.append((invoice.id, due))
    if installment_updates:
        update_by_id(conn, ctx.obj("Installment"), ["OpenPaymentAmount"], installment_updates)
    if invoice_updates:
        update_by_id(conn, ctx.obj("Invoice"), ["NextPaymentDue", "NextPaymentDueDate"], invoice_updates)


__all__ = ["next_due", "open_amounts", "plan_order", "refresh_installments"]
