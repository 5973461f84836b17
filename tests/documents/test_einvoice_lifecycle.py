"""E-invoices issued at finalization (SQLite and PostgreSQL): stored as XML
with the invoice, validated (status and violations on the invoice), returned
unchanged by ``metabill render``; ZUGFeRD PDF/A-3 carries the CII, which
extracts back identical; a violation is listed by ``metabill audit`` and,
when the mapping says so, blocks finalization."""

from __future__ import annotations

import io
import json
from datetime import date

import pytest
from pypdf import PdfReader

from engine.audit import audit
from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.documents.einvoice.issue import KIND_CII, KIND_UBL, zugferd_xml
from engine.documents.einvoice.mapping import ORG_FILE
from engine.documents.einvoice.validation import embedded_xml, errors_of, validate_xml
from engine.documents.service import render
from engine.project import cancel_invoice, finalize

from booking.helpers import Books
from config.orgcopy import REPO_ROOT, copy_org
from contexts import context
from databases import load_model

WHEN = date(2024, 1, 31)


def _issue(books: Books) -> None:
    ctx = context(books.model)
    report = run_invoices(books.engine, ctx, RunRequest(("Order Invoice",), date(2024, 1, 1), WHEN,
                                                        invoice_date=WHEN, today=WHEN))
    with books.engine.connect() as conn:
        ids = draft_ids(conn, ctx, run_id=report.run_id)
    outcome = finalize(books.engine, ctx, ids, today=WHEN)
    books.outcome = outcome


@pytest.fixture
def issued(db_url, prepared) -> Books:
    model = load_model(REPO_ROOT)
    books = Books(prepared(db_url, model), model, db_url, REPO_ROOT)
    _issue(books)
    assert books.outcome.finalized and not books.outcome.failures, books.outcome.failures
    return books


def _stored(books: Books, invoice_id: int, kind: str) -> str:
    table = books.t("InvoiceDocument")
    parts = books.select("InvoiceDocument", table.c.invoice == invoice_id, table.c.kind == kind)
    assert parts and {p["format"] for p in parts} == {"xml"}
    return "".join(p["content"] for p in sorted(parts, key=lambda p: p["part"]))


def test_finalization_stores_valid_xrechnung_in_both_syntaxes(issued):
    invoices = [i for i in issued.invoices() if i["status"] not in ("Draft", "Pre-Draft")]
    assert invoices
    for invoice in invoices:
        assert invoice["einvoicestatus"] == "Valid", (invoice["name"], invoice["einvoiceviolations"])
        for kind in (KIND_CII, KIND_UBL):
            xml = _stored(issued, invoice["id"], kind).encode("utf-8")
            assert errors_of(validate_xml(xml)) == []
            assert invoice["name"].encode() in xml


def test_render_returns_the_stored_xml_and_a_zugferd_pdf_that_carries_it(issued, tmp_path):
    ctx = context(issued.model)
    invoice = issued.invoice("INV-2024-00001")
    formats = ("xrechnung-cii", "xrechnung-ubl", "zugferd")
    first = render(issued.engine, ctx, REPO_ROOT, names=["INV-2024-00001"], formats=formats, out_dir=tmp_path / "a")
    issued.pay("INV-2024-00001", "100.00", date(2024, 2, 10))
    again = render(issued.engine, ctx, REPO_ROOT, names=["INV-2024-00001"], formats=formats, out_dir=tmp_path / "b")
    assert first.failure_error() is None and again.failure_error() is None
    cii = (tmp_path / "a" / "INV-2024-00001-xrechnung-cii.xml").read_bytes()
    assert cii.decode("utf-8") == _stored(issued, invoice["id"], KIND_CII)
    assert (tmp_path / "a" / "INV-2024-00001-xrechnung-ubl.xml").read_text("utf-8") == _stored(
        issued, invoice["id"], KIND_UBL)
    for name in ("INV-2024-00001-xrechnung-cii.xml", "INV-2024-00001-xrechnung-ubl.xml",
                 "INV-2024-00001-zugferd.pdf"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    pdf = (tmp_path / "a" / "INV-2024-00001-zugferd.pdf").read_bytes()
    extracted = embedded_xml(pdf)
    assert extracted == zugferd_xml(cii)  # the stored CII, BT-24 the EN 16931 profile
    assert b"urn:cen.eu:en16931:2017</ram:ID>" in extracted
    assert errors_of(validate_xml(extracted)) == []
    reader = PdfReader(io.BytesIO(pdf))
    root = reader.trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode("utf-8")
    assert "<pdfaid:part>3</pdfaid:part>" in xmp and "factur-x.xml" in xmp  # PDF/A-3 + the Factur-X schema
    assert "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
    [spec] = [s.get_object() for s in root["/AF"]]
    assert spec["/F"] == "factur-x.xml" and spec["/AFRelationship"] == "/Data"


def test_a_cancellation_is_a_credit_note_naming_the_invoice_it_cancels(issued):
    ctx = context(issued.model)
    outcome = cancel_invoice(issued.engine, ctx, "INV-2024-00001", reason="falscher Zeitraum", when=date(2024, 2, 5))
    cancellation = issued.invoices(issued.t("Invoice").c.relatedinvoice == issued.invoice("INV-2024-00001")["id"])
    assert cancellation, outcome
    [credit] = cancellation
    assert credit["einvoicestatus"] == "Valid", credit["einvoiceviolations"]
    xml = _stored(issued, credit["id"], KIND_UBL)
    assert "<cbc:CreditNoteTypeCode>381</cbc:CreditNoteTypeCode>" in xml
    assert "<cbc:ID>INV-2024-00001</cbc:ID>" in xml.split("<cac:BillingReference>")[1].split("</cac:BillingReference>")[0]


def _broken_org(tmp_path, block: bool):
    org = copy_org(tmp_path / "org")
    (org / ORG_FILE).write_text(
        f"validation: {{block_finalization: {'true' if block else 'false'}}}\n"
        "terms:\n  BT-10: {field: Invoice.BillingState}\n", encoding="utf-8")
    return org


@pytest.mark.parametrize("block", [False, True])
def test_a_violation_is_recorded_listed_by_audit_or_blocks(db_url, prepared, tmp_path, block):
    org = _broken_org(tmp_path, block)
    model = load_model(org)
    books = Books(prepared(db_url, model, key=f"einvoice-broken-{block}"), model, db_url, org)
    _issue(books)
    if block:
        assert not books.outcome.finalized and books.outcome.failures
        assert all("BR-DE-15" in str(f) for f in books.outcome.failures)
        assert {i["status"] for i in books.invoices()} <= {"Draft", "Pre-Draft"}
        return
    assert books.outcome.finalized
    invoice = books.invoice("INV-2024-00001")
    assert invoice["einvoicestatus"] == "Invalid"
    violations = json.loads(invoice["einvoiceviolations"])
    assert {(v["format"], v["rule"], v["mapping"]) for v in violations} == {
        ("cii", "BR-DE-15", f"{ORG_FILE}:3:10"), ("ubl", "BR-DE-15", f"{ORG_FILE}:3:10")}
    report = audit(books.engine, context(model))
    listed = [f for f in report.findings if f.code == "A604"]
    assert {f.subject for f in listed} == {i["name"] for i in books.invoices() if i["einvoicestatus"] == "Invalid"}
    assert all("BR-DE-15" in f.message and ORG_FILE in f.message for f in listed)
