"""Seed 000's business-process mapping, one test (or more) per row, on
SQLite and PostgreSQL, with the integration switched on:

| billing                               | cash management                        |
|---------------------------------------|----------------------------------------|
| invoice finalization                  | entry creation (+ entry assignment)    |
| invoice cancellation                  | entry cancellation                     |
| payment plan modification             | entry cancellation + entry creation    |
| invoice/credit offset                 | entry settlement                       |
| partial credit                        | entry reduction                        |
| prepayment balance handling           | prepaid entry assignment on finalization |
| payment assignment on finalization    | payment assignment on finalization     |
| registered payments                   | Payment + Entry Item, balances JPAY1   |
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.cash.cm_core import CashManagementError, ORIGIN
from engine.cash.cm_payments import record_cash_payment
from engine.cash.cm_plans import change_payment_plan
from engine.cash.cm_settlement import create_partial_credit, settle_invoices
from engine.cash.installments import add_months

from booking.helpers import ORDERS, ZERO
from booking.test_balanced_books import bill_orders, order_item
from cash.helpers import assert_cash_invariants, assign, pay_account

from .helpers import CMBooks, assert_entries_match, pay_cm
from contexts import context

D = Decimal


def check(books: CMBooks) -> None:
    assert_entries_match(books)
    assert_cash_invariants(books)


@pytest.fixture
def billed(cm) -> CMBooks:
    bill_orders(cm)
    return cm


# --- invoice finalization → entry creation ------------------------------------------------


def test_finalization_creates_one_entry_per_invoice(billed):
    invoice = billed.invoice("INV-2024-00004")
    (entry,) = billed.entries("INV-2024-00004")
    assert {k: entry[k] for k in ("type", "status", "bptype", "bpnumber", "openamount", "amount", "duedate",
                                  "statementtype", "statementno", "statementdate", "paymentreference", "title",
                                  "currencyisocode", "businessentity", "account")} == {
        "type": "Debit", "status": "Open", "bptype": "Debtor", "bpnumber": "10004", "openamount": D("892.50"),
        "amount": D("892.50"), "duedate": invoice["paymentduedate"], "statementtype": "Invoice",
        "statementno": "INV-2024-00004", "statementdate": invoice["date"], "paymentreference": "INV-2024-00004",
        "title": "Invoice INV-2024-00004", "currencyisocode": "EUR", "businessentity": invoice["businessentity"],
        "account": invoice["account"]}
    assert entry["assignmentkey"] == f"Invoice:{invoice['id']}"
    assert entry["confighash"] == billed.model.config_hash and entry["invoice"] == invoice["id"]
    # ten invoices, ten entries; the progress invoices cleared by their final invoice are settled by reductions
    assert len(billed.entries()) == 10
    for name in ("INV-2024-00008", "INV-2024-00009"):
        (cleared,) = billed.entries(name)
        assert (cleared["status"], cleared["amount"]) == ("Settled", ZERO)
        assert [r["reason"] for r in billed.reductions(cleared)] == ["Final Invoice"]
    check(billed)


def test_integration_off_creates_nothing(billed_off):
    assert billed_off.entries() == [] and billed_off.select("Installment") == []


def _drafts_of_january(cm: CMBooks, plan: str | None) -> list[dict]:
    step = cm.bill(ORDERS, date(2024, 1, 1), date(2024, 1, 31), date(2024, 1, 31), finalize=False)
    drafts = cm.invoices(cm.t("Invoice").c.status == "Draft")
    assert drafts, step.run_failures
    if plan is not None:
        cm.execute("UPDATE invoice SET installmenttype = :plan WHERE status = 'Draft'", plan=plan)
    return drafts


def test_payment_plan_at_finalization_gives_one_entry_per_installment(cm):
    (draft,) = _drafts_of_january(cm, "Monthly x12")
    report = cm.finalize([draft["id"]], date(2024, 1, 31))
    assert not report.failures
    invoice = cm.invoice(report.finalized[0].number)
    installments = cm.installments(invoice["name"])
    assert len(installments) == 12
    assert sum(i["amount"] for i in installments) == invoice["grandtotal"] == D("1249.19")
    assert [i["amount"] for i in installments] == [D("104.09")] * 11 + [D("104.20")]
    entries = cm.entries(invoice["name"])
    due = invoice["paymentduedate"]
    assert [(e["statementtype"], e["statementno"], e["openamount"], e["duedate"]) for e in entries[:2]] == [
        ("Installment", f"{invoice['name']}/1", D("104.09"), add_months(due, 1)),
        ("Installment", f"{invoice['name']}/2", D("104.09"), add_months(due, 2)),
    ]
    assert [e["installment"] for e in entries] == [i["id"] for i in installments]
    assert (invoice["nextpaymentdue"], invoice["nextpaymentduedate"]) == (D("104.09"), add_months(due, 1))
    # a payment settles the installments oldest first, splitting its balance per entry item
    pay_cm(cm, invoice["name"], "250.00", date(2024, 3, 5))
    entries = cm.entries(invoice["name"])
    assert [e["amount"] for e in entries[:4]] == [ZERO, ZERO, D("62.27"), D("104.09")]
    assert [e["status"] for e in entries[:3]] == ["Settled", "Settled", "Open"]
    assert [i["openpaymentamount"] for i in cm.installments(invoice["name"])[:3]] == [ZERO, ZERO, D("62.27")]
    parts = [b for b in cm.balances(cm.t("Balance").c.invoice == invoice["id"]) if b["type"] == "Payment"]
    assert sorted(b["amount"] for b in parts) == [D("-104.09"), D("-104.09"), D("-41.82")]
    assert {b["origin"] for b in parts} == {ORIGIN}
    assert cm.invoice(invoice["name"])["nextpaymentdue"] == D("62.27")
    check(cm)


def test_an_unknown_plan_keeps_the_invoice_a_draft(cm):
    (draft,) = _drafts_of_january(cm, "Weekly forever")
    report = cm.finalize([draft["id"]], date(2024, 1, 31))
    assert not report.finalized
    (failure,) = report.failures
    assert "payment plan" in failure[1] and "Weekly forever" in failure[1]
    assert cm.invoices(cm.t("Invoice").c.id == draft["id"])[0]["status"] == "Draft"
    assert cm.entries() == [] and cm.balances() == []


# --- registered payments → Payment + Entry Item, balances JPAY1 --------------------------


def test_a_registered_payment_settles_the_entry(billed):
    registered, payment = pay_cm(billed, "INV-2024-00004", "892.50", date(2024, 11, 4), reference="RE 4")
    (entry,) = billed.entries("INV-2024-00004")
    assert (entry["status"], entry["amount"]) == ("Settled", ZERO)
    (item,) = billed.items(entry)
    assert (item["amount"], item["payment"], item["paymentdate"], item["businessprocess"]) == (
        D("-892.50"), payment["id"], date(2024, 11, 4), "Payment registration")
    assert (payment["amount"], payment["status"], payment["date"], payment["reference"]) == (
        D("892.50"), "Final", date(2024, 11, 4), "RE 4")
    balance = billed.balances(billed.t("Balance").c.id == registered.balance_id)[0]
    assert (balance["origin"], balance["entryitem"], balance["transactionno"]) == (ORIGIN, item["id"],
                                                                                     payment["endtoendid"])
    # calling the hook again records nothing twice
    invoice = billed.invoice("INV-2024-00004")
    with billed.engine.begin() as conn:
        again = record_cash_payment(conn, context(billed.model), invoice, balance, D("892.50"), date(2024, 11, 4))
    assert again["id"] == payment["id"] and len(billed.payments()) == 1 and len(billed.items(entry)) == 1
    check(billed)


def test_an_overpayment_leaves_free_cm_money_that_the_assignment_job_leaves_alone(billed):
    registered, payment = pay_cm(billed, "INV-2024-00004", "1000.00", date(2024, 11, 4))
    free = billed.balances(billed.t("Balance").c.id == registered.free_balance_id)[0]
    assert (free["amount"], free["invoice"], free["origin"]) == (D("-107.50"), None, ORIGIN)
    assert free["transactionno"] == payment["endtoendid"] and payment["amount"] == D("1000.00")
    report = assign(billed)          # BIM's AssignBalancesChain
    assert report.assigned == report.split == 0
    assert billed.balances(billed.t("Balance").c.id == free["id"])[0]["invoice"] is None
    check(billed)


# --- payment assignment / prepaid entry assignment on finalization ----------------------------


def test_free_cm_money_is_assigned_to_the_next_invoice_on_finalization(billed):
    registered, payment = pay_cm(billed, "INV-2024-00004", "1000.00", date(2024, 11, 4))
    order_item(billed, "EXTRA-1", account="10004", price="500.00", effective=date(2024, 12, 10))
    step = billed.bill(ORDERS, date(2024, 12, 1), date(2024, 12, 31), date(2024, 12, 31))
    (number,) = step.numbers
    (entry,) = billed.entries(number)
    (item,) = billed.items(entry)
    assert (item["amount"], item["payment"], item["businessprocess"]) == (
        D("-107.50"), payment["id"], "Payment assignment on finalization")
    assert entry["amount"] == D("595.00") - D("107.50")
    moved = billed.balances(billed.t("Balance").c.id == registered.free_balance_id)[0]
    assert (moved["invoice"], moved["entryitem"]) == (billed.invoice(number)["id"], item["id"])
    assert billed.invoice(number)["balance"] == D("487.50")
    check(billed)


def test_prepaid_money_is_assigned_on_finalization(billed):
    account = pay_account(billed, "10002", "100.00", date(2024, 11, 1), balance_type="Prepayment")
    with billed.engine.begin() as conn:
        balance = dict(conn.execute(sa.select(billed.t("Balance")).where(
            billed.t("Balance").c.id == account.balance_id)).mappings().one())
        payment = record_cash_payment(conn, context(billed.model), None, balance, D("100.00"), date(2024, 11, 1))
    assert billed.balances(billed.t("Balance").c.id == account.balance_id)[0]["origin"] == ORIGIN
    order_item(billed, "EXTRA-2", account="10002", price="40.00", effective=date(2024, 12, 10))
    step = billed.bill(ORDERS, date(2024, 12, 1), date(2024, 12, 31), date(2024, 12, 31))
    assert len(step.numbers) == 1, (step.run_failures, step.finalized.failures)
    (number,) = step.numbers
    grand_total = billed.invoice(number)["grandtotal"]
    (entry,) = billed.entries(number)
    (item,) = billed.items(entry)
    assert (item["amount"], item["payment"], item["businessprocess"]) == (
        -grand_total, payment["id"], "Prepaid entry assignment")
    assert (entry["status"], billed.invoice(number)["status"]) == ("Settled", "Paid")
    rest = billed.balances(billed.t("Balance").c.id == account.balance_id)[0]
    assert (rest["amount"], rest["invoice"]) == (D("-100.00") + grand_total, None)  # the rest stays free CM money
    check(billed)


def test_a_prepaid_balance_on_the_draft_becomes_a_payment_on_finalization(cm):
    (draft,) = _drafts_of_january(cm, None)
    cm.insert("Balance", [{"account": draft["account"], "invoice": draft["id"], "type": "Prepaid",
                           "amount": D("-200.00"), "date": date(2024, 1, 20), "isprepaid": True}])
    report = cm.finalize([draft["id"]], date(2024, 1, 31))
    (entry,) = cm.entries(report.finalized[0].number)
    (item,) = cm.items(entry)
    assert (item["amount"], item["businessprocess"]) == (D("-200.00"), "Prepaid entry assignment")
    (payment,) = cm.payments()
    assert (payment["amount"], payment["status"]) == (D("200.00"), "Final")
    assert cm.invoice(report.finalized[0].number)["balance"] == D("1049.19")
    assert_entries_match(cm)


# --- invoice cancellation → entry cancellation ----------------------------------------------


def test_cancellation_cancels_the_entries_and_frees_the_payments(billed):
    pay_cm(billed, "INV-2024-00004", "300.00", date(2024, 11, 4))
    (entry,) = billed.entries("INV-2024-00004")
    number = billed.cancel("INV-2024-00004", date(2024, 11, 20), reason="Wrong address")
    entry = billed.select("Entry", billed.t("Entry").c.id == entry["id"])[0]
    assert (entry["status"], entry["amount"], entry["cancellationreason"], entry["cancellationno"]) == (
        "Canceled", ZERO, "Wrong address", number)
    assert entry["cancellationid"] == str(billed.invoice(number)["id"])
    assert billed.items(entry) == []  # payment associations reversed
    assert billed.entries(number) == []  # the cancellation has no entry of its own
    freed = [b for b in billed.balances(billed.t("Balance").c.origin == ORIGIN) if b["type"] == "Payment"]
    assert [(b["invoice"], b["amount"], b["entryitem"]) for b in freed] == [(None, D("-300.00"), None)]
    check(billed)


# --- payment plan modification → entry cancellation + entry creation -------------------------


def test_payment_plan_change_cancels_and_recreates_entries(billed):
    pay_cm(billed, "INV-2024-00002", "550.00", date(2024, 11, 4))
    (old,) = billed.entries("INV-2024-00002")
    with billed.engine.begin() as conn:
        changes = change_payment_plan(conn, context(billed.model), "INV-2024-00002", "Bimonthly x4 + 120 days", date(2024, 11, 5))
    assert (changes.entries_canceled, changes.entries_created, changes.installments_created) == (1, 6, 6)
    old = billed.select("Entry", billed.t("Entry").c.id == old["id"])[0]
    assert (old["status"], old["cancellationreason"]) == ("Canceled", "Payment plan changed")
    installments = billed.installments("INV-2024-00002")
    assert [(i["amount"], i["isdeposit"]) for i in installments] == [
        (D("550.00"), True), (D("200.00"), False), (D("200.00"), False), (D("200.00"), False), (D("200.00"), False),
        (D("200.00"), False)]
    entries = billed.entries("INV-2024-00002", live=True)
    assert [e["status"] for e in entries] == ["Settled"] + ["Open"] * 5
    assert len(billed.items(entries[0])) == 1  # the payment re-attached to the deposit installment
    assert billed.invoice("INV-2024-00002")["installmenttype"] == "Bimonthly x4 + 120 days"
    # back to no plan: one entry again
    with billed.engine.begin() as conn:
        change_payment_plan(conn, context(billed.model), "INV-2024-00002", None, date(2024, 11, 6))
    (entry,) = billed.entries("INV-2024-00002", live=True)
    assert (entry["statementtype"], entry["openamount"], entry["amount"]) == ("Invoice", D("1550.00"), D("1000.00"))
    assert billed.installments("INV-2024-00002") == []
    check(billed)


def test_payment_plan_change_is_refused_for_a_paid_invoice(billed):
    pay_cm(billed, "INV-2024-00004", "892.50")
    with pytest.raises(CashManagementError, match="INV-2024-00004 is Paid"):
        with billed.engine.begin() as conn:
            change_payment_plan(conn, context(billed.model), "INV-2024-00004", "Monthly x12", date(2024, 11, 5))
    assert len(billed.entries("INV-2024-00004")) == 1


# --- invoice/credit offset → entry settlement ----------------------------------------------


def test_invoice_credit_offset_settles_the_entries(billed):
    step = billed.bill(ORDERS, date(2025, 1, 1), date(2025, 1, 31), date(2025, 1, 15))
    (credit_no,) = step.numbers
    (credit_entry,) = billed.entries(credit_no)
    assert (credit_entry["type"], credit_entry["bptype"], credit_entry["statementtype"], credit_entry["openamount"]) == (
        "Credit", "Creditor", "Credit", D("-178.50"))
    account_before = billed.select("Account", billed.t("Account").c.accountnumber == "10004")[0]["balance"]
    with billed.engine.begin() as conn:
        settled = settle_invoices(conn, context(billed.model), "INV-2024-00004", credit_no, None, date(2025, 1, 20))
    assert settled == D("178.50")
    (debit_entry,) = billed.entries("INV-2024-00004")
    (credit_entry,) = billed.entries(credit_no)
    assert (debit_entry["amount"], credit_entry["amount"], credit_entry["status"]) == (D("714.00"), ZERO, "Settled")
    (debit_red,), (credit_red,) = billed.reductions(debit_entry), billed.reductions(credit_entry)
    assert (debit_red["amount"], credit_red["amount"], debit_red["reason"]) == (D("-178.50"), D("178.50"),
                                                                                 "Entry Settlement")
    assert (debit_red["relatedreduction"], credit_red["relatedreduction"]) == (credit_red["id"], debit_red["id"])
    settlements = billed.balances(billed.t("Balance").c.type == "Settlement")
    assert sorted(b["amount"] for b in settlements) == [D("-178.50"), D("178.50")]
    assert (billed.invoice("INV-2024-00004")["balance"], billed.invoice(credit_no)["status"]) == (D("714.00"), "Paid")
    assert billed.select("Account", billed.t("Account").c.accountnumber == "10004")[0]["balance"] == account_before
    with pytest.raises(CashManagementError, match="no open credit entry"):
        with billed.engine.begin() as conn:
            settle_invoices(conn, context(billed.model), "INV-2024-00004", credit_no, D("1.00"), date(2025, 1, 21))
    check(billed)


def test_offset_refuses_too_much_and_other_accounts(billed):
    step = billed.bill(ORDERS, date(2025, 1, 1), date(2025, 1, 31), date(2025, 1, 15))
    (credit_no,) = step.numbers
    with pytest.raises(CashManagementError, match="exceeds"):
        with billed.engine.begin() as conn:
            settle_invoices(conn, context(billed.model), "INV-2024-00004", credit_no, D("500.00"), date(2025, 1, 20))
    with pytest.raises(CashManagementError, match="different accounts"):
        with billed.engine.begin() as conn:
            settle_invoices(conn, context(billed.model), "INV-2024-00003", credit_no, None, date(2025, 1, 20))
    assert billed.balances(billed.t("Balance").c.type == "Settlement") == []


# --- partial credit → entry reduction ------------------------------------------------------


def test_partial_credit_reduces_the_entry(billed):
    with billed.engine.begin() as conn:
        draft = create_partial_credit(conn, context(billed.model), "INV-2024-00002", ["ILI-0000004"], "Service not rendered")
    report = billed.finalize([draft], date(2024, 11, 10))
    assert not report.failures
    credit_no = report.finalized[0].number
    credit = billed.invoice(credit_no)
    assert (credit["class"], credit["type"], credit["grandtotal"], credit["relatedinvoice"]) == (
        "Credit", "Credit", D("-350.00"), billed.invoice("INV-2024-00002")["id"])
    (entry,) = billed.entries("INV-2024-00002")
    (reduction,) = billed.reductions(entry)
    assert (reduction["amount"], reduction["reason"], reduction["invoice"]) == (D("-350.00"), "Partial Credit",
                                                                                credit["id"])
    assert (entry["amount"], billed.invoice("INV-2024-00002")["balance"]) == (D("1200.00"), D("1200.00"))
    (credit_entry,) = billed.entries(credit_no)
    assert (credit_entry["status"], credit["status"]) == ("Settled", "Paid")
    check(billed)


def test_a_transaction_number_too_long_for_an_end_to_end_id_is_refused(billed):
    from engine.cash.payments import PaymentDetails, PaymentError

    # register_payment records the CM payment itself and reports its refusal as a PaymentError.
    with pytest.raises(PaymentError, match="longer than the 35 characters"):
        pay_cm(billed, "INV-2024-00004", "100.00", details=PaymentDetails(transaction_no="T" * 40))
    assert billed.payments() == [] and [b for b in billed.balances() if b["type"] == "Payment"] == []


def test_free_cm_money_paid_back_is_not_assigned_again(billed):
    from cash.helpers import refund

    pay_cm(billed, "INV-2024-00004", "1000.00", date(2024, 11, 4))          # 107.50 free CM money
    row = refund(billed, "107.50", date(2024, 11, 5), account_number="10004")  # paid back
    with billed.engine.begin() as conn:
        payout = record_cash_payment(conn, context(billed.model), None, row, D("107.50"), date(2024, 11, 5))
    assert payout["amount"] == D("-107.50")
    order_item(billed, "EXTRA-3", account="10004", price="500.00", effective=date(2024, 12, 10))
    (number,) = billed.bill(ORDERS, date(2024, 12, 1), date(2024, 12, 31), date(2024, 12, 31)).numbers
    (entry,) = billed.entries(number)
    assert billed.items(entry) == [] and entry["amount"] == D("595.00")
    check(billed)
