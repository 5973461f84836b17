"""Command services of the booking package that compose its steps.

``metabill cancel`` is one transaction: the original invoice is locked, its
cancellation draft made (or the draft ``--draft-only`` left waiting is
taken) and finalized (:mod:`engine.booking.finalize`), which completes the
cancellation (:mod:`engine.booking.cancel`). So a cancellation that fails,
or a process killed halfway, leaves nothing behind, not even a draft that
would block the next attempt; two simultaneous cancellations of one invoice
make one cancellation (the second waits on the lock, is run again and finds
the invoice cancelled); and a cancellation racing a payment of the invoice
is run again after PostgreSQL's serialization failure
(:func:`engine.storage.retry.run_in_transaction`, REPEATABLE READ like every
finalization). The finalization's later stages come from the caller
(``engine/project.py`` composes them), as for every finalization.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Sequence

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.retry import run_in_transaction

from .cancel import cancellation_draft
from .errors import CancelError, FinalizeError, invoice_where
from .finalize import FinalizationStage, Finalized, finalize_in_transaction, prepare_stages


@dataclass(frozen=True)
class Cancellation:
    """The outcome of :func:`cancel_invoice`: the cancellation draft, and the
    finalized cancellation unless only the draft was asked for."""

    invoice: str
    draft_id: int
    draft_name: str
    finalized: Finalized | None


def cancel_invoice(engine: sa.Engine, ctx: Context, invoice_name: str, *, reason: str | None = None,
                   when: date | None = None, draft_only: bool = False,
                   stages: Sequence[FinalizationStage] = ()) -> Cancellation:
    """Cancel the finalized invoice ``invoice_name`` on ``when`` (default
    today), finalizing its cancellation with ``stages``, in one retried
    transaction; with ``draft_only`` only the draft is made (and committed).
    Raises :class:`CancelError` when the invoice cannot be cancelled or the
    cancellation cannot be finalized; nothing is written then."""
    day = when or date.today()
    invoice_table = ctx.table("Invoice")

    def work(conn: sa.Connection) -> Cancellation:
        draft_id = cancellation_draft(conn, ctx, invoice_name, reason)
        name = conn.execute(sa.select(invoice_table.c.name).where(invoice_table.c.id == draft_id)).scalar_one()
        if draft_only:
            return Cancellation(invoice_name, draft_id, name, None)
        try:
            report = finalize_in_transaction(conn, ctx, [draft_id], today=day, stages=stages)
        except FinalizeError as error:  # rolled back: no draft is left behind
            raise _not_finalized(invoice_name, str(error)) from None
        for _, message in report.failures:
            raise _not_finalized(invoice_name, message)
        return Cancellation(invoice_name, draft_id, name, report.finalized[0])

    if not draft_only:
        prepare_stages(ctx, stages)  # before the lock on the invoice is taken
    return run_in_transaction(engine, work, isolation_level="REPEATABLE READ")


def _not_finalized(invoice_name: str, message: str) -> CancelError:
    return CancelError(f"the cancellation of {invoice_name} could not be finalized: {message}",
                       where=invoice_where(invoice_name),
                       hint="nothing was changed: fix the cause and cancel again")
