"""The filters of recurring billing, as the invoice run sees them.

A run's filters are planned and run by use case: generic filters by
:mod:`engine.billing.plan` and :mod:`engine.billing.filterrun`, subscription
filters by :mod:`engine.billing.subscriptions`, usage (``Continuous``)
filters by :mod:`engine.billing.usage`. This module is the one place the run
asks which.
"""

from __future__ import annotations

from engine.config.model import SettingRecord
from engine.storage.context import Context

from .subscriptions import SubscriptionPlan, SubscriptionRun, is_subscription_filter, plan_subscriptions
from .usage import UsagePlan, UsageRun, is_usage_filter, plan_usage

RecurringPlan = SubscriptionPlan | UsagePlan


def plan_recurring(ctx: Context, record: SettingRecord) -> RecurringPlan | None:
    """The plan of a subscription or usage filter; None for any other filter."""
    if is_subscription_filter(record):
        return plan_subscriptions(ctx, record)
    if is_usage_filter(record):
        return plan_usage(ctx, record)
    return None


def recurring_runner(plan: object) -> type[SubscriptionRun] | None:
    """The class that runs ``plan`` when it is a recurring one (else None)."""
    if isinstance(plan, UsagePlan):
        return UsageRun
    if isinstance(plan, SubscriptionPlan):
        return SubscriptionRun
    return None


def is_recurring(plan: object) -> bool:
    return isinstance(plan, (SubscriptionPlan, UsagePlan))
