"""Hostile input, checked where it enters (issue 14): numbers of any length,
dates outside the business dates, ids beyond 64 bits, texts longer than
their column, NUL and bidi controls in setting texts, FIFOs and devices in the
org tree, engine-owned objects through ``load``, duplicate payment rows,
SEPA names and identifiers, and CSV exports that load back exactly.

Each case ends in a clear error naming its file, row and field (or the
setting's file and line) and writes nothing; none ends in an internal error.
"""

from __future__ import annotations

import json
import os
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.cash.imports import ImportFailed, read_rows
from engine.cash.service import import_payments
from engine.config.contract import ENGINE_OWNED
from engine.config.values import BUSINESS_DATES, ValueProblem, check_number_shape, coerce, parse_date, parse_id
from engine.exports.errors import SepaXmlError
from engine.exports.sepa_message import check_identifiers
from engine.exports.sepa_orders import Transaction
from engine.exports.sepa_xml import is_sepa_text, sepa_text
from engine.project import load_project
from engine.storage.bulk import RowWriter
from engine.storage.migrate import apply_migration
from engine.storage.records import EngineOwnedObject, InputFileRefused, export_records_file, load_file
from engine.storage.types import TextTooLong

from config.orgcopy import Replace, copy_org
from contexts import context
from databases import REPO_ROOT, load_model


@pytest.fixture(scope="module")
def model():
    return load_model(REPO_ROOT)


@pytest.fixture
def empty(engine, model):
    """The sample org's schema, with its accounts and products loaded."""
    apply_migration(engine, model)
    for name in ("01_Account", "02_Product"):
        load_file(engine, context(model), name.split("_", 1)[1], REPO_ROOT / "data" / f"{name}.csv")
    return engine


def count(engine, model, object_name: str) -> int:
    table = context(model).table(object_name)
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def refusal(engine, model, object_name: str, path: Path) -> list[str]:
    """The rendered problems of a refused load (which must write nothing)."""
    before = count(engine, model, object_name)
    with pytest.raises(InputFileRefused) as refused:
        load_file(engine, context(model), object_name, path)
    assert count(engine, model, object_name) == before
    return [p.where.render() + ": " + p.message for p in refused.value.problems]


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "1234567890123456789012345", "-1234567890123456789012345.5", "9" * 99, "0." + "0" * 60 + "1", "1" * 101,
])
def test_numbers_of_any_length_are_value_problems(model, text):
    with pytest.raises(ValueProblem):
        coerce(model.require("OrderItem").field("Quantity"), text)


@pytest.mark.parametrize("value", [Decimal("1E+400"), Decimal("-1E+30"), Decimal("1E-400")])
@pytest.mark.parametrize("precision", [18, None])
def test_exponents_are_value_problems_not_arithmetic_errors(value, precision):
    with pytest.raises(ValueProblem):
        check_number_shape(value, precision, 2)


@pytest.mark.parametrize("text", ["9999-12-31", "0001-01-01", "1899-12-31", "2200-01-01"])
def test_dates_outside_the_business_dates_are_refused(text):
    with pytest.raises(ValueProblem, match="outside the supported dates 1900-01-01..2199-12-31"):
        parse_date(text)


def test_the_business_dates_are_declared_once():
    assert (BUSINESS_DATES.first.isoformat(), BUSINESS_DATES.last.isoformat()) == ("1900-01-01", "2199-12-31")
    assert parse_date("1900-01-01") == BUSINESS_DATES.first and parse_date("2199-12-31") == BUSINESS_DATES.last


@pytest.mark.parametrize("raw", ["99999999999999999999", 2**63, "1" * 5000, "١٢", "-1", "0"])
def test_ids_beyond_64_bits_and_odd_digits_are_refused(raw):
    with pytest.raises(ValueProblem):
        parse_id(raw)
    assert parse_id(str(2**63 - 1)) == 2**63 - 1


# --- record loads ---------------------------------------------------------------------


ITEM_HEADER = "OrderItemNumber,OrderId.OrderNumber,ProductId.ProductCode,Quantity,UnitPrice,ServiceDate\n"


