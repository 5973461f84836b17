"""Custom data transfer to booking details (domain-spec §5.8): a ``__c``
field with the same name and type on Invoice (or InvoiceLineItem) and
BookingDetail is copied to the booking details; a line value wins over the
invoice value; different line values are part of the aggregation key, so
each booking detail has a single value.

The sample org has ``PurchaseOrderNo__c`` on Invoice and BookingDetail,
filled from ``Order.ON_PurchaseOrderNo__c`` (= PoNumber). The variant adds it
to InvoiceLineItem too, filled from a line-level ON field of the order
product.
"""

from __future__ import annotations

from datetime import date

import pytest

from engine.booking.invoices import copied_fields

from config.orgcopy import InsertAfter

from .helpers import Books, D, assert_books_balance, load_model, org_variant
from contexts import context

LINE_PO_EDITS = (
    InsertAfter("metadata/objects/InvoiceLineItem.yaml", "fields:",
                "  PurchaseOrderNo__c: {type: Text, length: 80, label: Purchase Order No. (Line)}"),
    InsertAfter("metadata/objects/OrderItem.yaml", "fields:",
                "  ON_PurchaseOrderNo__c: {type: Text, length: 80, label: Purchase Order No. (Invoice Line)}"),
)


@pytest.fixture(scope="module")
def line_po_org(tmp_path_factory):
    org = org_variant(tmp_path_factory.mktemp("linepo") / "org", *LINE_PO_EDITS)
    return org, load_model(org)


def po_of(books: Books, invoice_name: str) -> list[tuple]:
    return [(d["type"], d["taxcode"], d["amount"], d["purchaseorderno__c"]) for d in books.details_of(invoice_name)]


def set_line_po(books: Books, **values: str) -> None:
    items = books.t("OrderItem")
    with books.engine.begin() as conn:
        for number, value in values.items():
            conn.execute(items.update().where(items.c.orderitemnumber == number.replace("_", "-"))
                         .values(on_purchaseorderno__c=value))


def test_the_copied_fields_of_the_sample_org(sample_model, line_po_org):
    assert copied_fields(context(sample_model)) == (("Invoice", "purchaseorderno__c"),)
    _, model = line_po_org
    assert set(copied_fields(context(model))) == {("InvoiceLineItem", "purchaseorderno__c"), ("Invoice", "purchaseorderno__c")}


def test_invoice_field_reaches_every_booking_detail(books):
    books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 2, 29), today=date(2024, 2, 29))
    with_po, without_po = "INV-2024-00001", "INV-2024-00002"
    assert books.invoice(with_po)["purchaseorderno__c"] == "PO-4650"
    assert po_of(books, with_po) == [
        ("Revenue", "DE_19", D("960.00"), "PO-4650"), ("Revenue", "DE_7", D("99.80"), "PO-4650"),
        ("Tax", "DE_19", D("182.40"), "PO-4650"), ("Tax", "DE_7", D("6.99"), "PO-4650"),
    ]
    assert books.invoice(without_po)["purchaseorderno__c"] is None
    assert po_of(books, without_po) == [("Revenue", "RC", D("1550.00"), None)]
    # A cancellation's reversals carry the value of the booking they reverse.
    cancellation = books.cancel(with_po, date(2024, 3, 1))
    assert {d["purchaseorderno__c"] for d in books.details_of(cancellation)} == {"PO-4650"}
    assert_books_balance(books)


def test_final_invoice_and_cost_object(books_sqlite):
    """The project order's PO and the order products' cost object (a line ON
    field copied to InvoiceLineItem.CostObject) reach the final invoice's
    bookings."""
    books = books_sqlite
    for number in (7, 8, 9):
        books.bill_month(("Order Sub Invoice", "Order Invoice"), 2024, number)
    final = books.invoices(books.t("Invoice").c.type == "Final")[0]
    assert final["purchaseorderno__c"] == "NL-2024-088"
    assert [(d["type"], d["purchaseorderno__c"], d["costobject"]) for d in books.details_of(final["name"])] == [
        ("Revenue", "NL-2024-088", "P-2024-021"), ("Tax", "NL-2024-088", None)]


def test_payment_bookings_of_the_invoice_carry_the_field(books_sqlite):
    books = books_sqlite
    books.bill_month(("Order Invoice",), 2024, 1)
    books.pay("INV-2024-00001", "1249.19", date(2024, 2, 5))
    assert {d["type"]: d["purchaseorderno__c"] for d in books.details_of("INV-2024-00001")}["Payment"] == "PO-4650"


def test_line_value_wins_over_the_invoice_value(line_po_org, db_url, make_books):
    org, model = line_po_org
    books = make_books(db_url, model, org)
    set_line_po(books, ORD_2024_001_2="PO-LINE-7")
    books.bill_month(("Order Invoice",), 2024, 1)
    assert [l["purchaseorderno__c"] for l in books.lines("INV-2024-00001")] == [None, "PO-LINE-7"]
    assert po_of(books, "INV-2024-00001") == [
        ("Revenue", "DE_19", D("960.00"), "PO-4650"), ("Revenue", "DE_7", D("99.80"), "PO-LINE-7"),
        ("Tax", "DE_19", D("182.40"), "PO-4650"), ("Tax", "DE_7", D("6.99"), "PO-LINE-7"),
    ]


def test_different_line_values_split_aggregated_details(line_po_org, db_url, make_books):
    """ORD-2024-002 has two reverse-charge lines, normally one booking of
    1550.00; different line values give one booking per value."""
    org, model = line_po_org
    books = make_books(db_url, model, org)
    set_line_po(books, ORD_2024_002_1="PO-A", ORD_2024_002_2="PO-B")
    set_line_po(books, ORD_2024_001_1="PO-C", ORD_2024_001_2="PO-C")
    books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 2, 29), today=date(2024, 2, 29))
    rc = books.details_of("INV-2024-00002")
    assert sorted((d["amount"], d["invoicelineitems"].count(",")) for d in rc) == [(D("350.00"), 0), (D("1200.00"), 0)]
    # Equal values keep the usual aggregation (one Revenue per tax code).
    assert [(d["type"], d["taxcode"], d["amount"]) for d in books.details_of("INV-2024-00001")] == [
        ("Revenue", "DE_19", D("960.00")), ("Revenue", "DE_7", D("99.80")),
        ("Tax", "DE_19", D("182.40")), ("Tax", "DE_7", D("6.99"))]
    assert_books_balance(books)


def test_split_details_carry_their_own_value(line_po_org, sqlite_url, make_books):
    org, model = line_po_org
    books = make_books(sqlite_url, model, org)
    set_line_po(books, ORD_2024_002_1="PO-A", ORD_2024_002_2="PO-B")
    books.bill_month(("Order Invoice",), 2024, 2)
    assert sorted((d["amount"], d["purchaseorderno__c"]) for d in books.details_of("INV-2024-00001")) == [
        (D("350.00"), "PO-B"), (D("1200.00"), "PO-A")]
