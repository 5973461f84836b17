"""Sub invoices and their final invoice across the lifecycle (issue 13, item 1).

* A final invoice deducts what its progress invoices received *when it is
  finalized*, not when its draft was built (domain-spec §3.8 step 5): a
  progress invoice paid in between is not billed again, and the interim
  accounts and the tax account net out.
* A sub invoice deducted on a finalized final invoice cannot be cancelled on
  its own; cancelling the final invoice first unlinks it.
* The clearing of a progress invoice's unpaid rest is booked per tax code and
  rate of the progress invoice (not all of it under the first line's code).

Each test ran red on the code before the fix and runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import date

import pytest

from engine.billing.drafts import draft_ids

from billing.helpers import make_test_org
from contexts import context

from .helpers import UC1_FINAL, UC1_SUB, ZERO, Books, D, assert_books_balance, load_model, month


def _progress_project_with_final_draft(books: Books) -> list[int]:
    """P1 (paid in full) and P2 (unpaid) of the worked example, then the
    final invoice built as a draft in June: it deducts P1 only. Returns the
    draft's id."""
    assert books.bill_month(UC1_SUB, 2024, 3, date(2024, 3, 15)).numbers == ["INV-2024-00001"]
    books.pay("INV-2024-00001", "1190.00", date(2024, 3, 28))
    assert books.bill_month(UC1_SUB, 2024, 4, date(2024, 4, 15)).numbers == ["INV-2024-00002"]
    start, end = month(2024, 6)
    step = books.bill(UC1_FINAL, start, end, date(2024, 6, 10), finalize=False)
    assert not step.run_failures
    with books.engine.connect() as conn:
        ids = draft_ids(conn, context(books.model), run_id=step.run.run_id)
    assert len(ids) == 1
    draft = books.invoices(books.t("Invoice").c.id == ids[0])[0]
    assert draft["grandtotal"] == D("2380.00")  # built while P2 was unpaid
    return ids


def test_a_payment_between_draft_and_finalization_is_deducted(books):
    ids = _progress_project_with_final_draft(books)
    books.pay("INV-2024-00002", "1190.00", date(2024, 6, 5))  # after the draft, before finalization
    report = books.finalize(ids, date(2024, 6, 10))
    assert not report.failures, report.failures
    final = books.invoice("INV-2024-00003")
    assert (final["totalnet"], final["totaltax"], final["grandtotal"]) == (D("1000.00"), D("190.00"), D("1190.00"))
    deductions = [(line["title"], line["postotalnet"], line["postotaltax"]) for line in books.lines("INV-2024-00003")
                  if line["isdeduction"]]
    assert deductions == [("Milestone 1", D("-1000.00"), D("-190.00")), ("Milestone 2", D("-1000.00"), D("-190.00"))]
    # P2 was paid, so nothing of it is cleared
    p2 = books.invoice("INV-2024-00002")
    assert [b["type"] for b in books.balances(books.t("Balance").c.invoice == p2["id"])] == ["Invoice", "Payment"]
    assert books.open_receivables("10001") == D("1190.00")
    books.pay("INV-2024-00003", "1190.00", date(2024, 6, 20))
    movements = assert_books_balance(books)
    # the interim accounts net out; the tax account holds 19 % of 3000.00 once
    assert movements == {"1200": D("3570.00"), "1776": D("-570.00"), "8400": D("-3000.00")}


def test_a_draft_whose_sub_invoices_did_not_change_is_finalized_as_built(books):
    ids = _progress_project_with_final_draft(books)
    lines_before = [(line["id"], line["postotalgross"]) for line in books.lines(books.invoices(
        books.t("Invoice").c.id == ids[0])[0]["name"])]
    report = books.finalize(ids, date(2024, 6, 10))
    assert not report.failures
    assert [(line["id"], line["postotalgross"]) for line in books.lines("INV-2024-00003")] == lines_before
    assert books.invoice("INV-2024-00003")["grandtotal"] == D("2380.00")
    assert_books_balance(books)


def test_a_deducted_sub_invoice_cannot_be_cancelled_before_its_final_invoice(books):
    ids = _progress_project_with_final_draft(books)
    assert not books.finalize(ids, date(2024, 6, 10)).failures
    for sub in ("INV-2024-00001", "INV-2024-00002"):  # deducted (paid) and cleared (unpaid)
        message = books.cancel_error(sub)
        assert "final invoice INV-2024-00003" in message and "cancel the final invoice" in message
    assert_books_balance(books)
    books.cancel("INV-2024-00003", date(2024, 6, 12))  # unlinks both
    assert [p["finalinvoice"] for p in books.invoices(books.t("Invoice").c.type == "Progress")] == [None, None]
    books.cancel("INV-2024-00001", date(2024, 6, 13))
    assert books.invoice("INV-2024-00001")["status"] == "Canceled"
    assert_books_balance(books)


