"""Issued invoices as the e-invoice builder sees them (records keyed by field
API name), with amounts computed by the billing code itself
(:func:`engine.billing.build.rebuild_final_invoice`, the run's arithmetic),
for every document type and VAT category the engine produces."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from engine.billing.build import rebuild_final_invoice

ENTITY = {
    "Name": "DE01", "Company": "Muster GmbH", "Street": "Friedrichstraße 100", "PostalCode": "10117",
    "City": "Berlin", "CountryCode": "DE", "Email": "rechnung@muster-gmbh.example", "Phone": "+49 30 1234567",
    "TaxId": "DE999999999", "TaxNumber": "30/123/45678",
    "CommercialRegister": "Amtsgericht Berlin-Charlottenburg, HRB 123456 B", "IBAN": "DE89370400440532013000",
    "BIC": "COBADEFFXXX", "SEPACreditorId": "DE98ZZZ09999999999",
}
ACCOUNTS = {
    "DE": {"AccountNumber": "10001", "TaxNumber": "DE123456789", "Email": "einkauf@kunde.example"},
    "AT": {"AccountNumber": "10002", "TaxNumber": "ATU12345678", "Email": "office@alpenblick.example"},
    "FR": {"AccountNumber": "10005", "TaxNumber": "FR12345678901", "Email": "achat@client.example"},
    "CH": {"AccountNumber": "10003", "TaxNumber": "CHE123456789", "Email": "finance@uhren.example"},
}
ADDRESSES = {
    "DE": ("Hauptstraße 5", "80331", "München"), "AT": ("Innrain 12", "6020", "Innsbruck"),
    "FR": ("1 rue de la Paix", "75002", "Paris"), "CH": ("Bahnhofstrasse 10", "8001", "Zürich"),
}
CATEGORY_OF_RATE = {Decimal("19"): "S", Decimal("7"): "S"}

_API = {"sequence": "Sequence", "title": "Title", "quantity": "Quantity", "unit": "Unit", "unitprice": "UnitPrice",
        "unitpricenet": "UnitPriceNet", "taxrate": "TaxRate", "vatcategorycode": "VATCategoryCode",
        "postotalnet": "PosTotalNet", "postotaltax": "PosTotalTax", "postotalgross": "PosTotalGross",
        "isdeduction": "IsDeduction", "serviceperiodstart": "ServicePeriodStart",
        "serviceperiodend": "ServicePeriodEnd", "description": "Description"}


def line(title: str, quantity: str, price: str, rate: str = "19", category: str | None = None, **extra) -> dict:
    """A line as the run writes it (lower-case keys), before amounts."""
    rate_d = Decimal(rate)
    return {"title": title, "quantity": Decimal(quantity), "unitprice": Decimal(price), "taxrate": rate_d,
            "vatcategorycode": category or CATEGORY_OF_RATE.get(rate_d, "Z"), "isdeduction": False,
            "serviceperiodstart": date(2024, 3, 1), "serviceperiodend": date(2024, 3, 31), **extra}


def invoice(name: str, lines: list[dict], *, kind: str = "Standard", country: str = "DE", rounding: str = "PerTaxGroup",
            gross: bool = False, deductions: list[dict] = (), method: str = "Bank Transfer", **extra):
    """(invoice, lines, account) with the run's amounts; ``deductions``:
    deduction lines of sub invoices (negative, added after the main lines)."""
    header = {"grossinvoice": gross}
    for number, item in enumerate(lines, start=1):
        item.setdefault("sequence", Decimal(number))
    fresh, rebuilt = rebuild_final_invoice(header, lines, [], rounding)
    for number, item in enumerate(deductions, start=len(rebuilt) + 1):
        done = dict(item, sequence=Decimal(number), isdeduction=False)
        _, [computed] = rebuild_final_invoice({"grossinvoice": False}, [done], [], rounding)
        computed["isdeduction"] = True
        rebuilt.append(computed)
    api_lines = [{_API[k]: v for k, v in item.items() if k in _API} | {"Id": i}
                 for i, item in enumerate(rebuilt, start=1)]
    total = {key: sum((item[f"PosTotal{key}"] for item in api_lines), Decimal("0.00")) for key in
             ("Net", "Tax", "Gross")}
    street, postcode, city = ADDRESSES[country]
    record = {
        "Id": 1, "Name": name, "Type": kind, "Class": "Invoice" if total["Gross"] >= 0 else "Credit",
        "Status": "Open", "Date": date(2024, 4, 2), "PaymentDueDate": date(2024, 4, 16), "CurrencyIsoCode": "EUR",
        "AccountName": f"Kunde {country} GmbH", "BillingStreet": street, "BillingPostalCode": postcode,
        "BillingCity": city, "BillingCountryCode": country, "PaymentMethod": method,
        "TotalNet": total["Net"], "TotalTax": total["Tax"], "GrandTotal": total["Gross"],
        "ServicePeriodStart": date(2024, 3, 1), "ServicePeriodEnd": date(2024, 3, 31),
        "PurchaseOrderNo__c": "PO-4711", **extra,
    }
    return record, api_lines, dict(ACCOUNTS[country])


def cases():
    """name -> (invoice, lines, account, preceding) of every document type
    and VAT category the engine produces."""
    out = {}
    out["mixed-19-7"] = invoice("INV-1", [line("Beratung", "8.5", "120.00"), line("Fachbuch", "3", "49.90", "7"),
                                          line("Rabatt", "1", "-25.00")])
    out["reverse-charge-AE"] = invoice("INV-2", [line("Lizenz", "1", "1200", "0", "AE")], country="AT")
    out["zero-rated-Z"] = invoice("INV-3", [line("Buch (0 %)", "2", "10.00", "0", "Z")])
    out["exempt-E"] = invoice("INV-4", [line("Heilbehandlung", "1", "80.00", "0", "E")])
    out["intra-community-K"] = invoice("INV-5", [line("Maschine", "1", "5000.00", "0", "K")], country="FR",
                                       ShippingCountryCode="FR")
    out["export-G"] = invoice("INV-6", [line("Software", "2", "1150.00", "0", "G")], country="CH")
    out["not-subject-O"] = invoice("INV-7", [line("Schadensersatz", "1", "300.00", "0", "O")], country="CH")
    out["direct-debit"] = invoice("INV-8", [line("Wartung", "3", "250.00")], method="Direct Debit",
                                  DirectDebitMandateReference="MNDT-10004-001", BankAccount="DE02120300000000202051")
    out["partial-326"] = invoice("INV-9", [line("Abschlag Meilenstein 1", "1", "1000.00")], kind="Partial")
    out["progress-326"] = invoice("INV-10", [line("Baufortschritt 40 %", "1", "4000.00")], kind="Progress")
    out["final-with-deductions"] = invoice(
        "INV-11", [line("Förderband-Modul", "10", "800.00"), line("Montage", "1", "2000.00")], kind="Final",
        deductions=[line("Abzug INV-9", "1", "-4800.00"), line("Abzug INV-10", "1", "-1000.00")])
    credit = invoice("CR-1", [line("Gutschrift Wartung", "3", "-250.00")], kind="Standard", method="Direct Debit",
                     BankAccount="DE02120300000000202051")
    out["credit-note"] = credit
    cancel = invoice("CR-2", [line("Wartung April bis Juni", "3", "-250.00")], kind="Cancelation",
                     CancelationReason="Falscher Zeitraum", RelatedInvoice=8)
    out["cancellation"] = cancel
    return {name: (*value, ("INV-8", date(2024, 3, 20)) if name == "cancellation" else None)
            for name, value in out.items()}
