"""The service-period and proration decision (engine.billing.periods): pure, no database.

Properties over random terms: consecutive periods tile the service without
gaps or overlaps, amounts telescope (any bill of whole grid months sums to
the price of those months exactly, whatever the proration at start and end),
twelve months of an item priced per year sum to the yearly price with no
drifting cent, a run that bills month by month bills what one catch-up run
bills, and credits mirror charges. Worked examples pin the exact cents of
proration at period start and end, in advance and in arrears, a price change,
a cancellation with notice, and the grid of a 31st.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.billing.periods import (
    Terms,
    add_months,
    cumulative,
    cycle_bounds,
    due_charges,
    effective_end,
    position,
    sum_amounts,
)

D = Decimal
prices = st.decimals(min_value=D("0.01"), max_value=D("99999.99"), places=2, allow_nan=False, allow_infinity=False)
days = st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31))
cycles = st.sampled_from([1, 2, 3, 6, 12])
price_months = st.sampled_from([1, 3, 12])


def terms(start: date, price: Decimal, *, end: date | None = None, anchor: date | None = None, cycle: int = 1,
          practice: str = "Advance", proration: str = "Day Exact", per: int = 1, billing_type: str = "Recurring",
          change: date | None = None, new_price: Decimal | None = None) -> Terms:
    return Terms(start, end, anchor or start, cycle, practice, proration, billing_type, per, price, change, new_price)


@settings(max_examples=200, deadline=None)
@given(start=days, length=st.integers(0, 800), offset=st.integers(-40, 40), cycle=cycles, per=price_months,
       price=prices, arrears=st.booleans())
def test_periods_tile_the_service_and_amounts_telescope(start, length, offset, cycle, per, price, arrears):
    anchor = start + timedelta(days=min(offset, 0))  # the grid may start before the item
    end = start + timedelta(days=length)
    t = terms(start, price, end=end, anchor=anchor, cycle=cycle, per=per,
              practice="Arrears" if arrears else "Advance")
    decision = due_charges(t, None, end + timedelta(days=400))
    charges = decision.charges
    assert charges[0].start == start and charges[-1].end == end
    for before, after in zip(charges, charges[1:]):
        assert after.start == before.end + timedelta(days=1)
    assert decision.next_start == end + timedelta(days=1)
    exact = cumulative(price, position(anchor, end + timedelta(days=1)), per) - cumulative(price, position(anchor, start), per)
    assert sum_amounts(charges) == exact
    for charge in charges:
        assert charge.amount == charge.amount.quantize(D("0.01"))
        low, high = cycle_bounds(anchor, cycle, charge.start)
        assert low <= charge.start <= charge.end <= high


@settings(max_examples=200, deadline=None)
@given(start=days, price=prices, cycle=st.sampled_from([1, 3]), calendar=st.booleans())
def test_twelve_months_of_a_yearly_price_sum_to_the_yearly_price(start, price, cycle, calendar):
    """A year of service from any day bills exactly the yearly price: on
    cycles from the start date all periods are whole; on calendar cycles the
    first and the last are prorated, and their shares of their months add up
    to one month (a year from 2 February of a leap year is not a year of
    equal days per month, so February starts are left to the telescoping
    test above)."""
    anchor = date(start.year, 1, 1) if calendar else start
    if calendar and start.month == 2:
        start = start.replace(month=3)
    end = add_months(start, 12) - timedelta(days=1)
    t = terms(start, price, end=end, anchor=anchor, cycle=cycle, per=12)
    charges = due_charges(t, None, end).charges
    if calendar and (start.day != 1 or (start.month - 1) % cycle):
        assert charges[0].prorated and charges[-1].prorated
        assert len(charges) == 12 // cycle + 1
    else:
        assert not any(c.prorated for c in charges) and len(charges) == 12 // cycle
    assert sum_amounts(charges) == price


@settings(max_examples=150, deadline=None)
@given(start=days, price=prices, cycle=cycles, per=price_months, months=st.integers(1, 30), arrears=st.booleans())
def test_monthly_runs_bill_what_one_catch_up_run_bills(start, price, cycle, per, months, arrears):
    """Running every month and carrying NextServicePeriodStart forward bills
    the same periods and cents as one run at the end: nothing twice, nothing skipped."""
    t = terms(start, price, anchor=date(start.year, start.month, 1), cycle=cycle, per=per,
              practice="Arrears" if arrears else "Advance")
    run_ends = [add_months(date(start.year, start.month, 1), i + 1) - timedelta(days=1) for i in range(months)]
    next_start = None
    stepwise = []
    for run_end in run_ends:
        decision = due_charges(t, next_start, run_end)
        stepwise.extend(decision.charges)
        next_start = decision.next_start
    once = due_charges(t, None, run_ends[-1]).charges
    assert [(c.start, c.end, c.amount) for c in stepwise] == [(c.start, c.end, c.amount) for c in once]
    again = due_charges(t, next_start, run_ends[-1])
    assert again.charges == ()


@settings(max_examples=100, deadline=None)
@given(start=days, length=st.integers(0, 400), price=prices, per=price_months)
def test_credits_mirror_charges(start, length, price, per):
    end = start + timedelta(days=length)
    plus = due_charges(terms(start, price, end=end, per=per), None, end).charges
    minus = due_charges(terms(start, -price, end=end, per=per), None, end).charges
    assert [c.amount for c in minus] == [-c.amount for c in plus]


@settings(max_examples=100, deadline=None)
@given(start=days, length=st.integers(1, 700), price=prices, new_price=prices, change=st.integers(1, 700))
def test_a_price_change_splits_the_service_at_its_day(start, length, price, new_price, change):
    end = start + timedelta(days=length)
    change_day = start + timedelta(days=min(change, length))
    t = terms(start, price, end=end, anchor=date(start.year, 1, 1), change=change_day, new_price=new_price)
    charges = due_charges(t, None, end).charges
    before = cumulative(price, position(t.anchor, change_day), 1) - cumulative(price, position(t.anchor, start), 1)
    after = cumulative(new_price, position(t.anchor, end + timedelta(days=1)), 1) \
        - cumulative(new_price, position(t.anchor, change_day), 1)
    assert sum_amounts(charges) == before + after
    for charge in charges:
        for piece in charge.pieces:
            assert piece.unit_price == (new_price if piece.start >= change_day else price)


# -- worked examples ------------------------------------------------------------------


def test_calendar_month_prorated_at_start_and_end():
    """Service 15 Jan - 14 Mar 2026 at 31.00 a month on calendar months:
    17/31 of January, all of February, 14/31 of March."""
    t = terms(date(2026, 1, 15), D("31.00"), end=date(2026, 3, 14), anchor=date(2026, 1, 1))
    charges = due_charges(t, None, date(2026, 3, 31)).charges
    assert [(c.start, c.end, c.amount, c.prorated) for c in charges] == [
        (date(2026, 1, 15), date(2026, 1, 31), D("17.00"), True),
        (date(2026, 2, 1), date(2026, 2, 28), D("31.00"), False),
        (date(2026, 3, 1), date(2026, 3, 14), D("14.00"), True),
    ]


def test_cumulative_rounding_gives_the_cent_to_the_period_that_completes_it():
    """100.00 a year billed monthly: 8.33, 8.34, 8.33, ...; any three months
    are 25.00 and the year is 100.00."""
    t = terms(date(2026, 1, 1), D("100.00"), per=12)
    charges = due_charges(t, None, date(2026, 12, 1)).charges
    assert [c.amount for c in charges[:4]] == [D("8.33"), D("8.34"), D("8.33"), D("8.33")]
    assert sum_amounts(charges[:3]) == D("25.00") and sum_amounts(charges) == D("100.00")


def test_in_advance_and_in_arrears():
    t = terms(date(2026, 1, 1), D("10.00"))
    advance = due_charges(t, None, date(2026, 1, 31))
    assert [(c.start, c.end) for c in advance.charges] == [(date(2026, 1, 1), date(2026, 1, 31))]
    arrears = due_charges(terms(date(2026, 1, 1), D("10.00"), practice="Arrears"), None, date(2026, 1, 30))
    assert arrears.charges == () and arrears.next_start is None
    arrears = due_charges(terms(date(2026, 1, 1), D("10.00"), practice="Arrears"), None, date(2026, 1, 31))
    assert [(c.start, c.end) for c in arrears.charges] == [(date(2026, 1, 1), date(2026, 1, 31))]


def test_quarterly_cycle_with_a_monthly_price_and_full_period_proration():
    t = terms(date(2026, 2, 10), D("20.00"), anchor=date(2026, 1, 1), cycle=3, proration="Full Period")
    charges = due_charges(t, None, date(2026, 4, 1)).charges
    assert [(c.start, c.end, c.amount) for c in charges] == [
        (date(2026, 2, 10), date(2026, 3, 31), D("60.00")),
        (date(2026, 4, 1), date(2026, 6, 30), D("60.00")),
    ]


def test_a_grid_anchored_on_the_31st_keeps_its_day():
    anchor = date(2026, 1, 31)
    assert [add_months(anchor, k) for k in range(4)] == [
        date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]
    assert position(anchor, date(2026, 3, 31)) == 2
    assert position(anchor, date(2026, 3, 1)) == 1 + Fraction(1, 31)


def test_price_change_in_the_middle_of_a_month():
    t = terms(date(2026, 4, 1), D("30.00"), change=date(2026, 4, 16), new_price=D("60.00"))
    (charge,) = due_charges(t, None, date(2026, 4, 30)).charges
    assert [(p.start, p.end, p.amount) for p in charge.pieces] == [
        (date(2026, 4, 1), date(2026, 4, 15), D("15.00")),
        (date(2026, 4, 16), date(2026, 4, 30), D("30.00")),
    ]
    assert charge.amount == D("45.00")


def test_cancellation_takes_effect_at_the_end_of_the_cycle_after_the_notice():
    end, reason = effective_end(None, date(2026, 3, 10), 1, date(2026, 1, 1), 3)
    assert end == date(2026, 6, 30) and "canceled on 2026-03-10" in reason
    end, _ = effective_end(date(2026, 5, 15), date(2026, 3, 10), 1, date(2026, 1, 1), 3)
    assert end == date(2026, 5, 15)
    assert effective_end(None, None, 0, date(2026, 1, 1), 1) == (None, "open-ended")


def test_one_time_items_are_billed_once():
    t = terms(date(2026, 2, 3), D("99.50"), billing_type="One-Time")
    assert due_charges(t, None, date(2026, 1, 31)).charges == ()
    first = due_charges(t, None, date(2026, 2, 28))
    assert [(c.start, c.amount) for c in first.charges] == [(date(2026, 2, 3), D("99.50"))]
    assert due_charges(t, first.next_start, date(2026, 3, 31)).charges == ()


def test_usage_items_are_left_to_usage_billing():
    decision = due_charges(terms(date(2026, 1, 1), D("1.00"), billing_type="Usage"), None, date(2026, 12, 31))
    assert decision.charges == () and "usage" in decision.trace[-1]
