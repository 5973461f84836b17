"""The TARGET2 calendar of direct debit collection dates: weekends, 1 May,
Easter (Good Friday, Easter Monday), Christmas (25 and 26 December), New
Year, and the lead time in business days (no database)."""

from __future__ import annotations

from datetime import date

import pytest

from engine.domain.target2 import (
    CalendarError,
    add_business_days,
    closing_reason,
    collection_date,
    earliest_collection,
    is_business_day,
    next_business_day,
)


@pytest.mark.parametrize("day", [
    date(2026, 5, 1),                        # 1 May
    date(2025, 4, 18), date(2025, 4, 21),    # Good Friday, Easter Monday 2025
    date(2026, 4, 3), date(2026, 4, 6),      # Good Friday, Easter Monday 2026
    date(2024, 12, 25), date(2024, 12, 26),  # Christmas
    date(2025, 1, 1),
])
def test_target2_is_closed_on_its_holidays(day):
    assert day.weekday() < 5 and not is_business_day(day)
    assert closing_reason(day) not in (None, "weekend")  # the holiday's name, as the calendar spells it


def test_target2_is_closed_on_weekends():
    assert not is_business_day(date(2026, 5, 2)) and closing_reason(date(2026, 5, 2)) == "weekend"


@pytest.mark.parametrize("day", [date(2026, 5, 4), date(2024, 12, 24), date(2024, 12, 27), date(2024, 12, 31),
                                 date(2025, 4, 17), date(2025, 4, 22), date(2025, 10, 3)])
def test_target2_is_open_on_national_holidays_and_christmas_eve(day):
    # 3 October (German Unity Day) is a German holiday, not a TARGET2 one.
    assert is_business_day(day) and closing_reason(day) is None


def test_a_lead_time_of_one_day_over_1_may():
    # submitted Thursday 30 April 2026: 1 May (Friday) is closed, then the weekend
    assert earliest_collection(date(2026, 4, 30), 1) == date(2026, 5, 4)
    assert add_business_days(date(2026, 4, 29), 2) == date(2026, 5, 4)


def test_a_lead_time_over_easter():
    # Thursday before Good Friday 2025 (18 April), Easter Monday 21 April
    assert earliest_collection(date(2025, 4, 17), 1) == date(2025, 4, 22)
    assert earliest_collection(date(2025, 4, 18), 1) == date(2025, 4, 23)  # submitted on a closed day


def test_a_lead_time_over_christmas_and_new_year():
    assert earliest_collection(date(2024, 12, 24), 1) == date(2024, 12, 27)
    assert earliest_collection(date(2024, 12, 31), 1) == date(2025, 1, 2)
    assert add_business_days(date(2024, 12, 23), 3) == date(2024, 12, 30)


def test_the_collection_date_is_the_due_date_on_a_business_day_but_never_too_early():
    submitted = date(2026, 4, 28)
    assert collection_date(date(2026, 5, 1), submitted, 1) == date(2026, 5, 4)    # due on 1 May
    assert collection_date(date(2026, 4, 20), submitted, 1) == date(2026, 4, 29)  # overdue: as early as allowed
    assert collection_date(None, submitted, 2) == date(2026, 4, 30)
    assert collection_date(date(2026, 6, 10), submitted, 1) == date(2026, 6, 10)
    assert next_business_day(date(2026, 12, 25)) == date(2026, 12, 28)


def test_impossible_requests_are_errors():
    with pytest.raises(CalendarError, match="not negative"):
        add_business_days(date(2026, 1, 5), -1)
    with pytest.raises(CalendarError, match="2000-2099"):
        is_business_day(date(2150, 1, 1))
