"""Shared helpers of the cash tests: driving payments, write-offs, refunds
and the assignment job on a :class:`booking.helpers.Books` database, and the
cash invariants every scenario keeps.

The invariants (:func:`assert_cash_invariants`) are computed from the whole
Balance, Invoice, Account and BookingDetail tables:

* each finalized invoice (Open or Paid) has balance == grand total + Σ of
  its other balances, and status Paid exactly when that is zero;
* each account's stored Balance == Σ of all its balances;
* the booking invariants hold over all booking details (two decimals,
  debit != credit, Σ debit == Σ credit);
* each debtor's net movement == Σ of its account's balances (the books and
  the balances tell the same story);
* per money flow: the bookings of a balance move the debtor by the sum of
  the balance and the parts split off it (SplitFrom), as splitting and
  assigning book nothing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import apply_finalization_write_offs
from engine.booking.postings import account_movements, check_postings
from engine.cash.assignment import assign_balances
from engine.cash.payments import (
    PaymentDetails,
    manual_write_off,
    register_account_payment,
    register_payment,
    register_refund,
)

from booking.helpers import ZERO, Books
from booking.test_balanced_books import bill_orders
from contexts import context


class CashBooks(Books):
    """Books whose finalization also runs the finalization write-off step
    (:func:`engine.booking.balances.apply_finalization_write_offs`), the way
    finalize.py calls it once wired: right after the invoices are final."""

    def finalize(self, ids, today):
        report = super().finalize(ids, today)
        numbers = [f.number for f in report.finalized]
        if numbers:
            table = self.t("Invoice")
            with self.engine.begin() as conn:
                rows = [dict(r) for r in conn.execute(sa.select(table).where(table.c.name.in_(numbers))).mappings()]
                apply_finalization_write_offs(conn, context(self.model), rows, today)
        return report


def cash_books(books: Books) -> CashBooks:
    return CashBooks(books.engine, books.model, books.url, books.org_dir)


def billed(books: Books) -> Books:
    """The sample orders billed over 2024 (ten invoices on four accounts)."""
    bill_orders(books)
    return books


def pay(books: Books, invoice: str, amount: str | Decimal, when: date = date(2024, 11, 1), **details):
    with books.engine.begin() as conn:
        return register_payment(conn, context(books.model), invoice, Decimal(amount), when, details=PaymentDetails(**details))


def pay_account(books: Books, account: str, amount: str | Decimal, when: date = date(2024, 11, 1),
                balance_type: str = "Payment", **details):
    with books.engine.begin() as conn:
        return register_account_payment(conn, context(books.model), account, Decimal(amount), when,
                                        balance_type=balance_type, details=PaymentDetails(**details))


def refund(books: Books, amount: str | Decimal, when: date = date(2024, 11, 2), **target):
    with books.engine.begin() as conn:
        return register_refund(conn, context(books.model), Decimal(amount), when, **target)


def write_off(books: Books, invoice: str, amount: str | Decimal | None, reason: str = "Uncollectible",
              when: date = date(2024, 11, 3), **options):
    with books.engine.begin() as conn:
        return manual_write_off(conn, context(books.model), invoice, None if amount is None else Decimal(amount), when,
                                reason=reason, **options)


def assign(books: Books, today: date = date(2024, 12, 1)):
    with books.engine.begin() as conn:
        return assign_balances(conn, context(books.model), today, run="test")


def balances_of(books: Books, invoice: str) -> list[dict]:
    return books.balances(books.t("Balance").c.invoice == books.invoice(invoice)["id"])


def free_of(books: Books, account: str) -> list[dict]:
    t = books.t("Balance")
    return books.balances(t.c.account == books.account_id(account), t.c.invoice.is_(None))


def assert_cash_invariants(books: Books) -> None:
    balances = books.balances()
    invoices = books.invoices()
    accounts = books.select("Account")
    details = books.details()

    by_invoice: dict[int, list[dict]] = defaultdict(list)
    by_account: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for balance in balances:
        by_account[balance["account"]] += balance["amount"]
        if balance["invoice"] is not None:
            by_invoice[balance["invoice"]].append(balance)
    for invoice in invoices:
        if invoice["status"] not in ("Open", "Paid"):
            continue
        assigned = sum((b["amount"] for b in by_invoice[invoice["id"]] if b["type"] != "Invoice"), ZERO)
        expected = invoice["grandtotal"] + assigned
        assert invoice["balance"] == expected, f"{invoice['name']}: balance {invoice['balance']} != {expected}"
        assert invoice["status"] == ("Paid" if expected == 0 else "Open"), f"{invoice['name']}: {invoice['status']}"
    for account in accounts:
        assert account["balance"] == by_account[account["id"]], (
            f"account {account['accountnumber']}: stored {account['balance']}, balances {by_account[account['id']]}")

    check_postings(details)
    movements = account_movements(details)
    for account in accounts:
        debtor = str(account["on_debtorno__c"])
        assert movements.get(debtor, ZERO) == by_account[account["id"]], (
            f"debtor {debtor}: books {movements.get(debtor, ZERO)}, balances {by_account[account['id']]}")

    family: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for balance in balances:
        family[balance["splitfrom"] or balance["id"]] += balance["amount"]
    booked: dict[int, list[dict]] = defaultdict(list)
    for detail in details:
        if detail["balance"] is not None:
            booked[detail["balance"]].append(detail)
    names = {a["id"]: str(a["on_debtorno__c"]) for a in accounts}
    for balance in balances:
        if balance["id"] not in booked:
            continue
        moved = account_movements(booked[balance["id"]]).get(names[balance["account"]], ZERO)
        assert moved == family[balance["id"]], f"{balance['name']}: booked {moved}, family {family[balance['id']]}"


def stored_account_balance(books: Books, account: str) -> Decimal:
    return books.select("Account", books.t("Account").c.accountnumber == account)[0]["balance"]
