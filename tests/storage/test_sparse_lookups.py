"""Sparse lookups: an index that holds only the rows that set the lookup.

Most lookups of the engine's hot tables are empty on nearly every row (a
line's deducted sub invoice, an invoice's cancellation); a full index still
takes an entry per empty value on every insert. ``sparse: true`` makes it a
partial index (``IS NOT NULL``) under a name of its own, which the migration
turns on and off like any other index change (``test_storage_migrate``)."""

from __future__ import annotations

from pathlib import Path

from engine.project import load_project
from engine.storage import schema as s
from engine.storage.migrate import apply_migration

from storage_models import billing_model, change_field


ROOT = Path(__file__).resolve().parents[2]


def sparse_model():
    return change_field(billing_model(), "Account", "ParentId", sparse=True)


def test_a_sparse_lookup_gets_a_partial_index_of_its_own_name():
    plain = {ix.name: ix for ix in s.build_metadata(billing_model()).tables["account"].indexes}
    sparse = {ix.name: ix for ix in s.build_metadata(sparse_model()).tables["account"].indexes}
    assert set(plain) == {"uq_account_accountnumber", "ix_account_parentid"}
    assert set(sparse) == {"uq_account_accountnumber", "ixp_account_parentid"}
    for dialect in ("sqlite", "postgresql"):
        assert plain["ix_account_parentid"].dialect_options[dialect]["where"] is None
        assert str(sparse["ixp_account_parentid"].dialect_options[dialect]["where"]) == '"parentid" IS NOT NULL'
    # A unique field stays a full unique index, sparse or not.
    unique = change_field(billing_model(), "Account", "AccountNumber", sparse=True)
    index = {ix.name: ix for ix in s.build_metadata(unique).tables["account"].indexes}["uq_account_accountnumber"]
    assert index.unique and index.dialect_options["sqlite"]["where"] is None


def test_the_snapshot_of_a_plain_column_keeps_its_earlier_form():
    spec = next(x for x in s.model_specs(billing_model())["account"] if x.column == "parentid")
    assert "sparse" not in spec.to_json()
    sparse = next(x for x in s.model_specs(sparse_model())["account"] if x.column == "parentid")
    assert s.ColumnSpec.from_json(sparse.to_json()) == sparse and sparse.sparse


def test_a_search_for_a_value_uses_the_sparse_index(engine):
    apply_migration(engine, sparse_model())
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM account WHERE parentid = 7"))
        else:
            with conn.begin():
                # An empty table: without this the planner rightly prefers reading it.
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                plan = " ".join(row[0] for row in conn.exec_driver_sql(
                    "EXPLAIN SELECT id FROM account WHERE parentid = 7"))
    assert "ixp_account_parentid" in plan


def test_the_shipped_lookups_that_drafts_leave_empty_are_sparse_and_the_searched_ones_are_not():
    model = load_project(ROOT).model
    sparse = [("Invoice", "CanceledWith"), ("Invoice", "RelatedInvoice"), ("Invoice", "FinalInvoice"),
              ("InvoiceLineItem", "SubInvoice"), ("InvoiceLineItem", "SubscriptionItem")]
    # The engine selects balances, booking details and sources by these being empty.
    full = [("Balance", "Invoice"), ("Balance", "EntryItem"), ("Balance", "PaymentEntry"),
            ("BookingDetail", "Balance"), ("BookingDetail", "ReversalOf"), ("Order", "ON_Invoice__c")]
    assert [model.require(o).field(f).sparse for o, f in sparse] == [True] * len(sparse)
    assert [model.require(o).field(f).sparse for o, f in full] == [False] * len(full)