@pytest.mark.parametrize("cells, field, message", [
    ("1234567890123456789012345,1,", "Quantity", "more than 12 digits before the decimal point"),
    ("1,-99999999999999999999999999.5,", "UnitPrice", "more than 14 digits before the decimal point"),
    ("1,1,9999-12-31", "ServiceDate", "outside the supported dates"),
    ("1,1,0001-01-01", "ServiceDate", "outside the supported dates"),
    ("1e5,1,", "Quantity", "expected a decimal number"),
])
def test_csv_cells_are_checked_where_they_enter(empty, model, tmp_path, cells, field, message):
    orders = tmp_path / "orders.csv"
    orders.write_text("Name,OrderNumber,AccountId.AccountNumber,EffectiveDate,Status\n"
                      "O,ORD-H-1,10001,2024-01-01,Activated\n", encoding="utf-8")
    load_file(empty, context(model), "Order", orders)
    path = tmp_path / "items.csv"
    path.write_text(ITEM_HEADER + f"X1,ORD-H-1,SRV-CONSULT,{cells}\n", encoding="utf-8")
    problems = refusal(empty, model, "OrderItem", path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2:{field}: ") and message in problems[0]


def test_json_numbers_ids_and_nul_are_checked_where_they_enter(empty, model, tmp_path):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([
        {"Name": "A", "AccountNumber": "H-1", "ON_PaymentDue__c": 10**30},
        {"Name": "B", "AccountNumber": "H-2", "Id": 2**64},
        {"Name": "C\u0000", "AccountNumber": "H-3"},
    ]).replace("1000000000000000000000000000000", "1e400"), encoding="utf-8")
    problems = refusal(empty, model, "Account", path)
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:1:ON_PaymentDue__c", f"{path}:2:Id", f"{path}:3:Name"]
    assert "digits before the decimal point" in problems[0] and "NUL" in problems[2]


def test_a_text_longer_than_its_column_is_refused_on_both_backends(empty, model):
    """SQLite stores any length; PostgreSQL refused with a driver error (an
    internal error for the user). The bulk writer refuses both, naming the field."""
    with empty.begin() as conn, pytest.raises(TextTooLong) as refused:
        RowWriter(conn, model.require("Account")).insert([{"name": "A", "phone": "+49" + "1" * 60}])
    assert refused.value.code == "R131" and refused.value.where.field == "Phone"


@pytest.mark.parametrize("object_name", sorted(ENGINE_OWNED))
def test_load_refuses_engine_owned_objects_naming_the_command(empty, model, tmp_path, object_name):
    path = tmp_path / "rows.csv"
    path.write_text("Name\nX\n", encoding="utf-8")
    with pytest.raises(EngineOwnedObject) as refused:
        load_file(empty, context(model), object_name.lower(), path)
    assert refused.value.code == "R124" and str(refused.value).startswith(f"{object_name} records are created by")
    assert ENGINE_OWNED[object_name] in str(refused.value)
    assert count(empty, model, object_name) == 0


def test_export_records_still_exports_engine_owned_objects(empty, model, tmp_path):
    report = export_records_file(empty, context(model), "Invoice", tmp_path / "invoices.csv")
    assert report.count == 0 and (tmp_path / "invoices.csv").read_text(encoding="utf-8").startswith("Id,")


TRICKY = ["+49 89 5550100", "'quoted", "''twice", "'=already marked", "=SUM(A1:A2)", "-5", "@home", "\tTab",
          "plain", " lead and trail ", "Zeile 1\nZeile 2", "\"quoted\"", "'"]


def test_an_export_loads_back_to_exactly_the_stored_values(engine, model, tmp_path):
    """``+49...`` came back as ``'+49...``: the export's protective quote is
    removed again by the load, and a text that starts with a quote itself
    keeps it (it is doubled on export)."""
    apply_migration(engine, model)
    with engine.begin() as conn:
        RowWriter(conn, model.require("Account")).insert(
            [{"accountnumber": f"T{i}", "name": text, "phone": text[:40]} for i, text in enumerate(TRICKY)])
    table = context(model).table("Account")
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(table.c.accountnumber, table.c.name)).all())
    assert stored == {f"T{i}": text for i, text in enumerate(TRICKY)}
    exported = tmp_path / "export.csv"
    export_records_file(engine, context(model), "Account", exported, fields=["AccountNumber", "Name", "Phone"])
    assert "'+49 89 5550100" in exported.read_text(encoding="utf-8")  # defused for spreadsheets
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
    load_file(engine, context(model), "Account", exported)
    with engine.connect() as conn:
        assert dict(conn.execute(sa.select(table.c.accountnumber, table.c.name)).all()) == stored
        phones = dict(conn.execute(sa.select(table.c.accountnumber, table.c.phone)).all())
    assert phones == {f"T{i}": text[:40] for i, text in enumerate(TRICKY)}


