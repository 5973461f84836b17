"""An :class:`~.build.EInvoice` as OASIS UBL 2.1 (XRechnung 3.0 UBL syntax).

A credit note (document type 381) is a ``CreditNote`` document, everything
else an ``Invoice``; element order follows the UBL 2.1 schemas, which
:mod:`.validation` checks. Deterministic: the same invoice, the same bytes.
"""

from __future__ import annotations

from datetime import date

from lxml import etree

from .build import PROCESS_ID, XRECHNUNG_ID, EInvoice, Party
from .cii import amount, number
from .xmltree import bound

CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
ROOTS = {"Invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
         "CreditNote": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"}
_NS = {"cbc": CBC, "cac": CAC}


_el, _opt = bound(_NS)


def _day(value: date) -> str:
    return value.isoformat()


def ubl_xml(doc: EInvoice, *, customization: str = XRECHNUNG_ID) -> bytes:
    """The UBL 2.1 XML of an e-invoice (UTF-8, with declaration)."""
    kind = "CreditNote" if doc.is_credit_note else "Invoice"
    root = etree.Element(f"{{{ROOTS[kind]}}}{kind}", nsmap={None: ROOTS[kind], "cac": CAC, "cbc": CBC})
    cur = {"currencyID": doc.currency}
    _el(root, "cbc:CustomizationID", customization)
    _el(root, "cbc:ProfileID", PROCESS_ID)
    _el(root, "cbc:ID", doc.number)
    _el(root, "cbc:IssueDate", _day(doc.issue_date))
    if kind == "Invoice" and doc.due_date:
        _el(root, "cbc:DueDate", _day(doc.due_date))
    _el(root, f"cbc:{kind}TypeCode", doc.type_code)
    for note in doc.notes:
        _el(root, "cbc:Note", note)
    _el(root, "cbc:DocumentCurrencyCode", doc.currency)
    _opt(root, "cbc:AccountingCost", doc.accounting_ref)
    _opt(root, "cbc:BuyerReference", doc.buyer_reference)
    if doc.period_start:
        period = _el(root, "cac:InvoicePeriod")
        _el(period, "cbc:StartDate", _day(doc.period_start))
        if doc.period_end:
            _el(period, "cbc:EndDate", _day(doc.period_end))
    if doc.order_ref:
        _el(_el(root, "cac:OrderReference"), "cbc:ID", doc.order_ref)
    if doc.preceding:
        ref = _el(_el(root, "cac:BillingReference"), "cac:InvoiceDocumentReference")
        _el(ref, "cbc:ID", doc.preceding[0])
        if doc.preceding[1]:
            _el(ref, "cbc:IssueDate", _day(doc.preceding[1]))
    if doc.contract_ref:
        _el(_el(root, "cac:ContractDocumentReference"), "cbc:ID", doc.contract_ref)
    if doc.project_ref:
        if kind == "Invoice":
            _el(_el(root, "cac:ProjectReference"), "cbc:ID", doc.project_ref)
        else:
            ref = _el(root, "cac:AdditionalDocumentReference")
            _el(ref, "cbc:ID", doc.project_ref)
            _el(ref, "cbc:DocumentTypeCode", "50")
    _party(_el(root, "cac:AccountingSupplierParty"), doc.seller, seller=True, creditor_id=doc.creditor_id)
    _party(_el(root, "cac:AccountingCustomerParty"), doc.buyer, seller=False)
    if doc.delivery_date or doc.delivery_country:
        delivery = _el(root, "cac:Delivery")
        if doc.delivery_date:
            _el(delivery, "cbc:ActualDeliveryDate", _day(doc.delivery_date))
        if doc.delivery_country:
            address = _el(_el(delivery, "cac:DeliveryLocation"), "cac:Address")
            street, city, postcode = doc.delivery_address or (None, None, None)
            _opt(address, "cbc:StreetName", street)
            _opt(address, "cbc:CityName", city)
            _opt(address, "cbc:PostalZone", postcode)
            _el(_el(address, "cac:Country"), "cbc:IdentificationCode", doc.delivery_country)
    means = _el(root, "cac:PaymentMeans")
    _el(means, "cbc:PaymentMeansCode", doc.payment_means)
    if kind == "CreditNote" and doc.due_date:
        _el(means, "cbc:PaymentDueDate", _day(doc.due_date))
    _el(means, "cbc:PaymentID", doc.number)
    if doc.iban:
        account = _el(means, "cac:PayeeFinancialAccount")
        _el(account, "cbc:ID", doc.iban)
        _opt(account, "cbc:Name", doc.account_name)
        if doc.bic:
            _el(_el(account, "cac:FinancialInstitutionBranch"), "cbc:ID", doc.bic)
    if doc.mandate or doc.debited_account:
        mandate = _el(means, "cac:PaymentMandate")
        _opt(mandate, "cbc:ID", doc.mandate)
        if doc.debited_account:
            _el(_el(mandate, "cac:PayerFinancialAccount"), "cbc:ID", doc.debited_account)
    if doc.payment_terms:
        _el(_el(root, "cac:PaymentTerms"), "cbc:Note", doc.payment_terms)
    total = _el(root, "cac:TaxTotal")
    _el(total, "cbc:TaxAmount", amount(doc.tax_total), **cur)
    for group in doc.vat:
        sub = _el(total, "cac:TaxSubtotal")
        _el(sub, "cbc:TaxableAmount", amount(group.base), **cur)
        _el(sub, "cbc:TaxAmount", amount(group.tax), **cur)
        category = _el(sub, "cac:TaxCategory")
        _el(category, "cbc:ID", group.category)
        _el(category, "cbc:Percent", number(group.rate))  # BR-DE-14: also for O (0)
        _opt(category, "cbc:TaxExemptionReasonCode", group.reason_code)
        _opt(category, "cbc:TaxExemptionReason", group.reason)
        _el(_el(category, "cac:TaxScheme"), "cbc:ID", "VAT")
    sums = _el(root, "cac:LegalMonetaryTotal")
    _el(sums, "cbc:LineExtensionAmount", amount(doc.line_total), **cur)
    _el(sums, "cbc:TaxExclusiveAmount", amount(doc.tax_exclusive), **cur)
    _el(sums, "cbc:TaxInclusiveAmount", amount(doc.tax_inclusive), **cur)
    if doc.prepaid:
        _el(sums, "cbc:PrepaidAmount", amount(doc.prepaid), **cur)
    _el(sums, "cbc:PayableAmount", amount(doc.payable), **cur)
    for line in doc.lines:
        _line(root, kind, line, cur)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _party(holder: etree._Element, party: Party, *, seller: bool, creditor_id: str | None = None) -> None:
    node = _el(holder, "cac:Party")
    if party.address:
        _el(node, "cbc:EndpointID", party.address, schemeID=party.address_scheme or "EM")
    if party.identifier:
        _el(_el(node, "cac:PartyIdentification"), "cbc:ID", party.identifier)
    if creditor_id:
        _el(_el(node, "cac:PartyIdentification"), "cbc:ID", creditor_id, schemeID="SEPA")
    if party.trading_name:
        _el(_el(node, "cac:PartyName"), "cbc:Name", party.trading_name)
    address = _el(node, "cac:PostalAddress")
    _opt(address, "cbc:StreetName", party.street)
    _opt(address, "cbc:CityName", party.city)
    _opt(address, "cbc:PostalZone", party.postcode)
    _opt(address, "cbc:CountrySubentity", party.subdivision)
    _el(_el(address, "cac:Country"), "cbc:IdentificationCode", party.country or "")
    if party.vat_id:
        scheme = _el(node, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", party.vat_id)
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "VAT")
    if seller and party.tax_number:
        scheme = _el(node, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", party.tax_number)
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "FC")
    legal = _el(node, "cac:PartyLegalEntity")
    _el(legal, "cbc:RegistrationName", party.name or "")
    _opt(legal, "cbc:CompanyID", party.legal_id)
    _opt(legal, "cbc:CompanyLegalForm", party.legal_info)
    if party.contact or party.phone or party.email:
        contact = _el(node, "cac:Contact")
        _opt(contact, "cbc:Name", party.contact)
        _opt(contact, "cbc:Telephone", party.phone)
        _opt(contact, "cbc:ElectronicMail", party.email)


def _line(root: etree._Element, kind: str, line, cur: dict) -> None:
    node = _el(root, f"cac:{kind}Line")
    _el(node, "cbc:ID", line.id)
    _opt(node, "cbc:Note", line.note)
    _el(node, "cbc:InvoicedQuantity" if kind == "Invoice" else "cbc:CreditedQuantity", number(line.quantity),
        unitCode=line.unit)
    _el(node, "cbc:LineExtensionAmount", amount(line.net), **cur)
    _opt(node, "cbc:AccountingCost", line.accounting_ref)
    if line.start:
        period = _el(node, "cac:InvoicePeriod")
        _el(period, "cbc:StartDate", _day(line.start))
        if line.end:
            _el(period, "cbc:EndDate", _day(line.end))
    if line.object_id:
        ref = _el(node, "cac:DocumentReference")
        _el(ref, "cbc:ID", line.object_id)
        _el(ref, "cbc:DocumentTypeCode", "130")
    item = _el(node, "cac:Item")
    _opt(item, "cbc:Description", line.description)
    _el(item, "cbc:Name", line.name)
    if line.seller_id:
        _el(_el(item, "cac:SellersItemIdentification"), "cbc:ID", line.seller_id)
    category = _el(item, "cac:ClassifiedTaxCategory")
    _el(category, "cbc:ID", line.category)
    if line.category != "O":
        _el(category, "cbc:Percent", number(line.rate))
    _el(_el(category, "cac:TaxScheme"), "cbc:ID", "VAT")
    _el(_el(node, "cac:Price"), "cbc:PriceAmount", number(line.price), **cur)


__all__ = ["ubl_xml"]
