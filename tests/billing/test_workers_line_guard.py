"""The run's bulk line insert keeps the guard on lines (issue 19).

SQLite: the per-row trigger ``mb_guard_line_insert`` cost more than the
insert itself, so the run's writer (:func:`engine.storage.guards.insert_lines_checked`)
drops it inside its write transaction, inserts, checks the set of invoices
the lines belong to and re-creates the trigger before commit. These tests
prove the guarantee is the same: lines never go under a finalized invoice
through that path, a refused insert leaves nothing behind, and every
committed state has the trigger, exactly as installed. PostgreSQL keeps its
trigger; the same calls are refused there by it.
"""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from engine.storage.bulk import RowWriter
from engine.storage.guards import GuardViolation, insert_lines_checked


def _trigger_sql(conn) -> str | None:
    return conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'mb_guard_line_insert'").scalar()


def _invoice(conn, model, status: str) -> int:
    record = {"account": None, "status": status, "currencyisocode": "EUR", "date": datetime(2024, 1, 31).date()}
    account = {"name": f"Guard {status}", "accountnumber": f"G-{status}"}
    RowWriter(conn, model.require("Account")).insert([account])
    record["account"] = account["id"]
    RowWriter(conn, model.require("Invoice")).insert([record])
    return record["id"]


def _lines(invoice_id: int, count: int = 3) -> list[dict]:
    return [{"invoice": invoice_id, "title": f"line {n}", "quantity": 1, "unitprice": 10} for n in range(count)]


def _count_lines(conn, invoice_id: int) -> int:
    return conn.exec_driver_sql("SELECT count(*) FROM invoicelineitem WHERE invoice = %s" % int(invoice_id)).scalar()


def _insert(conn, model, invoice_ids, lines):
    writer = RowWriter(conn, model.require("InvoiceLineItem"))
    insert_lines_checked(conn, "invoice", invoice_ids, lambda: writer.insert(lines))


@pytest.fixture
def engine(db_url, prepared, sample_model):
    return prepared(db_url, sample_model)


def test_lines_of_drafts_are_inserted_and_the_trigger_stays(engine, sample_model):
    with engine.begin() as conn:
        installed = _trigger_sql(conn) if conn.dialect.name == "sqlite" else None
        draft = _invoice(conn, sample_model, "Draft")
        _insert(conn, sample_model, [draft], _lines(draft))
    with engine.connect() as conn:
        assert _count_lines(conn, draft) == 3
        if conn.dialect.name == "sqlite":
            assert installed is not None and _trigger_sql(conn) == installed


def test_lines_under_a_finalized_invoice_are_refused_and_nothing_stays(engine, sample_model):
    with engine.begin() as conn:
        installed = _trigger_sql(conn) if conn.dialect.name == "sqlite" else None
        draft = _invoice(conn, sample_model, "Draft")
        final = _invoice(conn, sample_model, "Open")
    # One batch with lines of a draft and of a finalized invoice: all refused.
    with pytest.raises((GuardViolation, sa.exc.DBAPIError), match="lines of a finalized invoice"):
        with engine.begin() as conn:
            _insert(conn, sample_model, [draft, final], _lines(draft) + _lines(final))
    with engine.connect() as conn:
        assert _count_lines(conn, draft) == 0 and _count_lines(conn, final) == 0
        if conn.dialect.name == "sqlite":
            assert _trigger_sql(conn) == installed
    # ... and the row guard is back for every other writer.
    with pytest.raises(sa.exc.DBAPIError, match="lines of a finalized invoice"):
        with engine.begin() as conn:
            RowWriter(conn, sample_model.require("InvoiceLineItem")).insert(_lines(final, 1))


def test_a_refused_insert_in_a_savepoint_leaves_the_trigger_for_the_commit(engine, sample_model):
    """The run's writer catches column overflows in a savepoint and goes on
    in the same transaction (BatchWriter.write_fitting): the savepoint's
    rollback restores the trigger before the transaction commits."""
    with engine.begin() as conn:
        installed = _trigger_sql(conn) if conn.dialect.name == "sqlite" else None
        draft = _invoice(conn, sample_model, "Draft")
        final = _invoice(conn, sample_model, "Open")
        savepoint = conn.begin_nested()
        with pytest.raises((GuardViolation, sa.exc.DBAPIError)):
            _insert(conn, sample_model, [final], _lines(final))
        savepoint.rollback()
        _insert(conn, sample_model, [draft], _lines(draft, 2))
        if conn.dialect.name == "sqlite":
            assert _trigger_sql(conn) == installed
    with engine.connect() as conn:
        assert _count_lines(conn, draft) == 2 and _count_lines(conn, final) == 0
        if conn.dialect.name == "sqlite":
            assert _trigger_sql(conn) == installed


def test_the_check_reads_the_database_not_the_caller(engine, sample_model):
    """An invoice finalized earlier in the same transaction is seen as
    finalized: the check queries the invoices, it does not trust the run."""
    with engine.begin() as conn:
        invoice = _invoice(conn, sample_model, "Draft")
    with pytest.raises((GuardViolation, sa.exc.DBAPIError), match="lines of a finalized invoice"):
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE invoice SET status = 'Open' WHERE id = %s" % int(invoice))
            _insert(conn, sample_model, [invoice], _lines(invoice))
