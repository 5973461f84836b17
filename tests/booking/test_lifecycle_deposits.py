"""Deposit invoices (issue 13; domain-spec §4.10).

``ON_Type = Deposit`` bills a down payment: ``ON_DepositRate`` percent of
the lines (or ``ON_DepositAmount``, split over them); finalized and paid as
usual, booked only with ``CreateBookkeepingDataForDeposit`` and then as a
down payment (Interim Revenue, with the tax arising on receipt), never as
revenue; its final invoice deducts what was paid on it and closes it.
Without that switch, while bookkeeping is on, finalization refuses a deposit
invoice and validate-config reports a source that can produce one (E094).

Before: a deposit was billed and booked as an ordinary invoice (Revenue and
Tax on finalization), and the final invoice did not deduct it.
"""

from __future__ import annotations

from datetime import date

import pytest

from engine.billing.build import BuildError, deposit_share
from engine.project import load_project

from billing.helpers import make_test_org
from config.orgcopy import InsertAfter, Replace, line_of, read_text

from .helpers import ZERO, Books, D, assert_books_balance, load_model

YEAR = (date(2024, 1, 1), date(2024, 12, 31))
DEPOSIT_FIELDS = ("  ON_DepositRate__c: {type: Percent, precision: 6, scale: 3, label: Deposit Rate}\n"
                  "  ON_DepositAmount__c: {type: Currency, precision: 16, scale: 2, label: Deposit Amount}")
SWITCH_OFF = "  CreateBookkeepingDataForDeposit: false"


def _deposit_org(dest, *, booked: bool):
    org = make_test_org(dest)
    InsertAfter("metadata/objects/Usage__c.yaml", "fields:", DEPOSIT_FIELDS).apply(org)
    if booked:
        Replace("custom_settings/GlobalSettings.yaml", SWITCH_OFF, "  CreateBookkeepingDataForDeposit: true").apply(org)
    return org


@pytest.fixture(scope="module")
def deposit_org(tmp_path_factory):
    org = _deposit_org(tmp_path_factory.mktemp("deposit") / "org", booked=True)
    return org, load_model(org)


@pytest.fixture
def deposits(deposit_org, db_url, make_books) -> Books:
    org, model = deposit_org
    return make_books(db_url, model, org)


def _bill(books: Books, today: date, **usage) -> list[str]:
    books.insert("Usage__c", [{"on_account__c": "10001", "on_subinvoiceassignmentkey__c": "DEP", **usage}])
    step = books.bill(("Usage",), *YEAR, today=today)
    assert not step.run_failures and not step.finalized.failures, (step.run_failures, step.finalized.failures)
    return step.numbers


def test_a_deposit_is_a_down_payment_deducted_and_closed_by_its_final_invoice(deposits):
    books = deposits
    [deposit] = _bill(books, date(2024, 3, 31), on_type__c="Deposit", on_title__c="Project",
                      on_unitprice__c=D("10000.00"), on_depositrate__c=D("30"), on_invoicecriterion__c="D")
    invoice = books.invoice(deposit)
    assert (invoice["type"], invoice["totalnet"], invoice["grandtotal"]) == ("Deposit", D("3000.00"), D("3570.00"))
    # booked as a down payment: interim revenue, no revenue and no tax yet
    assert books.postings(deposit) == [("Interim Revenue", "1593", None, D("3570.00"), "DE_19")]
    books.pay(deposit, "3570.00", date(2024, 4, 10))
    assert [p[0] for p in books.postings(deposit)] == ["Interim Revenue", "Payment", "Interim Payment", "Interim Tax"]

    [final] = _bill(books, date(2024, 6, 30), on_type__c="Final", on_title__c="Project",
                    on_unitprice__c=D("10000.00"), on_invoicecriterion__c="F")
    final_row = books.invoice(final)
    assert (final_row["totalnet"], final_row["totaltax"], final_row["grandtotal"]) == (
        D("7000.00"), D("1330.00"), D("8330.00"))
    deposit_row = books.invoice(deposit)
    assert (deposit_row["status"], deposit_row["finalinvoice"]) == ("Closed", final_row["id"])
    movements = assert_books_balance(books)
    assert movements.get("1593", ZERO) == 0 and movements.get("1718", ZERO) == 0
    assert movements["8400"] == D("-10000.00") and movements["1776"] == D("-1900.00")  # 19 % of 10000 once
    assert movements["10001"] == D("8330.00")


