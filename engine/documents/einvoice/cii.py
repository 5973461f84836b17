"""An :class:`~.build.EInvoice` as UN/CEFACT Cross Industry Invoice (CII D16B).

Element order follows the D16B schema (the XSD validation in
:mod:`.validation` checks it). The same writer serves XRechnung (BT-24 the
XRechnung 3.0 identifier) and ZUGFeRD/Factur-X EN 16931 (BT-24
``urn:cen.eu:en16931:2017``). Output is deterministic: the same invoice
gives the same bytes.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from lxml import etree

from .build import PROCESS_ID, XRECHNUNG_ID, EInvoice, Party
from .xmltree import bound

RSM = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
UDT = "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"
QDT = "urn:un:unece:uncefact:data:standard:QualifiedDataType:100"
NSMAP = {"rsm": RSM, "ram": RAM, "udt": UDT, "qdt": QDT}
#: BT-24 of a Factur-X / ZUGFeRD invoice in the EN 16931 profile.
EN16931_ID = "urn:cen.eu:en16931:2017"


def amount(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.01")), "f")


def number(value: Decimal) -> str:
    """A quantity, price or rate without exponent or needless zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


_el, _opt = bound(NSMAP)


def _date(parent: etree._Element, tag: str, value: date, qualified: bool = False) -> None:
    holder = _el(parent, tag)
    _el(holder, "qdt:DateTimeString" if qualified else "udt:DateTimeString", value.strftime("%Y%m%d"), format="102")


def cii_xml(doc: EInvoice, *, guideline: str = XRECHNUNG_ID) -> bytes:
    """The CII XML of an e-invoice (UTF-8, with declaration)."""
    root = etree.Element(f"{{{RSM}}}CrossIndustryInvoice", nsmap=NSMAP)
    context = _el(root, "rsm:ExchangedDocumentContext")
    _el(_el(context, "ram:BusinessProcessSpecifiedDocumentContextParameter"), "ram:ID", PROCESS_ID)
    _el(_el(context, "ram:GuidelineSpecifiedDocumentContextParameter"), "ram:ID", guideline)
    header = _el(root, "rsm:ExchangedDocument")
    _el(header, "ram:ID", doc.number)
    _el(header, "ram:TypeCode", doc.type_code)
    _date(header, "ram:IssueDateTime", doc.issue_date)
    for note in doc.notes:
        _el(_el(header, "ram:IncludedNote"), "ram:Content", note)
    transaction = _el(root, "rsm:SupplyChainTradeTransaction")
    for line in doc.lines:
        _line(transaction, doc, line)
    _agreement(transaction, doc)
    delivery = _el(transaction, "ram:ApplicableHeaderTradeDelivery")
    if doc.delivery_country:
        address = _el(_el(delivery, "ram:ShipToTradeParty"), "ram:PostalTradeAddress")
        street, city, postcode = doc.delivery_address or (None, None, None)
        _opt(address, "ram:PostcodeCode", postcode)
        _opt(address, "ram:LineOne", street)
        _opt(address, "ram:CityName", city)
        _el(address, "ram:CountryID", doc.delivery_country)
    if doc.delivery_date:
        _date(_el(delivery, "ram:ActualDeliverySupplyChainEvent"), "ram:OccurrenceDateTime", doc.delivery_date)
    _settlement(transaction, doc)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _line(parent: etree._Element, doc: EInvoice, line) -> None:
    item = _el(parent, "ram:IncludedSupplyChainTradeLineItem")
    head = _el(item, "ram:AssociatedDocumentLineDocument")
    _el(head, "ram:LineID", line.id)
    if line.note:
        _el(_el(head, "ram:IncludedNote"), "ram:Content", line.note)
    product = _el(item, "ram:SpecifiedTradeProduct")
    _opt(product, "ram:SellerAssignedID", line.seller_id)
    _el(product, "ram:Name", line.name)
    _opt(product, "ram:Description", line.description)
    agreement = _el(item, "ram:SpecifiedLineTradeAgreement")
    _el(_el(agreement, "ram:NetPriceProductTradePrice"), "ram:ChargeAmount", number(line.price))
    _el(_el(item, "ram:SpecifiedLineTradeDelivery"), "ram:BilledQuantity", number(line.quantity),
        unitCode=line.unit)
    settlement = _el(item, "ram:SpecifiedLineTradeSettlement")
    tax = _el(settlement, "ram:ApplicableTradeTax")
    _el(tax, "ram:TypeCode", "VAT")
    _el(tax, "ram:CategoryCode", line.category)
    if line.category != "O":
        _el(tax, "ram:RateApplicablePercent", number(line.rate))
    if line.start:
        period = _el(settlement, "ram:BillingSpecifiedPeriod")
        _date(period, "ram:StartDateTime", line.start)
        if line.end:
            _date(period, "ram:EndDateTime", line.end)
    _el(_el(settlement, "ram:SpecifiedTradeSettlementLineMonetarySummation"), "ram:LineTotalAmount",
        amount(line.net))
    if line.object_id:
        ref = _el(settlement, "ram:AdditionalReferencedDocument")
        _el(ref, "ram:IssuerAssignedID", line.object_id)
        _el(ref, "ram:TypeCode", "130")
    if line.accounting_ref:
        _el(_el(settlement, "ram:ReceivableSpecifiedTradeAccountingAccount"), "ram:ID", line.accounting_ref)


