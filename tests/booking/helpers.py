"""Shared helpers of the booking tests: a harness that drives the engine the
way a user does (load the sample data, run filters month by month, finalize,
register payments, cancel) and reads the books back, plus the accounting
invariants every scenario must keep.

The invariants (:func:`assert_books_balance`) are computed from *all*
booking details of the database with :func:`engine.booking.postings.account_movements`
(debit positive, credit negative), never from what a single call returned:

* every posting is well formed (two decimals, debit != credit account);
* Σ debit == Σ credit overall and per invoice;
* the customer's debtor account equals what the balances say the customer
  owes: Σ of all its Balance records, i.e. the open invoice balances plus
  free (unassigned) balances;
* each payment balance moves the debtor by exactly its amount;
* each invoice's own (non-balance) bookings move the debtor by its grand
  total, plus the final-invoice clearing of a progress invoice's unpaid rest.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import sqlalchemy as sa

from engine.booking.cancel import create_cancellation
from engine.billing.drafts import draft_ids
from engine.booking.finalize import FinalizeReport, finalize_invoices
from engine.billing.run import RunReport, RunRequest, run_invoices
from engine.booking.postings import account_movements, check_postings, sides
from engine.cash.payments import Registered, register_payment
from engine.config.model import OrgModel
from engine.storage.bulk import RowWriter

from config.orgcopy import copy_org
from contexts import context
from databases import load_model

__all__ = ["Books", "D", "ORDERS", "UC1_FINAL", "UC1_SUB", "ZERO", "assert_books_balance", "load_model", "month",
           "org_variant"]

ZERO = Decimal("0.00")
UC1_SUB, UC1_FINAL = ("UC1 Sub Invoice",), ("UC1 Final Invoice",)
ORDERS = ("Order Sub Invoice", "Order Invoice")


def D(text: str | int) -> Decimal:  # noqa: N802 - reads like a literal
    return Decimal(text)


def org_variant(dest: Path, *edits) -> Path:
    """A copy of the sample org with exact-text edits (config.orgcopy)."""
    org = copy_org(dest)
    for edit in edits:
        edit.apply(org)
    return org


def month(year: int, number: int) -> tuple[date, date]:
    """First and last day of a month."""
    start = date(year, number, 1)
    following = date(year + number // 12, number % 12 + 1, 1)
    return start, following - timedelta(days=1)


def clean(movements: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Movements without the accounts that net to zero."""
    return {k: v for k, v in movements.items() if v != 0}


@dataclass
class Step:
    run: RunReport
    finalized: FinalizeReport

    @property
    def numbers(self) -> list[str]:
        return [f.number for f in self.finalized.finalized]

    @property
    def run_failures(self) -> list[str]:
        return [f.message for fr in self.run.filters for f in fr.failures]


