"""Bank statements into the database: one ``BankStatement`` per statement and
one ``PaymentEntry`` per booked line (``metabill bank import FILE``).

All or nothing per file: the file is parsed and every line checked first
(:mod:`.statements`; problems name file, line and position); then everything
is written in the caller's transaction, and any problem raises
:class:`StatementImportFailed`, so the transaction rolls back.

Idempotent twice over: a statement whose key (format, own account, statement
id) is stored already is skipped as a whole, and a line whose bank reference
(``ExternalTransactionId``) is stored already is skipped too (a camt.054
notification and the camt.053 statement of the same day report the same
return). Importing a file again therefore changes nothing.

The lines are stored, not yet settled: money received waits as
``Unassigned`` for :mod:`.matching`; money paid out is ``Ignored`` (it was
ordered from here: payouts, refunds, fees), except returns, which
:mod:`.bank` turns into reversed payments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from engine.storage.bulk import RowWriter
from engine.storage.context import Context
from engine.storage.csvio import RecordError

from .errors import StatementImportFailed
from .statements import ParsedFile, Statement, StatementLine, read_statement_file

UNASSIGNED, ASSIGNED, IGNORED = "Unassigned", "Assigned", "Ignored"


@dataclass
class StatementImport:
    """What one import stored and skipped."""

    file: str
    format: str | None = None
    statements: list[str] = field(default_factory=list)      # BankStatement names stored
    entry_ids: list[int] = field(default_factory=list)       # PaymentEntry ids stored
    skipped: list[str] = field(default_factory=list)         # "file: statement/line ... imported already"


def import_statement_file(conn: sa.Connection, ctx: Context, path: Path, *, run: str,
                          display: str | None = None) -> StatementImport:
    """Import ``path`` in the caller's transaction (see the module docstring)."""
    parsed = read_statement_file(path, display)
    if parsed.errors:
        raise StatementImportFailed(parsed.errors)
    return store(conn, ctx, parsed, run=run, file_name=Path(path).name)


def store(conn: sa.Connection, ctx: Context, parsed: ParsedFile, *, run: str, file_name: str) -> StatementImport:
    """Write the statements of a parsed file (no errors) that are not stored yet."""
    errors = _check_lines(ctx, parsed)
    if errors:
        raise StatementImportFailed(errors)
    report = StatementImport(parsed.file, parsed.format)
    statements, entries = ctx.table("BankStatement"), ctx.table("PaymentEntry")
    statement_writer = RowWriter(conn, ctx.obj("BankStatement"))
    entry_writer = RowWriter(conn, ctx.obj("PaymentEntry"))
    seen: set[str] = set()
    for statement in parsed.statements:
        if statement.key in seen or conn.execute(sa.select(statements.c.id).where(
                statements.c.statementkey == statement.key)).first() is not None:
            report.skipped.append(f"{parsed.file}: statement {statement.statement_id} of {statement.account} "
                                  "is imported already")
            continue
        seen.add(statement.key)
        row = {"statementkey": statement.key, "format": statement.format, "statementid": statement.statement_id,
               "bankaccountid": statement.account[:34], "statementdate": statement.statement_date,
               "openingbalance": statement.opening, "closingbalance": statement.closing,
               "currencyisocode": statement.currency, "entrycount": len(statement.lines),
               "filename": file_name[:255], "filesha256": parsed.sha256, "run": run[:64],
               "confighash": ctx.config_hash}
        statement_writer.insert([row])
        report.statements.append(str(row["name"]))
        known = _stored_references(conn, entries, [line.reference for line in statement.lines])
        new_rows = []
        for line in statement.lines:
            if line.reference in known:
                report.skipped.append(f"{parsed.file}: {line.where}: bank reference {line.reference} "
                                      "is imported already")
                continue
            new_rows.append(_entry_row(ctx, statement, line, row["id"], file_name, run))
        entry_writer.insert(new_rows)  # one statement for all lines; ids and names are filled in
        report.entry_ids.extend(entry["id"] for entry in new_rows)
    return report


def _stored_references(conn: sa.Connection, entries: sa.Table, references: list[str]) -> set[str]:
    """Which of ``references`` are stored already (in chunks: bound parameters are limited)."""
    found: set[str] = set()
    for start in range(0, len(references), 500):
        chunk = references[start:start + 500]
        found.update(r for (r,) in conn.execute(sa.select(entries.c.externaltransactionid).where(
            entries.c.externaltransactionid.in_(chunk))))
    return found


def _entry_row(ctx: Context, statement: Statement, line: StatementLine, statement_id: int, file_name: str,
               run: str) -> dict:
    status = UNASSIGNED if (line.credit or line.is_return) else IGNORED
    return {
        "bookingdate": line.booking_date, "valuedate": line.value_date,
        "credit": line.amount if line.credit else None, "debit": None if line.credit else line.amount,
        "currencyisocode": line.currency, "bankaccountid": statement.account[:34],
        "customername": _cut(line.counterparty_name, 255), "customeriban": line.counterparty_iban,
        "reference": _cut(line.remittance, 255), "directdebitmandatereference": line.mandate_reference,
        "externaltransactionid": line.reference, "endtoendid": line.end_to_end_id,
        "info": file_name[:255], "status": status, "ischargeback": line.is_return,
        "isreturn": line.is_return, "rejected": line.rejected, "returnreason": line.return_reason,
        "chargebackfee": line.fee or None, "bankstatement": statement_id, "position": line.position,
        "matchnote": None if status == UNASSIGNED else "money paid out: nothing to match",
        "run": run[:64], "confighash": ctx.config_hash,
    }


def _cut(text: str | None, limit: int) -> str | None:
    """Free text of the bank (names, remittance) cut to its column: it is
    informative, and refusing a bank's statement for a long name would leave
    the money unrecorded."""
    if text is None:
        return None
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_lines(ctx: Context, parsed: ParsedFile) -> list[RecordError]:
    """Lines whose structured values do not fit the PaymentEntry fields."""
    errors: list[RecordError] = []
    entry_obj = ctx.obj("PaymentEntry")
    currency = entry_obj.field("CurrencyIsoCode")
    currencies = set(currency.values or ()) if currency is not None else set()
    references: dict[str, str] = {}
    for statement in parsed.statements:
        for line in statement.lines:
            def bad(name: str, message: str, line: StatementLine = line) -> None:
                errors.append(RecordError(parsed.file, line.line, f"{line.where}/{name}", message))

            if currencies and line.currency not in currencies:
                bad("Ccy", f"currency {line.currency} is not one of {', '.join(sorted(currencies))}")
            if len(line.reference) > 255:
                bad("AcctSvcrRef", "the bank reference is longer than 255 characters")
            if line.end_to_end_id and len(line.end_to_end_id) > 35:
                bad("EndToEndId", "longer than 35 characters")
            if line.counterparty_iban and len(line.counterparty_iban) > 34:
                bad("IBAN", "longer than 34 characters")
            if line.mandate_reference and len(line.mandate_reference) > 35:
                bad("MndtId", "longer than 35 characters")
            if line.return_reason and len(line.return_reason) > 4:
                bad("RtrInf", "a return reason code has at most 4 characters")
            if line.reference in references:
                bad("AcctSvcrRef", f"bank reference {line.reference} is also at {references[line.reference]}")
            references.setdefault(line.reference, line.where)
    return errors


__all__ = ["ASSIGNED", "IGNORED", "UNASSIGNED", "StatementImport", "import_statement_file", "store"]