def _party(parent: etree._Element, tag: str, party: Party, *, seller: bool) -> None:
    node = _el(parent, tag)
    _opt(node, "ram:ID", party.identifier)
    _el(node, "ram:Name", party.name or "")
    _opt(node, "ram:Description", party.legal_info)
    if party.legal_id or party.trading_name:
        legal = _el(node, "ram:SpecifiedLegalOrganization")
        _opt(legal, "ram:ID", party.legal_id)
        _opt(legal, "ram:TradingBusinessName", party.trading_name)
    if party.contact or party.phone or party.email:
        contact = _el(node, "ram:DefinedTradeContact")
        _opt(contact, "ram:PersonName", party.contact)
        if party.phone:
            _el(_el(contact, "ram:TelephoneUniversalCommunication"), "ram:CompleteNumber", party.phone)
        if party.email:
            _el(_el(contact, "ram:EmailURIUniversalCommunication"), "ram:URIID", party.email)
    address = _el(node, "ram:PostalTradeAddress")
    _opt(address, "ram:PostcodeCode", party.postcode)
    _opt(address, "ram:LineOne", party.street)
    _opt(address, "ram:CityName", party.city)
    _el(address, "ram:CountryID", party.country or "")
    _opt(address, "ram:CountrySubDivisionName", party.subdivision)
    if party.address:
        _el(_el(node, "ram:URIUniversalCommunication"), "ram:URIID", party.address,
            schemeID=party.address_scheme or "EM")
    if party.vat_id:
        _el(_el(node, "ram:SpecifiedTaxRegistration"), "ram:ID", party.vat_id, schemeID="VA")
    if seller and party.tax_number:
        _el(_el(node, "ram:SpecifiedTaxRegistration"), "ram:ID", party.tax_number, schemeID="FC")


def _agreement(parent: etree._Element, doc: EInvoice) -> None:
    agreement = _el(parent, "ram:ApplicableHeaderTradeAgreement")
    _opt(agreement, "ram:BuyerReference", doc.buyer_reference)
    _party(agreement, "ram:SellerTradeParty", doc.seller, seller=True)
    _party(agreement, "ram:BuyerTradeParty", doc.buyer, seller=False)
    if doc.order_ref:
        _el(_el(agreement, "ram:BuyerOrderReferencedDocument"), "ram:IssuerAssignedID", doc.order_ref)
    if doc.contract_ref:
        _el(_el(agreement, "ram:ContractReferencedDocument"), "ram:IssuerAssignedID", doc.contract_ref)
    if doc.project_ref:
        project = _el(agreement, "ram:SpecifiedProcuringProject")
        _el(project, "ram:ID", doc.project_ref)
        _el(project, "ram:Name", "Project")


