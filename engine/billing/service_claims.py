"""Claims of billed service periods: a subscription item's period is billed once.

``_mb_service_claim`` holds one row per billed service period of an item
(the item and the period's first day -> the invoice that bills it), written
in the transaction that writes the invoice. Its primary key is the guarantee:
a second run, or a run in another process, cannot claim the period again.

A claim counts while its invoice exists and is not cancelled. A draft deleted
with ``delete-drafts`` or an invoice cancelled releases its periods: they
are billed again by the next run. Such stale claims are removed by the run
before it decides what is due (:func:`release_stale_claims`), inside the same
transaction that claims anew, so the table never needs to be told about
deletions and cancellations.

The table is created on first use (like ``_mb_job_slot``), so databases
migrated before subscriptions existed need no migration.
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


def release_stale_claims(conn: sa.Connection, ctx: Context, item_ids: Sequence[int]) -> int:
    """Delete the claims of ``item_ids`` whose invoice is gone or cancelled; how many."""
    invoices = ctx.table("Invoice")
    status = invoices.c[ctx.obj("Invoice").field("Status").column_name]  # type: ignore[union-attr]
    alive = sa.select(invoices.c.id).where(invoices.c.id == SERVICE_CLAIM.c.invoice_id,
                                           status.not_in(RELEASED_STATUSES))
    removed = 0
    for chunk in chunks(sorted(set(item_ids)), _CHUNK):
        result = conn.execute(sa.delete(SERVICE_CLAIM).where(SERVICE_CLAIM.c.item_id.in_(chunk), ~sa.exists(alive)))
        removed += result.rowcount or 0
    return removed


def live_claims(conn: sa.Connection, item_ids: Sequence[int]) -> set[tuple[int, date]]:
    """(item, first day) of every claimed period of ``item_ids``."""
    out: set[tuple[int, date]] = set()
    for chunk in chunks(sorted(set(item_ids)), _CHUNK):
        rows = conn.execute(sa.select(SERVICE_CLAIM.c.item_id, SERVICE_CLAIM.c.period_start)
                            .where(SERVICE_CLAIM.c.item_id.in_(chunk)))
        out.update((row[0], row[1]) for row in rows)
    return out


def claims_of_invoice(conn: sa.Connection, invoice_id: int) -> list[tuple[int, date, date]]:
    """(item, first day, last day) of the periods an invoice claims (empty without the table)."""
    if not sa.inspect(conn).has_table(SERVICE_CLAIM.name):
        return []
    rows = conn.execute(sa.select(SERVICE_CLAIM.c.item_id, SERVICE_CLAIM.c.period_start, SERVICE_CLAIM.c.period_end)
                        .where(SERVICE_CLAIM.c.invoice_id == invoice_id).order_by(SERVICE_CLAIM.c.item_id,
                                                                                  SERVICE_CLAIM.c.period_start))
    return [(row[0], row[1], row[2]) for row in rows]
