"""The ``metabill`` command line, end to end.

validate-config and the "never a traceback" checks run the real console
script in a subprocess (``.venv/bin/metabill``, no METABILL_DB_URL in the
environment). The storage scenario runs the same commands in-process through
click's CliRunner (same code path, without an interpreter start per command),
once on SQLite and once on PostgreSQL (``db_url`` from tests/conftest.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli.main import cli

from config.orgcopy import REPO_ROOT, Replace, add_invoice_field, copy_org, find_position

METABILL = Path(sys.executable).parent / "metabill"
CHANGING_INTERNAL_TABLES = {"_mb_schema_field", "_mb_meta"}  # migrations record themselves there


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("METABILL_DB_URL", "METABILL_DEBUG")}
    env["COLUMNS"] = "200"  # rich tables: one row per line
    return env


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed console script."""
    return subprocess.run(
        [str(METABILL), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def invoke(*args: str, cwd: Path):
    """Run a command in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "200"})
    old = Path.cwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    assert "internal error" not in both, both


@pytest.fixture
def org(tmp_path: Path) -> Path:
    return copy_org(tmp_path / "org", with_data=True)


def test_console_script_is_installed():
    assert METABILL.is_file(), f"{METABILL} missing: install the project into the venv"


# --- validate-config --------------------------------------------------------------------------


def test_clean_sample_org(tmp_path):
    proc = run("validate-config", str(REPO_ROOT), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"{_files_checked(REPO_ROOT)} files checked: no problems found."]
    assert proc.stderr == ""


def _files_checked(org: Path) -> int:
    from engine.project import load_project

    return load_project(org).files_checked


def test_default_directory_is_the_working_directory(org):
    proc = run("validate-config", cwd=org)
    assert proc.returncode == 0
    assert proc.stdout.endswith("files checked: no problems found.\n")


def test_broken_org_exit_1_and_line_format(org):
    path = org / "metadata/objects/Broken__c.yaml"
    path.write_text("version: 1\nobject: Broken__c\nlabel: Broken\nfields:\n  Code__c: {type: Text, lenght: 20}\n")
    proc = run("validate-config", ".", cwd=org)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "metadata/objects/Broken__c.yaml:5:25: E010 error: unknown key 'lenght' in fields/Code__c"
    assert lines[1] == "    hint: did you mean length?"
    assert lines[-1] == f"{_files_checked(org)} files checked: 1 error, 0 warnings."
    assert len(lines) == 3
    assert_no_traceback(proc)


def test_json_format(org):
    (org / "metadata/objects/Broken__c.yaml").write_text(
        "version: 1\nobject: Broken__c\nlabel: Broken\nfields:\n  Code__c: {type: Txt}\n  Plain: {type: Text}\n"
    )
    proc = run("validate-config", str(org), "--format", "json", cwd=org.parent)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert set(data) == {"files_checked", "errors", "warnings", "diagnostics"}
    assert (data["files_checked"], data["errors"], data["warnings"]) == (_files_checked(org), 2, 0)
    assert [(d["file"], d["line"], d["column"], d["code"], d["severity"]) for d in data["diagnostics"]] == [
        ("metadata/objects/Broken__c.yaml", 5, 19, "E013", "error"),
        ("metadata/objects/Broken__c.yaml", 6, 3, "E030", "error"),
    ]
    assert data["diagnostics"][0]["hint"] == "did you mean Text?"
    assert data["diagnostics"][1]["yaml_path"] == ["fields", "Plain"]


def test_json_format_of_a_clean_org(org):
    proc = run("validate-config", "--format", "json", cwd=org)
    assert proc.returncode == 0
    assert json.loads(proc.stdout) == {
        "files_checked": _files_checked(org), "errors": 0, "warnings": 0, "diagnostics": []
    }


def _add_overlapping_gl_rules(org: Path) -> None:
    (org / "custom_settings/GlAccountRule_overlap.yaml").write_text(
        "version: 1\nsetting: GlAccountRule\nrecords:\n"
        "  - Name: Overlap A\n    TaxCode: DE_19\n    GLAccount: \"8401\"\n"
    )


def test_strict_turns_warnings_into_failure(org):
    _add_overlapping_gl_rules(org)  # overlaps the shipped rule 'Revenue 19%'
    relaxed = run("validate-config", cwd=org)
    assert relaxed.returncode == 0, relaxed.stdout
    first = relaxed.stdout.splitlines()[0]
    assert first.startswith("custom_settings/GlAccountRule_overlap.yaml:4:5: W100 warning: ")
    assert relaxed.stdout.splitlines()[-1].endswith("files checked: 0 errors, 1 warning.")
    strict = run("validate-config", "--strict", cwd=org)
    assert strict.returncode == 1
    assert strict.stdout == relaxed.stdout


def test_usage_error_exit_2(org):
    proc = run("validate-config", "--no-such-option", cwd=org)
    assert proc.returncode == 2
    assert "No such option" in proc.stderr
    assert_no_traceback(proc)
    proc = run("validate-config", "--format", "xml", cwd=org)
    assert proc.returncode == 2
    proc = run("no-such-command", cwd=org)
    assert proc.returncode == 2


def test_directory_that_does_not_exist(tmp_path):
    proc = run("validate-config", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert "E001 error:" in proc.stdout and "is not a directory" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "0 files checked: 1 error, 0 warnings."


def test_directory_that_is_not_an_org(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    proc = run("validate-config", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert proc.stdout.startswith("metadata/objects: E001 error: no metadata/objects folder")


# --- never a traceback ----------------------------------------------------------------------


def _garbage(org: Path) -> None:
    rng = random.Random(20240131)
    for i in range(5):
        (org / f"metadata/objects/Garbage{i}.yaml").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (org / "custom_settings/Garbage.yaml").write_bytes(bytes(rng.randrange(1, 256) for _ in range(4096)))


def _empty(org: Path) -> None:
    (org / "metadata/objects/Empty__c.yaml").write_bytes(b"")


def _ten_thousand(org: Path) -> None:
    folder = org / "metadata/objects"
    for i in range(10_000):
        (folder / f"Many{i:05d}__c.yaml").write_bytes(b"version: 1\n")


def _bomb(org: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    (org / "metadata/objects/Bomb__c.yaml").write_text("\n".join(lines) + "\n")


def _five_mib(org: Path) -> None:
    (org / "metadata/objects/Huge__c.yaml").write_bytes(b"version: 1\n" + b"# " + b"z" * (5 * 2**20) + b"\n")


def _deep(org: Path) -> None:
    (org / "custom_settings/Deep.yaml").write_text("setting: Filter\nrecords: " + "[" * 100_000 + "]" * 100_000 + "\n")


def _long_line_of_nodes(org: Path) -> None:
    (org / "metadata/objects/Wide__c.yaml").write_text("version: 1\nobject: Wide__c\nmeta: {" + ", ".join(
        f"k{i}: [{i}]" for i in range(20_000)) + "}\n")


def _not_utf8(org: Path) -> None:
    (org / "metadata/settings/Latin1.yaml").write_bytes(b"setting: Caf\xe9\nkind: list\n")


def _manifest_garbage(org: Path) -> None:
    (org / "metabill.yaml").write_bytes(b"\xff\xfe\x00garbage")


@pytest.mark.parametrize(
    ("make", "code", "where"),
    [
        (_garbage, "E001", "metadata/objects/Garbage0.yaml"),
        (_empty, "E006", "metadata/objects/Empty__c.yaml:1:1"),
        # the count includes the shipped objects, which other changes add to
        (_ten_thousand, "E004", "metadata/objects: E004 error: metadata/objects/ holds 10,0"),
        (_bomb, "E005", "metadata/objects/Bomb__c.yaml:1:4"),
        (_five_mib, "E004", "metadata/objects/Huge__c.yaml: E004 error: file is 5,242,"),
        (_deep, "E005", "custom_settings/Deep.yaml:2:"),
        (_long_line_of_nodes, "E011", "metadata/objects/Wide__c.yaml:"),
        (_not_utf8, "E001", "metadata/settings/Latin1.yaml:1:13"),
        (_manifest_garbage, "E001", "metabill.yaml"),
    ],
    ids=["binary-garbage", "empty-file", "10000-files", "yaml-bomb", "5-mib-file", "100000-brackets",
         "20000-keys-one-line", "not-utf8", "binary-manifest"],
)
def test_never_a_traceback(org, make, code, where):
    make(org)
    proc = run("validate-config", cwd=org)
    assert_no_traceback(proc)
    assert proc.returncode in (1, 2)
    assert proc.returncode == 1
    assert f" {code} error: " in proc.stdout
    assert where in proc.stdout, proc.stdout[:3000]


@pytest.mark.parametrize("kind", ["symlink-to-dev-zero", "directory-named-like-yaml"])
def test_special_entries_are_ignored_with_a_warning(org, kind):
    target = org / "metadata/objects/x.yaml"
    if kind == "symlink-to-dev-zero":
        target.symlink_to("/dev/zero")
    else:
        target.mkdir()
        (target / "inner.yaml").write_text("version: 1\n")
    proc = run("validate-config", cwd=org, timeout=30)
    assert_no_traceback(proc)
    # Only a warning: the documented exit code is 0 (1 with --strict).
    assert proc.returncode == 0
    first = proc.stdout.splitlines()[0]
    assert first.startswith("metadata/objects/x.yaml: W014 warning: 'metadata/objects/x.yaml' is ")
    assert first.endswith("not a YAML file, and was ignored")
    assert run("validate-config", "--strict", cwd=org, timeout=30).returncode == 1


def test_manifest_symlink_to_dev_zero_is_not_read(org):
    (org / "metabill.yaml").unlink()
    (org / "metabill.yaml").symlink_to("/dev/zero")
    proc = run("validate-config", cwd=org, timeout=30)  # returns: /dev/zero is never read
    assert_no_traceback(proc)
    assert proc.returncode in (0, 1)
    assert " files checked: " in proc.stdout.splitlines()[-1]


def test_file_name_that_is_not_utf8(org):
    name = os.fsdecode(b"bad\xff.yaml")
    (org / "metadata/objects" / name).write_text("version: 1\nobject: Bad\n")
    proc = run("validate-config", cwd=org)
    assert_no_traceback(proc)
    assert proc.returncode == 1


def test_load_of_garbage_never_a_traceback(org, tmp_path):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    assert invoke("db", "migrate", "--org", ".", "--db", db, cwd=org).exit_code == 0
    (org / "garbage.csv").write_bytes(bytes(random.Random(7).randrange(256) for _ in range(2048)))
    proc = run("load", "Account", "garbage.csv", "--org", ".", "--db", db, cwd=org)
    assert_no_traceback(proc)
    assert proc.returncode == 1
    assert "garbage.csv:1: the file is not UTF-8 text" in proc.stderr
    result = invoke("load", "NoSuchObject", "garbage.csv", "--org", ".", "--db", db, cwd=org)
    assert result.exit_code == 1
    assert "'NoSuchObject' is not a data object of this org" in result.stderr


def test_storage_commands_refuse_a_broken_org(org, tmp_path):
    (org / "metadata/objects/Broken__c.yaml").write_text("version: 1\nobject: Broken__c\n  label: x\n")
    proc = run("db", "migrate", "--org", ".", "--db", f"sqlite:///{tmp_path / 'b.db'}", cwd=org)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert "metadata/objects/Broken__c.yaml:3:8: E002 error:" in proc.stderr
    assert "has 1 error(s)" in proc.stderr
    assert not (tmp_path / "b.db").exists()  # refused before the database was opened


# --- storage commands end to end -------------------------------------------------------------


def data_files(org: Path) -> list[tuple[str, Path]]:
    """(object, file) for data/*.csv in file-name order: 05_Order.csv -> Order."""
    files = sorted((org / "data").glob("*.csv"))
    return [(f.stem.split("_", 1)[1], f) for f in files]


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every table (but the migration bookkeeping), as raw
    database values keyed by column name, in a stable order."""
    engine = sa.create_engine(url)
    try:
        metadata = sa.MetaData()
        with engine.connect() as conn:
            metadata.reflect(conn)
            out = {}
            for name, table in metadata.tables.items():
                if name in CHANGING_INTERNAL_TABLES:
                    continue
                rows = [dict(r._mapping) for r in conn.execute(sa.select(table))]
                out[name] = sorted(rows, key=lambda r: repr(sorted(r.items())))
        return out
    finally:
        engine.dispose()


def without(tables: dict[str, list[dict]], table: str, column: str) -> dict[str, list[dict]]:
    copy = dict(tables)
    copy[table] = [{k: v for k, v in row.items() if k != column} for row in tables[table]]
    return copy


def plan_rows(output: str) -> list[list[str]]:
    """The body rows of the rich table printed by db plan/migrate."""
    rows = []
    for line in output.splitlines():
        if line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│").split("│")])
    return rows


def test_db_plan_on_an_empty_database_lists_create_table(org, tmp_path):
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    proc = run("db", "plan", "--org", ".", "--db", url, cwd=org)
    assert proc.returncode == 0, proc.stderr
    rows = plan_rows(proc.stdout)
    from engine.project import load_project

    objects = sorted(o.name for o in load_project(org).model.data_objects)
    assert [r[0] for r in rows] == ["create_table"] * len(objects)
    assert sorted(r[1] for r in rows) == objects
    assert all(r[-1] == "no" for r in rows)


def test_bucode_scenario(org, db_url):
    """Add a field to a loaded database: one add_column, and every stored
    value of every table survives the migration unchanged."""
    result = invoke("db", "plan", "--org", ".", "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    assert {r[0] for r in plan_rows(result.stdout)} == {"create_table"}
    result = invoke("db", "migrate", "--org", ".", "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    loaded = {}
    for object_name, path in data_files(org):
        result = invoke("load", object_name, str(path.relative_to(org)), "--org", ".", "--db", db_url, cwd=org)
        assert result.exit_code == 0, result.output
        loaded[object_name] = int(result.stdout.split()[1])
    assert loaded == {"Account": 4, "Product": 8, "Opportunity": 1, "OpportunityLineItem": 3, "Order": 7,
                      "OrderItem": 10, "Partial_Delivery__c": 4}
    # Invoices are engine-owned (never loaded): bill some, as a user would.
    result = invoke("invoice-run", "--filter", "Order Invoice", "--period-start", "2024-01-01",
                    "--period-end", "2024-03-31", "--org", ".", "--db", db_url, cwd=org)
    assert result.exit_code in (0, 4), result.output

    before = dump(db_url)
    assert len(before["invoice"]) >= 2 and len(before["account"]) == 4 and len(before["orderitem"]) == 10
    assert all(r["account"] is not None for r in before["invoice"])

    add_invoice_field(org)
    line, _ = find_position((org / "metadata/objects/Invoice.yaml").read_text(), "  BuCode__c:")
    assert line == find_position((org / "metadata/objects/Invoice.yaml").read_text(), "fields:")[0] + 1
    result = invoke("db", "plan", "--org", ".", "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    rows = plan_rows(result.stdout)
    assert len(rows) == 1, result.stdout
    assert rows[0][:3] == ["add_column", "Invoice", "BuCode__c"] and rows[0][-1] == "no"
    assert result.stdout.count("add_column") == 1

    result = invoke("db", "migrate", "--org", ".", "--db", db_url, cwd=org)
    assert result.exit_code == 0, result.output
    assert "Applied 1 change(s)." in result.stdout

    after = dump(db_url)
    assert set(after) == set(before)
    assert all("bucode__c" in row and row["bucode__c"] is None for row in after["invoice"])
    assert without(after, "invoice", "bucode__c") == before
    result = invoke("db", "plan", "--org", ".", "--db", db_url, cwd=org)
    assert "nothing to do" in result.stdout


def test_removing_a_field_needs_allow_data_loss(org, tmp_path):
    url = f"sqlite:///{tmp_path / 'loss.db'}"
    assert invoke("db", "migrate", "--org", ".", "--db", url, cwd=org).exit_code == 0
    assert invoke("load", "Account", "data/01_Account.csv", "--org", ".", "--db", url, cwd=org).exit_code == 0
    before = dump(url)
    assert None in {r["on_bankcode__c"] for r in before["account"]}
    assert "BYLADEM1001" in {r["on_bankcode__c"] for r in before["account"]}
    Replace("metadata/objects/Account.yaml", "  ON_BankCode__c:\n    type: Text\n    length: 11\n    label: BIC\n", "").apply(org)

    refused = run("db", "migrate", "--org", ".", "--db", url, cwd=org)  # the real script: no traceback
    assert refused.returncode == 1
    assert_no_traceback(refused)
    assert "--allow-data-loss" in refused.stderr and "nothing was changed" in refused.stderr
    rows = plan_rows(refused.stdout)
    assert rows and rows[0][:3] == ["drop_column", "Account", "ON_BankCode__c"] and rows[0][-1] == "YES"
    assert dump(url) == before  # nothing changed

    applied = invoke("db", "migrate", "--allow-data-loss", "--org", ".", "--db", url, cwd=org)
    assert applied.exit_code == 0, applied.output
    assert "Applied 1 change(s)." in applied.stdout
    after = dump(url)
    assert all("on_bankcode__c" not in row for row in after["account"])
    assert after == without(before, "account", "on_bankcode__c")


def test_load_with_bad_rows_reports_each_and_writes_nothing(org, tmp_path):
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    assert invoke("db", "migrate", "--org", ".", "--db", url, cwd=org).exit_code == 0
    (org / "bad_accounts.csv").write_text(
        "Name,AccountNumber,Email,CurrencyIsoCode,ON_PaymentDue__c\n"
        "Good One,20001,good@example.com,EUR,14\n"
        "Bad Mail,20002,not-an-email,EUR,14\n"
        "Bad Currency,20003,c@example.com,XXX,14\n"
        "Good Two,20004,two@example.com,USD,30\n"
        "Bad Days,20005,d@example.com,EUR,fourteen\n",
        encoding="utf-8",
    )
    proc = run("load", "Account", "bad_accounts.csv", "--org", ".", "--db", url, cwd=org)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    problems = [line for line in proc.stderr.splitlines() if line.startswith("bad_accounts.csv:")]
    assert [p.split(": ", 1)[0] for p in problems] == [
        "bad_accounts.csv:3:Email",
        "bad_accounts.csv:4:CurrencyIsoCode",
        "bad_accounts.csv:6:ON_PaymentDue__c",
    ]
    assert "'XXX'" in problems[1]
    assert "3 problem(s) in bad_accounts.csv; nothing was loaded" in proc.stderr
    assert dump(url)["account"] == []


def test_export_defuses_formula_cells(org, tmp_path):
    url = f"sqlite:///{tmp_path / 'export.db'}"
    assert invoke("db", "migrate", "--org", ".", "--db", url, cwd=org).exit_code == 0
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([
        ["Name", "AccountNumber", "Phone"],
        ['=HYPERLINK("http://x","y")', "30001", "+49 30 1"],
        ["Plain GmbH", "30002", ""],
    ])
    (org / "evil.csv").write_text(buffer.getvalue(), encoding="utf-8")
    loaded = invoke("load", "Account", "evil.csv", "--org", ".", "--db", url, cwd=org)
    assert loaded.exit_code == 0, loaded.output
    proc = run("export-records", "Account", "--org", ".", "--db", url, "--out", "out/accounts.csv", cwd=org)
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 2 Account record(s)" in proc.stderr
    rows = list(csv.DictReader((org / "out/accounts.csv").open(encoding="utf-8", newline="")))
    assert [r["Name"] for r in rows] == ['\'=HYPERLINK("http://x","y")', "Plain GmbH"]
    assert [r["Phone"] for r in rows] == ["'+49 30 1", ""]
    assert [r["AccountNumber"] for r in rows] == ["30001", "30002"]
    # The stored value itself is unchanged.
    assert {r["name"] for r in dump(url)["account"]} == {'=HYPERLINK("http://x","y")', "Plain GmbH"}
    # Without --out the CSV goes to stdout.
    stdout = invoke("export-records", "Account", "--org", ".", "--db", url, cwd=org)
    assert stdout.exit_code == 0
    assert list(csv.DictReader(io.StringIO(stdout.stdout)))[0]["Name"] == '\'=HYPERLINK("http://x","y")'


def test_db_commands_need_a_valid_object(org, tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    result = invoke("export-records", "GlobalSettings", "--org", ".", "--db", url, cwd=org)
    assert result.exit_code == 1
    assert "'GlobalSettings' is not a data object of this org" in result.stderr
