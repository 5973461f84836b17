"""Database guards that keep finalized records immutable.

The engine never changes a finalized invoice's legal content, its lines, or a
booking detail's posting; these triggers make the database refuse it too, so
that a script, a bug or a hand-written UPDATE cannot rewrite history
(invariant I7). Corrections are cancellations and reversal bookings.

Guarded:

* Invoice: once out of Draft, its number, date, account, currency, class and
  totals cannot change, it cannot return to Draft, and it cannot be deleted;
* InvoiceLineItem: no insert, update or delete under a finalized invoice;
* BookingDetail: never deleted; only its export bookkeeping (Exported,
  ExportDestination, LastError) may change.

The triggers are (re)installed after every migration: SQLite drops them when
a table is rebuilt.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine.config.model import OrgModel

EDITABLE_STATUSES = ("Draft", "Pre-Draft")
INVOICE_LEGAL_FIELDS = ("name", "date", "account", "currencyisocode", "class", "totalnet", "totaltax", "grandtotal")
DETAIL_POSTING_FIELDS = ("type", "amount", "accountno", "contraaccountno", "bpaccountno", "bookingdate",
                         "bookingperiod", "invoice", "taxcode", "taxrate")
MESSAGE_INVOICE = "metabill: a finalized invoice cannot be changed or deleted; cancel it instead"
MESSAGE_LINE = "metabill: the lines of a finalized invoice cannot be changed"
MESSAGE_DETAIL = "metabill: booking details are immutable; post a reversal instead"


def _present(model: OrgModel, object_name: str, fields: tuple[str, ...]) -> tuple[str, tuple[str, ...]] | None:
    obj = model.object(object_name)
    if obj is None:
        return None
    return obj.table_name, tuple(f for f in fields if obj.field(f) is not None and obj.field(f).is_stored)


SQLITE_TRIGGERS = (
    "mb_guard_invoice_update", "mb_guard_invoice_delete", "mb_guard_line_insert", "mb_guard_line_update",
    "mb_guard_line_delete", "mb_guard_detail_update", "mb_guard_detail_delete",
)


def remove_guards(conn: sa.Connection) -> None:
    """Drop the guards before a migration: SQLite rebuilds tables by copying,
    and a trigger naming a table that is being renamed breaks the rebuild."""
    if conn.dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def install_guards(conn: sa.Connection, model: OrgModel) -> None:
    invoice_obj = model.object("Invoice")
    status = invoice_obj.field("Status") if invoice_obj is not None else None
    # Only an invoice with the product's lifecycle (Draft -> Open ...) is guarded.
    lifecycle = status is not None and {"Draft", "Open"} <= set(status.values)
    invoice = _present(model, "Invoice", INVOICE_LEGAL_FIELDS) if lifecycle else None
    line = _present(model, "InvoiceLineItem", ("invoice",)) if lifecycle else None
    detail = _present(model, "BookingDetail", DETAIL_POSTING_FIELDS)
    if conn.dialect.name == "sqlite":
        _sqlite(conn, invoice, line, detail)
    elif conn.dialect.name == "postgresql":
        _postgresql(conn, invoice, line, detail)


def _q(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _editable(prefix: str) -> str:
    statuses = ", ".join(f"'{s}'" for s in EDITABLE_STATUSES)
    return f"{prefix}.status IN ({statuses})"


def _sqlite(conn, invoice, line, detail) -> None:
    statements = []
    if invoice:
        table, fields = invoice
        changed = " OR ".join(f"NEW.{_q(conn, f)} IS NOT OLD.{_q(conn, f)}" for f in fields) or "0"
        statements += [
            ("mb_guard_invoice_update", f"BEFORE UPDATE ON {_q(conn, table)} WHEN NOT ({_editable('OLD')}) "
             f"AND (({changed}) OR {_editable('NEW')}) BEGIN SELECT RAISE(ABORT, '{MESSAGE_INVOICE}'); END"),
            ("mb_guard_invoice_delete", f"BEFORE DELETE ON {_q(conn, table)} WHEN NOT ({_editable('OLD')}) "
             f"BEGIN SELECT RAISE(ABORT, '{MESSAGE_INVOICE}'); END"),
        ]
        if line:
            line_table = line[0]
            parent = f"(SELECT status FROM {_q(conn, table)} WHERE id = {{row}}.invoice)"
            statuses = ", ".join(f"'{s}'" for s in EDITABLE_STATUSES)
            for event, row in (("INSERT", "NEW"), ("UPDATE", "OLD"), ("DELETE", "OLD")):
                statements.append(
                    (f"mb_guard_line_{event.lower()}",
                     f"BEFORE {event} ON {_q(conn, line_table)} WHEN {parent.format(row=row)} NOT IN ({statuses}) "
                     f"BEGIN SELECT RAISE(ABORT, '{MESSAGE_LINE}'); END")
                )
    if detail:
        table, fields = detail
        changed = " OR ".join(f"NEW.{_q(conn, f)} IS NOT OLD.{_q(conn, f)}" for f in fields) or "0"
        statements += [
            ("mb_guard_detail_update", f"BEFORE UPDATE ON {_q(conn, table)} WHEN {changed} "
             f"BEGIN SELECT RAISE(ABORT, '{MESSAGE_DETAIL}'); END"),
            ("mb_guard_detail_delete", f"BEFORE DELETE ON {_q(conn, table)} "
             f"BEGIN SELECT RAISE(ABORT, '{MESSAGE_DETAIL}'); END"),
        ]
    for name, body in statements:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE TRIGGER {name} {body}")


def _postgresql(conn, invoice, line, detail) -> None:
    statuses = ", ".join(f"'{s}'" for s in EDITABLE_STATUSES)
    if invoice:
        table, fields = invoice
        changed = " OR ".join(f"NEW.{_q(conn, f)} IS DISTINCT FROM OLD.{_q(conn, f)}" for f in fields) or "false"
        conn.exec_driver_sql(f"""
