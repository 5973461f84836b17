"""The audit's checks, registered in one list, like the configuration checks.

Each check is a small function ``(run) -> Iterator[Finding]`` that reads the
database through ``run.conn`` (one read-only transaction for all of them) and
may add to the report's tables and counts. The order below is the order of
the report: the journal first (its pass builds the reconciliation table),
then invoices, balances, billing, numbers, projects, exports and documents.
"""

from __future__ import annotations

from typing import Callable, Iterator

from .balances import check_balances
from .base import AuditRun
from .claims import check_billed_once, check_claims
from .datev import check_datev_files, check_datev_marks
from .documents import check_einvoices, check_issued_documents
from .findings import Finding
from .interim import check_interim
from .invoices import check_accounts, check_invoices
from .journal import check_periods, check_postings
from .numbers import check_numbers
from .sepa import check_collections, check_exported_balances, check_sepa_files, check_times_exported

Check = Callable[[AuditRun], Iterator[Finding]]

CHECKS: tuple[Check, ...] = (
    check_postings,
    check_periods,
    check_invoices,
    check_accounts,
    check_balances,
    check_claims,
    check_billed_once,
    check_numbers,
    check_interim,
    check_datev_marks,
    check_datev_files,
    check_times_exported,
    check_collections,
    check_exported_balances,
    check_sepa_files,
    check_issued_documents,
    check_einvoices,
)


def check_name(check: Check) -> str:
    """``check_datev_marks`` -> ``datev_marks``: the name findings carry."""
    name = check.__name__
    return name[len("check_"):] if name.startswith("check_") else name
