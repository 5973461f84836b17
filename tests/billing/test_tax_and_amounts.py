"""Tax determination through the Tax Rules (domain-spec §3.6) and exact
amounts (§3.4.6): PosTotalNet = round-half-up(quantity x unit price), tax per
line at the rule's rate, totals always the sum of the lines, and the class
Credit for a negative total.
"""

from __future__ import annotations

from datetime import date

import pytest

from engine.project import load_project

from config.orgcopy import Replace

from .helpers import D, SAMPLE_FILTERS, assert_invariants, failures, make_test_org, only


def _amounts(lines):
    return [(l["postotalnet"], l["postotaltax"], l["postotalgross"]) for l in lines]


def test_tax_rules_for_german_austrian_and_swiss_customers(sample):
    h = sample
    report = h.run("Order Invoice", start=date(2024, 1, 1), end=date(2024, 4, 30))
    assert report.invoice_count == 4
    invoices = {h.get("Account", i["account"])["accountnumber"]: i for i in h.invoices()}

    muster = invoices["10001"]  # DE customer; a book has the product tax class Reduced
    lines = h.lines(muster["id"])
    assert [(l["taxcode"], l["taxrate"], l["appliedtaxrule"], l["vatcategorycode"]) for l in lines] == [
        ("DE_19", D("19"), "DE_19", "S"), ("DE_7", D("7"), "DE_7", "S")]
    assert _amounts(lines) == [
        (D("960.00"), D("182.40"), D("1142.40")),   # 8 x 120.00
        (D("99.80"), D("6.99"), D("106.79")),       # 2 x 49.90; 6.986 -> 6.99
    ]
    assert (muster["totalnet"], muster["totaltax"], muster["grandtotal"]) == (D("1059.80"), D("189.39"), D("1249.19"))

    alpen = invoices["10002"]  # AT customer with a VAT id: reverse charge
    assert {(l["taxcode"], l["taxrate"], l["vatcategorycode"]) for l in h.lines(alpen["id"])} == {("RC", D("0"), "AE")}
    assert (alpen["totalnet"], alpen["totaltax"], alpen["grandtotal"]) == (D("1550.00"), D("0.00"), D("1550.00"))

    helvetia = invoices["10003"]  # CH customer: outside the EU
    line = only(h.lines(helvetia["id"]))
    assert (line["taxcode"], line["taxrate"], line["vatcategorycode"]) == ("Non_EU", D("0"), "G")
    assert (helvetia["grandtotal"], helvetia["currencyisocode"]) == (D("2300.00"), "CHF")

    nordlicht = invoices["10004"]
    assert _amounts(h.lines(nordlicht["id"])) == [(D("750.00"), D("142.50"), D("892.50"))]
    assert_invariants(h)


def test_eu_customer_without_vat_id_pays_eu_vat(billing_sqlite):
    h = billing_sqlite
    h.update("Account", h.account_id("10002"), taxnumber=None)
    h.usage(dict(account="10002", title="no VAT id", unitprice=D("100.00")))
    line = only(h.lines(only(h.run("Usage").invoices).id))
    assert (line["taxcode"], line["taxrate"], line["postotaltax"]) == ("EU_VAT", D("19"), D("19.00"))


