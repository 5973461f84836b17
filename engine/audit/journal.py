"""The journal: trial balance per account and booking period, and what of it
went to DATEV.

:func:`check_postings` builds the reconciliation table (the trial balance):
the booking details summed per booking period, currency, type, accounts, sign
and export mark, each sum posted through ``sides``. A group without a debit or
a credit account, or posting an account against itself, is a finding (A101):
every other group debits and credits the same amount, so the journal's
debits equal its credits by construction, and what remains to check is that
each business event moved the right accounts (the invoice and balance checks).

The same pass sorts every movement into "transferred to DATEV" (from the
accounting document items, what the accountant actually received) or "left
out" with its reason (interim bookings, another currency, not exported); a
row whose journal net differs from DATEV plus left out is a finding (A506),
e.g. a detail changed after its export. :func:`check_periods` finds details
in a booking period that cannot hold their booking date (A103).
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Iterator

import sqlalchemy as sa

from engine.booking.postings import sides
from engine.domain.money import ZERO
from engine.exports.datev import DESTINATION, INTERIM_TYPES, DatevParams

from .base import AuditRun, posting, posting_columns, sign_of, stream
from .findings import Finding, LeftOut, finding


def datev_currency() -> str:
    """The currency of DATEV batches (the export's default, ``EUR``)."""
    return next(f.default for f in dataclasses.fields(DatevParams) if f.name == "currency")  # type: ignore[return-value]


def period_names(run: AuditRun) -> dict[int, str]:
    """Booking period id -> name (a few per month and business entity)."""
    table = run.table("BookingPeriod")
    return {row.id: row.name or str(row.id) for row in run.conn.execute(sa.select(table.c.id, table.c.name))}


def left_out_reason(booking_type: str, currency: str | None, exported: bool, destination: str | None,
                    home: str) -> str | None:
    """Why a booking movement is not in DATEV, or None when it was exported
    to DATEV (its DATEV amount comes from the accounting document items)."""
    if booking_type in INTERIM_TYPES:
        return "interim"
    if (currency or home) != home:
        return "currency"
    if exported and destination == DESTINATION:
        return None
    return "not exported"


def check_postings(run: AuditRun) -> Iterator[Finding]:
    """A101 and A506; fills the reconciliation table and the left-out totals."""
    details = run.table("BookingDetail")
    items = run.table("AccountingDocumentItem")
    names = period_names(run)
    home = datev_currency()
    report = run.report
    keys = [details.c.bookingperiod, details.c.currencyisocode, *posting_columns(details), details.c.exported,
            details.c.exportdestination]
    query = (sa.select(*keys, sa.func.sum(details.c.amount).label("amount"), sa.func.count().label("n"))
             .group_by(*keys))
    for row in stream(run.conn, query):
        report.count("booking details", row["n"])
        period = names.get(row["bookingperiod"], str(row["bookingperiod"]))
        currency = row["currencyisocode"] or home
        debit, credit = sides(posting(row))
        amount = abs(row["amount"])
        if not debit or not credit or debit == credit:
            problem = f"posts {debit} against itself" if debit == credit and debit else \
                f"has no {'debit' if not debit else 'credit'} account"
            yield finding("A101", "period", period,
                          f"{row['n']} {row['type']} booking detail(s) of {amount} {currency} {problem}",
                          hint="booking details are immutable: post a reversal and book again")
            continue
        report.account(period, str(debit), currency).debit += amount
        report.account(period, str(credit), currency).credit += amount
        reason = left_out_reason(str(row["type"]), row["currencyisocode"], bool(row["exported"]),
                                 row["exportdestination"], home)
        if reason is None:
            continue
        for account, moved in ((str(debit), amount), (str(credit), -amount)):
            row_of = report.account(period, account, currency)
            row_of.left_out[reason] = row_of.left_out.get(reason, ZERO) + moved
        summary = report.left_out.setdefault((reason, currency), LeftOut(reason, currency))
        summary.details += row["n"]
        summary.amount += amount

    # What DATEV received: the accounting document items, posted like their details.
    transferred = [details.c.bookingperiod, details.c.currencyisocode, details.c.type, items.c.accountno,
                   items.c.contraaccountno, details.c.bpaccountno, sign_of(items.c.amount).label("sign")]
    query = (sa.select(*transferred, sa.func.sum(items.c.amount).label("amount"))
             .select_from(items.join(details, items.c.bookingdetail == details.c.id))
             .group_by(*transferred))
    for row in stream(run.conn, query):
        period = names.get(row["bookingperiod"], str(row["bookingperiod"]))
        currency = row["currencyisocode"] or home
        debit, credit = sides(posting(row))
        amount = abs(row["amount"])
        if debit:
            report.account(period, str(debit), currency).datev += amount
        if credit:
            report.account(period, str(credit), currency).datev -= amount

    for row in report.rows():
        if row.difference != 0:
            yield finding(
                "A506", "account", f"{row.account} {row.period}",
                f"the journal moves {row.account} by {row.net} {row.currency} in {row.period}; DATEV received "
                f"{row.datev} and {sum(row.left_out.values(), ZERO)} is left out with a reason",
                expected=row.datev + sum(row.left_out.values(), ZERO), actual=row.net,
                hint="a booking detail was changed after its export, or an export mark or accounting document "
                     "item is missing (see A501/A502)")


def check_periods(run: AuditRun) -> Iterator[Finding]:
    """A103: a booking detail's period is of another business entity, or ends
    before its booking date (a closed period moves bookings on, never back)."""
    details = run.table("BookingDetail")
    periods = run.table("BookingPeriod")
    wrong = sa.or_(
        details.c.bookingdate.is_(None),
        periods.c.enddate.is_(None),
        details.c.bookingdate > periods.c.enddate,
        details.c.businessentity.is_distinct_from(periods.c.businessentity),
    )
    query = (sa.select(periods.c.name, sa.func.count().label("n"), sa.func.min(details.c.bookingdate).label("first"))
             .select_from(details.join(periods, details.c.bookingperiod == periods.c.id))
             .where(wrong).group_by(periods.c.name).order_by(periods.c.name))
    for row in stream(run.conn, query):
        first: date | None = row["first"]
        yield finding("A103", "period", row["name"],
                      f"{row['n']} booking detail(s) cannot belong to this period (another business entity, or a "
                      f"booking date after its end{f', e.g. {first}' if first else ''})")
