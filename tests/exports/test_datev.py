"""The DATEV EXTF Buchungsstapel on the demo data: golden file, header,
exclusions, export-once semantics, transaction, defused text."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.booking.postings import sides
from engine.exports.datev import (
    COLUMNS,
    INTERIM_TYPES,
    DatevParameterError,
    DatevParams,
    export_datev,
    params_from_setting,
)

from .conftest import CREATED, PARAMS
from .helpers import check_golden, datev_export, datev_lines, datev_records
from contexts import context

EXPORTED = 16  # 23 details: 6 interim revenue and the CHF invoice's revenue stay behind
EXCLUDED = 7


def test_datev_golden(demo):
    data, report = datev_export(demo)
    check_golden("EXTF_Buchungsstapel.csv", data)
    assert (report.exported, len(report.excluded), report.documents, report.items) == (EXPORTED, EXCLUDED, 7, 16)
    assert (report.date_from, report.date_to) == (date(2024, 6, 10), date(2024, 9, 30))


def test_datev_file_layout(demo_sqlite):
    data, _ = datev_export(demo_sqlite)
    raw = data.decode("cp1252").split("\r\n")
    assert raw[-1] == "" and all("\n" not in line for line in raw)
    assert raw[0] == (
        '"EXTF";700;21;"Buchungsstapel";13;20241001120000123;;"MB";"metabill";"";29098;55003;20240101;4;'
        '20240610;20240930;"metabill Buchungsstapel";"";1;0;0;"EUR";;"";;;"03";;;"";""'
    )
    lines = datev_lines(data)
    assert len(lines[0]) == 31
    assert tuple(lines[1]) == COLUMNS and len(COLUMNS) == 125
    assert all(len(cells) == 125 for cells in lines[2:])
    assert "Erlös".encode("cp1252") in data  # Windows-1252, not UTF-8
    assert "Erlös".encode("utf-8") not in data


def test_datev_lines_follow_sides(demo_sqlite):
    demo = demo_sqlite
    data, _ = datev_export(demo)
    details = {(d["invoiceno"], d["accountno"], abs(d["amount"])): d for d in demo.rows("BookingDetail")}
    records = datev_records(data)
    assert len(records) == EXPORTED
    for record in records:
        amount = Decimal(record["Umsatz (ohne Soll/Haben-Kz)"].replace(",", "."))
        detail = details[(record["Belegfeld 1"], record["Konto"], amount)]
        debit, credit = sides(detail)
        konto_debited = record["Soll/Haben-Kennzeichen"] == "S"
        assert (debit, credit) == ((record["Konto"], record["Gegenkonto (ohne BU-Schlüssel)"]) if konto_debited
                                   else (record["Gegenkonto (ohne BU-Schlüssel)"], record["Konto"]))
        assert record["Belegdatum"] == detail["bookingdate"].strftime("%d%m")
        assert record["WKZ Umsatz"] == "EUR" and record["BU-Schlüssel"] == ""
        assert record["Buchungstext"] == detail["bookingtext"][:60]
    final = [r for r in records if r["Belegfeld 1"] == "INV-2024-00009"]
    assert [(r["Konto"], r["Gegenkonto (ohne BU-Schlüssel)"], r["Soll/Haben-Kennzeichen"],
             r["Umsatz (ohne Soll/Haben-Kz)"]) for r in final] == [
        ("8400", "10001", "H", "10000,00"),
        ("8400", "10001", "S", "5800,00"),  # the deducted partial invoice: revenue debited
        ("1776", "10001", "H", "798,00"),
    ]


def test_interim_types_excluded_and_reported(demo):
    extra = demo.insert_details(
        {"type": "Interim Payment", "accountno": "1718", "contraaccountno": "1593", "bpaccountno": "10001",
         "amount": Decimal("1000.00"), "invoiceno": "INV-2024-00004"},
        {"type": "Interim Tax", "accountno": "1776", "contraaccountno": "1593", "bpaccountno": "10001",
         "amount": Decimal("190.00"), "invoiceno": "INV-2024-00004"},
        {"type": "Interim Payment Clearing", "accountno": "1718", "bpaccountno": "10001",
         "amount": Decimal("1000.00"), "invoiceno": "INV-2024-00010"},
    )
    data, report = datev_export(demo)
    interim = [e for e in report.excluded if e.type in INTERIM_TYPES]
    assert {e.type for e in interim} == INTERIM_TYPES
    assert len(interim) == 6 + 3
    assert all("progress invoice" in e.reason and "seed 003" in e.reason for e in interim)
    assert set(extra) <= {e.detail_id for e in interim}
    detail = demo.table("BookingDetail")
    for row in demo.rows("BookingDetail", detail.c.type.in_(sorted(INTERIM_TYPES))):
        assert row["exported"] is False and row["exportdestination"] is None
    item_details = {i["bookingdetail"] for i in demo.rows("AccountingDocumentItem")}
    assert not item_details & {e.detail_id for e in report.excluded}
    assert not [r for r in datev_records(data) if r["Konto"] in ("1593", "1718")]
    chf = [e for e in report.excluded if e.type not in INTERIM_TYPES]
    assert [(e.invoice_no, e.amount) for e in chf] == [("INV-2024-00007", Decimal("2300.00"))]
    assert "CHF" in chf[0].reason and "Kurs" in chf[0].reason


def test_exported_twice_and_forced(demo):
    first, report = datev_export(demo)
    detail = demo.table("BookingDetail")
    marked = demo.rows("BookingDetail", detail.c.exported == sa.true())
    assert len(marked) == EXPORTED and {r["exportdestination"] for r in marked} == {"DATEV"}
    documents, items = demo.rows("AccountingDocument"), demo.rows("AccountingDocumentItem")

    again, report = datev_export(demo)
    assert (report.exported, report.already_exported, report.documents, report.items) == (0, EXPORTED, 0, 0)
    assert datev_records(again) == []
    assert len(report.excluded) == EXCLUDED  # still listed: they are never exported

    forced, report = datev_export(demo, force=True)
    assert (report.exported, report.documents, report.items) == (EXPORTED, 0, 0)
    assert forced == first  # same details, same lines, same (injected) timestamp
    # Re-exporting does not duplicate the documents: still one item per detail.
    assert demo.rows("AccountingDocument") == documents
    assert demo.rows("AccountingDocumentItem") == items


def test_export_is_one_transaction(demo_sqlite):
    demo = demo_sqlite

    class Broken(io.BytesIO):
        def write(self, data):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with demo.engine.begin() as conn:
            export_datev(conn, context(demo.model), Broken(), PARAMS, created=CREATED)
    detail = demo.table("BookingDetail")
    assert demo.rows("BookingDetail", detail.c.exported == sa.true()) == []
    assert demo.rows("AccountingDocument") == [] and demo.rows("AccountingDocumentItem") == []
    _, report = datev_export(demo)
    assert report.exported == EXPORTED


def test_date_range_and_fiscal_year(demo_sqlite):
    demo = demo_sqlite
    september = DatevParams(**{**PARAMS.__dict__, "date_from": date(2024, 9, 1), "date_to": date(2024, 9, 30)})
    data, report = datev_export(demo, september)
    assert datev_lines(data)[0][14:16] == ["20240901", "20240930"]
    assert report.exported == 14 and {r["Belegdatum"] for r in datev_records(data)} == {"3009"}
    june = [r for r in demo.rows("BookingDetail") if r["bookingdate"] == date(2024, 6, 10)]
    assert {r["exported"] for r in june} == {False}

    next_year = DatevParams(**{**PARAMS.__dict__, "fiscal_year_start": date(2025, 1, 1)})
    data, report = datev_export(demo, next_year)
    assert report.exported == 0 and report.excluded == []
    assert datev_lines(data)[0][12:16] == ["20250101", "4", "20250101", "20251231"]


def test_formula_injection_defused(demo_sqlite):
    demo = demo_sqlite
    hostile = '=HYPERLINK("http://evil.example","Rechnung")'
    good, bad = demo.insert_details(
        {"accountno": "8400", "bpaccountno": "10001", "amount": Decimal("100.00"), "invoiceno": "INV-X-1",
         "bookingtext": hostile, "accountname": hostile},
        # AccountNo holds 20 characters (PostgreSQL refuses more, and so does SQLite now).
        {"accountno": '=HYPERLINK("a","b")', "bpaccountno": "10001", "amount": Decimal("100.00"), "invoiceno": "INV-X-2"},
    )
    data, report = datev_export(demo)
    text = data.decode("cp1252")
    assert '"\'=HYPERLINK(""http://evil.example"",""Rechnung"")"' in text
    assert ";=" not in text and ';"=' not in text
    record = next(r for r in datev_records(data) if r["Belegfeld 1"] == "INV-X-1")
    assert record["Buchungstext"] == "'" + hostile
    rejected = next(e for e in report.excluded if e.detail_id == bad)
    assert "not a DATEV account number" in rejected.reason
    # A leading + or - would be a formula too, and DATEV does not take a quote in Belegfeld 1.
    (formula_no,) = demo.insert_details(
        {"accountno": "8400", "bpaccountno": "10001", "amount": Decimal("1.00"), "invoiceno": "-1+1"})
    _, report = datev_export(demo)
    assert "Belegfeld 1" in next(e for e in report.excluded if e.detail_id == formula_no).reason


def test_other_exclusions(demo_sqlite):
    demo = demo_sqlite
    long_account, zero, same = demo.insert_details(
        {"accountno": "840000", "bpaccountno": "10001", "amount": Decimal("1.00"), "invoiceno": "INV-X-3"},
        {"accountno": "8400", "bpaccountno": "10001", "amount": Decimal("0.00"), "invoiceno": "INV-X-4"},
        {"accountno": "10001", "bpaccountno": "10001", "amount": Decimal("1.00"), "invoiceno": "INV-X-5"},
    )
    _, report = datev_export(demo)
    reasons = {e.detail_id: e.reason for e in report.excluded}
    assert "at most 5" in reasons[long_account]
    assert reasons[zero] == "zero amount"
    assert "both 10001" in reasons[same]


def test_parameters():
    with pytest.raises(DatevParameterError, match="1001..9999999"):
        DatevParams(consultant=999, client=1, fiscal_year_start=date(2024, 1, 1), account_length=4).validate()
    with pytest.raises(DatevParameterError, match="outside the fiscal year"):
        DatevParams(**{**PARAMS.__dict__, "date_to": date(2025, 1, 1)}).validate()


def test_parameters_from_setting(sample_model):
    # The sample org's DATEV export setting carries the parameters as product fields.
    params = params_from_setting(context(sample_model))
    assert (params.consultant, params.client, params.fiscal_year_start, params.account_length) == (
        29098, 55003, date(2024, 1, 1), 4)
    assert params_from_setting(context(sample_model), "DATEV Booking Detail CSV", client=7).client == 7
    # A setting record without them, and no options: refused, naming the field.
    with pytest.raises(DatevParameterError, match="DatevConsultantNumber"):
        params_from_setting(context(sample_model), "SEPA Credit")
    given = params_from_setting(context(sample_model), "SEPA Credit", consultant=29098, client=55003,
                                fiscal_year_start=date(2024, 1, 1), account_length=4)
    assert given.consultant == 29098 and given.account_length == 4