def test_exact_half_up_amounts(billing_sqlite):
    h = billing_sqlite
    h.usage(
        dict(title="a", quantity=D("1"), unitprice=D("0.1250")),     # 0.125  -> 0.13 (half-even would be 0.12)
        dict(title="b", quantity=D("3"), unitprice=D("0.3350")),     # 1.005  -> 1.01
        dict(title="c", quantity=D("2.5"), unitprice=D("0.0500")),   # 0.125  -> 0.13
        dict(title="d", quantity=D("0.3333"), unitprice=D("3.0000")),  # 0.9999 -> 1.00
        dict(title="e", quantity=D("1"), unitprice=D("1.5000")),     # tax 0.285 -> 0.29
        dict(title="f", quantity=D("1"), unitprice=D("3.5000"), producttaxclass="Reduced"),  # 7 %: 0.245 -> 0.25
        dict(title="g", quantity=D("-1"), unitprice=D("0.1250")),    # -0.125 -> -0.13 (half away from zero)
        account="10001",
    )
    invoice = h.get("Invoice", only(h.run("Usage").invoices).id)
    assert _amounts(h.lines(invoice["id"])) == [
        (D("0.13"), D("0.02"), D("0.15")),
        (D("1.01"), D("0.19"), D("1.20")),
        (D("0.13"), D("0.02"), D("0.15")),
        (D("1.00"), D("0.19"), D("1.19")),
        (D("1.50"), D("0.29"), D("1.79")),
        (D("3.50"), D("0.25"), D("3.75")),
        (D("-0.13"), D("-0.02"), D("-0.15")),
    ]
    assert (invoice["totalnet"], invoice["totaltax"], invoice["grandtotal"]) == (D("7.14"), D("0.94"), D("8.08"))
    assert_invariants(h)


def test_negative_total_is_a_credit(billing_sqlite):
    h = billing_sqlite
    credit_id, invoice_id = h.usage(
        dict(account="10001", title="credit note", quantity=D("2"), unitprice=D("-50.00")),
        dict(account="10004", title="ordinary", quantity=D("1"), unitprice=D("10.00")),
    )
    report = h.run("Usage")
    credit = h.get("Invoice", h.get("Usage__c", credit_id)["on_invoice__c"])
    assert (credit["class"], credit["totalnet"], credit["totaltax"], credit["grandtotal"]) == (
        "Credit", D("-100.00"), D("-19.00"), D("-119.00"))
    assert h.get("Invoice", h.get("Usage__c", invoice_id)["on_invoice__c"])["class"] == "Invoice"
    run = h.get("InvoiceRun", report.run_id)
    assert (run["numinvoices"], run["numpositiveinvoices"], run["numnegativeinvoices"]) == (2, 1, 1)


def test_no_matching_tax_rule_is_an_error_of_the_group(billing_sqlite):
    h = billing_sqlite
    bad, good = h.usage(
        dict(account="10001", title="unknown region", region="MARS"),
        dict(account="10004", title="fine"),
        unitprice=D("10.00"),
    )
    report = h.run("Usage")
    assert failures(report) == {bad: "no tax rule matches (Invoice.BusinessEntity='DE01', Invoice.Region='MARS', "
                                     "Invoice.BillingCountryCode='DE')"}
    assert h.get("Usage__c", good)["on_invoice__c"] is not None


@pytest.fixture(scope="module")
def per_tax_group_model(tmp_path_factory):
    org = make_test_org(tmp_path_factory.mktemp("rounding") / "org")
    Replace("custom_settings/GlobalSettings.yaml", "RoundingMode: PerLine", "RoundingMode: PerTaxGroup").apply(org)
    result = load_project(org)
    assert result.ok, [str(d) for d in result.errors]
    return org, result.model


def test_rounding_mode_per_tax_group(per_tax_group_model, sqlite_url, make_harness, billing_sqlite):
    """Three lines of 0.02 at 19 %: per line each tax rounds to 0.00; per tax
    group the tax is round(0.06 x 19 %) = 0.01, booked on one line."""
    org, model = per_tax_group_model
    rows = [dict(account="10001", title=f"l{i}", unitprice=D("0.02")) for i in range(3)]
    per_line = billing_sqlite
    per_line.usage(*rows)
    line_invoice = per_line.get("Invoice", only(per_line.run("Usage").invoices).id)
    assert (line_invoice["totaltax"], line_invoice["grandtotal"]) == (D("0.00"), D("0.06"))

    per_group = make_harness(sqlite_url.replace("metabill.db", "per-group.db"), model, org)
    per_group.usage(*rows)
    invoice = per_group.get("Invoice", only(per_group.run("Usage").invoices).id)
    assert (invoice["totalnet"], invoice["totaltax"], invoice["grandtotal"]) == (D("0.06"), D("0.01"), D("0.07"))
    assert sorted(l["postotaltax"] for l in per_group.lines(invoice["id"])) == [D("0.00"), D("0.00"), D("0.01")]
    assert_invariants(per_group)


