"""The finalization chain as the product runs it.

:func:`engine.booking.finalize.finalize_invoices` numbers, opens and books
draft invoices; the stages that follow in the same batch transaction belong
to higher layers and are handed to it from here, so dependencies keep
pointing one way (booking never imports cash):

1. the finalization write-off of small invoices (Finalization Write-Off
   Amount, ``engine.booking.balances``);
2. cash-management entries and installments, when the integration is on.

Every caller that finalizes for a user (the CLI, the demo, ``--finalize`` of
an invoice run) goes through :func:`finalize`.
"""

from __future__ import annotations

from datetime import date
from typing import Sequence

import sqlalchemy as sa

from engine.booking.finalize import FinalizationStage, FinalizeReport, finalize_invoices
from engine.config.model import OrgModel


def finalization_stages(model: OrgModel) -> tuple[FinalizationStage, ...]:
    """The stages after booking, in order."""
    from engine.booking.balances import apply_finalization_write_offs  # also refreshes Account.Balance
    from engine.cash.entries import create_entries  # cash-management entries and installments: the last stage

    return (apply_finalization_write_offs, create_entries)


def finalize(engine: sa.Engine, model: OrgModel, invoice_ids: Sequence[int], *,
             today: date | None = None) -> FinalizeReport:
    """Finalize drafts with every stage of the chain."""
    return finalize_invoices(engine, model, invoice_ids, today=today, stages=finalization_stages(model))
