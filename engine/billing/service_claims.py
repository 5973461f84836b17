"""Claims of billed service periods: a subscription item's period is billed once.

``_mb_service_claim`` holds one row per billed service period of an item
(the item and the period's first day -> the invoice that bills it), written
in the transaction that writes the invoice. Its primary key is the guarantee:
a second run, or a run in another process, cannot claim the period again.

A claim counts while its invoice exists and is not cancelled. A draft deleted
with ``delete-drafts`` or an invoice cancelled releases its periods: they
are billed again by the next run. Such stale claims are found by the run
before it decides what is due (:func:`read_claims`) and deleted
(:func:`delete_claims`) inside the transaction that claims anew, so the
table never needs to be told about deletions and cancellations.

The table is created on first use (``storage.db.ensure_table``, like
``_mb_job_slot``), so databases migrated before subscriptions existed need
no migration.
"""

from __future__ import annotations

from datetime import date
from typing import Sequence

import sqlalchemy as sa

from engine.domain.batching import chunks
from engine.storage.context import Context

_METADATA = sa.MetaData()

SERVICE_CLAIM = sa.Table(
    "_mb_service_claim",
    _METADATA,
    sa.Column("item_id", sa.BigInteger(), primary_key=True),
    sa.Column("period_start", sa.Date(), primary_key=True),
    sa.Column("period_end", sa.Date(), nullable=False),
    sa.Column("invoice_id", sa.BigInteger(), nullable=False, index=True),
    sa.Column("run_id", sa.BigInteger(), nullable=True),
)

#: Invoice statuses whose claims no longer count.
RELEASED_STATUSES = ("Canceled",)
_CHUNK = 500


def delete_claims(conn: sa.Connection, stale: list[dict]) -> None:
    """Delete the stale claims :func:`read_claims` found."""
    if stale:
        conn.execute(sa.delete(SERVICE_CLAIM).where(SERVICE_CLAIM.c.item_id == sa.bindparam("i"),
                                                    SERVICE_CLAIM.c.period_start == sa.bindparam("p"),
                                                    SERVICE_CLAIM.c.invoice_id == sa.bindparam("v")), stale)


def read_claims(conn: sa.Connection, ctx: Context, item_ids: Sequence[int],
                selections: Sequence[sa.ColumnElement[bool]] | None = None
                ) -> tuple[set[tuple[int, date]], list[dict]]:
    """The live claims (item, first day) of ``item_ids`` from each item's
    ``NextServicePeriodStart`` on, and the stale ones (their invoice deleted
    or released; as the bind parameters ``i``, ``p``, ``v`` of :func:`delete_claims`).
    ``selections``: conditions on SubscriptionItem that select exactly
    ``item_ids`` together (the ones the caller read them by), one statement
    each, instead of lists of ids (a few statements per batch, not one per
    500 items).

    What the run needs, read in one statement per chunk and proportional to
    what is open, not to the item's history: a claim before the item's
    ``NextServicePeriodStart`` bills a period a finalized, live invoice holds
    (the stage of :mod:`engine.billing.subscription_state` advances it only
    over those, and a cancellation sets it back to the cancelled invoice's
    first period), so it is neither stale nor looked at by the decision,
    which starts there. The seek ``(item_id, period_start >= start)`` runs on
    the claim table's primary key."""
    items, invoices = ctx.table("SubscriptionItem"), ctx.table("Invoice")
    nsps = items.c[ctx.obj("SubscriptionItem").field("NextServicePeriodStart").column_name]  # type: ignore[union-attr]
    status = invoices.c[ctx.obj("Invoice").field("Status").column_name]  # type: ignore[union-attr]
    claim = SERVICE_CLAIM.c
    since = sa.func.coalesce(nsps, sa.literal(date.min, sa.Date()))  # one range seek, also when never billed
    join = (items.join(SERVICE_CLAIM, sa.and_(claim.item_id == items.c.id, claim.period_start >= since))
            .outerjoin(invoices, invoices.c.id == claim.invoice_id))
    live: set[tuple[int, date]] = set()
    stale: list[dict] = []
    wheres = list(selections) if selections is not None else \
        [items.c.id.in_(chunk) for chunk in chunks(sorted(set(item_ids)), _CHUNK)]
    for where in wheres:
        rows = conn.execute(sa.select(claim.item_id, claim.period_start, claim.invoice_id, invoices.c.id, status)
                            .select_from(join).where(where))
        for item_id, period_start, invoice_id, found, invoice_status in rows:
            if found is None or invoice_status in RELEASED_STATUSES:
                stale.append({"i": item_id, "p": period_start, "v": invoice_id})
            else:
                live.add((item_id, period_start))
    return live, stale


def claims_of_invoice(conn: sa.Connection, invoice_id: int) -> list[tuple[int, date, date]]:
    """(item, first day, last day) of the periods an invoice claims (empty without the table)."""
    if not sa.inspect(conn).has_table(SERVICE_CLAIM.name):
        return []
    rows = conn.execute(sa.select(SERVICE_CLAIM.c.item_id, SERVICE_CLAIM.c.period_start, SERVICE_CLAIM.c.period_end)
                        .where(SERVICE_CLAIM.c.invoice_id == invoice_id).order_by(SERVICE_CLAIM.c.item_id,
                                                                                  SERVICE_CLAIM.c.period_start))
    return [(row[0], row[1], row[2]) for row in rows]
