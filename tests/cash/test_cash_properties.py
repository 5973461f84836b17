"""Property test: for any sequence of payments (on invoices and on
accounts), refunds, manual write-offs, assignment runs and collections,

* each invoice balance equals its grand total plus its assigned balances,
  and its status is Paid exactly when that is zero;
* each account's Balance equals the sum of its balances;
* the booking invariants hold (engine.booking.postings.check_postings:
  two decimals, debit != credit, Σ debit == Σ credit), each debtor moved by
  exactly what its balances say, each money flow booked once
  (tests/cash/helpers.assert_cash_invariants).

Operations the engine refuses (a write-off of a paid invoice, a refund
larger than the credit ...) must leave nothing behind; the invariants are
checked after every sequence, on one database whose state accumulates over
the examples (later examples start from what earlier ones left).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cash.collection import CollectionError, collect_balances
from engine.cash.payments import PaymentError, free_credit

from booking.helpers import load_model, org_variant
from config.orgcopy import Replace

from .helpers import assert_cash_invariants, assign, billed, cash_books, pay, pay_account, refund, write_off
from contexts import context

INVOICES = ("INV-2024-00001", "INV-2024-00002", "INV-2024-00003", "INV-2024-00004", "INV-2024-00005",
            "INV-2024-00006", "INV-2024-00007", "INV-2024-00010")
ACCOUNTS = ("10001", "10002", "10003", "10004")
START = date(2021, 1, 1)

cents = st.integers(min_value=1, max_value=600_000).map(lambda c: Decimal(c) / 100)
days = st.integers(min_value=0, max_value=1500)
operations = st.one_of(
    st.tuples(st.just("pay"), st.sampled_from(INVOICES), cents, days),
    st.tuples(st.just("pay-near"), st.sampled_from(INVOICES), st.integers(0, 700), days),  # rests near the threshold
    st.tuples(st.just("on-account"), st.sampled_from(ACCOUNTS), cents, days, st.sampled_from(("Payment", "Prepayment"))),
    st.tuples(st.just("refund-account"), st.sampled_from(ACCOUNTS), st.integers(1, 100), days),
    st.tuples(st.just("refund-invoice"), st.sampled_from(INVOICES), st.integers(1, 100), days),
    st.tuples(st.just("write-off"), st.sampled_from(INVOICES), st.integers(1, 100), days),
    st.tuples(st.just("assign"), days),
    st.tuples(st.just("collect"), days),
)


def apply(books, operation) -> None:
    kind = operation[0]
    try:
        if kind == "pay":
            _, invoice, amount, day = operation
            pay(books, invoice, amount, START + timedelta(days=day))
        elif kind == "pay-near":
            _, invoice, short_cents, day = operation
            open_amount = books.invoice(invoice)["balance"]
            amount = open_amount - Decimal(short_cents) / 100
            if amount > 0:
                pay(books, invoice, amount, START + timedelta(days=day))
        elif kind == "on-account":
            _, account, amount, day, balance_type = operation
            pay_account(books, account, amount, START + timedelta(days=day), balance_type=balance_type)
        elif kind == "refund-account":
            _, account, percent, day = operation
            with books.engine.connect() as conn:
                credit = free_credit(conn, context(books.model), {"id": books.account_id(account)})
            amount = (credit * percent / 100).quantize(Decimal("0.01"))
            if amount > 0:
                refund(books, amount, START + timedelta(days=day), account_number=account)
        elif kind == "refund-invoice":
            _, invoice, percent, day = operation
            credit = -books.invoice(invoice)["balance"]
            amount = (credit * percent / 100).quantize(Decimal("0.01"))
            if amount > 0:
                refund(books, amount, START + timedelta(days=day), invoice_name=invoice)
        elif kind == "write-off":
            _, invoice, percent, day = operation
            open_amount = abs(books.invoice(invoice)["balance"])
            amount = (open_amount * percent / 100).quantize(Decimal("0.01"))
            write_off(books, invoice, amount if amount > 0 else None, "Uncollectible", START + timedelta(days=day))
        elif kind == "assign":
            assign(books, START + timedelta(days=operation[1]))
        elif kind == "collect":
            with books.engine.begin() as conn:
                collect_balances(conn, context(books.model), "DE01", START + timedelta(days=operation[1] + 1000), run="prop")
    except (PaymentError, CollectionError):
        pass  # refused: the transaction rolled back


def check_sequences(books, examples: int) -> None:
    before = len(books.balances())

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(st.lists(operations, min_size=1, max_size=8))
    def check(sequence):
        for operation in sequence:
            apply(books, operation)
        assert_cash_invariants(books)

    check()
    assert len(books.balances()) > before  # the sequences did something


def test_cash_invariants_hold_for_any_sequence(orders):
    check_sequences(orders, 30 if orders.backend == "sqlite" else 6)


def test_cash_invariants_hold_with_overpayments_allowed(tmp_path, make_books, db_url):
    org = org_variant(tmp_path / "org", Replace("custom_settings/GlobalSettings.yaml", "AllowOverpayments: false",
                                                "AllowOverpayments: true"))
    books = billed(cash_books(make_books(db_url, load_model(org), org)))
    check_sequences(books, 20 if books.backend == "sqlite" else 4)
