"""The sub invoices a final invoice deducts (domain-spec §3.8).

A final invoice of an account and assignment key deducts that account's
Partial, Progress and Deposit invoices of the same key that are not
canceled, settled, or already deducted by another final invoice. This module reads
them, with their lines and the payments received on them, for the pure
builder (:func:`engine.billing.build.deduction_lines`).
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Iterable

import sqlalchemy as sa

from engine.domain.batching import chunks
from engine.storage.context import Context

from .build import DEDUCTED_TYPES, SubInvoice

#: Ids per ``IN (...)`` list.
ID_CHUNK = 500
#: Balance types that are money received on an invoice.
RECEIVED_TYPES = ("Payment", "Prepayment", "Prepaid")


def open_sub_invoices(conn: sa.Connection, ctx: Context,
                      assignment_keys: Iterable[str]) -> dict[tuple[int, str], list[SubInvoice]]:
    """The deductible sub invoices of the given assignment keys, by
    (account id, assignment key), in id order."""
    keys = sorted(set(assignment_keys))
    if not keys:
        return {}
    invoice = ctx.table("Invoice")
    line = ctx.table("InvoiceLineItem")
    rows = conn.execute(
        sa.select(invoice.c.id, invoice.c.name, invoice.c.type, invoice.c.status, invoice.c.grandtotal,
                  invoice.c.account, invoice.c.subinvoiceassignmentkey)
        .where(invoice.c.subinvoiceassignmentkey.in_(keys))
        .where(invoice.c.type.in_(DEDUCTED_TYPES))
        .where(invoice.c.status.not_in(("Canceled", "Settled")))
        .where(invoice.c.finalinvoice.is_(None))
        .order_by(invoice.c.id)
    ).all()
    if not rows:
        return {}
    ids = [r.id for r in rows]
    line_rows: dict[int, list[dict]] = defaultdict(list)
    for chunk in chunks(ids, ID_CHUNK):
        query = sa.select(line).where(line.c.invoice.in_(chunk)).order_by(line.c.sequence, line.c.id)
        for row in conn.execute(query).mappings():
            line_rows[row["invoice"]].append(dict(row))
    received: dict[int, Decimal] = defaultdict(Decimal)
    balance_obj = ctx.model.object("Balance")
    if balance_obj is not None:
        balance = ctx.metadata.tables[balance_obj.table_name]
        for chunk in chunks(ids, ID_CHUNK):
            for row in conn.execute(
                sa.select(balance.c.invoice, balance.c.amount)
                .where(balance.c.invoice.in_(chunk))
                .where(balance.c.type.in_(RECEIVED_TYPES))
            ):
                received[row.invoice] -= row.amount or Decimal(0)
    found: dict[tuple[int, str], list[SubInvoice]] = defaultdict(list)
    for r in rows:
        found[(r.account, r.subinvoiceassignmentkey)].append(
            SubInvoice(r.id, r.name, r.type, r.status, r.grandtotal or Decimal(0), received[r.id], line_rows[r.id])
        )
    return found
