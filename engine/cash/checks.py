"""validate-config's checks of what the cash layer interprets.

The automatic write-off settings, the cron schedules of jobs, and the
cash-management integration's prerequisites: a setting that would make a
payment, a job or a fix task fail is reported at its line first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make
from engine.domain.settings import GlobalSettings

from .bank_checks import CHECKS as BANK_CHECKS
from .errors import InstallmentError
from .installments import parse_period, parse_rates


def check_write_off_settings(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The automatic write-off settings of GlobalSettings can work: absolute
    amounts need the write-off currency, nothing is negative, a percentage
    is at most 100."""
    settings = GlobalSettings.of(ctx.model)
    row = settings.record
    if row is None:
        return
    amounts = {"WriteOffThresholdPercent": settings.write_off_threshold_percent,
               "WriteOffCapAmount": settings.write_off_cap_amount,
               "FinalizationWriteOffAmount": settings.finalization_write_off_amount}
    for name, number in amounts.items():
        if number is None:
            continue  # empty, or not a number (the value's type is checked with the record)
        value = row.get(name)  # as written, for the message
        where = row.where(name) or Location("?")
        if number < 0:
            yield make("E130", f"GlobalSettings.{name} is negative ({value})", where)
        elif name == "WriteOffThresholdPercent" and number > 100:
            yield make("E130", f"GlobalSettings.{name} is over 100 ({value})", where)
        elif name != "WriteOffThresholdPercent" and settings.write_off_currency is None:
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
    settings = GlobalSettings.of(ctx.model)
    if settings.record is None or not settings.cash_management_integration:
        return
    invoice = ctx.model.object("Invoice")
    if invoice is None or invoice.field("CM_IntegrationError__c") is not None:
        return
    yield make("E150", "GlobalSettings.EnableCashManagementIntegration is on, but Invoice has no field "
               "CM_IntegrationError__c for the errors of the invoice fix tasks",
               settings.record.where("EnableCashManagementIntegration") or Location("?"),
               "add CM_IntegrationError__c (Text, length 255) to metadata/objects/Invoice.yaml")


def check_installment_plans(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every InstallmentPlan's Period parses and its Rates give one positive
    percentage per installment summing to 100 (the functions finalization
    uses, :mod:`engine.cash.installments`): else every invoice on the plan
    fails (E171)."""
    for record in ctx.model.setting_records("InstallmentPlan"):
        period = record.get("Period")
        if period in (None, ""):
            continue  # a missing required value is E073
        try:
            segments = parse_period(str(period))
        except InstallmentError as error:
            yield make("E171", f"installment plan '{record.name}': {error.message}",
                       record.where("Period") or Location("?"), "segments N<d|m>(count), e.g. 1m(12) or 2m(4),120d")
            continue
        count = sum(segment.count for segment in segments)
        try:
            parse_rates(record.get("Rates"), count)
        except InstallmentError as error:
            yield make("E171", f"installment plan '{record.name}': {error.message} (Period {period!r} gives "
                       f"{count} installment{'s' if count != 1 else ''})",
                       record.where("Rates") or Location("?"),
                       f"give {count} percentages separated by semicolons that sum to 100, or leave Rates empty")
    invoice = ctx.model.object("Invoice")
    choice = invoice.field("InstallmentType") if invoice is not None else None
    plans = [record.name for record in ctx.model.setting_records("InstallmentPlan")]
    for value in (choice.values or ()) if choice is not None else ():
        if ctx.model.setting_record("InstallmentPlan", value) is None:
            yield make("E171", f"Invoice.InstallmentType offers '{value}', which names no InstallmentPlan record",
                       ctx.field_location(invoice, choice),
                       did_you_mean(value, plans) or "add the plan to custom_settings/InstallmentPlan.yaml")


CHECKS: tuple[Check, ...] = (
    check_write_off_settings,
    check_job_schedules,
    check_cash_management,
    check_installment_plans,
    *BANK_CHECKS,  # payment matching rules, threshold, lead time (E260-E264)
)
