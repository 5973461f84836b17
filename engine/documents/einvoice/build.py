"""An issued invoice as an EN 16931 document: :func:`build_einvoice` (pure).

**Amounts come from the booked invoice, never recomputed.** Line net
amounts (BT-131) are the lines' ``PosTotalNet``; the VAT breakdown groups
the lines by category and rate, its base (BT-116) the sum of their nets and
its tax (BT-117) the sum of their booked taxes; the totals are sums of
these. So BR-CO-10/13/14/15/16 and BR-S/Z/E/AE-08 hold by construction,
and every amount equals the PDF's, the bookings' and DATEV's. BR-CO-17
(tax = base × rate, rounded) holds exactly when the org rounds per tax
group (GlobalSettings ``RoundingMode: PerTaxGroup``, net prices); rounded
per line it differs by at most half a cent per line, inside the tolerance
the CEN rules allow.

**Credit notes** (document type 381) show a credit's amounts as positive
numbers (the type carries the sign). A negative line is written as a
negative quantity at a positive price (BR-27: no negative prices).

**A final invoice's deductions** of sub invoices are not lines of the
e-invoice: its lines are the whole service, its VAT the whole VAT, and
what the sub invoices already claimed (their gross, as deducted) is the
prepaid amount BT-113, so the amount due BT-115 is the invoice's booked
Grand Total and BT-110 is the tax of the whole service (§14 (5) UStG).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Mapping, Sequence

from engine.config.diagnostics import Location

from .mapping import CREDIT_NOTE_TYPES, EInvoiceMapping

ZERO = Decimal("0.00")
#: BT-24 of XRechnung 3.0 (BR-DE-21).
XRECHNUNG_ID = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"
#: BT-23 (business process) recommended by XRechnung.
PROCESS_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"


class EInvoiceDataError(ValueError):
    """The invoice lacks what an e-invoice needs; ``term`` names the business term."""

    def __init__(self, message: str, term: str | None = None, where: Location | None = None):
        super().__init__(message)
        self.term = term
        self.where = where


@dataclass
class Party:
    name: str | None = None
    trading_name: str | None = None
    identifier: str | None = None
    legal_id: str | None = None
    legal_info: str | None = None
    vat_id: str | None = None
    tax_number: str | None = None
    address: str | None = None
    address_scheme: str | None = None
    street: str | None = None
    city: str | None = None
    postcode: str | None = None
    subdivision: str | None = None
    country: str | None = None
    contact: str | None = None
    phone: str | None = None
    email: str | None = None


@dataclass
class Line:
    id: str
    name: str
    quantity: Decimal
    unit: str
    price: Decimal
    net: Decimal
    category: str
    rate: Decimal
    description: str | None = None
    note: str | None = None
    seller_id: str | None = None
    object_id: str | None = None
    accounting_ref: str | None = None
    start: date | None = None
    end: date | None = None


@dataclass
class VatGroup:
    category: str
    rate: Decimal
    base: Decimal
    tax: Decimal
    reason_code: str | None = None
    reason: str | None = None


@dataclass
class EInvoice:
    number: str
    type_code: str
    issue_date: date
    currency: str
    seller: Party
    buyer: Party
    lines: list[Line]
    vat: list[VatGroup]
    line_total: Decimal
    tax_exclusive: Decimal
    tax_total: Decimal
    tax_inclusive: Decimal
    prepaid: Decimal
    payable: Decimal
    payment_means: str
    due_date: date | None = None
    buyer_reference: str | None = None
    project_ref: str | None = None
    contract_ref: str | None = None
    order_ref: str | None = None
    accounting_ref: str | None = None
    notes: list[str] = field(default_factory=list)
    delivery_date: date | None = None
    delivery_country: str | None = None
    #: deliver-to address (BG-15: street, city, post code), with delivery_country.
    delivery_address: tuple[str | None, str | None, str | None] | None = None
    period_start: date | None = None
    period_end: date | None = None
    iban: str | None = None
    account_name: str | None = None
    bic: str | None = None
    mandate: str | None = None
    creditor_id: str | None = None
    debited_account: str | None = None
    payment_terms: str | None = None
    preceding: tuple[str, date | None] | None = None
    #: business term -> the mapping entry that fed it (for violations).
    sources: dict[str, Location] = field(default_factory=dict)

    @property
    def is_credit_note(self) -> bool:
        return self.type_code in CREDIT_NOTE_TYPES


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value.isoformat()
    text = " ".join(str(value).split())
    return text or None


class _Reader:
    """Reads mapped terms from the invoice's records, remembering their sources."""

    def __init__(self, mapping: EInvoiceMapping, records: Mapping[str, Mapping[str, Any]]):
        self.mapping = mapping
        self.records = records
        self.sources: dict[str, Location] = {}

    def value(self, term: str, record: Mapping[str, Any] | None = None) -> Any:
        source = self.mapping.terms.get(term)
        if source is None:
            return None
        self.sources.setdefault(term, source.where)
        if source.value is not None:
            return source.value
        found = (record if record is not None else self.records.get(source.object or "", {})).get(source.field)
        if found is None or (isinstance(found, str) and not found.strip()):
            return source.default
        return found

    def text(self, term: str, record: Mapping[str, Any] | None = None) -> str | None:
        return _clean(self.value(term, record))

    def scheme(self, term: str) -> str | None:
        source = self.mapping.terms.get(term)
        return source.scheme if source is not None else None