# --- payment imports ---------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payments.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_payment_cells_are_checked_against_the_balance_fields(model, tmp_path):
    long_reference = "R" * 300
    path = write(tmp_path, "Invoice,Amount,Date,Reference,TransactionNo\n"
                           "INV-1,1234567890123456789012345,2024-11-02,,T1\n"
                           "INV-1,10.00,9999-12-31,,T2\n"
                           "INV-1,10.00,0001-01-01,,T3\n"
                           f"INV-1,10.00,2024-11-02,{long_reference},T4\n"
                           f"INV-1,10.00,2024-11-02,,{'T' * 300}\n"
                           "INV-1,10.00,2024-11-02,a\x00b,T7\n")
    rows, errors = read_rows(path, model.require("Balance"))
    assert rows == []
    assert [(e.row, e.field) for e in errors] == [(2, "Amount"), (3, "Date"), (4, "Date"), (5, "Reference"),
                                                  (6, "TransactionNo"), (7, "Reference")]
    assert "NUL" in errors[5].message  # PostgreSQL cannot store it: refused where it enters
    assert "outside the supported dates" in errors[1].message and "exceeds the field length" in errors[3].message


def test_the_same_payment_twice_in_one_file_names_both_rows(model, tmp_path):
    path = write(tmp_path, "Invoice,Amount,Date\nINV-1,10.00,2024-11-02\nINV-2,10.00,2024-11-02\n"
                           "INV-1,10.00,2024-11-02\n")
    rows, errors = read_rows(path, model.require("Balance"))
    assert [(e.row, e.message.split(";")[0]) for e in errors] == [(4, "repeats row 2 cell for cell and has no TransactionNo")]
    # With a reference (or a transaction number) both are distinct payments.
    path = write(tmp_path, "Invoice,Amount,Date,Reference\nINV-1,10.00,2024-11-02,a\nINV-1,10.00,2024-11-02,b\n")
    assert read_rows(path, model.require("Balance"))[1] == []


def test_an_import_with_such_rows_writes_nothing_on_both_backends(empty, model, tmp_path):
    path = write(tmp_path, "Account,Amount,Date,Type,Reference\n10001,5.00,2024-11-02,Prepayment,"
                           + "R" * 300 + "\n10001,5.00,9999-12-31,Prepayment,x\n")
    with pytest.raises(ImportFailed) as failed:
        import_payments(empty, context(model), path)
    assert [(e.row, e.field) for e in failed.value.errors] == [(2, "Reference"), (3, "Date")]
    assert count(empty, model, "Balance") == 0 and count(empty, model, "BookingPeriod") == 0


# --- the org tree and setting texts ----------------------------------------------------------


