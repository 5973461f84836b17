"""Planning and applying schema migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.config.model import ObjectDef, ObjectKind
from engine.storage import schema as s
from engine.storage.db import transaction
from engine.storage.ids import reserve_ids
from engine.storage.migrate import (
    ADD_COLUMN,
    ADD_INDEX,
    CHANGE_TYPE,
    CREATE_TABLE,
    DROP_COLUMN,
    DROP_INDEX,
    DROP_TABLE,
    DataLossRefused,
    MigrationError,
    apply_migration,
    plan_migration,
    read_meta,
)

from contexts import context
from storage_models import T, add_field, billing_model, change_field, drop_field, drop_object, fld, make_model

NOW = datetime(2024, 5, 1, 8, 0, tzinfo=timezone.utc)


def insert(engine, model, object_name, rows):
    """Insert rows through the model's tables; returns their ids."""
    table = context(model).metadata.tables[object_name.lower()]
    with transaction(engine) as conn:
        ids = reserve_ids(conn, table.name, len(rows))
        blank = {c.name: (False if isinstance(c.type, sa.Boolean) else None) for c in table.columns}
        full = [{**blank, "createddate": NOW, "lastmodifieddate": NOW, **row, "id": i} for i, row in zip(ids, rows)]
        conn.execute(table.insert(), full)
    return list(ids)


def fetch(engine, model, object_name):
    table = context(model).metadata.tables[object_name.lower()]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def columns(engine, table):
    with engine.connect() as conn:
        return {c["name"]: c for c in sa.inspect(conn).get_columns(table)}


def snapshot(engine):
    with engine.connect() as conn:
        rows = conn.execute(sa.select(s.SCHEMA_FIELD.c.definition)).scalars().all()
    return {(spec.table, spec.column): spec for spec in map(s.ColumnSpec.from_json, rows)}


def expected_snapshot(model):
    return {(spec.table, spec.column): spec for specs in s.model_specs(model).values() for spec in specs}


@pytest.fixture
def model():
    return billing_model()


@pytest.fixture
def populated(engine, model):
    """The billing schema with two accounts, two invoices and three lines."""
    apply_migration(engine, model)
    accounts = insert(
        engine,
        model,
        "Account",
        [
            {"name": "Acme", "accountnumber": "A-1", "industry": "Energy", "creditlimit": Decimal("1000.50"), "active": True},
            {"name": "Globex", "accountnumber": "A-2", "email": "billing@globex.example"},
        ],
    )
    invoices = insert(
        engine,
        model,
        "Invoice",
        [
            {"name": "INV-000001", "account": accounts[0], "grandtotal": Decimal("1234.50"), "taxrate": Decimal("19.00"),
             "invoicedate": date(2024, 4, 30), "postedat": NOW, "paid": True, "tags": ("A", "C")},
            {"name": "INV-000002", "account": accounts[1], "grandtotal": Decimal("-0.05"), "status": "Draft"},
        ],
    )
    insert(
        engine,
        model,
        "InvoiceLineItem",
        [
            {"name": "L1", "invoice": invoices[0], "quantity": Decimal("1.2500"), "amount": Decimal("1000.00")},
            {"name": "L2", "invoice": invoices[0], "quantity": Decimal("2"), "amount": Decimal("234.50")},
            {"name": "L3", "invoice": invoices[1], "amount": Decimal("-0.05")},
        ],
    )
    return engine


def all_rows(engine, model):
    return {name: fetch(engine, model, name) for name in ("Account", "Invoice", "InvoiceLineItem")}


def without(rows, column):
    return [{k: v for k, v in row.items() if k != column} for row in rows]


# ---------------------------------------------------------------------------


def test_fresh_database_creates_every_data_table(engine, model):
    plan = plan_migration(engine, model)
    assert plan.kinds == (CREATE_TABLE,) * 3
    assert {c.object_name for c in plan} == {"Account", "Invoice", "InvoiceLineItem"}  # no table for the setting
    assert all(c.safe and not c.data_loss for c in plan)
    assert apply_migration(engine, model).kinds == plan.kinds
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        meta = read_meta(conn)
    assert tables == {"account", "invoice", "invoicelineitem", "_mb_schema_field", "_mb_sequence", "_mb_meta", "_mb_claim",
                      "_mb_work_round", "_mb_work_chunk", "_mb_work_keys"}
    assert "grosstotal" not in columns(engine, "invoice")  # formula: no column
    assert snapshot(engine) == expected_snapshot(model)
    assert meta["config_hash"] == "test" and meta["schema_version"] == "1"


