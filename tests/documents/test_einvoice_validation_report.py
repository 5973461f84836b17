"""The validator reads only the failed asserts of each rule set's report
(:data:`engine.documents.einvoice.validation.FAILED_ONLY`, issue 19): the
violations it returns are exactly those of the full SVRL report of the
published rule files, in the same order, for invalid documents of both
syntaxes that fail rules of the CEN and the KoSIT rule sets, warnings
included. Pure: no database."""

from __future__ import annotations

import pytest

from engine.documents.einvoice import validation
from engine.documents.einvoice.build import build_einvoice
from engine.documents.einvoice.cii import cii_xml
from engine.documents.einvoice.mapping import load_mapping
from engine.documents.einvoice.ubl import ubl_xml
from engine.documents.einvoice.validation import STYLESHEETS, _failed_asserts, validate_xml

from config.orgcopy import REPO_ROOT
from databases import load_model

from .einvoice_samples import ENTITY, invoice, line

#: Edits that keep a document schema-valid and break rules of both rule
#: sets: a country and a unit outside their code lists (CEN BR-CL-14 and
#: BR-CL-23), a grand total that is not net plus VAT (BR-CO-15).
REPLACE = {
    "cii": [(b"<ram:CountryID>DE</ram:CountryID>", b"<ram:CountryID>XX</ram:CountryID>"),
            (b'unitCode="C62"', b'unitCode="QQQ"'),
            (b"<ram:GrandTotalAmount>", b"<ram:GrandTotalAmount>1")],
    "ubl": [(b"<cbc:IdentificationCode>DE</cbc:IdentificationCode>",
             b"<cbc:IdentificationCode>XX</cbc:IdentificationCode>"),
            (b'unitCode="C62"', b'unitCode="QQQ"'),
            (b'<cbc:TaxInclusiveAmount currencyID="EUR">', b'<cbc:TaxInclusiveAmount currencyID="EUR">1')],
}
#: The element removed too: no buyer reference (KoSIT BR-DE-15).
REMOVE = {"cii": b"ram:BuyerReference", "ubl": b"cbc:BuyerReference"}


def _broken(xml: bytes, syntax: str) -> bytes:
    for old, new in REPLACE[syntax]:
        assert old in xml, old
        xml = xml.replace(old, new)
    start = xml.index(b"<" + REMOVE[syntax] + b">")
    close = b"</" + REMOVE[syntax] + b">"
    return xml[:start] + xml[xml.index(close, start) + len(close):]


@pytest.fixture(scope="module")
def documents() -> dict[str, bytes]:
    mapping = load_mapping(load_model(REPO_ROOT))
    record, lines, account = invoice("INV-9", [line(f"Beratung {i}", "3", "99.90", "19" if i % 3 else "7")
                                               for i in range(6)])
    doc = build_einvoice(record, lines, account, ENTITY, mapping, preceding=None)
    return {"cii": cii_xml(doc), "ubl": ubl_xml(doc)}


def _full_report_violations(xml: bytes, syntax: str) -> list:
    """The violations of the published rule files' full SVRL reports, the
    way the validator read them before it kept only the failed asserts."""
    validation._stylesheet(STYLESHEETS[syntax][0])  # the shared Saxon processor exists
    processor = validation._PROCESSOR[0]
    node = processor.parse_xml(xml_text=xml.decode("utf-8"))
    found = []
    for sheet in STYLESHEETS[syntax]:
        full = processor.new_xslt30_processor().compile_stylesheet(stylesheet_file=str(sheet))
        report = full.transform_to_string(xdm_node=node)
        assert "fired-rule" in report  # the full report, not the reduced one
        found += _failed_asserts(report)
    return found


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_the_violations_are_those_of_the_full_report(documents, syntax):
    broken = _broken(documents[syntax], syntax)
    expected = _full_report_violations(broken, syntax)
    rules = {v.rule for v in expected}
    assert {"BR-CL-14", "BR-CL-23", "BR-CO-15"} <= rules, rules  # CEN rules failed
    assert "BR-DE-15" in rules, rules  # and KoSIT rules
    assert validate_xml(broken) == expected


@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_a_valid_document_has_the_full_reports_warnings_only(documents, syntax):
    expected = _full_report_violations(documents[syntax], syntax)
    assert not [v for v in expected if v.is_error]
    assert validate_xml(documents[syntax]) == expected
