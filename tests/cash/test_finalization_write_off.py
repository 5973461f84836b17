"""The automatic write-off at finalization (domain-spec §4.7):
``apply_finalization_write_offs`` called right after ``finalize_invoices``,
the way finalize.py calls it once wired. The sample org:
FinalizationWriteOffAmount 0.50, WriteOffCurrency EUR."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from engine.booking.balances import apply_finalization_write_offs

from booking.helpers import ORDERS, ZERO, D, load_model, org_variant
from booking.test_balanced_books import order_item
from config.orgcopy import Replace

from .helpers import assert_cash_invariants, balances_of, stored_account_balance
from contexts import context


def finalize_small_orders(books, *prices: str) -> list[dict]:
    """Bill one order per price (net, DE_19; accounts 10001, 10004) in December and finalize them
    (without the write-off step); returns the finalized invoice rows."""
    accounts = ("10001", "10004")  # one invoice per account: orders of an account are billed together
    for number, price in enumerate(prices, start=1):
        order_item(books, f"SMALL-{number}", account=accounts[number - 1], price=price, effective=date(2024, 12, 10))
    step = books.bill(ORDERS, date(2024, 12, 1), date(2024, 12, 31), date(2024, 12, 31))
    assert len(step.numbers) == len(prices), (step.run_failures, step.finalized.failures)
    table = books.t("Invoice")
    with books.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).where(table.c.name.in_(step.numbers))
                                              .order_by(table.c.name)).mappings()]


def apply(books, rows: list[dict], when: date = date(2024, 12, 31)) -> int:
    with books.engine.begin() as conn:
        return apply_finalization_write_offs(conn, context(books.model), rows, when)


def test_invoices_up_to_the_amount_are_written_off(books):
    rows = finalize_small_orders(books, "0.42", "0.43")   # gross 0.50 (exactly the amount) and 0.51
    assert [r["grandtotal"] for r in rows] == [D("0.50"), D("0.51")]
    assert apply(books, rows) == 1
    at, above = (books.invoice(r["name"]) for r in rows)
    assert (at["balance"], at["status"], at["paymentdate"]) == (ZERO, "Paid", date(2024, 12, 31))
    assert (above["balance"], above["status"]) == (D("0.51"), "Open")
    write_offs = [b for b in balances_of(books, at["name"]) if b["type"] == "Write off"]
    assert [(b["amount"], b["writeoffreason"], b["rule"]) for b in write_offs] == [
        (D("-0.50"), "Invoice below threshold", "FinalizationWriteOffAmount")]
    details = books.details(books.t("BookingDetail").c.balance == write_offs[0]["id"])
    assert sorted((d["type"], d["accountno"], d["amount"]) for d in details) == [
        ("Tax", "1776", D("-0.08")), ("Write-off", "2400", D("0.42"))]
    # the rows handed in are updated too, for the steps after it
    assert (rows[0]["status"], rows[0]["balance"]) == ("Paid", ZERO)
    # Account.Balance is refreshed for every given invoice's account
    assert (stored_account_balance(books, "10001"), stored_account_balance(books, "10004")) == (ZERO, D("0.51"))
    assert_cash_invariants(books)


def test_applying_again_writes_off_nothing_more(books):
    rows = finalize_small_orders(books, "0.42")
    assert apply(books, rows) == 1
    assert apply(books, rows) == 0
    again = [dict(r) for r in books.invoices(books.t("Invoice").c.name == rows[0]["name"])]
    assert apply(books, again) == 0
    assert len([b for b in balances_of(books, rows[0]["name"]) if b["type"] == "Write off"]) == 1


def test_an_invoice_in_another_currency_than_the_write_off_currency_stays_open(tmp_path, make_books, db_url):
    org = org_variant(tmp_path / "org", Replace("custom_settings/GlobalSettings.yaml", "WriteOffCurrency: EUR",
                                                "WriteOffCurrency: CHF"))
    books = make_books(db_url, load_model(org), org)
    rows = finalize_small_orders(books, "0.42")
    assert apply(books, rows) == 0
    assert books.invoice(rows[0]["name"])["status"] == "Open"


def test_a_tiny_credit_is_written_off_too(books):
    rows = finalize_small_orders(books, "-0.42")
    assert rows[0]["grandtotal"] == D("-0.50")
    assert apply(books, rows) == 1
    invoice = books.invoice(rows[0]["name"])
    assert (invoice["balance"], invoice["status"]) == (ZERO, "Paid")
    assert [b["amount"] for b in balances_of(books, invoice["name"]) if b["type"] == "Write off"] == [D("0.50")]
    assert_cash_invariants(books)


def test_as_a_finalization_stage(books):
    """Wired as a stage of finalize_invoices (signature FinalizationStage):
    the write-off is dated with the invoice date, in the batch transaction."""
    from engine.billing.drafts import draft_ids
    from engine.billing.run import RunRequest, run_invoices
    from engine.booking.finalize import finalize_invoices

    order_item(books, "SMALL-1", price="0.42", effective=date(2024, 12, 10))
    report = run_invoices(books.engine, context(books.model), RunRequest(ORDERS, date(2024, 12, 1), date(2024, 12, 31),
                                                               invoice_date=date(2024, 12, 20), today=date(2024, 12, 31)))
    with books.engine.connect() as conn:
        ids = draft_ids(conn, context(books.model), run_id=report.run_id)
    done = finalize_invoices(books.engine, context(books.model), ids, today=date(2024, 12, 31),
                             stages=(apply_finalization_write_offs,))
    invoice = books.invoice(done.finalized[0].number)
    assert (invoice["status"], invoice["balance"], invoice["paymentdate"]) == ("Paid", ZERO, date(2024, 12, 20))
    assert [b["date"] for b in balances_of(books, invoice["name"]) if b["type"] == "Write off"] == [date(2024, 12, 20)]
    assert_cash_invariants(books)
