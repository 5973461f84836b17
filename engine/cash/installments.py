"""Payment plans: the installments of an invoice (domain-spec §4.9).

An InstallmentPlan setting record names a plan; ``Invoice.InstallmentType``
chooses it. ``Period`` is a comma-separated list of segments ``N<d|m>(M)``:
M installments (default 1), each N days or N months after the previous one;
``fix`` stands for ``0m`` (an installment on the base date itself). The base
date is the payment due date, or the invoice date with ``DateReference`` =
``Invoice Date``. Examples: ``1m(12)`` twelve monthly installments, the first
one month after the base date; ``30d(6)``; ``2m(4),120d`` four bimonthly ones
and a fifth 120 days after the fourth.

Month steps count from the last day-based anchor, so ``1m(12)`` from 31
January gives 29 February, 31 March, 30 April ... (no drift to the 29th).

Amounts are exact: without ``Rates`` every installment but the last is the
amount divided by the count, rounded towards zero to the cent; with
``Rates`` (percentages separated by semicolons, summing to 100) each is its
share, rounded the same way. The last installment takes the remainder, so
the installments always sum to the amount. Rounding towards zero (rather
than half-up, which the reference proposes) keeps every installment on the
amount's side of zero: half-up could make the first ones too large and the
last one negative (0.10 in 12 installments). A plan that would give an
installment of 0.00 is refused.

Money already received on the invoice when the plan is applied becomes a
first *deposit installment* of that amount, due on the invoice date; the
plan splits the rest (§4.9 [doc]).

Pure functions: no database here.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal

from engine.domain.money import CENT, ZERO

from .errors import InstallmentError

_SEGMENT = re.compile(r"^\s*(?:(?P<fix>fix)|(?P<n>\d{1,4})\s*(?P<unit>[dDmM]))\s*(?:\(\s*(?P<count>\d{1,4})\s*\))?\s*$")
MAX_INSTALLMENTS = 360


@dataclass(frozen=True)
class Segment:
    step: int      # days or months between installments
    unit: str      # "d" or "m"
    count: int


@dataclass(frozen=True)
class PlannedInstallment:
    sequence: int
    due: date
    amount: Decimal
    is_deposit: bool = False


def parse_period(text: str) -> tuple[Segment, ...]:
    """The segments of a Period value; InstallmentError when it is malformed."""
    if not text or not str(text).strip():
        raise InstallmentError("the payment plan has an empty Period")
    segments = []
    for part in str(text).split(","):
        match = _SEGMENT.match(part)
        if match is None:
            raise InstallmentError(f"Period {text!r}: {part.strip()!r} is not of the form N<d|m>(count), e.g. 1m(12)")
        count = int(match.group("count") or 1)
        if count < 1:
            raise InstallmentError(f"Period {text!r}: the count in {part.strip()!r} must be at least 1")
        if match.group("fix"):
            segments.append(Segment(0, "m", count))
        else:
            segments.append(Segment(int(match.group("n")), match.group("unit").lower(), count))
    if sum(s.count for s in segments) > MAX_INSTALLMENTS:
        raise InstallmentError(f"Period {text!r} gives more than {MAX_INSTALLMENTS} installments")
    return tuple(segments)


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months, clipped to the month's end."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def due_dates(segments: tuple[Segment, ...], base: date) -> list[date]:
    """The due date of every installment, in order."""
    anchor, months, out = base, 0, []
    current = base
    for segment in segments:
        for _ in range(segment.count):
            if segment.unit == "m":
                months += segment.step
                current = add_months(anchor, months)
            else:
                current = current + timedelta(days=segment.step)
                anchor, months = current, 0
            out.append(current)
    return out


def parse_rates(text: str | None, count: int) -> list[Decimal] | None:
    """Percentages per installment, or None to split evenly."""
    if text is None or not str(text).strip():
        return None
    try:
        rates = [Decimal(part.strip()) for part in str(text).split(";") if part.strip()]
    except ArithmeticError:
        raise InstallmentError(f"Rates {text!r} are not numbers separated by semicolons") from None
    if len(rates) != count:
        raise InstallmentError(f"Rates {text!r} give {len(rates)} percentages for {count} installments")
    if any(not r.is_finite() or r <= 0 for r in rates) or sum(rates) != 100:
        raise InstallmentError(f"Rates {text!r} must be positive percentages summing to 100")
    return rates


def split_amount(total: Decimal, count: int, rates: list[Decimal] | None = None) -> list[Decimal]:
    """``total`` (two decimals) in ``count`` parts: each but the last rounded
    towards zero, the last the exact remainder. Every part is non-zero and
    has the sign of ``total``; InstallmentError when that is impossible."""
    if count < 1:
        raise InstallmentError("a payment plan needs at least one installment")
    total = Decimal(total)
    if total.quantize(CENT) != total:
        raise InstallmentError(f"the amount {total} has more than two decimals")
    if total == 0:
        raise InstallmentError("there is nothing to split into installments (amount 0.00)")
    # total / count (not total × (1 / count)): exact whenever the split is
    raw = [total / count] * count if rates is None else [total * rate / 100 for rate in rates]
    parts = [value.quantize(CENT, rounding=ROUND_DOWN) for value in raw[:-1]]
    parts.append(total - sum(parts, ZERO))
    if any(p == 0 or (p > 0) != (total > 0) for p in parts):
        raise InstallmentError(f"{abs(total)} is too small to split into {count} installments")
    return [p.quantize(CENT) for p in parts]


def plan_installments(total: Decimal, period: str, base: date, *, rates: str | None = None,
                      received: Decimal = ZERO, invoice_date: date | None = None) -> list[PlannedInstallment]:
    """The installments of a plan for an invoice of ``total``: a deposit
    installment for what was ``received`` already (same sign as the total,
    less than it), then the plan over the rest."""
    segments = parse_period(period)
    dates = due_dates(segments, base)
    rest = Decimal(total) - Decimal(received)
    out: list[PlannedInstallment] = []
    if received != 0:
        if (received > 0) != (total > 0) or abs(received) >= abs(total):
            raise InstallmentError(f"{received} received of {total}: nothing is left to split into installments")
        out.append(PlannedInstallment(1, invoice_date or base, Decimal(received).quantize(CENT), True))
    amounts = split_amount(rest, len(dates), parse_rates(rates, len(dates)))
    for due, amount in zip(dates, amounts):
        out.append(PlannedInstallment(len(out) + 1, due, amount))
    return out
