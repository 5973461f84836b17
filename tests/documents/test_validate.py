"""validate-config renders every Template record's file against the sample
invoices and checks the template settings: E120-E129 with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from engine.project import load_project

from config.orgcopy import copy_org

RECORD = """version: 1
setting: Template
records:
  - Name: Case Template
    File: {file}
{extra}"""


def org_with_record(tmp_path: Path, template: str | None, extra: str = "", file: str = "case.html.j2") -> Path:
    org = copy_org(tmp_path / "org")
    if template is not None:
        (org / "templates" / file).write_text(template, encoding="utf-8")
    (org / "custom_settings" / "Template_case.yaml").write_text(
        RECORD.format(file=file, extra=textwrap.indent(textwrap.dedent(extra).strip("\n"), "    ") + "\n"
                      if extra else ""), encoding="utf-8")
    return org


def diagnostics(org: Path) -> list[tuple[str, str, int | None, str]]:
    return [(d.code, d.location.file, d.location.line, d.message) for d in load_project(org).diagnostics]


def only(found, code):
    hits = [d for d in found if d[0] == code]
    assert len(hits) == 1, found
    return hits[0]


TEMPLATE_ERRORS = {
    "syntax": ("<p>\n{% for line in invoice.positions %}\n<p>\n", "E120", 2, "template syntax error"),
    "unknown-filter": ("<p>\n\n{{ invoice.Name|format }}\n", "E120", 3, "No filter named 'format'"),
    "undefined-field": ("<p>\n{{ invoice.Name }}\n{{ invoice.GrandTotl }}\n", "E121", 3, "GrandTotl"),
    "undefined-name": ("{{ invoice.Name }}\n\n{{ totals }}\n", "E121", 3, "'totals' is undefined"),
    "only-in-final-branch": ("{% if invoice.is_final %}\n{{ invoice.sub_invoices[0].Nmae }}\n{% endif %}", "E121", 2,
                             "Nmae"),
    "dunder": ("a\nb\n{{ invoice.__class__ }}\n", "E122", 3, "'__class__' is not allowed"),
    "method-call": ("a\n{{ invoice.Name.lower() }}\n", "E122", 2, "not available to templates"),
    "include-traversal": ("a\n{% include '../metabill.yaml' %}\n", "E122", 2, "relative path inside templates/"),
    "include-missing": ("a\n\n{% include 'nothere.html' %}\n", "E123", 3, "'nothere.html' not found"),
    "type-error": ("a\n{{ invoice.Name + 1 }}\n", "E121", 2, "TypeError"),
}


@pytest.mark.parametrize("template,code,line,text", list(TEMPLATE_ERRORS.values()), ids=list(TEMPLATE_ERRORS))
def test_template_errors_located(tmp_path, template, code, line, text):
    found = diagnostics(org_with_record(tmp_path, template))
    hit = only(found, code)
    assert hit[1:3] == ("templates/case.html.j2", line), found
    assert text in hit[3]
    assert {d[0] for d in found} == {code}, found


def test_template_error_hint_names_the_record(tmp_path):
    result = load_project(org_with_record(tmp_path, "{{ nope }}"))
    [diagnostic] = result.diagnostics
    assert diagnostic.hint == "found rendering the sample invoice with Template 'Case Template'"


SETTING_ERRORS = {
    "balance-columns": ("BalanceColumns: BalanceTitle;Dte;Amount", "E124", "Dte", "did you mean Date?"),
    "balance-types-json": ('BalanceTypes: \'[{"type": "Payment", "title": "Payment"\'', "E125", "not valid", None),
    "balance-types-shape": ('BalanceTypes: \'{"Payment": "Payment"}\'', "E125", "JSON list", None),
    "balance-types-unknown-type": ('BalanceTypes: \'[{"type": "Paymnet", "title": "P"}]\'', "E125", "'Paymnet'",
                                   "did you mean Payment?"),
    "balance-title-placeholder": ('BalanceTypes: \'[{"type": "Settlement", "title": "For [RelatedInvoiceNumber]"}]\'',
                                  "E127", "[RelatedInvoiceNumber]", None),
    "override-labels": ('OverrideLabels: \'{"Calculated": "Zahlbetrag"}\'', "E126", "OverrideLabels", None),
    "payment-terms-placeholder": ("PaymentTerms: Pay by [PaymentDueDay]", "E127", "[PaymentDueDay]", None),
    "locale": ("Locale: xx_YY", "E128", "'xx_YY'", None),
    "header-placeholder": ("Header: Dear [Customer]", "E127", "Header uses the unknown placeholder [Customer]", None),
}


@pytest.mark.parametrize("extra,code,text,hint", list(SETTING_ERRORS.values()), ids=list(SETTING_ERRORS))
def test_template_setting_errors(tmp_path, extra, code, text, hint):
    org = org_with_record(tmp_path, None, extra, file="invoice.html.j2")
    result = load_project(org)
    hits = [d for d in result.diagnostics if d.code == code]
    assert len(hits) == 1, [(d.code, d.message) for d in result.diagnostics]
    [d] = hits
    assert d.location.file == "custom_settings/Template_case.yaml"
    assert d.location.line == 6  # the line of the value under the record
    assert text in d.message
    if hint:
        assert d.hint == hint
    assert {x.code for x in result.diagnostics} == {code}


@pytest.mark.parametrize("default,expected", [("true", "2 Template records are marked Default"),
                                              (None, None)])
def test_exactly_one_default_template(tmp_path, default, expected):
    org = org_with_record(tmp_path, None, f"Default: {default}" if default else "", file="invoice.html.j2")
    codes = [(d.code, d.message) for d in load_project(org).diagnostics]
    if expected is None:
        assert codes == []
    else:
        assert [c for c, _ in codes] == ["E129"] and expected in codes[0][1]


def test_no_default_template(tmp_path):
    org = copy_org(tmp_path / "org")
    path = org / "custom_settings" / "Template.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("Default: true", "Default: false"), encoding="utf-8")
    assert [(d.code, d.message) for d in load_project(org).diagnostics] == [
        ("E129", "no Template record is marked Default")]


def test_validate_config_prints_template_file_and_line(tmp_path):
    org = org_with_record(tmp_path, "<p>\n\n{{ invoice.Nmae }}\n")
    result = CliRunner().invoke(cli, ["validate-config", str(org)])
    assert result.exit_code == 1
    assert "templates/case.html.j2:3:1: E121 error: template error on the sample invoice: " in result.output
    assert "Nmae" in result.output
    assert "Traceback" not in result.output