def test_every_invoice_of_the_sample_year_sums_its_lines(sample):
    report = sample.run(*SAMPLE_FILTERS)
    assert report.invoice_count == 7
    assert_invariants(sample)


# --- one record never stops billing for everyone (issue 14) ----------------------------


def test_a_line_amount_beyond_its_column_is_that_records_error(billing):
    """Quantity and price each fit their columns, their product does not fit
    the line's Currency(16, 2): the record gets a named error, the others are
    billed and the run completes (it crashed with exit 3 before, leaving the
    run Running, and every rerun crashed the same way)."""
    h = billing
    huge, fine = h.usage(
        dict(account="10001", title="huge", quantity=D("999999999999"), unitprice=D("99999999999999")),
        dict(account="10004", title="fine", quantity=D("2"), unitprice=D("10.00")),
    )
    report = h.run("Usage")
    message = failures(report)[huge]
    assert message.startswith("InvoiceLineItem.PosTotalNet: ") and "does not fit" in message
    assert h.get("Usage__c", huge)["on_invoicebuilderror__c"] == message[:255]
    assert h.get("Usage__c", huge)["on_invoice__c"] is None
    billed = h.get("Invoice", h.get("Usage__c", fine)["on_invoice__c"])
    assert billed["grandtotal"] == D("23.80")
    assert h.get("InvoiceRun", report.run_id)["status"] == "Completed"
    assert_invariants(h)
    again = h.run("Usage")  # the rerun reports the record again and bills nothing twice
    assert list(failures(again)) == [huge] and again.invoice_count == 0
    assert h.get("InvoiceRun", again.run_id)["status"] == "Completed"


def test_a_group_with_one_oversized_line_fails_as_a_whole_and_others_are_billed(billing_sqlite):
    h = billing_sqlite
    a, b, other = h.usage(
        dict(account="10001", title="ok on the same invoice", unitprice=D("1.00")),
        dict(account="10001", title="too large", quantity=D("100000000"), unitprice=D("1000000")),
        dict(account="10004", title="another account", unitprice=D("5.00")),
    )
    report = h.run("Usage")
    assert set(failures(report)) == {a, b}  # one invoice: both records of the group
    assert h.get("Usage__c", other)["on_invoice__c"] is not None
    assert report.invoice_count == 1


@pytest.fixture(scope="module")
def formula_price_org(tmp_path_factory):
    """The test org with the usage's unit price computed by a formula."""
    org = make_test_org(tmp_path_factory.mktemp("formula") / "org")
    Replace("metadata/objects/Usage__c.yaml",
            "  ON_UnitPrice__c: {type: Currency, precision: 18, scale: 4, label: Unit Price}",
            "  Price__c: {type: Currency, precision: 18, scale: 4, label: Price}\n"
            "  ON_UnitPrice__c: {type: Formula, returns: Currency, expression: \"Price__c * Price__c\","
            " label: Unit Price}").apply(org)
    result = load_project(org)
    assert result.ok, [str(d) for d in result.errors]
    return org, result.model


def test_a_formula_result_beyond_its_column_is_that_records_error(formula_price_org, db_url, make_harness):
    org, model = formula_price_org
    h = make_harness(db_url, model, org)
    big, fine = h.insert("Usage__c", [
        {"on_account__c": "10001", "on_title__c": "square of 10^14", "price__c": D("99999999999999")},
        {"on_account__c": "10004", "on_title__c": "fine", "price__c": D("3")},
    ])
    report = h.run("Usage")
    assert "ON_UnitPrice__c" in failures(report)[big] and "digits before the decimal point" in failures(report)[big]
    assert h.get("Invoice", h.get("Usage__c", fine)["on_invoice__c"])["totalnet"] == D("9.00")
    assert h.get("InvoiceRun", report.run_id)["status"] == "Completed"
