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
    (tmp_path / "empty.db").write_bytes(b"")
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = invoke("explain", "INV-2024-00001", "--db", url, cwd=org)
    assert result.exit_code == 1
    assert "[R903]" in result.stderr and "metabill db migrate" in result.stderr


def test_an_unreachable_database_is_an_error(tmp_path):
    org = _org(tmp_path)
    url = f"sqlite:///{tmp_path}"  # a folder: exists, but cannot be opened as a database
    result = invoke("explain", "INV-2024-00001", "--db", url, cwd=org)
    assert result.exit_code == 1
    assert "[R902]" in result.stderr


def test_a_missing_database_names_db_migrate_and_is_not_created(tmp_path):
    """Read and write commands alike: one line naming the command that
    creates the database, and no empty file left behind."""
    org = _org(tmp_path)
    commands = [("runs",), ("explain", "INV-2024-00001"), ("finalize", "--run", "IR-1"),
                ("export-records", "Account"), ("load", "Account", "data/01_Account.csv"),
                ("invoice-run", "--filter", "Order Invoice", "--period-start", "2024-01-01", "--period-end", "2024-01-31"),
                ("export", "bookings"), ("audit",), ("bank", "review"), ("payment", "register", "INV-2024-00001", "1.00",
                "--date", "2024-02-01"), ("render", "INV-2024-00001")]
    for args in commands:
        result = invoke(*args, cwd=org)
        assert result.exit_code == 1, (args, result.output)
        first = result.stderr.strip().splitlines()[0]
        assert first == "error: there is no database metabill.db: run 'metabill db migrate' to create it [R140]", args
        assert not (org / "metabill.db").exists(), args
    nested = tmp_path / "no" / "such" / "folder" / "x.db"
    result = invoke("runs", "--db", f"sqlite:///{nested}", cwd=org)
    assert "[R140]" in result.stderr and not nested.parent.exists()


def test_db_plan_of_a_missing_database_creates_nothing(tmp_path):
    org = _org(tmp_path)
    result = invoke("db", "plan", cwd=org)
    assert result.exit_code == 0, result.output
    assert "does not exist yet" in result.stdout and "Account" in result.stdout
    assert not (org / "metabill.db").exists()
    assert invoke("db", "migrate", cwd=org).exit_code == 0
    assert (org / "metabill.db").exists()
    assert "[R140]" not in invoke("runs", cwd=org).stderr


def test_an_empty_database_file_names_db_migrate(tmp_path):
    org = _org(tmp_path)
    (org / "metabill.db").write_bytes(b"")
    result = invoke("runs", cwd=org)
    assert result.exit_code == 1
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith("error: the database is empty or not migrated") and first.endswith(
        "run 'metabill db migrate' [R903]"), first


def test_configuration_errors_stop_a_command_with_their_diagnostics(tmp_path):
    org = _org(tmp_path)
    (org / "metadata" / "objects" / "Broken__c.yaml").write_text("object: Broken__c\nlabel: [\n", encoding="utf-8")
    result = invoke("--json", "finalize", "--run", "IR-1", cwd=org)
    assert result.exit_code == 1
    document = json.loads(result.stderr)
    assert document["error"]["code"] == "R001"
    assert document["diagnostics"][0]["file"] == "metadata/objects/Broken__c.yaml"


def test_a_date_argument_outside_the_business_dates_is_a_usage_error(tmp_path):
    org = _org(tmp_path)
    url = _migrated(tmp_path, org)
    for args in (("payment", "register", "INV-1", "10.00", "--date", "9999-12-31"),
                 ("payment", "register", "INV-1", "10.00", "--date", "0001-01-01"),
                 ("invoice-run", "--filter", "Order Invoice", "--period-start", "2024-01-01",
                  "--period-end", "2200-01-01")):
        result = invoke(*args, "--db", url, cwd=org)
        assert result.exit_code == 2, (args, result.output)
        assert "outside the supported dates 1900-01-01..2199-12-31" in result.output


def test_a_balance_outside_the_business_dates_is_refused_by_the_service(tmp_path):
    from datetime import date
    from decimal import Decimal

    import pytest

    from engine.domain.errors import EngineError
    from engine.cash import service
    from engine.storage.db import open_engine

    from contexts import context
    from databases import load_model, migrate_and_load

    model = load_model(_org(tmp_path))
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    try:
        migrate_and_load(engine, model)
        with pytest.raises(EngineError, match="outside the supported dates"):
            service.register_account_payment(engine, context(model), "10001", Decimal("5.00"), date(1, 1, 1))
    finally:
        engine.dispose()


def _loaded(tmp_path: Path, org: Path) -> str:
    url = _migrated(tmp_path, org)
    for path in sorted((org / "data").glob("[0-9]*_*.csv")):
        assert invoke("load", path.stem.split("_", 1)[1], str(path), "--db", url, cwd=org).exit_code == 0
    return url


def test_exit_codes_tell_the_truth_about_a_partly_done_run(tmp_path):
    """Exit 0 only when everything asked for was done: a run whose final
    invoices wait for draft sub invoices bills the rest and exits 4, naming
    the records; once the sub invoices are final, the same run exits 0."""
    org = _org(tmp_path)
    url = _loaded(tmp_path, org)
    period = ("--period-start", "2024-01-01", "--period-end", "2024-12-31", "--invoice-date", "2024-09-30")
    filters = ("--filter", "Order Sub Invoice", "--filter", "Order Invoice")
    first = invoke("invoice-run", *filters, *period, "--db", url, cwd=org)
    assert first.exit_code == 4, first.output
    assert "[R204]" in first.stderr and "could not be billed; the others were [R212]" in first.stderr
    assert invoke("finalize", "--run", "IR-000001", "--db", url, cwd=org).exit_code == 0
    second = invoke("invoice-run", *filters, *period, "--db", url, cwd=org)
    assert second.exit_code == 0, second.output
