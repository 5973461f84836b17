"""Service periods and proration of subscription items: one pure decision.

:func:`due_charges` answers, for one subscription item, *which service periods
does a run ending on a given day bill, and for how much per unit*, and
explains its answer in a trace. The subscription run, its dry run and
``metabill explain`` call it alike; nothing here touches the database.

**Cycles.** A subscription bills in cycles of ``BillingPeriod`` x
``BillingFactor`` months. The cycles sit on a grid of months anchored at the
subscription's start date (Alignment "Start Date": a subscription starting on
15 January bills 15 January - 14 February, ...) or at 1 January of its start
year (Alignment "Calendar": months, quarters or years of the calendar). A grid
month that starts on a day the month does not have starts on its last day
(anchored on 31 January: 28/29 February, 31 March, 30 April, ...): every grid
month is computed from the anchor, never from the month before, so the day
comes back.

**Due.** An item's service starts on its start date (else the
subscription's) or, once billed, on its ``NextServicePeriodStart``, and ends
on its end date, the subscription's end date or the day a cancellation takes
effect, whichever comes first. Its service is cut at the cycle boundaries into
service periods. In advance, a period is due in a run whose period ends on or
after the period's first day; in arrears, on or after its last day. Periods a
run missed are billed by the next one (nothing is skipped).

**Proration** (decided in docs/decisions.md). A day's position on the grid is
``F(d) = k + (d - g_k) / (g_{k+1} - g_k)`` for the grid month ``g_k <= d <
g_{k+1}``: whole months count 1 whatever their length, and a day inside a
month counts its share of that month's days ("Day Exact"). The amount of a
piece of service ``[a, b]`` at a price ``P`` per ``m`` months is

    R(P * F(b + 1) / m) - R(P * F(a) / m)

with ``R`` rounding the exact value to cents, half up on the magnitude. The
amounts are differences of one cumulative rounded amount, so consecutive
periods telescope: any run of periods covering whole months sums to exactly
``P`` per ``m`` months, whatever the proration in between, and no cent
drifts over a year (12 months of an item priced per year add up to the
yearly price). "Full Period" proration bills a partial cycle as a whole one.
A price change on ``PriceChangeDate`` splits a period there; each piece is
billed at its own price with the same formula.

**Invoice date.** :func:`preferred_invoice_date` turns a subscription's
preferred day of the month into the date of its invoice in a run (used when
the run has no invoice date of its own).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from typing import Sequence

#: Months of each billing or price period.
PERIOD_MONTHS = {"Month": 1, "Quarter": 3, "Year": 12}
ADVANCE = "Advance"
ARREARS = "Arrears"
DAY_EXACT = "Day Exact"
FULL_PERIOD = "Full Period"
CALENDAR = "Calendar"
START_DATE = "Start Date"
RECURRING = "Recurring"
ONE_TIME = "One-Time"
#: Billing types a subscription run bills; Transactional and Usage items are
#: billed from usage records (not supported yet) and are left alone.
BILLED_TYPES = (RECURRING, ONE_TIME)
#: The most periods one item may be due at once: a run over decades of
#: monthly service is a mistake in the data, not a bill.
MAX_PERIODS = 600


class PeriodError(ValueError):
    """The terms of an item contradict each other (a message for the record error)."""


@dataclass(frozen=True)
class Terms:
    """What decides an item's service periods and amounts (subscription and
    item fields, already defaulted by :mod:`engine.billing.subscriptions`)."""

    start: date  # first day of service of the item
    end: date | None  # last day of service (item end, subscription end, cancellation)
    anchor: date  # grid origin (subscription start, or 1 January of its year)
    cycle_months: int  # billing period months x billing factor
    practice: str  # Advance | Arrears
    proration: str  # Day Exact | Full Period
    billing_type: str  # Recurring | One-Time | ...
    price_months: int  # the months UnitPrice pays for
    unit_price: Decimal
    change_date: date | None = None  # NewUnitPrice applies from this day on
    new_unit_price: Decimal | None = None


@dataclass(frozen=True)
class Piece:
    """A part of a service period billed at one price."""

    start: date
    end: date
    unit_price: Decimal
    months: Fraction  # grid months the piece covers (F(end + 1) - F(start))
    amount: Decimal  # per unit, cents


@dataclass(frozen=True)
class Charge:
    """One service period to bill: per-unit amount (cents) and how it came about."""

    start: date
    end: date
    amount: Decimal
    pieces: tuple[Piece, ...]
    prorated: bool  # shorter than its cycle (and billed Day Exact)

    def describe(self) -> str:
        if len(self.pieces) == 1 and self.pieces[0].months == 0:
            return f"one-time on {self.start}: per unit {self.amount}"
        parts = []
        for piece in self.pieces:
            parts.append(f"{piece.start}..{piece.end}: {_months_text(piece.months)} month(s) at "
                         f"{piece.unit_price} -> {piece.amount}")
        kind = "prorated" if self.prorated else "full"
        return f"service period {self.start}..{self.end} ({kind}): " + "; ".join(parts) + f"; per unit {self.amount}"


@dataclass(frozen=True)
class Decision:
    """The charges due for one item in a run, with the trace of the decision."""

    charges: tuple[Charge, ...]
    next_start: date | None  # the first day still unbilled after these charges
    trace: tuple[str, ...] = field(default=())


# -- the grid ---------------------------------------------------------------------


@lru_cache(maxsize=65536)
def add_months(anchor: date, months: int) -> date:
    """``anchor`` moved by whole months; a day the month lacks becomes its last day."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(anchor.day, last))


