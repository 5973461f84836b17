"""The guard on invoice lines, whatever the writer (issue 19, both backends).

On PostgreSQL the line guard is one set-based check per statement (a
statement-level trigger over the statement's transition table) instead of
a row trigger: these tests prove it refuses what the row trigger refused —
a line inserted, changed or deleted under a finalized invoice, by a bulk
insert, COPY, an update or a delete, with nothing of the statement left —
and lets drafts' lines through; and that a database migrated with the
earlier row trigger loses it when the guards are installed again.
"""

from __future__ import annotations

from datetime import date

import pytest
import sqlalchemy as sa

from engine.storage.bulk import RowWriter
from engine.storage.guards import install_guards

from databases import REPO_ROOT, load_model

REFUSED = "lines of a finalized invoice"


@pytest.fixture(scope="module")
def model():
    return load_model(REPO_ROOT)


@pytest.fixture
def engine(prepared, db_url, model):
    return prepared(db_url, model)


def _invoice(conn, model, status: str, label: str) -> int:
    account = {"name": f"Guard {label}", "accountnumber": f"G-{label}"}
    RowWriter(conn, model.require("Account")).insert([account])
    invoice = {"account": account["id"], "status": status, "currencyisocode": "EUR", "date": date(2024, 1, 31)}
    RowWriter(conn, model.require("Invoice")).insert([invoice])
    return invoice["id"]


def _lines(invoice_id: int, count: int) -> list[dict]:
    return [{"invoice": invoice_id, "title": f"line {n}", "quantity": 1, "unitprice": 10} for n in range(count)]


def _count(conn, invoice_id: int) -> int:
    return conn.execute(sa.text("SELECT count(*) FROM invoicelineitem WHERE invoice = :i"), {"i": invoice_id}).scalar()


@pytest.fixture
def invoices(engine, model):
    """A draft with two lines and an open (finalized) invoice with two lines,
    the latter's written while it was a draft."""
    with engine.begin() as conn:
        draft = _invoice(conn, model, "Draft", "draft")
        final = _invoice(conn, model, "Draft", "final")
        RowWriter(conn, model.require("InvoiceLineItem")).insert(_lines(draft, 2) + _lines(final, 2))
        conn.execute(sa.text("UPDATE invoice SET status = 'Open' WHERE id = :i"), {"i": final})
    return draft, final


def _refused(engine, write, errors=sa.exc.DBAPIError) -> str:
    with pytest.raises(errors) as error:
        with engine.begin() as conn:
            write(conn)
    return str(error.value)


def test_a_bulk_insert_mixing_draft_and_finalized_lines_is_refused_whole(engine, model, invoices):
    draft, final = invoices
    message = _refused(engine, lambda conn: RowWriter(conn, model.require("InvoiceLineItem")).insert(
        _lines(draft, 3) + _lines(final, 1)))
    assert REFUSED in message
    with engine.connect() as conn:
        assert (_count(conn, draft), _count(conn, final)) == (2, 2)


def test_lines_of_drafts_pass(engine, model, invoices):
    draft, _ = invoices
    with engine.begin() as conn:
        RowWriter(conn, model.require("InvoiceLineItem")).insert(_lines(draft, 3))
        conn.execute(sa.text("UPDATE invoicelineitem SET title = 'changed' WHERE invoice = :i"), {"i": draft})
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM invoicelineitem WHERE invoice = :i AND title = 'changed'"), {"i": draft})
        assert _count(conn, draft) == 0


@pytest.mark.parametrize("statement", [
    "UPDATE invoicelineitem SET title = 'forged' WHERE invoice IN (:draft, :final)",
    "DELETE FROM invoicelineitem WHERE invoice IN (:draft, :final)",
    # Moving a finalized invoice's line to a draft changes the finalized invoice.
    "UPDATE invoicelineitem SET invoice = :draft WHERE invoice = :final",
])
def test_a_statement_touching_any_finalized_line_is_refused_whole(engine, invoices, statement):
    draft, final = invoices
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT id, invoice, title FROM invoicelineitem ORDER BY id")).all()
    message = _refused(engine, lambda conn: conn.execute(sa.text(statement), {"draft": draft, "final": final}))
    assert REFUSED in message
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, invoice, title FROM invoicelineitem ORDER BY id")).all() == before


def test_copy_under_a_finalized_invoice_is_refused(engine, invoices):
    """COPY, the run's bulk path on PostgreSQL, fires the statement check too."""
    if engine.dialect.name != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
    _, final = invoices
    with engine.connect() as conn:
        stamp = conn.execute(sa.text("SELECT createddate FROM invoicelineitem LIMIT 1")).scalar()

    def copy(conn):
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy("COPY invoicelineitem (id, name, invoice, title, createddate, lastmodifieddate) "
                         "FROM STDIN") as target:
            target.write_row((990001, "ILI-COPY", final, "copied", stamp, stamp))

    import psycopg  # the driver's own cursor: its error is not wrapped

    assert REFUSED in _refused(engine, copy, psycopg.Error)
    with engine.connect() as conn:
        assert _count(conn, final) == 2


def test_a_row_the_table_would_refuse_anyway_names_the_guard(engine, invoices):
    """A raw insert lacking required columns under a finalized invoice is
    refused with the guard's message, as the row trigger did."""
    _, final = invoices
    message = _refused(engine, lambda conn: conn.execute(sa.text(
        "INSERT INTO invoicelineitem (id, name, invoice, title) VALUES (990002, 'ILI-RAW', :i, 'raw')"), {"i": final}))
    assert REFUSED in message


def test_reinstalling_replaces_the_row_trigger_of_earlier_databases(engine, model):
    """PostgreSQL: the guards installed again leave no row trigger on lines
    that runs for storable rows (the earlier ``mb_guard_line``)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's statement-level guard")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE OR REPLACE FUNCTION mb_guard_line() RETURNS trigger LANGUAGE plpgsql AS $$ "
                             "BEGIN RETURN NEW; END $$")
        conn.exec_driver_sql("CREATE TRIGGER mb_guard_line BEFORE INSERT OR UPDATE OR DELETE ON invoicelineitem "
                             "FOR EACH ROW EXECUTE FUNCTION mb_guard_line()")
        install_guards(conn, model)
    with engine.connect() as conn:
        triggers = dict(conn.exec_driver_sql(
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgrelid = CAST('invoicelineitem' AS regclass) AND NOT tgisinternal").all())
    assert set(triggers) == {"mb_guard_line_insert", "mb_guard_line_update", "mb_guard_line_delete",
                             "mb_guard_line_refused"}
    for name in ("mb_guard_line_insert", "mb_guard_line_update", "mb_guard_line_delete"):
        assert "FOR EACH STATEMENT" in triggers[name]
    assert "WHEN" in triggers["mb_guard_line_refused"]
