"""PDF output: the text of the page (pypdf), hiding by CSS, deterministic
bytes and metadata, confined resources, and the message when WeasyPrint's
system libraries are missing."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import date

import pytest
from pypdf import PdfReader

from engine.documents.context import render_document
from engine.documents.template_records import parse_template_settings
from engine.documents import DocumentError, find_invoices, read_documents, render_html, render_pdf
from engine.documents import pdf as pdf_module
from engine.documents.render import Rendered

from config.orgcopy import REPO_ROOT

from .conftest import add_balance
from .seed import seed_invoice
from contexts import context


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def _seed_pdf(model, **changes) -> bytes:
    settings = replace(parse_template_settings(model, model.setting_record("Template", "Default Invoice (EN)")),
                       **changes)
    html = render_document(REPO_ROOT, model, settings, seed_invoice(model))
    return render_pdf(REPO_ROOT, Rendered("INV-2017-00001", settings.name, html), date(2017, 3, 1))


def test_pdf_has_balance_rows_and_payment_amount(sample_model):
    text = pdf_text(_seed_pdf(sample_model))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "1 Product 1 1 0.00% 25.00 25.00" in lines
    assert any(line.startswith("Grand Total") and line.endswith("25.00") for line in lines), lines
    assert any(line.startswith("Prepayment") and "Mar 2, 2017" in line and line.endswith("-10.00")
               for line in lines), lines
    assert any(line.startswith("Payment Amount") and line.endswith("€15.00") for line in lines), lines
    order = [i for i, line in enumerate(lines) if line.startswith(("Grand Total", "Prepayment", "Payment Amount"))]
    assert order == sorted(order) and len(order) == 3


def test_pdf_hides_balance_rows_by_css(sample_model):
    text = pdf_text(_seed_pdf(sample_model, custom_css="tr.balances { display: none; }"))
    assert "Prepayment" not in text
    assert "Payment Amount" in text and "€15.00" in text


def test_pdf_is_deterministic_with_pinned_metadata(sample_model):
    first, second = _seed_pdf(sample_model), _seed_pdf(sample_model)
    assert first == second
    reader = PdfReader(io.BytesIO(first))
    info = reader.metadata
    assert info["/CreationDate"] == info["/ModDate"] == "D:20170301000000Z"
    assert info["/Title"] == "INV-2017-00001"
    assert len(reader.trailer["/ID"]) == 2


def test_demo_invoice_pdf(demo):
    add_balance(demo, "INV-2024-00005", "Payment", "-1249.19", date(2024, 10, 14))
    with demo.engine.connect() as conn:
        [(invoice_id, _)] = find_invoices(conn, context(demo.model), names=["INV-2024-00005"])
        [data] = read_documents(conn, context(demo.model), [invoice_id])
    rendered = render_html(REPO_ROOT, context(demo.model), data)
    content = render_pdf(REPO_ROOT, rendered, data.invoice["Date"])
    text = " ".join(pdf_text(content).split())
    assert "Rechnung INV-2024-00005" in text
    assert "Gesamtbetrag 1.249,19" in text
    assert "Zahlung 14.10.2024 -1.249,19" in text
    assert "Zahlbetrag 0,00 €" in text


def test_pdf_loads_no_files_outside_templates(sample_model, tmp_path):
    html = ('<html><body><p>x</p><img src="file:///etc/passwd"><img src="../metabill.yaml">'
            '<link rel="attachment" href="file:///etc/hostname"><link rel="stylesheet" href="http://example.com/a.css">'
            "</body></html>")
    content = render_pdf(REPO_ROOT, Rendered("X", "t", html), date(2024, 1, 1))
    reader = PdfReader(io.BytesIO(content))
    assert reader.attachments == {}
    assert b"root:" not in content


def test_missing_system_library_message(monkeypatch):
    def broken():
        raise OSError("cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared object file: "
                      "No such file or directory.  Additionally, ctypes.util.find_library() did not manage to "
                      "locate a library called 'libpango-1.0-0'")

    monkeypatch.setattr(pdf_module, "_import_weasyprint", broken)
    with pytest.raises(pdf_module.PdfUnavailable) as caught:
        pdf_module.load_weasyprint()
    message = str(caught.value)
    assert "cannot load libpango-1.0-0" in message and "apt-get install" in message and "brew install pango" in message
    with pytest.raises(DocumentError, match="libpango-1.0-0"):
        render_pdf(REPO_ROOT, Rendered("X", "t", "<p>x</p>"), None)