class Books:
    """A database with the org's schema and the sample data."""

    def __init__(self, engine: sa.Engine, model: OrgModel, url: str, org_dir: Path):
        self.engine = engine
        self.model = model
        self.url = url
        self.org_dir = org_dir
        self.tables = context(model).metadata.tables

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def t(self, object_name: str) -> sa.Table:
        return self.tables[self.model.require(object_name).table_name]

    # -- driving the engine -------------------------------------------------------

    def bill(self, filters: Sequence[str], start: date, end: date, invoice_date: date | None = None, *,
             finalize: bool = True, today: date | None = None) -> Step:
        """Run the filters over the period and finalize the run's drafts."""
        when = today or invoice_date or end
        request = RunRequest(tuple(filters), start, end, invoice_date=invoice_date, today=when)
        report = run_invoices(self.engine, context(self.model), request)
        with self.engine.connect() as conn:
            ids = draft_ids(conn, context(self.model), run_id=report.run_id)
        finalized = self.finalize(ids, when) if finalize else FinalizeReport()
        return Step(report, finalized)

    def bill_month(self, filters: Sequence[str], year: int, number: int, invoice_date: date | None = None) -> Step:
        start, end = month(year, number)
        return self.bill(filters, start, end, invoice_date or end)

    def finalize(self, ids: Iterable[int], today: date) -> FinalizeReport:
        report = finalize_invoices(self.engine, context(self.model), list(ids), today=today)
        return report

    def pay(self, invoice_name: str, amount: Decimal | str, when: date) -> Registered:
        with self.engine.begin() as conn:
            return register_payment(conn, context(self.model), invoice_name, Decimal(amount), when)

    def cancel(self, invoice_name: str, when: date, reason: str = "test") -> str:
        """Cancel a finalized invoice; returns the cancellation's number."""
        with self.engine.begin() as conn:
            draft = create_cancellation(conn, context(self.model), invoice_name, reason)
        report = self.finalize([draft], when)
        assert not report.failures, report.failures
        return report.finalized[0].number

    def cancel_error(self, invoice_name: str) -> str:
        """The message of a refused cancellation (nothing is written)."""
        from engine.booking.cancel import CancelError

        try:
            with self.engine.begin() as conn:
                create_cancellation(conn, context(self.model), invoice_name, "test")
        except CancelError as error:
            return str(error)
        raise AssertionError(f"{invoice_name} could be cancelled")

    def insert(self, object_name: str, records: list[dict]) -> list[int]:
        with self.engine.begin() as conn:
            RowWriter(conn, self.model.require(object_name)).insert(records)
        return [r["id"] for r in records]

    def execute(self, sql: str, **params) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    # -- reading ------------------------------------------------------------------

    def select(self, object_name: str, *where) -> list[dict]:
        table = self.t(object_name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where).order_by(table.c.id))]

    def invoice(self, name: str) -> dict:
        rows = self.select("Invoice", self.t("Invoice").c.name == name)
        assert len(rows) == 1, f"{len(rows)} invoices named {name}"
        return rows[0]

    def invoices(self, *where) -> list[dict]:
        return self.select("Invoice", *where)

    def lines(self, invoice_name: str) -> list[dict]:
        table = self.t("InvoiceLineItem")
        invoice_id = self.invoice(invoice_name)["id"]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.invoice == invoice_id).order_by(table.c.sequence, table.c.id))
            return [dict(r._mapping) for r in rows]

    def details(self, *where) -> list[dict]:
        return self.select("BookingDetail", *where)

    def details_of(self, invoice_name: str) -> list[dict]:
        return self.details(self.t("BookingDetail").c.invoiceno == invoice_name)

    def balances(self, *where) -> list[dict]:
        return self.select("Balance", *where)

    def account_id(self, number: str) -> int:
        rows = self.select("Account", self.t("Account").c.accountnumber == number)
        assert len(rows) == 1
        return rows[0]["id"]

    def movements(self, details: Iterable[Mapping] | None = None) -> dict[str, Decimal]:
        """Net movement per account over all booking details (debit +, credit -)."""
        return clean(account_movements(self.details() if details is None else details))

    def postings(self, invoice_name: str) -> list[tuple]:
        """(type, account no, contra, amount, tax code) of an invoice's bookings, in id order."""
        return [(d["type"], d["accountno"], d["contraaccountno"], d["amount"], d["taxcode"])
                for d in self.details_of(invoice_name)]

    def open_receivables(self, account_number: str) -> Decimal:
        """Σ Invoice.Balance of the account's Open invoices."""
        account = self.account_id(account_number)
        return sum((i["balance"] for i in self.invoices(self.t("Invoice").c.account == account)
                    if i["status"] == "Open"), ZERO)

    def free_balances(self, account_number: str) -> Decimal:
        account = self.account_id(account_number)
        t = self.t("Balance")
        return sum((b["amount"] for b in self.balances(t.c.account == account, t.c.invoice.is_(None))), ZERO)

    def source_invoice(self, object_name: str, column: str, key_field: str, key: str):
        rows = self.select(object_name, self.t(object_name).c[key_field.lower()] == key)
        assert len(rows) == 1
        return rows[0][column.lower()]


