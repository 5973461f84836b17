"""Issued documents are immutable (issue 13, item 3).

Finalization renders the invoice's document once, stores it
(InvoiceDocument, kind Invoice) and records its SHA-256 and the invoice's
issued fingerprint; ``metabill render`` of the finalized invoice returns the
stored document, so a payment registered later does not change it (before,
every render printed the invoice anew, with the new balance rows). Drafts
are rendered fresh. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.documents.issued import LINE_FIELDS, StoredDocumentAltered, fingerprint, stored_document
from engine.documents.render import render_html
from engine.documents.service import render
from engine.documents.data import read_documents
from engine.project import cancel_invoice, finalize
from engine.storage.guards import install_guards, remove_guards

from booking.helpers import Books
from config.orgcopy import REPO_ROOT
from contexts import context
from databases import load_model

WHEN = date(2024, 1, 31)


@pytest.fixture(scope="module")
def model():
    return load_model(REPO_ROOT)


@pytest.fixture
def issued(db_url, model, prepared) -> Books:
    """The January 2024 orders billed and finalized through the whole chain."""
    books = Books(prepared(db_url, model), model, db_url, REPO_ROOT)
    ctx = context(model)
    report = run_invoices(books.engine, ctx, RunRequest(("Order Invoice",), date(2024, 1, 1), WHEN,
                                                        invoice_date=WHEN, today=WHEN))
    with books.engine.connect() as conn:
        ids = draft_ids(conn, ctx, run_id=report.run_id)
    outcome = finalize(books.engine, ctx, ids, today=WHEN)
    assert outcome.finalized and not outcome.failures, outcome.failures
    return books


def _documents(books: Books, invoice_id: int) -> list[dict]:
    table = books.t("InvoiceDocument")
    return books.select("InvoiceDocument", table.c.invoice == invoice_id, table.c.kind == "Invoice")


def test_the_document_is_stored_at_finalization_with_its_hash_and_fingerprint(issued):
    invoice = issued.invoice("INV-2024-00001")
    [document] = _documents(issued, invoice["id"])
    assert (document["kind"], document["format"], document["part"], document["parts"]) == (
        "Invoice", "html", Decimal(1), Decimal(1))
    assert "INV-2024-00001" in document["content"]
    assert document["sha256"] == hashlib.sha256(document["content"].encode("utf-8")).hexdigest()
    assert invoice["documenthash"] == document["sha256"]
    lines = issued.lines("INV-2024-00001")
    assert invoice["issuedfingerprint"] == fingerprint(invoice, lines)


def test_render_returns_the_stored_document_after_a_payment(issued, tmp_path):
    ctx = context(issued.model)
    before = render(issued.engine, ctx, REPO_ROOT, names=["INV-2024-00001"], formats=("html",),
                    out_dir=tmp_path / "before")
    issued.pay("INV-2024-00001", "500.00", date(2024, 2, 10))
    after = render(issued.engine, ctx, REPO_ROOT, names=["INV-2024-00001"], formats=("html",),
                   out_dir=tmp_path / "after")
    assert before.failure_error() is None and after.failure_error() is None
    issued_html = (tmp_path / "before" / "INV-2024-00001.html").read_bytes()
    assert (tmp_path / "after" / "INV-2024-00001.html").read_bytes() == issued_html
    # a fresh rendering would show the payment: the stored document is what was issued
    with issued.engine.connect() as conn:
        [data] = read_documents(conn, ctx, [issued.invoice("INV-2024-00001")["id"]], today=WHEN)
    fresh = render_html(REPO_ROOT, ctx, data).html
    assert fresh.encode("utf-8") != issued_html
    assert hashlib.sha256(issued_html).hexdigest() == issued.invoice("INV-2024-00001")["documenthash"]


def test_a_tampered_stored_document_is_refused(issued, tmp_path):
    invoice = issued.invoice("INV-2024-00001")
    table = issued.t("InvoiceDocument")
    # Tampering past the database's guards, as someone with the database's
    # owner rights could: the engine must still notice when it reads.
    with issued.engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" DISABLE TRIGGER USER')
        else:
            remove_guards(conn)
        conn.execute(sa.update(table).where(table.c.invoice == invoice["id"])
                     .values(content=sa.func.replace(table.c.content, "INV-2024-00001", "INV-2024-99999")))
        if postgres:
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ENABLE TRIGGER USER')
        else:
            install_guards(conn, issued.model)
    with issued.engine.connect() as conn:
        with pytest.raises(StoredDocumentAltered, match="content does not match"):
            stored_document(conn, context(issued.model), invoice["id"])
    report = render(issued.engine, context(issued.model), REPO_ROOT, names=["INV-2024-00001"], formats=("html",),
                    out_dir=tmp_path)
    assert report.failure_error() is not None and "altered" in report.failures[0][1]


def test_drafts_are_rendered_fresh(issued, tmp_path):
    ctx = context(issued.model)
    report = run_invoices(issued.engine, ctx, RunRequest(("Order Invoice",), date(2024, 2, 1), date(2024, 2, 29),
                                                         invoice_date=date(2024, 2, 29), today=date(2024, 2, 29)))
    with issued.engine.connect() as conn:
        [draft] = draft_ids(conn, ctx, run_id=report.run_id)
    name = issued.invoices(issued.t("Invoice").c.id == draft)[0]["name"]
    assert _documents(issued, draft) == []
    out = render(issued.engine, ctx, REPO_ROOT, names=[name], formats=("html",), out_dir=tmp_path)
    assert out.failure_error() is None and (tmp_path / f"{name}.html").exists()


def test_a_cancellation_gets_its_own_document(issued):
    done = cancel_invoice(issued.engine, context(issued.model), "INV-2024-00001", when=date(2024, 2, 5))
    number = done.finalized.number
    cancellation = issued.invoice(number)
    [document] = _documents(issued, cancellation["id"])
    assert cancellation["documenthash"] == document["sha256"] and number in document["content"]
    assert len(_documents(issued, issued.invoice("INV-2024-00001")["id"])) == 1  # the original's is untouched


def test_the_fingerprint_is_canonical():
    invoice = {"name": "INV-1", "date": date(2024, 1, 31), "grandtotal": Decimal("119.00"), "account": 7}
    line = {key: None for key in LINE_FIELDS}
    one = {**line, "sequence": Decimal("1"), "title": "A", "postotalnet": Decimal("100.00"), "taxrate": Decimal("19.000")}
    two = {**line, "sequence": Decimal("2"), "title": "B", "postotalnet": Decimal("0.00"), "isdeduction": False}
    reference = fingerprint(invoice, [one, two])
    assert len(reference) == 64
    # neither the order of the lines nor the scale of a number matters
    assert fingerprint(invoice, [two, one]) == reference
    assert fingerprint({**invoice, "grandtotal": Decimal("119")}, [dict(one, taxrate=Decimal("19"), postotalnet=Decimal("1E+2")), two]) == reference
    # ... but every covered value does
    assert fingerprint({**invoice, "grandtotal": Decimal("119.01")}, [one, two]) != reference
    assert fingerprint(invoice, [dict(one, title="A2"), two]) != reference
    assert fingerprint(invoice, [one]) != reference
    # fields outside the legal content do not
    assert fingerprint({**invoice, "status": "Paid", "balance": Decimal(0)}, [one, two]) == reference
