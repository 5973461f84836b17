"""A final invoice settles its sub invoices (domain-spec §3.8 step 5, §5.6).

Before a final invoice draft is numbered, :func:`refresh_final_invoice`
recomputes what it deducts from its sub invoices as they stand at that
moment: a progress invoice paid after the draft was built is deducted with
what it received ("all payments made up to that point are offset"), a sub
invoice cancelled meanwhile is not deducted; when anything changed, the
deduction lines and the totals are rebuilt before numbering.

When a final invoice is finalized, the partial, progress and deposit
invoices it deducts (and those of its project that received nothing, found
by the sub-invoice assignment key) are linked to it; deposit invoices become
``Closed`` (domain-spec §4.10). What is still unpaid on a progress or deposit
invoice is cleared: a Clearing balance (reason Final Invoice) settles it, and with bookkeeping on its interim revenue is reversed
by the same amount, per tax code and rate of the progress invoice, on the
accounts the interim revenue was booked on (asked with the same question,
:func:`engine.booking.questions.line_question`). Runs in the finalization
batch of the final invoice, which holds no other invoice of its account
(:mod:`engine.booking.finalize` cuts batches so), so it sees its sub invoices
as its own transaction would.

A sub invoice linked to a finalized final invoice cannot be cancelled on its
own (:func:`deducting_final_invoice`): the final invoice deducts it, so the
final invoice is cancelled first, which unlinks its sub invoices.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Mapping, Sequence

import sqlalchemy as sa

from engine.billing.build import BuildError, InvariantError, deduction_signature, rebuild_final_invoice
from engine.billing.subinvoices import open_sub_invoices
from engine.domain.batching import chunks
from engine.domain.money import ZERO, allocate
from engine.storage.bulk import RowWriter, fetch_records, update_by_id
from engine.storage.context import Context

from .accounts import AccountResolver
from .dues import refresh_installments
from .errors import BookingError, FinalizeError, invoice_where
from .invoices import INTERIM_INVOICE_TYPES, common_fields, copied_fields, custom_values, debtor_of
from .postings import Booking, BookingSet, debit_credit_flag
from .questions import clearing_line, line_question
from .write import load_account, write_bookings

_IN_CHUNK = 900  # ids per IN (...) list: below every backend's parameter limit
#: Invoice types a final invoice deducts and links.
SUB_INVOICE_TYPES = ("Partial", "Progress", "Deposit")
#: Line fields a rebuilt deduction writes (besides the invoice and its amounts).
_AMOUNT_FIELDS = ("postotalnet", "postotaltax", "postotalgross", "unitpricenet")
#: Header fields a rebuild may change.
_TOTAL_FIELDS = ("TotalNet", "TotalTax", "GrandTotal", "Class", "ServicePeriodStart", "ServicePeriodEnd")


def _locking(conn: sa.Connection, query: sa.Select) -> sa.Select:
    """``query`` with ``FOR UPDATE`` where the database has it (SQLite's
    write transaction holds the database anyway)."""
    return query.with_for_update() if conn.dialect.name == "postgresql" else query


def refresh_final_invoice(conn: sa.Connection, ctx: Context, invoice: Mapping[str, object]) -> bool:
    """Rebuild the deductions of the final invoice draft ``invoice`` (a row,
    lower-case keys) from its sub invoices as they stand now, inside the
    finalization's transaction; True when its lines or totals changed.

    The sub invoices of the project are locked first (``FOR UPDATE`` on
    PostgreSQL), so a payment on one of them either commits before (and is
    deducted) or waits until the final invoice is finalized (and then finds
    the sub invoice linked and settled). Raises :class:`FinalizeError` when a
    sub invoice of the project is still a draft."""
    if invoice.get("type") != "Final" or invoice.get("status") != "Draft":
        return False
    key = invoice.get("subinvoiceassignmentkey")
    where = invoice_where(invoice.get("name"))
    invoice_table = ctx.table("Invoice")
    line_table = ctx.table("InvoiceLineItem")
    subs = []
    if key:
        conn.execute(_locking(conn, sa.select(invoice_table.c.id).where(
            invoice_table.c.subinvoiceassignmentkey == key, invoice_table.c.account == invoice["account"],
            invoice_table.c.type.in_(SUB_INVOICE_TYPES)).order_by(invoice_table.c.id))).all()
        subs = open_sub_invoices(conn, ctx, [str(key)]).get((invoice["account"], key), [])
    lines = list(fetch_records(conn, sa.select(line_table).where(line_table.c.invoice == invoice["id"])
                               .order_by(line_table.c.sequence, line_table.c.id)))
    if not lines:
        return False  # finalization reports an invoice without lines
    try:
        header, rebuilt = rebuild_final_invoice(invoice, lines, subs, ctx.settings.rounding_mode)
    except BuildError as error:
        raise FinalizeError(f"{invoice.get('name')}: {error}", where=where,
                            hint="finalize the sub invoices first, then the final invoice") from None
    except InvariantError as error:
        raise FinalizeError(f"{invoice.get('name')}: {error}", where=where,
                            hint="a draft changed since its run: delete it and run again") from None
    old_main = [line for line in lines if not line.get("isdeduction")]
    new_main = rebuilt[:len(old_main)]
    changed_main = [(line["id"], tuple(line[k] for k in _AMOUNT_FIELDS)) for old, line in zip(old_main, new_main)
                    if any(old.get(k) != line[k] for k in _AMOUNT_FIELDS)]
    same_deductions = deduction_signature(lines) == deduction_signature(rebuilt)
    if same_deductions and not changed_main:
        return False
    if changed_main:
        update_by_id(conn, ctx.obj("InvoiceLineItem"), ["PosTotalNet", "PosTotalTax", "PosTotalGross", "UnitPriceNet"],
                     changed_main)
    if not same_deductions:
        conn.execute(sa.delete(line_table).where(line_table.c.invoice == invoice["id"],
                                                 line_table.c.isdeduction == sa.true()))
        deductions = [{**line, "invoice": invoice["id"]} for line in rebuilt[len(old_main):]]
        RowWriter(conn, ctx.obj("InvoiceLineItem")).insert(deductions)
    invoice_obj = ctx.obj("Invoice")
    fields = [name for name in _TOTAL_FIELDS if invoice_obj.field(name) is not None]
    update_by_id(conn, invoice_obj, fields,
                 [(invoice["id"], tuple(header.get(invoice_obj.field(name).key) for name in fields))])
    return True


def deducting_final_invoice(conn: sa.Connection, ctx: Context, sub: Mapping[str, object]) -> dict | None:
    """The finalized (Open or Paid) final invoice that deducts the sub
    invoice ``sub``, or None. Such a sub invoice cannot be cancelled on its
    own: its payments are deducted there, and its interim revenue was cleared."""
    final_id = sub.get("finalinvoice")
    if sub.get("type") not in SUB_INVOICE_TYPES or final_id is None:
        return None
    invoice_table = ctx.table("Invoice")
    row = conn.execute(sa.select(invoice_table.c.id, invoice_table.c.name, invoice_table.c.status)
                       .where(invoice_table.c.id == final_id)).mappings().first()
    if row is None or row["status"] not in ("Open", "Paid"):
        return None
    return dict(row)


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
                .where(invoice_table.c.type.in_(SUB_INVOICE_TYPES))
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
        if sub["type"] == "Deposit":  # closed by its final invoice (domain-spec §4.10)
            conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sub["id"]).values(status="Closed"))
        if sub["type"] not in INTERIM_INVOICE_TYPES or open_amount <= 0:
            continue
        RowWriter(conn, ctx.obj("Balance")).insert([{
            "account": sub["account"], "invoice": sub["id"], "relatedinvoice": invoice["id"], "type": "Clearing",
            "clearingreason": "Final Invoice", "amount": -open_amount, "date": when,
            "currencyisocode": sub.get("currencyisocode"), "confighash": ctx.config_hash,
        }])
        conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sub["id"])
                     .values(balance=Decimal("0.00"), status="Closed" if sub["type"] == "Deposit" else "Paid",
                             paymentdate=when))
        refresh_installments(conn, ctx, [sub["id"]])
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


def interim_groups(lines: Sequence[Mapping[str, object]]) -> dict[tuple, Decimal]:
    """The gross amount of a progress invoice's lines per (tax code, tax
    rate, applied tax rule): the groups its interim revenue was booked in."""
    groups: dict[tuple, Decimal] = {}
    for line in lines:
        key = (line.get("taxcode"), Decimal(line.get("taxrate") or 0), line.get("appliedtaxrule"))
        groups[key] = groups.get(key, ZERO) + Decimal(line.get("postotalgross") or 0)
    return {k: v for k, v in groups.items() if v != 0}


def clearing_parts(amount: Decimal, gross: Mapping[tuple, Decimal],
                   received: Mapping[tuple, Decimal]) -> list[tuple[tuple, Decimal]]:
    """How the unpaid rest ``amount`` of a progress invoice is reversed per
    tax group (pure): in proportion to what is still unpaid in each group
    (its gross less what its interim payment bookings received), so that
    every group's interim revenue nets to zero whenever the bookings of the
    payments are there; without them, in proportion to the gross. Groups in
    a stable order (tax code, rate, rule); the parts sum to ``amount``."""
    keys = sorted(gross, key=lambda k: (str(k[0]), k[1], str(k[2])))
    unpaid = [gross[k] - received.get(k, ZERO) for k in keys]
    if sum(unpaid, ZERO) != amount or any(u < 0 for u in unpaid):
        unpaid = [gross[k] for k in keys]
    return [(k, part) for k, part in zip(keys, allocate(amount, unpaid)) if part != 0]


def _received_per_group(conn: sa.Connection, ctx: Context, invoice_id: int) -> dict[tuple, Decimal]:
    """What the interim payment bookings (Interim Payment + Interim Tax) of
    the invoice's payments received, per (tax code, rate, rule)."""
    detail = ctx.table("BookingDetail")
    received: dict[tuple, Decimal] = {}
    query = (sa.select(detail.c.taxcode, detail.c.taxrate, detail.c.appliedtaxrule, detail.c.amount)
             .where(detail.c.invoice == invoice_id, detail.c.balance.is_not(None),
                    detail.c.type.in_(("Interim Payment", "Interim Tax"))))
    for row in conn.execute(query):
        key = (row.taxcode, Decimal(row.taxrate or 0), row.appliedtaxrule)
        received[key] = received.get(key, ZERO) + Decimal(row.amount)
    return received


