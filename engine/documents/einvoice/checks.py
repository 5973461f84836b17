"""validate-config's checks of the e-invoice mapping (E200-E229).

Whatever would make an issued e-invoice fail at run time because of the
configuration is reported here first, at the YAML ``file:line``: the
mapping's own problems (unknown term E201, unknown field E202, type
mismatch E203, required term unmapped E204, bad code E206), invoice types
and payment methods without a code (E205), tax rules whose VAT category is
unknown, has no exemption reason or contradicts its rate (E207), and
BusinessEntity records without a value for a required term (E208).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Iterator

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, make

from .mapping import EXEMPT_CATEGORIES, VAT_CATEGORIES, load_mapping
from .terms import TERMS

#: Categories that carry VAT (a rate above zero) and those that never do.
_TAXED = frozenset({"S", "L", "M"})


def check_einvoice_mapping(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The mapping and its consistency with the org's metadata and settings
    (nothing when the org has no Invoice object: that is reported first)."""
    if ctx.model.object("Invoice") is None:
        return
    mapping = load_mapping(ctx.model)
    for problem in mapping.problems:
        yield make(problem.code, problem.message, problem.location, problem.hint)
    yield from _picklist_codes(ctx, mapping.document_types, "Type", "document_types", mapping.where)
    yield from _picklist_codes(ctx, mapping.payment_means, "PaymentMethod", "payment_means", mapping.where)
    yield from _tax_rules(ctx, mapping)
    yield from _business_entities(ctx, mapping)


def _picklist_codes(ctx: CheckContext, table, field_name: str, section: str, where) -> Iterator[Diagnostic]:
    invoice = ctx.model.object("Invoice")
    fdef = invoice.field(field_name) if invoice is not None else None
    if fdef is None:
        return
    skip = {"Pro Forma", "Dunning"} if field_name == "Type" else set()
    for value in fdef.values:
        if value not in table and value not in skip:
            yield make("E205", f"Invoice.{field_name} '{value}' has no code in {section}", where(section),
                       f"add '{value}: <code>' to {section} in metadata/einvoice.yaml")


def _tax_rules(ctx: CheckContext, mapping) -> Iterator[Diagnostic]:
    for record in ctx.model.setting_records("TaxRule"):
        category = record.get("VATCategoryCode")
        if category is None:
            continue
        category = str(category).strip()
        where = record.where("VATCategoryCode") or Location("custom_settings/TaxRule.yaml")
        if category not in VAT_CATEGORIES:
            yield make("E207", f"tax rule '{record.name}': VAT category '{category}' is not an EN 16931 category",
                       where, f"one of {', '.join(sorted(VAT_CATEGORIES))}")
            continue
        if category in EXEMPT_CATEGORIES and category not in mapping.exemption_reasons:
            yield make("E207", f"tax rule '{record.name}': VAT category {category} needs an exemption reason "
                       "(BT-120/BT-121), and the mapping has none", where,
                       f"add exemption_reasons.{category} to metadata/einvoice.yaml")
        try:
            rate = Decimal(str(record.get("TaxRate") or 0))
        except InvalidOperation:
            continue  # the tax rule checks report an unreadable rate
        if category in _TAXED and rate <= 0:
            yield make("E207", f"tax rule '{record.name}': category {category} is taxed, but its rate is {rate}",
                       where, "use Z, E, AE, K, G or O for a 0 % rate")
        if category not in _TAXED and rate != 0:
            yield make("E207", f"tax rule '{record.name}': category {category} carries no VAT, but its rate is "
                       f"{rate}", where, "use S for a taxed rate")


def _business_entities(ctx: CheckContext, mapping) -> Iterator[Diagnostic]:
    required = [source for term_id, source in mapping.terms.items()
                if TERMS[term_id].required and source.object == "BusinessEntity" and source.default is None]
    for record in ctx.model.setting_records("BusinessEntity"):
        for source in required:
            if record.get(source.field) in (None, ""):
                yield make("E208", f"BusinessEntity '{record.name}' has no {source.field}, which feeds "
                           f"{source.term} ({TERMS[source.term].name}) of its e-invoices",
                           record.source or Location("custom_settings/BusinessEntity.yaml"),
                           f"fill {source.field}, or give the mapping at {source.where.render()} a default")


CHECKS: tuple[Check, ...] = (check_einvoice_mapping,)

__all__ = ["CHECKS", "check_einvoice_mapping"]