def _validate_within(org: Path, seconds: float = 30):
    result: list = []
    worker = threading.Thread(target=lambda: result.append(load_project(org)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"validate-config did not finish within {seconds} s"
    return result[0]


@pytest.mark.parametrize("folder", ["metadata/objects", "metadata/settings", "custom_settings", "templates"])
def test_a_fifo_in_the_org_tree_does_not_hang_validate_config(tmp_path, folder):
    org = copy_org(tmp_path / "org")
    os.mkfifo(org / folder / "Evil.yaml")
    result = _validate_within(org)
    assert result.ok or all(d.code != "E099" for d in result.diagnostics)
    if folder != "templates":
        [warning] = [d for d in result.diagnostics if d.location.file == f"{folder}/Evil.yaml"]
        assert warning.code == "W014" and "FIFO" in warning.message


def test_a_device_behind_a_link_is_not_read(tmp_path):
    org = copy_org(tmp_path / "org")
    (org / "custom_settings" / "Zero.yaml").symlink_to("/dev/zero")
    result = _validate_within(org)
    assert [d.code for d in result.diagnostics if "Zero.yaml" in d.location.file] == ["W014"]


@pytest.mark.parametrize("text, message", [
    ('"Erl\\0s [InvoiceNo]"', "NUL"),
    ('"USt \\u202e[BookingTaxRate]"', "bidi control U+202E"),
    ('"Erl\\u2066s"', "bidi control U+2066"),
    ('"Bell\\x07"', "control character U+0007"),
])
def test_setting_texts_that_no_export_can_carry_are_refused(tmp_path, text, message):
    org = copy_org(tmp_path / "org")
    Replace("custom_settings/BookingText.yaml", "Text: Erlös [InvoiceNo] [AccountName]", f"Text: {text}").apply(org)
    result = load_project(org)
    refused = [d for d in result.errors if d.code == "E070"]
    assert len(refused) == 1 and message in refused[0].message
    assert refused[0].location.file == "custom_settings/BookingText.yaml" and refused[0].location.line == 5


@pytest.mark.parametrize("old, new, field", [
    ('WriteOffCapAmount: "5.00"', 'WriteOffCapAmount: "1234567890123456789012345"', "WriteOffCapAmount"),
    ("StatuteOfLimitationsYears: 3", "StatuteOfLimitationsYears: 1234567890123456789012345678",
     "StatuteOfLimitationsYears"),
])
def test_settings_with_25_digit_numbers_are_refused(tmp_path, old, new, field):
    org = copy_org(tmp_path / "org")
    Replace("custom_settings/GlobalSettings.yaml", old, new).apply(org)
    result = load_project(org)
    [refused] = [d for d in result.errors if d.code == "E070"]
    assert field in refused.message and "digits before the decimal point" in refused.message


def test_a_setting_date_outside_the_business_dates_is_refused(tmp_path):
    org = copy_org(tmp_path / "org")
    Replace("custom_settings/TaxRule.yaml", "    TaxCode: DE_19\n", "    TaxCode: DE_19\n    EndDate: 9999-12-31\n",
            ).apply(org)
    result = load_project(org)
    [refused] = [d for d in result.errors if d.code == "E070"]
    assert "9999-12-31 is outside the supported dates" in refused.message


# --- SEPA text and identifiers -------------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("Łukasz Żółć", "Lukasz Zolc"), ("Ørsted A/S", "Orsted A/S"), ("Müller & Söhne", "Mueller + Soehne"),
    ("Ærøskøbing", "Aeroskobing"), ("Đorđe Þórsson", "Dorde Thorsson"), ("İpek Işık", "Ipek Isik"),
    ("Жанна Иванова", "Zhanna Ivanova"), ("Ελένη", "Eleni"), ("Œuvre ĳssel", "Oeuvre ijssel"),
])
def test_sepa_transliteration_keeps_letters(name, expected):
    assert sepa_text(name, 70) == expected


def test_every_latin_greek_and_cyrillic_letter_keeps_a_letter():
    blocks = [range(0x00C0, 0x0250), range(0x1E00, 0x1F00), range(0x0391, 0x03CA), range(0x0400, 0x0460)]
    signs = {"Ъ", "ъ", "Ь", "ь", "ʔ"}
    lost = []
    for block in blocks:
        for code in block:
            char = chr(code)
            if not char.isalpha() or char in signs or char in "×÷":
                continue
            if not sepa_text(char, 70).isalnum():
                lost.append(f"U+{code:04X} {char}")
    assert lost == []


@pytest.mark.parametrize("identifier", ["/INV-1", "INV-1/", "INV//1", "", "A" * 36, "INV 1 ", "INV_1"])
def test_sepa_identifiers_the_rules_forbid(identifier):
    assert not is_sepa_text(identifier, 35)


def test_a_message_with_such_an_identifier_is_never_written():
    from datetime import date

    order = Transaction(record_id=1, record_name="INV//1", end_to_end_id="INV//1", account=1, account_name="A",
                        amount=Decimal("1.00"), currency="EUR", when=date(2024, 1, 2), iban="DE89370400440532013000",
                        bic=None, holder="A", remittance="r")
    with pytest.raises(SepaXmlError, match="EndToEndId 'INV//1' of INV//1"):
        check_identifiers("MBDD20240101000000abcdef12", [order])
    check_identifiers("MBDD20240101000000abcdef12", [])
