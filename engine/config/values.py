"""Coercion of values as written (YAML scalars, CSV cells, JSON values) into
the typed values of a field.

One function, :func:`coerce`, serves setting records, the ``load`` command and
the ON field copy, so a value means the same wherever it is written:

=============  ===============================================================
Field type     Python value
=============  ===============================================================
Text, LongText ``str`` (empty string becomes None; longer than length: error)
Email, Url     ``str``, format-checked
Number etc.    ``Decimal`` with at most ``scale`` decimals (more: error, never a
               silent rounding), at most ``precision - scale`` integer digits
Checkbox       ``bool`` (true/false, 1/0, yes/no as text); never None
Date           ``datetime.date`` from ISO ``YYYY-MM-DD``
DateTime       ``datetime.datetime`` in UTC from ISO 8601
Picklist       ``str``, one of the values when the picklist is restricted
MultiPicklist  ``tuple[str, ...]`` from ``a;b;c``
Lookup         ``int`` record id (reference resolution happens elsewhere)
=============  ===============================================================

Floats are refused everywhere: money never passes through binary floating point.

Whatever a user writes ends in a :class:`ValueProblem` naming what is wrong,
never in an arithmetic or overflow error: numbers of any length and exponent,
ids beyond a 64-bit integer, and dates outside the **business date range**
(:data:`BUSINESS_DATES`, 1900-01-01 to 2199-12-31), which is declared here
once and checked wherever a date enters (record loads, payment imports,
settings; the CLI checks its date arguments with :func:`check_business_date`).
A date such as 9999-12-31 would otherwise only fail later, when the engine
computes the month after it, or create a booking period for year 1.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation

from .model import FieldDef, FieldType


class ValueProblem(ValueError):
    """A value does not fit its field; the message is meant for the user."""


@dataclass(frozen=True, slots=True)
class DateRange:
    """The dates the engine accepts as business dates (both ends included)."""

    first: date
    last: date

    def __contains__(self, value: date) -> bool:
        return self.first <= value <= self.last

    def describe(self) -> str:
        return f"{self.first.isoformat()}..{self.last.isoformat()}"


#: The supported business dates: wide enough for any invoice, contract or
#: payment (and for historical data back to 1900), narrow enough that every
#: derived date (the month after, a booking period, a year of payment terms,
#: a DATEV fiscal year) stays a valid date on every backend.
BUSINESS_DATES = DateRange(date(1900, 1, 1), date(2199, 12, 31))

#: The largest record id: ids are 64-bit integers on both backends.
MAX_ID = 2**63 - 1


_DECIMAL_TEXT = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_ID_TEXT = re.compile(r"^[0-9]{1,19}$")
#: Longest number text read (a longer one is refused before it is parsed).
MAX_NUMBER_TEXT = 100
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_URL = re.compile(r"^(?:https?|ftp)://[^\s]+$", re.IGNORECASE)
_TRUE_WORDS = {"true", "1", "yes", "y", "x"}
_FALSE_WORDS = {"false", "0", "no", "n", ""}


def parse_decimal(raw: object) -> Decimal:
    """A finite Decimal from an int, Decimal or plain decimal text (no exponent,
    no thousands separators, no NaN/Infinity)."""
    if isinstance(raw, bool):
        raise ValueProblem(f"expected a number, got {str(raw).lower()}")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, Decimal):
        if not raw.is_finite():
            raise ValueProblem(f"expected a finite number, got {raw}")
        return raw
    if isinstance(raw, float):
        raise ValueProblem("binary floating-point numbers are not accepted; write the number as text")
    if isinstance(raw, str):
        text = raw.strip()
        if len(text) > MAX_NUMBER_TEXT:
            raise ValueProblem(f"expected a decimal number, got a text of {len(text):,} characters")
        if not _DECIMAL_TEXT.match(text):
            raise ValueProblem(f"expected a decimal number like 1234.50, got {raw!r}")
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern excludes it
            raise ValueProblem(f"expected a decimal number, got {raw!r}") from None
    raise ValueProblem(f"expected a number, got {type(raw).__name__}")


def check_number_shape(value: Decimal, precision: int | None, scale: int | None) -> Decimal:
    """Refuse values with more decimals than the scale or more integer digits
    than ``precision - scale``; return the value quantized to the scale.

    The integer digits are counted from the exponent (``adjusted``) before
    anything is computed, so a number of any size or exponent is refused
    with a message instead of overflowing the decimal context."""
    if not value.is_finite():
        raise ValueProblem(f"expected a finite number, got {value}")
    if precision is not None and value:
        allowed = precision - (scale or 0)
        if value.adjusted() >= allowed:
            raise ValueProblem(f"{_short(value)} has more than {allowed} digits before the decimal point")
    if scale is not None:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > scale:
            normalized = value.normalize()
            exp2 = normalized.as_tuple().exponent
            if isinstance(exp2, int) and -exp2 > scale:
                raise ValueProblem(f"{_short(value)} has more than {scale} decimal places")
            value = normalized
        try:
            value = value.quantize(Decimal(1).scaleb(-scale))
        except InvalidOperation:  # only without a precision: more digits than the context holds
            raise ValueProblem(f"{_short(value)} has too many digits") from None
    return value


def _short(value: Decimal) -> str:
    """A number in a message, cut when it is very long."""
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def parse_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if raw is None:
        return False
    if isinstance(raw, int):
        if raw in (0, 1):
            return bool(raw)
        raise ValueProblem(f"expected true or false, got {raw}")
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueProblem(f"expected true or false, got {raw!r}")


def check_business_date(value: date, what: str = "date") -> date:
    """``value`` when it lies in :data:`BUSINESS_DATES`, else ValueProblem."""
    day = value.date() if isinstance(value, datetime) else value
    if day not in BUSINESS_DATES:
        raise ValueProblem(f"{what} {day.isoformat()} is outside the supported dates {BUSINESS_DATES.describe()}")
    return value


def parse_date(raw: object) -> date:
    """A business date from ``YYYY-MM-DD`` (or a date), within :data:`BUSINESS_DATES`."""
    if isinstance(raw, datetime):
        return check_business_date(raw.date())
    if isinstance(raw, date):
        return check_business_date(raw)
    if isinstance(raw, str):
        try:
            value = date.fromisoformat(raw.strip())
        except ValueError:
            pass
        else:
            return check_business_date(value)
    raise ValueProblem(f"expected a date as YYYY-MM-DD, got {_short_text(raw)}")


def parse_datetime(raw: object) -> datetime:
    """A point in time (UTC) from ISO 8601, on a date within :data:`BUSINESS_DATES`."""
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueProblem(f"expected a date-time like 2024-01-31T12:00:00Z, got {_short_text(raw)}") from None
    else:
        raise ValueProblem(f"expected a date-time, got {_short_text(raw)}")
    check_business_date(value.date(), "date-time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # pragma: no cover - excluded by the date range
        raise ValueProblem(f"date-time {text!r} is out of range") from None


def parse_id(raw: object) -> int:
    """A record id: a whole number from 1 to 2**63 - 1."""
    if isinstance(raw, bool):
        raise ValueProblem(f"expected a record id, got {raw}")
    if isinstance(raw, int):
        if 0 < raw <= MAX_ID:
            return raw
    elif isinstance(raw, str) and _ID_TEXT.match(raw.strip()):
        value = int(raw.strip())
        if 0 < value <= MAX_ID:
            return value
    too_large = isinstance(raw, int) and raw > 0 or (
        isinstance(raw, str) and re.fullmatch(r"0*[1-9][0-9]*", raw.strip()) is not None)
    if too_large:
        raise ValueProblem(f"expected a record id (a positive whole number up to {MAX_ID}), got {_short_text(raw)}")
    raise ValueProblem(f"expected a record id (a positive whole number), got {_short_text(raw)}")


def _short_text(raw: object) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


#: Invisible characters that reorder how text is displayed (Unicode bidi
#: embeddings, overrides, isolates and marks): in configuration text they make
#: what is shown differ from what is exported ("Trojan Source").
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Control characters a multi-line text may hold.
_LINE_CONTROLS = frozenset("\t\n\r")


def check_setting_text(text: str, *, multiline: bool = False) -> str:
    """Configuration text that every export can carry: no NUL, no other control
    character (a multi-line text may hold tabs and line breaks), no bidi
    control, no lone surrogate. Setting texts reach booking texts, DATEV,
    SEPA and CSV files, where such characters are refused by the database
    (NUL on PostgreSQL), cannot be encoded, or hide what a file says."""
    for position, char in enumerate(text, start=1):
        if char in BIDI_CONTROLS:
            raise ValueProblem(f"character {position} is the invisible bidi control U+{ord(char):04X} "
                               f"({unicodedata.name(char, 'bidi control')}); remove it")
        category = unicodedata.category(char)
        if category == "Cc" and not (multiline and char in _LINE_CONTROLS):
            what = "NUL" if char == "\x00" else f"control character U+{ord(char):04X}"
            raise ValueProblem(f"character {position} is a {what}; setting texts must be printable")
        if category == "Cs":
            raise ValueProblem(f"character {position} is an unpaired surrogate U+{ord(char):04X}")
    return text


def _text(raw: object) -> str:
    """The text of a value written for a text-like field; never one holding
    NUL (PostgreSQL cannot store it, and no export can carry it)."""
    text = _plain_text(raw)
    if "\x00" in text:
        raise ValueProblem("the value contains a NUL character")
    return text


def _plain_text(raw: object) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float):
        raise ValueProblem("binary floating-point numbers are not accepted; quote the value")
    if isinstance(raw, (str, int, Decimal)):
        return str(raw)
    if isinstance(raw, datetime):
        return raw.isoformat()
    if isinstance(raw, date):
        return raw.isoformat()
    raise ValueProblem(f"expected text, got {type(raw).__name__}")


def coerce(field: FieldDef, raw: object) -> object:
    """Convert ``raw`` to the typed value of ``field``; raise ValueProblem."""
    kind = field.value_type if field.type is FieldType.FORMULA else field.type
    if kind is FieldType.CHECKBOX:
        return parse_bool(raw)
    if raw is None or (isinstance(raw, str) and raw == "" and kind is not FieldType.CHECKBOX):
        return None
    if kind in (FieldType.TEXT, FieldType.LONGTEXT, FieldType.AUTONUMBER):
        text = _text(raw)
        if field.length is not None and len(text) > field.length:
            raise ValueProblem(f"text of {len(text)} characters exceeds the field length {field.length}")
        return text
    if kind is FieldType.EMAIL:
        text = _text(raw).strip()
        if not _EMAIL.match(text):
            raise ValueProblem(f"{text!r} is not an e-mail address")
        return text
    if kind is FieldType.URL:
        text = _text(raw).strip()
        if not _URL.match(text):
            raise ValueProblem(f"{text!r} is not a URL (http:// or https://)")
        return text
    if kind.is_numeric:
        return check_number_shape(parse_decimal(raw), field.precision, field.scale)
    if kind is FieldType.DATE:
        return parse_date(raw)
    if kind is FieldType.DATETIME:
        return parse_datetime(raw)
    if kind is FieldType.PICKLIST:
        text = _text(raw)
        if field.restricted and field.values and text not in field.values:
            raise ValueProblem(f"{text!r} is not a value of the picklist {field.object_name}.{field.name}")
        return text
    if kind is FieldType.MULTIPICKLIST:
        items = raw if isinstance(raw, (list, tuple)) else _text(raw).split(";")
        chosen = tuple(sorted({str(v).strip() for v in items if str(v).strip()}, key=lambda v: (
            field.values.index(v) if v in field.values else len(field.values), v)))
        if field.restricted and field.values:
            unknown = [v for v in chosen if v not in field.values]
            if unknown:
                raise ValueProblem(
                    f"{', '.join(map(repr, unknown))} not a value of the picklist {field.object_name}.{field.name}"
                )
        return chosen
    if kind in (FieldType.LOOKUP, FieldType.MASTERDETAIL, FieldType.ID):
        return parse_id(raw)
    raise ValueProblem(f"values of type {kind.value} cannot be written")  # pragma: no cover
