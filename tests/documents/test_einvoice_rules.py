"""E-invoices of every document type and VAT category pass the official rules
(XSD + CEN EN 16931 + KoSIT XRechnung) with zero errors, in CII and UBL;
their amounts are the booked ones; random invoices break no rounding rule.

Pure: the invoices come from :mod:`.einvoice_samples` (amounts by the billing
code), no database.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.documents.einvoice.build import build_einvoice
from engine.documents.einvoice.cii import cii_xml
from engine.documents.einvoice.mapping import load_mapping
from engine.documents.einvoice.ubl import ubl_xml
from engine.documents.einvoice.validation import errors_of, validate_xml

from config.orgcopy import REPO_ROOT
from databases import load_model
from documents.einvoice_samples import ENTITY, cases, invoice, line

CASES = cases()


@pytest.fixture(scope="module")
def mapping():
    return load_mapping(load_model(REPO_ROOT))


def _build(mapping, case):
    record, lines, account, preceding = case
    return build_einvoice(record, lines, account, ENTITY, mapping, preceding=preceding)


def _errors(xml: bytes) -> list[str]:
    return [f"{v.rule}: {v.message}" for v in errors_of(validate_xml(xml))]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("syntax", ["cii", "ubl"])
def test_every_document_type_and_category_passes_the_official_rules(mapping, name, syntax):
    doc = _build(mapping, CASES[name])
    xml = cii_xml(doc) if syntax == "cii" else ubl_xml(doc)
    assert b"xrechnung_3.0" in xml  # the XRechnung rules ran too (BT-24)
    assert _errors(xml) == []


def test_the_cases_cover_what_the_issue_lists(mapping):
    docs = {name: _build(mapping, case) for name, case in CASES.items()}
    assert {d.type_code for d in docs.values()} >= {"380", "381", "326"}
    assert {g.category for d in docs.values() for g in d.vat} == {"S", "Z", "E", "AE", "K", "G", "O"}
    assert {g.rate for g in docs["mixed-19-7"].vat} == {Decimal("19"), Decimal("7")}
    reverse = docs["reverse-charge-AE"]
    assert reverse.vat[0].reason_code == "VATEX-EU-AE" and reverse.buyer.vat_id == "ATU12345678"
    assert docs["cancellation"].preceding[0] == "INV-8" and docs["cancellation"].type_code == "381"
    assert docs["direct-debit"].payment_means == "59" and docs["direct-debit"].mandate == "MNDT-10004-001"


def test_construction_and_corrected_invoice_types_where_the_org_says_so(mapping):
    custom = dataclasses.replace(mapping, document_types={**mapping.document_types, "Progress": "875",
                                                         "Final": "877", "Cancelation": "384"})
    for name, code in (("progress-326", "875"), ("final-with-deductions", "877"), ("cancellation", "384")):
        doc = _build(custom, CASES[name])
        assert doc.type_code == code
        assert _errors(cii_xml(doc)) == [], name


def test_a_final_invoice_deducts_its_sub_invoices_as_prepaid_amount(mapping):
    record, lines, _account, _ = CASES["final-with-deductions"]
    doc = _build(mapping, CASES["final-with-deductions"])
    deducted = -sum(l["PosTotalGross"] for l in lines if l["IsDeduction"])
    assert doc.tax_exclusive == Decimal("10000.00") and doc.tax_total == Decimal("1900.00")
    assert doc.prepaid == deducted == Decimal("6902.00")
    assert doc.payable == record["GrandTotal"] == Decimal("4998.00")  # what is booked and due
    assert all(l.net > 0 for l in doc.lines)


def test_credit_notes_show_positive_amounts_equal_to_the_booked_ones(mapping):
    record, _lines, _account, _ = CASES["cancellation"]
    doc = _build(mapping, CASES["cancellation"])
    assert doc.payable == -record["GrandTotal"] == Decimal("892.50")
    assert doc.tax_total == -record["TotalTax"]
    assert [(l.quantity, l.price) for l in doc.lines] == [(Decimal(3), Decimal("250.0000"))]


def test_a_discount_line_is_a_negative_quantity_at_a_positive_price(mapping):
    doc = _build(mapping, CASES["mixed-19-7"])
    discount = [l for l in doc.lines if l.name == "Rabatt"][0]
    assert discount.price > 0 and discount.quantity < 0 and discount.net == Decimal("-25.00")


# --- rounding: random invoices ---------------------------------------------------------

_quantities = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("500"), places=4)
_prices = st.decimals(min_value=Decimal("-200"), max_value=Decimal("5000"), places=4)
_lines = st.lists(st.tuples(_quantities, _prices, st.sampled_from(["19", "7", "0"])), min_size=1, max_size=8)


def _random_invoice(rows, rounding, gross):
    items = [line(f"Position {i}", str(q), str(p), rate) for i, (q, p, rate) in enumerate(rows, start=1)]
    record, lines, account = invoice("INV-P", items, rounding=rounding, gross=gross)
    if record["GrandTotal"] < 0:
        record["Type"] = "Credit"
    return record, lines, account, None


def _rounding_violations(doc, *, exact_tax: bool) -> list[str]:
    """BR-CO-10/13/14/15/16, BR-S/Z-08 and BR-CO-17 checked on the document."""
    cent = Decimal("0.01")
    found = []
    if doc.line_total != sum((l.net for l in doc.lines), Decimal(0)):
        found.append("BR-CO-10")
    if doc.tax_exclusive != doc.line_total:
        found.append("BR-CO-13")
    if doc.tax_total != sum((g.tax for g in doc.vat), Decimal(0)):
        found.append("BR-CO-14")
    if doc.tax_inclusive != doc.tax_exclusive + doc.tax_total:
        found.append("BR-CO-15")
    if doc.payable != doc.tax_inclusive - doc.prepaid:
        found.append("BR-CO-16")
    for group in doc.vat:
        base = sum((l.net for l in doc.lines if (l.category, l.rate) == (group.category, group.rate)), Decimal(0))
        if group.base != base:
            found.append(f"BR-{group.category}-08")
        wanted = (group.base * group.rate / 100).quantize(cent, rounding="ROUND_HALF_UP")
        allowed = Decimal(0) if exact_tax else Decimal(1)  # the CEN rule's own tolerance
        if abs(group.tax - wanted) > allowed:
            found.append("BR-CO-17")
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_lines, rounding=st.sampled_from(["PerLine", "PerTaxGroup"]), gross=st.booleans())
def test_random_invoices_break_no_rounding_rule(mapping, rows, rounding, gross):
    record, lines, account, _ = _random_invoice(rows, rounding, gross)
    if record["GrandTotal"] == 0:
        return
    doc = build_einvoice(record, lines, account, ENTITY, mapping)
    exact = rounding == "PerTaxGroup" and not gross
    assert _rounding_violations(doc, exact_tax=exact) == []
    sign = -1 if doc.is_credit_note else 1
    assert doc.payable == sign * record["GrandTotal"] and doc.tax_total == sign * record["TotalTax"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=_lines, rounding=st.sampled_from(["PerLine", "PerTaxGroup"]), gross=st.booleans())
def test_random_invoices_pass_the_official_rules(mapping, rows, rounding, gross):
    record, lines, account, _ = _random_invoice(rows, rounding, gross)
    if record["GrandTotal"] == 0:
        return
    doc = build_einvoice(record, lines, account, ENTITY, mapping)
    assert _errors(cii_xml(doc)) == []
    assert _errors(ubl_xml(doc)) == []


def test_the_vendored_rules_are_the_files_their_readme_lists():
    import hashlib
    import re

    from engine.documents.einvoice.validation import RULES

    listed = dict((path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  \./(\S+)$",
                                                                 (RULES / "README.md").read_text("utf-8"), re.M))
    present = {p.relative_to(RULES).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in RULES.rglob("*") if p.is_file() and p.name != "README.md"}
    assert listed == present and len(present) > 50
