"""validate-config's checks of what booking interprets.

Custom fields travel by name from invoices and lines to booking details and
on to accounting documents (seed 004); a pair that shares a name but not a
type would lose its value there, so it is reported up front.

Counter patterns decide every invoice number, which is legally fixed once
drawn and is the document number (Belegfeld 1) of every booking exported to
DATEV: a pattern without a digit mask fails every finalization (E092), one
whose numbers DATEV refuses (a leading ``=``, ``+`` or ``-``, a space, an
underscore, more than 36 characters) leaves every booking unexportable
(E093). Both are reported at the Counter record's Pattern.
"""

from __future__ import annotations

from typing import Iterator

from engine.config import contract
from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make
from engine.domain.naming import declared_fields
from engine.domain.settings import GlobalSettings

from .numbering import pattern_problems
from .texts import PLACEHOLDER, TEXT_EXTRAS

def check_booking_chain(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Same-name custom fields along Invoice/InvoiceLineItem -> BookingDetail ->
    AccountingDocument/AccountingDocumentItem must share one data type."""
    for source_name, target_name in contract.BOOKING_COPY_CHAIN:
        source = ctx.model.object(source_name)
        target = ctx.model.object(target_name)
        if source is None or target is None:
            continue
        for fdef in declared_fields(source):
            if not fdef.is_custom or fdef.name.lower().startswith("on_"):
                continue
            dest = target.field(fdef.name)
            if dest is None:
                continue
            if dest.value_type != fdef.value_type or (
                dest.value_type.is_reference and dest.reference_to != fdef.reference_to
            ):
                yield make(
                    "E091",
                    f"{source.name}.{fdef.name} ({fdef.value_type.value}) and {target.name}.{dest.name} "
                    f"({dest.value_type.value}) share a name but not a type, so the value cannot be carried over",
                    ctx.field_location(target, dest),
                    f"declare both as {fdef.value_type.value}",
                )


def check_counter_patterns(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every Counter record's Pattern has a digit mask and gives numbers
    DATEV takes as Belegfeld 1 (:func:`engine.booking.numbering.pattern_problems`)."""
    for record in ctx.model.setting_records("Counter"):
        pattern = record.get("Pattern")
        if pattern in (None, ""):
            continue  # the default pattern {00000}, or a required value missing (E073)
        where = record.where("Pattern") or Location("?")
        for problem in pattern_problems(str(pattern)):
            code = "E092" if "digit mask" in problem else "E093"
            hint = ("put a digit mask like {00000} into the pattern" if code == "E092" else
                    "use only letters, digits and $ & % * + - / (not first: + or -), at most 36 characters")
            yield make(code, f"counter '{record.name}': pattern {str(pattern)!r} {problem}", where, hint)


def check_booking_texts(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every Booking Text record is named after a booking detail type (else
    it is never used, E165) and its ``[Placeholders]`` name a booking detail
    field or one of :data:`engine.booking.texts.TEXT_EXTRAS` (else the text
    is silently printed without the value, E164)."""
    detail = ctx.model.object("BookingDetail")
    if detail is None:
        return
    type_field = detail.field("Type")
    types = list(type_field.values or ()) if type_field is not None else []
    names = {f.name.lower(): f.name for f in detail.fields}
    names.update({extra.lower(): extra for extra in TEXT_EXTRAS})
    for record in ctx.model.setting_records("BookingText"):
        if types and record.name not in types:
            yield make("E165", f"BookingText '{record.name}' is for no booking detail type, so it is never used",
                       record.where("Name") or record.source or Location("?"),
                       did_you_mean(record.name, types) or "the types: " + ", ".join(types))
        text = record.get("Text")
        if not text:
            continue
        for match in PLACEHOLDER.finditer(str(text)):
            if match.group(1).lower() in names:
                continue
            yield make("E164", f"BookingText '{record.name}': the placeholder [{match.group(1)}] names no field of "
                       "BookingDetail, so it would print as empty",
                       ctx.within(record.where("Text"), str(text), match.start()),
                       did_you_mean(match.group(1), names.values())
                       or "use [<BookingDetail field>] or " + ", ".join(f"[{e}]" for e in TEXT_EXTRAS))


def _unconditional_gl_rule(ctx: CheckContext) -> bool:
    """Is there a G/L rule with no criterion, which matches every line?"""
    setting = ctx.model.object("GlAccountRule")
    if setting is None:
        return False
    criteria = [f.name for f in declared_fields(setting) if f.match]
    return any(all(record.get(name) in (None, "") for name in criteria)
               for record in ctx.model.setting_records("GlAccountRule"))


def check_collective_account_types(ctx: CheckContext) -> Iterator[Diagnostic]:
    """With bookkeeping on, finalization books every line and its tax, and
    with payment booking data on, every payment and automatic write-off: a
    booking type without any collective account fails each of them (R303).
    Reported at GlobalSettings' switch (E175)."""
    settings = GlobalSettings.of(ctx.model)
    row = settings.record
    if row is None or not settings.create_bookkeeping_data or ctx.model.object("CollectiveAccount") is None:
        return
    have = {str(r.get("Type")) for r in ctx.model.setting_records("CollectiveAccount")}
    needed: list[tuple[str, str, str]] = []
    if not _unconditional_gl_rule(ctx):
        needed.append(("Revenue", "CreateBookkeepingData", "lines no G/L rule matches"))
    if any(r.get("TaxRate") not in (None, 0) for r in ctx.model.setting_records("TaxRule")):
        needed.append(("Tax", "CreateBookkeepingData", "the tax of every invoice"))
    if settings.payment_bookings:
        needed.append(("Payment", "EnablePaymentBookingData", "payments"))
        if settings.write_off_threshold_percent or settings.finalization_write_off_amount:
            needed.append(("Write-off", "EnablePaymentBookingData", "automatic write-offs"))
    for booking_type, switch, what in needed:
        if booking_type not in have:
            yield make("E175", f"GlobalSettings.{switch} is on, but no collective account has Type {booking_type}: "
                       f"booking {what} would fail", row.where(switch) or Location("?"),
                       f"add a CollectiveAccount record with Type: {booking_type} and its Account")


CHECKS: tuple[Check, ...] = (
    check_booking_chain,
    check_counter_patterns,
    check_booking_texts,
    check_collective_account_types,
)
