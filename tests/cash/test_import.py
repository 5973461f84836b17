"""Payment import from CSV: all or nothing, errors as file:row:field, and
idempotent by transaction number."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.cash.imports import ImportFailed, import_payments, read_rows

from booking.helpers import ZERO, D

from .helpers import assert_cash_invariants, free_of
from contexts import context


def write(tmp_path: Path, text: str, name: str = "payments.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_import(books, path: Path):
    with books.engine.begin() as conn:
        return import_payments(conn, context(books.model), path, run="test import")


GOOD = """Invoice,Account,Amount,Date,Type,Reference,TransactionNo
INV-2024-00001,,1249.19,2024-11-02,,Rechnung 1,TX-100
INV-2024-00004,,887.50,2024-11-03,Payment,,TX-101
,10002,70.00,2024-11-04,Prepayment,Vorauskasse,TX-102
INV-2024-00002,,1600.00,2024-11-05,,,TX-103
"""


def test_a_good_file_is_imported_and_a_second_import_skips_it(orders, tmp_path):
    path = write(tmp_path, GOOD)
    report = run_import(orders, path)
    assert (report.registered, report.total, report.skipped) == (4, D("3806.69"), [])
    assert [orders.invoice(n)["status"] for n in ("INV-2024-00001", "INV-2024-00004", "INV-2024-00002")] == \
        ["Paid", "Paid", "Paid"]  # 00004: the rest of 5.00 is written off
    assert sorted(b["amount"] for b in free_of(orders, "10002")) == [D("-70.00"), D("-50.00")]
    assert {b["run"] for b in orders.balances(orders.t("Balance").c.transactionno.is_not(None))} == {"test import"}
    assert_cash_invariants(orders)
    again = run_import(orders, path)
    assert (again.registered, len(again.skipped)) == (0, 4)
    assert again.skipped[0] == f"{path}:2: transaction TX-100 is registered already"


def test_every_problem_is_reported_and_nothing_is_written(orders, tmp_path):
    path = write(tmp_path, """Invoice,Account,Amount,Date,Type,TransactionNo
INV-2024-00001,,abc,2024-11-02,,T1
INV-2024-00001,10001,10.00,2024-11-02,,T2
INV-2024-00001,,10.00,02.11.2024,,T3
INV-2024-00001,,10.001,2024-11-02,Refund,T4
INV-2024-00001,,10.00,2024-11-02,Prepayment,T5
,10001,10.00,2024-11-02,Gift,T5
""")
    before = orders.balances()
    with pytest.raises(ImportFailed) as failure:
        run_import(orders, path)
    rendered = [e.render() for e in failure.value.errors]
    assert rendered == [
        f"{path}:2:Amount: expected a decimal number like 1234.50, got 'abc'",
        f"{path}:3:Invoice: give either an invoice number or an account number",
        f"{path}:4:Date: expected YYYY-MM-DD, got '02.11.2024'",
        f"{path}:5:Amount: must be positive with at most two decimals, got 10.001",
        f"{path}:6:Type: a prepayment goes to an account, not an invoice",
        f"{path}:7:Type: 'Gift' is not one of Payment, Prepayment, Refund",
        f"{path}:7:TransactionNo: 'T5' is also on row 6",
    ]
    assert orders.balances() == before


def test_a_row_the_engine_refuses_rolls_back_the_whole_file(orders, tmp_path):
    path = write(tmp_path, """Invoice,Amount,Date
INV-2024-00001,100.00,2024-11-02
INV-2099-00001,100.00,2024-11-02
INV-2024-00004,100.00,2024-11-02
""")
    before = orders.balances()
    with pytest.raises(ImportFailed) as failure:
        run_import(orders, path)
    assert [e.render() for e in failure.value.errors] == [f"{path}:3:Invoice: no invoice INV-2099-00001"]
    assert orders.balances() == before
    assert orders.invoice("INV-2024-00001")["balance"] == D("1249.19")


@pytest.mark.parametrize("text, message", [
    ("Invoice,Amount\nINV-1,1.00\n", "the header lacks the column 'date'"),
    ("Amount,Date\n1.00,2024-01-01\n", "the header needs an Invoice or an Account column"),
    ("Invoice,Amount,Date,Colour\n", "unknown column"),
    ("", "the file is empty"),
])
def test_bad_headers(tmp_path, text, message):
    rows, errors = read_rows(write(tmp_path, text))
    assert rows == [] and any(message in e.message for e in errors), errors


def test_refund_rows(orders, tmp_path):
    path = write(tmp_path, """Account,Amount,Date,Type
10001,50.00,2024-11-02,Payment
10001,50.00,2024-11-03,Refund
""")
    assert run_import(orders, path).registered == 2
    assert sum((b["amount"] for b in free_of(orders, "10001")), ZERO) == ZERO
