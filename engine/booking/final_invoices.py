"""A final invoice settles its sub invoices (domain-spec §3.8 step 5, §5.6).

Before a final invoice draft is numbered, :func:`refresh_final_invoices`
recomputes what it deducts from its sub invoices as they stand at that
moment (for all final invoices of a finalization batch at once): a
progress invoice paid after the draft was built is deducted with what it
received ("all payments made up to that point are offset"), a sub invoice
cancelled meanwhile is not deducted; when anything changed, the deduction
lines and the totals are rebuilt before numbering.

When a final invoice is finalized (:func:`settle_final_invoices`, again for
all of a batch's at once), the partial, progress and deposit invoices it
deducts (and those of its project that received nothing, found by the
sub-invoice assignment key) are linked to it; deposit invoices become
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
from engine.billing.subinvoices import interim_receipts, open_sub_invoices
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
from .write import load_accounts, write_bookings

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


def refresh_final_invoices(conn: sa.Connection, ctx: Context,
                           invoices: Sequence[Mapping[str, object]]) -> tuple[set[int], dict[int, FinalizeError]]:
    """Rebuild the deductions of the final invoice drafts among ``invoices``
    (rows, lower-case keys) from their sub invoices as they stand now, inside
    the finalization's transaction, set-based: one lock, one read of the sub
    invoices and one of the lines for all of them, one write per kind of
    change. Returns the ids whose lines or totals changed, and the invoices
    that cannot be finalized (a sub invoice of the project still a draft,
    totals that no longer match) with why; those are left untouched.

    Other invoices cost nothing: most batches hold no final invoice, and
    then no statement is sent. The sub invoices of the projects are locked
    first (``FOR UPDATE`` on PostgreSQL, in id order), so a payment on one of
    them either commits before (and is deducted) or waits until the final
    invoice is finalized (and then finds the sub invoice linked and settled).
    Each final invoice is decided from its own lines and its own account's
    sub invoices only, so deciding them together gives what one at a time
    gave."""
    finals = [invoice for invoice in invoices if invoice.get("type") == "Final" and invoice.get("status") == "Draft"]
    if not finals:
        return set(), {}
    subs_of = _lock_and_read_sub_invoices(conn, ctx, finals)
    lines_of = _lines_of(conn, ctx, sorted(int(invoice["id"]) for invoice in finals))  # type: ignore[call-overload]
    failures: dict[int, FinalizeError] = {}
    rebuilt_finals: list[tuple[Mapping[str, object], list[dict], dict, list[dict]]] = []
    for invoice in finals:
        lines = lines_of.get(invoice["id"], [])  # type: ignore[call-overload]
        if not lines:
            continue  # finalization reports an invoice without lines
        subs = subs_of.get((invoice["account"], invoice.get("subinvoiceassignmentkey")), [])
        try:
            header, rebuilt = _rebuilt(ctx, invoice, lines, subs)
        except FinalizeError as error:
            failures[invoice["id"]] = error  # type: ignore[index]
            continue
        rebuilt_finals.append((invoice, lines, header, rebuilt))
    return _write_rebuilt(conn, ctx, rebuilt_finals), failures


def _lock_and_read_sub_invoices(conn: sa.Connection, ctx: Context,
                                finals: Sequence[Mapping[str, object]]) -> dict[tuple, list]:
    """Lock the sub invoices of the final invoices' projects (account and
    assignment key) and read the deductible ones, by (account, key)."""
    projects = sorted({(invoice["account"], invoice["subinvoiceassignmentkey"]) for invoice in finals
                       if invoice.get("subinvoiceassignmentkey")}, key=lambda p: (p[0] or 0, str(p[1])))
    if not projects:
        return {}
    invoice_table = ctx.table("Invoice")
    for chunk in chunks(projects, _IN_CHUNK // 2):  # two parameters per project
        conn.execute(_locking(conn, sa.select(invoice_table.c.id).where(
            sa.tuple_(invoice_table.c.account, invoice_table.c.subinvoiceassignmentkey).in_(chunk),
            invoice_table.c.type.in_(SUB_INVOICE_TYPES)).order_by(invoice_table.c.id))).all()
    return open_sub_invoices(conn, ctx, [str(key) for _, key in projects])


def _rebuilt(ctx: Context, invoice: Mapping[str, object], lines: list[dict], subs: list) -> tuple[dict, list[dict]]:
    """The final invoice as it is to be finalized now (header and lines,
    :func:`rebuild_final_invoice`), or :class:`FinalizeError`."""
    where = invoice_where(invoice.get("name"))
    try:
        return rebuild_final_invoice(invoice, lines, subs, ctx.settings.rounding_mode)
    except BuildError as error:
        raise FinalizeError(f"{invoice.get('name')}: {error}", where=where,
                            hint="finalize the sub invoices first, then the final invoice") from None
    except InvariantError as error:
        raise FinalizeError(f"{invoice.get('name')}: {error}", where=where,
                            hint="a draft changed since its run: delete it and run again") from None


def _write_rebuilt(conn: sa.Connection, ctx: Context,
                   rebuilt_finals: Sequence[tuple[Mapping[str, object], list[dict], dict, list[dict]]]) -> set[int]:
    """Write what changed in the rebuilt final invoices (``(invoice, old
    lines, new header, new lines)``): main line amounts, the deduction lines
    (replaced as a whole, new ones in invoice order), the totals. Returns the
    ids of the invoices written."""
    changed: set[int] = set()
    main_updates: list[tuple[int, tuple]] = []
    replaced: list[int] = []
    deductions: list[dict] = []
    header_updates: list[tuple[int, dict]] = []
    for invoice, lines, header, rebuilt in rebuilt_finals:
        old_main = [line for line in lines if not line.get("isdeduction")]
        new_main = rebuilt[:len(old_main)]
        changed_main = [(line["id"], tuple(line[k] for k in _AMOUNT_FIELDS)) for old, line in zip(old_main, new_main)
                        if any(old.get(k) != line[k] for k in _AMOUNT_FIELDS)]
        same_deductions = deduction_signature(lines) == deduction_signature(rebuilt)
        if same_deductions and not changed_main:
            continue
        changed.add(invoice["id"])  # type: ignore[arg-type]
        main_updates.extend(changed_main)
        if not same_deductions:
            replaced.append(invoice["id"])  # type: ignore[arg-type]
            deductions.extend({**line, "invoice": invoice["id"]} for line in rebuilt[len(old_main):])
        header_updates.append((invoice["id"], header))  # type: ignore[arg-type]
    if main_updates:
        update_by_id(conn, ctx.obj("InvoiceLineItem"), ["PosTotalNet", "PosTotalTax", "PosTotalGross", "UnitPriceNet"],
                     main_updates)
    if replaced:
        line_table = ctx.table("InvoiceLineItem")
        for chunk in chunks(replaced, _IN_CHUNK):
            conn.execute(sa.delete(line_table).where(line_table.c.invoice.in_(chunk),
                                                     line_table.c.isdeduction == sa.true()))
        RowWriter(conn, ctx.obj("InvoiceLineItem")).insert(deductions)
    if header_updates:
        invoice_obj = ctx.obj("Invoice")
        fields = [name for name in _TOTAL_FIELDS if invoice_obj.field(name) is not None]
        update_by_id(conn, invoice_obj, fields,
                     [(invoice_id, tuple(header.get(invoice_obj.field(name).key) for name in fields))
                      for invoice_id, header in header_updates])
    return changed


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


def settle_final_invoices(conn: sa.Connection, ctx: Context, finals: Sequence[tuple[dict, date]]) -> None:
    """Link the deducted sub invoices to each final invoice of ``finals``
    (``(invoice, finalization date)``), and clear what is still unpaid on
    their progress invoices: a Clearing balance (reason Final Invoice)
    settles the sub invoice, and its interim revenue is reversed by the same
    amount.

    Set-based: the sub invoices of all the final invoices are read, linked,
    closed and cleared with a few statements, and their reversals written
    at once, in the order one final invoice after the other would write
    them (final invoices in the given order, sub invoices in id order), so
    records and ids are the same. That holds while no two of them share a
    sub invoice (the finalization batches them so: final invoices of other
    accounts); when they do, they are settled one after the other. Raises
    :class:`SettleError` naming the final invoice whose reversal cannot be
    booked (nothing is left half done: the caller rolls back)."""
    subs_of = _sub_invoices_of(conn, ctx, [invoice for invoice, _ in finals])
    linked = [sub_id for sub_ids in subs_of.values() for sub_id in sub_ids]
    if len(linked) != len(set(linked)) and len(finals) > 1:
        for final in finals:
            settle_final_invoices(conn, ctx, [final])
        return
    if not linked:
        return
    invoice_table = ctx.table("Invoice")
    conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sa.bindparam("sub_id"))
                 .values(finalinvoice=sa.bindparam("final_id")),
                 [{"sub_id": sub_id, "final_id": final_id} for final_id, sub_ids in subs_of.items()
                  for sub_id in sub_ids])
    subs = {row["id"]: row for row in _invoices_by_id(conn, ctx, linked)}
    _settle(conn, ctx, [(invoice, when, [subs[i] for i in subs_of[invoice["id"]] if i in subs])
                        for invoice, when in finals])


class SettleError(Exception):
    """A final invoice's sub invoices cannot be settled (its reversal cannot
    be booked): ``final_id`` and the :class:`FinalizeError`."""

    def __init__(self, final_id: int, error: FinalizeError):
        super().__init__(str(error))
        self.final_id = final_id
        self.error = error


def _sub_invoices_of(conn: sa.Connection, ctx: Context, finals: Sequence[Mapping[str, object]]) -> dict[int, list[int]]:
    """The sub invoices each final invoice settles, in id order: those its
    deduction lines name, and the progress and deposit invoices of its
    project (account and assignment key) that received nothing and so have
    no deduction line, not yet linked to a final invoice."""
    invoice_table = ctx.table("Invoice")
    line_table = ctx.table("InvoiceLineItem")
    found: dict[int, set[int]] = {int(invoice["id"]): set() for invoice in finals}  # type: ignore[call-overload]
    for chunk in chunks(sorted(found), _IN_CHUNK):
        for row in conn.execute(sa.select(line_table.c.invoice, line_table.c.subinvoice)
                                .where(line_table.c.invoice.in_(chunk), line_table.c.subinvoice.is_not(None))):
            found[row.invoice].add(int(row.subinvoice))
    project_of = {(invoice["account"], invoice["subinvoiceassignmentkey"]): int(invoice["id"])  # type: ignore
                  for invoice in finals if invoice.get("subinvoiceassignmentkey")}
    projects = sorted(project_of, key=lambda p: (p[0] or 0, str(p[1])))
    for chunk in chunks(projects, _IN_CHUNK // 2):  # two parameters per project
        query = (sa.select(invoice_table.c.id, invoice_table.c.account, invoice_table.c.subinvoiceassignmentkey)
                 .where(sa.tuple_(invoice_table.c.account, invoice_table.c.subinvoiceassignmentkey).in_(chunk))
                 .where(invoice_table.c.type.in_(SUB_INVOICE_TYPES))
                 .where(invoice_table.c.status.in_(("Open", "Paid")))
                 .where(invoice_table.c.finalinvoice.is_(None)))
        for row in conn.execute(query):
            found[project_of[(row.account, row.subinvoiceassignmentkey)]].add(row.id)
    return {final_id: sorted(sub_ids) for final_id, sub_ids in found.items() if sub_ids}


def _invoices_by_id(conn: sa.Connection, ctx: Context, ids: Sequence[int]) -> list[dict]:
    """The invoice rows of ``ids``, as dicts."""
    invoice_table = ctx.table("Invoice")
    rows = []
    for chunk in chunks(sorted(set(ids)), _IN_CHUNK):
        rows.extend(dict(row) for row in conn.execute(sa.select(invoice_table).where(invoice_table.c.id.in_(chunk))
                                                      .order_by(invoice_table.c.id)).mappings())
    return rows


def _settle(conn: sa.Connection, ctx: Context, settled: Sequence[tuple[dict, date, list[dict]]]) -> None:
    """Close the deposit invoices and clear the progress and deposit
    invoices with something unpaid (``settled``: each final invoice, its
    date and its linked sub invoices as read after linking), one statement
    per kind of change; then their reversals."""
    invoice_table = ctx.table("Invoice")
    closed: list[int] = []
    clearings: list[dict] = []
    cleared: list[dict] = []
    reversals: list[tuple[dict, dict, Decimal, date]] = []  # (final, sub, amount, date)
    for final, when, subs in settled:
        for sub in subs:
            open_amount = sub["balance"] or Decimal("0.00")
            if sub["type"] == "Deposit":  # closed by its final invoice (domain-spec §4.10)
                closed.append(sub["id"])
            if sub["type"] not in INTERIM_INVOICE_TYPES or open_amount <= 0:
                continue
            clearings.append({
                "account": sub["account"], "invoice": sub["id"], "relatedinvoice": final["id"], "type": "Clearing",
                "clearingreason": "Final Invoice", "amount": -open_amount, "date": when,
                "currencyisocode": sub.get("currencyisocode"), "confighash": ctx.config_hash,
            })
            cleared.append({"sub_id": sub["id"], "paymentdate": when,
                            "status": "Closed" if sub["type"] == "Deposit" else "Paid"})
            reversals.append((final, sub, open_amount, when))
    for chunk in chunks(closed, _IN_CHUNK):
        conn.execute(sa.update(invoice_table).where(invoice_table.c.id.in_(chunk)).values(status="Closed"))
    if not clearings:
        return
    RowWriter(conn, ctx.obj("Balance")).insert(clearings)
    conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sa.bindparam("sub_id"))
                 .values(balance=Decimal("0.00"), status=sa.bindparam("status"),
                         paymentdate=sa.bindparam("paymentdate")), cleared)
    refresh_installments(conn, ctx, [row["sub_id"] for row in cleared])
    if ctx.settings.create_bookkeeping_data:
        _reverse_interim_revenues(conn, ctx, reversals)



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


def _received_per_group(conn: sa.Connection, ctx: Context,
                        invoice_ids: Sequence[int]) -> dict[int, dict[tuple, Decimal]]:
    """What the interim payment bookings (Interim Payment + Interim Tax) of
    the invoices' payments received, per invoice and (tax code, rate, rule)."""
    return {invoice: gross for invoice, (gross, _) in interim_receipts(conn, ctx, invoice_ids).items()}


