"""Labels of documents: field labels per locale, with the org's overrides."""

from __future__ import annotations

from typing import Mapping

from engine.config.model import OrgModel

from .template_records import BALANCE_TITLE, TemplateSettings

#: Generic labels (domain-spec §9.1 "Calculated") per language.
CALCULATED_LABELS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "PageLabel": "Page", "OfLabel": "of", "PosNo": "Pos.", "SubTotalNet": "Subtotal (net)",
        "SubTotalNetNoDiscount": "Subtotal (net)", "Tax": "Tax", "TotalTax": "Total Tax", "GrandTotal": "Grand Total",
        "PaymentAmount": "Payment Amount", "RefundAmount": "Refund Amount", "RoundingDifference": "Rounding difference",
        "Credit": "Credit", "ServicePeriod": "Service period", "Invoice": "Invoice", "Customer": "Customer",
        "PaymentTerms": "Payment terms", "SepaMandate": "SEPA direct debit",
        "SepaMandateText": "We will collect the amount of [PaymentAmount] by SEPA direct debit from your account "
                           "[BankAccountMasked] on or after [PaymentDueDate] (mandate reference "
                           "[DirectDebitMandateReference], creditor ID [BusinessEntitySEPACreditorId]).",
        "SubInvoices": "Sub invoices settled by this final invoice", "FinalInvoice": "Final Invoice", "Cancellation": "Cancellation", "TotalServices": "Total services",
        "LessReceived": "less sub invoices", "Deduction": "Deduction for", "TaxId": "VAT ID",
        "TaxNumber": "Tax number", "Bank": "Bank", "ManagingDirectors": "Managing directors",
        "Page": "Page",
        "PartialInvoice": "Partial Invoice", "ProgressInvoice": "Progress Invoice", "DepositInvoice": "Deposit Invoice",
        "CancellationOf": "Cancellation of invoice", "CreditFor": "Credit note for invoice", "Of": "of",
        "NetAtRate": "Net amount at", "CustomerVatId": "Customer VAT ID", "Register": "Commercial register",
        "ReverseChargeNote": "Reverse charge: the recipient of the service is liable for the VAT "
                             "(Art. 196 Directive 2006/112/EC).",
        "IntraCommunityNote": "VAT-exempt intra-community supply (Art. 138 Directive 2006/112/EC).",
        "ExportNote": "VAT-exempt export outside the EU.",
    },
    "de": {
        "PageLabel": "Seite", "OfLabel": "von", "PosNo": "Pos.", "SubTotalNet": "Zwischensumme (netto)",
        "SubTotalNetNoDiscount": "Zwischensumme (netto)", "Tax": "USt.", "TotalTax": "Umsatzsteuer",
        "GrandTotal": "Gesamtbetrag", "PaymentAmount": "Zahlbetrag", "RefundAmount": "Erstattungsbetrag",
        "RoundingDifference": "Rundungsdifferenz", "Credit": "Gutschrift", "ServicePeriod": "Leistungszeitraum",
        "Invoice": "Rechnung", "Customer": "Kunde", "PaymentTerms": "Zahlungsbedingungen",
        "SepaMandate": "SEPA-Lastschrift",
        "SepaMandateText": "Den Betrag von [PaymentAmount] ziehen wir per SEPA-Lastschrift von Ihrem Konto "
                           "[BankAccountMasked] frühestens am [PaymentDueDate] ein (Mandatsreferenz "
                           "[DirectDebitMandateReference], Gläubiger-ID [BusinessEntitySEPACreditorId]).",
        "SubInvoices": "Mit dieser Schlussrechnung abgerechnete Teilrechnungen", "FinalInvoice": "Schlussrechnung", "Cancellation": "Stornorechnung", "TotalServices": "Gesamtleistung",
        "LessReceived": "abzüglich Teilrechnungen", "Deduction": "Abzug für", "TaxId": "USt-IdNr.",
        "TaxNumber": "Steuernummer", "Bank": "Bank", "ManagingDirectors": "Geschäftsführung",
        "Page": "Seite",
        "PartialInvoice": "Teilrechnung", "ProgressInvoice": "Abschlagsrechnung", "DepositInvoice": "Anzahlungsrechnung",
        "CancellationOf": "Storno zur Rechnung", "CreditFor": "Gutschrift zur Rechnung", "Of": "vom",
        "NetAtRate": "Nettobetrag zu", "CustomerVatId": "USt-IdNr. des Kunden", "Register": "Handelsregister",
        "ReverseChargeNote": "Steuerschuldnerschaft des Leistungsempfängers (§ 13b UStG, "
                             "Art. 196 MwStSystRL).",
        "IntraCommunityNote": "Steuerfreie innergemeinschaftliche Lieferung (§ 4 Nr. 1b UStG).",
        "ExportNote": "Steuerfreie Ausfuhrlieferung (§ 4 Nr. 1a UStG).",
    },
}

#: German field labels of the fields the default template prints.
GERMAN_FIELD_LABELS: Mapping[str, Mapping[str, str]] = {
    "Invoice": {"Name": "Rechnungsnummer", "Date": "Rechnungsdatum", "PaymentDueDate": "Fällig am",
                "TotalNet": "Summe netto", "TotalTax": "Umsatzsteuer", "GrandTotal": "Gesamtbetrag",
                "ServicePeriodStart": "Leistungsbeginn", "ServicePeriodEnd": "Leistungsende",
                "DebtorNo__c": "Kundennummer", "PurchaseOrderNo__c": "Bestellnummer",
                "DirectDebitMandateReference": "Mandatsreferenz", "PaymentMethod": "Zahlungsart"},
    "InvoiceLineItem": {"Sequence": "Pos.", "Title": "Bezeichnung", "Quantity": "Menge", "Unit": "Einheit",
                        "UnitPrice": "Einzelpreis", "TaxRate": "USt.", "PosTotalNet": "Gesamt"},
    "Balance": {"Date": "Datum", "Amount": "Betrag", "Type": "Art", "Reference": "Referenz",
                "Name": "Saldo-Nr.", "TransactionNo": "Transaktionsnr."},
}

_LABEL_OBJECTS = ("Invoice", "InvoiceLineItem", "Balance", "Account")


def build_labels(model: OrgModel, settings: TemplateSettings) -> dict[str, dict[str, str]]:
    """Labels for templates: metadata field labels, the language's built-in
    labels, then the template's OverrideLabels."""
    language = settings.locale.split("_")[0].lower()
    labels: dict[str, dict[str, str]] = {}
    for object_name in _LABEL_OBJECTS:
        obj = model.object(object_name)
        group = {f.name: f.label or f.name for f in obj.fields} if obj is not None else {}
        group.setdefault("Name", "Name")
        if language == "de":
            group.update(GERMAN_FIELD_LABELS.get(object_name, {}))
        labels[object_name] = group
    labels["Calculated"] = dict(CALCULATED_LABELS.get(language, CALCULATED_LABELS["en"]))
    for group, values in settings.override_labels.items():
        labels.setdefault(group, {}).update(values)
    labels["Balance"][BALANCE_TITLE] = labels["Balance"].get(BALANCE_TITLE, "")
    return labels
