"""Interim accounts of closed projects (domain-spec §5.6).

A project is a final invoice and the sub invoices it settles
(``Invoice.FinalInvoice``), plus the cancellations of those sub invoices. It
is *closed* when the final invoice is finalized and not cancelled and none of
its sub invoices is still open: paid, cleared by the final invoice, or
cancelled. Then, over the project's interim bookings:

* the interim revenue account(s) (where Interim Revenue is booked, the
  counter account of Interim Payment and Interim Tax) net to zero: what was
  billed gross on progress invoices was either received or reversed (A401);
* the interim payment account(s) (where Interim Payment is booked) net to
  zero: every down payment received is cleared by the final invoice's
  Interim Payment Clearing (A401);
* the interim tax booked on receipts equals the tax the final invoice
  deducts on its progress and deposit deduction lines: the final invoice taxes only
  what was not taxed yet (A402). (Interim tax is booked on the output tax
  account, which of course does not net to zero.)

A payment that arrived after the final invoice's draft was built and is not
deducted, or a settled sub invoice that was cancelled afterwards, leaves
exactly such a residue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.domain.money import ZERO

from .base import AuditRun, movement, posting_columns, stream, total
from .findings import Finding, finding

INTERIM_TYPES = ("Interim Revenue", "Interim Payment", "Interim Tax", "Interim Payment Clearing")
#: Sub invoice statuses of a closed project (everything else is still open).
SETTLED = ("Paid", "Canceled", "Settled", "Closed")
LIVE_FINAL = ("Open", "Paid")
#: Sub invoices whose receipts are taxed when paid and deducted by the final
#: invoice: progress invoices and deposit invoices (domain-spec §4.10).
DOWN_PAYMENTS = ("Progress", "Deposit")

Rows = Sequence[Mapping[str, Any]]


#: Closed projects judged per round of queries.
PROJECT_CHUNK = 500


def _closed_finals(run: AuditRun) -> sa.Select:
    """(id, name) of the final invoices of closed projects, in id order."""
    invoices = run.table("Invoice")
    sub = invoices.alias("sub")
    open_sub = sa.exists().where(sub.c.finalinvoice == invoices.c.id, sub.c.status.not_in(SETTLED))
    return (sa.select(invoices.c.id, invoices.c.name)
            .where(invoices.c.type == "Final", invoices.c.status.in_(LIVE_FINAL), ~open_sub).order_by(invoices.c.id))


def _project_rows(run: AuditRun, finals: Sequence[int]) -> tuple[dict[int, list], dict[int, Decimal]]:
    """For a chunk of closed projects (their final invoices' ids): the
    interim booking sums per posting, and the tax deducted on progress
    deduction lines, per final invoice."""
    invoices = run.table("Invoice")
    lines = run.table("InvoiceLineItem")
    details = run.table("BookingDetail")
    sub = invoices.alias("sub")
    cancellation = invoices.alias("cancellation")
    project = sa.union_all(
        sa.select(invoices.c.id.label("invoice"), invoices.c.id.label("final")).where(invoices.c.id.in_(finals)),
        sa.select(invoices.c.id, invoices.c.finalinvoice).where(invoices.c.finalinvoice.in_(finals)),
        sa.select(cancellation.c.id, sub.c.finalinvoice)
        .select_from(cancellation.join(sub, cancellation.c.relatedinvoice == sub.c.id))
        .where(cancellation.c.type == "Cancelation", sub.c.finalinvoice.in_(finals)),
    ).subquery("project")
    keys = [project.c.final, *posting_columns(details)]
    bookings: dict[int, list] = {}
    query = (sa.select(*keys, sa.func.sum(details.c.amount).label("amount"))
             .select_from(details.join(project, project.c.invoice == details.c.invoice))
             .where(details.c.type.in_(INTERIM_TYPES)).group_by(*keys))
    for row in run.conn.execute(query).mappings():
        bookings.setdefault(row["final"], []).append(row)
    query = (sa.select(lines.c.invoice, sa.func.sum(lines.c.postotaltax).label("tax"))
             .select_from(lines.join(sub, sub.c.id == lines.c.subinvoice))
             .where(lines.c.invoice.in_(finals), lines.c.isdeduction == sa.true(), sub.c.type.in_(DOWN_PAYMENTS))
             .group_by(lines.c.invoice))
    deducted = {row.invoice: Decimal(row.tax or 0) for row in run.conn.execute(query)}
    return bookings, deducted


def check_interim(run: AuditRun) -> Iterator[Finding]:
    """A401, A402 per closed project (a chunk of projects per round of queries)."""
    finals = [(row["id"], row["name"]) for row in stream(run.conn, _closed_finals(run))]
    for start in range(0, len(finals), PROJECT_CHUNK):
        chunk = finals[start:start + PROJECT_CHUNK]
        bookings, deducted = _project_rows(run, [ident for ident, _ in chunk])
        for ident, name in chunk:
            run.report.count("closed projects")
            yield from judge_project(name, bookings.get(ident, []), deducted.get(ident, ZERO))


def judge_project(name: str, bookings: Rows, deducted_tax: Decimal) -> Iterator[Finding]:
    """The findings of one closed project (pure): ``bookings`` its interim
    booking sums per posting, ``deducted_tax`` Σ tax of the final invoice's
    progress deduction lines (negative)."""
    revenue_accounts = {r["accountno"] for r in bookings if r["type"] == "Interim Revenue"}
    revenue_accounts |= {r["contraaccountno"] for r in bookings
                         if r["type"] in ("Interim Payment", "Interim Tax") and r["contraaccountno"]}
    payment_accounts = {r["accountno"] for r in bookings if r["type"] == "Interim Payment"}
    for label, accounts in (("interim revenue", revenue_accounts),
                            ("interim payment", payment_accounts - revenue_accounts)):
        for account in sorted(str(a) for a in accounts if a):
            net = sum((movement(row, account) for row in bookings), ZERO)
            if net != 0:
                yield finding("A401", "project", name,
                              f"the {label} account {account} keeps {net} after the project closed",
                              expected=ZERO, actual=net,
                              hint="a payment not deducted by the final invoice, or a settled sub invoice "
                                   "cancelled afterwards")
    interim_tax = total(bookings, type="Interim Tax")
    if interim_tax != -deducted_tax:
        yield finding("A402", "project", name, "the tax booked on received down payments differs from the tax "
                      "the final invoice deducts", expected=-deducted_tax, actual=interim_tax)

