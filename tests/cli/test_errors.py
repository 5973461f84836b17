"""Runtime errors reach the user as data, rendered in one place: what the
problem concerns first, the message, the stable code; JSON with --json; an
exit code that follows from the error; environment failures (a database that
cannot be opened or was never migrated) get a code, never "internal error"."""

from __future__ import annotations

import json
from pathlib import Path

from config.orgcopy import copy_org

from .test_cli import invoke


def _org(tmp_path: Path) -> Path:
    return copy_org(tmp_path / "org", with_data=True)


def _migrated(tmp_path: Path, org: Path) -> str:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert invoke("db", "migrate", "--org", ".", "--db", url, cwd=org).exit_code == 0
    return url


def test_a_runtime_error_names_what_it_concerns_and_its_code(tmp_path):
    org = _org(tmp_path)
    url = _migrated(tmp_path, org)
    result = invoke("payment", "register", "INV-2024-00099", "100.00", "--date", "2024-01-01", "--db", url, cwd=org)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[0] == "Invoice INV-2024-00099: no invoice INV-2024-00099 [R402]"


def test_json_errors_are_data(tmp_path):
    org = _org(tmp_path)
    url = _migrated(tmp_path, org)
    result = invoke("--json", "finalize", "--run", "IR-999", "--db", url, cwd=org)
    assert result.exit_code == 1
    document = json.loads(result.stderr)
    assert document["error"]["code"] == "R210"
    [problem] = document["problems"]
    assert problem["where"] == {"object": "InvoiceRun", "record": "IR-999"}
    assert problem["message"] == "no invoice run 'IR-999'"


def test_an_unmigrated_database_is_an_error_with_a_hint(tmp_path):
    org = _org(tmp_path)
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = invoke("explain", "INV-2024-00001", "--db", url, cwd=org)
    assert result.exit_code == 1
    assert "[R903]" in result.stderr and "metabill db migrate" in result.stderr


def test_an_unreachable_database_is_an_error(tmp_path):
    org = _org(tmp_path)
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'x.db'}"
    result = invoke("explain", "INV-2024-00001", "--db", url, cwd=org)
    assert result.exit_code == 1
    assert "[R902]" in result.stderr


def test_configuration_errors_stop_a_command_with_their_diagnostics(tmp_path):
    org = _org(tmp_path)
    (org / "metadata" / "objects" / "Broken__c.yaml").write_text("object: Broken__c\nlabel: [\n", encoding="utf-8")
    result = invoke("--json", "finalize", "--run", "IR-1", cwd=org)
    assert result.exit_code == 1
    document = json.loads(result.stderr)
    assert document["error"]["code"] == "R001"
    assert document["diagnostics"][0]["file"] == "metadata/objects/Broken__c.yaml"
