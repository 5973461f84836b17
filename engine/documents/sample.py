"""The sample invoices validate-config renders every template with.

A template that fails on real data fails on these first: a standard invoice
and a final invoice with deductions, balances and every product field filled
with a value of its type. Errors come back with the template's file and line.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping

from engine.config.model import FieldDef, FieldType, OrgModel, SettingRecord

from .context import DocumentInput, document_context, document_environment, setting_values
from .sandbox import TemplateErrorInfo, describe_error, render_template, template_path_problem
from .template_records import TemplateSettings, parse_template_settings

#: The business entity of the sample invoices when the org marks none Default.
SAMPLE_ENTITY = {"Name": "SAMPLE", "Company": "Sample GmbH", "Street": "Musterweg 1", "PostalCode": "10115",
                 "City": "Berlin", "Country": "Deutschland"}


def _sample_value(fdef: FieldDef) -> Any:
    """A field's value where a sample record gives none: unchecked for a
    checkbox, else empty."""
    return False if fdef.type is FieldType.CHECKBOX else None


def _record(obj: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """A sample record of ``obj``: every field present, ``values`` set."""
    record = {f.name: _sample_value(f) for f in obj.fields} if obj is not None else {}
    record.update(values)
    return record


def sample_inputs(model: OrgModel, settings: TemplateSettings) -> list[DocumentInput]:
    """Two sample invoices every template must render: a standard invoice
    paid by bank transfer with one balance of each mapped type, and a final
    invoice collected by direct debit with a deducted sub invoice. Every
    field of the metadata is present (empty when it has no sample value), so
    a template may print any field, and only names that exist nowhere fail."""
    inv = model.object("Invoice")
    line = model.object("InvoiceLineItem")
    bal = model.object("Balance")
    acc = model.object("Account")
    entity_values = setting_values(model, "BusinessEntity")
    if entity_values.get("Name") is None:
        entity_values.update(SAMPLE_ENTITY)
    account = _record(acc, {"Name": "Sample Customer AG", "Id": 1})
    invoice_values = {
        "Id": 1, "Name": "INV-SAMPLE-0001", "Status": "Open", "Class": "Invoice", "Type": "Standard",
        "Date": date(2024, 9, 30), "PaymentDue": Decimal("14"), "PaymentDueDate": date(2024, 10, 14),
        "PaymentMethod": "Bank Transfer", "CurrencyIsoCode": "EUR", "AccountName": "Sample Customer AG",
        "BillingStreet": "Beispielstraße 5", "BillingPostalCode": "80331", "BillingCity": "München",
        "BillingCountry": "Deutschland", "BusinessEntity": entity_values.get("Name"), "Template": settings.name,
        "ServicePeriodStart": date(2024, 9, 1), "ServicePeriodEnd": date(2024, 9, 30),
        "TotalNet": Decimal("25.00"), "TotalTax": Decimal("4.75"), "GrandTotal": Decimal("29.75"),
        "Balance": Decimal("29.75"), "Account": 1,
    }
    lines = [
        _record(line, {"Id": 1, "Invoice": 1, "Sequence": Decimal("1"), "Title": "Product 1",
                       "Quantity": Decimal("1.0000"), "UnitPrice": Decimal("25.0000"), "TaxRate": Decimal("19.000"),
                       "PosTotalNet": Decimal("25.00"), "PosTotalTax": Decimal("4.75"),
                       "PosTotalGross": Decimal("29.75"), "IsDeduction": False}),
    ]
    balances = [_record(bal, {"Id": 1, "Name": "BAL-SAMPLE-1", "Type": "Invoice", "Amount": Decimal("29.75"),
                              "Date": date(2024, 9, 30), "Invoice": 1, "Account": 1, "RelatedInvoiceNo": None})]
    for number, (balance_type, _title) in enumerate(settings.balance_types, start=2):
        balances.append(_record(bal, {"Id": number, "Name": f"BAL-SAMPLE-{number}", "Type": balance_type,
                                      "Amount": Decimal("-1.00"), "Date": date(2024, 10, 1), "Invoice": 1,
                                      "Account": 1, "RelatedInvoice": 2, "RelatedInvoiceNo": "INV-SAMPLE-0002"}))
    standard = DocumentInput(_record(inv, invoice_values), lines, balances, account, dict(entity_values))
    sub = _record(inv, {**invoice_values, "Id": 2, "Name": "INV-SAMPLE-0002", "Type": "Progress",
                        "Date": date(2024, 6, 30), "FinalInvoice": 3})
    final_values = {**invoice_values, "Id": 3, "Name": "INV-SAMPLE-0003", "Type": "Final",
                    "PaymentMethod": "Direct Debit", "BankAccount": "DE89370400440532013000",
                    "DirectDebitMandateReference": "MANDATE-1", "DirectDebitMandateGranted": date(2024, 1, 2),
                    "TotalNet": Decimal("15.00"), "TotalTax": Decimal("2.85"), "GrandTotal": Decimal("17.85")}
    final_lines = lines + [
        _record(line, {"Id": 2, "Invoice": 3, "Sequence": Decimal("2"), "Title": "INV-SAMPLE-0002",
                       "Quantity": Decimal("1.0000"), "UnitPrice": Decimal("-10.0000"),
                       "TaxRate": Decimal("19.000"), "PosTotalNet": Decimal("-10.00"),
                       "PosTotalTax": Decimal("-1.90"), "PosTotalGross": Decimal("-11.90"), "IsDeduction": True,
                       "SubInvoice": 2, "SubInvoiceNo": "INV-SAMPLE-0002"}),
    ]
    final = DocumentInput(_record(inv, final_values), final_lines, [], account, dict(entity_values), [sub])
    return [standard, final]


def check_template_record(org_root: Path | str, model: OrgModel, record: SettingRecord
                          ) -> tuple[TemplateSettings, list[TemplateErrorInfo]]:
    """validate-config's view of one Template record: its parsed settings
    (with their problems) and the template errors of rendering the sample
    invoices (at most one per template file and kind)."""
    settings = parse_template_settings(model, record)
    errors: list[TemplateErrorInfo] = []
    if template_path_problem(settings.file):
        return settings, errors
    seen: set[tuple] = set()
    for data in sample_inputs(model, settings):
        env = document_environment(org_root, settings, data)
        try:
            render_template(env, settings.file, document_context(model, settings, data), seconds=5.0)
        except Exception as error:  # noqa: BLE001 - every template error is a finding
            info = describe_error(error, env, settings.file)
            key = (info.kind, info.file, info.line, info.message)
            if key not in seen:
                seen.add(key)
                errors.append(info)
            if info.kind in ("syntax", "load"):
                break  # the second sample fails the same way
    return settings, errors
