"""Command services of the booking package that compose its steps.

``metabill cancel`` creates the cancellation draft (:mod:`engine.booking.cancel`)
and finalizes it (:mod:`engine.booking.finalize`), which completes the
cancellation in the same transaction as the numbering. The finalization's
later stages come from the caller (``engine/project.py`` composes them), as
for every finalization.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Sequence

import sqlalchemy as sa

from engine.storage.context import Context

from .cancel import create_cancellation, draft_name
from .errors import CancelError, invoice_where
from .finalize import FinalizationStage, Finalized, finalize_invoices


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
    """Cancel the finalized invoice ``invoice_name``: a cancellation draft
    (committed on its own), then, unless ``draft_only``, its finalization on
    ``when`` (default today) with ``stages``. Raises :class:`CancelError`
    when the invoice cannot be cancelled or the cancellation cannot be
    finalized (the draft then stays, as a draft)."""
    with engine.begin() as conn:
        draft_id = create_cancellation(conn, ctx, invoice_name, reason)
    name = draft_name(draft_id)
    if draft_only:
        return Cancellation(invoice_name, draft_id, name, None)
    report = finalize_invoices(engine, ctx, [draft_id], today=when, stages=stages)
    for _, message in report.failures:
        raise CancelError(f"the cancellation of {invoice_name} could not be finalized: {message}",
                          where=invoice_where(invoice_name),
                          hint=f"the cancellation stays the draft {name}")
    return Cancellation(invoice_name, draft_id, name, report.finalized[0])
