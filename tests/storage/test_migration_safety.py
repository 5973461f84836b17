"""Migrations that lose no money and rewrite no finalized record (issue 14):
exact rescaling on SQLite, finalized records protected through migrations,
backups before destructive changes. On SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.storage.db import transaction
from engine.storage.migrate import (
    CHANGE_TYPE,
    DROP_COLUMN,
    FinalizedRecordsProtected,
    MigrationError,
    apply_migration,
    plan_migration,
)

from contexts import context
from storage_models import T, add_field, billing_model, change_field, drop_field, fld
from test_storage_migrate import fetch, insert


@pytest.fixture
def model():
    """The storage test model with the product's invoice lifecycle, so the
    immutability guards apply."""
    return change_field(billing_model(), "Invoice", "Status", values=("Draft", "Open", "Paid", "Canceled"))


@pytest.fixture
def books(engine, model):
    """An Open (finalized) invoice with two lines and a Draft invoice with one."""
    apply_migration(engine, model)
    accounts = insert(engine, model, "Account", [{"name": "Acme Corporation"}, {"name": "Globex"}])
    invoices = insert(engine, model, "Invoice", [
        {"name": "INV-000001", "account": accounts[0], "grandtotal": Decimal("1234.50"), "status": "Draft"},
        {"name": "INV-000002", "account": accounts[1], "grandtotal": Decimal("99.99"), "status": "Draft"},
    ])
    insert(engine, model, "InvoiceLineItem", [
        {"name": "Consulting, March", "invoice": invoices[0], "quantity": Decimal("1.2549"), "amount": Decimal("1000.00")},
        {"name": "Books", "invoice": invoices[0], "quantity": Decimal("2"), "amount": Decimal("234.50")},
        {"name": "Draft line of a long name", "invoice": invoices[1], "quantity": Decimal("1"), "amount": Decimal("99.99")},
    ])
    table = context(model).metadata.tables["invoice"]
    with transaction(engine) as conn:  # finalize INV-000001 (lines first: the guards refuse them after)
        conn.execute(table.update().where(table.c.id == invoices[0]).values(status="Open"))
    return engine


# ---------------------------------------------------------------------------
# Exact rescaling


def test_fewer_decimals_round_exactly_on_both_backends(engine):
    """SQLite stores minor units; the rescale divided them with SQL true
    division (``/ (100 + 0.0)``), so 1.2549 became 125.99 "minor units", a
    float read back as a wrong amount. Integer arithmetic rounds half-up."""
    model = billing_model()
    apply_migration(engine, model)
    account = insert(engine, model, "Account", [{"name": "A"}])[0]
    invoice = insert(engine, model, "Invoice", [{"name": "I", "account": account}])[0]
    quantities = ["1.2549", "1.2550", "-2.0049", "-2.0050", "0.0001", "-0.0050", "12345678901234.9999", "0"]
    insert(engine, model, "InvoiceLineItem",
           [{"name": q, "invoice": invoice, "quantity": Decimal(q)} for q in quantities])
    changed = change_field(model, "InvoiceLineItem", "Quantity", precision=18, scale=2)
    apply_migration(engine, changed, allow_data_loss=True)
    got = [r["quantity"] for r in fetch(engine, changed, "InvoiceLineItem")]
    assert got == [Decimal(v) for v in
                   ("1.25", "1.26", "-2.00", "-2.01", "0.00", "-0.01", "12345678901235.00", "0.00")]
    assert all(str(v).split(".")[1].__len__() == 2 for v in got)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            kinds = conn.exec_driver_sql("SELECT DISTINCT typeof(quantity) FROM invoicelineitem").scalars().all()
        assert kinds == ["integer"]


def test_more_decimals_and_fewer_integer_digits_stay_exact(engine):
    model = billing_model()
    apply_migration(engine, model)
    account = insert(engine, model, "Account", [{"name": "A", "creditlimit": Decimal("123.45")},
                                                {"name": "B", "creditlimit": Decimal("-999999.99")}])
    assert len(account) == 2
    changed = change_field(model, "Account", "CreditLimit", precision=9, scale=3)  # |x| < 1,000,000
    apply_migration(engine, changed, allow_data_loss=True)
    assert [r["creditlimit"] for r in fetch(engine, changed, "Account")] == [Decimal("123.450"), Decimal("-999999.990")]


# ---------------------------------------------------------------------------
# Finalized records through migrations


def test_shortening_a_line_field_of_a_finalized_invoice_is_refused(books, model):
    lines_before = fetch(books, model, "InvoiceLineItem")
    changed = change_field(model, "InvoiceLineItem", "Name", length=10)
    plan = plan_migration(books, changed)
    assert plan.kinds == (CHANGE_TYPE,) and plan[0].refused
    assert "1 line of a finalized invoice would change (invoices INV-000001)" in plan[0].refused
    assert "REFUSED" in plan.render()
    with pytest.raises(FinalizedRecordsProtected) as refused:
        apply_migration(books, changed, allow_data_loss=True)
    assert refused.value.code == "R112"
    assert refused.value.problems[0].where.field == "Name"
    assert fetch(books, model, "InvoiceLineItem") == lines_before


def test_a_change_that_only_touches_drafts_is_applied(books, model):
    # The finalized invoice's lines are at most 17 characters; the draft's 25.
    changed = change_field(model, "InvoiceLineItem", "Name", length=20)
    plan = plan_migration(books, changed)
    assert not plan.refused and plan[0].data_loss
    apply_migration(books, changed, allow_data_loss=True)
    assert [r["name"] for r in fetch(books, changed, "InvoiceLineItem")] == [
        "Consulting, March", "Books", "Draft line of a long",
    ]


def test_narrowing_a_legal_invoice_amount_is_refused_for_finalized_invoices(books, model):
    changed = change_field(model, "Invoice", "GrandTotal", precision=5, scale=2)  # 1234.50 would be cleared
    plan = plan_migration(books, changed)
    assert plan[0].refused and "1 finalized invoice would change (INV-000001)" in plan[0].refused
    with pytest.raises(FinalizedRecordsProtected):
        apply_migration(books, changed, allow_data_loss=True)
    assert [r["grandtotal"] for r in fetch(books, model, "Invoice")] == [Decimal("1234.50"), Decimal("99.99")]


def test_rounding_line_quantities_of_a_finalized_invoice_is_refused(books, model):
    changed = change_field(model, "InvoiceLineItem", "Quantity", precision=18, scale=2)  # 1.2549 would round
    assert plan_migration(books, changed)[0].refused
    with pytest.raises(FinalizedRecordsProtected):
        apply_migration(books, changed, allow_data_loss=True)


def test_dropping_a_line_field_with_values_on_finalized_lines_is_refused(books, model):
    with_field = add_field(model, "InvoiceLineItem", fld("InvoiceLineItem", "Note__c", T.TEXT, length=40))
    apply_migration(books, with_field)
    # Empty on every finalized line: dropping it changes no finalized record.
    assert not plan_migration(books, model).refused
    table = context(with_field).metadata.tables["invoicelineitem"]
    with books.connect() as conn:
        draft_line = conn.execute(sa.select(table.c.id).where(table.c.name.like("Draft%"))).scalar_one()
    with transaction(books) as conn:
        conn.execute(table.update().where(table.c.id == draft_line).values(note__c="only on the draft"))
    assert not plan_migration(books, model).refused
    apply_migration(books, model, allow_data_loss=True)


def test_a_value_on_a_finalized_line_blocks_dropping_its_field(engine, model):
    with_field = add_field(model, "InvoiceLineItem", fld("InvoiceLineItem", "Note__c", T.TEXT, length=40))
    apply_migration(engine, with_field)
    account = insert(engine, with_field, "Account", [{"name": "A"}])[0]
    invoice = insert(engine, with_field, "Invoice", [{"name": "INV-7", "account": account}])[0]
    insert(engine, with_field, "InvoiceLineItem", [{"name": "L", "invoice": invoice, "note__c": "kept"}])
    table = context(with_field).metadata.tables["invoice"]
    with transaction(engine) as conn:
        conn.execute(table.update().values(status="Open"))
    plan = plan_migration(engine, model)
    assert plan.kinds == (DROP_COLUMN,) and plan[0].refused and "INV-7" in plan[0].refused
    with pytest.raises(FinalizedRecordsProtected):
        apply_migration(engine, model, allow_data_loss=True)
    assert [r["note__c"] for r in fetch(engine, with_field, "InvoiceLineItem")] == ["kept"]


# ---------------------------------------------------------------------------
# Backups


def test_a_destructive_migration_writes_a_restorable_backup_first(books, model):
    before = fetch(books, model, "Account")
    changed = drop_field(model, "Account", "CreditLimit")
    changed = change_field(changed, "Account", "Name", length=4)
    applied = apply_migration(books, changed, allow_data_loss=True)
    assert applied.backup, "the command must say where the backup is"
    assert [r["name"] for r in fetch(books, changed, "Account")] == ["Acme", "Glob"]
    if books.dialect.name == "sqlite":
        path = Path(applied.backup)
        assert path.is_file() and not path.with_name(path.name + ".part").exists()
        with sqlite3.connect(path) as copy:
            names = [r[0] for r in copy.execute("SELECT name FROM account ORDER BY id")]
            columns = [r[1] for r in copy.execute("PRAGMA table_info(account)")]
        assert names == ["Acme Corporation", "Globex"] and "creditlimit" in columns
    else:
        assert applied.backup.startswith("schema mb_backup_")
        schema = applied.backup.split(" ", 1)[1]
        with books.connect() as conn:
            rows = conn.exec_driver_sql(f'SELECT name FROM "{schema}".account ORDER BY id').scalars().all()
            tables = sa.inspect(conn).get_table_names(schema=schema)
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            conn.commit()
        assert rows == [r["name"] for r in before]
        assert sorted(tables) == ["_mb_schema_field", "account"]


def test_no_backup_without_destructive_changes(books, model):
    changed = add_field(model, "Account", fld("Account", "Region__c", T.TEXT, length=20))
    assert apply_migration(books, changed).backup is None


def backups(engine) -> list[str]:
    if engine.dialect.name == "sqlite":
        return sorted(p.name for p in Path(engine.url.database).parent.glob("*.before-migration-*"))
    with engine.connect() as conn:
        return sorted(s for s in sa.inspect(conn).get_schema_names() if s.startswith("mb_backup_"))


def test_a_refused_or_failed_migration_leaves_no_backup(books, model):
    before = backups(books)
    with pytest.raises(FinalizedRecordsProtected):
        apply_migration(books, change_field(model, "InvoiceLineItem", "Name", length=3), allow_data_loss=True)
    assert backups(books) == before
    # Fails after the backup was taken (a unique index over repeated values): the backup goes too.
    table = context(model).metadata.tables["account"]
    with transaction(books) as conn:
        conn.execute(table.update().values(email="same@example.com"))
    failing = drop_field(change_field(model, "Account", "Email", unique=True), "Account", "CreditLimit")
    with pytest.raises(MigrationError):
        apply_migration(books, failing, allow_data_loss=True)
    assert backups(books) == before
