"""The decision of one subscription item: its terms as stored, and the periods due.

Shared by the subscription run (:mod:`engine.billing.subscriptions`, which
remembers decisions per distinct terms) and ``metabill explain``
(:mod:`engine.billing.subscription_explain`, which prints the trace): one
pure function decides, :func:`item_decision`, on top of
:func:`engine.billing.periods.due_charges`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from .periods import CALENDAR, PERIOD_MONTHS, Decision, PeriodError, Terms, due_charges, effective_end


@dataclass(frozen=True)
class SubscriptionTerms:
    """The subscription's part of its items' terms (see :func:`subscription_terms`)."""

    start: date
    anchor: date
    cycle_months: int
    end: date | None
    why: str  # why the service ends when it does
    billing_period: str
    practice: str
    proration: str


def subscription_terms(subscription: dict) -> SubscriptionTerms:
    """What every item of a subscription shares: grid, cycle, end (with
    cancellation terms), practice and proration, defaulted; decided once per
    subscription. Raises :class:`PeriodError`."""
    start = subscription.get("startdate")
    if start is None:
        raise PeriodError("the subscription has no StartDate")
    months = PERIOD_MONTHS.get(str(subscription.get("billingperiod") or "Month"))
    if months is None:
        raise PeriodError(f"unknown BillingPeriod '{subscription.get('billingperiod')}'")
    raw_factor = subscription.get("billingfactor")
    factor = int(raw_factor) if raw_factor is not None else 1
    if factor < 1 or (raw_factor is not None and factor != raw_factor):
        raise PeriodError(f"BillingFactor must be a whole number of at least 1, is {subscription.get('billingfactor')}")
    anchor = date(start.year, 1, 1) if subscription.get("alignment") == CALENDAR else start
    if subscription.get("status") == "Canceled" and not subscription.get("cancellationdate") \
            and not subscription.get("enddate"):
        raise PeriodError("a canceled subscription needs a CancellationDate or an EndDate")
    notice = subscription.get("noticeperiod")
    end, why = effective_end(subscription.get("enddate"), subscription.get("cancellationdate"),
                             int(notice or 0), anchor, months * factor)
    return SubscriptionTerms(start, anchor, months * factor, end, why,
                             str(subscription.get("billingperiod") or "Month"),
                             str(subscription.get("billingpractice") or "Advance"),
                             str(subscription.get("prorationmethod") or "Day Exact"))


def item_terms(subscription: dict, item: dict, base: SubscriptionTerms | None = None) -> tuple[Terms, str]:
    """The terms of an item (subscription and item fields defaulted), and
    why the service ends when it does. ``base``: the subscription's
    :func:`subscription_terms`, when the caller has it. Raises :class:`PeriodError`."""
    base = base or subscription_terms(subscription)
    end, why = base.end, base.why
    item_end = item.get("enddate")
    if item_end is not None and (end is None or item_end < end):
        end, why = item_end, f"the item ends {item_end}"
    price = item.get("unitprice")
    if price is None:
        raise PeriodError(f"item {item.get('name') or item['id']} has no UnitPrice")
    price_months = PERIOD_MONTHS.get(str(item.get("priceperiod") or base.billing_period))
    if price_months is None:
        raise PeriodError(f"unknown PricePeriod '{item.get('priceperiod')}'")
    terms = Terms(
        start=item.get("startdate") or base.start,
        end=end,
        anchor=base.anchor,
        cycle_months=base.cycle_months,
        practice=base.practice,
        proration=base.proration,
        billing_type=str(item.get("billingtype") or "Recurring"),
        price_months=price_months,
        unit_price=Decimal(price),
        change_date=item.get("pricechangedate"),
        new_unit_price=item.get("newunitprice"),
    )
    return terms, why


def item_decision(subscription: dict, item: dict, run_end: date, explain: bool = True,
                  base: SubscriptionTerms | None = None) -> Decision:
    """:func:`~engine.billing.periods.due_charges` for an item as stored, its trace
    opened with why the service ends when it does."""
    terms, why = item_terms(subscription, item, base)
    decision = due_charges(terms, item.get("nextserviceperiodstart"), run_end, explain)
    if not explain:
        return decision
    return Decision(decision.charges, decision.next_start, (f"item {item.get('name') or item['id']}: {why}",
                                                           *decision.trace))
