"""``load --upsert --key FIELD``: insert or update by a key, all or nothing,
with inserted/updated/unchanged counts; fields the engine writes are never
overwritten. On SQLite and PostgreSQL, on the sample org and its data."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.storage.records import UpsertKeyInvalid, load_file, load_records

from contexts import context
from databases import REPO_ROOT, load_model


@pytest.fixture(scope="module")
def model():
    return load_model(REPO_ROOT)


@pytest.fixture
def engine(db_url, prepared, model):
    return prepared(db_url, model)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def accounts(engine, model):
    table = context(model).metadata.tables["account"]
    with engine.connect() as conn:
        return {r.accountnumber: r for r in conn.execute(sa.select(table))}


def test_upsert_counts_inserted_updated_unchanged(engine, model, tmp_path):
    before = accounts(engine, model)
    muster, alpen = before["10001"], before["10002"]
    path = write(tmp_path, "accounts.csv",
                 "AccountNumber,Name,Phone\n"
                 f"10001,{muster.name},+49 89 0000000\n"        # changed phone
                 f"10002,{alpen.name},{alpen.phone}\n"          # the same values
                 "10099,New Customer GmbH,+49 30 1111111\n")    # a new account
    report = load_file(engine, context(model), "Account", path, key="AccountNumber")
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 1)
    assert report.render().endswith("Account: 1 inserted, 1 updated, 1 unchanged.")
    after = accounts(engine, model)
    assert after["10001"].phone == "+49 89 0000000"
    assert after["10001"].id == muster.id
    # columns the file leaves out keep their values (not reset to defaults)
    assert after["10001"].email == muster.email and after["10001"].billingcity == muster.billingcity
    assert after["10001"].lastmodifieddate >= muster.lastmodifieddate
    assert after["10002"] == alpen  # unchanged: not even its modification time moves
    assert after["10099"].name == "New Customer GmbH"
    assert len(after) == len(before) + 1


def test_upsert_is_all_or_nothing(engine, model, tmp_path):
    before = accounts(engine, model)
    path = write(tmp_path, "accounts.csv",
                 "AccountNumber,Name,Phone\n"
                 "10001,Renamed,+49 89 0000000\n"
                 "10002,,+43 1\n"              # Name is required: it may not be emptied
                 "10001,Twice,\n")             # the same key twice
    report = load_records(engine, context(model), "Account", path, key="AccountNumber")
    assert not report.ok and report.inserted == report.updated == 0
    text = "\n".join(e.render() for e in report.errors)
    assert ":3:Name: Name is required" in text
    assert ":4:AccountNumber: '10001' repeats row 2" in text
    assert accounts(engine, model) == before


def test_engine_owned_fields_are_never_overwritten(engine, model, tmp_path):
    before = accounts(engine, model)
    muster = before["10001"]
    stored_balance = muster.balance
    path = write(tmp_path, "accounts.csv",
                 f"AccountNumber,Name,Balance\n10001,{muster.name},{(stored_balance or Decimal(0)) + 100}\n")
    report = load_records(engine, context(model), "Account", path, key="AccountNumber")
    [error] = report.errors
    assert error.field == "Balance" and "maintained by the engine and never overwritten" in error.message
    assert accounts(engine, model) == before
    # repeating the stored value (an export edited and loaded back) is fine
    same = "" if stored_balance is None else str(stored_balance)
    path = write(tmp_path, "same.csv", f"AccountNumber,Name,Balance\n10001,Muster AG,{same}\n")
    report = load_records(engine, context(model), "Account", path, key="AccountNumber")
    assert report.ok, report.render()
    assert accounts(engine, model)["10001"].name == "Muster AG"


def test_write_back_fields_of_the_invoice_run_are_never_overwritten(engine, model, tmp_path):
    path = write(tmp_path, "orders.csv", "OrderNumber,ON_InvoiceBuildError__c\nORD-2024-001,made up\n")
    report = load_records(engine, context(model), "Order", path, key="OrderNumber")
    [error] = report.errors
    assert error.field == "ON_InvoiceBuildError__c" and "written back by the invoice run" in error.message


def test_the_key_must_identify_one_record(engine, model, tmp_path):
    path = write(tmp_path, "accounts.csv", "AccountNumber,Name,Phone\n10001,X,1\n")
    with pytest.raises(UpsertKeyInvalid) as raised:
        load_records(engine, context(model), "Account", path, key="Phone")
    assert raised.value.code == "R141" and "AccountNumber" in (raised.value.hint or "")
    report = load_records(engine, context(model), "Account", write(tmp_path, "no-key.csv", "Name\nX\n"),
                          key="AccountNumber")
    assert [e.message for e in report.errors] == ["the file has no column AccountNumber, the key of the upsert"]


def test_upsert_by_id(engine, model, tmp_path):
    muster = accounts(engine, model)["10001"]
    path = write(tmp_path, "accounts.csv", f"Id,Phone\n{muster.id},+49 1\n")
    report = load_records(engine, context(model), "Account", path, key="Id")
    assert (report.inserted, report.updated, report.unchanged) == (0, 1, 0), report.render()
    assert accounts(engine, model)["10001"].phone == "+49 1"


def test_the_shipped_example_corrects_the_sample_accounts(engine, model):
    """examples/admin/accounts-corrected.csv, as scripts/demo.sh loads it."""
    path = REPO_ROOT / "examples" / "admin" / "accounts-corrected.csv"
    report = load_file(engine, context(model), "Account", path, key="AccountNumber")
    assert (report.inserted, report.updated, report.unchanged) == (1, 1, 1), report.render()
    assert accounts(engine, model)["10001"].email == "buchhaltung@muster-kunde.example"
