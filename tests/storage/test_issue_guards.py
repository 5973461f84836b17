"""An issued document cannot be rewritten: InvoiceDocument rows are never
changed or deleted, and an invoice's DocumentHash and IssuedFingerprint,
written once when it is finalized, never change (both backends)."""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from engine.billing.run import RunRequest, run_invoices
from engine.billing.service import find_drafts
from engine.project import finalize

from contexts import context
from databases import REPO_ROOT, load_model


@pytest.fixture(scope="module")
def model():
    return load_model(REPO_ROOT)


def _issued(prepared, db_url, model):
    engine = prepared(db_url, model)
    ctx = context(model)
    run = run_invoices(engine, ctx, RunRequest(("Order Sub Invoice", "Order Invoice"), date(2024, 1, 1),
                                               date(2024, 12, 31), invoice_date=date(2024, 9, 30)))
    report = finalize(engine, ctx, find_drafts(engine, ctx, run=run.run_id), today=date(2024, 9, 30))
    assert report.finalized and not report.failures
    return engine, ctx


def _refused(engine, statement) -> None:
    with pytest.raises(sa.exc.DBAPIError) as error:
        with engine.begin() as conn:
            conn.execute(statement)
    assert "metabill:" in str(error.value)


def test_an_issued_document_cannot_be_changed_or_deleted(prepared, db_url, model):
    engine, ctx = _issued(prepared, db_url, model)
    documents = ctx.table("InvoiceDocument")
    with engine.connect() as conn:
        first = conn.execute(sa.select(documents.c.id).order_by(documents.c.id)).scalars().first()
    assert first is not None
    _refused(engine, sa.update(documents).where(documents.c.id == first).values(content="<p>forged</p>"))
    _refused(engine, sa.delete(documents).where(documents.c.id == first))


def test_the_issue_hash_and_fingerprint_are_written_once(prepared, db_url, model):
    engine, ctx = _issued(prepared, db_url, model)
    invoices = ctx.table("Invoice")
    with engine.connect() as conn:
        invoice = conn.execute(sa.select(invoices.c.id, invoices.c.documenthash)
                               .where(invoices.c.documenthash.is_not(None)).order_by(invoices.c.id)).first()
    assert invoice is not None
    _refused(engine, sa.update(invoices).where(invoices.c.id == invoice.id).values(documenthash="0" * 64))
    _refused(engine, sa.update(invoices).where(invoices.c.id == invoice.id).values(issuedfingerprint=None))
