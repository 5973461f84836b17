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
is an error, and so is a row without one that repeats an earlier row of the
file cell for cell: a bank statement exported twice into one file would
otherwise be registered twice (give each payment a ``TransactionNo`` or a
``Reference`` to import two identical payments).

Every cell is checked where it enters, against the Balance field it fills
(:func:`engine.config.values.coerce`): amounts of any length, dates outside
the business dates (:data:`engine.config.values.BUSINESS_DATES`) and texts
longer than their column are refused as ``file:row:column`` problems instead
of failing in the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from engine.config.model import FieldDef, ObjectDef
from engine.config.values import ValueProblem, check_business_date, check_number_shape, coerce, parse_decimal
from engine.storage.context import Context
from engine.storage.csvio import RecordError, csv_records

from .errors import ImportFailed, PaymentError
from .payments import PaymentDetails, register_account_payment, register_payment, register_refund

COLUMNS = ("invoice", "account", "amount", "date", "type", "reference", "paymentmethod", "paymentprovider",
           "bankaccountid", "transactionno", "balanceassignmentkey")
TYPES = ("Payment", "Prepayment", "Refund")
#: The Balance field each optional text column fills (its length is checked).
TEXT_FIELDS = {"reference": "Reference", "paymentmethod": "PaymentMethod", "paymentprovider": "PaymentProvider",
               "bankaccountid": "BankAccountId", "transactionno": "TransactionNo",
               "balanceassignmentkey": "BalanceAssignmentKey"}


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


def read_rows(path: Path, balance: ObjectDef | None = None) -> tuple[list[PaymentRow], list[RecordError]]:
    """Parse and check every row (no database). With ``balance`` (the
    Balance object of the org), amounts and texts are checked against the
    fields they fill, too."""
    display = str(path)
    errors: list[RecordError] = []
    rows: list[PaymentRow] = []
    if not path.is_file():
        return [], [RecordError(display, None, None, "no such file")]
    header: dict[str, str] = {}
    positions: dict[str, int] = {}
    seen_transactions: dict[str, int] = {}
    seen_rows: dict[tuple[str, ...], int] = {}
    fields = _balance_fields(balance)
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
                bad("amount", f"must be positive with at most two decimals, got {cell('amount')[:40]}")
            elif "amount" in fields:
                check_number_shape(amount, fields["amount"].precision, fields["amount"].scale)
        except ValueProblem as problem:
            bad("amount", str(problem) if cell("amount") else "required")
        when = date(2000, 1, 1)
        try:
            when = check_business_date(date.fromisoformat(cell("date")))
        except ValueProblem as problem:
            bad("date", str(problem))
        except ValueError:
            bad("date", f"expected YYYY-MM-DD, got {_shown(cell('date'))}" if cell("date") else "required")
        kind = cell("type") or "Payment"
        if kind not in TYPES:
            bad("type", f"{_shown(kind)} is not one of {', '.join(TYPES)}")
        elif kind == "Prepayment" and invoice is not None:
            bad("type", "a prepayment goes to an account, not an invoice")
        for column in TEXT_FIELDS:
            value = cell(column)
            if value and column in fields:
                try:
                    coerce(fields[column], value)
                except ValueProblem as problem:
                    bad(column, str(problem))
        transaction = cell("transactionno")
        if transaction:
            if transaction in seen_transactions:
                bad("transactionno", f"{_shown(transaction)} is also on row {seen_transactions[transaction]}")
            seen_transactions.setdefault(transaction, line)
        else:
            same = tuple(cell(column) for column in COLUMNS)
            if same in seen_rows:
                bad(None, f"repeats row {seen_rows[same]} cell for cell and has no TransactionNo; a payment is "
                          "imported once (give each payment a TransactionNo or Reference to import both)")
            seen_rows.setdefault(same, line)
        if len(errors) == before:
            rows.append(PaymentRow(line, header, invoice, account, amount, when, kind, PaymentDetails(
                reference=cell("reference") or None, payment_method=cell("paymentmethod") or None,
                payment_provider=cell("paymentprovider") or None, bank_account_id=cell("bankaccountid") or None,
                transaction_no=transaction or None, assignment_key=cell("balanceassignmentkey") or None)))
    if not header and not errors:
        errors.append(RecordError(display, None, None, "the file is empty"))
    return rows, errors


def _balance_fields(balance: ObjectDef | None) -> dict[str, FieldDef]:
    """The Balance fields the columns fill (those the org has)."""
    if balance is None:
        return {}
    names = {"amount": "Amount", **TEXT_FIELDS}
    found = {column: balance.field(name) for column, name in names.items()}
    return {column: fdef for column, fdef in found.items() if fdef is not None and fdef.is_stored}


def _shown(text: str) -> str:
    """A cell in a message: quoted, cut when long."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + f"... ({len(text)} characters)"


def import_payments(conn: sa.Connection, ctx: Context, path: Path, *, run: str = "payment import") -> ImportReport:
    """Import the file inside the caller's transaction (see the module docstring)."""
    rows, errors = read_rows(path, ctx.obj("Balance"))
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
