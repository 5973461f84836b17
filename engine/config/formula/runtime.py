"""Evaluation-time support: exact decimal arithmetic with limits, text and
date helpers, reading values out of plain record dicts, and
:class:`CompiledFormula`.

Numbers are ``Decimal`` throughout and every operation names its context
explicitly, so a caller's ``decimal.getcontext()`` never changes a result:
``EXACT`` (200 significant digits) keeps ``+ - *`` exact for any value a
billing record holds, ``DIVISION`` gives quotients 28 significant digits.
Results are not rounded to a field's scale here; the caller does that.

Hostile input is bounded at evaluation time: powers need a whole exponent of
at most 100 and a base of at most 10**15, numbers may not reach 10**40, text
may not grow beyond 100,000 characters (checked *before* building it where a
formula could otherwise allocate far more, as in SUBSTITUTE).
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta, timezone
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from typing import Callable, Mapping

from ..model import FieldType
from ..values import ValueProblem, parse_decimal
from .errors import FormulaEvaluationError
from .types import Evaluator

_TRAPS = [InvalidOperation, DivisionByZero, Overflow]
EXACT = Context(prec=200, rounding=ROUND_HALF_EVEN, traps=_TRAPS)
DIVISION = Context(prec=28, rounding=ROUND_HALF_EVEN, traps=_TRAPS)

ZERO = Decimal(0)
ONE = Decimal(1)
NUMBER_LIMIT = Decimal(10) ** 40
MAX_POWER_EXPONENT = 100
MAX_POWER_BASE = Decimal(10) ** 15
MAX_TEXT = 100_000
_DAY_MICROSECONDS = Decimal(86_400_000_000)


# -- numbers -----------------------------------------------------------------


def too_big() -> FormulaEvaluationError:
    return FormulaEvaluationError("number out of range: more than 40 digits before the decimal point")


def check_number(value: Decimal) -> Decimal:
    if -NUMBER_LIMIT < value < NUMBER_LIMIT:
        return value
    raise too_big()


def divide(a: Decimal, b: Decimal) -> Decimal:
    if not b:
        raise FormulaEvaluationError("division by zero")
    return check_number(DIVISION.divide(a, b))


def power(base: Decimal, exponent: Decimal) -> Decimal:
    if exponent != exponent.to_integral_value():
        raise FormulaEvaluationError(f"^ needs a whole-number exponent, got {number_text(exponent)}")
    if abs(exponent) > MAX_POWER_EXPONENT:
        raise FormulaEvaluationError(f"exponent {number_text(exponent)} is too large (at most {MAX_POWER_EXPONENT})")
    if abs(base) > MAX_POWER_BASE:
        raise FormulaEvaluationError("the base of ^ is too large (at most 10^15)")
    if not exponent:
        return ONE  # including 0^0, as in most spreadsheets and Python
    if not base and exponent < 0:
        raise FormulaEvaluationError("division by zero")
    return check_number(EXACT.power(base, int(exponent)))


def modulo(a: Decimal, b: Decimal) -> Decimal:
    """The remainder with the sign of the dividend, like Salesforce's MOD:
    MOD(-5, 3) = -2, MOD(5, -3) = 2."""
    if not b:
        raise FormulaEvaluationError("division by zero")
    return EXACT.remainder(a, b)


def round_half_up(value: Decimal, digits: Decimal) -> Decimal:
    """ROUND: ties away from zero, so ROUND(-0.125, 2) = -0.13; negative
    ``digits`` round to tens, hundreds..."""
    places = int(digits)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent <= places:
        return value  # already has no more decimals than asked for
    if places < -MAX_POWER_EXPONENT:
        return ZERO
    rounded = value.quantize(ONE.scaleb(-places), rounding=ROUND_HALF_UP, context=EXACT)
    if places < 0:
        rounded = rounded.quantize(ONE, context=EXACT)  # 1.2E+3 -> 1200
    return check_number(rounded)


def floor_toward_zero(value: Decimal) -> Decimal:
    """Salesforce FLOOR: FLOOR(2.5) = 2, FLOOR(-2.5) = -2."""
    return value.to_integral_value(rounding=ROUND_DOWN, context=EXACT)


def ceiling_away_from_zero(value: Decimal) -> Decimal:
    """Salesforce CEILING: CEILING(2.5) = 3, CEILING(-2.5) = -3."""
    return value.to_integral_value(rounding=ROUND_UP, context=EXACT)


def value_of(text: str) -> Decimal:
    """VALUE: plain decimal text (optional sign, no exponent) to a number."""
    try:
        return check_number(parse_decimal(text))
    except ValueProblem:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise FormulaEvaluationError(f"VALUE: {shown!r} is not a number") from None


def number_text(value: Decimal) -> str:
    """TEXT of a number: plain digits, no exponent, no trailing zeros."""
    if value and value.adjusted() < -MAX_TEXT:
        raise too_long()  # 1E-999999 would be a million zeros
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# -- text --------------------------------------------------------------------


def too_long() -> FormulaEvaluationError:
    return FormulaEvaluationError(f"text result longer than {MAX_TEXT:,} characters")


def check_text(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise too_long()
    return text


def concat(a: str | None, b: str | None) -> str:
    a = a or ""
    b = b or ""
    if len(a) + len(b) > MAX_TEXT:
        raise too_long()
    return a + b


def substitute(text: str, old: str | None, new: str | None) -> str:
    if not old:
        return text
    new = new or ""
    # Check the size before building it: 1,000 replacements of a long text
    # would otherwise allocate gigabytes before any check could run.
    if len(text) + text.count(old) * (len(new) - len(old)) > MAX_TEXT:
        raise too_long()
    return text.replace(old, new)


def left(text: str, count: Decimal) -> str:
    return text[: max(int(count), 0)]


def right(text: str, count: Decimal) -> str:
    keep = min(max(int(count), 0), len(text))
    return text[len(text) - keep:]


def mid(text: str, start: Decimal, count: Decimal) -> str:
    first = max(int(start), 1) - 1
    return text[first: first + max(int(count), 0)]


def date_text(value: date) -> str:
    return value.isoformat()


def datetime_text(value: datetime) -> str:
    """TEXT of a date-time, as Salesforce writes it: 2024-01-31 12:00:00Z."""
    utc = value.astimezone(timezone.utc)
    return f"{utc.date().isoformat()} {utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"


# -- dates -------------------------------------------------------------------


def date_out_of_range() -> FormulaEvaluationError:
    return FormulaEvaluationError("date out of range")


def add_days(day: date, days: Decimal) -> date:
    """date + number: whole days (a fraction is dropped, as in Salesforce)."""
    try:
        return day + timedelta(days=int(days))
    except OverflowError:
        raise date_out_of_range() from None


def add_datetime_days(moment: datetime, days: Decimal) -> datetime:
    """datetime + number: days with fractions (0.5 = twelve hours)."""
    try:
        micro = int(EXACT.multiply(days, _DAY_MICROSECONDS).to_integral_value(rounding=ROUND_HALF_UP))
        return moment + timedelta(microseconds=micro)
    except OverflowError:
        raise date_out_of_range() from None


def days_between(a: date, b: date) -> Decimal:
    return Decimal((a - b).days)


def datetime_days_between(a: datetime, b: datetime) -> Decimal:
    delta = a - b
    micro = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return DIVISION.divide(Decimal(micro), _DAY_MICROSECONDS)


def add_months(day: date, months: Decimal) -> date:
    """ADDMONTHS with Salesforce's rules: the day is clamped to the end of the
    target month, and the last day of a month stays the last day
    (2024-01-31 + 1 = 2024-02-29, 2024-02-29 + 1 = 2024-03-31)."""
    count = int(months)
    if abs(count) > 12 * 10_000:
        raise date_out_of_range()
    total = day.year * 12 + day.month - 1 + count
    year, month = divmod(total, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise date_out_of_range()
    last = calendar.monthrange(year, month)[1]
    if day.day == calendar.monthrange(day.year, day.month)[1]:
        return date(year, month, last)
    return date(year, month, min(day.day, last))


def make_date(year: Decimal, month: Decimal, day: Decimal) -> date:
    parts = (year, month, day)
    shown = ", ".join(number_text(p) for p in parts)
    if any(p != p.to_integral_value() for p in parts):
        raise FormulaEvaluationError(f"DATE({shown}): year, month and day must be whole numbers")
    try:
        return date(int(year), int(month), int(day))
    except (ValueError, OverflowError):
        raise FormulaEvaluationError(f"DATE({shown}) is not a valid date") from None


def today_of(today: object) -> date:
    return today if today is not None else date.today()  # type: ignore[return-value]


def now() -> datetime:
    return datetime.now(timezone.utc)


# -- reading record values -----------------------------------------------------


def _bad_value(label: str, value: object, expected: str) -> FormulaEvaluationError:
    return FormulaEvaluationError(f"{label} holds a {type(value).__name__} value; expected {expected}")


def _number(value: object, label: str) -> Decimal:
    if type(value) is Decimal:
        if value.is_finite():  # type: ignore[union-attr]
            return check_number(value)  # type: ignore[arg-type]
    elif type(value) is int:
        return check_number(Decimal(value))  # type: ignore[arg-type]
    raise _bad_value(label, value, "a finite Decimal or int")


def _percent(value: object, label: str) -> Decimal:
    # A Percent field holding 19 means 19 %, i.e. 0.19 in calculations.
    return EXACT.scaleb(_number(value, label), -2)


def _text(value: object, label: str) -> str:
    if type(value) is str:
        return value  # type: ignore[return-value]
    raise _bad_value(label, value, "a str")


def _record_id(value: object, label: str) -> str:
    # A lookup's value is its record id, used in formulas as text. A lookup
    # named like its relationship (``Account``) may hold the related record
    # itself; its id is then that record's ``id``.
    if type(value) is dict:
        value = value.get("id")  # type: ignore[union-attr]
        if value is None:
            return None  # type: ignore[return-value]
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return value  # type: ignore[return-value]
    raise _bad_value(label, value, "a record id (int or str)")


def _checkbox(value: object, label: str) -> bool:
    if type(value) is bool:
        return value  # type: ignore[return-value]
    raise _bad_value(label, value, "a bool")


def _date(value: object, label: str) -> date:
    if type(value) is date:
        return value  # type: ignore[return-value]
    if type(value) is datetime:
        return value.date()  # type: ignore[union-attr]
    raise _bad_value(label, value, "a date")


def _datetime(value: object, label: str) -> datetime:
    if type(value) is datetime:
        if value.tzinfo is None:  # type: ignore[union-attr]
            return value.replace(tzinfo=timezone.utc)  # type: ignore[union-attr]
        return value  # type: ignore[return-value]
    raise _bad_value(label, value, "a datetime")


def _multipicklist(value: object, label: str) -> tuple[str, ...]:
    if type(value) is tuple and all(type(v) is str for v in value):  # type: ignore[union-attr]
        return value  # type: ignore[return-value]
    if type(value) is str:
        return tuple(v.strip() for v in value.split(";") if v.strip())  # type: ignore[union-attr]
    raise _bad_value(label, value, "a tuple of str")


_CONVERTERS: dict[FieldType, Callable[[object, str], object]] = {
    FieldType.NUMBER: _number,
    FieldType.CURRENCY: _number,
    FieldType.PERCENT: _percent,
    FieldType.TEXT: _text,
    FieldType.LONGTEXT: _text,
    FieldType.EMAIL: _text,
    FieldType.URL: _text,
    FieldType.AUTONUMBER: _text,
    FieldType.PICKLIST: _text,
    FieldType.ID: _record_id,
    FieldType.LOOKUP: _record_id,
    FieldType.MASTERDETAIL: _record_id,
    FieldType.CHECKBOX: _checkbox,
    FieldType.DATE: _date,
    FieldType.DATETIME: _datetime,
    FieldType.MULTIPICKLIST: _multipicklist,
}


def follow(record: Mapping[str, object], path: tuple[str, ...], label: str) -> Mapping[str, object] | None:
    """The related record at the end of ``path`` (relationship keys), or None
    when a relationship on the way is null. Related records must be plain
    dicts: only dict lookups are ever done on them."""
    for key in path:
        record = record.get(key)  # type: ignore[assignment]
        if record is None:
            return None
        if type(record) is not dict:
            raise FormulaEvaluationError(
                f"{label}: the related record {key!r} must be a dict, not {type(record).__name__}"
            )
    return record


def field_reader(path: tuple[str, ...], key: str, kind: FieldType, label: str, blank: object) -> Evaluator:
    """The evaluator reading one stored field: follow ``path``, read ``key``,
    check and convert the value; a missing value becomes ``blank`` (None, or
    0 / "" for blanks-as-zero formulas, False for a checkbox)."""
    convert = _CONVERTERS[kind]
    if not path:
        def read(record: Mapping[str, object], today: object) -> object:
            value = record.get(key)
            if value is None:
                return blank
            return convert(value, label)
        return read

    def read_related(record: Mapping[str, object], today: object) -> object:
        related = follow(record, path, label)
        if related is None:
            return blank
        value = related.get(key)
        if value is None:
            return blank
        return convert(value, label)
    return read_related


def formula_reader(path: tuple[str, ...], run: Evaluator, label: str, blank: object) -> Evaluator:
    """The evaluator of a formula field used by another formula: evaluated
    inline on the (related) record; a null relationship gives null."""
    if not path:
        if blank is None:
            return run

        def inline(record: Mapping[str, object], today: object) -> object:
            value = run(record, today)
            return blank if value is None else value
        return inline

    def inline_related(record: Mapping[str, object], today: object) -> object:
        related = follow(record, path, label)
        value = None if related is None else run(related, today)
        return blank if value is None else value
    return inline_related


def finisher(result: FieldType, run: Evaluator) -> Evaluator:
    """Wrap the top evaluator: a checkbox is never null (null conditions are
    false) and text results obey the size limit."""
    if result is FieldType.CHECKBOX:
        def finish_checkbox(record: Mapping[str, object], today: object) -> object:
            return run(record, today) is True
        return finish_checkbox
    if result is FieldType.TEXT:
        def finish_text(record: Mapping[str, object], today: object) -> object:
            value = run(record, today)
            if value is not None and len(value) > MAX_TEXT:  # type: ignore[arg-type]
                raise too_long()
            return value
        return finish_text
    return run


class CompiledFormula:
    """A checked formula, ready to evaluate many records. Immutable.

    ``result_type`` is NUMBER (for Number, Currency and Percent), TEXT,
    CHECKBOX, DATE or DATETIME. ``references`` holds the lower-cased record
    paths the formula reads, e.g. ``("quantity",)`` or
    ``("account", "on_debtorno__c")``; fields read by formula fields it uses
    are included (with the relationship prefix), the formula fields
    themselves are not, since they are computed inline, not read.
    """

    __slots__ = ("expression", "result_type", "references", "_run", "_cost", "_depth")

    expression: str
    result_type: FieldType
    references: frozenset[tuple[str, ...]]

    def __init__(
        self,
        expression: str,
        result_type: FieldType,
        references: frozenset[tuple[str, ...]],
        run: Evaluator,
        cost: int,
        depth: int,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "expression", expression)
        set_(self, "result_type", result_type)
        set_(self, "references", references)
        set_(self, "_run", finisher(result_type, run))
        set_(self, "_cost", cost)  # nodes evaluated at most, inlined formulas included
        set_(self, "_depth", depth)  # nesting, inlined formulas included

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("CompiledFormula is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("CompiledFormula is immutable")

    def __repr__(self) -> str:
        return f"CompiledFormula({self.expression!r} -> {self.result_type.value})"

    def evaluate(self, record: Mapping[str, object], *, today: date | None = None) -> object:
        """The formula's value for ``record`` (a dict keyed by lower-case
        field names, related records as nested dicts). ``today`` is what
        TODAY() returns (default: the current date). Raises
        FormulaEvaluationError when no value can be computed."""
        if type(record) is not dict and not isinstance(record, Mapping):  # fast path for plain dicts
            raise TypeError(f"record must be a mapping, not {type(record).__name__}")
        if today is not None:
            if type(today) is datetime:
                today = today.date()
            elif type(today) is not date:
                raise TypeError(f"today must be a date, not {type(today).__name__}")
        try:
            return self._run(record, today)
        except (ArithmeticError, ValueError) as error:
            if isinstance(error, FormulaEvaluationError):
                raise
            # Decimal signals and date overflows that slipped past the
            # explicit checks still become a per-record error.
            raise FormulaEvaluationError(f"the calculation cannot be carried out ({type(error).__name__})") from None
        except RecursionError:
            raise FormulaEvaluationError("the formula nests too deeply to evaluate") from None

    @property
    def evaluator(self) -> Evaluator:
        """The raw evaluator ``(record, today) -> value`` used when another
        formula inlines this one."""
        return self._run