@lru_cache(maxsize=65536)
def grid_month(anchor: date, day: date) -> int:
    """The index ``k`` of the grid month holding ``day``: ``g_k <= day < g_{k+1}``."""
    k = (day.year - anchor.year) * 12 + day.month - anchor.month
    while add_months(anchor, k) > day:
        k -= 1
    while add_months(anchor, k + 1) <= day:
        k += 1
    return k


@lru_cache(maxsize=65536)
def position(anchor: date, day: date) -> Fraction:
    """``F(day)``: whole grid months since the anchor plus the day-exact share of the current one."""
    k = grid_month(anchor, day)
    start, after = add_months(anchor, k), add_months(anchor, k + 1)
    return k + Fraction((day - start).days, (after - start).days)


@lru_cache(maxsize=65536)
def cycle_bounds(anchor: date, cycle_months: int, day: date) -> tuple[date, date]:
    """The first and the last day of the billing cycle holding ``day``."""
    k = grid_month(anchor, day)
    first = (k // cycle_months) * cycle_months
    return add_months(anchor, first), add_months(anchor, first + cycle_months) - timedelta(days=1)


@lru_cache(maxsize=65536)
def cumulative(price: Decimal, months: Fraction, price_months: int) -> Decimal:
    """``R(price * months / price_months)``: the exact value rounded to cents,
    half up on its magnitude. Rounding the magnitude keeps credits (negative
    prices) the mirror image of charges; rounding ``floor(x + 1/2)`` of a
    magnitude is shift-invariant by whole cents, which makes the differences
    telescope."""
    exact = Fraction(price) * months / price_months
    magnitude = abs(exact) * 100
    cents = (magnitude.numerator * 2 + magnitude.denominator) // (magnitude.denominator * 2)
    value = Decimal(cents) / 100
    return (-value if exact < 0 else value).quantize(Decimal("0.01"))


def _months_text(months: Fraction) -> str:
    return str(months.numerator) if months.denominator == 1 else f"{months.numerator}/{months.denominator}"


# -- the decision -----------------------------------------------------------------


def due_charges(terms: Terms, next_start: date | None, run_end: date, explain: bool = True) -> Decision:
    """The service periods of an item a run ending on ``run_end`` bills (see
    the module docstring). ``next_start`` is the first unbilled day (the
    item's NextServicePeriodStart), None when nothing was billed yet.
    ``explain=False`` leaves the trace out (the run does not print it;
    explain does). Raises :class:`PeriodError` for contradictory terms."""
    if terms.cycle_months < 1:
        raise PeriodError(f"the billing cycle must be at least one month, is {terms.cycle_months}")
    if terms.price_months < 1:
        raise PeriodError(f"the price period must be at least one month, is {terms.price_months}")
    trace: list[str] = []
    if explain:
        trace += [
            f"grid anchored at {terms.anchor}, cycles of {terms.cycle_months} month(s), billed in "
            f"{terms.practice.lower()}, {terms.proration} proration, price per {terms.price_months} month(s)",
            f"service {terms.start}..{terms.end or 'open'}, billed until "
            f"{(next_start - timedelta(days=1)) if next_start else 'never'}, run ends {run_end}",
        ]
    begin = max(terms.start, next_start) if next_start else terms.start
    if terms.end is not None and begin > terms.end:
        trace.append("nothing due: the service is billed to its end")
        return Decision((), next_start, tuple(trace))
    if terms.billing_type == ONE_TIME:
        return _one_time(terms, next_start, run_end, trace)
    if terms.billing_type != RECURRING:
        trace.append(f"nothing due: {terms.billing_type} items are billed from usage records")
        return Decision((), next_start, tuple(trace))
    periods, waiting = _schedule(terms.anchor, terms.cycle_months, terms.end, terms.practice, begin, run_end)
    charges = tuple(_charge(terms, *period) for period in periods)
    if explain:
        trace += [charge.describe() for charge in charges]
        if waiting is not None:
            trace.append(f"not yet due: {waiting[0]}..{waiting[1]} (due on {waiting[2]})")
    return Decision(charges, periods[-1][1] + timedelta(days=1) if periods else next_start, tuple(trace))


@lru_cache(maxsize=65536)
def _schedule(anchor: date, cycle_months: int, end: date | None, practice: str, begin: date,
              run_end: date) -> tuple[tuple[tuple[date, date, date, date], ...], tuple[date, date, date] | None]:
    """The service periods due from ``begin`` in a run ending on ``run_end``
    (start, end, cycle start, cycle end each), and the first period not yet
    due (start, end, due day) or None. Independent of prices, so items of the
    same grid and state share it (cached: a run decides each shape once)."""
    periods = []
    start = begin
    while end is None or start <= end:
        cycle_start, cycle_end = cycle_bounds(anchor, cycle_months, start)
        last = cycle_end if end is None else min(cycle_end, end)
        due_day = start if practice == ADVANCE else last
        if due_day > run_end:
            return tuple(periods), (start, last, due_day)
        if len(periods) == MAX_PERIODS:
            raise PeriodError(f"more than {MAX_PERIODS} service periods due at once (from {begin}): "
                              "check the start date and NextServicePeriodStart")
        periods.append((start, last, cycle_start, cycle_end))
        start = last + timedelta(days=1)
    return tuple(periods), None


def _one_time(terms: Terms, next_start: date | None, run_end: date, trace: list[str]) -> Decision:
    """A one-time item: its price once, in the run its start day falls in or before."""
    if next_start is not None and next_start > terms.start:
        trace.append("nothing due: the one-time item is billed")
        return Decision((), next_start, tuple(trace))
    if terms.start > run_end:
        trace.append(f"not yet due: one-time on {terms.start}")
        return Decision((), next_start, tuple(trace))
    amount = _price_on(terms, terms.start)  # billed as priced: the line rounds quantity x price
    piece = Piece(terms.start, terms.start, amount, Fraction(0), amount)
    charge = Charge(terms.start, terms.start, amount, (piece,), False)
    trace.append(f"one-time on {terms.start}: per unit {amount}")
    return Decision((charge,), terms.start + timedelta(days=1), tuple(trace))


def _price_on(terms: Terms, day: date) -> Decimal:
    if terms.change_date is not None and terms.new_unit_price is not None and day >= terms.change_date:
        return terms.new_unit_price
    return terms.unit_price


@lru_cache(maxsize=65536)
def _charge(terms: Terms, start: date, end: date, cycle_start: date, cycle_end: date) -> Charge:
    """The per-unit amount of one service period, piece by piece (cached:
    items of equal terms in the same state, most of a run, share it)."""
    partial = (start, end) != (cycle_start, cycle_end)
    low, high = start, end + timedelta(days=1)
    if terms.proration == FULL_PERIOD:
        low, high = cycle_start, cycle_end + timedelta(days=1)
    cuts = [low, high]
    change = terms.change_date
    if change is not None and terms.new_unit_price is not None and low < change < high:
        cuts.insert(1, change)
    pieces = []
    for piece_low, piece_high in zip(cuts, cuts[1:]):
        price = _price_on(terms, piece_low)
        f_low, f_high = position(terms.anchor, piece_low), position(terms.anchor, piece_high)
        amount = cumulative(price, f_high, terms.price_months) - cumulative(price, f_low, terms.price_months)
        pieces.append(Piece(max(piece_low, start), min(piece_high - timedelta(days=1), end), price,
                            f_high - f_low, amount))
    total = sum((p.amount for p in pieces), Decimal("0.00"))
    return Charge(start, end, total, tuple(pieces), partial and terms.proration == DAY_EXACT)


def effective_end(end: date | None, cancellation: date | None, notice_months: int, anchor: date,
                  cycle_months: int) -> tuple[date | None, str]:
    """The last day of service of a subscription: its end date, or, when it
    was canceled, the last day of the cycle in which the cancellation date
    plus the notice period falls (whichever comes first); with the reason."""
    if cancellation is None:
        return end, f"ends {end}" if end else "open-ended"
    effective = add_months(cancellation, max(notice_months, 0))
    _, cycle_end = cycle_bounds(anchor, cycle_months, effective)
    reason = (f"canceled on {cancellation} with {notice_months} month(s) notice: "
              f"ends with the cycle holding {effective}, on {cycle_end}")
    if end is not None and end < cycle_end:
        return end, reason + f"; its end date {end} comes first"
    return cycle_end, reason


def sum_amounts(charges: Sequence[Charge]) -> Decimal:
    """The per-unit total of some charges."""
    return sum((c.amount for c in charges), Decimal("0.00"))


def preferred_invoice_date(day: object, run_end: date) -> date:
    """The date of a subscription's invoice from its preferred day of the
    month (``PreferredInvoiceDay``): that day in the month of the run's
    period end, or the month's last day when it has fewer days (31 in
    February is the 28th or 29th). Raises :class:`PeriodError` for anything
    but a whole number from 1 to 31."""
    try:
        number = Decimal(str(day))
    except ArithmeticError:
        raise PeriodError(f"PreferredInvoiceDay must be a day of the month from 1 to 31, is {day}") from None
    if number != number.to_integral_value() or not 1 <= number <= 31:
        raise PeriodError(f"PreferredInvoiceDay must be a day of the month from 1 to 31, is {day}")
    last = calendar.monthrange(run_end.year, run_end.month)[1]
    return date(run_end.year, run_end.month, min(int(number), last))