def test_applying_twice_is_a_no_op(engine, model):
    apply_migration(engine, model)
    assert not plan_migration(engine, model)
    assert len(apply_migration(engine, model)) == 0
    with engine.connect() as conn:
        assert read_meta(conn)["schema_version"] == "1"


def test_adding_a_custom_field_keeps_every_row(populated, model):
    before = all_rows(populated, model)
    changed = add_field(model, "Account", fld("Account", "BuCode__c", T.TEXT, length=20))
    plan = plan_migration(populated, changed)
    assert plan.kinds == (ADD_COLUMN,)
    assert (plan[0].object_name, plan[0].field_name, plan[0].safe, plan[0].data_loss) == ("Account", "BuCode__c", True, False)
    apply_migration(populated, changed)
    after = all_rows(populated, changed)
    assert without(after["Account"], "bucode__c") == before["Account"]
    assert all(row["bucode__c"] is None for row in after["Account"])
    assert after["Invoice"] == before["Invoice"] and after["InvoiceLineItem"] == before["InvoiceLineItem"]
    assert snapshot(populated) == expected_snapshot(changed)
    assert not plan_migration(populated, changed)


def test_adding_columns_that_need_a_table_rebuild_on_sqlite(populated, model):
    """A checkbox (server default) and a lookup (foreign key) on tables that
    are parents of other rows: rebuilding them must not fire cascades."""
    before = all_rows(populated, model)
    changed = add_field(model, "Invoice", fld("Invoice", "Disputed__c", T.CHECKBOX))
    changed = add_field(changed, "Invoice", fld("Invoice", "BillTo__c", T.LOOKUP, reference_to="Account"))
    changed = add_field(changed, "Account", fld("Account", "Vip__c", T.CHECKBOX))
    plan = plan_migration(populated, changed)
    assert sorted(plan.kinds) == [ADD_COLUMN] * 3
    apply_migration(populated, changed)
    after = all_rows(populated, changed)
    assert [r["disputed__c"] for r in after["Invoice"]] == [False, False]
    assert [r["vip__c"] for r in after["Account"]] == [False, False]
    assert without(without(after["Invoice"], "disputed__c"), "billto__c") == before["Invoice"]
    assert after["InvoiceLineItem"] == before["InvoiceLineItem"]
    # The new foreign key works: ON DELETE SET NULL.
    account_ids = [r["id"] for r in after["Account"]]
    invoice = context(changed).metadata.tables["invoice"]
    account = context(changed).metadata.tables["account"]
    with transaction(populated) as conn:
        conn.execute(invoice.update().values(billto__c=account_ids[1]))
        conn.execute(invoice.update().where(invoice.c.account == account_ids[1]).values(account=account_ids[0]))
        conn.execute(account.delete().where(account.c.id == account_ids[1]))
        assert conn.execute(sa.select(invoice.c.billto__c)).scalars().all() == [None, None]
    with pytest.raises(sa.exc.IntegrityError):
        with transaction(populated) as conn:
            conn.execute(invoice.update().values(billto__c=999))
    if populated.dialect.name == "sqlite":
        # Foreign keys were switched off for the rebuild and are on again.
        with populated.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_widening_text_keeps_values(populated, model):
    step1 = add_field(model, "Account", fld("Account", "BuCode__c", T.TEXT, length=20))
    apply_migration(populated, step1)
    table = context(step1).metadata.tables["account"]
    with transaction(populated) as conn:
        conn.execute(table.update().values(bucode__c="X" * 20))
    step2 = change_field(step1, "Account", "BuCode__c", length=40)
    plan = plan_migration(populated, step2)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].safe and not plan[0].data_loss
    assert "Text(20) -> Text(40)" in plan[0].message
    apply_migration(populated, step2)
    assert columns(populated, "account")["bucode__c"]["type"].length == 40
    assert [r["bucode__c"] for r in fetch(populated, step2, "Account")] == ["X" * 20] * 2
    assert not plan_migration(populated, step2)


def test_picklist_to_text_of_enough_length_is_safe(populated, model):
    changed = change_field(model, "Account", "Industry", type=T.TEXT, length=255, values=())
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].safe
    apply_migration(populated, changed)
    assert [r["industry"] for r in fetch(populated, changed, "Account")] == ["Energy", None]


