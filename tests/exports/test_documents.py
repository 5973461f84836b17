"""Accounting documents created by the DATEV export: default mapping
(domain-spec §7.5) and the custom data transfer of seed 004 (BuCode__c from
the order to the invoice, the booking detail, the accounting document item
and the DATEV BU-Schlüssel column)."""

from __future__ import annotations

import csv
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.booking.postings import counter_account
from engine.exports.accounting_documents import custom_copies, transfer_documents
from engine.exports.datev import DatevExportError

from config.orgcopy import InsertAfter, copy_org

from .helpers import datev_export, datev_records
from contexts import context
from databases import load_model


def test_documents_default_mapping(demo):
    _, report = datev_export(demo)
    documents = demo.rows("AccountingDocument")
    items = demo.rows("AccountingDocumentItem")
    details = {d["id"]: d for d in demo.rows("BookingDetail")}
    exported = {i for i, d in details.items() if d["exported"]}
    # 1:1 with the exported details, one document per invoice
    assert sorted(i["bookingdetail"] for i in items) == sorted(exported)
    assert len(documents) == len({details[i]["invoice"] for i in exported}) == report.documents == 7
    per_document = Counter(i["accountingdocument"] for i in items)
    assert sorted(per_document.values()) == [1, 2, 2, 2, 2, 3, 4]  # INV-2024-00006 .. INV-2024-00005
    by_id = {d["id"]: d for d in documents}
    for item in items:
        detail = details[item["bookingdetail"]]
        document = by_id[item["accountingdocument"]]
        assert document["invoice"] == detail["invoice"]
        assert {k: document[k] for k in ("invoiceid", "documentdate", "customername", "customercity", "iban",
                                         "swiftcode", "vatid", "currencyisocode", "bookingperiod")} == {
            "invoiceid": detail["invoiceno"], "documentdate": detail["bookingdate"],
            "customername": detail["accountname"], "customercity": detail["billingcity"],
            "iban": detail["iban"], "swiftcode": detail["bic"], "vatid": detail["vatid"],
            "currencyisocode": detail["currencyisocode"], "bookingperiod": detail["bookingperiod"],
        }
        assert (document["type"], document["status"], document["locked"]) == (
            "Accounts Receivable Ledger", "Transferred", True)
        assert document["transferredat"] is not None
        assert {k: item[k] for k in ("amount", "accountno", "contraaccountno", "accountingdate", "deliverydate",
                                     "tax", "taxcode", "bookingtext")} == {
            "amount": detail["amount"], "accountno": detail["accountno"],
            "contraaccountno": counter_account(detail), "accountingdate": detail["bookingdate"],
            "deliverydate": detail["originalbookingdate"], "tax": detail["taxrate"],
            "taxcode": detail["taxcode"], "bookingtext": detail["bookingtext"],
        }
    nordlicht = next(d for d in documents if d["invoiceid"] == "INV-2024-00008")
    assert nordlicht["iban"] and nordlicht["customername"] == "Nordlicht Logistik GmbH"


def test_transfer_documents_alone(demo_sqlite):
    demo = demo_sqlite
    table = demo.table("BookingDetail")
    with demo.engine.begin() as conn:
        details = [dict(r._mapping) for r in conn.execute(
            sa.select(table).where(table.c.invoiceno == "INV-2024-00005").order_by(table.c.id))]
        result = transfer_documents(conn, context(demo.model), details)
    assert (result.documents, result.items) == (1, 4)
    # custom copy: PurchaseOrderNo__c is on BookingDetail but on neither document object
    detail_obj = demo.model.require("BookingDetail")
    assert custom_copies(detail_obj, demo.model.require("AccountingDocumentItem")) == ()


BU_FIELD = "  BuCode__c: {type: Text, length: 4, label: DATEV BU-Schlüssel}"


@pytest.fixture
def bucode_org(tmp_path):
    """The sample org with the seed 004 chain ON_BuCode__c (Order) -> BuCode__c
    (Invoice, BookingDetail, AccountingDocumentItem) and the order
    ORD-2024-001 carrying BU-Schlüssel 40."""
    org = copy_org(tmp_path / "org", with_data=True)
    InsertAfter("metadata/objects/Order.yaml", "fields:",
                "  ON_BuCode__c: {type: Text, length: 4, label: BU-Schlüssel (Invoice)}").apply(org)
    for object_name in ("Invoice", "BookingDetail", "AccountingDocumentItem"):
        InsertAfter(f"metadata/objects/{object_name}.yaml", "fields:", BU_FIELD).apply(org)
    path = org / "data/05_Order.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    rows[0].append("ON_BuCode__c")
    for row in rows[1:]:
        row.append("40" if row[1] == "ORD-2024-001" else "")
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return org


def test_bucode_chain(db_url, bucode_org, make_demo):
    model = load_model(bucode_org)
    demo = make_demo(db_url, model, bucode_org / "data")  # migrate, load, run, finalize
    invoice = demo.table("Invoice")
    (billed,) = demo.rows("Invoice", invoice.c.bucode__c == "40")
    assert billed["purchaseorderno__c"] == "PO-4650"  # ORD-2024-001
    number = billed["name"]
    detail = demo.table("BookingDetail")
    coded = demo.rows("BookingDetail", detail.c.invoice == billed["id"])
    assert len(coded) == 4 and {d["bucode__c"] for d in coded} == {"40"}
    assert {d["bucode__c"] for d in demo.rows("BookingDetail", detail.c.invoice != billed["id"])} == {None}

    data, report = datev_export(demo)
    assert report.exported == 16
    items = {i["bookingdetail"]: i for i in demo.rows("AccountingDocumentItem")}
    assert {items[d["id"]]["bucode__c"] for d in coded} == {"40"}
    assert {i["bucode__c"] for k, i in items.items() if k not in {d["id"] for d in coded}} == {None}
    records = datev_records(data)
    assert [r["BU-Schlüssel"] for r in records if r["Belegfeld 1"] == number] == ["40"] * 4
    assert {r["BU-Schlüssel"] for r in records if r["Belegfeld 1"] != number} == {""}
    assert f'"40";{billed["date"]:%d%m};"{number}"' in data.decode("cp1252")  # a quoted text field


def test_copied_value_too_long_is_reported(tmp_path, make_demo):
    """A custom field copied to a shorter field of the same type: the detail is
    not exported (rather than cut or failing the whole export)."""
    org = copy_org(tmp_path / "org")
    InsertAfter("metadata/objects/BookingDetail.yaml", "fields:",
                "  Note__c: {type: Text, length: 20, label: Note}").apply(org)
    InsertAfter("metadata/objects/AccountingDocumentItem.yaml", "fields:",
                "  Note__c: {type: Text, length: 3, label: Note}").apply(org)
    model = load_model(org)
    demo = make_demo(f"sqlite:///{tmp_path / 'demo.db'}", model)
    (long_note,) = demo.insert_details({"accountno": "8400", "bpaccountno": "10001", "amount": Decimal("5.00"),
                                        "invoiceno": "INV-X-9", "note__c": "too long"})
    _, report = datev_export(demo)
    assert "AccountingDocumentItem.Note__c" in next(e for e in report.excluded if e.detail_id == long_note).reason
    table = demo.table("BookingDetail")
    with demo.engine.begin() as conn, pytest.raises(DatevExportError, match="Note__c"):
        rows = [dict(r._mapping) for r in conn.execute(sa.select(table).where(table.c.id == long_note))]
        transfer_documents(conn, context(demo.model), rows)
