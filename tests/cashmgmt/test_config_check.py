"""validate-config for the cash-management integration: E150 when the
integration is on and Invoice lacks CM_IntegrationError__c; the code is in
the catalogue and documented; the pipeline runs the entries stage last."""

from __future__ import annotations

import re

from engine.cash.entries import create_entries
from engine.project import all_checks, finalization_stages
from contexts import context
from engine.cash.checks import check_cash_management
from engine.config.diagnostics import CODES
from engine.project import load_project

from booking.helpers import org_variant
from config.orgcopy import REPO_ROOT, Replace

from .helpers import CM_ON

FIELD = """  CM_IntegrationError__c:
    type: Text
    length: 255
    label: Cash Management Integration Error
    description: Customer field receiving errors of the invoice fix tasks for Cash Management.
"""
NO_FIELD = Replace("metadata/objects/Invoice.yaml", FIELD, "")


def codes(org) -> list[str]:
    return [d.code for d in load_project(org).diagnostics]


def test_integration_on_without_the_error_field_is_an_error(tmp_path):
    org = org_variant(tmp_path / "org", CM_ON, NO_FIELD)
    result = load_project(org)
    (diagnostic,) = [d for d in result.diagnostics if d.code == "E150"]
    assert diagnostic.is_error and "CM_IntegrationError__c" in diagnostic.message
    assert diagnostic.location.file.endswith("GlobalSettings.yaml")
    assert not result.ok


def test_no_error_with_the_field_or_with_the_integration_off(tmp_path):
    assert "E150" not in codes(org_variant(tmp_path / "on", CM_ON))
    assert "E150" not in codes(org_variant(tmp_path / "off", NO_FIELD))


def test_the_check_is_registered_and_documented():
    assert check_cash_management in all_checks()
    assert "E150" in CODES
    documented = set(re.findall(r"^\| (E15\d) \|", (REPO_ROOT / "docs/diagnostics.md").read_text(), re.M))
    assert documented == {code for code in CODES if code.startswith("E15")}


def test_the_entries_stage_follows_the_installments_and_precedes_the_documents(sample_model):
    """Entries are made per installment (so after the installments stage);
    the issued document, rendered last, shows what finalization assigned."""
    from engine.cash.finalization import create_installments
    from engine.documents.finalization import issue_documents

    stages = list(finalization_stages(context(sample_model)))
    assert stages.index(create_installments) < stages.index(create_entries) < stages.index(issue_documents)
    assert stages[-1] is issue_documents
