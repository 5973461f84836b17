"""``metabill db plan --impact``: what today's configuration would decide
differently for the invoices in the database.

A configuration change (a G/L rule, a collective account, a tax rule) never
rewrites what was issued, but it changes what happens next. Before
migrating, a consultant sees:

* **drafts** whose lines today's tax rules would tax differently than when
  they were built (another rule, code or rate): finalizing them as they are
  would book the old tax; deleting and billing them again applies the new;
* **open invoices** whose booking details today's account rules would post
  to another account: their payments, write-offs and cancellations are
  asked the same questions and would now go elsewhere.

Both are the decisions the run and finalization make (:class:`~engine.billing.tax.TaxResolver`,
:func:`engine.booking.explain.explain_invoice`, which asks each stored booking
detail its question again); nothing is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from engine.billing.tax import TaxError, TaxResolver
from engine.storage.context import Context

from .explain import explain_invoice

#: Open invoices (and the states whose later bookings ask the account questions).
OPEN_STATES = ("Open",)


@dataclass(frozen=True)
class Affected:
    """One invoice today's configuration treats differently, and how."""

    invoice: str
    status: str
    changes: tuple[str, ...]


@dataclass(frozen=True)
class ImpactReport:
    drafts_checked: int
    drafts: tuple[Affected, ...]
    open_checked: int
    open_invoices: tuple[Affected, ...]


def configuration_impact(engine: sa.Engine, ctx: Context) -> ImpactReport:
    """The drafts and open invoices today's configuration decides differently (reads only)."""
    with engine.connect() as conn:
        drafts, drafts_checked = _draft_taxes(conn, ctx)
        open_invoices, open_checked = _open_accounts(conn, ctx)
    return ImpactReport(drafts_checked, tuple(drafts), open_checked, tuple(open_invoices))


def _draft_taxes(conn: sa.Connection, ctx: Context) -> tuple[list[Affected], int]:
    invoices, lines = ctx.table("Invoice"), ctx.table("InvoiceLineItem")
    headers = {row["id"]: dict(row) for row in conn.execute(
        sa.select(invoices).where(invoices.c.status == "Draft").order_by(invoices.c.id)).mappings()}
    changes: dict[int, list[str]] = {}
    resolver = TaxResolver(ctx)
    if headers:
        query = sa.select(lines).where(lines.c.invoice.in_(list(headers))).order_by(lines.c.invoice, lines.c.id)
        for row in conn.execute(query).mappings():
            line = dict(row)
            rule = line.get("appliedtaxrule")
            if not rule:
                continue  # an explicit rate of the source record: no rule decided it
            header = headers[line["invoice"]]
            asked = {**line, "taxrate": None, "taxcode": None}
            try:
                decision = resolver(header, asked, line.get("serviceperiodstart") or header.get("date"))
            except TaxError as error:
                changes.setdefault(line["invoice"], []).append(f"line {line.get('name')}: {error.message}")
                continue
            stored_rate = Decimal(line["taxrate"]) if line.get("taxrate") is not None else None
            if decision.rule != rule or decision.rate != stored_rate or decision.code != line.get("taxcode"):
                changes.setdefault(line["invoice"], []).append(
                    f"line {line.get('name')}: tax {line.get('taxcode')} {_rate(stored_rate)} % (rule '{rule}') -> "
                    f"{decision.code} {_rate(decision.rate)} % (rule '{decision.rule}')")
    affected = [Affected(str(headers[i]["name"]), "Draft", tuple(text)) for i, text in changes.items()]
    return affected, len(headers)


def _open_accounts(conn: sa.Connection, ctx: Context) -> tuple[list[Affected], int]:
    invoices, details = ctx.table("Invoice"), ctx.table("BookingDetail")
    booked = sa.select(details.c.invoice).where(details.c.invoice == invoices.c.id).exists()
    rows = conn.execute(sa.select(invoices.c.name, invoices.c.status)
                        .where(invoices.c.status.in_(OPEN_STATES), booked).order_by(invoices.c.id)).all()
    affected = []
    for name, status in rows:
        changes = []
        for explanation in explain_invoice(conn, ctx, name):
            detail = explanation.detail
            now, stored = explanation.current_account, detail.get("accountno")
            if now is not None and now != stored:
                changes.append(f"{detail.get('name')} {detail.get('type')}: account {stored} -> {now} "
                               f"({explanation.source})")
        if changes:
            affected.append(Affected(str(name), str(status), tuple(changes)))
    return affected, len(rows)


def _rate(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
