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
    booked = interim_receipts(conn, ctx, [r.id for r in rows if r.type in ("Progress", "Deposit")])
    found: dict[tuple[int, str], list[SubInvoice]] = defaultdict(list)
    for r in rows:
        gross, tax = booked.get(r.id, ({}, {}))
        found[(r.account, r.subinvoiceassignmentkey)].append(
            SubInvoice(r.id, r.name, r.type, r.status, r.grandtotal or Decimal(0), received[r.id], line_rows[r.id],
                       gross, tax)
        )
    return found


#: Booking types in which a payment on a progress or deposit invoice books
#: what it received (net and the tax arising on receipt).
INTERIM_RECEIPT_TYPES = ("Interim Payment", "Interim Tax")


def interim_receipts(conn: sa.Connection, ctx: Context,
                     ids: Iterable[int]) -> dict[int, tuple[dict[tuple, Decimal], dict[tuple, Decimal]]]:
    """What the interim bookings of the payments on the given invoices
    received, per invoice and (tax code, rate, rule): (gross = Interim
    Payment + Interim Tax, the Interim Tax part). These are the amounts the
    interim accounts hold: what the final invoice deducts, and what a
    further payment's interim tax is rounded with (the one query of them)."""
    detail_obj = ctx.model.object("BookingDetail")
    ids = sorted({int(i) for i in ids})
    if detail_obj is None or not ids:
        return {}
    detail = ctx.metadata.tables[detail_obj.table_name]
    found: dict[int, tuple[dict[tuple, Decimal], dict[tuple, Decimal]]] = {}
    for chunk in chunks(ids, ID_CHUNK):
        query = (sa.select(detail.c.invoice, detail.c.taxcode, detail.c.taxrate, detail.c.appliedtaxrule,
                           detail.c.type, detail.c.amount)
                 .where(detail.c.invoice.in_(chunk), detail.c.balance.is_not(None),
                        detail.c.type.in_(INTERIM_RECEIPT_TYPES)))
        for row in conn.execute(query):
            key = (row.taxcode, Decimal(row.taxrate or 0), row.appliedtaxrule)
            gross, tax = found.setdefault(row.invoice, ({}, {}))
            amount = Decimal(row.amount)
            gross[key] = gross.get(key, Decimal(0)) + amount
            if row.type == "Interim Tax":
                tax[key] = tax.get(key, Decimal(0)) + amount
    return found