def build_einvoice(invoice: Mapping[str, Any], lines: Sequence[Mapping[str, Any]], account: Mapping[str, Any],
                   entity: Mapping[str, Any], mapping: EInvoiceMapping, *,
                   preceding: tuple[str, date | None] | None = None) -> EInvoice:
    """The e-invoice of an issued invoice (records keyed by field API name;
    ``preceding``: number and date of the invoice a cancellation corrects).
    :class:`EInvoiceDataError` when the invoice lacks what the standard needs."""
    name = str(invoice.get("Name") or f"#{invoice.get('Id')}")
    kind = str(invoice.get("Type") or "Standard")
    if kind == "Standard" and invoice.get("Class") == "Credit":
        kind = "Credit"  # a credit built from a credit order is a credit note
    type_code = mapping.document_types.get(kind)
    if type_code is None:
        raise EInvoiceDataError(f"invoice {name}: type '{kind}' has no document type code", "BT-3",
                                mapping.where("document_types"))
    sign = Decimal(-1) if type_code in CREDIT_NOTE_TYPES else Decimal(1)
    read = _Reader(mapping, {"Invoice": invoice, "Account": account, "BusinessEntity": entity})
    regular = [line for line in lines if not line.get("IsDeduction")]
    deductions = [line for line in lines if line.get("IsDeduction")]
    e_lines = [_line(read, mapping, line, sign, name) for line in sorted(
        regular, key=lambda l: (_dec(l.get("Sequence")), str(l.get("Id"))))]
    if not e_lines:
        raise EInvoiceDataError(f"invoice {name} has no lines", "BG-25")
    vat = _vat_groups(e_lines, regular, sign, mapping, name)
    line_total = sum((l.net for l in e_lines), ZERO)
    tax_total = sum((g.tax for g in vat), ZERO)
    tax_inclusive = line_total + tax_total
    prepaid = sign * -sum((_dec(l.get("PosTotalGross")) for l in deductions), ZERO)
    payable = tax_inclusive - prepaid
    booked = sign * _dec(invoice.get("GrandTotal"))
    if _money(payable) != _money(booked):
        raise EInvoiceDataError(f"invoice {name}: its lines add up to {payable} to pay, but its Grand Total is "
                                f"{booked}", "BT-115")
    categories = {g.category for g in vat}
    seller, buyer = _parties(read, categories)
    means = _payment_means(mapping, invoice, type_code)
    start, end = invoice.get("ServicePeriodStart"), invoice.get("ServicePeriodEnd")
    doc = EInvoice(
        number=name, type_code=type_code, issue_date=invoice.get("Date") or date.today(),
        currency=str(invoice.get("CurrencyIsoCode") or "EUR"), seller=seller, buyer=buyer, lines=e_lines, vat=vat,
        line_total=_money(line_total), tax_exclusive=_money(line_total), tax_total=_money(tax_total),
        tax_inclusive=_money(tax_inclusive), prepaid=_money(prepaid), payable=_money(payable), payment_means=means,
        due_date=invoice.get("PaymentDueDate"), buyer_reference=read.text("BT-10"),
        project_ref=read.text("BT-11"), contract_ref=read.text("BT-12"), order_ref=read.text("BT-13"),
        accounting_ref=read.text("BT-19"), notes=[n for n in [read.text("BT-22"), _reason_note(invoice)] if n],
        delivery_date=read.value("BT-72"), period_start=start, period_end=end if start else None,
        preceding=preceding,
    )
    if categories & {"K"}:  # BR-IC-12: the deliver-to country; BR-DE-10/11: its city and post code
        shipped = _clean(invoice.get("ShippingCity"))
        prefix = "Shipping" if shipped else "Billing"
        doc.delivery_country = _country(_clean(invoice.get(f"{prefix}CountryCode"))) or buyer.country
        doc.delivery_address = (_clean(invoice.get(f"{prefix}Street")), _clean(invoice.get(f"{prefix}City")),
                                _clean(invoice.get(f"{prefix}PostalCode")))
    _payment_details(doc, read, invoice, account)
    doc.sources = read.sources
    return doc


