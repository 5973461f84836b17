"""validate-config's checks of what the cash layer interprets.

The automatic write-off settings, the cron schedules of jobs, and the
cash-management integration's prerequisites: a setting that would make a
payment, a job or a fix task fail is reported at its line first.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make


def check_write_off_settings(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The automatic write-off settings of GlobalSettings can work: absolute
    amounts need the write-off currency, nothing is negative, a percentage
    is at most 100."""
    settings = ctx.model.hierarchy_default("GlobalSettings")
    if settings is None:
        return
    currency = str(settings.get("WriteOffCurrency") or "").strip()
    for name in ("WriteOffThresholdPercent", "WriteOffCapAmount", "FinalizationWriteOffAmount"):
        value = settings.get(name)
        if value in (None, ""):
            continue
        where = settings.where(name) or Location("?")
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            continue
        if number < 0:
            yield make("E130", f"GlobalSettings.{name} is negative ({value})", where)
        elif name == "WriteOffThresholdPercent" and number > 100:
            yield make("E130", f"GlobalSettings.{name} is over 100 ({value})", where)
        elif name != "WriteOffThresholdPercent" and not currency:
            yield make("E130", f"GlobalSettings.{name} is an absolute amount and needs WriteOffCurrency", where,
                       "set WriteOffCurrency to the ISO code of the amount, e.g. EUR")


def check_job_schedules(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every JobSchedule has a five-field cron expression that fires, in a
    known time zone."""
    for record in ctx.model.setting_records("JobSchedule"):
        cron = str(record.get("Cron") or "").strip()
        zone_name = str(record.get("TimeZone") or "UTC")
        try:
            ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            yield make("E133", f"job schedule '{record.name}': unknown time zone '{zone_name}'",
                       record.where("TimeZone") or Location("?"),
                       did_you_mean(zone_name, ("UTC", "Europe/Berlin", "Europe/Vienna", "Europe/Zurich")))
        if not cron:
            continue  # a missing required value is E073
        where = record.where("Cron") or Location("?")
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            yield make("E131", f"job schedule '{record.name}': '{cron}' is not a valid five-field cron expression",
                       where, "minute hour day-of-month month day-of-week, e.g. 0 2 * * *")
            continue
        try:
            croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            yield make("E132", f"job schedule '{record.name}': '{cron}' never fires", where,
                       "check day-of-month against the month (e.g. there is no 30 February)")


def check_cash_management(ctx: CheckContext) -> Iterator[Diagnostic]:
    """With the cash-management integration on, the invoice fix tasks need
    the Invoice field CM_IntegrationError__c to report problems (seed 000)."""
    settings = ctx.model.hierarchy_default("GlobalSettings")
    if settings is None or not settings.get("EnableCashManagementIntegration"):
        return
    invoice = ctx.model.object("Invoice")
    if invoice is None or invoice.field("CM_IntegrationError__c") is not None:
        return
    yield make("E150", "GlobalSettings.EnableCashManagementIntegration is on, but Invoice has no field "
               "CM_IntegrationError__c for the errors of the invoice fix tasks",
               settings.where("EnableCashManagementIntegration") or Location("?"),
               "add CM_IntegrationError__c (Text, length 255) to metadata/objects/Invoice.yaml")


CHECKS: tuple[Check, ...] = (
    check_write_off_settings,
    check_job_schedules,
    check_cash_management,
)
