"""validate-config's checks of the bank side of cash management: the payment
matching rules and threshold (E260-E263), the direct debit lead time (E264)
and the account of charged return fees (E265). A rule that would make ``metabill bank import`` fail or never match is
reported at its line first."""

from __future__ import annotations

import re
from typing import Iterator

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, make
from engine.domain.settings import GlobalSettings

MAX_SCORE = 1000


def check_matching_rules(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every PaymentMatchingRule scores 1-1000 points; a Pattern compiles and
    belongs to an InvoiceNumber rule; a Tolerance is not negative and belongs
    to an Amount rule."""
    for record in ctx.model.setting_records("PaymentMatchingRule"):
        name, fld = record.name, str(record.get("Field") or "")
        score = record.get("Score")
        try:
            points = float(str(score)) if score not in (None, "") else None
        except ValueError:
            points = None  # the value's type is checked with the record
        if points is not None and not (1 <= points <= MAX_SCORE and points == int(points)):
            yield make("E260", f"payment matching rule '{name}': Score {score} is not a whole number from 1 to "
                       f"{MAX_SCORE}", record.where("Score") or Location("?"),
                       "an agreement on the field adds this many points; the threshold is in the same points")
        pattern = str(record.get("Pattern") or "")
        if pattern:
            where = record.where("Pattern") or Location("?")
            if fld != "InvoiceNumber":
                yield make("E261", f"payment matching rule '{name}': a Pattern is only used by InvoiceNumber "
                           f"rules, this one compares {fld}", where, "remove the Pattern or change Field")
            else:
                try:
                    compiled = re.compile(pattern)
                except re.error as error:
                    yield make("E261", f"payment matching rule '{name}': Pattern is not a regular expression: "
                               f"{error}", where, r"e.g. INV-\d{4}-\d{5} or \d{4}-\d{5}")
                else:
                    if compiled.match(""):
                        yield make("E261", f"payment matching rule '{name}': Pattern matches the empty text, so "
                                   "every invoice would agree", where, "require at least one character, e.g. \\d+")
        tolerance = record.get("Tolerance")
        if tolerance not in (None, ""):
            where = record.where("Tolerance") or Location("?")
            if fld != "Amount":
                yield make("E262", f"payment matching rule '{name}': a Tolerance is only used by Amount rules, "
                           f"this one compares {fld}", where, "remove the Tolerance or change Field")
            elif str(tolerance).strip().startswith("-"):
                yield make("E262", f"payment matching rule '{name}': Tolerance {tolerance} is negative", where)


def check_matching_threshold(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The threshold is positive and reachable by the active rules together."""
    settings = GlobalSettings.of(ctx.model)
    row = settings.record
    if row is None:
        return
    threshold = settings.payment_matching_threshold
    where = row.where("PaymentMatchingThreshold") or Location("?")
    if threshold <= 0:
        yield make("E263", f"GlobalSettings.PaymentMatchingThreshold is {threshold}: every line would be assigned "
                   "to the first invoice with any agreement", where, "use a positive number of points, e.g. 100")
        return
    total = 0.0
    active = [r for r in ctx.model.setting_records("PaymentMatchingRule") if r.get("Active") is not False]
    for record in active:
        try:
            total += float(str(record.get("Score") or 0))
        except ValueError:
            return
    if active and total < float(threshold):
        yield make("E263", f"GlobalSettings.PaymentMatchingThreshold is {threshold}, but the active payment "
                   f"matching rules add up to {total:g} points: no line would ever be assigned automatically",
                   where, "lower the threshold or raise the rules' scores")


def check_lead_days(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The direct debit lead time is 0-10 TARGET2 business days."""
    settings = GlobalSettings.of(ctx.model)
    row = settings.record
    if row is None or row.get("PaymentLeadDays") in (None, ""):
        return
    if not 0 <= settings.payment_lead_days <= 10:
        yield make("E264", f"GlobalSettings.PaymentLeadDays is {settings.payment_lead_days}; SEPA Core needs "
                   "0 to 10 TARGET2 business days", row.where("PaymentLeadDays") or Location("?"),
                   "1 is what SEPA Core requires since 2016 for first and recurring collections")


def check_return_fee_account(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Charged return fees (``ChargeReturnFees``) need a collective account
    of Type Dunning Fee that a fee with ClearingReason ``Return Fee`` matches
    (that reason, or none), when bank returns can be imported at all (the
    org has PaymentEntry with ChargebackFee): else the first return with a
    fee would stop the import (engine.cash.bank_returns)."""
    row = GlobalSettings.of(ctx.model).record
    if row is None or not row.get("ChargeReturnFees"):
        return
    entry = ctx.model.object("PaymentEntry")
    if entry is None or entry.field("ChargebackFee") is None:
        return
    for record in ctx.model.setting_records("CollectiveAccount"):
        if record.get("Type") == "Dunning Fee" and str(record.get("ClearingReason") or "") in ("", "Return Fee"):
            return
    yield make("E265", "GlobalSettings.ChargeReturnFees is on, but no CollectiveAccount of Type 'Dunning Fee' "
               "books a return fee (ClearingReason 'Return Fee' or none): importing a return with a bank fee "
               "would fail", row.where("ChargeReturnFees") or Location("?"),
               "add a CollectiveAccount with Type: Dunning Fee, ClearingReason: Return Fee and the fee income "
               "account, or set ChargeReturnFees to false")


CHECKS: tuple[Check, ...] = (check_matching_rules, check_matching_threshold, check_lead_days,
                             check_return_fee_account)
