"""The ``metabill bank`` commands as services: one function per command, each
with its own transaction (``service.write``: retried after a lost race on
PostgreSQL; ``dry_run`` is the same work rolled back) and a typed result.

* :func:`import_statement`: store a camt.053/camt.054/MT940 file (all or
  nothing, idempotent) and settle its lines: returns reverse their payment,
  received money is assigned when matching is sure, the rest waits;
* :func:`review`: the lines waiting, with the best candidates;
* :func:`assign_entry`, :func:`ignore_entry`: manual decisions;
  :func:`reassign_entry`: a payment moved to another invoice or account;
* :func:`refunds`: the credit balance strategy (``metabill bank refunds``);
* :func:`explain_entry`: the matching trace of a line;
* :func:`add_instrument`, :func:`instruments_from_accounts`,
  :func:`list_instruments`: payment instruments (``metabill instrument``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.db import transaction

from . import bank, bank_transfer, instruments
from . import refunds as refunds_module
from .matching import Decision
from .service import run_id, write
from .statement_import import import_statement_file


@dataclass
class BankImport:
    """What ``metabill bank import`` did."""

    file: str
    format: str | None
    statements: list[str] = field(default_factory=list)
    entries: int = 0
    skipped: list[str] = field(default_factory=list)
    settled: list[bank.Settled] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for s in self.settled if s.outcome == outcome)


def import_statement(engine: sa.Engine, ctx: Context, path: Path, *, run: str | None = None,
                     dry_run: bool = False, settle: bool = True) -> BankImport:
    """Import ``path`` and (unless ``settle`` is off) settle its new lines, in
    one transaction. :class:`~engine.cash.errors.StatementImportFailed`
    (R450) refuses the file; nothing is stored then."""
    run = run or run_id("bank import")

    def work(conn: sa.Connection) -> BankImport:
        stored = import_statement_file(conn, ctx, path, run=run)
        report = BankImport(stored.file, stored.format, stored.statements, len(stored.entry_ids), stored.skipped)
        if settle:
            report.settled = bank.settle_lines(conn, ctx, stored.entry_ids, run=run)
        return report

    return write(engine, work, dry_run=dry_run)


def review(engine: sa.Engine, ctx: Context) -> list[tuple[dict, Decision]]:
    """The lines waiting for a decision, each with matching's view of it."""
    with transaction(engine, readonly=True) as conn:
        return bank.review_list(conn, ctx)


def assign_entry(engine: sa.Engine, ctx: Context, entry: str, invoice: str, *, run: str | None = None) -> bank.Settled:
    """``metabill bank assign PE-... INV-...``: the line's money registered on
    the invoice. :class:`~engine.cash.errors.BankAssignmentError` (R451/R452)."""
    run = run or run_id("bank assign")

    def work(conn: sa.Connection) -> bank.Settled:
        row = bank.load_entry(conn, ctx, entry, lock=True)
        return bank.assign(conn, ctx, row, invoice, run=run, score=None, note=f"manual: assigned to {invoice}")

    return write(engine, work)


def reassign_entry(engine: sa.Engine, ctx: Context, entry: str, invoice: str, *, when: date | None = None,
                   run: str | None = None) -> bank.Settled:
    """``metabill bank reassign PE-... INV-...``: the line's payment moved to
    another invoice, of the same or another account (reversal and new
    payment, both booked). :class:`~engine.cash.errors.BankAssignmentError`."""
    run = run or run_id("bank reassign")
    return write(engine, lambda conn: bank_transfer.reassign(conn, ctx, entry, invoice, when=when or date.today(),
                                                             run=run))


def refunds(engine: sa.Engine, ctx: Context, entity: str, *, strategy: str | None = None, when: date | None = None,
            run: str | None = None, dry_run: bool = False) -> refunds_module.RefundReport:
    """``metabill bank refunds``: the credit balance strategy applied to the
    entity's credit balances. :class:`~engine.cash.errors.PaymentError`."""
    run = run or run_id("bank refunds")
    return write(engine, lambda conn: refunds_module.apply_strategy(conn, ctx, entity, strategy=strategy,
                                                                    when=when or date.today(), run=run),
                 dry_run=dry_run)


def ignore_entry(engine: sa.Engine, ctx: Context, entry: str, *, reason: str, run: str | None = None) -> bank.Settled:
    """``metabill bank ignore PE-... --reason ...``: off the review list, nothing settled."""
    run = run or run_id("bank ignore")
    return write(engine, lambda conn: bank.ignore(conn, ctx, bank.load_entry(conn, ctx, entry, lock=True),
                                                  reason=reason, run=run))


def explain_entry(engine: sa.Engine, ctx: Context, entry: str) -> tuple[dict, Decision | None]:
    """``metabill bank explain PE-...``: the line and matching's decision with its trace."""
    with transaction(engine, readonly=True) as conn:
        return bank.explain_entry(conn, ctx, entry)


def add_instrument(engine: sa.Engine, ctx: Context, given: instruments.InstrumentInput, *,
                   today: date | None = None, run: str | None = None) -> dict:
    """``metabill instrument add``: a checked payment instrument.
    :class:`~engine.cash.errors.InstrumentError` (R453)."""
    run = run or run_id("instrument add")
    return write(engine, lambda conn: instruments.add_instrument(conn, ctx, given, today=today or date.today(),
                                                                 run=run))


def instruments_from_accounts(engine: sa.Engine, ctx: Context, *, today: date | None = None,
                              run: str | None = None, dry_run: bool = False) -> instruments.InstrumentReport:
    """``metabill instrument from-accounts``: the accounts' bank data as instruments."""
    run = run or run_id("instrument from-accounts")
    return write(engine, lambda conn: instruments.instruments_from_accounts(conn, ctx, today=today or date.today(),
                                                                            run=run), dry_run=dry_run)


def list_instruments(engine: sa.Engine, ctx: Context) -> list[dict]:
    """``metabill instrument list``."""
    with transaction(engine, readonly=True) as conn:
        return instruments.list_instruments(conn, ctx)


__all__ = ["BankImport", "add_instrument", "assign_entry", "explain_entry", "ignore_entry", "import_statement",
           "instruments_from_accounts", "list_instruments", "reassign_entry", "refunds", "review"]