def test_rescaling_a_number_keeps_values_exactly(populated, model):
    before = fetch(populated, model, "Invoice")
    changed = change_field(model, "Invoice", "GrandTotal", precision=18, scale=4)
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].safe and not plan[0].data_loss
    assert "Currency(16,2) -> Currency(18,4)" in plan[0].message
    apply_migration(populated, changed)
    after = fetch(populated, changed, "Invoice")
    assert [r["grandtotal"] for r in after] == [r["grandtotal"] for r in before]
    assert [str(r["grandtotal"]) for r in after] == ["1234.5000", "-0.0500"]
    table = context(changed).metadata.tables["invoice"]
    with populated.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(table.c.grandtotal))).scalar_one() == Decimal("1234.45")
        raw = conn.exec_driver_sql("SELECT grandtotal FROM invoice ORDER BY id").scalars().all()
    if populated.dialect.name == "sqlite":
        assert raw == [12345000, -500]
    else:
        assert columns(populated, "invoice")["grandtotal"]["type"].scale == 4


def test_fewer_decimals_is_data_loss_and_rounds_half_up(populated, model):
    table = context(model).metadata.tables["invoicelineitem"]
    with transaction(populated) as conn:
        conn.execute(table.update().where(table.c.name == "L1").values(quantity=Decimal("1.2550")))
        conn.execute(table.update().where(table.c.name == "L2").values(quantity=Decimal("-2.0050")))
    changed = change_field(model, "InvoiceLineItem", "Quantity", precision=18, scale=2)
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].data_loss and "rounded" in plan[0].message
    with pytest.raises(DataLossRefused):
        apply_migration(populated, changed)
    apply_migration(populated, changed, allow_data_loss=True)
    assert [r["quantity"] for r in fetch(populated, changed, "InvoiceLineItem")] == [
        Decimal("1.26"), Decimal("-2.01"), None,
    ]


def test_fewer_integer_digits_clears_values_that_no_longer_fit(populated, model):
    changed = change_field(model, "Invoice", "GrandTotal", precision=5, scale=2)  # |x| < 1000
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].data_loss and "cleared" in plan[0].message
    apply_migration(populated, changed, allow_data_loss=True)
    assert [r["grandtotal"] for r in fetch(populated, changed, "Invoice")] == [None, Decimal("-0.05")]


def test_lookup_pointing_elsewhere_discards_the_references(populated, model):
    changed = change_field(model, "InvoiceLineItem", "Invoice", type=T.LOOKUP, reference_to="Account")
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].data_loss
    apply_migration(populated, changed, allow_data_loss=True)
    assert [r["invoice"] for r in fetch(populated, changed, "InvoiceLineItem")] == [None, None, None]
    with populated.connect() as conn:
        (fk,) = sa.inspect(conn).get_foreign_keys("invoicelineitem")
    assert fk["referred_table"] == "account" and fk["options"].get("ondelete") == "SET NULL"
    assert not plan_migration(populated, changed)


def test_removing_a_field_is_refused_without_the_flag(populated, model):
    before = all_rows(populated, model)
    changed = drop_field(model, "Account", "CreditLimit")
    plan = plan_migration(populated, changed)
    assert plan.kinds == (DROP_COLUMN,) and plan[0].data_loss and not plan[0].safe
    with pytest.raises(DataLossRefused) as info:
        apply_migration(populated, changed)
    assert info.value.plan == plan
    assert "drop column account.creditlimit" in str(info.value)
    # Nothing was touched: same rows, same snapshot, same plan.
    assert all_rows(populated, model) == before
    assert snapshot(populated) == expected_snapshot(model)
    assert plan_migration(populated, changed) == plan

    assert apply_migration(populated, changed, allow_data_loss=True) == plan
    assert "creditlimit" not in columns(populated, "account")
    after = all_rows(populated, changed)
    assert after["Account"] == without(before["Account"], "creditlimit")
    assert after["Invoice"] == before["Invoice"] and after["InvoiceLineItem"] == before["InvoiceLineItem"]
    assert not plan_migration(populated, changed)


def test_removing_an_indexed_field(populated, model):
    changed = drop_field(model, "Account", "AccountNumber")
    changed = drop_field(changed, "Account", "ParentId")
    apply_migration(populated, changed, allow_data_loss=True)
    assert {"accountnumber", "parentid"}.isdisjoint(columns(populated, "account"))
    with populated.connect() as conn:
        assert [ix["name"] for ix in sa.inspect(conn).get_indexes("account")] == []
    assert len(fetch(populated, changed, "Account")) == 2


