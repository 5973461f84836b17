"""Records the set path refuses itself: a line with an empty title or price.

The Python path refuses such a header record with "ON_Title... is empty" (or
"...UnitPrice... is empty") and bills the other records of its group without
it. The set path does the same in SQL instead of sending the whole group to
the Python fallback; when the refused record was the first of its group, or
the only one with an ON copy to the invoice, the group's header is drafted
again from the records left. The differential comparison of
``test_setbased`` holds both paths to identical results on data built for
exactly that case.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import date

import sqlalchemy as sa

from engine.billing import setrun
from engine.billing.setplan import AMOUNT_BOUND

from contexts import context

from .test_setbased import _fill, _run, _state, twin_urls  # noqa: F401 - twin_urls is a fixture

SEED = 11


def _two_orders_one_invoice(engine: sa.Engine, model) -> tuple[int, int]:
    """Move a second standard order of 2024 to the account of the first, so
    that both go to one invoice; the first (lower id) gets a purchase order
    number of its own and an item without a title, the second another
    purchase order number. Returns (refused order, billed order)."""
    ctx = context(model)
    orders, items = ctx.table("Order"), ctx.table("OrderItem")
    with engine.begin() as conn:
        # Orders with items, none of them disturbed by _fill (such a group
        # would go to the Python fallback as a whole).
        disturbed = sa.select(items.c.orderid).where(sa.or_(
            items.c.unitprice.is_(None), sa.func.coalesce(items.c.on_title__c, "") == "",
            sa.func.abs(items.c.quantity) >= AMOUNT_BOUND))
        standard = (sa.select(orders.c.id, orders.c.accountid, orders.c.currencyisocode)
                    .where(orders.c.on_type__c.is_(None), orders.c.status == "Activated",
                           orders.c.effectivedate < date(2025, 1, 1),
                           orders.c.id.in_(sa.select(items.c.orderid)), orders.c.id.not_in(disturbed))
                    .order_by(orders.c.id).limit(2))
        (first, account, currency), (second, _, _) = conn.execute(standard).all()
        conn.execute(orders.update().where(orders.c.id == second)
                     .values(accountid=account, currencyisocode=currency, ponumber="PO-SECOND"))
        conn.execute(orders.update().where(orders.c.id == first).values(ponumber="PO-FIRST"))
        item = conn.execute(sa.select(sa.func.min(items.c.id)).where(items.c.orderid == first)).scalar()
        conn.execute(items.update().where(items.c.id == item).values(on_title__c=""))
    return first, second


def test_a_refused_first_record_leaves_its_group_drafted_from_the_rest(twin_urls, sample_model, monkeypatch):  # noqa: F811
    refused: list[int] = []
    original = setrun.SetBatchWriter.prepare

    def recording(self, conn, sources, failures):
        prepared = original(self, conn, sources, failures)
        refused.extend(prepared.refused)
        return prepared

    monkeypatch.setattr(setrun.SetBatchWriter, "prepare", recording)
    with ExitStack() as stack:
        engines = [_fill(url, sample_model, SEED, 400) for url in twin_urls]
        for engine in engines:
            stack.callback(engine.dispose)
        pairs = [_two_orders_one_invoice(engine, sample_model) for engine in engines]
        assert pairs[0] == pairs[1]
        first, second = pairs[0]
        python = _state(engines[0], sample_model, _run(engines[0], sample_model, "python", 2000, monkeypatch))
        assert not refused
        set_based = _state(engines[1], sample_model, _run(engines[1], sample_model, "set", 2000, monkeypatch))
    assert first in refused and second not in refused
    failure = [f for f in set_based["report"][2] if f[:2] == ("Order", first)]
    assert failure and failure[0][2].endswith("is empty")
    invoice = next(v for k, v in set_based["invoices"].items() if ("order", second, "") in k)
    assert invoice["purchaseorderno__c"] == "PO-SECOND"
    for part in ("report", "claims", "writeback", "invoices", "lines", "numbering"):
        assert python[part] == set_based[part], part
