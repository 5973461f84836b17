"""NextServicePeriodStart: where an item's billing stands, kept at finalization.

Domain-spec §4.2 (i) and the cancellation concept, step 7: finalizing an
invoice that bills subscription items advances each item's
``NextServicePeriodStart`` past the periods finalized invoices bill without a
gap from where it stands (never backwards, and never past a period that is
still a draft: drafts may be finalized out of order, and a deleted draft's
period must be billed again);
finalizing the cancellation of such an invoice sets it back to the first day
the cancelled invoice billed (never forwards), so the next run bills those
periods again (their claims were released with the cancellation, see
:mod:`engine.billing.service_claims`).

:func:`advance_service_periods` is a finalization stage (the signature of
``engine.booking.finalize.FinalizationStage``), composed into the chain by
``engine/project.py``; it runs inside the batch's transaction.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Sequence

import sqlalchemy as sa

from engine.domain.batching import chunks
from engine.storage.bulk import update_by_id
from engine.storage.context import Context

CANCELATION = "Cancelation"
#: Invoices whose lines do not (or no longer) count as billed for good.
NOT_FINAL = ("Draft", "Pre-Draft", "Canceled")
_CHUNK = 500


def advance_service_periods(conn: sa.Connection, ctx: Context, invoices: Sequence[dict]) -> None:
    """Advance (or, for cancellations, set back) the NextServicePeriodStart
    of the subscription items the finalized ``invoices`` bill.

    Advancing walks the item's periods billed by finalized, live invoices
    from where it stands (its start when nothing was billed) for as long as
    they follow each other without a gap: a later period finalized while an
    earlier one is still a draft does not carry it past the draft's period,
    which would be lost to billing if that draft were deleted."""
    line_obj = ctx.obj("InvoiceLineItem")
    item_field = line_obj.field("SubscriptionItem")
    if item_field is None or not invoices:
        return
    kinds = {invoice["id"]: invoice.get("type") == CANCELATION for invoice in invoices}
    lines = ctx.table("InvoiceLineItem")
    item_column = lines.c[item_field.column_name]
    touched: set[int] = set()
    back: dict[int, date] = {}
    for chunk in chunks(sorted(kinds), _CHUNK):
        rows = conn.execute(
            sa.select(lines.c.invoice, item_column, sa.func.min(lines.c.serviceperiodstart))
            .where(lines.c.invoice.in_(chunk), item_column.is_not(None))
            .group_by(lines.c.invoice, item_column))
        for invoice_id, item_id, first in rows:
            if kinds[invoice_id]:
                if first is not None and (item_id not in back or first < back[item_id]):
                    back[item_id] = first
            else:
                touched.add(item_id)
    if not touched and not back:
        return
    items, subs = ctx.table("SubscriptionItem"), ctx.table("Subscription")
    item_obj, sub_obj = ctx.obj("SubscriptionItem"), ctx.obj("Subscription")
    nsps = items.c[item_obj.field("NextServicePeriodStart").column_name]  # type: ignore[union-attr]
    start = sa.func.coalesce(items.c[item_obj.field("StartDate").column_name],  # type: ignore[union-attr]
                             subs.c[sub_obj.field("StartDate").column_name])  # type: ignore[union-attr]
    parent = items.c[item_obj.field("Subscription").column_name]  # type: ignore[union-attr]
    current: dict[int, tuple[date | None, date | None]] = {}
    for chunk in chunks(sorted(touched | set(back)), _CHUNK):
        for row in conn.execute(sa.select(items.c.id, nsps, start).select_from(items.join(subs, subs.c.id == parent))
                                .where(items.c.id.in_(chunk))):
            current[row[0]] = (row[1], row[2])
    finalized = _finalized_periods(conn, ctx, item_column, sorted(touched))
    changes = []
    for item_id, (value, first_day) in current.items():
        new = value
        if item_id in touched:
            cursor = value or first_day
            for period_start, period_end in finalized.get(item_id, []):
                if cursor is None or period_start > cursor:
                    break
                if period_end is not None and period_end >= cursor:
                    cursor = period_end + timedelta(days=1)
            if cursor is not None and (new is None or cursor > new):
                new = cursor
        if item_id in back and new is not None and back[item_id] < new:
            new = back[item_id]
        if new != value:
            changes.append((item_id, (new,)))
    if changes:
        update_by_id(conn, ctx.obj("SubscriptionItem"), ["NextServicePeriodStart"], changes)


def _finalized_periods(conn: sa.Connection, ctx: Context, item_column: sa.Column,
                       item_ids: list[int]) -> dict[int, list[tuple[date, date | None]]]:
    """The service periods of the items billed by finalized, live invoices, in order."""
    lines, invoices = ctx.table("InvoiceLineItem"), ctx.table("Invoice")
    out: dict[int, list[tuple[date, date | None]]] = {}
    for chunk in chunks(item_ids, _CHUNK):
        rows = conn.execute(
            sa.select(item_column, lines.c.serviceperiodstart, lines.c.serviceperiodend)
            .select_from(lines.join(invoices, invoices.c.id == lines.c.invoice))
            .where(item_column.in_(chunk), lines.c.serviceperiodstart.is_not(None),
                   invoices.c.status.not_in(NOT_FINAL), invoices.c.type != CANCELATION)
            .order_by(item_column, lines.c.serviceperiodstart))
        for item_id, first, last in rows:
            out.setdefault(item_id, []).append((first, last))
    return out
