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
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation

from .model import FieldDef, FieldType


class ValueProblem(ValueError):
    """A value does not fit its field; the message is meant for the user."""


_DECIMAL_TEXT = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)$")
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
        if not _DECIMAL_TEXT.match(text):
            raise ValueProblem(f"expected a decimal number like 1234.50, got {raw!r}")
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern excludes it
            raise ValueProblem(f"expected a decimal number, got {raw!r}") from None
    raise ValueProblem(f"expected a number, got {type(raw).__name__}")


def check_number_shape(value: Decimal, precision: int | None, scale: int | None) -> Decimal:
    """Refuse values with more decimals than the scale or more integer digits
    than ``precision - scale``; return the value quantized to the scale."""
    if scale is not None:
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > scale:
            normalized = value.normalize()
            exp2 = normalized.as_tuple().exponent
            if isinstance(exp2, int) and -exp2 > scale:
                raise ValueProblem(f"{value} has more than {scale} decimal places")
            value = normalized
        value = value.quantize(Decimal(1).scaleb(-scale))
    if precision is not None:
        integer_digits = len(str(abs(value.to_integral_value(rounding="ROUND_DOWN")))) if value else 1
        allowed = precision - (scale or 0)
        if abs(value) >= 1 and integer_digits > allowed:
            raise ValueProblem(f"{value} has more than {allowed} digits before the decimal point")
    return value


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


def parse_date(raw: object) -> date:
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise ValueProblem(f"expected a date as YYYY-MM-DD, got {raw!r}")


def parse_datetime(raw: object) -> datetime:
    if isinstance(raw, datetime):
        value = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueProblem(f"expected a date-time like 2024-01-31T12:00:00Z, got {raw!r}") from None
    else:
        raise ValueProblem(f"expected a date-time, got {raw!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def parse_id(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueProblem(f"expected a record id, got {raw}")
    if isinstance(raw, int):
        if raw > 0:
            return raw
    elif isinstance(raw, str) and raw.strip().isdigit():
        value = int(raw.strip())
        if value > 0:
            return value
    raise ValueProblem(f"expected a record id (a positive whole number), got {raw!r}")


def _text(raw: object) -> str:
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