def test_an_unpaid_deposit_is_cleared_and_closed(deposits):
    books = deposits
    [deposit] = _bill(books, date(2024, 3, 31), on_type__c="Deposit", on_title__c="Project",
                      on_unitprice__c=D("10000.00"), on_depositamount__c=D("2500.00"), on_invoicecriterion__c="D")
    assert books.invoice(deposit)["totalnet"] == D("2500.00")
    [final] = _bill(books, date(2024, 6, 30), on_type__c="Final", on_title__c="Project",
                    on_unitprice__c=D("10000.00"), on_invoicecriterion__c="F")
    assert books.invoice(final)["grandtotal"] == D("11900.00")  # nothing was paid: nothing deducted
    deposit_row = books.invoice(deposit)
    assert (deposit_row["status"], deposit_row["balance"]) == ("Closed", ZERO)
    movements = assert_books_balance(books)
    assert movements.get("1593", ZERO) == 0 and movements["10001"] == D("11900.00")
    assert movements["8400"] == D("-10000.00")


def test_a_payment_on_a_closed_deposit_is_refused(deposits):
    books = deposits
    [deposit] = _bill(books, date(2024, 3, 31), on_type__c="Deposit", on_title__c="Project",
                      on_unitprice__c=D("1000.00"), on_depositrate__c=D("50"), on_invoicecriterion__c="D")
    _bill(books, date(2024, 6, 30), on_type__c="Final", on_title__c="Project", on_unitprice__c=D("1000.00"),
          on_invoicecriterion__c="F")
    from engine.cash.payments import PaymentError

    with pytest.raises(PaymentError, match="Closed"):
        books.pay(deposit, "10.00", date(2024, 7, 1))


@pytest.fixture(scope="module")
def unbooked_org(tmp_path_factory):
    org = _deposit_org(tmp_path_factory.mktemp("deposit-off") / "org", booked=False)
    return org, load_model(org)


def test_without_the_switch_a_deposit_is_refused_not_booked_as_revenue(unbooked_org, db_url, make_books):
    org, model = unbooked_org
    books = make_books(db_url, model, org)
    books.insert("Usage__c", [{"on_account__c": "10001", "on_subinvoiceassignmentkey__c": "DEP", "on_type__c": "Deposit",
                               "on_title__c": "Project", "on_unitprice__c": D("1000.00"), "on_depositrate__c": D("30")}])
    step = books.bill(("Usage",), *YEAR, today=date(2024, 3, 31))
    [(_, message)] = step.finalized.failures
    assert "deposit invoice" in message and "CreateBookkeepingDataForDeposit" in message
    assert books.details() == []  # nothing booked, least of all revenue
    assert [i["status"] for i in books.invoices()] == ["Draft"]


def test_validate_config_reports_a_source_that_can_produce_deposits(tmp_path):
    org = _deposit_org(tmp_path / "org", booked=False)
    picklist = "  ON_Type__c: {type: Picklist, values: [Standard, Deposit, Final], label: Invoice Type}"
    Replace("metadata/objects/Usage__c.yaml", "  ON_Type__c: {type: Text, length: 40, label: Invoice Type}",
            picklist).apply(org)
    found = [d for d in load_project(org).diagnostics if d.code == "E094"]
    assert len(found) == 1 and found[0].is_error
    assert (found[0].location.file, found[0].location.line) == (
        "metadata/objects/Usage__c.yaml", line_of(read_text(org, "metadata/objects/Usage__c.yaml"), picklist.strip()))
    assert "CreateBookkeepingDataForDeposit" in found[0].message
    # with the switch on, the same source is fine
    Replace("custom_settings/GlobalSettings.yaml", SWITCH_OFF, "  CreateBookkeepingDataForDeposit: true").apply(org)
    assert not [d for d in load_project(org).diagnostics if d.code == "E094"]


def test_deposit_shares():
    lines = [{"quantity": D("2"), "unitprice": D("100.00")}, {"quantity": D("1"), "unitprice": D("33.33")}]
    rate = [dict(line) for line in lines]
    deposit_share({"depositrate": D("30")}, rate)
    assert [(line["quantity"], line["unitprice"]) for line in rate] == [(D(1), D("60.00")), (D(1), D("10.00"))]
    amount = [dict(line) for line in lines]
    deposit_share({"depositamount": D("100.00")}, amount)
    assert sum(line["unitprice"] for line in amount) == D("100.00")
    untouched = [dict(line) for line in lines]
    deposit_share({}, untouched)
    assert untouched == lines
    with pytest.raises(BuildError):
        deposit_share({"depositrate": D("30"), "depositamount": D("10.00")}, [dict(line) for line in lines])
    with pytest.raises(BuildError):
        deposit_share({"depositrate": D("130")}, [dict(line) for line in lines])
