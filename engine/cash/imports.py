"""Payment import from CSV (``metabill payment import FILE``).

One payment, refund or prepayment per row; the header names the columns
(case-insensitive, any order):

``Invoice`` (invoice number) or ``Account`` (account number), ``Amount``
(positive, at most two decimals, ``.`` as decimal point), ``Date``
(YYYY-MM-DD), and optionally ``Type`` (Payment — the default —, Prepayment
or Refund), ``Reference``, ``PaymentMethod``, ``PaymentProvider``,
``BankAccountId``, ``TransactionNo``, ``BalanceAssignmentKey``.

All or nothing: every row is checked first (file:row:field messages, every
problem at once, nothing touched); then the rows are registered in order in
the caller's transaction, each under a savepoint so one failing row does not
confuse the messages of the next, and any failure raises
:class:`ImportFailed` with all messages, so the caller's transaction rolls
back and nothing is written.

Idempotent with transaction numbers: a row whose ``TransactionNo`` is
already on a balance is skipped (reported), so importing the same bank
statement twice registers it once. A transaction number twice in one file
is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from engine.config.values import ValueProblem, parse_decimal
from engine.storage.context import Context
from engine.storage.csvio import RecordError, csv_records

from .errors import ImportFailed, PaymentError
from .payments import PaymentDetails, register_account_payment, register_payment, register_refund

COLUMNS = ("invoice", "account", "amount", "date", "type", "reference", "paymentmethod", "paymentprovider",
           "bankaccountid", "transactionno", "balanceassignmentkey")
TYPES = ("Payment", "Prepayment", "Refund")


@dataclass(frozen=True)
class PaymentRow:
    """One checked row of the file, ready to register."""

    line: int
    header: dict[str, str]        # lower-case column -> the column as written
    invoice: str | None
    account: str | None
    amount: Decimal
    when: date
    type: str
    details: PaymentDetails


@dataclass
class ImportReport:
    """What an import registered and which rows it skipped as registered already."""

    file: str
    registered: int = 0
    skipped: list[str] = field(default_factory=list)  # "file:row: why"
    total: Decimal = Decimal("0.00")


def read_rows(path: Path) -> tuple[list[PaymentRow], list[RecordError]]:
    """Parse and check every row (no database)."""
    display = str(path)
    errors: list[RecordError] = []
    rows: list[PaymentRow] = []
    if not path.is_file():
        return [], [RecordError(display, None, None, "no such file")]
    header: dict[str, str] = {}
    positions: dict[str, int] = {}
    seen_transactions: dict[str, int] = {}
    for line, cells in csv_records(path, display, errors.append):
        if not header:
            for index, cell in enumerate(cells):
                key = cell.strip().lower()
                if key not in COLUMNS:
                    errors.append(RecordError(display, line, cell, f"unknown column; expected some of: "
                                                                  f"{', '.join(c for c in COLUMNS)}"))
                elif key in positions:
                    errors.append(RecordError(display, line, cell, "column given twice"))
                else:
                    header[key], positions[key] = cell, index
            for required in ("amount", "date"):
                if required not in positions:
                    errors.append(RecordError(display, line, None, f"the header lacks the column {required!r}"))
            if "invoice" not in positions and "account" not in positions:
                errors.append(RecordError(display, line, None, "the header needs an Invoice or an Account column"))
            if errors:
                return [], errors
            continue

        def cell(name: str) -> str:
            index = positions.get(name)
            return cells[index].strip() if index is not None and index < len(cells) else ""

        def bad(name: str, message: str) -> None:
            errors.append(RecordError(display, line, header.get(name, name), message))

        before = len(errors)
        invoice, account = cell("invoice") or None, cell("account") or None
        if (invoice is None) == (account is None):
            bad("invoice" if "invoice" in header else "account", "give either an invoice number or an account number")
        amount = Decimal("0")
        try:
            amount = parse_decimal(cell("amount"))
            if amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
                bad("amount", f"must be positive with at most two decimals, got {cell('amount')}")
        except ValueProblem as problem:
            bad("amount", str(problem) if cell("amount") else "required")
        when = date.min
        try:
            when = date.fromisoformat(cell("date"))
        except ValueError:
            bad("date", f"expected YYYY-MM-DD, got {cell('date')!r}" if cell("date") else "required")
        kind = cell("type") or "Payment"
        if kind not in TYPES:
            bad("type", f"{kind!r} is not one of {', '.join(TYPES)}")
        elif kind == "Prepayment" and invoice is not None:
            bad("type", "a prepayment goes to an account, not an invoice")
        transaction = cell("transactionno")
        if transaction:
            if transaction in seen_transactions:
                bad("transactionno", f"{transaction!r} is also on row {seen_transactions[transaction]}")
            seen_transactions.setdefault(transaction, line)
        if len(errors) == before:
            rows.append(PaymentRow(line, header, invoice, account, amount, when, kind, PaymentDetails(
                reference=cell("reference") or None, payment_method=cell("paymentmethod") or None,
                payment_provider=cell("paymentprovider") or None, bank_account_id=cell("bankaccountid") or None,
                transaction_no=transaction or None, assignment_key=cell("balanceassignmentkey") or None)))
    if not header and not errors:
        errors.append(RecordError(display, None, None, "the file is empty"))
    return rows, errors


def import_payments(conn: sa.Connection, ctx: Context, path: Path, *, run: str = "payment import") -> ImportReport:
    """Import the file inside the caller's transaction (see the module docstring)."""
    rows, errors = read_rows(path)
    if errors:
        raise ImportFailed(errors)
    display = str(path)
    report = ImportReport(display)
    balances = ctx.table("Balance")
    for row in rows:
        transaction = row.details.transaction_no
        if transaction and conn.execute(sa.select(balances.c.id).where(balances.c.transactionno == transaction)
                                        .limit(1)).first() is not None:
            report.skipped.append(f"{display}:{row.line}: transaction {transaction} is registered already")
            continue
        savepoint = conn.begin_nested()
        try:
            if row.type == "Refund":
                register_refund(conn, ctx, row.amount, row.when, invoice_name=row.invoice,
                                account_number=row.account, details=row.details, run=run)
            elif row.invoice is not None:
                register_payment(conn, ctx, row.invoice, row.amount, row.when, details=row.details, run=run)
            else:
                register_account_payment(conn, ctx, row.account, row.amount, row.when,  # type: ignore[arg-type]
                                         balance_type=row.type, details=row.details, run=run)
            savepoint.commit()
        except PaymentError as error:
            savepoint.rollback()
            column = "invoice" if row.invoice is not None else "account"
            errors.append(RecordError(display, row.line, row.header.get(column, column), str(error)))
            continue
        report.registered += 1
        report.total += row.amount
    if errors:
        raise ImportFailed(errors)
    return report
