"""Locale formatting of document values: amounts, currencies, dates, percentages.

Templates see numbers through these filters only (``money``, ``currency``,
``date``, ``percent``, ``number``). Amounts are Decimal, never float, and are
rounded with :func:`engine.domain.money.round_money` before display, the one
rounding rule of the engine.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Callable

from engine.config.model import FieldDef, FieldType
from engine.domain import money

#: Quantities and other plain numbers are shown to four decimals at most.
QUANTITY_STEP = Decimal("0.0001")


def as_decimal(value: Any) -> Decimal | None:
    """A value shown as a number: Decimal (booleans as 0/1), None when empty;
    ``TypeError`` for a float (money is never float) or for text that is not
    a number."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        raise TypeError("amounts are Decimal, never float")
    if isinstance(value, bool):
        return Decimal(int(value))
    try:
        return Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError, TypeError):
        raise TypeError(f"{value!r} is not a number") from None


def round_money(value: Any) -> Decimal | None:
    """:func:`engine.domain.money.round_money` (half up to cents, the one
    rounding rule) for a value a template may hold; None when empty."""
    amount = as_decimal(value)
    return None if amount is None else money.round_money(amount)


def _format_decimal(value: Decimal, pattern: str, locale: str) -> str:
    """babel's ``format_decimal`` (with its default decimal quantization),
    remembered: an invoice prints the same prices, quantities and rates
    many times, and babel parses the pattern and looks up the locale's
    symbols on every call (most of the time of rendering a long invoice).
    Keyed by the value's exact text, so ``-0.00`` and ``0.00`` stay apart."""
    return _format_text(str(value), pattern, locale)


@lru_cache(maxsize=65536)
def _format_text(text: str, pattern: str, locale: str) -> str:
    from babel.numbers import format_decimal

    return format_decimal(Decimal(text), format=pattern, locale=_locale(locale))


@lru_cache(maxsize=65536)
def _format_date(value: date, style: str, locale: str) -> str:
    """babel's ``format_date``, remembered like :func:`_format_text`: a
    finalization prints the same few dates (invoice, due, service period)
    on every invoice, and babel resolves the locale's pattern each time."""
    from babel.dates import format_date

    return format_date(value, format=style, locale=_locale(locale))


@lru_cache(maxsize=256)
def _locale(name: str):
    """The babel Locale of a name, parsed once: babel parses a locale given
    by name several times per formatted number (half the time of printing
    the amounts of an invoice whose amounts are all distinct)."""
    from babel import Locale

    return Locale.parse(name)


class Formatter:
    """Locale formatting with babel: amounts (rounded half up to 2 decimals
    first, Decimal only), currencies, dates, percentages, quantities."""

    def __init__(self, locale: str = "en_US", currency: str = "EUR"):
        from babel import Locale

        self.locale_name = locale
        self.locale = Locale.parse(locale)
        self.currency = currency

    def money(self, value: Any) -> str:
        amount = round_money(value)
        if amount is None:
            return ""
        return _format_decimal(amount, "#,##0.00", self.locale_name)

    def currency_amount(self, value: Any, currency: str | None = None) -> str:
        from babel.numbers import format_currency

        amount = round_money(value)
        if amount is None:
            return ""
        return format_currency(amount, currency or self.currency, locale=self.locale)

    def date(self, value: Any, style: str = "medium") -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, datetime):
            value = value.date()
        if not isinstance(value, date):
            return str(value)
        return _format_date(value, style if style in ("short", "medium", "long", "full") else "medium",
                            self.locale_name)

    def percent(self, value: Any) -> str:
        rate = as_decimal(value)
        if rate is None:
            return ""
        rate = money.round_money(rate)
        text = _format_decimal(rate, "#,##0.00", self.locale_name)
        return f"{text}\u00a0%" if self.locale.language == "de" else f"{text}%"

    def number(self, value: Any) -> str:
        number = as_decimal(value)
        if number is None:
            return ""
        number = money.round_money(number, QUANTITY_STEP)
        return _format_decimal(number, "#,##0.####", self.locale_name)

    def value(self, fdef: FieldDef | None, value: Any) -> str:
        """A field value as printed: by the field's type."""
        if value is None:
            return ""
        kind = fdef.value_type if fdef is not None else None
        if kind is FieldType.CURRENCY or (kind is None and isinstance(value, Decimal)):
            return self.money(value)
        if kind is FieldType.PERCENT:
            return self.percent(value)
        if kind is FieldType.NUMBER:
            return self.number(value)
        if isinstance(value, (date, datetime)):
            return self.date(value)
        if isinstance(value, bool):
            return "✓" if value else ""
        return str(value)

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"money": self.money, "currency": self.currency_amount, "date": self.date,
                "percent": self.percent, "number": self.number}