def _reverse_interim_revenues(conn: sa.Connection, ctx: Context,
                              reversals: Sequence[tuple[dict, dict, Decimal, date]]) -> None:
    """The Interim Revenue bookings of each cleared sub invoice
    (``(final invoice, sub invoice, amount, date)``), read and written for
    all of them at once, in the given order."""
    sub_ids = [sub["id"] for _, sub, _, _ in reversals]
    accounts_at: dict[date, set[int]] = {}  # accounts are read as of each date (formula fields)
    for _, sub, _, when in reversals:
        accounts_at.setdefault(when, set()).add(sub["account"])
    accounts = {when: load_accounts(conn, ctx, ids, when) for when, ids in accounts_at.items()}
    lines_of = _lines_of(conn, ctx, sub_ids)
    received = _received_per_group(conn, ctx, sub_ids)
    sets = []
    for final, sub, amount, when in reversals:
        try:
            sets.append(_reversal(ctx, sub, amount, when, final, accounts[when].get(sub["account"], {}),
                                  lines_of.get(sub["id"], []), received.get(sub["id"], {})))
        except FinalizeError as error:
            raise SettleError(final["id"], error) from None
    write_bookings(conn, ctx, sets)


def _reversal(ctx: Context, sub: dict, amount: Decimal, when: date, final: dict, account: Mapping[str, object],
              lines: Sequence[dict], received: Mapping[tuple, Decimal]) -> BookingSet:
    """The Interim Revenue bookings of ``-amount`` on the progress invoice
    ``sub`` (its account, lines and received interim payments given): one
    per tax code and rate of its lines (:func:`clearing_parts`), each on the
    account its interim revenue was booked on."""
    debtor = debtor_of(sub, account)
    parts = clearing_parts(amount, interim_groups(lines), received)
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
    return BookingSet(tuple(bookings), debtor=str(debtor), receivable=-amount)
