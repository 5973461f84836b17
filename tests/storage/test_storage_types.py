"""Exact numbers and value conversion on both backends."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.storage.types import (
    ExactDecimal,
    MultiPicklistText,
    UtcDateTime,
    decimal_to_scaled,
    from_db,
    scaled_to_decimal,
    to_db,
)

from storage_models import T, fld


def _money_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "money",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("amount", ExactDecimal(18, 2)),
        sa.Column("rate", ExactDecimal(5, 4)),
        sa.Column("day", sa.Date),
        sa.Column("at", UtcDateTime()),
        sa.Column("flag", sa.Boolean),
        sa.Column("tags", MultiPicklistText()),
    )


@pytest.fixture
def money(engine):
    metadata = sa.MetaData()
    table = _money_table(metadata)
    metadata.create_all(engine)
    return table


def test_largest_currency_round_trips_exactly(engine, money):
    big = Decimal("1234567890123456.78")  # 18 digits: Currency(18,2)
    with engine.begin() as conn:
        conn.execute(money.insert(), [{"id": 1, "amount": big}, {"id": 2, "amount": -big}])
    with engine.connect() as conn:
        values = conn.execute(sa.select(money.c.amount).order_by(money.c.id)).scalars().all()
    assert values == [big, -big]
    assert all(isinstance(v, Decimal) for v in values)
    assert str(values[0]) == "1234567890123456.78"


def test_sum_of_ten_dimes_is_exactly_one(engine, money):
    with engine.begin() as conn:
        conn.execute(money.insert(), [{"id": i, "amount": Decimal("0.10")} for i in range(1, 11)])
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.sum(money.c.amount))).scalar_one()
        raw = conn.execute(sa.text("SELECT SUM(amount) FROM money")).scalar_one()
    assert total == Decimal("1.00") and str(total) == "1.00"
    if engine.dialect.name == "sqlite":
        assert raw == 100  # integer minor units: no binary float anywhere
    else:
        assert raw == Decimal("1.00")


def test_comparisons_and_ordering_in_sql_use_the_same_scale(engine, money):
    with engine.begin() as conn:
        conn.execute(
            money.insert(),
            [{"id": 1, "amount": Decimal("9.99")}, {"id": 2, "amount": Decimal("10.00")}, {"id": 3, "amount": Decimal("-0.01")}],
        )
    with engine.connect() as conn:
        above = conn.execute(sa.select(money.c.id).where(money.c.amount > Decimal("9.99"))).scalars().all()
        plus = conn.execute(sa.select(money.c.amount + money.c.amount).where(money.c.id == 1)).scalar_one()
        ordered = conn.execute(sa.select(money.c.id).order_by(money.c.amount)).scalars().all()
    assert above == [2]
    assert plus == Decimal("19.98")  # same-scale addition stays exact in SQL
    assert ordered == [3, 1, 2]


def test_values_are_quantized_half_up_and_never_floats(engine, money):
    with engine.begin() as conn:
        conn.execute(money.insert(), [{"id": 1, "amount": Decimal("2.345"), "rate": 1}])
        with pytest.raises(sa.exc.StatementError) as info:
            conn.execute(money.insert(), [{"id": 2, "amount": 0.1}])
        assert "floating-point" in str(info.value)
    with engine.connect() as conn:
        row = conn.execute(sa.select(money.c.amount, money.c.rate)).one()
    assert row.amount == Decimal("2.35") and str(row.rate) == "1.0000"


def test_value_wider_than_the_precision_is_refused_on_both_backends(engine, money):
    with engine.begin() as conn:
        with pytest.raises(sa.exc.StatementError) as info:
            conn.execute(money.insert(), [{"id": 1, "rate": Decimal("10")}])  # NUMERIC(5,4) holds < 10
    assert "does not fit NUMERIC(5, 4)" in str(info.value)


def test_datetimes_come_back_as_aware_utc(engine, money):
    local = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as conn:
        conn.execute(money.insert(), [{"id": 1, "at": local, "day": date(2024, 2, 29), "flag": True, "tags": ("A", "B")}])
    with engine.connect() as conn:
        row = conn.execute(sa.select(money.c.at, money.c.day, money.c.flag, money.c.tags)).one()
    assert row.at == local and row.at.tzinfo == timezone.utc and row.at.hour == 10
    assert row.day == date(2024, 2, 29)
    assert row.flag is True
    assert row.tags == ("A", "B")


def test_driver_level_values_match_what_sqlalchemy_stores(engine, money):
    """Rows written through to_db with the raw driver are indistinguishable
    from rows written through the SQLAlchemy types, in both directions."""
    dialect = engine.dialect.name
    amount = fld("X", "Amount", T.CURRENCY, precision=18, scale=2)
    rate = fld("X", "Rate", T.PERCENT, precision=5, scale=4)
    day = fld("X", "Day", T.DATE)
    at = fld("X", "At", T.DATETIME)
    flag = fld("X", "Flag", T.CHECKBOX)
    tags = fld("X", "Tags", T.MULTIPICKLIST, values=("A", "B"))
    typed = {
        "amount": Decimal("-1234.5"),
        "rate": Decimal("0.0725"),
        "day": date(2023, 12, 31),
        "at": datetime(2023, 12, 31, 23, 59, 59, 5, tzinfo=timezone.utc),
        "flag": False,
        "tags": ("A", "B"),
    }
    fields = {"amount": amount, "rate": rate, "day": day, "at": at, "flag": flag, "tags": tags}
    with engine.begin() as conn:
        conn.execute(money.insert(), [{"id": 1, **typed}])
        raw = {k: to_db(fields[k], v, dialect) for k, v in typed.items()}
        placeholders = ", ".join(["%s" if dialect == "postgresql" else "?"] * 7)
        conn.exec_driver_sql(
            f"INSERT INTO money (id, amount, rate, day, at, flag, tags) VALUES ({placeholders})",
            (2, *raw.values()),
        )
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT amount, rate, day, at, flag, tags FROM money ORDER BY id").all()
        via_types = conn.execute(sa.select(money).order_by(money.c.id)).all()
    assert tuple(stored[0]) == tuple(stored[1])  # identical raw storage
    assert via_types[0][1:] == via_types[1][1:]
    back = {k: from_db(fields[k], v, dialect) for k, v in zip(typed, stored[1])}
    assert back == {**typed, "amount": Decimal("-1234.50")}
    if dialect == "sqlite":
        assert raw["amount"] == -123450 and raw["rate"] == 725
        assert raw["day"] == "2023-12-31" and raw["flag"] == 0
        assert raw["at"] == "2023-12-31 23:59:59.000005"
    assert raw["tags"] == "A;B"


def test_scaled_integer_helpers():
    assert decimal_to_scaled(Decimal("0.10"), 18, 2) == 10
    assert decimal_to_scaled("1.005", 18, 2) == 101  # half up, from text: no float
    assert decimal_to_scaled(Decimal("-1.005"), 18, 2) == -101
    assert scaled_to_decimal(5, 2) == Decimal("0.05") and str(scaled_to_decimal(0, 2)) == "0.00"
    with pytest.raises(ValueError):
        decimal_to_scaled(Decimal("100"), 3, 2)
    with pytest.raises(TypeError):
        decimal_to_scaled(0.5, 18, 2)
    with pytest.raises(ValueError):
        ExactDecimal(19, 2)  # would not fit a 64-bit integer on SQLite


def test_empty_multipicklist_is_null_and_none_passes_through():
    tags = fld("X", "Tags", T.MULTIPICKLIST)
    for dialect in ("sqlite", "postgresql"):
        assert to_db(tags, (), dialect) is None
        assert to_db(tags, None, dialect) is None
        assert from_db(tags, "A;B", dialect) == ("A", "B")
        for kind in (T.CURRENCY, T.DATE, T.DATETIME, T.CHECKBOX, T.TEXT):
            field = fld("X", "F", kind, precision=10, scale=2)
            assert to_db(field, None, dialect) is None
            assert from_db(field, None, dialect) is None
