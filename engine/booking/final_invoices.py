"""A final invoice settles its sub invoices (domain-spec §3.8 step 5, §5.6).

When a final invoice is finalized, the partial and progress invoices it
deducts (and the progress invoices of its project that received nothing,
found by the sub-invoice assignment key) are linked to it. What is still
unpaid on a progress invoice is cleared: a Clearing balance (reason Final
Invoice) settles it, and with bookkeeping on its interim revenue is reversed
by the same amount, on the account the interim revenue was booked on (asked
with the same question, :func:`engine.booking.questions.line_question`).
Runs in the final invoice's own transaction (finalization makes it a batch
of its own).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Sequence

import sqlalchemy as sa

from engine.domain.batching import chunks
from engine.storage.bulk import RowWriter, fetch_records
from engine.storage.context import Context

from .accounts import AccountResolver
from .errors import BookingError, FinalizeError
from .invoices import common_fields, copied_fields, custom_values, debtor_of
from .postings import Booking, BookingSet, debit_credit_flag
from .questions import clearing_line, line_question
from .write import load_account, write_bookings

_IN_CHUNK = 900  # ids per IN (...) list: below every backend's parameter limit


def settle_sub_invoices(conn: sa.Connection, ctx: Context, invoice: dict, when: date) -> None:
    """Link the deducted sub invoices to the final invoice, and clear what is
    still unpaid on its progress invoices: a Clearing balance (reason Final
    Invoice) settles the sub invoice, and its interim revenue is reversed by
    the same amount."""
    invoice_table = ctx.table("Invoice")
    line_table = ctx.table("InvoiceLineItem")
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
    book = ctx.settings.create_bookkeeping_data
    for sub in conn.execute(sa.select(invoice_table).where(invoice_table.c.id.in_(sub_ids))).mappings().all():
        open_amount = sub["balance"] or Decimal("0.00")
        if sub["type"] != "Progress" or open_amount <= 0:
            continue
        RowWriter(conn, ctx.obj("Balance")).insert([{
            "account": sub["account"], "invoice": sub["id"], "relatedinvoice": invoice["id"], "type": "Clearing",
            "clearingreason": "Final Invoice", "amount": -open_amount, "date": when,
            "currencyisocode": sub.get("currencyisocode"), "confighash": ctx.config_hash,
        }])
        conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sub["id"])
                     .values(balance=Decimal("0.00"), status="Paid", paymentdate=when))
        if book:
            _reverse_interim_revenue(conn, ctx, dict(sub), open_amount, when, invoice)


def _lines_of(conn: sa.Connection, ctx: Context, ids: Sequence[int]) -> dict[int, list[dict]]:
    """The lines of the given invoices, one by one, per invoice in line order."""
    line_table = ctx.table("InvoiceLineItem")
    grouped: dict[int, list[dict]] = {}
    for chunk in chunks(ids, _IN_CHUNK):
        query = (sa.select(line_table).where(line_table.c.invoice.in_(chunk))
                 .order_by(line_table.c.invoice, line_table.c.sequence, line_table.c.id))
        for line in fetch_records(conn, query):
            grouped.setdefault(line["invoice"], []).append(line)
    return grouped


def _reverse_interim_revenue(conn: sa.Connection, ctx: Context, sub: dict, amount: Decimal, when: date,
                             final: dict) -> None:
    """The Interim Revenue booking of ``-amount`` on the progress invoice
    ``sub``, with the tax values of its :func:`clearing_line`."""
    account = load_account(conn, ctx, sub["account"], when)
    debtor = debtor_of(sub, account)
    taxed = clearing_line(_lines_of(conn, ctx, [sub["id"]]).get(sub["id"], []))
    try:
        choice = ctx.service(AccountResolver).required_collective("Interim Revenue", line_question(sub, taxed), sub)
    except BookingError as error:
        raise FinalizeError(str(error), where=error.where, hint=error.hint) from None
    fields = {
        **common_fields(sub, account, str(debtor), {"run": "", "confighash": ctx.config_hash}),
        "type": "Interim Revenue", "amount": -amount, "accountno": choice.account, "contraaccountno": choice.contra,
        "accountrule": choice.rule, "taxcode": taxed.get("taxcode"), "taxrate": taxed.get("taxrate"),
        "appliedtaxrule": taxed.get("appliedtaxrule"), "isgross": True, "bookingdate": when,
        "invoicelineitems": f"cleared by final invoice {final.get('name')}",
        **dict(custom_values(copied_fields(ctx), sub, None)),
    }
    fields["debitcredit"] = debit_credit_flag(fields)
    write_bookings(conn, ctx, [BookingSet((Booking(fields, choice),))])
