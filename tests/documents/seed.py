"""The invoice of seed 002's example, as document input: one position
"Product 1" of 25.00 at 0 % tax and a Prepayment of -10.00 on 2017-03-02,
so Grand Total 25.00 and Payment Amount 15.00."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from engine.config.model import OrgModel
from engine.documents.context import DocumentInput


def _blank(model: OrgModel, object_name: str) -> dict:
    return {f.name: None for f in model.require(object_name).fields}


def seed_invoice(model: OrgModel, *, template: str | None = "Default Invoice (EN)", balances: list[dict] | None = None,
                 **invoice_values) -> DocumentInput:
    invoice = _blank(model, "Invoice") | {
        "Id": 1, "Name": "INV-2017-00001", "Status": "Open", "Class": "Invoice", "Type": "Standard",
        "Date": date(2017, 3, 1), "PaymentDue": Decimal("14"), "PaymentDueDate": date(2017, 3, 15),
        "PaymentMethod": "Bank Transfer", "CurrencyIsoCode": "EUR", "AccountName": "Customer Ltd",
        "BillingStreet": "1 High Street", "BillingPostalCode": "SW1A 1AA", "BillingCity": "London",
        "BusinessEntity": "DE01", "Template": template, "TotalNet": Decimal("25.00"), "TotalTax": Decimal("0.00"),
        "GrandTotal": Decimal("25.00"), "Balance": Decimal("15.00"),
    } | invoice_values
    line = _blank(model, "InvoiceLineItem") | {
        "Id": 1, "Invoice": 1, "Sequence": Decimal("1"), "Title": "Product 1", "Quantity": Decimal("1.0000"),
        "UnitPrice": Decimal("25.0000"), "TaxRate": Decimal("0.000"), "PosTotalNet": Decimal("25.00"),
        "PosTotalTax": Decimal("0.00"), "PosTotalGross": Decimal("25.00"), "IsDeduction": False,
    }
    if balances is None:
        balances = [
            {"Id": 1, "Name": "BAL-1", "Type": "Invoice", "Amount": Decimal("25.00"), "Date": date(2017, 3, 1)},
            {"Id": 2, "Name": "BAL-2", "Type": "Prepayment", "Amount": Decimal("-10.00"), "Date": date(2017, 3, 2)},
        ]
    full = [_blank(model, "Balance") | {"Invoice": 1, "RelatedInvoiceNo": None} | b for b in balances]
    entity = {f.name: None for f in model.require("BusinessEntity").fields} | {"Name": "DE01", "Company": "Muster GmbH"}
    return DocumentInput(invoice, [line], full, _blank(model, "Account") | {"Name": "Customer Ltd"}, entity)
