"""Deleting draft invoices and releasing the source records they billed.

Only drafts can be deleted: a finalized invoice is corrected by cancellation.
Deleting a draft removes its lines (master-detail cascade), its billing
claims, and clears ``ON_Invoice<sfx>`` on every source record that points to
it, on every object and suffix, so the next invoice run bills those records
again (domain-spec §3.5 "release").
"""

from __future__ import annotations

from typing import Iterable, Sequence

import sqlalchemy as sa

from engine.config.model import FieldType
from engine.domain.errors import EngineError, Where
from engine.storage.context import Context
from engine.storage.schema import CLAIM


class DraftError(EngineError, ValueError):
    """Draft invoices cannot be deleted: some are unknown or not drafts
    (finalized invoices are corrected by cancellation); nothing was deleted."""

    code = "R211"


def invoice_backrefs(ctx: Context) -> list[tuple[str, str]]:
    """(table, column) of every lookup to Invoice named ON_Invoice<sfx>__c:
    the write-back fields of invoice-run sources."""
    refs = []
    for obj in ctx.model.data_objects:
        for fdef in obj.fields:
            if (
                fdef.type is FieldType.LOOKUP
                and (fdef.reference_to or "").lower() == "invoice"
                and fdef.name.lower().startswith("on_invoice")
                and fdef.is_custom
            ):
                refs.append((obj.table_name, fdef.column_name))
    return refs


def delete_drafts(conn: sa.Connection, ctx: Context, invoice_ids: Sequence[int]) -> int:
    """Delete the given draft invoices inside the caller's transaction; return
    how many were deleted. Raises DraftError (nothing deleted) when one of them
    is unknown or not a draft."""
    if not invoice_ids:
        return 0
    invoice = ctx.table("Invoice")
    ids = sorted(set(invoice_ids))
    rows = conn.execute(sa.select(invoice.c.id, invoice.c.name, invoice.c.status).where(invoice.c.id.in_(ids))).all()
    found = {r.id: r for r in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise DraftError(f"no invoice with id {', '.join(map(str, missing))}",
                         where=Where(object="Invoice", record=str(missing[0])) if len(missing) == 1 else None)
    final = [r.name for r in rows if r.status != "Draft"]
    if final:
        raise DraftError(f"only drafts can be deleted; {', '.join(final)} are finalized: cancel them instead",
                         where=Where(object="Invoice", record=final[0]) if len(final) == 1 else None)
    for table_name, column in invoice_backrefs(ctx):
        table = ctx.metadata.tables[table_name]
        conn.execute(sa.update(table).where(table.c[column].in_(ids)).values({column: None}))
    conn.execute(sa.delete(CLAIM).where(CLAIM.c.invoice_id.in_(ids)))
    line = ctx.table("InvoiceLineItem")
    conn.execute(sa.delete(line).where(line.c.invoice.in_(ids)))
    result = conn.execute(sa.delete(invoice).where(invoice.c.id.in_(ids)))
    return result.rowcount or 0


def draft_ids(conn: sa.Connection, ctx: Context, *, run_id: int | None = None, names: Iterable[str] = ()) -> list[int]:
    """Ids of the drafts of a run and/or with the given names."""
    invoice = ctx.table("Invoice")
    clauses = []
    if run_id is not None:
        clauses.append(invoice.c.invoicerun == run_id)
    names = list(names)
    if names:
        clauses.append(invoice.c.name.in_(names))
    if not clauses:
        return []
    query = sa.select(invoice.c.id).where(sa.or_(*clauses)).where(invoice.c.status == "Draft").order_by(invoice.c.id)
    return [r.id for r in conn.execute(query)]
