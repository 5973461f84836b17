"""``metabill export bookings`` and ``metabill export datev`` in-process,
through the root group (which renders errors)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

from config.orgcopy import REPO_ROOT

from .helpers import datev_lines

DATEV_OPTIONS = ("--consultant", "29098", "--client", "55003", "--fiscal-year-start", "2024-01-01",
                 "--account-length", "4", "--chart-of-accounts", "03")


def invoke(*args: str, cwd: Path):
    runner = CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "250"})
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, ["export", *args], catch_exceptions=False)
    finally:
        os.chdir(old)


def test_export_bookings(demo, tmp_path):
    org = ("--org", str(REPO_ROOT), "--db", demo.url)
    result = invoke("bookings", "--format", "csv", *org, "--invoice", "INV-2024-00005", "--invoice",
                    "INV-2024-00011", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["InvoiceNo"] for r in rows} == {"INV-2024-00005", "INV-2024-00011"} and len(rows) == 6
    assert "Wrote 6 booking detail(s)" in result.stderr

    out = tmp_path / "journal" / "bookings.csv"
    result = invoke("bookings", *org, "--out", str(out), cwd=tmp_path)
    assert result.exit_code == 0
    assert len(list(csv.DictReader(out.open(encoding="utf-8", newline="")))) == 23

    result = invoke("bookings", *org, "--invoice", "INV-9999", cwd=tmp_path)
    assert result.exit_code == 1 and "no invoice numbered 'INV-9999'" in result.stderr


def test_export_datev(demo, tmp_path):
    org = ("--org", str(REPO_ROOT), "--db", demo.url)
    # An export setting without the DATEV parameters, and no options: refused.
    result = invoke("datev", *org, "--setting", "SEPA Credit", cwd=tmp_path)
    assert result.exit_code == 1 and "missing DATEV parameter(s)" in result.stderr

    result = invoke("datev", *org, *DATEV_OPTIONS, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    (written,) = tmp_path.glob("EXTF_Buchungsstapel_*.csv")
    assert len(datev_lines(written.read_bytes())) == 2 + 16
    assert "Booking details not exported to DATEV" in result.stdout
    assert result.stdout.count("interim booking of a progress invoice") == 6
    assert "amount in CHF" in result.stdout
    assert not list(tmp_path.glob("*.part"))

    out = tmp_path / "second.csv"
    result = invoke("datev", *org, *DATEV_OPTIONS, "--out", str(out), cwd=tmp_path)
    assert result.exit_code == 0
    assert "Nothing to export: no file written." in result.stdout and not out.exists()

    result = invoke("datev", *org, *DATEV_OPTIONS, "--force", "--out", str(written), cwd=tmp_path)
    assert result.exit_code == 1 and "never overwritten" in result.stderr

    result = invoke("datev", *org, *DATEV_OPTIONS, "--force", "--out", str(out), cwd=tmp_path)
    assert result.exit_code == 0 and len(datev_lines(out.read_bytes())) == 2 + 16


def test_export_datev_rejects_bad_parameters(demo_sqlite, tmp_path):
    org = ("--org", str(REPO_ROOT), "--db", demo_sqlite.url)
    result = invoke("datev", *org, *DATEV_OPTIONS, "--from", "2023-12-01", cwd=tmp_path)
    assert result.exit_code == 1 and "outside the fiscal year" in result.stderr
    assert not list(tmp_path.glob("EXTF_*"))


@pytest.mark.parametrize("args", [("bookings", "--help"), ("datev", "--help")])
def test_help(args, tmp_path):
    assert invoke(*args, cwd=tmp_path).exit_code == 0
