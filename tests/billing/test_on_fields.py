"""The ON field mechanism (domain-spec §2.1, §3.4.1): source header ON fields
go to the invoice, line ON fields to the line, then the account's data and
ON fields, then template defaults; a value once set is never overwritten;
values are coerced to the target field's type, and a value that does not fit
is an error of its source record.
"""

from __future__ import annotations

from datetime import date


from engine.project import load_project

from config.orgcopy import Replace

from .helpers import D, failures, make_test_org, only

H1 = dict(start=date(2024, 1, 1), end=date(2024, 6, 30))


def test_header_line_and_account_on_fields_of_the_sample_orders(sample):
    h = sample
    report = h.run("Order Invoice", **H1)
    assert report.failure_count == 0 and report.invoice_count == 5
    by_order = {}
    for order in h.select("Order"):
        if order["on_invoice__c"]:
            by_order[order["ordernumber"]] = h.get("Invoice", order["on_invoice__c"])
    assert sorted(by_order) == ["ORD-2024-001", "ORD-2024-002", "ORD-2024-003", "ORD-2024-004", "ORD-2024-101"]

    muster = by_order["ORD-2024-001"]
    # header ON field of the source: Order.ON_PurchaseOrderNo__c -> Invoice.PurchaseOrderNo__c
    assert muster["purchaseorderno__c"] == "PO-4650"
    # account standard data
    assert (muster["accountname"], muster["billingstreet"], muster["billingpostalcode"], muster["billingcity"],
            muster["billingcountry"], muster["billingcountrycode"]) == (
        "Muster GmbH", "Hauptstraße 5", "80331", "München", "Deutschland", "DE")
    # account ON fields: ON_DebtorNo__c -> DebtorNo__c, ON_Region__c (formula) -> Region, ...
    assert (muster["debtorno__c"], muster["region"], muster["paymentmethod"], muster["businessentity"]) == (
        "10001", "DE", "Bank Transfer", "DE01")
    assert muster["paymentdue"] == 14  # template default: neither order nor account set it
    assert muster["bankaccount"] is None and muster["directdebitsequencetype"] is None
    # line ON fields: OrderItem.ON_ProductGroup__c / ON_ProductTaxClass__c (formulas over Product)
    assert [(l["productgroup"], l["producttaxclass"]) for l in h.lines(muster["id"])] == [
        ("Services", "Standard"), ("Books", "Reduced")]

    alpen = by_order["ORD-2024-002"]
    assert (alpen["paymentdue"], alpen["region"], alpen["purchaseorderno__c"]) == (30, "RC", None)
    helvetia = by_order["ORD-2024-003"]
    assert (helvetia["currencyisocode"], helvetia["region"], helvetia["purchaseorderno__c"]) == (
        "CHF", "NON-EU", "HU-PO-9917")
    nordlicht = by_order["ORD-2024-004"]
    assert (nordlicht["paymentmethod"], nordlicht["paymentdue"], nordlicht["bankaccount"], nordlicht["bankcode"],
            nordlicht["bankaccountowner"], nordlicht["directdebitmandatereference"],
            nordlicht["directdebitmandategranted"], nordlicht["directdebitsequencetype"]) == (
        "Direct Debit", 7, "DE02120300000000202051", "BYLADEM1001", "Nordlicht Logistik GmbH", "MNDT-10004-001",
        date(2023, 11, 2), "RCUR")
    project = by_order["ORD-2024-101"]
    assert project["purchaseorderno__c"] == "PO-4711"
    # line ON field OrderItem.ON_CostObject__c -> InvoiceLineItem.CostObject
    assert [(l["title"], l["costobject"]) for l in h.lines(project["id"])] == [
        ("Förderband-Modul", "P-2024-017"), ("Montage und Inbetriebnahme", "P-2024-017")]
    # the lines' service period defaults to the run's period, the invoice's spans its lines
    assert (nordlicht["serviceperiodstart"], nordlicht["serviceperiodend"]) == (H1["start"], H1["end"])


def test_source_values_take_precedence_over_account_and_template(billing_sqlite):
    h = billing_sqlite
    own, account_only, template_only, first, second = h.usage(
        dict(account="10002", title="own values", paymentmethod="Credit Card", paymentdue=D("21"),
             billingcity="Hall in Tirol", debtorno=D("4711")),
        dict(account="10002", title="account values", invoicecriterion="2"),
        dict(account="10001", title="template default"),
        dict(account="10003", title="first", paymentmethod="Cash"),
        dict(account="10003", title="second", paymentmethod="SEPA", billingcity="Basel"),
        unitprice=D("10.00"),
    )
    assert failures(h.run("Usage")) == {}
    get = lambda usage_id: h.get("Invoice", h.get("Usage__c", usage_id)["on_invoice__c"])  # noqa: E731
    mine = get(own)
    assert (mine["paymentmethod"], mine["paymentdue"], mine["billingcity"], mine["debtorno__c"]) == (
        "Credit Card", 21, "Hall in Tirol", "4711")
    assert mine["billingstreet"] == "Innrain 12"  # not set by the source: from the account
    theirs = get(account_only)
    assert (theirs["paymentmethod"], theirs["paymentdue"], theirs["billingcity"], theirs["debtorno__c"]) == (
        "Bank Transfer", 30, "Innsbruck", "10002")
    assert get(template_only)["paymentdue"] == 14  # no ON_PaymentDue anywhere: Default Payment Due of the template
    # merged records: the first record's value wins, a later one only fills what is still empty
    merged = get(first)
    assert merged["id"] == get(second)["id"]
    assert (merged["paymentmethod"], merged["billingcity"]) == ("Cash", "Basel")


