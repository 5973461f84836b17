"""The composition root: where the packages are wired together.

Every command goes through here. :func:`load_project` is the one loader entry
point: it runs :func:`engine.config.loader.load_org` (which checks the
metadata itself) with every domain's checks (rules, billing, booking, cash,
documents), so
``validate-config`` and every other command see the same diagnostics.
:func:`open_context` builds the command's runtime context from a valid
load, and :func:`finalization_stages` composes the finalization chain
(booking numbers and books the drafts; the cash layer's stages follow in the
same batch transaction).

Packages below never import this module; it imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from engine.config.checking import Check
from engine.config.loader import LoadResult, load_org
from engine.domain.errors import EngineError, Problem, Where

if TYPE_CHECKING:  # the context pulls in the database layer: validate-config never needs it
    from engine.storage.context import Context


def all_checks() -> tuple[Check, ...]:
    """Every domain's checks (the loader adds the metadata's own)."""
    from engine.billing.checks import CHECKS as billing
    from engine.booking.checks import CHECKS as booking
    from engine.cash.checks import CHECKS as cash
    from engine.documents.checks import CHECKS as documents
    from engine.domain.checks import CHECKS as rules
    from engine.exports.checks import CHECKS as exports

    return (*billing, *booking, *documents, *rules, *cash, *exports)


def load_project(path: str | Path) -> LoadResult:
    """Load, validate and resolve the org at ``path`` with every check.
    Never raises for anything the org contains."""
    return load_org(path, all_checks())


class ConfigurationInvalid(EngineError):
    """The org has configuration errors; commands that use it refuse to run."""

    code = "R001"

    def __init__(self, org_dir: Path | str, result: LoadResult, shown: int = 20):
        errors = result.errors
        more = len(errors) - shown
        super().__init__(
            f"the configuration in {org_dir} has {len(errors)} error(s)"
            + (f" ({more} more not shown)" if more > 0 else "")
            + "; run 'metabill validate-config' and fix them first",
        )
        self.result = result
        self.shown = errors[:shown]


def open_context(org_dir: str | Path) -> Context:
    """The runtime context of a valid org, or :class:`ConfigurationInvalid`."""
    from engine.storage.context import Context

    result = load_project(org_dir)
    if not result.ok:
        raise ConfigurationInvalid(org_dir, result)
    return Context(result.model)


def finalization_stages(ctx: Context) -> tuple:
    """The stages after booking, in order (domain-spec §4.2): the Prepaid
    balances of PP_ fields, the assignment of free balances to the new
    invoices (without cash management), the finalization write-off of small
    invoices (after the assignment, so it sees the real open amount; it also
    refreshes Account.Balance), the installments of payment plans, the
    cash-management entries (a no-op with the integration off), and last the
    issued documents (rendered and stored, with the invoice's fingerprint).
    First of all, the subscription items' NextServicePeriodStart follows
    the periods the invoices bill (set back by a cancellation)."""
    from engine.billing.subscription_state import advance_service_periods
    from engine.booking.balances import apply_finalization_write_offs
    from engine.cash.entries import create_entries
    from engine.cash.finalization import assign_free_balances, create_installments, create_prepaid_balances
    from engine.documents.finalization import issue_documents

    return (advance_service_periods, create_prepaid_balances, assign_free_balances, apply_finalization_write_offs, create_installments,
            create_entries, issue_documents)


def finalize(engine, ctx: Context, invoice_ids: Sequence[int], *, today=None):
    """Finalize drafts with every stage of the chain (the CLI, the demo and
    ``invoice-run --finalize`` all go through here)."""
    from engine.booking.finalize import finalize_invoices

    return finalize_invoices(engine, ctx, invoice_ids, today=today, stages=finalization_stages(ctx))


class NothingToFinalize(EngineError):
    """There are no draft invoices to finalize among those asked for."""

    code = "R003"


class InvoicesNotFinalized(EngineError):
    """Some invoices could not be finalized and stay drafts; the others were
    finalized (one problem per invoice)."""

    code = "R004"


def finalize_drafts(engine, ctx: Context, *, run: str | int | None = None, names: Sequence[str] = (),
                    today=None):
    """``finalize``: the drafts of the invoice run ``run`` (name or id) and/or
    named ``names``, finalized with the whole chain; returns the report (its
    failures did not stop the others: :func:`finalization_failure` is the
    error to end with). Raises RunNotFound, :class:`NothingToFinalize`."""
    from engine.billing.service import find_drafts

    ids = find_drafts(engine, ctx, run=run, names=names)
    if not ids:
        raise NothingToFinalize("no draft invoices to finalize")
    return finalize(engine, ctx, ids, today=today)


def finalization_failure(report) -> EngineError | None:
    """The error a finalization report ends with: None when every invoice was
    finalized, else :class:`InvoicesNotFinalized` with a problem per invoice."""
    if not report.failures:
        return None
    return InvoicesNotFinalized(f"{len(report.failures)} invoice(s) could not be finalized",
                                problems=report.problems, partly_done=bool(report.finalized))


def cancel_invoice(engine, ctx: Context, invoice: str, *, reason: str | None = None, when=None,
                   draft_only: bool = False):
    """``cancel``: the cancellation invoice of the finalized ``invoice``,
    finalized with the whole chain unless ``draft_only``
    (:func:`engine.booking.services.cancel_invoice`). Raises CancelError."""
    from engine.booking.services import cancel_invoice as cancel

    return cancel(engine, ctx, invoice, reason=reason, when=when, draft_only=draft_only,
                  stages=finalization_stages(ctx))


__all__ = ["InvoicesNotFinalized", "NothingToFinalize", "cancel_invoice",
           "finalization_failure", "finalize_drafts", "ConfigurationInvalid", "Problem", "Where", "all_checks", "finalization_stages", "finalize",
           "load_project", "open_context"]
