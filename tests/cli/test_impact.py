"""``metabill db plan --impact``: after a rule change, the drafts taxed and
the open invoices booked differently today, before anything is migrated or
billed again. On SQLite and PostgreSQL."""

from __future__ import annotations

import json

from config.orgcopy import Replace, apply_edits, copy_org

from .test_cli import invoke


def _billed_org(tmp_path, db_url):
    org = copy_org(tmp_path / "org", with_data=True)
    db = ("--db", db_url)
    assert invoke("db", "migrate", *db, cwd=org).exit_code == 0
    for path in sorted((org / "data").glob("[0-9]*_*.csv")):
        assert invoke("load", path.stem.split("_", 1)[1], str(path), *db, cwd=org).exit_code == 0
    uc1 = ("invoice-run", "--filter", "UC1 Sub Invoice", *db)
    assert invoke(*uc1, "--period-start", "2024-03-01", "--period-end", "2024-03-31", "--invoice-date",
                  "2024-03-15", "--finalize", cwd=org).exit_code == 0          # INV-2024-00001, Open
    assert invoke(*uc1, "--period-start", "2024-04-01", "--period-end", "2024-04-30", "--invoice-date",
                  "2024-04-15", cwd=org).exit_code == 0                        # a draft
    return org


def test_unchanged_configuration_has_no_impact(tmp_path, db_url):
    org = _billed_org(tmp_path, db_url)
    result = invoke("--json", "db", "plan", "--impact", "--db", db_url, cwd=org)
    impact = json.loads(result.stdout)["result"]["impact"]
    assert impact["drafts_checked"] == 1 and impact["open_checked"] == 1
    assert impact["drafts"] == [] and impact["open_invoices"] == []


def test_changed_rules_show_the_drafts_and_open_invoices_they_affect(tmp_path, db_url):
    org = _billed_org(tmp_path, db_url)
    apply_edits(org, [
        # the progress invoice books its revenue as interim revenue (a collective account)
        Replace("custom_settings/CollectiveAccount.yaml", 'Type: Interim Revenue\n    Account: "1593"',
                'Type: Interim Revenue\n    Account: "1594"'),
        Replace("custom_settings/TaxRule.yaml", 'TaxCode: DE_19\n    TaxRate: "19.00"',
                'TaxCode: DE_19\n    TaxRate: "16.00"'),
    ])
    result = invoke("db", "plan", "--impact", "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    assert "Drafts taxed differently today: 1 of 1" in result.stdout
    assert "Open invoices booked to other accounts today: 1 of 1" in result.stdout
    assert "INV-2024-00001: " in result.stdout and "account 1593 -> 1594" in result.stdout
    assert "DE_19 19 % (rule 'DE_19') -> DE_19 16 % (rule 'DE_19')" in result.stdout
