"""The business terms (BT-…) of EN 16931 that an org maps from its fields.

The standard's terms fall in two groups. Amounts, VAT breakdown, dates,
document type, preceding invoice and line quantities come from the domain
(the booked invoice) and are never mapped: a mapping could only make them
disagree with the bookings (:data:`COMPUTED`). The descriptive terms below
(parties, references, payment data, item names) are read from fields named
in the mapping YAML (:mod:`.mapping`); each has a kind that decides which
field types may feed it and whether XRechnung requires a value.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.model import FieldDef, FieldType

TEXT = "text"
IDENTIFIER = "identifier"
CODE = "code"
DATE = "date"

#: Field types that may feed a term of each kind (formula fields by what they return).
FIELD_TYPES: dict[str, frozenset[FieldType]] = {
    TEXT: frozenset({FieldType.TEXT, FieldType.LONGTEXT, FieldType.PICKLIST, FieldType.EMAIL, FieldType.URL,
                     FieldType.AUTONUMBER}),
    IDENTIFIER: frozenset({FieldType.TEXT, FieldType.PICKLIST, FieldType.EMAIL, FieldType.AUTONUMBER}),
    CODE: frozenset({FieldType.TEXT, FieldType.PICKLIST}),
    DATE: frozenset({FieldType.DATE, FieldType.DATETIME}),
}

INVOICE_LEVEL = "invoice"
LINE_LEVEL = "line"
#: Where a term's value may be read from: the invoice, its account and its
#: issuing BusinessEntity record for header terms; the line for line terms.
SOURCES: dict[str, tuple[str, ...]] = {
    INVOICE_LEVEL: ("Invoice", "Account", "BusinessEntity"),
    LINE_LEVEL: ("InvoiceLineItem",),
}


@dataclass(frozen=True, slots=True)
class Term:
    """One mappable business term."""

    id: str
    name: str
    kind: str
    level: str = INVOICE_LEVEL
    #: XRechnung 3.0 needs a value (EN 16931 cardinality 1..1 or a BR-DE rule).
    required: bool = False
    #: An electronic address: its scheme (BT-34-1, BT-49-1) may be given.
    address: bool = False


_TERMS = (
    Term("BT-10", "Buyer reference (Leitweg-ID)", IDENTIFIER, required=True),
    Term("BT-11", "Project reference", IDENTIFIER),
    Term("BT-12", "Contract reference", IDENTIFIER),
    Term("BT-13", "Purchase order reference", IDENTIFIER),
    Term("BT-19", "Buyer accounting reference", TEXT),
    Term("BT-22", "Invoice note", TEXT),
    Term("BT-27", "Seller name", TEXT, required=True),
    Term("BT-28", "Seller trading name", TEXT),
    Term("BT-29", "Seller identifier", IDENTIFIER),
    Term("BT-30", "Seller legal registration identifier", IDENTIFIER),
    Term("BT-31", "Seller VAT identifier", IDENTIFIER),
    Term("BT-32", "Seller tax registration identifier", IDENTIFIER),
    Term("BT-33", "Seller additional legal information", TEXT),
    Term("BT-34", "Seller electronic address", IDENTIFIER, required=True, address=True),
    Term("BT-35", "Seller address line 1", TEXT),
    Term("BT-37", "Seller city", TEXT, required=True),
    Term("BT-38", "Seller post code", CODE, required=True),
    Term("BT-40", "Seller country code", CODE, required=True),
    Term("BT-41", "Seller contact point", TEXT, required=True),
    Term("BT-42", "Seller contact telephone number", TEXT, required=True),
    Term("BT-43", "Seller contact email address", IDENTIFIER, required=True),
    Term("BT-44", "Buyer name", TEXT, required=True),
    Term("BT-46", "Buyer identifier", IDENTIFIER),
    Term("BT-48", "Buyer VAT identifier", IDENTIFIER),
    Term("BT-49", "Buyer electronic address", IDENTIFIER, required=True, address=True),
    Term("BT-50", "Buyer address line 1", TEXT),
    Term("BT-52", "Buyer city", TEXT, required=True),
    Term("BT-53", "Buyer post code", CODE, required=True),
    Term("BT-54", "Buyer country subdivision", TEXT),
    Term("BT-55", "Buyer country code", CODE, required=True),
    Term("BT-56", "Buyer contact point", TEXT),
    Term("BT-57", "Buyer contact telephone number", TEXT),
    Term("BT-58", "Buyer contact email address", IDENTIFIER),
    Term("BT-72", "Actual delivery date", DATE),
    Term("BT-84", "Payment account identifier (IBAN)", IDENTIFIER),
    Term("BT-85", "Payment account name", TEXT),
    Term("BT-86", "Payment service provider identifier (BIC)", IDENTIFIER),
    Term("BT-89", "Mandate reference identifier", IDENTIFIER),
    Term("BT-90", "Bank assigned creditor identifier", IDENTIFIER),
    Term("BT-91", "Debited account identifier", IDENTIFIER),
    Term("BT-127", "Invoice line note", TEXT, LINE_LEVEL),
    Term("BT-128", "Invoice line object identifier", IDENTIFIER, LINE_LEVEL),
    Term("BT-133", "Invoice line buyer accounting reference", TEXT, LINE_LEVEL),
    Term("BT-153", "Item name", TEXT, LINE_LEVEL, required=True),
    Term("BT-154", "Item description", TEXT, LINE_LEVEL),
    Term("BT-155", "Item seller's identifier", IDENTIFIER, LINE_LEVEL),
)

#: The mappable terms by id.
TERMS: dict[str, Term] = {term.id: term for term in _TERMS}

#: Terms the engine fills from the booked invoice (never mapped), with where they come from.
COMPUTED: dict[str, str] = {
    "BT-1": "Invoice.Name", "BT-2": "Invoice.Date", "BT-3": "Invoice.Type via document_types",
    "BT-5": "Invoice.CurrencyIsoCode", "BT-9": "Invoice.PaymentDueDate", "BT-25": "the invoice it corrects",
    "BT-26": "the date of the invoice it corrects", "BT-73": "Invoice.ServicePeriodStart",
    "BT-74": "Invoice.ServicePeriodEnd", "BT-81": "Invoice.PaymentMethod via payment_means",
    "BT-106": "the sum of the line net amounts", "BT-109": "Invoice.TotalNet",
    "BT-110": "Invoice.TotalTax", "BT-112": "Invoice.GrandTotal", "BT-113": "the deducted sub invoices",
    "BT-115": "Invoice.GrandTotal", "BT-116": "the line net amounts per VAT category",
    "BT-117": "the line taxes per VAT category", "BT-118": "InvoiceLineItem.VATCategoryCode",
    "BT-119": "InvoiceLineItem.TaxRate", "BT-120": "exemption_reasons", "BT-121": "exemption_reasons",
    "BT-126": "InvoiceLineItem.Sequence", "BT-129": "InvoiceLineItem.Quantity",
    "BT-130": "InvoiceLineItem.Unit via units", "BT-131": "InvoiceLineItem.PosTotalNet",
    "BT-134": "InvoiceLineItem.ServicePeriodStart", "BT-135": "InvoiceLineItem.ServicePeriodEnd",
    "BT-146": "InvoiceLineItem.UnitPriceNet", "BT-151": "InvoiceLineItem.VATCategoryCode",
    "BT-152": "InvoiceLineItem.TaxRate",
}


def field_fits(term: Term, fdef: FieldDef) -> bool:
    """Whether a field's type (a formula's return type) can feed the term."""
    ftype = fdef.formula.returns if fdef.formula is not None else fdef.type
    return ftype in FIELD_TYPES[term.kind]


def field_type_name(fdef: FieldDef) -> str:
    """A field's type as messages name it (``Formula returning Number``)."""
    if fdef.formula is not None:
        return f"Formula returning {fdef.formula.returns.value}"
    return fdef.type.value


__all__ = ["CODE", "COMPUTED", "DATE", "FIELD_TYPES", "IDENTIFIER", "INVOICE_LEVEL", "LINE_LEVEL", "SOURCES", "TERMS",
           "TEXT", "Term", "field_fits", "field_type_name"]
