"""Invoices against their lines, balances and bookings; accounts against
their balances.

:func:`check_invoices` walks four streams ordered by invoice id side by side
(:func:`engine.audit.base.merge`): the invoices, their line sums, their
balance sums per type and their booking sums per posting, all summed by the
database. Per invoice (:func:`judge_invoice`, pure):

* totals = Σ lines, gross = net + tax (A201-A203), for drafts too: a draft
  that disagrees with its lines cannot be finalized;
* finalized invoices: balance = Σ balance records (A220), the status follows
  the balance (A221), exactly one ``Invoice`` balance of the grand total
  (A222);
* their bookings (the invoice's own booking details, not those of its
  balances): the debtor moves by the grand total, less what a final invoice
  cleared on a progress invoice (A212); revenue = net total and tax = tax
  total, with deductions (Interim Payment Clearing counts against revenue)
  and gross accounting (gross revenue counts for net and tax together);
  progress and deposit invoices book their gross as interim revenue and no
  tax (A210/A211); a finalized invoice with bookkeeping on and no booking at all
  is A213; a cancellation's bookings are the negated bookings of the invoice
  it cancels (A214).

:func:`check_accounts`: ``Account.Balance`` = Σ of the account's balances (A223).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.domain.money import ZERO

from .base import UNFINALIZED, AuditRun, debtor_movement, merge, posting_columns, stream, total
from .findings import Finding, finding

#: Booking types that carry an invoice's net amount, and how they count (a
#: deduction of a received progress payment counts against revenue).
NET_TYPES: Mapping[str, int] = {"Revenue": 1, "Deferred": 1, "Unbilled Revenue": 1, "Interim Payment Clearing": -1}
FINAL_CLEARING = "Final Invoice"
#: Invoices booked as down payments: their gross is interim revenue and their
#: tax arises on receipt (progress invoices; deposit invoices, domain-spec §4.10).
INTERIM_TYPES = ("Progress", "Deposit")

Rows = Sequence[Mapping[str, Any]]
Signature = dict[tuple, Decimal]


def _streams(run: AuditRun):
    invoices = run.table("Invoice")
    lines = run.table("InvoiceLineItem")
    balances = run.table("Balance")
    details = run.table("BookingDetail")
    yield stream(run.conn, sa.select(
        invoices.c.id, invoices.c.name, invoices.c.status, invoices.c.type, invoices.c.totalnet,
        invoices.c.totaltax, invoices.c.grandtotal, invoices.c.balance, invoices.c.relatedinvoice,
        invoices.c.currencyisocode,
    ).order_by(invoices.c.id))
    unbalanced = sa.case((lines.c.postotalgross != lines.c.postotalnet + lines.c.postotaltax, 1), else_=0)
    yield stream(run.conn, sa.select(
        lines.c.invoice.label("id"), sa.func.count().label("n"), sa.func.sum(lines.c.postotalnet).label("net"),
        sa.func.sum(lines.c.postotaltax).label("tax"), sa.func.sum(lines.c.postotalgross).label("gross"),
        sa.func.sum(unbalanced).label("unbalanced"),
    ).group_by(lines.c.invoice).order_by(lines.c.invoice))
    keys = [balances.c.invoice, balances.c.type, balances.c.clearingreason]
    yield stream(run.conn, sa.select(
        *keys, balances.c.invoice.label("id"), sa.func.sum(balances.c.amount).label("amount"),
        sa.func.count().label("n"),
    ).where(balances.c.invoice.is_not(None)).group_by(*keys).order_by(balances.c.invoice))
    reversal = details.c.reversalof.is_not(None).label("reversal")
    keys = [details.c.invoice, *posting_columns(details), details.c.isgross, reversal]
    yield stream(run.conn, sa.select(
        *keys, details.c.invoice.label("id"), sa.func.sum(details.c.amount).label("amount"),
    ).where(details.c.invoice.is_not(None), details.c.balance.is_(None))
        .group_by(details.c.invoice, *keys[1:]).order_by(details.c.invoice))


def check_invoices(run: AuditRun) -> Iterator[Finding]:
    """A201-A203, A210-A214, A220-A222 (see the module docstring)."""
    book = run.ctx.settings.create_bookkeeping_data
    canceled: dict[int, Signature] = {}  # bookings of canceled invoices, until their cancellation is seen
    for _, (invoice_rows, line_rows, balance_rows, detail_rows) in merge(lambda r: r["id"], *_streams(run)):
        if not invoice_rows:
            for rows, what in ((line_rows, "lines"), (balance_rows, "balance records"),
                               (detail_rows, "booking details")):
                if rows:
                    ident = rows[0]["id"]
                    yield finding("A203", "invoice", ident, f"{what} of invoice id {ident}, which does not exist")
            continue
        invoice = invoice_rows[0]
        run.report.count("invoices")
        own = [r for r in detail_rows if not r["reversal"]]
        if invoice["status"] == "Canceled":
            canceled[invoice["id"]] = signature(own)
        original = canceled.pop(invoice["relatedinvoice"], None) if invoice["type"] == "Cancelation" else None
        yield from judge_invoice(invoice, line_rows[0] if line_rows else None, balance_rows, detail_rows,
                                 book=book, original=original)


def signature(rows: Rows) -> Signature:
    """Σ amount per (type, account, contra account, business partner account)."""
    found: Signature = {}
    for row in rows:
        key = (row["type"], row["accountno"], row["contraaccountno"], row["bpaccountno"])
        found[key] = found.get(key, ZERO) + Decimal(row["amount"])
    return {key: value for key, value in found.items() if value != 0}


def judge_invoice(invoice: Mapping[str, Any], lines: Mapping[str, Any] | None, balances: Rows, details: Rows, *,
                  book: bool, original: Signature | None = None) -> Iterator[Finding]:
    """The findings of one invoice (pure). ``lines`` is its line sums (None:
    no lines), ``balances`` its balance sums per type and clearing reason,
    ``details`` its booking sums per posting; ``original`` the bookings of
    the invoice a cancellation cancels."""
    name = invoice["name"]
    yield from _totals(invoice, lines)
    if invoice["status"] in UNFINALIZED:
        return
    yield from _balances(invoice, balances)
    cleared = total(balances, type="Clearing", clearingreason=FINAL_CLEARING)
    own = [r for r in details if not r["reversal"]]
    if invoice["type"] == "Cancelation":
        mirrored = {key: -value for key, value in (original or {}).items()}
        actual = signature([r for r in details if r["reversal"]])
        if actual != mirrored or own:
            differing = sorted({f"{k[0]} {k[1]}" for k in set(actual) | set(mirrored)
                                if actual.get(k) != mirrored.get(k)})
            yield finding("A214", "invoice", name,
                          "its bookings are not the negated bookings of the cancelled invoice"
                          + (f" ({', '.join(differing)})" if differing else "")
                          + (f"; it has {len(own)} booking(s) of its own" if own else ""),
                          expected=sum(mirrored.values(), ZERO), actual=sum(actual.values(), ZERO))
        return
    grand_total = Decimal(invoice["grandtotal"] or 0)
    if not own:
        if book and (grand_total != 0 or (lines and (lines["net"] or lines["tax"]))):
            yield finding("A213", "invoice", name, "finalized with bookkeeping on, but it has no booking details",
                          expected=grand_total, actual=ZERO)
        return
    expected = grand_total + cleared
    moved = debtor_movement(own)
    if moved != expected:
        yield finding("A212", "invoice", name, "its bookings move the debtor by another amount than it owes"
                      + (f" (grand total {grand_total}, cleared by the final invoice {cleared})" if cleared else ""),
                      expected=expected, actual=moved)
    yield from _revenue_and_tax(invoice, own, expected)


def _totals(invoice: Mapping[str, Any], lines: Mapping[str, Any] | None) -> Iterator[Finding]:
    name = invoice["name"]
    net, tax, gross = (Decimal(invoice[k] or 0) for k in ("totalnet", "totaltax", "grandtotal"))
    if gross != net + tax:
        yield finding("A202", "invoice", name, f"grand total is not total net {net} + total tax {tax}",
                      expected=net + tax, actual=gross)
    if lines is None:
        yield finding("A203", "invoice", name, "it has no lines")
        return
    for label, value, summed in (("total net", net, lines["net"]), ("total tax", tax, lines["tax"]),
                                 ("grand total", gross, lines["gross"])):
        if value != Decimal(summed or 0):
            yield finding("A201", "invoice", name, f"{label} differs from the sum of its {lines['n']} line(s)",
                          expected=Decimal(summed or 0), actual=value,
                          hint="a draft changed since its run: delete it and run again" if invoice["status"]
                          in UNFINALIZED else None)
    if lines["unbalanced"]:
        yield finding("A202", "invoice", name, f"{lines['unbalanced']} line(s) where gross is not net + tax")


def _balances(invoice: Mapping[str, Any], balances: Rows) -> Iterator[Finding]:
    name = invoice["name"]
    summed = total(balances)
    recorded = Decimal(invoice["balance"] or 0)
    if recorded != summed:
        yield finding("A220", "invoice", name, "its balance differs from the sum of its balance records",
                      expected=summed, actual=recorded)
    status = invoice["status"]
    wrong = ((status == "Open" and recorded == 0) or (status == "Paid" and recorded != 0)
             or (status in ("Canceled", "Settled") and recorded != 0))
    if wrong:
        yield finding("A221", "invoice", name, f"status {status} with a balance of {recorded}",
                      expected="Paid" if status == "Open" else "Open" if status == "Paid" else "0.00",
                      actual=status if status in ("Open", "Paid") else recorded)
    own = [r for r in balances if r["type"] == "Invoice"]
    count = sum(int(r["n"]) for r in own)
    grand_total = Decimal(invoice["grandtotal"] or 0)
    if count != 1 or total(own) != grand_total:
        yield finding("A222", "invoice", name, f"{count} Invoice balance(s) of {total(own)} in all",
                      expected=grand_total, actual=total(own))


def _revenue_and_tax(invoice: Mapping[str, Any], own: Rows, expected_gross: Decimal) -> Iterator[Finding]:
    name = invoice["name"]
    tax = total(own, type="Tax")
    if invoice["type"] in INTERIM_TYPES:
        interim = total(own, type="Interim Revenue")
        if interim != expected_gross:
            yield finding("A210", "invoice", name, "its interim revenue (gross) differs from its grand total less "
                          "what a final invoice cleared", expected=expected_gross, actual=interim)
        if tax != 0:
            yield finding("A211", "invoice", name, f"a {invoice['type'].lower()} invoice books its tax when paid, "
                          "not when finalized",
                          expected=ZERO, actual=tax)
        return
    net = sum((NET_TYPES[r["type"]] * Decimal(r["amount"]) for r in own
               if r["type"] in NET_TYPES and not r["isgross"]), ZERO)
    gross = sum((NET_TYPES[r["type"]] * Decimal(r["amount"]) for r in own
                 if r["type"] in NET_TYPES and r["isgross"]), ZERO)
    if gross:  # gross accounting: revenue holds its tax
        if net + gross + tax != Decimal(invoice["grandtotal"] or 0):
            yield finding("A210", "invoice", name, "its revenue bookings (gross accounting) differ from its grand total",
                          expected=Decimal(invoice["grandtotal"] or 0), actual=net + gross + tax)
        return
    if net != Decimal(invoice["totalnet"] or 0):
        yield finding("A210", "invoice", name, "its revenue bookings differ from its total net",
                      expected=Decimal(invoice["totalnet"] or 0), actual=net)
    if tax != Decimal(invoice["totaltax"] or 0):
        yield finding("A211", "invoice", name, "its tax bookings differ from its total tax",
                      expected=Decimal(invoice["totaltax"] or 0), actual=tax)


def check_accounts(run: AuditRun) -> Iterator[Finding]:
    """A223: Account.Balance = Σ of the account's balances (when the org's
    Account stores a Balance field)."""
    field = run.ctx.obj("Account").field("Balance")
    if field is None or not field.is_stored:
        run.report.skipped["account balances"] = "the org's Account has no stored Balance field"
        return
    accounts = run.table("Account")
    balances = run.table("Balance")
    sums = (sa.select(balances.c.account, sa.func.sum(balances.c.amount).label("amount"))
            .group_by(balances.c.account).subquery())
    recorded = accounts.c[field.column_name]
    query = (sa.select(accounts.c.id, accounts.c.name, recorded.label("recorded"), sums.c.amount)
             .select_from(accounts.outerjoin(sums, sums.c.account == accounts.c.id)).order_by(accounts.c.id))
    for row in stream(run.conn, query):
        run.report.count("accounts")
        summed = Decimal(row["amount"] or 0)
        if Decimal(row["recorded"] or 0) != summed:
            yield finding("A223", "account", row["name"] or row["id"],
                          "its balance differs from the sum of its balances", expected=summed,
                          actual=Decimal(row["recorded"] or 0))