def _reason_note(invoice: Mapping[str, Any]) -> str | None:
    reason = _clean(invoice.get("CancelationReason"))
    return f"Storno / Cancellation: {reason}" if reason and invoice.get("Type") == "Cancelation" else None


def _line(read: _Reader, mapping: EInvoiceMapping, line: Mapping[str, Any], sign: Decimal, name: str) -> Line:
    title = read.text("BT-153", line)
    if not title:
        raise EInvoiceDataError(f"invoice {name}: line {line.get('Sequence')} has no item name", "BT-153",
                                mapping.terms["BT-153"].where if "BT-153" in mapping.terms else None)
    net = sign * _dec(line.get("PosTotalNet"))
    quantity = _dec(line.get("Quantity"))
    price = _dec(line.get("UnitPriceNet") if line.get("UnitPriceNet") is not None else line.get("UnitPrice"))
    if (price * sign) < 0:
        quantity = -quantity
    price = abs(price)
    if quantity == 0 and net != 0:
        raise EInvoiceDataError(f"invoice {name}: line {line.get('Sequence')} has an amount but no quantity", "BT-129")
    rate = _dec(line.get("TaxRate")).normalize()
    category = _clean(line.get("VATCategoryCode")) or ("S" if rate > 0 else None)
    if category is None:
        raise EInvoiceDataError(f"invoice {name}: line {line.get('Sequence')} has no VAT category", "BT-151")
    return Line(
        id=str(int(_dec(line.get("Sequence")))) if line.get("Sequence") is not None else str(line.get("Id")),
        name=title, quantity=quantity.normalize() if quantity == quantity.to_integral() else quantity,
        unit=mapping.unit_code(line.get("Unit")), price=price, net=_money(net), category=category,
        rate=rate if rate != 0 else Decimal(0), description=read.text("BT-154", line), note=read.text("BT-127", line),
        seller_id=read.text("BT-155", line), object_id=read.text("BT-128", line),
        accounting_ref=read.text("BT-133", line), start=line.get("ServicePeriodStart"),
        end=line.get("ServicePeriodEnd") if line.get("ServicePeriodStart") else None,
    )


def _vat_groups(e_lines: list[Line], lines: Sequence[Mapping[str, Any]], sign: Decimal, mapping: EInvoiceMapping,
                name: str) -> list[VatGroup]:
    groups: dict[tuple[str, Decimal], VatGroup] = {}
    ordered = sorted(lines, key=lambda l: (_dec(l.get("Sequence")), str(l.get("Id"))))
    for e_line, line in zip(e_lines, ordered):
        key = (e_line.category, e_line.rate)
        group = groups.setdefault(key, VatGroup(e_line.category, e_line.rate, ZERO, ZERO))
        group.base += e_line.net
        group.tax += sign * _dec(line.get("PosTotalTax"))
    for group in groups.values():
        group.base, group.tax = _money(group.base), _money(group.tax)
        if group.category in mapping.exemption_reasons:
            group.reason_code, group.reason = mapping.exemption_reasons[group.category]
            group.reason_code = group.reason_code or None
        elif group.category not in ("S", "Z", "L", "M"):
            raise EInvoiceDataError(f"invoice {name}: VAT category {group.category} needs an exemption reason",
                                    "BT-120", mapping.where("exemption_reasons"))
    return sorted(groups.values(), key=lambda g: (g.category, -g.rate))


