"""Controlling fields of the generic invoice run (domain-spec §2.3, §3.2,
docs/decisions.md "Controlling fields required by a filter").

Most cases use the test object ``Usage__c`` (plain controlling fields, filter
``Usage``; see helpers.py) on SQLite; the account resolution and write-back
case and the formula-driven sample filters also run on PostgreSQL.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal


from .helpers import D, failures, only

MARCH = dict(start=date(2024, 3, 1), end=date(2024, 3, 31))


def _invoice_of(h, usage_id: int) -> dict | None:
    billed = h.get("Usage__c", usage_id)["on_invoice__c"]
    return h.get("Invoice", billed) if billed else None


# --- ON_Account ---------------------------------------------------------------------------


def test_account_by_id_by_external_id_unknown_and_empty(billing):
    h = billing
    alpen, helvetia = h.account_id("10002"), h.account_id("10003")
    by_number, by_id, unknown, empty = h.usage(
        dict(account="10002", title="by account number", unitprice=D("100.00")),
        dict(account=str(helvetia), title="by id", unitprice=D("200.00")),
        dict(account="99999", title="unknown account", unitprice=D("300.00")),
        dict(account=None, title="no account", unitprice=D("400.00")),
    )
    report = h.run("Usage")
    usage = report.filters[0]
    assert (usage.records_read, usage.invoices, usage.lines) == (4, 2, 2)
    assert failures(report) == {
        unknown: "no account with id or AccountNumber '99999'",
        empty: "ON_Account__c is empty",
    }
    assert _invoice_of(h, by_number)["account"] == alpen
    assert _invoice_of(h, by_number)["accountname"] == "Alpenblick Hotel GmbH"
    assert _invoice_of(h, by_id)["account"] == helvetia
    # write-back: billed records point to their invoice, failed ones carry the
    # error, both the run; the others were billed although two records failed
    for record_id in (by_number, by_id):
        record = h.get("Usage__c", record_id)
        assert record["on_lastinvoicerun__c"] == report.run_id
        assert record["on_invoicebuilderror__c"] is None
    for record_id, message in failures(report).items():
        record = h.get("Usage__c", record_id)
        assert record["on_invoice__c"] is None
        assert record["on_lastinvoicerun__c"] == report.run_id
        assert record["on_invoicebuilderror__c"] == message
    run = h.get("InvoiceRun", report.run_id)
    assert run["status"] == "Completed"
    assert (run["numinvoices"], run["numpositiveinvoices"], run["errorcount"]) == (2, 2, 2)
    assert run["genericfilters"] == "Usage"


def test_account_id_from_formula_is_not_taken_for_an_account_number(sample_sqlite):
    h = sample_sqlite
    muster = h.account_id("10001")
    h.insert("Account", [{"name": "Kollision KG", "accountnumber": str(muster), "billingcountrycode": "DE"}])
    report = h.run("Order Invoice", start=date(2024, 1, 1), end=date(2024, 1, 31))
    invoice = h.get("Invoice", only(report.invoices).id)
    assert (invoice["account"], invoice["accountname"]) == (muster, "Muster GmbH")


# --- ON_Template ------------------------------------------------------------------------------


def test_template_by_name_default_and_unknown(billing_sqlite):
    h = billing_sqlite
    named, lower, default, unknown = h.usage(
        dict(template="Standardrechnung (DE)", title="named"),
        dict(template="standardrechnung (de)", title="named, other case"),
        dict(template=None, title="no template"),
        dict(template="Rechnung Spezial", title="unknown template"),
        account="10001", unitprice=D("10.00"),
    )
    report = h.run("Usage")
    assert failures(report) == {unknown: "unknown template 'Rechnung Spezial'"}
    german = _invoice_of(h, named)
    assert german["template"] == "Standardrechnung (DE)"
    assert _invoice_of(h, lower)["id"] == german["id"]  # same template, same group: one invoice
    assert [l["title"] for l in h.lines(german["id"])] == ["named", "named, other case"]
    assert _invoice_of(h, default)["template"] == "Default Invoice (EN)"  # the template marked Default
    assert report.filters[0].invoices == 2


# --- ON_ServiceDate ------------------------------------------------------------------------------


def test_service_date_selects_records_inside_the_period_bounds_included(billing_sqlite):
    h = billing_sqlite
    empty, first_day, last_day, before, after = h.usage(
        dict(servicedate=None, title="no date"),
        dict(servicedate=date(2024, 3, 1), title="first day"),
        dict(servicedate=date(2024, 3, 31), title="last day"),
        dict(servicedate=date(2024, 2, 29), title="February"),
        dict(servicedate=date(2024, 4, 1), title="April"),
        account="10001", unitprice=D("10.00"),
    )
    report = h.run("Usage", **MARCH)
    assert report.filters[0].records_read == 3
    invoice = only(report.invoices)
    assert [l["title"] for l in h.lines(invoice.id)] == ["no date", "first day", "last day"]
    for record_id in (before, after):  # not selected: not written back at all
        record = h.get("Usage__c", record_id)
        assert (record["on_invoice__c"], record["on_lastinvoicerun__c"], record["on_invoicebuilderror__c"]) == (
            None, None, None)
    april = h.run("Usage", start=date(2024, 4, 1), end=date(2024, 4, 30))
    assert [l["title"] for l in h.lines(only(april.invoices).id)] == ["April"]
    assert h.get("Usage__c", before)["on_invoice__c"] is None
    assert {h.get("Usage__c", i)["on_invoice__c"] for i in (empty, first_day, last_day)} == {invoice.id}


# --- ON_IsItem ------------------------------------------------------------------------------------


def test_is_item_false_is_skipped_in_single_object_mode(billing_sqlite):
    h = billing_sqlite
    item, not_item = h.usage(
        dict(isitem=True, title="item"),
        dict(isitem=False, title="not an item"),
        account="10001", unitprice=D("10.00"),
    )
    report = h.run("Usage")
    assert report.filters[0].records_read == 1
    assert [l["title"] for l in h.lines(only(report.invoices).id)] == ["item"]
    skipped = h.get("Usage__c", not_item)
    assert (skipped["on_invoice__c"], skipped["on_lastinvoicerun__c"], skipped["on_invoicebuilderror__c"]) == (
        None, None, None)


# --- ON_Type and ON_SubInvoiceAssignmentKey ---------------------------------------------------


def test_invoice_types_and_assignment_key(billing_sqlite):
    h = billing_sqlite
    ids = h.usage(
        dict(type="Partial", subinvoiceassignmentkey="P-1", title="partial"),
        dict(type="Progress", subinvoiceassignmentkey="P-2", title="progress"),
        dict(type="Final", subinvoiceassignmentkey="P-3", title="final"),
        dict(type=None, title="standard (empty type)"),
        dict(type="Standard", subinvoiceassignmentkey="ignored", title="standard (explicit)"),
        dict(type="Teilrechnung", title="invalid type"),
        dict(type="Cancelation", title="type the run never creates"),
        dict(type="Final", subinvoiceassignmentkey=None, title="final without key"),
        dict(type="Progress", subinvoiceassignmentkey="  ", title="progress with blank key"),
        account="10001", unitprice=D("10.00"),
    )
    report = h.run("Usage")
    assert failures(report) == {
        ids[5]: "ON_Type 'Teilrechnung' is not an invoice type the run creates",
        ids[6]: "ON_Type 'Cancelation' is not an invoice type the run creates",
        ids[7]: "a Final invoice needs ON_SubInvoiceAssignmentKey",
        ids[8]: "a Progress invoice needs ON_SubInvoiceAssignmentKey",
    }
    by_type = {inv["type"]: inv for inv in h.invoices()}
    assert sorted(by_type) == ["Final", "Partial", "Progress", "Standard"]
    assert by_type["Partial"]["subinvoiceassignmentkey"] == "P-1"
    assert by_type["Progress"]["subinvoiceassignmentkey"] == "P-2"
    assert by_type["Final"]["subinvoiceassignmentkey"] == "P-3"
    # a final invoice without sub invoices has only its own lines
    assert [(l["title"], l["isdeduction"]) for l in h.lines(by_type["Final"]["id"])] == [("final", False)]
    standard = by_type["Standard"]
    assert standard["subinvoiceassignmentkey"] is None  # the key only matters for sub and final invoices
    assert [l["title"] for l in h.lines(standard["id"])] == ["standard (empty type)", "standard (explicit)"]


def test_final_is_not_built_before_its_sub_invoice_of_the_same_run(billing_sqlite):
    h = billing_sqlite
    sub, final = h.usage(
        dict(title="Abschlag", type="Progress", subinvoiceassignmentkey="K-1", unitprice=D("100.00")),
        dict(title="Schlussrechnung", type="Final", subinvoiceassignmentkey="K-1", unitprice=D("300.00")),
        account="10001",
    )
    report = h.run("Usage")
    assert h.get("Usage__c", sub)["on_invoice__c"] is not None
    assert h.get("Usage__c", final)["on_invoice__c"] is None
    assert "still drafts" in failures(report)[final]


# --- ON_InvoiceCriterion --------------------------------------------------------------------------


def test_invoice_criterion_splits_one_accounts_records(billing_sqlite):
    """The documented example: criteria A, A, B -> two invoices (A: 2 lines, B: 1)."""
    h = billing_sqlite
    a1, a2, b, none = h.usage(
        dict(invoicecriterion="A", title="a1"),
        dict(invoicecriterion="A", title="a2"),
        dict(invoicecriterion="B", title="b"),
        dict(invoicecriterion=None, title="none"),
        account="10001", unitprice=D("10.00"),
    )
    report = h.run("Usage")
    assert report.filters[0].invoices == 3
    titles = sorted(tuple(l["title"] for l in h.lines(inv["id"])) for inv in h.invoices())
    assert titles == [("a1", "a2"), ("b",), ("none",)]
    assert _invoice_of(h, a1)["id"] == _invoice_of(h, a2)["id"] != _invoice_of(h, b)["id"]


def test_invoice_criterion_on_partial_deliveries(billing_sqlite):
    """Without a criterion a year's run merges the two deliveries of one order
    (same account, type and assignment key) into one sub invoice; different
    criteria keep them apart."""
    h = billing_sqlite
    pd = {r["deliverynumber__c"]: r["id"] for r in h.select("Partial_Delivery__c")}
    h.update("Partial_Delivery__c", pd["PD-101-1"], on_invoicecriterion__c="Lieferung 1")
    h.update("Partial_Delivery__c", pd["PD-101-2"], on_invoicecriterion__c="Lieferung 2")
    report = h.run("Order Sub Invoice")
    by_key = {}
    for inv in h.invoices():
        by_key.setdefault(inv["subinvoiceassignmentkey"], []).append([l["title"] for l in h.lines(inv["id"])])
    assert sorted(by_key["ORD-2024-101"]) == [["Förderband-Modul"], ["Montage und Inbetriebnahme"]]
    assert by_key["ORD-2024-102"] == [["Abschlag 1: Konzeption", "Abschlag 2: Umsetzung"]]
    assert report.filters[0].invoices == 3


def test_invoice_criterion_on_child_records_splits_the_parent(billing_sqlite):
    h = billing_sqlite
    items = {r["orderitemnumber"]: r["id"] for r in h.select("OrderItem")}
    h.update("OrderItem", items["ORD-2024-001-1"], on_invoicecriterion__c="Beratung")
    h.update("OrderItem", items["ORD-2024-001-2"], on_invoicecriterion__c="Literatur")
    report = h.run("Order Invoice", start=date(2024, 1, 1), end=date(2024, 1, 31))
    titles = sorted(tuple(l["title"] for l in h.lines(s.id)) for s in report.invoices)
    assert titles == [("Beratung Rechnungsprozesse (Stunden)",), ("Fachbuch Rechnungswesen",)]


# --- ON_Title, ON_Quantity, ON_UnitPrice ----------------------------------------------------------


def test_title_quantity_default_and_unit_price(billing_sqlite):
    h = billing_sqlite
    ids = h.usage(
        dict(title="no quantity", quantity=None, unitprice=D("12.3400")),
        dict(title="fractional quantity", quantity=D("2.5"), unitprice=D("10.0000")),
        dict(title="free of charge", quantity=D("3"), unitprice=D("0")),
        dict(title=None, quantity=D("1"), unitprice=D("5")),
        dict(title="no unit price", quantity=D("1"), unitprice=None),
        account="10001",
    )
    report = h.run("Usage")
    assert failures(report) == {ids[3]: "ON_Title__c is empty", ids[4]: "ON_UnitPrice__c is empty"}
    lines = h.lines(only(report.invoices).id)
    assert [(l["title"], l["quantity"], l["unitprice"], l["postotalnet"]) for l in lines] == [
        ("no quantity", D("1"), D("12.34"), D("12.34")),
        ("fractional quantity", D("2.5"), D("10"), D("25.00")),
        ("free of charge", D("3"), D("0"), D("0.00")),
    ]
    assert [l["sequence"] for l in lines] == [1, 2, 3]
    assert [l["sourcerecordid"] for l in lines] == [str(i) for i in ids[:3]]
    assert {l["sourceobject"] for l in lines} == {"Usage__c"}


# --- formulas as controlling fields (the sample org's filters) ----------------------------------


def test_formula_controlling_fields_of_the_sample_orders(sample):
    """Order: ON_Account__c = AccountId, ON_Template__c by billing country,
    ON_ServiceDate__c = EffectiveDate; OrderItem: ON_Quantity__c = Quantity,
    ON_UnitPrice__c = UnitPrice. Only the February order is in February."""
    h = sample
    report = h.run("Order Invoice", start=date(2024, 2, 1), end=date(2024, 2, 29))
    assert report.filters[0].records_read == 1
    invoice = h.get("Invoice", only(report.invoices).id)
    order = h.by_field("Order", "OrderNumber", "ORD-2024-002")
    assert invoice["account"] == order["accountid"] == h.account_id("10002")
    assert invoice["template"] == "Default Invoice (EN)"  # Austria: not DE
    assert invoice["type"] == "Standard"
    assert [(l["title"], l["quantity"], l["unitprice"], l["postotalnet"]) for l in h.lines(invoice["id"])] == [
        ("Software licence Standard 2024", D("1"), D("1200"), D("1200.00")),
        ("Setup fee", D("1"), D("350"), D("350.00")),
    ]
    assert h.get("Order", order["id"])["on_invoice__c"] == invoice["id"]


def test_formula_paths_through_lookups_and_filter_condition(sample):
    """Partial deliveries reach account, template and key through Order__r;
    the filter condition Order__r.Status = 'Activated' excludes deliveries of
    an order that is not activated."""
    h = sample
    july = dict(start=date(2024, 7, 1), end=date(2024, 7, 31))
    order = h.by_field("Order", "OrderNumber", "ORD-2024-102")
    h.update("Order", order["id"], status="Draft")
    assert h.run("Order Sub Invoice", **july).invoice_count == 0
    h.update("Order", order["id"], status="Activated")
    report = h.run("Order Sub Invoice", **july)
    assert report.joined_existing  # same period and filters: the first run, now billing the delivery
    invoice = h.get("Invoice", only(report.invoices).id)
    assert invoice["account"] == h.account_id("10004")
    assert invoice["template"] == "Standardrechnung (DE)"
    assert (invoice["type"], invoice["subinvoiceassignmentkey"]) == ("Progress", "ORD-2024-102")
    line = only(h.lines(invoice["id"]))
    assert (line["title"], line["quantity"], line["unitprice"]) == ("Abschlag 1: Konzeption", D("1"), D("3600"))
    assert isinstance(line["postotalnet"], Decimal) and line["postotalnet"] == D("3600.00")