def test_line_on_fields_and_number_to_text_coercion(billing_sqlite):
    h = billing_sqlite
    (usage,) = h.usage(dict(account="10001", title="line", unitprice=D("10.00"), costobject="KST-7",
                            producttaxclass="Reduced", debtorno=D("900001")))
    report = h.run("Usage")
    line = only(h.lines(only(report.invoices).id))
    assert (line["costobject"], line["producttaxclass"], line["taxcode"]) == ("KST-7", "Reduced", "DE_7")
    assert h.get("Invoice", only(report.invoices).id)["debtorno__c"] == "900001"  # Number -> Text


def test_values_that_do_not_fit_the_target_are_record_errors(billing_sqlite):
    h = billing_sqlite
    contact = h.insert("Contact", [{"name": "Erika Beispiel", "lastname": "Beispiel",
                                    "accountid": h.account_id("10001")}])[0]
    ok, bad_picklist, bad_decimals, bad_lookup, unrestricted = h.usage(
        dict(title="fits", directdebitsequencetype="RCUR", paymentdue=D("21.00"), contact=str(contact),
             invoicecriterion="ok"),
        dict(title="bad picklist", directdebitsequencetype="WEEKLY"),
        dict(title="decimals", paymentdue=D("10.50")),
        dict(title="bad lookup", contact="Erika"),
        dict(title="unrestricted picklist", paymentmethod="Barter", invoicecriterion="barter"),
        account="10001", unitprice=D("10.00"),
    )
    report = h.run("Usage")
    assert failures(report) == {
        bad_picklist: "ON_DirectDebitSequenceType__c -> Invoice.DirectDebitSequenceType: "
                      "'WEEKLY' is not a value of the picklist Invoice.DirectDebitSequenceType",
        bad_decimals: "ON_PaymentDue__c -> Invoice.PaymentDue: 10.50 has more than 0 decimal places",
        bad_lookup: "ON_Contact__c -> Invoice.Contact: expected a record id (a positive whole number), got 'Erika'",
    }
    fits = h.get("Invoice", h.get("Usage__c", ok)["on_invoice__c"])
    assert (fits["directdebitsequencetype"], fits["paymentdue"], fits["contact"]) == ("RCUR", 21, contact)
    assert h.get("Invoice", h.get("Usage__c", unrestricted)["on_invoice__c"])["paymentmethod"] == "Barter"
    for record_id in (bad_picklist, bad_decimals, bad_lookup):
        assert h.get("Usage__c", record_id)["on_invoicebuilderror__c"] == failures(report)[record_id]


def test_lookup_value_of_a_missing_record_is_a_record_error(billing_sqlite):
    h = billing_sqlite
    good, missing = h.usage(
        dict(account="10002", title="good"),
        dict(account="10001", title="missing contact", contact="999999"),
        unitprice=D("10.00"),
    )
    report = h.run("Usage", batch_size=1)
    assert h.get("Usage__c", good)["on_invoice__c"] is not None
    assert h.get("Usage__c", missing)["on_invoice__c"] is None
    assert "999999" in failures(report)[missing]
    assert h.get("InvoiceRun", report.run_id)["status"] == "Completed"


def test_text_on_field_into_a_number_field_is_refused_by_validate_config(tmp_path):
    """Text -> Number is not coerced at run time: validate-config refuses the
    pairing (E090), so the run never meets a text in a number field."""
    org = make_test_org(tmp_path / "org")
    Replace("metadata/objects/Usage__c.yaml",
            "  ON_PaymentDue__c: {type: Number, precision: 6, scale: 2, label: Payment Terms (Invoice)}",
            "  ON_PaymentDue__c: {type: Text, length: 10, label: Payment Terms (Invoice)}").apply(org)
    result = load_project(org)
    assert [(d.code, d.message) for d in result.errors] == [(
        "E090",
        "Usage__c.ON_PaymentDue__c would be copied to Invoice.PaymentDue, but Usage__c.ON_PaymentDue__c holds "
        "text but Invoice.PaymentDue holds number",
    )]