# --- invariants -------------------------------------------------------------------------


def assert_debits_equal_credits(details: Sequence[Mapping], what: str) -> None:
    """Σ debit == Σ credit, from the side each booking posts to, and the
    accounts' net movements sum to zero."""
    debit: dict[str, Decimal] = defaultdict(lambda: ZERO)
    credit: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for detail in details:
        debit_account, credit_account = sides(detail)
        debit[str(debit_account)] += abs(detail["amount"])
        credit[str(credit_account)] += abs(detail["amount"])
    assert sum(debit.values(), ZERO) == sum(credit.values(), ZERO), what
    assert sum(account_movements(details).values(), ZERO) == 0, what


def assert_books_balance(books: Books) -> dict[str, Decimal]:
    """The accounting invariants over the whole booking-detail table; returns
    the account movements for scenario-specific checks."""
    details = books.details()
    check_postings(details)  # two decimals, debit != credit, Σ debit == Σ credit
    movements = account_movements(details)
    assert_debits_equal_credits(details, "all bookings")

    by_invoice: dict[object, list[dict]] = defaultdict(list)
    for detail in details:
        by_invoice[detail["invoice"]].append(detail)
    for invoice_id, group in by_invoice.items():
        assert_debits_equal_credits(group, f"invoice {invoice_id}")

    invoices = {i["id"]: i for i in books.invoices()}
    accounts = {a["id"]: a for a in books.select("Account")}
    balances = books.balances()

    # Each debtor equals what the customer owes according to the balances.
    owed: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for balance in balances:
        owed[str(accounts[balance["account"]]["on_debtorno__c"])] += balance["amount"]
    for account in accounts.values():
        debtor = str(account["on_debtorno__c"])
        booked = movements.get(debtor, ZERO)
        assert booked == owed[debtor], f"debtor {debtor}: books {booked}, balances {owed[debtor]}"
        open_invoices = sum((i["balance"] for i in invoices.values()
                             if i["account"] == account["id"] and i["status"] == "Open"), ZERO)
        free = sum((b["amount"] for b in balances if b["account"] == account["id"] and b["invoice"] is None), ZERO)
        assert booked == open_invoices + free, f"debtor {debtor}: books {booked}, open {open_invoices} + free {free}"

    # Each payment balance moves its debtor by exactly its amount.
    balance_details: dict[int, list[dict]] = defaultdict(list)
    for detail in details:
        if detail["balance"] is not None:
            balance_details[detail["balance"]].append(detail)
    for balance in balances:
        if balance["type"] != "Payment":
            continue
        debtor = str(accounts[balance["account"]]["on_debtorno__c"])
        moved = account_movements(balance_details.get(balance["id"], [])).get(debtor, ZERO)
        assert moved == balance["amount"], f"payment balance {balance['id']} moves {debtor} by {moved}"

    # Each finalized invoice's own bookings move its debtor by its grand total
    # (plus, on a progress invoice, the reversal of its cleared unpaid rest).
    cleared = defaultdict(lambda: ZERO)
    for balance in balances:
        if balance["type"] == "Clearing" and balance["clearingreason"] == "Final Invoice":
            cleared[balance["invoice"]] += balance["amount"]
    for invoice in invoices.values():
        if invoice["status"] in ("Draft", "Pre-Draft"):
            assert not by_invoice.get(invoice["id"]), f"draft {invoice['name']} has bookings"
            continue
        own = [d for d in by_invoice.get(invoice["id"], []) if d["balance"] is None]
        debtor = str(accounts[invoice["account"]]["on_debtorno__c"])
        moved = account_movements(own).get(debtor, ZERO)
        assert moved == invoice["grandtotal"] + cleared[invoice["id"]], (
            f"{invoice['name']}: debtor moved {moved}, grand total {invoice['grandtotal']}"
        )
    return clean(movements)
