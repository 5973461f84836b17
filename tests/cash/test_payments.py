"""Payments, overpayments, automatic and manual write-offs, refunds, and the
collective account of payment bookings (domain-spec §4.4-§4.7, §5.4, seed 002).

The sample org: AllowOverpayments off, WriteOffThresholdPercent 1 %,
WriteOffCapAmount 5.00, WriteOffCurrency EUR, payment bookings on.
INV-2024-00001 = 1249.19 EUR (DE_19, account 10001), INV-2024-00003 =
2300.00 CHF, INV-2024-00004 = 892.50 EUR (DE_19, account 10004).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.booking.balances import WriteOffSettings
from engine.cash.payments import PaymentError
from engine.cash.refunds import credit_balances

from contexts import context

from booking.helpers import UC1_SUB, ZERO, D, load_model, org_variant
from config.orgcopy import Replace

from .helpers import (
    assert_cash_invariants,
    balances_of,
    billed,
    cash_books,
    free_of,
    pay,
    pay_account,
    refund,
    stored_account_balance,
    write_off,
)

SETTINGS = "custom_settings/GlobalSettings.yaml"


def variant(tmp_path, make_books, db_url, *edits):
    org = org_variant(tmp_path / "org", *edits)
    return billed(cash_books(make_books(db_url, load_model(org), org)))


# --- registration and overpayment -----------------------------------------------------------


def test_a_payment_below_the_open_amount_leaves_the_invoice_open(orders):
    done = pay(orders, "INV-2024-00001", "1000.00")
    invoice = orders.invoice("INV-2024-00001")
    assert (done.invoice_balance, done.status) == (D("249.19"), "Open")
    assert (invoice["balance"], invoice["status"], invoice["paymentdate"]) == (D("249.19"), "Open", None)
    assert [(b["type"], b["amount"]) for b in balances_of(orders, "INV-2024-00001")] == [
        ("Invoice", D("1249.19")), ("Payment", D("-1000.00"))]
    assert_cash_invariants(orders)


def test_the_exact_amount_pays_the_invoice_and_sets_the_payment_date(orders):
    pay(orders, "INV-2024-00001", "1249.19", date(2024, 11, 5))
    invoice = orders.invoice("INV-2024-00001")
    assert (invoice["balance"], invoice["status"], invoice["paymentdate"]) == (ZERO, "Paid", date(2024, 11, 5))
    assert stored_account_balance(orders, "10001") == sum(
        (i["balance"] for i in orders.invoices(orders.t("Invoice").c.account == orders.account_id("10001"))), ZERO)
    assert_cash_invariants(orders)


def test_overpayment_off_puts_the_excess_on_the_account(orders):
    done = pay(orders, "INV-2024-00001", "1300.00")
    assert (done.invoice_balance, done.status, done.free_amount) == (ZERO, "Paid", D("50.81"))
    free = free_of(orders, "10001")
    assert [(b["type"], b["amount"], b["rule"]) for b in free] == [
        ("Payment", D("-50.81"), "AllowOverpayments=false: excess to the account")]
    # Each part of the money flow is booked: bank 1200 received 1300.00 in total.
    assert orders.movements()["1200"] == D("1300.00")
    assert_cash_invariants(orders)


def test_overpayment_on_keeps_the_excess_on_the_invoice(tmp_path, make_books, db_url):
    books = variant(tmp_path, make_books, db_url, Replace(SETTINGS, "AllowOverpayments: false", "AllowOverpayments: true"))
    done = pay(books, "INV-2024-00001", "1300.00")
    assert (done.invoice_balance, done.status, done.free_amount) == (D("-50.81"), "Open", ZERO)
    assert free_of(books, "10001") == []
    assert [b["amount"] for b in balances_of(books, "INV-2024-00001")] == [D("1249.19"), D("-1300.00")]
    assert_cash_invariants(books)


def test_a_payment_on_a_paid_invoice_goes_to_the_account_entirely(orders):
    pay(orders, "INV-2024-00001", "1249.19")
    done = pay(orders, "INV-2024-00001", "20.00")
    assert (done.invoice_balance, done.free_amount) == (ZERO, D("20.00"))
    assert [b["amount"] for b in free_of(orders, "10001")] == [D("-20.00")]
    assert_cash_invariants(orders)


def test_invalid_amounts_are_refused(orders):
    for amount, message in (("0", "must be positive"), ("-5.00", "must be positive"),
                            ("1.234", "at most two decimals")):
        with pytest.raises(PaymentError, match=message):
            pay(orders, "INV-2024-00001", amount)
    assert [b["type"] for b in balances_of(orders, "INV-2024-00001")] == ["Invoice"]


def test_unknown_and_draft_invoices_are_refused_and_nothing_is_written(orders):
    before = len(orders.balances())
    with pytest.raises(PaymentError, match="no invoice INV-2099-1"):
        pay(orders, "INV-2099-1", "10.00")
    assert len(orders.balances()) == before


def test_a_transaction_number_is_registered_once(orders):
    pay(orders, "INV-2024-00001", "100.00", transaction_no="TX-1")
    with pytest.raises(PaymentError, match="TX-1 is registered already"):
        pay(orders, "INV-2024-00001", "100.00", transaction_no="TX-1")
    assert orders.invoice("INV-2024-00001")["balance"] == D("1149.19")


# --- automatic write-off after a payment ---------------------------------------------------


@pytest.mark.parametrize("percent, cap, currency, total, invoice_currency, expected", [
    (D("1"), D("5.00"), "EUR", D("1190.00"), "EUR", D("5.00")),     # cap below percent (11.90): the cap
    (D("1"), D("50.00"), "EUR", D("1190.00"), "EUR", D("11.90")),   # percent below cap: the percent
    (D("1"), None, None, D("1190.00"), "CHF", D("11.90")),          # percent only: any currency
    (None, D("5.00"), "EUR", D("1190.00"), "EUR", D("5.00")),       # cap only
    (D("1"), D("5.00"), "EUR", D("1190.00"), "CHF", None),          # currency mismatch: no write-off
    (None, D("5.00"), None, D("1190.00"), "EUR", None),             # a cap needs its currency
    (D("1"), None, None, D("-1190.00"), "EUR", D("11.90")),         # of |grand total|
    (None, None, "EUR", D("1190.00"), "EUR", None),                 # nothing set
])
def test_payment_threshold(percent, cap, currency, total, invoice_currency, expected):
    settings = WriteOffSettings(percent, cap, None, currency)
    assert settings.payment_threshold(total, invoice_currency) == expected


def test_rest_exactly_at_the_threshold_is_written_off(orders):
    # INV-2024-00004: 892.50, 1 % = 8.925, cap 5.00 -> threshold 5.00; rest exactly 5.00.
    done = pay(orders, "INV-2024-00004", "887.50", date(2024, 11, 9))
    assert (done.written_off, done.invoice_balance, done.status) == (D("5.00"), ZERO, "Paid")
    write_offs = [b for b in balances_of(orders, "INV-2024-00004") if b["type"] == "Write off"]
    assert [(b["amount"], b["writeoffreason"], b["date"]) for b in write_offs] == [
        (D("-5.00"), "Missing amount below threshold", date(2024, 11, 9))]
    # booked net + tax correction (DE_19): 4.20 to 2400, 0.80 back from 1776
    details = orders.details(orders.t("BookingDetail").c.balance == write_offs[0]["id"])
    assert sorted((d["type"], d["accountno"], d["amount"]) for d in details) == [
        ("Tax", "1776", D("-0.80")), ("Write-off", "2400", D("4.20"))]
    assert_cash_invariants(orders)


def test_rest_a_cent_above_the_threshold_stays_open(orders):
    done = pay(orders, "INV-2024-00004", "887.49")
    assert (done.written_off, done.invoice_balance, done.status) == (ZERO, D("5.01"), "Open")
    assert [b["type"] for b in balances_of(orders, "INV-2024-00004")] == ["Invoice", "Payment"]


def test_percent_below_the_cap_limits_the_write_off(tmp_path, make_books, db_url):
    books = variant(tmp_path, make_books, db_url, Replace(SETTINGS, 'WriteOffCapAmount: "5.00"', 'WriteOffCapAmount: "50.00"'))
    # 1 % of 892.50 = 8.925: a rest of 8.92 goes, 8.93 stays
    assert pay(books, "INV-2024-00004", "883.57").invoice_balance == D("8.93")
    assert pay(books, "INV-2024-00001", "1236.70").written_off == D("12.49")  # 1 % of 1249.19 = 12.4919
    assert_cash_invariants(books)


def test_no_automatic_write_off_in_another_currency(orders):
    done = pay(orders, "INV-2024-00003", "2299.00")  # CHF invoice, write-off currency EUR
    assert (done.written_off, done.invoice_balance, done.status) == (ZERO, D("1.00"), "Open")


def test_no_automatic_write_off_on_progress_invoices(cash):
    """A progress invoice's unpaid rest is cleared by its final invoice (its
    interim bookings rely on it): no write-off, automatic or manual."""
    assert cash.bill_month(UC1_SUB, 2024, 3, date(2024, 3, 15)).numbers == ["INV-2024-00001"]
    done = pay(cash, "INV-2024-00001", "1186.00", date(2024, 3, 28))   # rest 4.00, under the 5.00 cap
    assert (done.written_off, done.invoice_balance, done.status) == (ZERO, D("4.00"), "Open")
    with pytest.raises(PaymentError, match="Progress invoice"):
        write_off(cash, "INV-2024-00001", None)
    assert_cash_invariants(cash)


# --- manual write-off ----------------------------------------------------------------------


def test_manual_write_off_defaults_to_the_open_amount(orders):
    pay(orders, "INV-2024-00001", "1000.00")
    row = write_off(orders, "INV-2024-00001", None, "Uncollectible")
    assert (row["amount"], row["writeoffreason"], row["rule"]) == (D("-249.19"), "Uncollectible", "manual write-off")
    assert orders.invoice("INV-2024-00001")["status"] == "Paid"
    assert_cash_invariants(orders)


def test_manual_write_off_without_tax_books_one_gross_amount(orders):
    row = write_off(orders, "INV-2024-00001", "100.00", "Goodwill", calculate_tax=False)
    details = orders.details(orders.t("BookingDetail").c.balance == row["id"])
    assert [(d["type"], d["accountno"], d["amount"], d["isgross"]) for d in details] == [
        ("Write-off", "2400", D("100.00"), True)]
    assert orders.invoice("INV-2024-00001")["balance"] == D("1149.19")


def test_manual_write_off_refusals(orders):
    for amount, reason, message in (("2000.00", "Uncollectible", "exceeds the open amount 1249.19"),
                                    ("10.00", "Bad weather", "is not one of"),
                                    ("10.00", "", "needs a reason")):
        with pytest.raises(PaymentError, match=message):
            write_off(orders, "INV-2024-00001", amount, reason)
    assert [b["type"] for b in balances_of(orders, "INV-2024-00001")] == ["Invoice"]


# --- refunds -------------------------------------------------------------------------------


def test_refund_of_a_free_credit(orders):
    pay(orders, "INV-2024-00001", "1300.00")
    with pytest.raises(PaymentError, match="exceeds its free credit 50.81"):
        refund(orders, "60.00", account_number="10001")
    row = refund(orders, "50.81", account_number="10001")
    assert (row["type"], row["amount"], row.get("invoice")) == ("Refund", D("50.81"), None)
    assert sum((b["amount"] for b in free_of(orders, "10001")), ZERO) == ZERO
    assert orders.movements().get("1200") == D("1249.19")  # 1300 in, 50.81 out
    assert_cash_invariants(orders)


def test_a_draft_or_foreign_currency_credit_is_not_paid_back(orders):
    """Free credit is one definition (engine.booking.balances.free_credits):
    a draft balance is still being built, and a CHF credit is no credit of
    a EUR account; neither may be refunded or listed as a credit balance."""
    account = orders.account_id("10001")
    orders.insert("Balance", [
        {"account": account, "type": "Payment", "amount": D("-100.00"), "date": date(2024, 11, 1), "draft": True},
        {"account": account, "type": "Payment", "amount": D("-70.00"), "date": date(2024, 11, 1),
         "currencyisocode": "CHF"},
    ])
    with pytest.raises(PaymentError, match="exceeds its free credit 0.00"):
        refund(orders, "0.01", account_number="10001")
    pay(orders, "INV-2024-00001", "1300.00")
    with orders.engine.connect() as conn:
        listed = credit_balances(conn, context(orders.model), "DE01")
    assert [(c.target, c.amount) for c in listed if c.invoice is None] == [("account 10001", D("50.81"))]
    with pytest.raises(PaymentError, match="exceeds its free credit 50.81"):
        refund(orders, "50.82", account_number="10001")
    refund(orders, "50.81", account_number="10001")


def test_refund_on_an_overpaid_invoice(tmp_path, make_books, db_url):
    books = variant(tmp_path, make_books, db_url, Replace(SETTINGS, "AllowOverpayments: false", "AllowOverpayments: true"))
    pay(books, "INV-2024-00001", "1300.00")
    with pytest.raises(PaymentError, match="exceeds the invoice's credit 50.81"):
        refund(books, "51.00", invoice_name="INV-2024-00001")
    refund(books, "50.81", invoice_name="INV-2024-00001")
    invoice = books.invoice("INV-2024-00001")
    assert (invoice["balance"], invoice["status"]) == (ZERO, "Paid")
    assert_cash_invariants(books)


# --- collective accounts of payment bookings (seed 002) -------------------------------------

CUSTOM_RULE_ACCOUNT = """  - Name: Credit card clearing
    Type: Payment
    Account: "1361"
    CustomRule: Credit Card
"""


def test_collective_account_rule_takes_precedence(tmp_path, make_books, db_url):
    """Balance.CollectiveAccountRule__c (here TEXT(PaymentMethod)) matches
    the collective account's CustomRule before any other criterion: the
    tax-code-specific "Bank" loses; an empty value falls back to the others."""
    books = variant(tmp_path, make_books, db_url, Replace(
        "custom_settings/CollectiveAccount.yaml", "  - Name: Bank\n", CUSTOM_RULE_ACCOUNT + "  - Name: Bank\n"))
    card = pay(books, "INV-2024-00004", "100.00", payment_method="Credit Card")
    bank = pay(books, "INV-2024-00004", "100.00")
    wire = pay(books, "INV-2024-00004", "100.00", payment_method="Bank Transfer")
    rules = {b: [(d["accountno"], d["accountrule"]) for d in books.details(books.t("BookingDetail").c.balance == b)]
             for b in (card.balance_id, bank.balance_id, wire.balance_id)}
    assert rules[card.balance_id] == [("1361", "Credit card clearing")]
    assert rules[bank.balance_id] == [("1200", "Bank")]
    assert rules[wire.balance_id] == [("1200", "Bank")]
    assert_cash_invariants(books)
