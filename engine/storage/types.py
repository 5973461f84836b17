"""Column types that behave identically on SQLite and PostgreSQL.

Money must be exact on both backends. PostgreSQL has ``NUMERIC(p, s)``;
SQLite has no exact decimal type (its ``NUMERIC`` affinity silently turns
``0.1`` into a binary float). So on SQLite a Number/Currency/Percent value is
stored as an integer count of minor units (``value * 10**scale`` in a 64-bit
INTEGER): ``SUM()``, comparisons, ``ORDER BY`` and addition of two columns of
the same scale stay exact in SQL. Multiplying or dividing such a column inside
SQL is *not* scale-safe on SQLite; that arithmetic belongs in Python. Values
bound against a column (also in comparisons) are quantized to its scale, so
compare with values of the column's scale.

Two layers are offered:

* SQLAlchemy types (:class:`ExactDecimal`, :class:`UtcDateTime`,
  :class:`MultiPicklistText`) used by the tables of :mod:`.schema`, so every
  Core statement converts values automatically;
* plain converter functions (:func:`to_db`, :func:`from_db` and the
  per-field factories :func:`to_db_converter` / :func:`from_db_converter`)
  for driver-level bulk paths that bypass SQLAlchemy's type processing. They
  produce exactly what the SQLAlchemy types would store, so rows written either
  way are indistinguishable.

Values reach storage already shaped by :func:`engine.config.values.coerce`;
the types still quantize defensively (ROUND_HALF_UP) and refuse floats and
values wider than the precision, so SQLite cannot silently store what
PostgreSQL would reject.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from engine.config.model import FieldDef, FieldType
from engine.domain.errors import EngineError, Where

#: The widest precision the storage layer supports: 18 digits always fit a
#: signed 64-bit integer (max ~9.22e18), which is what SQLite stores.
MAX_PRECISION = 18

_UTC = timezone.utc
_MULTI_SEPARATOR = ";"


class ValueOutOfRange(EngineError, ValueError):
    """A number does not fit the precision and scale of its field's column.

    PostgreSQL would refuse it, and SQLite is made to refuse it as well."""

    code = "R130"


class TextTooLong(EngineError, ValueError):
    """A text is longer than its field's column.

    PostgreSQL would refuse it, and SQLite is made to refuse it as well."""

    code = "R131"


def text_too_long(field: FieldDef, value: str, length: int) -> TextTooLong:
    """The error for ``value`` written to ``field`` (a column of ``length`` characters)."""
    shown = value if len(value) <= 40 else value[:40] + "..."
    return TextTooLong(
        f"{field.object_name}.{field.name}: a text of {len(value):,} characters does not fit the field's "
        f"{length} characters ({shown!r})",
        where=Where(object=field.object_name, field=field.name),
        hint="shorten the value where it comes from, or lengthen the field and migrate",
    )


def _too_wide(value: object, precision: int, scale: int, field: FieldDef | None = None) -> ValueOutOfRange:
    where = Where(object=field.object_name, field=field.name) if field is not None else None
    return ValueOutOfRange(
        f"{value} does not fit NUMERIC({precision}, {scale})", where=where,
        hint=f"at most {precision - scale} digits before the decimal point fit; widen the field or check the amounts",
    )


# ---------------------------------------------------------------------------
# Decimal <-> scaled integer


def _as_decimal(value: object) -> Decimal:
    """A Decimal from an int, Decimal or decimal text; never from a float."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):  # bool is an int subclass; True is not 1.00
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        return Decimal(value.strip())
    if isinstance(value, float):
        raise TypeError("binary floating-point values are refused for exact numbers")
    raise TypeError(f"expected a Decimal, got {type(value).__name__}")


def _shape(precision: int, scale: int) -> tuple[Decimal, int, int]:
    """Precomputed (quantum, scale factor, exclusive bound of scaled ints)."""
    return Decimal(1).scaleb(-scale), 10**scale, 10**precision


def _check_precision(precision: int | None, scale: int | None) -> tuple[int, int]:
    precision = MAX_PRECISION if precision is None else precision
    scale = 0 if scale is None else scale
    if not 0 < precision <= MAX_PRECISION:
        raise ValueError(f"precision {precision} is outside 1..{MAX_PRECISION}")
    if not 0 <= scale <= precision:
        raise ValueError(f"scale {scale} is outside 0..{precision}")
    return precision, scale


def decimal_to_scaled(value: object, precision: int, scale: int) -> int:
    """``value`` as an integer number of ``10**-scale`` units (ROUND_HALF_UP)."""
    quantum, _, bound = _shape(precision, scale)
    scaled = int(_as_decimal(value).quantize(quantum, ROUND_HALF_UP).scaleb(scale))
    if -bound < scaled < bound:
        return scaled
    raise _too_wide(value, precision, scale)


