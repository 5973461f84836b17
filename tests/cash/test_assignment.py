"""The balance assignment job AssignBalancesChain (domain-spec §4.6).

Account 10001 after billing the sample orders: INV-2024-00001 (1249.19, due
2024-02-14), INV-2024-00005 (5712.00, due 2024-06-14), INV-2024-00006
(1190.00, due 2024-07-14), INV-2024-00007 (4998.00, due 2024-07-14).
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from engine.cash.jobs import run_job

from booking.helpers import ZERO, D

from .helpers import assert_cash_invariants, assign, balances_of, free_of, pay, pay_account
from contexts import context


def set_fields(books, object_name: str, where, **values) -> None:
    table = books.t(object_name)
    with books.engine.begin() as conn:
        conn.execute(sa.update(table).where(where).values(**values))


def test_oldest_due_invoice_first_and_the_rest_is_split(orders):
    balance_id = pay_account(orders, "10001", "7000.00", date(2024, 11, 1)).balance_id
    report = assign(orders)
    name = orders.balances(orders.t("Balance").c.id == balance_id)[0]["name"]
    assert report.moves == [
        (name, "INV-2024-00001", D("-1249.19")),
        (name, "INV-2024-00005", D("-5712.00")),
        (name, "INV-2024-00006", D("-38.81")),
    ]
    assert (report.assigned, report.split, report.amount) == (0, 1, D("7000.00"))
    status = {n: orders.invoice(n)["status"] for n in ("INV-2024-00001", "INV-2024-00005", "INV-2024-00006")}
    assert status == {"INV-2024-00001": "Paid", "INV-2024-00005": "Paid", "INV-2024-00006": "Open"}
    assert orders.invoice("INV-2024-00006")["balance"] == D("1151.19")
    # The original, fully used, is the last part; the others point back to it.
    parts = orders.balances(orders.t("Balance").c.splitfrom == balance_id)
    assert sorted(p["amount"] for p in parts) == [D("-5712.00"), D("-1249.19")]
    assert all(p["rule"] == "AssignBalancesChain: split" and p["run"] == "test" for p in parts)
    original = orders.balances(orders.t("Balance").c.id == balance_id)[0]
    assert (original["amount"], original["invoice"]) == (D("-38.81"), orders.invoice("INV-2024-00006")["id"])
    assert free_of(orders, "10001") == []
    assert_cash_invariants(orders)


def test_a_balance_larger_than_everything_open_keeps_its_rest(orders):
    balance_id = pay_account(orders, "10004", "20000.00").balance_id  # 10004: INV-2024-00004 892.50, 00010 14280.00
    assign(orders)
    assert [b["amount"] for b in free_of(orders, "10004")] == [D("-4827.50")]
    assert free_of(orders, "10004")[0]["id"] == balance_id
    assert orders.invoice("INV-2024-00010")["status"] == "Paid"
    assert_cash_invariants(orders)


def test_running_again_changes_nothing(orders):
    pay_account(orders, "10001", "2000.00")
    first = assign(orders)
    before = orders.balances()
    second = assign(orders)
    assert (second.assigned, second.split, second.amount) == (0, 0, ZERO) and first.amount == D("2000.00")
    assert orders.balances() == before


def test_balance_order_oldest_first_then_name(orders):
    late = pay_account(orders, "10001", "100.00", date(2024, 11, 5)).balance_id
    early = pay_account(orders, "10001", "100.00", date(2024, 11, 1)).balance_id
    report = assign(orders)
    assert [m[2] for m in report.moves] == [D("-100.00"), D("-100.00")]
    assert orders.balances(orders.t("Balance").c.id == early)[0]["invoice"] == orders.invoice("INV-2024-00001")["id"]
    assert orders.balances(orders.t("Balance").c.id == late)[0]["invoice"] == orders.invoice("INV-2024-00001")["id"]
    first_moved = orders.balances(orders.t("Balance").c.name == report.moves[0][0])[0]
    assert first_moved["id"] == early


def test_locked_no_auto_assignment_and_cash_management_balances_stay_free(orders):
    ids = [pay_account(orders, "10001", "10.00").balance_id for _ in range(4)]
    t = orders.t("Balance")
    set_fields(orders, "Balance", t.c.id == ids[0], lockedreason="Exported")
    set_fields(orders, "Balance", t.c.id == ids[1], noautoassignment=True)
    set_fields(orders, "Balance", t.c.id == ids[2], origin="JPAY1")
    assign(orders)
    assert sorted(b["id"] for b in free_of(orders, "10001")) == ids[:3]
    assert orders.balances(t.c.id == ids[3])[0]["invoice"] == orders.invoice("INV-2024-00001")["id"]


def test_accounts_and_invoices_that_refuse_automatic_assignment(orders):
    pay_account(orders, "10001", "10.00")
    pay_account(orders, "10004", "10.00")
    set_fields(orders, "Account", orders.t("Account").c.accountnumber == "10001", on_noautobalanceassignment__c=True)
    set_fields(orders, "Invoice", orders.t("Invoice").c.name == "INV-2024-00004", on_noautobalanceassignment__c=True)
    assign(orders)
    assert [b["amount"] for b in free_of(orders, "10001")] == [D("-10.00")]
    # 10004: INV-2024-00004 refuses, so the final invoice INV-2024-00010 gets it
    assert free_of(orders, "10004") == []
    assert [b["type"] for b in balances_of(orders, "INV-2024-00010")] == ["Invoice", "Payment"]
    assert_cash_invariants(orders)


def test_balance_assignment_keys_must_be_equal(orders):
    keyed = pay_account(orders, "10001", "10.00", assignment_key="PRJ-7").balance_id
    plain = pay_account(orders, "10001", "20.00").balance_id
    set_fields(orders, "Invoice", orders.t("Invoice").c.name == "INV-2024-00006", balanceassignmentkey="PRJ-7")
    assign(orders)
    t = orders.t("Balance")
    assert orders.balances(t.c.id == keyed)[0]["invoice"] == orders.invoice("INV-2024-00006")["id"]
    assert orders.balances(t.c.id == plain)[0]["invoice"] == orders.invoice("INV-2024-00001")["id"]


def test_other_currencies_are_not_mixed(orders):
    pay(orders, "INV-2024-00003", "2300.00")                 # 10003's only invoice, CHF: paid
    pay(orders, "INV-2024-00003", "50.00")                   # excess, CHF, free
    assign(orders)
    assert [b["currencyisocode"] for b in free_of(orders, "10003")] == ["CHF"]


def test_a_debit_balance_goes_to_a_credit(orders):
    """A free refund (positive) pays back an overpaid invoice's credit."""
    from .helpers import refund

    pay(orders, "INV-2024-00001", "1300.00")             # 50.81 free credit
    set_fields(orders, "Balance", orders.t("Balance").c.invoice.is_(None), invoice=orders.invoice("INV-2024-00001")["id"])
    from engine.booking.balances import refresh_invoices

    invoice_id = orders.invoice("INV-2024-00001")["id"]
    with orders.engine.begin() as conn:
        refresh_invoices(conn, context(orders.model), [invoice_id])
    assert orders.invoice("INV-2024-00001")["balance"] == D("-50.81")
    pay_account(orders, "10001", "100.00")  # keeps the account's books in step for the refund below
    refund(orders, "100.00", account_number="10001")
    assign(orders)
    assert orders.invoice("INV-2024-00001")["balance"] == ZERO
    assert [b["amount"] for b in free_of(orders, "10001")] == [D("49.19")]


def test_the_job_runs_through_the_job_runner(orders):
    pay_account(orders, "10001", "100.00")
    run, summary = run_job(orders.engine, context(orders.model), "AssignBalancesChain", today=date(2024, 12, 1))
    assert run.startswith("AssignBalancesChain@") and summary.startswith("1 balance(s) assigned, 0 split, 100.00")
    split_run = orders.invoice("INV-2024-00001")
    assert split_run["balance"] == D("1149.19")
