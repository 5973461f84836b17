"""Seed 004's custom-data chain from a subscription into DATEV, through the CLI:
``ON_BuCode__c`` on the subscription -> ``BuCode__c`` on the invoice (the
subscription run's ON copy) -> the booking detail (finalization) -> the
accounting document item and the BU-Schlüssel of the DATEV file (export).
The booking details of a subscription invoice carry the subscription too."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from config.orgcopy import InsertAfter, apply_edits, copy_org
from engine.cli.main import cli
from engine.storage.db import open_engine

BU = "    type: Text\n    length: 4\n    label: BU Code"
EDITS = (
    InsertAfter("metadata/objects/Subscription.yaml", "fields:", f"  ON_BuCode__c:\n{BU}"),
    InsertAfter("metadata/objects/Invoice.yaml", "fields:", f"  BuCode__c:\n{BU}"),
    InsertAfter("metadata/objects/BookingDetail.yaml", "fields:", f"  BuCode__c:\n{BU}"),
    InsertAfter("metadata/objects/AccountingDocumentItem.yaml", "fields:", f"  BuCode__c:\n{BU}"),
)
DATEV = ("--consultant", "29098", "--client", "55003", "--fiscal-year-start", "2024-01-01",
         "--account-length", "4", "--chart-of-accounts", "03")


def invoke(cwd: Path, *args: str):
    runner = CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "250"})
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result


def test_bucode_travels_from_the_subscription_into_datev(tmp_path, db_url):
    org = copy_org(tmp_path / "org", with_data=True)
    apply_edits(org, EDITS)
    examples = Path(__file__).resolve().parents[2] / "examples" / "subscriptions"
    subs = (tmp_path / "01_Subscription.csv")
    text = (examples / "01_Subscription.csv").read_text(encoding="utf-8").splitlines()
    subs.write_text("\n".join([text[0] + ",ON_BuCode__c"] + [row + (",9" if row.startswith("SUBK-001,") else ",")
                                                             for row in text[1:]]) + "\n", encoding="utf-8")
    db = ("--org", str(org), "--db", db_url)
    invoke(tmp_path, "validate-config", str(org))
    invoke(tmp_path, "db", "migrate", *db)
    for path in sorted((org / "data").glob("[0-9]*_*.csv")):
        invoke(tmp_path, "load", path.stem.split("_", 1)[1], str(path), *db)
    invoke(tmp_path, "load", "Subscription", str(subs), *db)
    invoke(tmp_path, "load", "SubscriptionItem", str(examples / "02_SubscriptionItem.csv"), *db)
    invoke(tmp_path, "invoice-run", "--filter", "Subscriptions", "--period-start", "2024-01-01",
           "--period-end", "2024-01-31", "--invoice-date", "2024-01-31", *db)
    invoke(tmp_path, "finalize", "--run", "IR-000001", *db)
    out = tmp_path / "datev.csv"
    invoke(tmp_path, "export", "datev", *DATEV, "--out", str(out), "--to", "2024-12-31", *db)

    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            invoices = conn.execute(sa.text(
                "SELECT i.name, s.subscriptionkey, i.bucode__c, s.id FROM invoice i JOIN subscription s "
                "ON s.id = i.subscription ORDER BY i.name")).all()
            details = conn.execute(sa.text(
                "SELECT d.invoiceno, d.bucode__c, d.subscription FROM bookingdetail d WHERE d.invoiceno = :n"),
                {"n": next(row[0] for row in invoices if row[1] == "SUBK-001")}).all()
            items = conn.execute(sa.text("SELECT DISTINCT bucode__c FROM accountingdocumentitem "
                                         "WHERE bucode__c IS NOT NULL")).scalars().all()
    finally:
        engine.dispose()
    assert {row[1]: row[2] for row in invoices} == {"SUBK-001": "9", "SUBK-002": None, "SUBK-003": None,
                                                        "SUBK-004": None}
    assert details and {code for _, code, _ in details} == {"9"}
    assert {sub for _, _, sub in details} == {next(row[3] for row in invoices if row[1] == "SUBK-001")}
    assert items == ["9"]
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="cp1252")), delimiter=";"))
    header = rows[1]
    number = next(row[0] for row in invoices if row[1] == "SUBK-001")
    keys = {row[header.index("BU-Schlüssel")] for row in rows[2:] if row[header.index("Belegfeld 1")] == number}
    assert keys == {"9"}
