"""The finalization stage "create entries" of the cash-management
integration (domain-spec §4.2 steps 6–9, §8.3).

:func:`create_entries` has the :data:`engine.booking.finalize.FinalizationStage`
signature and runs in the batch's transaction after the invoices were
numbered, opened and booked (and after the finalization write-off). With
``GlobalSettings.EnableCashManagementIntegration`` off it does nothing.
Otherwise, for the whole batch at once:

1. a cancellation invoice cancels the live entries of the invoice it
   cancels (reason = the cancellation reason, Cancellation No./Id = the
   cancellation invoice; their entry items are deleted, so the payments
   behind them are free CM money again) and gets no entry of its own;
2. every other invoice with a non-zero total gets one entry per installment
   (made by the stage before, :func:`engine.cash.finalization.create_installments`,
   with or without cash management), else one entry;
3. a partial credit (type Credit with a related Open invoice) reduces that
   invoice's entries (:mod:`engine.cash.cm_settlement`);
4. money already on the invoices (e.g. Prepaid balances) becomes CM
   payments with entry items, and write-offs, settlements and clearings
   (also the final-invoice clearing of sub invoices) become reductions;
5. free CM money of the accounts is assigned to the new entries (payment and
   prepaid entry assignment on finalization).

Writes are bulk inserts and executemany updates for the whole batch.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from engine.booking.balances import refresh_accounts, refresh_invoices
from engine.storage.context import Context

from .cm_core import (
    PROCESS_PREPAID,
    assign_free_money,
    cancel_entries,
    enabled,
    expected_entries,
    insert_entries,
    live_entries,
    mirror_balances,
    refresh_entries,
    select_in,
    wants_entries,
)
from .cm_payments import migrate_balances, unmigrated_balances
from .cm_settlement import apply_partial_credits

RUN = "finalization"


def create_entries(conn: sa.Connection, ctx: Context, invoices: list[dict]) -> None:
    """The stage (see the module docstring)."""
    if not enabled(ctx) or not invoices:
        return
    when = max((i.get("date") or date.today()) for i in invoices)
    cancellations = [i for i in invoices if i.get("type") == "Cancelation" and i.get("relatedinvoice")]
    if cancellations:
        originals = live_entries(conn, ctx, [c["relatedinvoice"] for c in cancellations])
        for cancellation in cancellations:
            cancel_entries(conn, ctx, originals.get(cancellation["relatedinvoice"], []),
                           str(cancellation.get("cancelationreason") or "Invoice canceled"), cancellation=cancellation)

    regular = [i for i in invoices if wants_entries(i)]
    if regular:
        ids = [i["id"] for i in regular]
        accounts = {a["id"]: a for a in select_in(conn, ctx, "Account", "id", [i["account"] for i in regular])}
        # The installments were made by the stage before (engine.cash.finalization.create_installments).
        installments: dict[int, list[dict]] = {}
        for row in select_in(conn, ctx, "Installment", "invoice", ids, order=("invoice", "sequence", "id")):
            installments.setdefault(row["invoice"], []).append(row)
        entries: list[dict] = []
        for invoice in regular:
            entries.extend(expected_entries(ctx, invoice, installments.get(invoice["id"], []),
                                            accounts.get(invoice["account"], {})))
        insert_entries(conn, ctx, entries, RUN)

        # Money put on the drafts before finalization (prepaid) becomes CM payments.
        prepaid = unmigrated_balances(conn, ctx, invoice_ids=ids, include_free=False)
        migrate_balances(conn, ctx, prepaid, process=PROCESS_PREPAID, run=RUN)

        partial = [i for i in regular if i.get("type") == "Credit" and i.get("relatedinvoice")]
        apply_partial_credits(conn, ctx, partial)

    touched = {i["id"] for i in regular}
    touched |= {i["relatedinvoice"] for i in invoices if i.get("relatedinvoice")}
    finals = [i["id"] for i in invoices if i.get("type") == "Final"]
    if finals:
        t = ctx.table("Invoice")
        touched |= {r["id"] for r in select_in(conn, ctx, "Invoice", "finalinvoice", finals,
                                               t.c.status.in_(("Open", "Paid")))}
    mirror_balances(conn, ctx, touched, when, process=None, run=RUN)
    if regular:
        fresh = select_in(conn, ctx, "Invoice", "id", [i["id"] for i in regular])
        assign_free_money(conn, ctx, fresh, RUN)
    refresh_entries(conn, ctx, touched)
    refresh_invoices(conn, ctx, touched)
    refresh_accounts(conn, ctx, {i["account"] for i in invoices})
    # The rows handed in follow the invoices' new balances, for any later stage.
    if touched:
        current = {r["id"]: r for r in select_in(conn, ctx, "Invoice", "id", [i["id"] for i in invoices])}
        for invoice in invoices:
            row = current.get(invoice["id"])
            if row is not None:
                invoice.update(balance=row["balance"], status=row["status"], paymentdate=row.get("paymentdate"))
