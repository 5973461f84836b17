"""Payment balance collection (seed 002 "Enabling Payment Balance
Collection"; domain-spec §4.6): free Payment/Prepayment balances of one
business entity, not locked, past the statute of limitations (sample org: 3
years), collected by locked write-off balances with bookings."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from engine.cash.collection import CollectionError
from engine.cash.service import collect_balances

from booking.helpers import ZERO, D

from .helpers import assert_cash_invariants, free_of, pay, pay_account, refund
from contexts import context

TODAY = date(2024, 12, 1)   # cut-off: 2021-12-01


def collect(books, entity: str = "DE01", *, dry_run: bool = False, today: date = TODAY):
    return collect_balances(books.engine, context(books.model), entity, today=today, dry_run=dry_run, run="test")


def test_only_old_free_unlocked_payments_of_the_entity_are_collected(orders):
    old = pay_account(orders, "10001", "40.00", date(2021, 11, 30)).balance_id
    prepaid = pay_account(orders, "10002", "15.00", date(2020, 5, 1), balance_type="Prepayment").balance_id
    young = pay_account(orders, "10001", "10.00", date(2021, 12, 1)).balance_id       # exactly at the cut-off
    locked = pay_account(orders, "10004", "5.00", date(2020, 1, 1)).balance_id
    other = pay_account(orders, "10004", "7.00", date(2020, 1, 1)).balance_id
    pay(orders, "INV-2024-00001", "100.00", date(2020, 1, 1))                          # related to an invoice
    t = orders.t("Balance")
    with orders.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.id == locked).values(lockedreason="Exported"))
        conn.execute(sa.update(t).where(t.c.id == other).values(businessentity="AT01"))

    preview = collect(orders, dry_run=True)
    assert [b.balance_id for b in preview.balances] == [old, prepaid]
    assert (preview.cutoff, preview.total, preview.write_offs) == (date(2021, 12, 1), D("-55.00"), [])
    assert len(orders.balances(t.c.type == "Write off")) == 0

    report = collect(orders)
    assert [b.balance_id for b in report.balances] == [old, prepaid]
    write_offs = orders.balances(t.c.id.in_(report.write_offs))
    assert [(w["amount"], w["type"], w["writeoffreason"], w["lockedreason"], w["invoice"], w["date"])
            for w in write_offs] == [
        (D("40.00"), "Write off", "Statute of limitations", "Collected", None, TODAY),
        (D("15.00"), "Write off", "Statute of limitations", "Collected", None, TODAY)]
    assert [b["lockedreason"] for b in orders.balances(t.c.id.in_([old, prepaid]))] == ["Collected", "Collected"]
    assert sum((b["amount"] for b in free_of(orders, "10001")), ZERO) == D("-10.00")   # the young one stays
    details = orders.details(orders.t("BookingDetail").c.balance.in_(report.write_offs))
    assert sorted((d["type"], d["accountno"], d["bpaccountno"], d["amount"]) for d in details) == [
        ("Write-off", "2400", "10001", D("-40.00")), ("Write-off", "2400", "10002", D("-15.00"))]
    assert_cash_invariants(orders)

    again = collect(orders)
    assert (again.balances, again.write_offs) == ([], [])


def test_money_paid_back_is_not_collected(orders):
    """A free payment of 30 of which 20 were refunded: only the 10 still owed
    to the customer could be collected, and a balance is collected whole or
    not at all, so the 30 stays; a second old payment of 10 fits."""
    first = pay_account(orders, "10001", "30.00", date(2020, 1, 1)).balance_id
    refund(orders, "20.00", account_number="10001")
    second = pay_account(orders, "10001", "10.00", date(2020, 2, 1)).balance_id
    assert [b.balance_id for b in collect(orders, dry_run=True).balances] == [second]
    collect(orders)
    assert sum((b["amount"] for b in free_of(orders, "10001")), ZERO) == D("-10.00")
    assert first in [b["id"] for b in free_of(orders, "10001") if not b["lockedreason"]]
    assert_cash_invariants(orders)


def test_unknown_business_entities_are_refused(orders):
    for entity, message in (("", "name the business entity"), ("XX99", "no business entity 'XX99'")):
        with pytest.raises(CollectionError, match=message):
            collect(orders, entity)