def _reverse_interim_revenue(conn: sa.Connection, ctx: Context, sub: dict, amount: Decimal, when: date,
                             final: dict) -> None:
    """The Interim Revenue bookings of ``-amount`` on the progress invoice
    ``sub``: one per tax code and rate of its lines (:func:`clearing_parts`),
    each on the account its interim revenue was booked on."""
    account = load_account(conn, ctx, sub["account"], when)
    debtor = debtor_of(sub, account)
    lines = _lines_of(conn, ctx, [sub["id"]]).get(sub["id"], [])
    parts = clearing_parts(amount, interim_groups(lines), _received_per_group(conn, ctx, sub["id"]))
    base = {
        **common_fields(sub, account, str(debtor), {"run": "", "confighash": ctx.config_hash}),
        "type": "Interim Revenue", "isgross": True, "bookingdate": when,
        "invoicelineitems": f"cleared by final invoice {final.get('name')}",
        **dict(custom_values(copied_fields(ctx), sub, None)),
    }
    bookings = []
    for (code, rate, rule), part in parts:
        taxed = clearing_line(lines, {"taxcode": code, "taxrate": rate, "appliedtaxrule": rule})
        try:
            choice = ctx.service(AccountResolver).required_collective("Interim Revenue", line_question(sub, taxed), sub)
        except BookingError as error:
            raise FinalizeError(str(error), where=error.where, hint=error.hint) from None
        fields = {**base, "amount": -part, "accountno": choice.account, "contraaccountno": choice.contra,
                  "accountrule": choice.rule, "taxcode": code, "taxrate": rate, "appliedtaxrule": rule}
        fields["debitcredit"] = debit_credit_flag(fields)
        bookings.append(Booking(fields, choice))
    write_bookings(conn, ctx, [BookingSet(tuple(bookings), debtor=str(debtor), receivable=-amount)])
