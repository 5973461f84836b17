"""DATEV: what was marked exported and transferred, and the files themselves.

The DATEV export (``engine.exports.datev``) marks each exported booking
detail (``Exported``, ``ExportDestination = DATEV``) and creates exactly one
accounting document item for it, in the transaction that writes the file.
:func:`check_datev_marks` holds both against each other (A501) and every
item against its detail: amount, account, counter account and date (A502:
what the accountant received is what the journal says, unless a detail was
changed after its export).

:func:`check_datev_files` reads the Buchungsstapel files given to the audit
(``--datev FILE...``) and matches their lines with the exported details, line
by line: (Belegdatum, Konto, Gegenkonto, Soll/Haben, Umsatz, Belegfeld 1,
WKZ). A file line without its detail is A503 (a line DATEV booked that the
journal does not have, or has otherwise: a forced re-export given twice
counts twice); an exported detail dated within a file's range (header
Datum vom..bis) that no file has is A504; a file that is no Buchungsstapel,
or a line that cannot be read, is A505.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from engine.booking.postings import counter_account, sides
from engine.exports.datev import COLUMNS, DESTINATION, ENCODING, FORMAT_NAME

from .base import AuditRun, stream
from .findings import FileSummary, Finding, finding

Key = tuple  # (date, konto, gegenkonto, S/H, amount, belegfeld, currency)
#: Problems listed per unreadable file (the rest is counted).
SHOWN = 5


def check_datev_marks(run: AuditRun) -> Iterator[Finding]:
    """A501, A502."""
    details = run.table("BookingDetail")
    items = run.table("AccountingDocumentItem")
    exported = sa.and_(details.c.exported == sa.true(), details.c.exportdestination == DESTINATION)
    count = sa.func.count(items.c.id)
    query = (sa.select(details.c.id, details.c.name, count.label("n"))
             .select_from(details.outerjoin(items, items.c.bookingdetail == details.c.id))
             .where(exported).group_by(details.c.id, details.c.name).having(count != 1).order_by(details.c.id))
    for row in stream(run.conn, query):
        yield finding("A501", "booking detail", row["name"] or row["id"],
                      f"marked exported to DATEV with {row['n']} accounting document item(s)", expected=1,
                      actual=row["n"])
    query = (sa.select(items.c.id, items.c.name, details.c.name.label("detail"))
             .select_from(items.outerjoin(details, items.c.bookingdetail == details.c.id))
             .where(sa.or_(details.c.id.is_(None), ~exported)).order_by(items.c.id))
    for row in stream(run.conn, query):
        yield finding("A501", "booking detail", row["detail"] or f"item {row['name'] or row['id']}",
                      "an accounting document item was transferred for a booking detail not marked exported to DATEV")
    query = (sa.select(details.c.id, details.c.name, details.c.type, details.c.amount, details.c.accountno,
                       details.c.contraaccountno, details.c.bpaccountno, details.c.bookingdate,
                       items.c.amount.label("item_amount"), items.c.accountno.label("item_accountno"),
                       items.c.contraaccountno.label("item_contra"), items.c.accountingdate.label("item_date"))
             .select_from(items.join(details, items.c.bookingdetail == details.c.id)).order_by(details.c.id))
    for row in stream(run.conn, query):
        run.report.count("accounting document items")
        detail = dict(row)
        pairs = (("amount", detail["amount"], detail["item_amount"]),
                 ("account", detail["accountno"], detail["item_accountno"]),
                 ("counter account", counter_account(detail), detail["item_contra"]),
                 ("booking date", detail["bookingdate"], detail["item_date"]))
        for label, now, sent in pairs:
            if now != sent:
                yield finding("A502", "booking detail", detail["name"] or detail["id"],
                              f"its {label} differs from what was transferred to DATEV", expected=sent, actual=now,
                              hint="booking details are immutable: restore it, or reverse and export anew")


@dataclass
class DatevFile:
    """A Buchungsstapel read: its date range and its lines as match keys."""

    path: Path
    date_from: date
    date_to: date
    lines: Counter
    amount: Decimal
    problems: list[str]

    def covers(self, when: date) -> bool:
        return self.date_from <= when <= self.date_to


def read_datev(path: Path, data: bytes) -> tuple[DatevFile | None, list[str]]:
    """Parse a Buchungsstapel (Windows-1252, ``;``, header line, headings,
    data lines); returns the file (None when it is none) and the problems."""
    rows = csv.reader(io.StringIO(data.decode(ENCODING, errors="replace"), newline=""), delimiter=";")
    header = next(rows, None)
    headings = next(rows, None)
    if not header or len(header) < 16 or header[0] != "EXTF" or header[3] != FORMAT_NAME or not headings:
        return None, ["not an EXTF Buchungsstapel (header line 1 and the column headings on line 2)"]
    try:
        first, last = _date(header[14]), _date(header[15])
    except ValueError:
        return None, [f"header: Datum vom/bis {header[14]!r}/{header[15]!r} are not dates (yyyymmdd)"]
    at = {heading: index for index, heading in enumerate(headings)}
    needed = ("Umsatz (ohne Soll/Haben-Kz)", "Soll/Haben-Kennzeichen", "WKZ Umsatz", "Konto",
              "Gegenkonto (ohne BU-Schlüssel)", "Belegdatum", "Belegfeld 1")
    missing = [h for h in needed if h not in at or h not in COLUMNS]
    if missing:
        return None, [f"column heading(s) missing: {', '.join(missing)}"]
    found = DatevFile(path, first, last, Counter(), Decimal(0), [])
    for number, cells in enumerate(rows, start=3):
        if not any(cells):
            continue
        try:
            cell = {h: cells[at[h]] for h in needed}
            amount = Decimal(cell["Umsatz (ohne Soll/Haben-Kz)"].replace(",", "."))
            when = _belegdatum(cell["Belegdatum"], first, last)
        except (IndexError, InvalidOperation, ValueError) as error:
            found.problems.append(f"line {number}: {error or 'too few fields'}")
            continue
        found.lines[(when, cell["Konto"], cell["Gegenkonto (ohne BU-Schlüssel)"], cell["Soll/Haben-Kennzeichen"],
                     amount, cell["Belegfeld 1"], cell["WKZ Umsatz"])] += 1
        found.amount += amount
    return found, found.problems


def _date(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _belegdatum(text: str, first: date, last: date) -> date:
    """``DDMM`` in the year that puts it into the file's range."""
    if len(text) != 4 or not text.isdigit():
        raise ValueError(f"Belegdatum {text!r} is not DDMM")
    for year in range(first.year, last.year + 1):
        try:
            when = date(year, int(text[2:]), int(text[:2]))
        except ValueError:
            continue
        if first <= when <= last:
            return when
    raise ValueError(f"Belegdatum {text!r} is outside the file's range {first}..{last}")


