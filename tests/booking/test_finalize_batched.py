"""Final invoices finalized together give what one at a time gave (issue 19).

Finalization decides a batch's final invoices together: their deductions are
rebuilt with one read of all their sub invoices and lines
(:func:`engine.booking.final_invoices.refresh_final_invoices`), and their sub
invoices are linked, cleared and their interim revenue reversed with a few
statements for all of them (:func:`engine.booking.final_invoices.settle_final_invoices`).
The differential test builds the same projects in two databases — progress
invoices with mixed tax rates, paid in full, in part or not at all, a payment
arriving after the final invoice's draft was built (so its deductions are
rebuilt) — and finalizes the final invoice drafts all at once in one and
one call per invoice in the other: every invoice, line, balance, booking
detail and installment is the same, apart from record ids and timestamps.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.billing.drafts import draft_ids
from engine.storage.db import private_schema

from billing.helpers import norm
from contexts import context

from .helpers import Books, D, assert_books_balance
from .test_lifecycle_finals import mixed_org  # noqa: F401 - the mixed-rates org, a fixture

#: Columns that name a record rather than say what it holds (ids, AutoNumber
#: names of balances and details, timestamps), left out of the comparison.
_IDENTITY = {"id", "createddate", "lastmodifieddate"}
_NAMED_BY_COUNTER = ("Balance", "BookingDetail", "Installment", "BookingPeriod")
#: (account, paid on the progress invoice before the draft, paid after it).
_PROJECTS = (("10001", "2260.00", None), ("20002", "1000.00", None), ("20003", None, "500.00"),
             ("10004", "300.00", "200.00"))


@pytest.fixture
def second_url(db_url, tmp_path):
    """A second empty database on the backend of ``db_url``."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    from sqlalchemy.engine import make_url

    server = make_url(db_url).set(query={}).render_as_string(hide_password=False)
    with private_schema(server, "mbt") as url:
        yield url


def _usage(account: str, key: str, kind: str, title: str, price: str, **extra) -> dict:
    return {"on_account__c": account, "on_subinvoiceassignmentkey__c": key, "on_invoicecriterion__c": f"{key}-{kind}",
            "on_type__c": kind, "on_title__c": title, "on_unitprice__c": D(price), **extra}


def _final_drafts(books: Books) -> list[int]:
    """The projects of :data:`_PROJECTS`, up to their final invoices as drafts
    (accounts 2000x: domestic customers like 10001)."""
    template = books.select("Account", books.t("Account").c.accountnumber == "10001")[0]
    books.insert("Account", [{**{k: v for k, v in template.items() if k not in _IDENTITY},
                              "name": f"Customer {number}", "accountnumber": number, "on_debtorno__c": number}
                             for number in ("20002", "20003")])
    books.insert("Usage__c", [
        row for account, _, _ in _PROJECTS for row in (
            _usage(account, f"P{account}", "Progress", "Milestone 19 %", "1000.00"),
            _usage(account, f"P{account}", "Progress", "Milestone 7 %", "1000.00", on_producttaxclass__c="Reduced"),
        )])
    step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 3, 31))
    assert len(step.numbers) == len(_PROJECTS), (step.run_failures, step.finalized.failures)
    progress = {account: books.invoices(books.t("Invoice").c.account == books.account_id(account))[0]["name"]
                for account, _, _ in _PROJECTS}
    for account, before, _ in _PROJECTS:
        if before:
            books.pay(progress[account], before, date(2024, 4, 15))
    books.insert("Usage__c", [_usage(account, f"P{account}", "Final", "Project", "3000.00")
                              for account, _, _ in _PROJECTS])
    step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 6, 10), finalize=False)
    with books.engine.connect() as conn:
        finals = draft_ids(conn, context(books.model), run_id=step.run.run_id)
    assert len(finals) == len(_PROJECTS)
    for account, _, after in _PROJECTS:
        if after:  # after the draft was built: its deductions change at finalization
            books.pay(progress[account], after, date(2024, 6, 5))
    return finals


def _state(books: Books) -> dict[str, list]:
    """Every row of the tables finalization writes, without record identity,
    backend-independent, sorted."""
    state = {}
    for name in ("Invoice", "InvoiceLineItem", "Balance", "BookingDetail", "Installment", "BookingPeriod",
                 "NumberRange"):
        skip = _IDENTITY | ({"name"} if name in _NAMED_BY_COUNTER else set()) | {"timestamp"}
        if name == "BookingDetail":
            skip |= {"balance", "bookingperiod"}  # ids of records compared on their own
        rows = [tuple(sorted((key, norm(value)) for key, value in row.items() if key not in skip))
                for row in books.select(name)]
        state[name] = sorted(rows, key=repr)
    return state


def test_final_invoices_finalized_together_match_one_at_a_time(mixed_org, db_url, second_url, make_books):
    org, model = mixed_org
    together, one_by_one = make_books(db_url, model, org), make_books(second_url, model, org)
    finals = _final_drafts(together)
    assert _final_drafts(one_by_one) == finals

    report = together.finalize(finals, date(2024, 6, 10))
    reports = [one_by_one.finalize([final], date(2024, 6, 10)) for final in finals]

    assert [(f.invoice_id, f.number, f.grand_total) for f in report.finalized] == \
        [(f.invoice_id, f.number, f.grand_total) for r in reports for f in r.finalized]
    assert list(report.failures) == [failure for r in reports for failure in r.failures]
    assert not report.failures and len(report.finalized) == len(_PROJECTS)
    assert _state(together) == _state(one_by_one)
    # The rebuilt deductions and the clearings are what the lifecycle asks for: the books balance.
    movements = assert_books_balance(together)
    for interim in ("1593", "1594", "1711", "1718"):
        assert movements.get(interim, Decimal(0)) == 0, (interim, movements)
    cleared = [b for b in together.balances() if b["type"] == "Clearing"]
    # every project but the one paid in full has an unpaid rest to clear
    assert {b["clearingreason"] for b in cleared} == {"Final Invoice"} and len(cleared) == 3