def _settlement(parent: etree._Element, doc: EInvoice) -> None:
    settlement = _el(parent, "ram:ApplicableHeaderTradeSettlement")
    _opt(settlement, "ram:CreditorReferenceID", doc.creditor_id)
    _el(settlement, "ram:PaymentReference", doc.number)
    _el(settlement, "ram:InvoiceCurrencyCode", doc.currency)
    means = _el(settlement, "ram:SpecifiedTradeSettlementPaymentMeans")
    _el(means, "ram:TypeCode", doc.payment_means)
    if doc.debited_account:
        _el(_el(means, "ram:PayerPartyDebtorFinancialAccount"), "ram:IBANID", doc.debited_account)
    if doc.iban:
        account = _el(means, "ram:PayeePartyCreditorFinancialAccount")
        _el(account, "ram:IBANID", doc.iban)
        _opt(account, "ram:AccountName", doc.account_name)
        if doc.bic:
            _el(_el(means, "ram:PayeeSpecifiedCreditorFinancialInstitution"), "ram:BICID", doc.bic)
    for group in doc.vat:
        tax = _el(settlement, "ram:ApplicableTradeTax")
        _el(tax, "ram:CalculatedAmount", amount(group.tax))
        _el(tax, "ram:TypeCode", "VAT")
        _opt(tax, "ram:ExemptionReason", group.reason)
        _el(tax, "ram:BasisAmount", amount(group.base))
        _el(tax, "ram:CategoryCode", group.category)
        _opt(tax, "ram:ExemptionReasonCode", group.reason_code)
        _el(tax, "ram:RateApplicablePercent", number(group.rate))  # BR-DE-14: also for O (0)
    if doc.period_start:
        period = _el(settlement, "ram:BillingSpecifiedPeriod")
        _date(period, "ram:StartDateTime", doc.period_start)
        if doc.period_end:
            _date(period, "ram:EndDateTime", doc.period_end)
    if doc.payment_terms or doc.due_date or doc.mandate:
        terms = _el(settlement, "ram:SpecifiedTradePaymentTerms")
        _opt(terms, "ram:Description", doc.payment_terms)
        if doc.due_date:
            _date(terms, "ram:DueDateDateTime", doc.due_date)
        _opt(terms, "ram:DirectDebitMandateID", doc.mandate)
    totals = _el(settlement, "ram:SpecifiedTradeSettlementHeaderMonetarySummation")
    _el(totals, "ram:LineTotalAmount", amount(doc.line_total))
    _el(totals, "ram:TaxBasisTotalAmount", amount(doc.tax_exclusive))
    _el(totals, "ram:TaxTotalAmount", amount(doc.tax_total), currencyID=doc.currency)
    _el(totals, "ram:GrandTotalAmount", amount(doc.tax_inclusive))
    if doc.prepaid:
        _el(totals, "ram:TotalPrepaidAmount", amount(doc.prepaid))
    _el(totals, "ram:DuePayableAmount", amount(doc.payable))
    if doc.preceding:
        ref = _el(settlement, "ram:InvoiceReferencedDocument")
        _el(ref, "ram:IssuerAssignedID", doc.preceding[0])
        if doc.preceding[1]:
            _date(ref, "ram:FormattedIssueDateTime", doc.preceding[1], qualified=True)
    if doc.accounting_ref:
        _el(_el(settlement, "ram:ReceivableSpecifiedTradeAccountingAccount"), "ram:ID", doc.accounting_ref)


__all__ = ["EN16931_ID", "NSMAP", "amount", "cii_xml", "number"]