CREATE OR REPLACE FUNCTION mb_guard_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status NOT IN ({statuses}) THEN
    IF TG_OP = 'DELETE' OR ({changed}) OR NEW.status IN ({statuses}) THEN
      RAISE EXCEPTION '{MESSAGE_INVOICE}';
    END IF;
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $$""")
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS mb_guard_invoice ON {_q(conn, table)}")
        conn.exec_driver_sql(f"CREATE TRIGGER mb_guard_invoice BEFORE UPDATE OR DELETE ON {_q(conn, table)} "
                             "FOR EACH ROW EXECUTE FUNCTION mb_guard_invoice()")
        if line:
            line_table = line[0]
            conn.exec_driver_sql(f"""
CREATE OR REPLACE FUNCTION mb_guard_line() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE parent_status text;
BEGIN
  SELECT status INTO parent_status FROM {_q(conn, table)}
   WHERE id = CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice ELSE OLD.invoice END;
  IF parent_status IS NOT NULL AND parent_status NOT IN ({statuses}) THEN
    RAISE EXCEPTION '{MESSAGE_LINE}';
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $$""")
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS mb_guard_line ON {_q(conn, line_table)}")
            conn.exec_driver_sql(f"CREATE TRIGGER mb_guard_line BEFORE INSERT OR UPDATE OR DELETE ON "
                                 f"{_q(conn, line_table)} FOR EACH ROW EXECUTE FUNCTION mb_guard_line()")
    if detail:
        table, fields = detail
        changed = " OR ".join(f"NEW.{_q(conn, f)} IS DISTINCT FROM OLD.{_q(conn, f)}" for f in fields) or "false"
        conn.exec_driver_sql(f"""
CREATE OR REPLACE FUNCTION mb_guard_detail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' OR ({changed}) THEN
    RAISE EXCEPTION '{MESSAGE_DETAIL}';
  END IF;
  RETURN NEW;
END $$""")
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS mb_guard_detail ON {_q(conn, table)}")
        conn.exec_driver_sql(f"CREATE TRIGGER mb_guard_detail BEFORE UPDATE OR DELETE ON {_q(conn, table)} "
                             "FOR EACH ROW EXECUTE FUNCTION mb_guard_detail()")