def test_changing_text_to_number_is_refused_without_the_flag(populated, model):
    changed = change_field(model, "Account", "AccountNumber", type=T.NUMBER, precision=10, scale=0, length=None)
    plan = plan_migration(populated, changed)
    assert CHANGE_TYPE in plan.kinds
    change = next(c for c in plan if c.kind == CHANGE_TYPE)
    assert change.data_loss and "Text(40) -> Number(10,0)" in change.message
    with pytest.raises(DataLossRefused):
        apply_migration(populated, changed)
    assert [r["accountnumber"] for r in fetch(populated, model, "Account")] == ["A-1", "A-2"]
    apply_migration(populated, changed, allow_data_loss=True)
    rows = fetch(populated, changed, "Account")
    assert [r["accountnumber"] for r in rows] == [None, None]
    assert [r["name"] for r in rows] == ["Acme", "Globex"]
    assert not plan_migration(populated, changed)
    # The column is numeric now (and still has its unique index).
    insert(populated, changed, "Account", [{"name": "N", "accountnumber": Decimal("42")}])
    with pytest.raises(sa.exc.IntegrityError):
        insert(populated, changed, "Account", [{"name": "M", "accountnumber": Decimal("42")}])


def test_shortening_text_cuts_values_when_allowed(populated, model):
    changed = change_field(model, "Account", "Name", length=3)
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].data_loss
    apply_migration(populated, changed, allow_data_loss=True)
    assert [r["name"] for r in fetch(populated, changed, "Account")] == ["Acm", "Glo"]


def test_making_a_field_unique_adds_an_index_and_checks_duplicates(populated, model):
    changed = change_field(model, "Account", "Email", unique=True)
    plan = plan_migration(populated, changed)
    assert plan.kinds == (ADD_INDEX,) and not plan[0].safe and not plan[0].data_loss
    apply_migration(populated, changed)
    with populated.connect() as conn:
        names = {ix["name"]: ix["unique"] for ix in sa.inspect(conn).get_indexes("account")}
    assert names["uq_account_email"]
    # And back: dropping the index is safe.
    plan = plan_migration(populated, model)
    assert plan.kinds == ("drop_index",) and plan[0].safe
    apply_migration(populated, model)
    # Duplicates make the unique index impossible: refused, nothing changed.
    table = context(model).metadata.tables["account"]
    with transaction(populated) as conn:
        conn.execute(table.update().values(email="same@example.com"))
    with pytest.raises(MigrationError, match="repeated values"):
        apply_migration(populated, changed)
    assert snapshot(populated) == expected_snapshot(model)


def test_removing_an_object_drops_its_table_only_with_the_flag(populated, model):
    before = all_rows(populated, model)
    changed = drop_object(model, "InvoiceLineItem")
    plan = plan_migration(populated, changed)
    assert plan.kinds == (DROP_TABLE,) and plan[0].data_loss and "3 rows" in plan[0].message
    with pytest.raises(DataLossRefused):
        apply_migration(populated, changed)
    apply_migration(populated, changed, allow_data_loss=True)
    with populated.connect() as conn:
        assert not sa.inspect(conn).has_table("invoicelineitem")
    after = {name: fetch(populated, changed, name) for name in ("Account", "Invoice")}
    assert after == {name: before[name] for name in ("Account", "Invoice")}
    assert not plan_migration(populated, changed)


def test_lookup_becoming_master_detail_changes_the_delete_rule(populated, model):
    changed = change_field(model, "Invoice", "Account", type=T.MASTERDETAIL)
    plan = plan_migration(populated, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].safe
    apply_migration(populated, changed)
    account = context(changed).metadata.tables["account"]
    with transaction(populated) as conn:
        first = conn.execute(sa.select(sa.func.min(account.c.id))).scalar_one()
        conn.execute(account.delete().where(account.c.id == first))
    # Cascade: the account's invoice and that invoice's lines are gone.
    rows = all_rows(populated, changed)
    assert len(rows["Invoice"]) == 1 and len(rows["InvoiceLineItem"]) == 1


def test_tables_created_without_a_snapshot_are_adopted(engine, model):
    metadata = s.build_metadata(model)
    with transaction(engine) as conn:
        metadata.create_all(conn)
    assert not plan_migration(engine, model)
    apply_migration(engine, model)
    assert snapshot(engine) == expected_snapshot(model)


def test_a_recorded_column_that_went_missing_is_added_again(engine, model):
    changed = add_field(model, "Account", fld("Account", "BuCode__c", T.TEXT, length=20))
    apply_migration(engine, changed)
    with transaction(engine) as conn:
        conn.execute(sa.text("ALTER TABLE account DROP COLUMN bucode__c"))
    plan = plan_migration(engine, changed)
    assert plan.kinds == (ADD_COLUMN,)
    apply_migration(engine, changed)
    assert "bucode__c" in columns(engine, "account")


