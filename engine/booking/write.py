"""The booking writer: every booking detail the engine writes goes through
:func:`write_bookings`, with its booking period and booking text.

The writer is where the booking invariants are enforced: it takes booking
details as :class:`~engine.booking.postings.BookingSet` values (one per
business event: an invoice, a balance, a reversal) and checks every set with
:func:`~engine.booking.postings.check_postings` before it inserts a row, so
no caller can write details that do not balance or that move the debtor by
the wrong amount (a :class:`~engine.booking.postings.BookingInvariantError`,
a bug, and the caller's transaction is rolled back).

Booking details are immutable once written; corrections are new details
(reversals). A booking period is (business entity, year, month); a detail
whose period is closed goes to the next open period, and missing periods are
created open (domain-spec §5.2).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Iterable, Mapping

import sqlalchemy as sa

from engine.domain.errors import Where
from engine.domain.values import read_value
from engine.storage.bulk import RowWriter
from engine.storage.context import Context
from engine.storage.reader import RecordReader

from .errors import PeriodError
from .postings import BookingSet
from .texts import PLACEHOLDER as _PLACEHOLDER
from .texts import TEXT_EXTRAS

MAX_PERIOD_HOPS = 240


def _month_start(when: date) -> date:
    return when.replace(day=1)


def _next_month(when: date) -> date:
    return (when.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_name(entity: str | None, when: date) -> str:
    return f"{entity}-{when.year:04d}-{when.month:02d}" if entity else f"{when.year:04d}-{when.month:02d}"


def booking_period(conn: sa.Connection, ctx: Context, entity: str | None, when: date) -> int:
    """The id of the open booking period for ``when`` (creating it when
    missing; moving on to the next open month when it is closed)."""
    obj = ctx.obj("BookingPeriod")
    table = ctx.table("BookingPeriod")
    month = _month_start(when)
    for _ in range(MAX_PERIOD_HOPS):
        name = period_name(entity, month)
        row = conn.execute(sa.select(table.c.id, table.c.status).where(table.c.name == name)).first()
        if row is None:
            record = {
                "name": name,
                "businessentity": entity,
                "year": f"{month.year:04d}",
                "month": f"{month.month:02d}",
                "startdate": month,
                "enddate": _next_month(month) - timedelta(days=1),
                "status": "Open",
            }
            RowWriter(conn, obj).insert([record])
            return record["id"]
        if row.status != "Closed":
            return row.id
        month = _next_month(month)
    raise PeriodError(f"no open booking period within {MAX_PERIOD_HOPS} months after {when}",
                      where=Where(object="BookingPeriod", record=period_name(entity, _month_start(when))),
                      hint="open a booking period (BookingPeriod.Status) after the booking date")


def render_text(ctx: Context, detail: Mapping[str, object]) -> str | None:
    """The Booking Text record of the detail's type with [Placeholders] filled
    from the detail (field names, plus BookingTaxRate/BookingType/...)."""
    template = ctx.model.setting_record("BookingText", str(detail.get("type")))
    text = template.get("Text") if template is not None else None
    if not text:
        return None
    extra = {name.lower(): detail.get(source) for name, source in TEXT_EXTRAS.items()}

    def fill(match: re.Match) -> str:
        key = match.group(1).lower()
        value = extra.get(key, detail.get(key))
        if isinstance(value, Decimal):
            value = format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
        return "" if value is None else str(value)

    return " ".join(_PLACEHOLDER.sub(fill, str(text)).split())[:255] or None


def write_bookings(conn: sa.Connection, ctx: Context, sets: Iterable[BookingSet]) -> list[dict]:
    """Check every set (double entry, two decimals, the debtor's movement),
    then assign periods and texts and insert all details in one statement;
    returns the written rows. Nothing is written when one set fails."""
    sets = list(sets)
    for booking_set in sets:
        booking_set.check()
    rows = []
    periods: dict[tuple, int] = {}  # (entity, month) -> period id, within this write
    for booking in (booking for booking_set in sets for booking in booking_set.bookings):
        row = dict(booking.fields)
        period_key = (row.get("businessentity"), _month_start(row["bookingdate"]))
        period = periods.get(period_key)
        if period is None:
            period = periods[period_key] = booking_period(conn, ctx, *period_key)
        row["bookingperiod"] = period
        row["bookingtext"] = render_text(ctx, row)
        row.pop("_reference", None)
        rows.append(row)
    if rows:
        RowWriter(conn, ctx.obj("BookingDetail")).insert(rows)
    return rows


class _AccountReaders(dict):
    """The account reader of one command per dialect, with the formula
    fields it evaluates (``ctx.service(_AccountReaders)``): every
    finalization batch reads its accounts, and building the reader joins
    every formula's lookups."""

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx

    def of(self, dialect: str) -> tuple[list, RecordReader]:
        found = self.get(dialect)
        if found is None:
            obj = self.ctx.obj("Account")
            formulas = [f for f in obj.fields if f.formula is not None and f.formula.compiled is not None]
            paths = set()
            for fdef in formulas:
                paths |= set(fdef.formula.compiled.references)  # type: ignore[union-attr]
            found = self[dialect] = (formulas, RecordReader(self.ctx.model, self.ctx.metadata, obj, paths, dialect))
        return found


def load_account(conn: sa.Connection, ctx: Context, account_id: int, today: date) -> dict:
    """An account record with its formula fields evaluated (for debtor and VAT id)."""
    return load_accounts(conn, ctx, {account_id}, today).get(account_id, {})


def load_accounts(conn: sa.Connection, ctx: Context, account_ids: set[int], today: date) -> dict[int, dict]:
    """Account records by id, formula fields evaluated (for debtor and VAT id)."""
    found: dict[int, dict] = {}
    if not account_ids:
        return found
    table = ctx.table("Account")
    formulas, reader = ctx.service(_AccountReaders).of(conn.dialect.name)
    ids = sorted(account_ids)
    for start in range(0, len(ids), 900):
        for record in reader.read(conn, where=table.c.id.in_(ids[start:start + 900])):
            for fdef in formulas:
                try:
                    record[fdef.key] = read_value(fdef, record, today)
                except ValueError:
                    record[fdef.key] = None
            found[record["id"]] = record
    return found
