"""``--json`` on the commands that print a result: one document on standard
output, ``{"metabill": 1, "command": ..., "result": ...}`` (docs/cli-json.md),
amounts as exact decimal strings, dates ISO 8601; nothing else on standard
output. A billing cycle of the sample org on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest

from config.orgcopy import copy_org

from .test_cli import invoke

AMOUNT = re.compile(r"-?\d+\.\d+")


def document(result, command: str) -> dict:
    assert result.exit_code in (0, 4), result.output
    parsed = json.loads(result.stdout)  # the whole of standard output is the one document
    assert parsed["metabill"] == 1 and parsed["command"] == command
    return parsed["result"]


@pytest.fixture
def org(tmp_path, db_url):
    org = copy_org(tmp_path / "org", with_data=True)
    assert invoke("db", "migrate", "--db", db_url, cwd=org).exit_code == 0
    for path in sorted((org / "data").glob("[0-9]*_*.csv")):
        loaded = document(invoke("--json", "load", path.stem.split("_", 1)[1], str(path), "--db", db_url, cwd=org),
                          "load")
        assert loaded["inserted"] > 0 and loaded["updated"] == 0
    return org


def test_a_billing_cycle_in_json(org, db_url, tmp_path):
    db = ("--db", db_url)
    run = document(invoke("--json", "invoice-run", "--filter", "UC1 Sub Invoice", "--period-start", "2024-03-01",
                          "--period-end", "2024-03-31", "--invoice-date", "2024-03-15", "--finalize", *db, cwd=org),
                   "invoice-run")
    assert run["run"]["invoice_count"] >= 1 if "invoice_count" in run["run"] else run["run"]["invoices"]
    finalized = run["finalization"]["finalized"]
    assert finalized and finalized[0]["number"] == "INV-2024-00001"
    assert AMOUNT.fullmatch(finalized[0]["grand_total"]) and Decimal(finalized[0]["grand_total"]) > 0
    assert finalized[0]["date"] == "2024-03-15"

    paid = document(invoke("--json", "payment", "register", "INV-2024-00001", "1190.00", "--date", "2024-03-28",
                           *db, cwd=org), "payment register")
    assert paid["amount"] == "1190.00"

    runs = document(invoke("--json", "runs", *db, cwd=org), "runs")["runs"]
    assert [r["name"] for r in runs] and all("state" in r for r in runs)

    explained = document(invoke("--json", "explain", "INV-2024-00001", *db, cwd=org), "explain")
    assert explained["invoice"] == "INV-2024-00001" and explained["bookings"]
    assert all(isinstance(b["text"], list) for b in explained["bookings"])

    out = tmp_path / "EXTF.csv"
    datev = document(invoke("--json", "export", "datev", "--out", str(out), *db, cwd=org), "export datev")
    assert datev["file"] == str(out) and datev["exported"] > 0 and out.is_file()

    upcoming = document(invoke("--json", "jobs", "next", "--count", "2", "--at", "2025-01-01T00:00+01:00", cwd=org),
                        "jobs next")["next"]
    assert len(upcoming) == 2 and upcoming[0]["at"].startswith("2025-01-0")

    plan = document(invoke("--json", "db", "plan", *db, cwd=org), "db plan")
    assert plan["changes"] == []


def test_validate_config_honours_the_global_json(tmp_path):
    org = copy_org(tmp_path / "org")
    result = invoke("--json", "validate-config", ".", cwd=org)
    assert json.loads(result.stdout)["errors"] == 0


def test_errors_stay_on_standard_error(org, db_url):
    result = invoke("--json", "finalize", "--run", "IR-999", "--db", db_url, cwd=org)
    assert result.exit_code == 1 and result.stdout == ""
    assert json.loads(result.stderr)["error"]["code"] == "R210"
