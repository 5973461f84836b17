"""Money arithmetic: exact decimals, rounded half-up at declared points only.

Amounts are ``Decimal`` from source to database; no float ever carries money.
This module is the one definition of the cent, of commercial rounding and of
splitting an amount into parts, for every layer (billing, booking, cash,
exports, documents). Rounding happens at declared points only: a line's net
(or gross) total, a line's tax, a tax group's tax when the org rounds per tax
group, installments and allocations. Everything else is addition of
already-rounded values, so an invoice's totals always equal the sum of its
lines.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
HUNDRED = Decimal(100)


def round_money(value: Decimal, quantum: Decimal = CENT) -> Decimal:
    """Commercial rounding (half away from zero) to the currency's cents."""
    return value.quantize(quantum, rounding=ROUND_HALF_UP)


def tax_of(net: Decimal, rate_percent: Decimal) -> Decimal:
    """Tax on a net amount at a rate given in percent (19 for 19 %)."""
    return round_money(net * rate_percent / HUNDRED)


def net_of_gross(gross: Decimal, rate_percent: Decimal) -> Decimal:
    """The net part of a gross amount (gross mode): round(gross / (1 + rate))."""
    return round_money(gross * HUNDRED / (HUNDRED + rate_percent))


def allocate(total: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split ``total`` (in cents) over ``weights`` proportionally; the rounding
    remainder goes to the largest fractional parts, so the parts sum to
    ``total`` exactly. All-zero weights split nothing (all parts zero, the
    remainder on the first part)."""
    if not weights:
        return []
    if total < 0:
        return [-part for part in allocate(-total, weights)]
    cents = int((total / CENT).to_integral_value(rounding=ROUND_HALF_UP))
    weight_sum = sum(weights)
    if weight_sum == 0:
        return [total] + [ZERO] * (len(weights) - 1)
    raw = [Decimal(cents) * w / weight_sum for w in weights]
    floors = [int(r.to_integral_value(rounding="ROUND_FLOOR")) for r in raw]
    remainder = cents - sum(floors)
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - floors[i], -i), reverse=True)
    for i in order[:remainder]:
        floors[i] += 1
    return [Decimal(f) * CENT for f in floors]
