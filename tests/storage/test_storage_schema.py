"""The relational schema derived from the model."""

from __future__ import annotations

import sqlalchemy as sa

from engine.config.model import ObjectDef, ObjectKind
from engine.storage import schema as s
from engine.storage.migrate import apply_migration
from engine.storage.types import ExactDecimal, MultiPicklistText, UtcDateTime

from storage_models import T, billing_model, fld, make_model


def test_one_table_per_data_object_plus_internal_tables():
    metadata = s.build_metadata(billing_model())
    assert set(metadata.tables) == {
        "account", "invoice", "invoicelineitem", "_mb_schema_field", "_mb_sequence", "_mb_meta", "_mb_claim",
        "_mb_work_round", "_mb_work_chunk", "_mb_work_keys",
    }  # the hierarchy setting has no table


def test_column_types_follow_the_field_types():
    invoice = s.build_metadata(billing_model()).tables["invoice"]
    c = invoice.c
    assert list(c.keys())[:4] == ["id", "name", "createddate", "lastmodifieddate"]
    assert c.id.primary_key and c.id.autoincrement is False
    assert isinstance(c.name.type, sa.String) and c.name.type.length == 80  # AutoNumber
    assert isinstance(c.createddate.type, UtcDateTime) and not c.createddate.nullable
    assert isinstance(c.grandtotal.type, ExactDecimal) and (c.grandtotal.type.precision, c.grandtotal.type.scale) == (16, 2)
    assert isinstance(c.taxrate.type, ExactDecimal)
    assert isinstance(c.invoicedate.type, sa.Date) and isinstance(c.postedat.type, UtcDateTime)
    assert isinstance(c.paid.type, sa.Boolean) and not c.paid.nullable and c.paid.server_default is not None
    assert isinstance(c.status.type, sa.String) and c.status.type.length == 255
    assert isinstance(c.tags.type, MultiPicklistText) and isinstance(c.notes.type, sa.Text)
    assert "grosstotal" not in c  # formula
    assert c.account.nullable  # required is enforced by the engine, not the table
    (fk,) = c.account.foreign_keys
    assert fk.target_fullname == "account.id" and fk.ondelete == "SET NULL" and fk.name == "fk_invoice_account"
    (cascade,) = s.build_metadata(billing_model()).tables["invoicelineitem"].c.invoice.foreign_keys
    assert cascade.ondelete == "CASCADE"


def test_indexes_for_references_and_unique_fields():
    account = s.build_metadata(billing_model()).tables["account"]
    indexes = {ix.name: (ix.unique, [col.name for col in ix.columns]) for ix in account.indexes}
    assert indexes == {
        "uq_account_accountnumber": (True, ["accountnumber"]),
        "ix_account_parentid": (False, ["parentid"]),
    }


def test_text_name_and_missing_name():
    plain = ObjectDef(name="Thing__c", label="Thing", kind=ObjectKind.OBJECT, fields=(fld("Thing__c", "Size__c", T.NUMBER),))
    table = s.build_metadata(make_model(plain)).tables["thing__c"]
    assert table.c.name.type.length == 255
    assert (table.c.size__c.type.precision, table.c.size__c.type.scale) == (18, 0)
    account = s.build_metadata(billing_model()).tables["account"]
    assert account.c.name.type.length == 80


def test_identifiers_are_short_and_deterministic():
    long = s.identifier("uq", "t" * 60, "c" * 60)
    assert len(long) == 63 and long == s.identifier("uq", "t" * 60, "c" * 60)
    assert long != s.identifier("uq", "t" * 60, "c" * 59 + "d")
    assert s.identifier("ix", "invoice", "account") == "ix_invoice_account"


def test_column_specs_round_trip_through_json():
    for specs in s.model_specs(billing_model()).values():
        for spec in specs:
            assert s.ColumnSpec.from_json(spec.to_json()) == spec


def test_the_schema_creates_on_both_backends(engine):
    model = billing_model()
    apply_migration(engine, model)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        account_columns = {col["name"]: col for col in inspector.get_columns("account")}
        fks = inspector.get_foreign_keys("invoicelineitem")
    assert account_columns["active"]["nullable"] is False
    assert [(fk["name"], fk["referred_table"], fk["options"].get("ondelete")) for fk in fks] == [
        ("fk_invoicelineitem_invoice", "invoice", "CASCADE")
    ]
