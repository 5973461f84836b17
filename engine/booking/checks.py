"""validate-config's checks of what booking interprets.

Custom fields travel by name from invoices and lines to booking details and
on to accounting documents (seed 004); a pair that shares a name but not a
type would lose its value there, so it is reported up front.
"""

from __future__ import annotations

from typing import Iterator

from engine.config import contract
from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, make
from engine.domain.naming import declared_fields


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


CHECKS: tuple[Check, ...] = (
    check_booking_chain,
)
