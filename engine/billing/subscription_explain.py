"""``metabill explain`` for the lines a subscription run billed.

For every line of an invoice that bills a subscription item, the period
decision (:func:`engine.billing.subscription_terms.item_decision`) is made again
from the item and subscription as they are now, started at the line's
service period: which item, which period, how it was prorated (the grid,
the cycle, the share of each month, each price piece and its cents). When
the decision today gives another amount than the line holds (the item or
the subscription changed since), the explanation says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.domain.errors import EngineError, Where
from engine.storage.context import Context
from engine.storage.reader import RecordReader

from .periods import PeriodError
from .subscription_terms import item_decision


class ExplainLinesError(EngineError):
    """The invoice to explain does not exist."""

    code = "R221"


@dataclass
class LineExplanations:
    """The explained subscription lines of one invoice (empty when it bills none)."""

    invoice: str
    status: str
    lines: list[str] = field(default_factory=list)

    @property
    def finalized(self) -> bool:
        return self.status not in ("Draft", "Pre-Draft")


def explain_service_periods(engine: sa.Engine, ctx: Context, invoice_name: str) -> LineExplanations:
    """The service (period and proration) of every subscription line of ``invoice_name``."""
    invoices, lines = ctx.table("Invoice"), ctx.table("InvoiceLineItem")
    with engine.connect() as conn:
        invoice = conn.execute(sa.select(invoices.c.id, invoices.c.status).where(invoices.c.name == invoice_name)).first()
        if invoice is None:
            raise ExplainLinesError(f"no invoice {invoice_name}", where=Where(object="Invoice", record=invoice_name))
        out = LineExplanations(invoice_name, str(invoice.status))
        rows = [dict(r) for r in conn.execute(
            sa.select(lines).where(lines.c.invoice == invoice.id, lines.c.subscriptionitem.is_not(None))
            .order_by(lines.c.sequence, lines.c.id)).mappings()]
        if not rows:
            return out
        item_obj, sub_obj = ctx.obj("SubscriptionItem"), ctx.obj("Subscription")
        items = {r["id"]: r for r in RecordReader.of(ctx, item_obj, (), conn.dialect.name).read(
            conn, where=ctx.table("SubscriptionItem").c.id.in_({row["subscriptionitem"] for row in rows}))}
        subs = {r["id"]: r for r in RecordReader.of(ctx, sub_obj, (), conn.dialect.name).read(
            conn, where=ctx.table("Subscription").c.id.in_({_ref(i.get("subscription")) for i in items.values()}))}
    for row in rows:
        item = items[row["subscriptionitem"]]
        subscription = subs[_ref(item.get("subscription"))]
        out.lines.append(f"line {row['sequence']} '{row['title']}': {item_obj.name} {item.get('name')} "
                         f"({item.get('itemkey') or item['id']}, {item.get('billingtype')}) of {sub_obj.name} "
                         f"{subscription.get('name')}, service period {row['serviceperiodstart']}.."
                         f"{row['serviceperiodend']}, {row['quantity']} x {row['unitprice']}")
        out.lines.extend("    " + text for text in _period_trace(subscription, item, row))
    return out


def _period_trace(subscription: dict, item: dict, line: dict) -> list[str]:
    start: date | None = line.get("serviceperiodstart")
    end: date | None = line.get("serviceperiodend")
    if start is None or end is None:
        return ["the line has no service period"]
    try:
        decision = item_decision(subscription, {**item, "nextserviceperiodstart": start}, end)
    except PeriodError as error:
        return [f"the item's terms no longer decide a period: {error}"]
    trace = [text for text in decision.trace if not text.startswith(("not yet due", "service period"))]
    charge = next((c for c in decision.charges if c.start == start), None)
    if charge is None:
        return trace + ["today's terms would not bill this period (the item or subscription changed since)"]
    trace.append(charge.describe())
    stored = line.get("unitprice")
    if stored is not None and Decimal(stored) != charge.amount:
        trace.append(f"note: today's terms give {charge.amount} per unit; the line keeps {stored} from its run")
    return trace


def _ref(value: object) -> object:
    return value.get("id") if isinstance(value, dict) else value
