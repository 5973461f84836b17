"""``metabill bank import|review|explain|assign|ignore`` end to end through
click, on SQLite and PostgreSQL, and validate-config's checks of the payment
matching rules (E260-E264), the return fee account (E265)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli
from engine.project import load_project

from booking.helpers import org_variant
from config.orgcopy import REPO_ROOT, Replace

EXAMPLES = REPO_ROOT / "examples" / "bank"


def invoke(books, *args, org: Path = REPO_ROOT):
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--org", str(org), "--db", books.url],
                                                      catch_exceptions=False)
    return result.exit_code, result.output


def entry_of(books, reference: str) -> str:
    return next(str(r["name"]) for r in books.select("PaymentEntry") if r["externaltransactionid"] == reference)


def test_import_review_explain_assign_and_ignore(orders):
    code, out = invoke(orders, "bank", "import", str(EXAMPLES / "camt053-2024-11-05.xml"))
    assert code == 0, out
    assert "1 statement(s), 5 line(s); 2 assigned, 0 returned, 2 for review." in out
    assert "assigned -> INV-2024-00001" in out
    code, out = invoke(orders, "bank", "import", str(EXAMPLES / "camt053-2024-11-05.xml"))
    assert code == 0 and "0 statement(s), 0 line(s)" in out and "is imported already" in out
    code, out = invoke(orders, "bank", "review")
    assert code == 0 and "2 line(s) to review" in out and "INV-2024-00006" in out
    waiting = entry_of(orders, "20241105-000104")
    code, out = invoke(orders, "bank", "explain", waiting)
    assert code == 0, out
    assert "decision: review (score 70, threshold 100)" in out
    assert "+40  Amount equals the open amount [Amount]" in out
    code, out = invoke(orders, "bank", "assign", waiting, "INV-2024-00006")
    assert code == 0 and f"Assigned {waiting} (1190.00) to INV-2024-00006." in out
    code, out = invoke(orders, "bank", "assign", waiting, "INV-2024-00006")
    assert code == 1 and "assigned already" in out and "Traceback" not in out
    code, out = invoke(orders, "bank", "ignore", entry_of(orders, "20241105-000103"), "--reason", "not ours")
    assert code == 0
    code, out = invoke(orders, "bank", "review")
    assert "0 line(s) to review" in out
    code, out = invoke(orders, "bank", "explain", entry_of(orders, "20241105-000105"))
    assert code == 0 and "not money received" in out


def test_a_bad_file_is_a_user_error_with_every_problem_in_json(orders, tmp_path):
    path = tmp_path / "bad.sta"
    path.write_text((EXAMPLES / "mt940-2024-11-06.sta").read_text(encoding="utf-8").replace(
        ":62F:C241106EUR20176,19", ":62F:C241106EUR20176,18"), encoding="utf-8")
    result = CliRunner().invoke(cli, ["--json", "bank", "import", str(path), "--org", str(REPO_ROOT),
                                      "--db", orders.url], catch_exceptions=False)
    assert result.exit_code == 1
    document = json.loads(result.stderr)
    assert document["error"]["code"] == "R450"
    assert document["problems"][0]["where"]["file"] == str(path)
    assert "closing balance is 20176.18" in document["problems"][0]["message"]
    assert orders.select("PaymentEntry") == []


@pytest.mark.parametrize("edit, code", [
    (Replace("custom_settings/PaymentMatchingRule.yaml", "Score: 40", "Score: 0"), "E260"),
    (Replace("custom_settings/PaymentMatchingRule.yaml", "    Field: InvoiceNumber\n",
             "    Field: InvoiceNumber\n    Pattern: \"INV-(\"\n"), "E261"),
    (Replace("custom_settings/PaymentMatchingRule.yaml", "    Field: InvoiceNumber\n",
             "    Field: InvoiceNumber\n    Pattern: \"\\\\d*\"\n"), "E261"),
    (Replace("custom_settings/PaymentMatchingRule.yaml", "    Field: MandateReference\n",
             "    Field: MandateReference\n    Tolerance: 2\n"), "E262"),
    (Replace("custom_settings/GlobalSettings.yaml", "DefaultCurrency: EUR", "DefaultCurrency: EUR\n"
             "  PaymentMatchingThreshold: 500"), "E263"),
    (Replace("custom_settings/GlobalSettings.yaml", "DefaultCurrency: EUR", "DefaultCurrency: EUR\n"
             "  PaymentLeadDays: 12"), "E264"),
    # return fees charged, but the collective account for them is of another clearing reason
    (Replace("custom_settings/CollectiveAccount.yaml", "    ClearingReason: Return Fee\n",
             "    ClearingReason: Discount\n"), "E265"),
])
def test_validate_config_reports_matching_settings_that_cannot_work(tmp_path, edit, code):
    org = org_variant(tmp_path / "org", edit)
    result = load_project(org)
    found = [d for d in result.diagnostics if d.code == code]
    assert found, [str(d) for d in result.diagnostics]
    assert found[0].location.line is not None


def test_the_sample_matching_rules_are_clean():
    result = load_project(REPO_ROOT)
    assert not [d for d in result.diagnostics if d.code.startswith("E26")]


def test_without_charged_return_fees_no_fee_account_is_needed(tmp_path):
    org = org_variant(tmp_path / "org",
                      Replace("custom_settings/CollectiveAccount.yaml", "    ClearingReason: Return Fee\n",
                              "    ClearingReason: Discount\n"),
                      Replace("custom_settings/GlobalSettings.yaml", "ChargeReturnFees: true", "ChargeReturnFees: false"))
    assert not [d for d in load_project(org).diagnostics if d.code == "E265"]