def scaled_to_decimal(value: int, scale: int) -> Decimal:
    """The Decimal for ``value`` units of ``10**-scale``; exact, keeps the scale."""
    return Decimal(value).scaleb(-scale)


class ExactDecimal(TypeDecorator):
    """An exact decimal of at most 18 digits.

    PostgreSQL: ``NUMERIC(precision, scale)``. SQLite: ``BIGINT`` holding
    minor units. The Python side is always a :class:`~decimal.Decimal` with
    exactly ``scale`` decimal places.
    """

    impl = sa.Numeric
    cache_ok = True

    def __init__(self, precision: int, scale: int):
        precision, scale = _check_precision(precision, scale)
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self.precision = precision
        self.scale = scale
        self._quantum, self._factor, self._bound = _shape(precision, scale)

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.BigInteger())
        return dialect.type_descriptor(sa.Numeric(self.precision, self.scale, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        quantized = _as_decimal(value).quantize(self._quantum, ROUND_HALF_UP)
        scaled = int(quantized.scaleb(self.scale))
        if not -self._bound < scaled < self._bound:
            # PostgreSQL would reject this; SQLite would store it. Refuse on both.
            raise _too_wide(value, self.precision, self.scale)
        return scaled if dialect.name == "sqlite" else quantized

    def process_literal_param(self, value: Any, dialect: sa.Dialect) -> str:
        bound = self.process_bind_param(value, dialect)
        return "NULL" if bound is None else str(bound)

    def result_processor(self, dialect: sa.Dialect, coltype: object):
        """On SQLite, a direct int -> Decimal converter: reading a large
        invoice run converts millions of amounts, and the generic decorator
        path costs about twice as much per value."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        exponent = -self.scale
        generic = self.process_result_value

        def to_decimal(value: Any) -> Decimal | None:
            if value is None:
                return None
            if type(value) is int:
                return Decimal(value).scaleb(exponent)
            return generic(value, dialect)

        return to_decimal

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, int):
            return Decimal(value).scaleb(-self.scale)
        if isinstance(value, float):
            # Only reachable through SQL that left integer arithmetic (AVG, /).
            raise TypeError("an inexact floating-point result was read from an exact column")
        return _as_decimal(value).quantize(self._quantum, ROUND_HALF_UP)

    @property
    def python_type(self) -> type:
        return Decimal


class UtcDateTime(TypeDecorator):
    """A point in time, always an aware UTC ``datetime`` on the Python side.

    PostgreSQL stores ``TIMESTAMP WITH TIME ZONE``; SQLite stores SQLAlchemy's
    default text format of the UTC wall time (which sorts chronologically).
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        value = value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=_UTC)
        return value.astimezone(_UTC)

    @property
    def python_type(self) -> type:
        return datetime


class MultiPicklistText(TypeDecorator):
    """A multi-select picklist: ``tuple[str, ...]`` in Python, ``a;b;c`` text in
    the database. An empty selection is stored as NULL."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        return _multi_to_text(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> tuple[str, ...] | None:
        return _text_to_multi(value)

    @property
    def python_type(self) -> type:
        return tuple


def _multi_to_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    return _MULTI_SEPARATOR.join(value) or None


def _text_to_multi(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part for part in value.split(_MULTI_SEPARATOR) if part)


# ---------------------------------------------------------------------------
# Driver-level converters


def _identity(value: Any) -> Any:
    return value


def _sqlite_date(value: date | None) -> str | None:
    # Same text as sqlalchemy.dialects.sqlite.DATE writes.
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    return "%04d-%02d-%02d" % (value.year, value.month, value.day)


def _sqlite_date_in(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=_UTC) if value.tzinfo is None else value.astimezone(_UTC)


def _sqlite_datetime(value: datetime | None) -> str | None:
    # Same text as sqlalchemy.dialects.sqlite.DATETIME writes, of the UTC time.
    if value is None:
        return None
    v = _utc(value)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (
        v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond,
    )


def _sqlite_datetime_in(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=_UTC)


def _pg_datetime(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _sqlite_bool(value: Any) -> int | None:
    return None if value is None else (1 if value else 0)


def _sqlite_bool_in(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _pg_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def numeric_shape(field: FieldDef) -> tuple[int, int]:
    """The (precision, scale) a numeric field is stored with."""
    return _check_precision(field.precision, field.scale)


def to_db_converter(field: FieldDef, dialect_name: str) -> Callable[[Any], Any]:
    """A one-argument function turning typed values of ``field`` into what the
    driver of ``dialect_name`` should receive. Build it once per column and
    call it per row: this is the cheap path for bulk inserts."""
    sqlite = dialect_name == "sqlite"
    kind = field.type
    if kind.is_numeric:
        precision, scale = numeric_shape(field)
        quantum, _, bound = _shape(precision, scale)

        if sqlite:
            def number(value: Any) -> Any:
                if value is None:
                    return None
                decimal = value if type(value) is Decimal else _as_decimal(value)
                # scaleb + integral rounding half-up == quantize to the scale, then shift.
                scaled = int(decimal.scaleb(scale).to_integral_value(ROUND_HALF_UP))
                if not -bound < scaled < bound:
                    raise _too_wide(value, precision, scale, field)
                return scaled
        else:
            # |quantized| < 10**(precision - scale) is the same test as the
            # scaled integer against 10**precision, without building the int.
            limit = Decimal(bound).scaleb(-scale)

            def number(value: Any) -> Any:
                if value is None:
                    return None
                quantized = _as_decimal(value).quantize(quantum, ROUND_HALF_UP)
                if not (quantized.is_finite() and -limit < quantized < limit):
                    raise _too_wide(value, precision, scale, field)
                return quantized

        return number
    if kind is FieldType.DATE:
        return _sqlite_date if sqlite else _identity
    if kind is FieldType.DATETIME:
        return _sqlite_datetime if sqlite else _pg_datetime
    if kind is FieldType.CHECKBOX:
        return _sqlite_bool if sqlite else _pg_bool
    if kind is FieldType.MULTIPICKLIST:
        return _multi_to_text
    return _identity


def to_db_column_converter(field: FieldDef, dialect_name: str) -> Callable[[list[Any]], list[Any]]:
    """:func:`to_db_converter` for a whole column of values at once (bulk
    inserts): the same values and errors, but for numbers the per-value work
    on exact Decimals is inlined and the range check is done once per column
    (min and max) instead of once per value."""
    convert = to_db_converter(field, dialect_name)
    if not field.type.is_numeric:
        return lambda values: [None if value is None else convert(value) for value in values]
    precision, scale = numeric_shape(field)
    quantum, _, bound = _shape(precision, scale)
    if dialect_name == "sqlite":
        limit: int | Decimal = bound

        def shape(values: list[Any]) -> list[Any]:
            return [
                int(value.scaleb(scale).to_integral_value(ROUND_HALF_UP)) if type(value) is Decimal else convert(value)
                for value in values
            ]
    else:
        limit = Decimal(bound).scaleb(-scale)

        def shape(values: list[Any]) -> list[Any]:
            # NaN and infinities go through ``convert``, which refuses them.
            return [
                value.quantize(quantum, ROUND_HALF_UP) if type(value) is Decimal and value.is_finite()
                else convert(value)
                for value in values
            ]

    def column(values: list[Any]) -> list[Any]:
        out = shape(values)
        present = [value for value in out if value is not None] if None in out else out
        if present and not (-limit < min(present) and max(present) < limit):
            wrong = next(v for v, x in zip(values, out) if x is not None and not -limit < x < limit)
            raise _too_wide(wrong, precision, scale, field)
        return out

    return column


def from_db_converter(field: FieldDef, dialect_name: str) -> Callable[[Any], Any]:
    """The inverse of :func:`to_db_converter` for raw driver values."""
    sqlite = dialect_name == "sqlite"
    kind = field.type
    if kind.is_numeric:
        _, scale = numeric_shape(field)
        quantum = Decimal(1).scaleb(-scale)
        if sqlite:
            return lambda value: None if value is None else Decimal(value).scaleb(-scale)
        return lambda value: None if value is None else _as_decimal(value).quantize(quantum, ROUND_HALF_UP)
    if kind is FieldType.DATE:
        return _sqlite_date_in if sqlite else _identity
    if kind is FieldType.DATETIME:
        return _sqlite_datetime_in if sqlite else (lambda v: None if v is None else _utc(v))
    if kind is FieldType.CHECKBOX:
        return _sqlite_bool_in if sqlite else _identity
    if kind is FieldType.MULTIPICKLIST:
        return _text_to_multi
    return _identity


# Converters depend only on the type shape, so they are shared between fields.
_CONVERTERS: dict[tuple, Callable[[Any], Any]] = {}


def _cached(direction: str, field: FieldDef, dialect_name: str) -> Callable[[Any], Any]:
    key = (direction, field.type, field.precision, field.scale, dialect_name)
    found = _CONVERTERS.get(key)
    if found is None:
        factory = to_db_converter if direction == "to" else from_db_converter
        found = _CONVERTERS[key] = factory(field, dialect_name)
    return found


def to_db(field: FieldDef, value: Any, dialect_name: str) -> Any:
    """One typed value of ``field`` as the driver for ``dialect_name`` stores it
    (Decimal -> scaled int, date -> ISO text, bool -> 0/1 and datetime -> UTC
    text on SQLite; multipicklist tuple -> ``a;b`` text everywhere)."""
    return _cached("to", field, dialect_name)(value)


def from_db(field: FieldDef, value: Any, dialect_name: str) -> Any:
    """One raw driver value of ``field`` back as its typed Python value."""
    return _cached("from", field, dialect_name)(value)
