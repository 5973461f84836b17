"""Cancellation: a finalized invoice is never changed, it is cancelled.

:func:`create_cancellation` makes a draft cancellation invoice (type
``Cancelation``, the opposite class, every line mirrored with the negated
unit price and amounts, ``RelatedInvoice`` = the original). Finalizing it
(:func:`finalize_cancellation`, called by the finalization step) completes the
cancellation in the same transaction (domain-spec §4.8):

1. payments on the original are unlinked and become free account balances;
2. Clearing balances bring both invoices to zero without touching the
   account balance (original -G, cancellation +G);
3. the original becomes ``Canceled`` (``CanceledWith`` = the cancellation),
   the cancellation ``Settled``;
4. the source records billed by the original are released (their
   ``ON_Invoice<sfx>`` cleared, billing claims removed) for the next run, and
   the sub invoices of a cancelled final invoice are unlinked from it;
5. every booking detail of the original is reversed: same accounts, negated
   amount, booked on the cancellation date, ``ReversalOf`` the original.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from engine.billing.drafts import invoice_backrefs
from engine.storage.bulk import RowWriter
from engine.storage.context import Context
from engine.storage.schema import CLAIM

from .balances import refresh_invoices
from .dues import refresh_installments
from .errors import CancelError, invoice_where
from .final_invoices import deducting_final_invoice
from .postings import Booking, BookingSet, debit_credit_flag
from .write import write_bookings

# Header fields that describe the invoice rather than its own state or history.
NOT_COPIED = {
    "id", "name", "createddate", "lastmodifieddate", "status", "class", "type", "date", "paymentduedate",
    "paymentdate", "balance", "balancedifference", "nextpaymentdue", "nextpaymentduedate", "relatedinvoice",
    "canceledwith", "cancelationreason", "finalinvoice", "exported", "timesexported", "pdf", "invoicerun",
    "sepapaymenterror", "totalnet", "totaltax", "grandtotal", "confighash", "documenthash", "issuedfingerprint",
}
_NEGATED_LINE_FIELDS = ("unitprice", "unitpricenet", "postotalnet", "postotaltax", "postotalgross")


def _locked_original(conn: sa.Connection, ctx: Context, invoice_name: str) -> dict:
    """The invoice to cancel, row-locked (``FOR UPDATE`` on PostgreSQL;
    SQLite's write transaction holds the database): a concurrent
    cancellation or payment of the same invoice waits for this transaction,
    and under REPEATABLE READ then fails with a serialization failure and is
    run again (:func:`engine.storage.retry.run_in_transaction`), seeing what
    this one did."""
    invoice_table = ctx.table("Invoice")
    query = sa.select(invoice_table).where(invoice_table.c.name == invoice_name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    original = conn.execute(query).mappings().first()
    if original is None:
        raise CancelError(f"no invoice {invoice_name}", where=invoice_where(invoice_name))
    return dict(original)


def pending_cancellation(conn: sa.Connection, ctx: Context, original_id: int) -> int | None:
    """The id of the original's cancellation draft, when one waits."""
    invoice_table = ctx.table("Invoice")
    return conn.execute(
        sa.select(invoice_table.c.id).where(invoice_table.c.relatedinvoice == original_id)
        .where(invoice_table.c.type == "Cancelation").where(invoice_table.c.status == "Draft")
        .order_by(invoice_table.c.id)
    ).scalar()


def cancellation_draft(conn: sa.Connection, ctx: Context, invoice_name: str, reason: str | None) -> int:
    """The cancellation draft of ``invoice_name`` for ``metabill cancel``:
    the one already waiting (left by ``--draft-only``), else a new one. The
    original is locked first, so two cancellations of one invoice never make
    two drafts."""
    original = _locked_original(conn, ctx, invoice_name)
    if original["status"] in ("Open", "Paid"):
        waiting = pending_cancellation(conn, ctx, original["id"])
        if waiting is not None:
            refuse_deducted_sub_invoice(conn, ctx, original)
            return waiting
    return create_cancellation(conn, ctx, invoice_name, reason, original=original)


def create_cancellation(conn: sa.Connection, ctx: Context, invoice_name: str, reason: str | None, *,
                        original: Mapping[str, Any] | None = None) -> int:
    """The id of a new draft cancellation invoice for ``invoice_name``
    (``original``: its row, already locked by the caller)."""
    invoice_table = ctx.table("Invoice")
    line_table = ctx.table("InvoiceLineItem")
    where = invoice_where(invoice_name)
    if original is None:
        original = _locked_original(conn, ctx, invoice_name)
    if original["status"] not in ("Open", "Paid"):
        raise CancelError(f"{invoice_name} is {original['status']}: only Open or Paid invoices can be cancelled",
                          where=where)
    if original["type"] == "Cancelation":
        raise CancelError(f"{invoice_name} is itself a cancellation; invoice anew instead", where=where)
    refuse_deducted_sub_invoice(conn, ctx, original)
    pending = conn.execute(
        sa.select(invoice_table.c.name).where(invoice_table.c.relatedinvoice == original["id"])
        .where(invoice_table.c.type == "Cancelation")
    ).first()
    if pending is not None:
        raise CancelError(f"{invoice_name} already has the cancellation {pending.name}", where=where,
                          hint=f"finalize or delete the draft {pending.name}")
    header = {k: v for k, v in original.items() if k not in NOT_COPIED}
    header.update(
        type="Cancelation",
        **{"class": "Invoice" if original["class"] == "Credit" else "Credit"},
        status="Draft",
        relatedinvoice=original["id"],
        cancelationreason=reason,
        totalnet=-original["totalnet"],
        totaltax=-original["totaltax"],
        grandtotal=-original["grandtotal"],
        confighash=ctx.config_hash,
    )
    writer = RowWriter(conn, ctx.obj("Invoice"))
    writer.assign_ids([header])
    header["name"] = draft_name(header["id"])
    writer.insert([header])
    originals = conn.execute(sa.select(line_table).where(line_table.c.invoice == original["id"])
                             .order_by(line_table.c.id)).mappings()
    RowWriter(conn, ctx.obj("InvoiceLineItem")).insert(mirrored_lines(originals, header["id"]))
    return header["id"]


def refuse_deducted_sub_invoice(conn: sa.Connection, ctx: Context, original: Mapping[str, Any]) -> None:
    """A sub invoice that a finalized final invoice deducts cannot be
    cancelled on its own: its payments would become free credit while the
    final invoice still deducts them, and its cleared interim revenue would
    never clear again (docs/decisions.md, "cancelling a final invoice")."""
    final = deducting_final_invoice(conn, ctx, original)
    if final is not None:
        name = original.get("name")
        raise CancelError(f"{name} is deducted by the final invoice {final['name']}: cancel the final invoice first",
                          where=invoice_where(name),
                          hint=f"cancel {final['name']} first (that unlinks its sub invoices), then {name}")


def draft_name(draft_id: int) -> str:
    """The name of the cancellation draft with id ``draft_id``."""
    return f"DRAFT-{draft_id:06d}"


def mirrored_lines(lines: Iterable[Mapping[str, Any]], invoice_id: int) -> list[dict]:
    """Copies of invoice lines for a cancellation or credit ``invoice_id``:
    the same lines with negated prices and amounts (new ids and names)."""
    copies = []
    for line in lines:
        copy = {k: v for k, v in line.items() if k not in ("id", "name", "createddate", "lastmodifieddate")}
        copy["invoice"] = invoice_id
        for key in _NEGATED_LINE_FIELDS:
            if copy.get(key) is not None:
                copy[key] = -copy[key]
        copies.append(copy)
    return copies


def finalize_cancellation(conn: sa.Connection, ctx: Context, cancellation: dict, when: date, book: bool) -> None:
    """Complete a cancellation whose draft was just numbered and opened."""
    invoice_table = ctx.table("Invoice")
    balance_table = ctx.table("Balance")
    original = dict(conn.execute(sa.select(invoice_table).where(invoice_table.c.id == cancellation["relatedinvoice"])).mappings().one())
    if original["status"] not in ("Open", "Paid"):
        raise CancelError(f"{original['name']} is {original['status']}: it cannot be cancelled",
                          where=invoice_where(original["name"]))
    refuse_deducted_sub_invoice(conn, ctx, original)
    # 1. Payments on the original become free balances of the account.
    conn.execute(
        sa.update(balance_table).where(balance_table.c.invoice == original["id"])
        .where(balance_table.c.type.in_(("Payment", "Prepayment")))
        .values(invoice=None)
    )
    total = original["grandtotal"] or Decimal("0.00")
    writer = RowWriter(conn, ctx.obj("Balance"))
    clearing = {"type": "Clearing", "date": when, "account": original["account"],
                "currencyisocode": original.get("currencyisocode"), "confighash": ctx.config_hash}
    # 2. Clearing balances: the original's invoice balance +G and the
    # cancellation's -G are each brought to zero (other balances on the
    # original, e.g. write-offs, are cleared with it).
    remaining = sum(
        (r.amount for r in conn.execute(sa.select(balance_table.c.amount).where(balance_table.c.invoice == original["id"]))),
        Decimal("0.00"),
    )
    writer.insert([
        {**clearing, "invoice": original["id"], "relatedinvoice": cancellation["id"], "amount": -remaining},
        {**clearing, "invoice": cancellation["id"], "relatedinvoice": original["id"], "amount": total},
    ])
    # 3. Statuses and links.
    conn.execute(sa.update(invoice_table).where(invoice_table.c.id == original["id"])
                 .values(status="Canceled", canceledwith=cancellation["id"], balance=Decimal("0.00")))
    conn.execute(sa.update(invoice_table).where(invoice_table.c.id == cancellation["id"])
                 .values(status="Settled", balance=Decimal("0.00"), paymentdate=when))
    refresh_installments(conn, ctx, [original["id"]])  # nothing is due on a cancelled invoice
    # A cancelled final invoice gives its sub invoices back to the project: the
    # next final invoice deducts them again (what was cleared stays cleared).
    if original.get("type") == "Final":
        unlinked = [r.id for r in conn.execute(sa.select(invoice_table.c.id)
                                               .where(invoice_table.c.finalinvoice == original["id"]))]
        conn.execute(sa.update(invoice_table).where(invoice_table.c.finalinvoice == original["id"]).values(finalinvoice=None))
        # Its deposit invoices are no longer closed: Open or Paid again, by their balance.
        conn.execute(sa.update(invoice_table).where(invoice_table.c.id.in_(unlinked or [-1]),
                                                    invoice_table.c.status == "Closed").values(status="Paid"))
        refresh_invoices(conn, ctx, unlinked)
    # 4. Release the billed source records.
    for table_name, column in invoice_backrefs(ctx):
        table = ctx.metadata.tables[table_name]
        conn.execute(sa.update(table).where(table.c[column] == original["id"]).values({column: None}))
    conn.execute(sa.delete(CLAIM).where(CLAIM.c.invoice_id == original["id"]))
    # 5. Reverse the original's bookings.
    if book:
        _reverse_bookings(conn, ctx, original, cancellation, when)


def _reverse_bookings(conn: sa.Connection, ctx: Context, original: dict, cancellation: dict, when: date) -> None:
    """Every booking detail of the original (but its payments'), negated on
    the cancellation date: the same accounts, ``ReversalOf`` the original."""
    detail_table = ctx.table("BookingDetail")
    reversals = []
    for detail in conn.execute(
        sa.select(detail_table)
        .where(detail_table.c.invoice == original["id"])
        # Payment bookings stay: the money was received; it became a free
        # balance of the account, and its bookings remain true.
        .where(detail_table.c.balance.is_(None))
        .where(detail_table.c.reversalof.is_(None))
        .order_by(detail_table.c.id)
    ).mappings():
        fields = {k: v for k, v in detail.items() if k not in ("id", "name", "createddate", "lastmodifieddate",
                                                               "bookingperiod", "bookingtext", "exported",
                                                               "exportdestination", "lasterror", "absoluteamount")}
        fields.update(
            amount=-detail["amount"], bookingdate=when, invoice=cancellation["id"], invoiceno=cancellation["name"],
            reversalof=detail["id"], exported=False, confighash=ctx.config_hash,
        )
        fields["debitcredit"] = debit_credit_flag(fields)
        reversals.append(Booking(fields, None))
    write_bookings(conn, ctx, [BookingSet(tuple(reversals))])
