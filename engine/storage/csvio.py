"""CSV text in and out: strict UTF-8 reading with line numbers, and cells
defused against spreadsheet formulas.

Every CSV the engine reads (record loads, payment imports) goes through
:func:`csv_records`; every CSV cell it writes (record exports, the booking
journal, DATEV) through :func:`cell_text`, so a text starting with ``= + - @``
TAB or CR is written with a leading ``'`` and a spreadsheet shows it as text
instead of running it. Numbers and dates are written plain and never defused.

A problem found in an input file is a :class:`RecordError` (file, row, field,
message); a command that refuses a file raises :class:`InputFileRefused`
carrying every problem as a :class:`~engine.domain.errors.Problem`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Sequence

from engine.domain.errors import EngineError, Problem, Where

#: Most data rows one file may hold.
MAX_ROWS = 1_000_000
#: First characters that make a spreadsheet treat a cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# What follows the mark in a cell the record export marked.
_MARKED_NEXT = frozenset((*FORMULA_TRIGGERS, "'"))


@dataclass(frozen=True, slots=True)
class RecordError:
    """One problem in a data file. ``row`` is the 1-based line of a CSV record
    (the header is line 1) or the 1-based position in a JSON list; None for a
    problem with the file as a whole. ``field`` is the column as written."""

    file: str
    row: int | None
    field: str | None
    message: str

    def render(self) -> str:
        where = self.file
        if self.row is not None:
            where += f":{self.row}"
        if self.field:
            where += f":{self.field}"
        return f"{where}: {self.message}"

    def __str__(self) -> str:
        return self.render()

    @property
    def problem(self) -> Problem:
        """This problem as runtime-error data: code R120, the file, row and
        column it concerns (``Where.render`` gives the same place as
        :meth:`render`)."""
        return Problem(InputFileRefused.code, self.message, Where(file=self.file, row=self.row, field=self.field))


class InputFileRefused(EngineError, ValueError):
    """An input file has problems (unreadable, malformed, or rows whose values
    do not fit); nothing was taken from it.

    Each of its problems is one :class:`RecordError` of the file, with the
    same code.
    """

    code = "R120"

    @classmethod
    def of(cls, message: str, errors: Sequence[RecordError]) -> "InputFileRefused":
        """The refusal of a file with these problems (the message sums them up)."""
        return cls(message, problems=[error.problem for error in errors])


class NotUtf8(Exception):
    def __init__(self, line: int, detail: str):
        super().__init__(detail)
        self.line = line


def utf8_lines(handle) -> Iterator[str]:
    """Decoded lines of a binary file, checking UTF-8 per line (a multi-byte
    character never contains a newline byte, so this is exact) and dropping a
    byte-order mark."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUtf8(number, f"byte {exc.start + 1} of the line is not valid UTF-8") from None


def csv_records(path: Path, display: str, report, max_rows: int = MAX_ROWS) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` per CSV record, the header first. ``line`` is where
    the record starts (a quoted cell may span lines). Ragged rows, bad quoting
    and undecodable bytes are reported, not yielded."""
    with open(path, "rb") as handle:
        reader = csv.reader(utf8_lines(handle), strict=True)
        width: int | None = None
        line_before = 0
        rows = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except NotUtf8 as exc:
                report(RecordError(display, exc.line, None, f"the file is not UTF-8 text: {exc}"))
                return
            except csv.Error as exc:
                report(RecordError(display, line_before + 1, None, f"malformed CSV: {exc}"))
                line_before = reader.line_num
                if width is None or "end of data" in str(exc):
                    return  # no usable header, or nothing left to read
                continue
            start, line_before = line_before + 1, reader.line_num
            if width is None:
                if not any(cell.strip() for cell in cells):
                    report(RecordError(display, start, None, "the header row is empty"))
                    return
                width = len(cells)
                yield start, cells
                continue
            if not cells:
                continue  # a blank line
            rows += 1
            if rows > max_rows:
                report(RecordError(display, start, None, f"more than {max_rows:,} rows; split the file"))
                return
            if len(cells) != width:
                report(RecordError(display, start, None, f"the row has {len(cells)} cells but the header has {width}"))
                continue
            yield start, cells
        if width is None:
            report(RecordError(display, None, None, "the file is empty; expected a header row of field names"))


#: The mark that keeps a spreadsheet from running a cell as a formula.
DEFUSE_MARK = "'"


def record_cell(value: Any) -> str:
    """A value as a cell of a record file that loads back exactly
    (``export-records``, read by :func:`restore_cell`): :func:`cell_text`,
    and a text that itself starts with ``'`` gets a second one, so that the
    mark is always removable. ``+4930123`` is written ``'+4930123``,
    ``'quoted`` is written ``''quoted``."""
    if isinstance(value, str) and value.startswith(DEFUSE_MARK):
        return DEFUSE_MARK + value
    return cell_text(value)


def restore_cell(cell: str) -> str:
    """The value :func:`record_cell` wrote: one leading ``'`` is removed when
    a formula trigger or another ``'`` follows it (the only cells the export
    marks). Any other text is taken as it is, so a hand-written ``'abc``
    keeps its quote."""
    if len(cell) > 1 and cell[0] == DEFUSE_MARK and cell[1] in _MARKED_NEXT:
        return cell[1:]
    return cell


def cell_text(value: Any) -> str:
    """A value as CSV text: numbers plain, dates ISO, booleans true/false."""
    if value is None:
        return ""
    if isinstance(value, str):
        # A spreadsheet would run "=..." etc. as a formula; the quote keeps it text.
        return "'" + value if value.startswith(FORMULA_TRIGGERS) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return cell_text(";".join(value))
    return str(value)
