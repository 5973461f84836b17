"""The booking journal CSV on the demo data: golden file, order, filters,
direction from sides(), defused text cells."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from engine.booking.postings import sides
from engine.exports.journal import JOURNAL_COLUMNS, journal_rows

from .helpers import check_golden, datev_export, journal_text
from contexts import context


def _records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_journal_golden(demo):
    text = journal_text(demo)
    check_golden("journal.csv", text.encode("utf-8"))
    assert text.splitlines()[0] == ",".join(JOURNAL_COLUMNS)
    assert len(_records(text)) == len(demo.rows("BookingDetail"))


def test_journal_order_amounts_and_directions(demo_sqlite):
    demo = demo_sqlite
    details = {d["id"]: d for d in demo.rows("BookingDetail")}
    with demo.engine.connect() as conn:
        rows = list(journal_rows(conn, context(demo.model)))
    keys = [(r.booking_date, r.invoice_no or "", r.detail_id) for r in rows]
    assert keys == sorted(keys)
    for row in rows:
        assert (row.debit_account, row.credit_account) == sides(details[row.detail_id])
    records = _records(journal_text(demo))
    # Debit/credit carry the direction; Amount is absolute with two decimals.
    reversal = next(r for r in records if r["Type"] == "Revenue" and r["DebitAccount"] == "8400")
    assert reversal == {**reversal, "CreditAccount": "10001", "Amount": "5800.00", "InvoiceNo": "INV-2024-00009"}
    assert {r["TaxRate"] for r in records} == {"19", "7", "0"}  # every demo booking has a rate (reversals keep the reversed one)
    assert all(r["Amount"].count(".") == 1 and len(r["Amount"].split(".")[1]) == 2 for r in records)


def test_journal_filters(demo_sqlite):
    demo = demo_sqlite
    invoices = {i["name"]: i["id"] for i in demo.rows("Invoice")}
    only = _records(journal_text(demo, invoice_ids=[invoices["INV-2024-00005"], invoices["INV-2024-00011"]]))
    assert [(r["InvoiceNo"], r["Type"], r["AccountNo"]) for r in only] == [
        ("INV-2024-00011", "Revenue", "8400"),
        ("INV-2024-00011", "Tax", "1776"),
        ("INV-2024-00005", "Revenue", "8400"),
        ("INV-2024-00005", "Revenue", "8300"),
        ("INV-2024-00005", "Tax", "1776"),
        ("INV-2024-00005", "Tax", "1771"),
    ]
    assert _records(journal_text(demo, invoice_ids=[])) == []
    datev_export(demo)
    left = _records(journal_text(demo, only_unexported=True))
    assert sorted({r["Type"] for r in left}) == ["Interim Revenue", "Revenue"]
    assert {r["InvoiceNo"] for r in left if r["Type"] == "Revenue"} == {"INV-2024-00007"}  # the CHF invoice


def test_journal_defuses_text_cells_not_numbers(demo_sqlite):
    demo = demo_sqlite
    hostile = '=HYPERLINK("x","84")'  # AccountNo holds 20 characters
    demo.insert_details(
        {"accountno": hostile, "bpaccountno": "+4989", "accountrule": "@SUM(A1:A9)", "taxcode": "-DE",
         "invoiceno": "=1+1", "amount": Decimal("-1190.00"), "taxrate": Decimal("-1.5")},
    )
    rows = _records(journal_text(demo))
    (row,) = [r for r in rows if r["InvoiceNo"] == "'=1+1"]
    assert rows[0] is not row and rows.index(row) == 6  # sorted by the raw number "=1+1" among the 09-30 rows
    assert row == {
        "BookingDate": "2024-09-30",
        "Type": "Revenue",
        "AccountNo": "'" + hostile,
        "ContraAccountNo": "",
        "BpAccountNo": "'+4989",
        # negative revenue: the account is debited, the debtor credited
        "DebitAccount": "'" + hostile,
        "CreditAccount": "'+4989",
        "Amount": "1190.00",
        "TaxCode": "'-DE",
        "TaxRate": "-1.5",  # a number: not defused
        "AccountRule": "'@SUM(A1:A9)",
        "InvoiceNo": "'=1+1",
    }
