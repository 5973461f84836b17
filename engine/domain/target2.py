"""The TARGET2 calendar: the days SEPA payments settle, and the collection
date of a direct debit given its lead time. Shared by cash (payment runs,
returns) and exports (the collection dates of pain.008), hence in domain.

TARGET2 (T2 since 2023) is closed on Saturdays, Sundays, 1 January, Good
Friday, Easter Monday, 1 May, 25 and 26 December. The dates come from the
``holidays`` package's ECB/TARGET2 financial calendar (``XECB``), which keeps
the Easter computus and any change the ECB announces; it is well kept and
pure Python, so nothing is hand-written here except the day arithmetic.

SEPA Core direct debits (since the 2016 rulebook, first and recurring
collections alike) reach the debtor bank at least one TARGET2 business day
before the collection date, and that date itself must be a TARGET2 business
day; ``GlobalSettings.PaymentLeadDays`` (default 1) is the lead time.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

from .errors import EngineError


class CalendarError(EngineError, ValueError):
    """A date computation of the TARGET2 calendar cannot be done (a date
    outside the years the calendar knows, a negative lead time)."""

    code = "R460"

FIRST_YEAR, LAST_YEAR = 2000, 2099


@lru_cache(maxsize=128)
def _closed(year: int) -> frozenset[date]:
    import holidays

    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise CalendarError(f"the TARGET2 calendar is known for {FIRST_YEAR}-{LAST_YEAR}, not for {year}")
    return frozenset(holidays.financial_holidays("XECB", years=year))


def is_business_day(day: date) -> bool:
    """Whether TARGET2 settles on ``day``."""
    return day.weekday() < 5 and day not in _closed(day.year)


def closing_reason(day: date) -> str | None:
    """Why TARGET2 is closed on ``day`` (None when it is open): for traces."""
    if day.weekday() >= 5:
        return "weekend"
    if day in _closed(day.year):
        import holidays

        return str(holidays.financial_holidays("XECB", years=day.year).get(day))
    return None


def next_business_day(day: date) -> date:
    """``day`` itself when TARGET2 settles on it, else the next day it does."""
    while not is_business_day(day):
        day += timedelta(days=1)
    return day


def add_business_days(day: date, count: int) -> date:
    """The TARGET2 business day ``count`` business days after ``day`` (for 0:
    ``day`` moved forward to a business day)."""
    if count < 0:
        raise CalendarError(f"a lead time is not negative, got {count}")
    day = next_business_day(day)
    for _ in range(count):
        day = next_business_day(day + timedelta(days=1))
    return day


def earliest_collection(submitted: date, lead_days: int) -> date:
    """The earliest collection date of a direct debit submitted on
    ``submitted``: ``lead_days`` TARGET2 business days later (a submission on
    a closed day counts from the next business day)."""
    return add_business_days(submitted, lead_days)


def collection_date(wanted: date | None, submitted: date, lead_days: int) -> date:
    """The collection date of a debit due on ``wanted`` and submitted on
    ``submitted``: the due date moved to a business day, but never before
    the earliest date the lead time allows."""
    earliest = earliest_collection(submitted, lead_days)
    if wanted is None or wanted <= earliest:
        return earliest
    return next_business_day(wanted)


__all__ = ["CalendarError", "add_business_days", "closing_reason", "collection_date", "earliest_collection", "is_business_day",
           "next_business_day"]
