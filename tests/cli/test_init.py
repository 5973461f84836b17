"""``metabill init DIR``: a new org that validates with no problem at all,
migrates and takes records, on SQLite and PostgreSQL; ``--from-sample``
copies the sample org; an existing org is never overwritten."""

from __future__ import annotations

import json
from pathlib import Path

from config.orgcopy import REPO_ROOT
from engine.project import load_project

from .test_cli import invoke


def test_a_new_org_has_no_problems_and_no_sample_company(tmp_path):
    result = invoke("init", "acme", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.stdout
    org = tmp_path / "acme"
    loaded = load_project(org)
    assert loaded.diagnostics == (), [d.message for d in loaded.diagnostics]
    model = loaded.model
    # every product object, none of the sample's customer objects or source fields
    assert model.object("Invoice") is not None and model.object("Partial_Delivery__c") is None
    assert not [f.name for f in model.object("Order").fields if f.name.endswith("__c")]
    assert model.setting_records("Filter") == ()
    assert "# records:" in (org / "custom_settings/Filter.yaml").read_text(encoding="utf-8")
    assert [r.name for r in model.setting_records("BusinessEntity")] == ["MAIN"]
    assert "Muster" not in (org / "custom_settings/BusinessEntity.yaml").read_text(encoding="utf-8")
    assert not (org / "data").exists()
    assert not [p for p in org.iterdir() if p.name.startswith(".metabill-init-")]


def test_a_new_org_migrates_and_loads_records(tmp_path, db_url):
    assert invoke("init", "acme", cwd=tmp_path).exit_code == 0
    org = tmp_path / "acme"
    assert invoke("db", "migrate", "--db", db_url, cwd=org).exit_code == 0
    accounts = org / "accounts.csv"
    accounts.write_text("Name,AccountNumber,BillingCountryCode\nFirst customer,10001,DE\n", encoding="utf-8")
    result = invoke("load", "Account", str(accounts), "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    assert "Loaded 1 Account record(s)" in result.stdout


def test_from_sample_copies_the_sample_org(tmp_path):
    result = invoke("--json", "init", "sample", "--from-sample", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)["result"]
    assert document["errors"] == 0 and document["warnings"] == 0
    org = tmp_path / "sample"
    for part in ("custom_settings/Filter.yaml", "metadata/objects/Partial_Delivery__c.yaml", "data/01_Account.csv"):
        assert (org / part).read_bytes() == (REPO_ROOT / part).read_bytes()
    assert "custom_settings/Filter.yaml" in document["files"]


def test_an_existing_org_is_not_overwritten(tmp_path):
    org = tmp_path / "acme"
    org.mkdir()
    (org / "metabill.yaml").write_text("version: 1\norg: Mine\n", encoding="utf-8")
    result = invoke("init", "acme", cwd=tmp_path)
    assert result.exit_code == 1
    assert "already holds metabill.yaml" in result.stderr and "[R002]" in result.stderr
    assert (org / "metabill.yaml").read_text(encoding="utf-8") == "version: 1\norg: Mine\n"
    assert not (org / "metadata").exists()


def test_init_into_an_existing_empty_folder(tmp_path: Path):
    (tmp_path / "here").mkdir()
    assert invoke("init", ".", cwd=tmp_path / "here").exit_code == 0
    assert load_project(tmp_path / "here").ok


def test_load_upsert_on_the_command_line(tmp_path, db_url):
    assert invoke("init", "acme", cwd=tmp_path).exit_code == 0
    org = tmp_path / "acme"
    assert invoke("db", "migrate", "--db", db_url, cwd=org).exit_code == 0
    first = org / "first.csv"
    first.write_text("Name,AccountNumber\nFirst,10001\nSecond,10002\n", encoding="utf-8")
    assert invoke("load", "Account", str(first), "--db", db_url, cwd=org).exit_code == 0
    second = org / "second.csv"
    second.write_text("AccountNumber,Name\n10001,First\n10002,Second renamed\n10003,Third\n", encoding="utf-8")
    result = invoke("load", "Account", str(second), "--upsert", "--key", "AccountNumber", "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("Account: 1 inserted, 1 updated, 1 unchanged.")
    result = invoke("--json", "load", "Account", str(second), "--upsert", "--key", "AccountNumber", "--db", db_url,
                    cwd=org)
    assert json.loads(result.stdout) == {"metabill": 1, "command": "load", "result": {
        "object": "Account", "file": str(second), "inserted": 0, "updated": 0, "unchanged": 3}}
    assert invoke("load", "Account", str(second), "--upsert", "--db", db_url, cwd=org).exit_code == 2
    result = invoke("load", "Account", str(second), "--upsert", "--key", "Name", "--db", db_url, cwd=org)
    assert result.exit_code == 1 and "[R141]" in result.stderr