def test_unknown_tables_are_left_alone(engine, model):
    with transaction(engine) as conn:
        conn.execute(sa.text("CREATE TABLE somebody_elses (x INTEGER)"))
    assert CREATE_TABLE in plan_migration(engine, model).kinds
    apply_migration(engine, model)
    assert not plan_migration(engine, model)
    with engine.connect() as conn:
        assert sa.inspect(conn).has_table("somebody_elses")


def test_long_names_stay_within_63_characters(engine):
    long_object = "A" * 37 + "__c"
    other = "B" * 37 + "__c"
    objects = (
        ObjectDef(name=other, label="B", kind=ObjectKind.OBJECT, fields=(fld(other, "Name", T.TEXT, length=80),)),
        ObjectDef(
            name=long_object,
            label="A",
            kind=ObjectKind.OBJECT,
            fields=(
                fld(long_object, "Name", T.TEXT, length=80),
                fld(long_object, "C" * 37 + "__c", T.LOOKUP, reference_to=other),
                fld(long_object, "D" * 37 + "__c", T.TEXT, length=10, external_id=True),
            ),
        ),
    )
    model = make_model(*objects)
    metadata = s.build_metadata(model)
    names = [ix.name for t in metadata.tables.values() for ix in t.indexes]
    names += [c.name for t in metadata.tables.values() for c in t.constraints]
    assert names and all(len(n) <= 63 for n in names)
    assert len(set(names)) == len(names)
    apply_migration(engine, model)
    assert not plan_migration(engine, model)
    changed = drop_field(model, long_object, "C" * 37 + "__c")
    apply_migration(engine, changed, allow_data_loss=True)
    assert not plan_migration(engine, changed)


def reflected_indexes(engine, table: str) -> dict[str, dict]:
    with engine.connect() as conn:
        return {ix["name"]: ix for ix in sa.inspect(conn).get_indexes(table)}


def index_predicate(index: dict) -> str:
    """The reflected WHERE of a partial index ('' for a full one), on either database."""
    options = index.get("dialect_options") or {}
    found = [options[key] for key in ("sqlite_where", "postgresql_where") if options.get(key) is not None]
    return str(found[0]) if found else ""


def test_turning_sparse_on_and_off_is_a_safe_index_change(populated, model):
    parents = [row["id"] for row in all_rows(populated, model)["Account"]]
    insert(populated, model, "Account", [{"name": "Child", "parentid": parents[0]}])
    before = all_rows(populated, model)
    sparse = change_field(model, "Account", "ParentId", sparse=True)

    plan = plan_migration(populated, sparse)
    assert sorted(plan.kinds) == sorted((DROP_INDEX, ADD_INDEX))
    assert all(change.safe and not change.data_loss for change in plan)
    apply_migration(populated, sparse)
    assert not plan_migration(populated, sparse)
    found = reflected_indexes(populated, "account")
    assert "ix_account_parentid" not in found
    assert "is not null" in index_predicate(found["ixp_account_parentid"]).lower()
    assert all_rows(populated, sparse) == before
    # A change that rebuilds the table on SQLite keeps the index partial.
    wider = change_field(sparse, "Account", "Name", length=120)
    apply_migration(populated, wider)
    assert not plan_migration(populated, wider)
    assert "is not null" in index_predicate(reflected_indexes(populated, "account")["ixp_account_parentid"]).lower()
    apply_migration(populated, sparse, allow_data_loss=True)  # back to 80 characters; every name fits

    plan = plan_migration(populated, model)
    assert sorted(plan.kinds) == sorted((DROP_INDEX, ADD_INDEX))
    apply_migration(populated, model)
    found = reflected_indexes(populated, "account")
    assert "ixp_account_parentid" not in found and index_predicate(found["ix_account_parentid"]) == ""
    assert all_rows(populated, model) == before


def test_failed_migration_changes_nothing(populated, model):
    """One transaction: when a later step fails, earlier steps are undone."""
    table = context(model).metadata.tables["account"]
    with transaction(populated) as conn:
        conn.execute(table.update().values(email="same@example.com"))
    changed = add_field(model, "Account", fld("Account", "BuCode__c", T.TEXT, length=20))
    changed = change_field(changed, "Account", "Email", unique=True)
    with pytest.raises(MigrationError):
        apply_migration(populated, changed)
    assert "bucode__c" not in columns(populated, "account")
    assert snapshot(populated) == expected_snapshot(model)
