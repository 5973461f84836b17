"""The booking journal: every booking detail as one posting, debit and credit
account spelled out, as CSV.

:func:`journal_rows` streams booking details from the database in a stable
order (booking date, invoice number, id) and turns each into a
:class:`JournalRow`; the debit and credit accounts come from
:func:`engine.booking.postings.sides`, the one definition of posting
direction. :func:`write_journal_csv` writes the rows with the columns of
:data:`JOURNAL_COLUMNS`:

* ``Amount`` is the absolute amount with two decimals and a ``.`` separator
  (the direction is in Debit/CreditAccount, so the sign would say it twice);
* ``TaxRate`` is a plain number (``19``, ``7``, ``2.5``);
* empty cells for missing values;
* text cells that a spreadsheet would run as a formula (``=``, ``+``, ``-``,
  ``@``, TAB, CR first) carry a leading ``'``, by the function record exports
  use; numbers and dates are written by this module and never defused.

The same query (:func:`detail_query`) and stream (:func:`stream_details`)
feed the DATEV export, so both files list details in the same order.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Iterable, Iterator, Sequence, TextIO

import sqlalchemy as sa

from engine.booking.postings import sides
from engine.domain.batching import chunks
from engine.domain.money import CENT
from engine.storage.context import Context
from engine.storage.csvio import cell_text

#: Header of the journal CSV, in column order.
JOURNAL_COLUMNS = (
    "BookingDate",
    "Type",
    "AccountNo",
    "ContraAccountNo",
    "BpAccountNo",
    "DebitAccount",
    "CreditAccount",
    "Amount",
    "TaxCode",
    "TaxRate",
    "AccountRule",
    "InvoiceNo",
)

#: Rows fetched from the database per round trip while streaming.
STREAM_BATCH = 1_000
#: Invoice ids per ``IN (...)`` list (stays far below every driver's parameter limit).
ID_CHUNK = 500


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One booking detail as a posting. ``amount`` keeps its sign (as stored);
    the CSV shows its absolute value next to the debit and credit account."""

    detail_id: int
    booking_date: date | None
    type: str
    account_no: str | None
    contra_account_no: str | None
    bp_account_no: str | None
    debit_account: str | None
    credit_account: str | None
    amount: Decimal
    tax_code: str | None
    tax_rate: Decimal | None
    account_rule: str | None
    invoice_no: str | None


def _order_text(conn: sa.Connection, column: sa.ColumnElement) -> sa.ColumnElement:
    """A text sort key that orders alike on both backends: NULL as empty
    text, byte order on PostgreSQL (whose default collation may ignore
    punctuation) as SQLite's BINARY collation does."""
    key = sa.func.coalesce(column, "")
    if conn.dialect.name == "postgresql":
        key = key.collate("C")
    return key


def detail_query(
    conn: sa.Connection,
    ctx: Context,
    *,
    invoice_ids: Sequence[int] | None = None,
    only_unexported: bool = False,
    columns: Iterable[sa.ColumnElement] | None = None,
) -> tuple[sa.Table, sa.Select]:
    """The BookingDetail table and a SELECT of its rows in journal order
    (booking date, invoice number, id). ``columns`` adds expressions to the
    selected columns (for example an EXISTS flag)."""
    table = ctx.table("BookingDetail")
    query = sa.select(table, *(columns or ()))
    if invoice_ids is not None:
        ids = sorted({int(i) for i in invoice_ids})
        query = query.where(sa.or_(sa.false(), *(table.c.invoice.in_(chunk) for chunk in chunks(ids, ID_CHUNK))))
    if only_unexported:
        query = query.where(table.c.exported == sa.false())
    query = query.order_by(
        table.c.bookingdate.is_(None),  # a detail without a date (never written by the engine) last
        table.c.bookingdate,
        _order_text(conn, table.c.invoiceno),
        table.c.id,
    )
    return table, query


def stream_details(conn: sa.Connection, query: sa.Select) -> Iterator[dict]:
    """The rows of ``query`` as dicts keyed by lower-case column name, fetched
    in batches (a server-side cursor on PostgreSQL); never the whole result."""
    result = conn.execute(query.execution_options(yield_per=STREAM_BATCH))
    try:
        for row in result:
            yield dict(row._mapping)
    finally:
        result.close()


def journal_row(detail: dict) -> JournalRow:
    """A booking detail record (keys = lower-case field names) as a journal row."""
    debit, credit = sides(detail)
    amount = detail.get("amount")
    rate = detail.get("taxrate")
    return JournalRow(
        detail_id=int(detail["id"]),
        booking_date=detail.get("bookingdate"),
        type=str(detail.get("type")),
        account_no=detail.get("accountno"),
        contra_account_no=detail.get("contraaccountno"),
        bp_account_no=detail.get("bpaccountno"),
        debit_account=debit,
        credit_account=credit,
        amount=Decimal(amount) if amount is not None else Decimal("0.00"),
        tax_code=detail.get("taxcode"),
        tax_rate=Decimal(rate) if rate is not None else None,
        account_rule=detail.get("accountrule"),
        invoice_no=detail.get("invoiceno"),
    )


def journal_rows(
    conn: sa.Connection,
    ctx: Context,
    *,
    invoice_ids: Sequence[int] | None = None,
    only_unexported: bool = False,
) -> Iterator[JournalRow]:
    """The booking details as journal rows, streamed in the order booking
    date, invoice number, id. ``invoice_ids`` limits them to the details of
    those invoices; ``only_unexported`` to details not yet exported."""
    _, query = detail_query(conn, ctx, invoice_ids=invoice_ids, only_unexported=only_unexported)
    for detail in stream_details(conn, query):
        yield journal_row(detail)


def plain_number(value: Decimal) -> str:
    """A number without exponent or trailing zeros: 19.000 -> ``19``, 2.50 -> ``2.5``."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _text(value: object) -> str:
    return "" if value is None else cell_text(str(value))


def journal_cells(row: JournalRow) -> list[str]:
    """The CSV cells of one row, in :data:`JOURNAL_COLUMNS` order."""
    return [
        row.booking_date.isoformat() if row.booking_date is not None else "",
        _text(row.type),
        _text(row.account_no),
        _text(row.contra_account_no),
        _text(row.bp_account_no),
        _text(row.debit_account),
        _text(row.credit_account),
        format(abs(row.amount).quantize(CENT), "f"),
        _text(row.tax_code),
        plain_number(row.tax_rate) if row.tax_rate is not None else "",
        _text(row.account_rule),
        _text(row.invoice_no),
    ]


def write_journal_csv(rows: Iterable[JournalRow], out: TextIO) -> int:
    """Write ``rows`` to ``out`` as CSV (header first); returns the row count.
    Open ``out`` with ``newline=""``; lines end with ``\\n``."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(JOURNAL_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow(journal_cells(row))
        count += 1
    return count
