"""Issue 13's lifecycle behaviours, as the audit sees them (SQLite and
PostgreSQL): each scenario leaves books that an accountant's reconciliation
fails on when the behaviour is wrong, and that reconcile when it is right.

* a progress invoice paid after its final invoice's draft was built: not
  deducted, the interim accounts keep a residue (A401, A402);
* a sub invoice already deducted on a finalized final invoice: cancelling it
  turns its payment into a free credit while the final invoice still deducts
  it (A401);
* a direct debit of an invoice with an installment plan: collecting the whole
  open amount instead of the installment due (A511).

Run against the engine before helper A's fixes, each of these failed with
exactly those findings (see the final report of the audit's helper).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.cash.service import change_payment_plan, register_payment
from engine.domain.errors import EngineError
from engine.exports.service import export_sepa_debit
from engine.project import cancel_invoice, finalize

from contexts import context

from .conftest import codes, run_audit

SUB = ("UC1 Sub Invoice",)
FINAL = ("UC1 Final Invoice",)


@pytest.fixture
def books(db_url, sample_model, prepared):
    """The sample org migrated with its data loaded (nothing billed yet)."""
    from exports.conftest import Demo

    return Demo(prepared(db_url, sample_model), sample_model, db_url)


def bill(books, filters, start: date, end: date, invoice_date: date, *, finalized: bool = True) -> list[int]:
    ctx = context(books.model)
    report = run_invoices(books.engine, ctx, RunRequest(filters, start, end, invoice_date=invoice_date))
    with books.engine.connect() as conn:
        ids = draft_ids(conn, ctx, run_id=report.run_id)
    if finalized:
        assert not finalize(books.engine, ctx, ids, today=invoice_date).failures
    return ids


def pay(books, invoice: str, amount: str, when: date) -> None:
    register_payment(books.engine, context(books.model), invoice, Decimal(amount), when)


def project_with_final_draft(books) -> list[int]:
    """The worked example of domain-spec §5.6: P1 paid, P2 billed; the final
    invoice's draft built in June while P2 is unpaid."""
    bill(books, SUB, date(2024, 3, 1), date(2024, 3, 31), date(2024, 3, 15))
    pay(books, "INV-2024-00001", "1190.00", date(2024, 3, 28))
    bill(books, SUB, date(2024, 4, 1), date(2024, 4, 30), date(2024, 4, 15))
    return bill(books, FINAL, date(2024, 6, 1), date(2024, 6, 30), date(2024, 6, 10), finalized=False)


def test_a_payment_between_the_final_draft_and_its_finalization(books):
    final = project_with_final_draft(books)
    pay(books, "INV-2024-00002", "1190.00", date(2024, 6, 5))
    assert not finalize(books.engine, context(books.model), final, today=date(2024, 6, 10)).failures
    pay(books, "INV-2024-00003", str(books.rows("Invoice", books.table("Invoice").c.id == final[0])[0]["grandtotal"]),
        date(2024, 6, 20))
    report = run_audit(books)
    assert report.checked["closed projects"] == 1
    assert report.ok, [f.render() for f in report.findings]


def test_cancelling_a_deducted_sub_invoice(books):
    bill(books, SUB, date(2024, 3, 1), date(2024, 3, 31), date(2024, 3, 15))
    pay(books, "INV-2024-00001", "1190.00", date(2024, 3, 28))
    bill(books, SUB, date(2024, 4, 1), date(2024, 4, 30), date(2024, 4, 15))
    pay(books, "INV-2024-00002", "1190.00", date(2024, 4, 30))
    bill(books, FINAL, date(2024, 6, 1), date(2024, 6, 30), date(2024, 6, 10))
    assert run_audit(books).ok
    ctx = context(books.model)
    try:
        cancel_invoice(books.engine, ctx, "INV-2024-00001", reason="test", when=date(2024, 7, 1))
    except EngineError:
        pass  # refused: the final invoice deducts it
    report = run_audit(books)
    assert "A401" not in codes(report), [f.render() for f in report.findings]
    assert report.ok, [f.render() for f in report.findings]


def test_a_direct_debit_of_an_installment_plan(demo, tmp_path):
    ctx = context(demo.model)
    before = {(f.code, f.subject) for f in run_audit(demo).findings}
    invoices = demo.table("Invoice")
    invoice = demo.rows("Invoice", invoices.c.name == "INV-2024-00008")[0]
    assert invoice["status"] == "Open" and invoice["paymentmethod"] == "Direct Debit"
    change_payment_plan(demo.engine, ctx, "INV-2024-00008", "Monthly x12", when=date(2024, 10, 1))
    report = export_sepa_debit(demo.engine, ctx, tmp_path / "debit.xml", business_entity="DE01",
                               created=datetime(2024, 11, 2, 9, 0))
    history = demo.table("InvoiceExportHistory")
    with demo.engine.connect() as conn:
        collected = conn.execute(sa.select(history.c.amount).where(history.c.invoice == invoice["id"])).scalars().all()
    assert report.file is not None and len(collected) == 1
    audit = run_audit(demo, sepa_files=[report.file])
    new = {(f.code, f.subject) for f in audit.findings} - before
    assert not new, [f.render() for f in audit.findings if (f.code, f.subject) in new]
    assert collected[0] < invoice["grandtotal"]  # the installments due, not the whole invoice
