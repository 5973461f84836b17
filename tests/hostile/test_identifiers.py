"""Hostile input: SQL through object and field names.

Table and column names come from the metadata, so a consultant's (or an
attacker's) YAML must never reach SQL as an identifier it was not checked to
be. Names that are not plain identifiers are refused by validate-config with
their file and line, and ``db migrate`` then creates nothing at all.
"""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from engine.project import load_project

from cli.test_cli import assert_no_traceback, run
from config.orgcopy import AddFile, InsertAfter, copy_org

PAYLOADS = [
    'Bad"; DROP TABLE account; --__c',
    "x__c) VALUES (1); DELETE FROM invoice; --",
    "Name`__c",
    "ÄÖÜ__c",
    "__c",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_field_name_that_is_not_an_identifier_is_refused_and_nothing_is_created(payload, tmp_path):
    org = copy_org(tmp_path / "org")
    quoted = payload.replace("'", "''")
    InsertAfter("metadata/objects/Account.yaml", "fields:", f"  '{quoted}': {{type: Text, length: 10}}").apply(org)
    result = load_project(org)
    refusals = [d for d in result.errors if d.code == "E031" and d.location.yaml_path == ("fields", payload)]
    assert refusals, [str(d) for d in result.errors]
    assert all(d.location.file.endswith("Account.yaml") and d.location.line == 11 for d in refusals)

    db = tmp_path / "x.db"
    proc = run("db", "migrate", "--org", str(org), "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 1
    assert_no_traceback(proc)
    assert "Account.yaml" in proc.stdout + proc.stderr
    if db.exists():
        assert sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names() == []


def test_an_object_name_that_is_not_an_identifier_is_refused(tmp_path):
    org = copy_org(tmp_path / "org")
    AddFile("metadata/objects/Evil.yaml", """\
version: 1
object: 'Evil; DROP TABLE invoice; --__c'
label: Evil
fields:
  Amount__c: {type: Currency, precision: 16, scale: 2}
""").apply(org)
    result = load_project(org)
    assert {(d.code, d.location.file, d.location.line) for d in result.errors} >= {
        ("E013", "metadata/objects/Evil.yaml", 2), ("E031", "metadata/objects/Evil.yaml", 2)}