def test_the_cancel_hint_names_the_final_invoice(books_sqlite):
    from engine.booking.cancel import CancelError, create_cancellation

    books = books_sqlite
    ids = _progress_project_with_final_draft(books)
    assert not books.finalize(ids, date(2024, 6, 10)).failures
    with pytest.raises(CancelError) as caught:
        with books.engine.begin() as conn:
            create_cancellation(conn, context(books.model), "INV-2024-00001", "test")
    assert "cancel INV-2024-00003 first" in (caught.value.hint or "")


# --- mixed tax rates ----------------------------------------------------------------------


MIXED_ACCOUNTS = """\
version: 1
setting: CollectiveAccount
records:
  - Name: Interim Revenue 7%
    Type: Interim Revenue
    Account: "1594"
    TaxCode: DE_7
  - Name: Interim Payment 7%
    Type: Interim Payment
    Account: "1711"
    Account2: "1594"
    TaxCode: DE_7
  - Name: Interim Tax 7%
    Type: Interim Tax
    Account: "1771"
    Account2: "1594"
    TaxCode: DE_7
  - Name: Interim Payment Clearing 7%
    Type: Interim Payment Clearing
    Account: "1711"
    TaxCode: DE_7
"""


@pytest.fixture(scope="module")
def mixed_org(tmp_path_factory):
    org = make_test_org(tmp_path_factory.mktemp("mixed") / "org")
    (org / "custom_settings/CollectiveAccount_mixed_rates.yaml").write_text(MIXED_ACCOUNTS, encoding="utf-8")
    return org, load_model(org)


@pytest.fixture
def mixed_books(mixed_org, db_url, make_books) -> Books:
    org, model = mixed_org
    return make_books(db_url, model, org)


def test_an_unpaid_progress_rest_with_mixed_tax_rates_is_cleared_per_tax_code(mixed_books):
    books = mixed_books
    common = {"on_account__c": "10001", "on_subinvoiceassignmentkey__c": "MIX", "on_invoicecriterion__c": "MIX"}
    books.insert("Usage__c", [
        {**common, "on_type__c": "Progress", "on_title__c": "Milestone 19 %", "on_unitprice__c": D("1000.00")},
        {**common, "on_type__c": "Progress", "on_title__c": "Milestone 7 %", "on_unitprice__c": D("1000.00"),
         "on_producttaxclass__c": "Reduced"},
    ])
    step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 3, 31))
    assert len(step.numbers) == 1, (step.run_failures, step.finalized.failures)
    progress = books.invoice(step.numbers[0])
    assert progress["grandtotal"] == D("2260.00")  # 1190.00 + 1070.00
    books.pay(progress["name"], "1000.00", date(2024, 4, 15))
    books.insert("Usage__c", [{**common, "on_type__c": "Final", "on_title__c": "Project", "on_unitprice__c": D("3000.00"),
                               "on_invoicecriterion__c": "MIX-F"}])
    step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 6, 30))
    assert len(step.numbers) == 1, (step.run_failures, step.finalized.failures)
    clearing = [(d["taxcode"], d["accountno"], d["amount"]) for d in books.details_of(progress["name"])
                if d["type"] == "Interim Revenue" and d["amount"] < 0]
    assert sorted(clearing) == [("DE_19", "1593", D("-663.45")), ("DE_7", "1594", D("-596.55"))]
    movements = assert_books_balance(books)
    for interim in ("1593", "1594", "1711", "1718"):  # every interim account nets to zero, per tax code
        assert movements.get(interim, ZERO) == 0, (interim, movements)


def test_clearing_parts_follow_what_is_unpaid_per_group():
    from engine.booking.final_invoices import clearing_parts

    gross = {("DE_19", D("19"), "DE_19"): D("1190.00"), ("DE_7", D("7"), "DE_7"): D("1070.00")}
    received = {("DE_19", D("19"), "DE_19"): D("526.55"), ("DE_7", D("7"), "DE_7"): D("473.45")}
    assert clearing_parts(D("1260.00"), gross, received) == [
        (("DE_19", D("19"), "DE_19"), D("663.45")), (("DE_7", D("7"), "DE_7"), D("596.55"))]
    # without payment bookings: in proportion to the gross
    assert clearing_parts(D("2260.00"), gross, {}) == [
        (("DE_19", D("19"), "DE_19"), D("1190.00")), (("DE_7", D("7"), "DE_7"), D("1070.00"))]