def detail_key(detail: dict) -> Key:
    """The line an exported detail became (``engine.exports.datev.detail_line``)."""
    debit, _ = sides(detail)
    return (detail["bookingdate"], str(detail["accountno"]), str(counter_account(detail)),
            "S" if debit == detail["accountno"] else "H", abs(Decimal(detail["amount"])),
            str(detail.get("invoiceno") or ""), str(detail.get("currencyisocode") or ""))


def check_datev_files(run: AuditRun) -> Iterator[Finding]:
    """A503, A504, A505 for the files given (nothing without files)."""
    if not run.datev_files:
        return
    files: list[DatevFile] = []
    for path in run.datev_files:
        parsed, problems = read_datev(path, path.read_bytes())
        for problem in problems[:SHOWN]:
            yield finding("A505", "file", path, problem)
        if len(problems) > SHOWN:
            yield finding("A505", "file", path, f"{len(problems) - SHOWN} more line(s) cannot be read")
        if parsed is not None:
            files.append(parsed)
            run.report.count("DATEV file lines", sum(parsed.lines.values()))
    if not files:
        return
    remaining: Counter = Counter()
    for item in files:
        remaining.update(item.lines)
    details = run.table("BookingDetail")
    query = (sa.select(details).where(details.c.exported == sa.true(), details.c.exportdestination == DESTINATION,
                                      details.c.bookingdate >= min(f.date_from for f in files),
                                      details.c.bookingdate <= max(f.date_to for f in files))
             .order_by(details.c.bookingdate, details.c.id))
    matched: Counter = Counter()
    for row in stream(run.conn, query):
        detail = dict(row)
        if not any(f.covers(detail["bookingdate"]) for f in files):
            continue
        key = detail_key(detail)
        if remaining[key] > 0:
            remaining[key] -= 1
            matched[key] += 1
            continue
        yield finding("A504", "booking detail", detail["name"] or detail["id"],
                      f"exported to DATEV ({detail['type']} {key[4]} {key[6]} on {detail['bookingdate']}, "
                      f"{key[1]} {key[3]} against {key[2]}), but none of the given files has it",
                      hint="give every DATEV file of the period, or the detail changed after its export")
    for item in files:
        used = Counter()
        for key, count in item.lines.items():
            take = min(count, matched[key])
            matched[key] -= take
            used[key] = take
        run.report.files.append(FileSummary(str(item.path), "DATEV", sum(item.lines.values()),
                                            sum(used.values()), item.amount))
    for key, count in sorted(remaining.items(), key=lambda kv: tuple(str(k) for k in kv[0])):
        if count > 0:
            when, konto, gegenkonto, side, amount, belegfeld, currency = key
            yield finding("A503", "file", ", ".join(str(f.path) for f in files),
                          f"{count} line(s) {belegfeld or '(no Belegfeld 1)'} of {when}: {amount} {currency} "
                          f"{konto} {side} against {gegenkonto} match no exported booking detail",
                          expected=0, actual=count,
                          hint="a file given twice, a forced re-export, or a detail changed after its export")
