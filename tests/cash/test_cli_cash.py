"""The cash commands end to end through click (SQLite): payment register,
on-account, refund, import, write-off, collect-balances, jobs run/list/next/tick."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

from booking.helpers import D
from config.orgcopy import REPO_ROOT

from .helpers import billed, cash_books, free_of


@pytest.fixture
def db(books_sqlite):
    books = billed(cash_books(books_sqlite))
    return books


def invoke(books, *args):
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--org", str(REPO_ROOT), "--db", books.url],
                                                      catch_exceptions=False)
    return result.exit_code, result.output


def test_payment_register_with_an_overpayment(db):
    code, out = invoke(db, "payment", "register", "INV-2024-00001", "1300.00", "--date", "2024-11-01",
                       "--reference", "Ref 1", "--payment-method", "Bank Transfer")
    assert code == 0, out
    assert "Registered 1300.00 on INV-2024-00001: open amount 0.00, status Paid." in out
    assert "The overpayment of 50.81 is a free balance on the account" in out
    assert [b["amount"] for b in free_of(db, "10001")] == [D("-50.81")]


def test_payment_register_reports_the_automatic_write_off(db):
    code, out = invoke(db, "payment", "register", "INV-2024-00004", "888.00", "--date", "2024-11-01")
    assert code == 0 and "Wrote off the remaining 4.50 (Missing amount below threshold)." in out


def test_user_errors_have_no_traceback(db):
    code, out = invoke(db, "payment", "register", "INV-2099-1", "10.00", "--date", "2024-11-01")
    assert code == 1 and "Traceback" not in out
    code, out = invoke(db, "payment", "register", "INV-2024-00001", "1,5", "--date", "2024-11-01")
    assert code == 1 and "amount:" in out
    code, out = invoke(db, "write-off", "INV-2024-00001", "10.00", "--reason", "Weather")
    assert code == 1 and "is not one of" in out


def test_on_account_refund_and_write_off(db):
    assert invoke(db, "payment", "on-account", "10002", "80.00", "--date", "2024-11-01", "--type", "Prepayment")[0] == 0
    code, out = invoke(db, "payment", "refund", "30.00", "--account", "10002", "--date", "2024-11-02")
    assert code == 0 and "Registered refund BAL-" in out
    code, out = invoke(db, "write-off", "INV-2024-00002", "--reason", "Uncollectible", "--date", "2024-11-03")
    assert code == 0 and "Wrote off 1550.00 of INV-2024-00002 (Uncollectible)" in out
    assert db.invoice("INV-2024-00002")["status"] == "Paid"


def test_payment_import_all_or_nothing(db, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Invoice,Amount,Date\nINV-2024-00001,x,2024-11-01\n", encoding="utf-8")
    code, out = invoke(db, "payment", "import", str(bad))
    assert code == 1 and f"{bad}:2:Amount:" in out and "nothing was imported" in out
    good = tmp_path / "good.csv"
    good.write_text("Invoice,Amount,Date\nINV-2024-00001,1249.19,2024-11-01\n", encoding="utf-8")
    code, out = invoke(db, "payment", "import", str(good))
    assert code == 0 and "Imported 1 row(s)" in out


def test_jobs_run_list_next_and_tick(db):
    invoke(db, "payment", "on-account", "10001", "100.00", "--date", "2024-11-01")
    code, out = invoke(db, "jobs", "run", "AssignBalancesChain", "--date", "2024-12-01")
    assert code == 0 and "1 balance(s) assigned" in out
    code, out = invoke(db, "jobs", "list", "--at", "2024-12-01T12:00+00:00")
    assert code == 0 and "Nightly balance assignment" in out and "2024-12-02T02:00:00+01:00" in out
    result = CliRunner().invoke(cli, ["jobs", "next", "--count", "3", "--at", "2024-10-26T12:00Z", "--org", str(REPO_ROOT)])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "2024-10-27T02:00:00+02:00  2024-10-27T00:00Z  AssignBalancesChain  (Nightly balance assignment)",
        "2024-10-27T02:30:00+02:00  2024-10-27T00:30Z  PaymentBookingData  (Daily payment booking data)",
        "2024-10-28T02:00:00+01:00  2024-10-28T01:00Z  AssignBalancesChain  (Nightly balance assignment)",
    ]
    code, out = invoke(db, "jobs", "tick", "--at", "2024-12-01T02:00+00:00")
    assert code == 0 and "Nightly balance assignment [AssignBalancesChain] slot 2024-12-01T02:00: ran" in out
    code, out = invoke(db, "jobs", "tick", "--at", "2024-12-01T02:10+00:00")
    assert "slot 2024-12-01T02:00: skipped: slot already executed" in out
    code, out = invoke(db, "jobs", "run", "Nope")
    assert code == 1 and "unknown job 'Nope'" in out


def test_collect_balances_dry_run_and_run(db):
    invoke(db, "payment", "on-account", "10001", "25.00", "--date", "2020-01-01")
    code, out = invoke(db, "collect-balances", "--business-entity", "DE01", "--date", "2024-12-01", "--dry-run")
    assert code == 0 and "1 balance(s) would collect, -25.00 in total." in out
    assert free_of(db, "10001")[0]["lockedreason"] is None
    code, out = invoke(db, "collect-balances", "--business-entity", "DE01", "--date", "2024-12-01")
    assert code == 0 and "1 balance(s) collected" in out
    code, out = invoke(db, "collect-balances", "--business-entity", "NOPE")
    assert code == 1 and "no business entity 'NOPE'" in out
