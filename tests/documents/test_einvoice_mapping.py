"""validate-config checks the e-invoice mapping (E200-E208) at its YAML
file:line; a broken mapping's rule violation names the rule id and the
mapping entry that fed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.documents.einvoice.build import build_einvoice
from engine.documents.einvoice.cii import cii_xml
from engine.documents.einvoice.issue import violation_record
from engine.documents.einvoice.mapping import ORG_FILE, load_mapping
from engine.documents.einvoice.ubl import ubl_xml
from engine.documents.einvoice.validation import errors_of, validate_xml
from engine.project import load_project

from config.orgcopy import copy_org
from documents.einvoice_samples import ENTITY, cases


def _org(tmp_path: Path, mapping: str | None = None, **files: str) -> Path:
    org = copy_org(tmp_path / "org")
    if mapping is not None:
        (org / ORG_FILE).write_text(mapping, encoding="utf-8")
    for name, text in files.items():
        (org / name).write_text(text, encoding="utf-8")
    return org


def _found(org: Path, prefix: str = "E2") -> list[tuple[str, str, int | None, str]]:
    result = load_project(org)
    return [(d.code, d.location.file, d.location.line, d.message) for d in result.diagnostics
            if d.code.startswith(prefix) and d.code < "E230"]


def test_the_sample_org_mapping_is_clean(tmp_path):
    assert _found(_org(tmp_path)) == []


def test_unknown_term_unknown_field_type_mismatch_and_unmapped_required_term(tmp_path):
    org = _org(tmp_path, "version: 1\n"
                         "terms:\n"
                         "  BT-999: {field: Invoice.Name}\n"
                         "  BT-10: {field: Invoice.LeitwegId__c}\n"
                         "  BT-72: {field: Invoice.AccountName}\n"
                         "  BT-49: null\n"
                         "  BT-109: {field: Invoice.TotalNet}\n"
                         "document_types:\n"
                         "  Final: '999'\n")
    found = _found(org)
    by_code = {code: (file, line, message) for code, file, line, message in found}
    assert [(c, l) for c, f, l, _ in found if c == "E201"] == [("E201", 3), ("E201", 7)]
    assert ("E202", ORG_FILE, 4) in [(c, f, l) for c, f, l, _ in found]
    assert "LeitwegId__c" in by_code["E202"][2]
    assert ("E203", ORG_FILE, 5) in [(c, f, l) for c, f, l, _ in found]
    assert "BT-72" in by_code["E203"][2] and "Text" in by_code["E203"][2]
    assert ("E204", ORG_FILE, 6) in [(c, f, l) for c, f, l, _ in found]
    assert "BT-49" in by_code["E204"][2]
    assert ("E206", ORG_FILE, 9) in [(c, f, l) for c, f, l, _ in found]
    assert not load_project(org).ok


def test_a_custom_field_maps_the_buyer_reference(tmp_path):
    org = _org(tmp_path, "terms:\n  BT-10: {field: Invoice.PurchaseOrderNo__c, default: n/a}\n")
    assert _found(org) == []
    mapping = load_mapping(load_project(org).model)
    assert mapping.terms["BT-10"].field == "PurchaseOrderNo__c" and mapping.terms["BT-10"].where.line == 2


def test_tax_rules_need_a_known_category_with_an_exemption_reason(tmp_path):
    org = _org(tmp_path, "exemption_reasons:\n  AE: null\n")
    tax_rules = (org / "custom_settings" / "TaxRule.yaml").read_text(encoding="utf-8")
    (org / "custom_settings" / "TaxRule.yaml").write_text(
        tax_rules.replace("VATCategoryCode: G", "VATCategoryCode: X"), encoding="utf-8")
    found = _found(org)
    messages = [m for c, f, _, m in found if c == "E207" and f == "custom_settings/TaxRule.yaml"]
    assert any("'X' is not an EN 16931 category" in m for m in messages)
    assert any("category AE needs an exemption reason" in m for m in messages)


def test_business_entities_need_what_required_terms_read(tmp_path):
    org = _org(tmp_path)
    path = org / "custom_settings" / "BusinessEntity.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("    Phone: +49 30 1234567\n", ""), encoding="utf-8")
    found = _found(org)
    assert [(c, f) for c, f, _, m in found if "BT-42" in m] == [("E208", "custom_settings/BusinessEntity.yaml")]


def test_a_broken_mapping_yields_the_rule_id_and_the_yaml_location(tmp_path):
    """A mapping that passes validate-config but feeds nothing: the buyer
    reference (Leitweg-ID) from a field the invoices leave empty. The
    violated rule (BR-DE-15) names the mapping entry at file:line."""
    org = _org(tmp_path, "terms:\n  BT-10: {field: Invoice.BillingState}\n")
    assert _found(org) == []  # a text field for a text term: nothing validate-config can know
    mapping = load_mapping(load_project(org).model)
    record, lines, account, _ = cases()["mixed-19-7"]
    doc = build_einvoice(record, lines, account, ENTITY, mapping)
    for xml in (cii_xml(doc), ubl_xml(doc)):
        violations = [violation_record(v, "cii", doc) for v in errors_of(validate_xml(xml))]
        assert [(v["rule"], v["mapping"]) for v in violations] == [("BR-DE-15", f"{ORG_FILE}:2:10")]


@pytest.mark.parametrize("text", ["terms: [1]\n", "bogus: 1\n"])
def test_a_mapping_file_of_the_wrong_shape(tmp_path, text):
    assert [c for c, *_ in _found(_org(tmp_path, text))] == ["E200"]


def test_a_mapping_file_that_is_not_a_mapping_is_reported_by_the_loader_once(tmp_path):
    """The loader reads the file (it is part of the config hash) and reports a
    document that is not a mapping, as for every YAML file of the org."""
    result = load_project(_org(tmp_path, "- a list\n"))
    assert [(d.code, d.location.file, d.location.line) for d in result.errors] == [("E006", ORG_FILE, 1)]


def test_the_mapping_file_is_read_by_the_loader_and_changes_the_config_hash(tmp_path):
    plain = load_project(_org(tmp_path / "a"))
    mapped = load_project(_org(tmp_path / "b", "version: 1\nterms:\n  BT-22: {value: \"Es gelten unsere AGB.\"}\n"))
    assert mapped.ok and not [d for d in mapped.diagnostics if d.code == "W014"]
    assert ORG_FILE in mapped.model.extensions
    assert mapped.model.config_hash != plain.model.config_hash