def _parties(read: _Reader, categories: set[str]) -> tuple[Party, Party]:
    no_vat_ids = "O" in categories  # BR-O-02: no VAT identifiers on an invoice "not subject to VAT"
    seller = Party(
        name=read.text("BT-27"), trading_name=read.text("BT-28"), identifier=read.text("BT-29"),
        legal_id=read.text("BT-30"), legal_info=read.text("BT-33"),
        vat_id=None if no_vat_ids else _vat_id(read.text("BT-31")), tax_number=read.text("BT-32"),
        address=read.text("BT-34"), address_scheme=read.scheme("BT-34"), street=read.text("BT-35"),
        city=read.text("BT-37"), postcode=read.text("BT-38"), country=_country(read.text("BT-40")),
        contact=read.text("BT-41"), phone=read.text("BT-42"), email=read.text("BT-43"),
    )
    buyer = Party(
        name=read.text("BT-44"), identifier=read.text("BT-46"),
        vat_id=None if no_vat_ids else _vat_id(read.text("BT-48")),
        address=read.text("BT-49"), address_scheme=read.scheme("BT-49"), street=read.text("BT-50"),
        city=read.text("BT-52"), postcode=read.text("BT-53"), subdivision=read.text("BT-54"),
        country=_country(read.text("BT-55")), contact=read.text("BT-56"), phone=read.text("BT-57"),
        email=read.text("BT-58"),
    )
    if not seller.name:
        raise EInvoiceDataError("the issuing business entity has no name", "BT-27", read.sources.get("BT-27"))
    if not buyer.name:
        raise EInvoiceDataError("the invoice has no buyer name", "BT-44", read.sources.get("BT-44"))
    return seller, buyer


def _vat_id(value: str | None) -> str | None:
    """A VAT identifier (BT-31/48) without blanks; one without a country prefix is no VAT id."""
    if not value:
        return None
    text = value.replace(" ", "").upper()
    return text if len(text) > 2 and text[:2].isalpha() else None


def _country(value: str | None) -> str | None:
    return value.upper()[:2] if value else None


def _payment_means(mapping: EInvoiceMapping, invoice: Mapping[str, Any], type_code: str) -> str:
    method = invoice.get("PaymentMethod")
    code = mapping.payment_means.get(str(method)) if method else None
    if type_code in CREDIT_NOTE_TYPES:
        # a credit is paid out: to the customer's account when known
        return "58" if _clean(invoice.get("BankAccount")) else "1"
    return code or "1"


def _payment_details(doc: EInvoice, read: _Reader, invoice: Mapping[str, Any], account: Mapping[str, Any]) -> None:
    if doc.payment_means in ("30", "58"):
        if doc.is_credit_note:
            doc.iban = _iban(invoice.get("BankAccount"))
            doc.account_name = _clean(invoice.get("BankAccountOwner")) or doc.buyer.name
            doc.bic = _clean(invoice.get("BankCode"))
        else:
            doc.iban, doc.account_name, doc.bic = _iban(read.value("BT-84")), read.text("BT-85"), read.text("BT-86")
        if not doc.iban:
            raise EInvoiceDataError(f"invoice {doc.number}: payment by credit transfer, but no account (IBAN)",
                                    "BT-84", read.sources.get("BT-84"))
    elif doc.payment_means == "59":
        doc.mandate, doc.creditor_id = read.text("BT-89"), read.text("BT-90")
        doc.debited_account = _iban(read.value("BT-91"))
        for term, value in (("BT-89", doc.mandate), ("BT-90", doc.creditor_id), ("BT-91", doc.debited_account)):
            if not value:
                raise EInvoiceDataError(f"invoice {doc.number}: payment by direct debit, but no {term}", term,
                                        read.sources.get(term))
    if doc.due_date is None and doc.payable > 0:
        doc.payment_terms = "Zahlbar sofort ohne Abzug / Payable immediately"


def _iban(value: Any) -> str | None:
    text = _clean(value)
    return text.replace(" ", "").upper() if text else None


__all__ = ["EInvoice", "EInvoiceDataError", "Line", "PROCESS_ID", "Party", "VatGroup", "XRECHNUNG_ID",
           "build_einvoice"]
