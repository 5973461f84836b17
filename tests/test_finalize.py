"""Finalization: counter patterns, number ranges, status and invoice balance."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.booking.finalize import FinalizeError, finalize_invoices, range_key, render_number
from engine.billing.run import RunRequest, run_invoices
from engine.config.model import SettingRecord
from contexts import context
from databases import load_model

ROOT = Path(__file__).resolve().parent.parent


def counter(**values) -> SettingRecord:
    return SettingRecord("Counter", values.pop("name", "Default"), {k.lower(): v for k, v in values.items()})


def test_render_number_fills_placeholders_and_pads():
    assert render_number("INV-[Year]-{00000}", 42, date(2024, 3, 5), None) == "INV-2024-00042"
    assert render_number("[Year][Month][Day]/{000}", 7, date(2024, 3, 5), None) == "20240305/007"
    assert render_number("K[AccountNo]-{00}", 123, date(2024, 1, 1), "10001") == "K10001-123"


def test_render_number_needs_a_digit_mask():
    with pytest.raises(FinalizeError):
        render_number("INV-[Year]", 1, date(2024, 1, 1), None)


def test_range_key_follows_the_reset_period():
    when = date(2024, 3, 5)
    assert range_key(counter(Reset="YEARLY"), when, 9)[0] == "Default|2024|None|None|None"
    assert range_key(counter(Reset="MONTHLY"), when, 9)[0] == "Default|2024|3|None|None"
    assert range_key(counter(Reset="DAILY"), when, 9)[0] == "Default|2024|3|5|None"
    assert range_key(counter(Reset="NONE"), when, 9)[0] == "Default|None|None|None|None"
    assert range_key(counter(Reset="YEARLY", UseAccountCounters=True), when, 9)[0] == "Default|2024|None|None|9"


@pytest.fixture
def billed(sqlite_url, prepared):
    """The sample org and data in a fresh database, with the order filters run."""
    model = load_model(ROOT)
    engine = prepared(sqlite_url, model)
    request = RunRequest(("Order Sub Invoice", "Order Invoice"), date(2024, 1, 1), date(2024, 12, 31))
    run_invoices(engine, context(model), request)
    return engine, model


def test_finalize_numbers_are_gapless_and_balances_match(billed):
    engine, model = billed
    invoice = context(model).table("Invoice")
    balance = context(model).table("Balance")
    with engine.connect() as conn:
        drafts = conn.execute(sa.select(invoice.c.id).where(invoice.c.status == "Draft").order_by(invoice.c.id)).scalars().all()
    assert len(drafts) == 6
    report = finalize_invoices(engine, context(model), drafts, today=date(2025, 2, 3))
    assert not report.failures
    assert [f.number for f in report.finalized] == [f"INV-2025-{n:05d}" for n in range(1, 7)]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(invoice).where(invoice.c.id.in_(drafts)).order_by(invoice.c.id)).mappings().all()
        for row in rows:
            assert row["status"] == "Open"
            assert row["date"] == date(2025, 2, 3)
            assert row["paymentduedate"] == date(2025, 2, 3) + timedelta(days=int(row["paymentdue"]))
            assert row["balance"] == row["grandtotal"]
            amounts = conn.execute(
                sa.select(balance.c.amount, balance.c.type).where(balance.c.invoice == row["id"])
            ).all()
            assert amounts == [(row["grandtotal"], "Invoice")]


def test_finalizing_twice_is_refused_and_draws_no_number(billed):
    engine, model = billed
    invoice = context(model).table("Invoice")
    with engine.connect() as conn:
        first = conn.execute(sa.select(invoice.c.id).where(invoice.c.status == "Draft").order_by(invoice.c.id)).scalars().first()
    assert finalize_invoices(engine, context(model), [first], today=date(2025, 1, 1)).finalized[0].number == "INV-2025-00001"
    again = finalize_invoices(engine, context(model), [first], today=date(2025, 1, 1))
    assert again.finalized == [] and "not a draft" in again.failures[0][1]
    with engine.connect() as conn:
        second = conn.execute(sa.select(invoice.c.id).where(invoice.c.status == "Draft").order_by(invoice.c.id)).scalars().first()
    assert finalize_invoices(engine, context(model), [second], today=date(2025, 1, 1)).finalized[0].number == "INV-2025-00002"


def test_yearly_reset_starts_a_new_range(billed):
    engine, model = billed
    invoice = context(model).table("Invoice")
    with engine.connect() as conn:
        drafts = conn.execute(sa.select(invoice.c.id).where(invoice.c.status == "Draft").order_by(invoice.c.id)).scalars().all()
    numbers = [finalize_invoices(engine, context(model), [i], today=when).finalized[0].number
               for i, when in zip(drafts[:3], (date(2024, 12, 30), date(2024, 12, 31), date(2025, 1, 1)))]
    assert numbers == ["INV-2024-00001", "INV-2024-00002", "INV-2025-00001"]


def test_final_invoice_is_built_once_its_sub_invoices_are_final(billed):
    engine, model = billed
    invoice = context(model).table("Invoice")
    with engine.connect() as conn:
        subs = conn.execute(
            sa.select(invoice.c.id).where(invoice.c.type.in_(("Partial", "Progress"))).order_by(invoice.c.id)
        ).scalars().all()
    assert len(subs) == 2
    finalize_invoices(engine, context(model), subs, today=date(2024, 9, 30))
    request = RunRequest(("Order Sub Invoice", "Order Invoice"), date(2024, 1, 1), date(2024, 12, 31))
    report = run_invoices(engine, context(model), request)
    finals = [i for i in report.invoices if i.type == "Final"]
    assert len(finals) == 2
    partial_final = next(i for i in finals if i.total_net == Decimal("4200.00"))
    assert partial_final.grand_total == Decimal("4998.00")  # 10000.00 - 5800.00 deducted, 19 %


def test_final_invoices_share_batches_only_with_other_accounts():
    """A final invoice settles sub invoices of its own account: it joins a
    batch of other accounts' invoices (one transaction for many final
    invoices), never one that holds an invoice of its account; a
    cancellation stays alone; ids keep their order (numbers are drawn in it)."""
    from engine.booking.finalize import _batches, _Shape

    shapes = [_Shape(1, "Standard", 5, 10), _Shape(2, "Final", 5, 11), _Shape(3, "Final", 5, 12),
              _Shape(4, "Standard", 5, 13), _Shape(5, "Final", 5, 10),   # account 10 is in the batch: cut
              _Shape(6, "Final", 5, 14), _Shape(7, "Partial", 5, 14),    # the final's account: cut
              _Shape(8, "Cancelation", 1, 15), _Shape(9, "Standard", 5, 16)]
    assert list(_batches(shapes)) == [[1, 2, 3, 4], [5, 6], [7], [8], [9]]


def test_batches_keep_their_bounds(monkeypatch):
    from engine.booking import finalize
    from engine.booking.finalize import _batches, _Shape

    monkeypatch.setattr(finalize, "BATCH_INVOICES", 2)
    shapes = [_Shape(i, "Final" if i % 2 else "Standard", 5, 100 + i) for i in range(1, 6)]
    assert list(_batches(shapes)) == [[1, 2], [3, 4], [5]]
    monkeypatch.setattr(finalize, "BATCH_INVOICES", 1000)
    monkeypatch.setattr(finalize, "BATCH_LINES", 12)
    assert list(_batches(shapes)) == [[1, 2], [3, 4], [5]]
