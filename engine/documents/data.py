"""Reading the data of invoice documents from the database.

Everything is read generically through the metadata: a record becomes a dict
keyed by field API name (``Name``, ``GrandTotal``, ``Title``,
``DebtorNo__c``), formula fields are evaluated, and balances are simply the
Balance rows whose ``Invoice`` is the invoice, whatever processes created them
(payments today, the balance features later). The result is the
:class:`~engine.documents.context.DocumentInput` the templates render.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Iterable, Sequence

import sqlalchemy as sa

from engine.config.model import ObjectDef
from engine.domain.batching import chunks
from engine.domain.values import field_paths
from engine.storage.context import Context
from engine.storage.reader import RecordReader

from .context import DocumentInput, setting_values
from .errors import InvoiceNotFound, invoice_where


class _Readers(dict):
    """The readers of one command (``ctx.service(_Readers)``), by object and
    dialect: building one joins every formula's lookups, which cost more than
    reading a small batch of documents."""

    def __init__(self, ctx: Context):
        super().__init__()
        self.ctx = ctx

    def of(self, obj: ObjectDef, dialect: str) -> RecordReader:
        key = (obj.name, dialect)
        reader = self.get(key)
        if reader is None:
            paths: set[tuple[str, ...]] = set()
            for fdef in obj.fields:
                if fdef.formula is not None:
                    paths |= field_paths(fdef)
            reader = self[key] = RecordReader.of(self.ctx, obj, paths, dialect)
        return reader


def _reader(ctx: Context, obj: ObjectDef, dialect: str) -> RecordReader:
    """A reader of ``obj``'s stored fields plus what its formula fields reference."""
    return ctx.service(_Readers).of(obj, dialect)


def api_plan(obj: ObjectDef) -> tuple[tuple[str, str, Any], ...]:
    """(API name, lower-case key, compiled formula or None) per field of
    ``obj``: what :func:`to_api` does per field, worked out once per object
    (``FieldDef.key`` is computed on every access)."""
    return tuple((fdef.name, fdef.key, fdef.formula.compiled if fdef.formula is not None else _STORED)
                 for fdef in obj.fields)


#: Marks a stored field in an :func:`api_plan`.
_STORED = object()


def to_api(obj: ObjectDef, record: dict[str, Any], today: date,
           plan: tuple[tuple[str, str, Any], ...] | None = None) -> dict[str, Any]:
    """A reader record (lower-case keys, nested related records) as a dict
    keyed by field API name, with formula fields evaluated (None when a
    formula cannot be evaluated on this record). ``plan``: the object's
    :func:`api_plan`, when the caller converts many records."""
    out: dict[str, Any] = {"Id": record.get("id")}
    for name, key, compiled in plan if plan is not None else api_plan(obj):
        if compiled is not _STORED:
            try:
                out[name] = compiled.evaluate(record, today=today) if compiled is not None else None
            except Exception:  # noqa: BLE001 - a formula that fails on odd data prints empty
                out[name] = None
            continue
        value = record.get(key)
        if type(value) is dict:  # a lookup named like its relationship: keep the id
            value = value.get("id")
        out[name] = value
    out.setdefault("Name", record.get("name"))
    return out


def read_documents(conn: sa.Connection, ctx: Context, invoice_ids: Sequence[int], *,
                   today: date | None = None) -> list[DocumentInput]:
    """The document data of the given invoices, in the order of ``invoice_ids``
    (ids of no invoice are left out). ``today`` is the date formulas see."""
    today = today or date.today()
    dialect = conn.dialect.name
    objects = ("Invoice", "InvoiceLineItem", "Balance", "Account")
    inv_obj, line_obj, bal_obj, acc_obj = (ctx.obj(name) for name in objects)
    inv_table, line_table, bal_table, acc_table = (ctx.table(name) for name in objects)
    final_field = inv_obj.field("FinalInvoice")
    inv_reader, line_reader, bal_reader, acc_reader = (
        _reader(ctx, obj, dialect) for obj in (inv_obj, line_obj, bal_obj, acc_obj))
    line_plan = api_plan(line_obj)

    out: dict[int, DocumentInput] = {}
    for chunk in chunks(list(invoice_ids)):
        invoices = {r["id"]: to_api(inv_obj, r, today) for r in inv_reader.read(
            conn, where=inv_table.c.id.in_(chunk))}
        lines: dict[int, list[dict]] = {i: [] for i in invoices}
        for r in line_reader.read(
                conn, where=line_table.c[line_obj.field("Invoice").column_name].in_(chunk),
                order_by=[line_table.c.id]):
            record = to_api(line_obj, r, today, line_plan)
            lines.setdefault(record["Invoice"], []).append(record)
        balances: dict[int, list[dict]] = {i: [] for i in invoices}
        for r in bal_reader.read(
                conn, where=bal_table.c[bal_obj.field("Invoice").column_name].in_(chunk),
                order_by=[bal_table.c.id]):
            record = to_api(bal_obj, r, today)
            balances.setdefault(record["Invoice"], []).append(record)
        subs: dict[int, list[dict]] = {i: [] for i in invoices}
        if final_field is not None:
            for r in inv_reader.read(
                    conn, where=inv_table.c[final_field.column_name].in_(chunk),
                    order_by=[inv_table.c.date, inv_table.c.name, inv_table.c.id]):
                record = to_api(inv_obj, r, today)
                subs.setdefault(record["FinalInvoice"], []).append(record)
        account_ids = sorted({i["Account"] for i in invoices.values() if i.get("Account") is not None})
        accounts = {r["id"]: to_api(acc_obj, r, today) for r in acc_reader.read(
            conn, where=acc_table.c.id.in_(account_ids))} if account_ids else {}
        # numbers of the invoices the balances and deduction lines point at
        related = {b.get("RelatedInvoice") for bs in balances.values() for b in bs}
        related |= {l.get("SubInvoice") for ls in lines.values() for l in ls}
        related |= {i.get("RelatedInvoice") for i in invoices.values()}
        related.discard(None)
        found = conn.execute(sa.select(inv_table.c.id, inv_table.c.name, inv_table.c.date).where(
            inv_table.c.id.in_(sorted(related)))).all() if related else []
        names = {row.id: row.name for row in found}
        dates = {row.id: row.date for row in found}
        for invoice_id, invoice in invoices.items():
            invoice["RelatedInvoiceNo"] = names.get(invoice.get("RelatedInvoice"))
            invoice["RelatedInvoiceDate"] = dates.get(invoice.get("RelatedInvoice"))
            for b in balances[invoice_id]:
                b["RelatedInvoiceNo"] = names.get(b.get("RelatedInvoice"))
            for l in lines[invoice_id]:
                l["SubInvoiceNo"] = names.get(l.get("SubInvoice"))
            account = accounts.get(invoice.get("Account")) or {f.name: None for f in acc_obj.fields}
            out[invoice_id] = DocumentInput(
                invoice=invoice,
                lines=lines[invoice_id],
                balances=balances[invoice_id],
                account=account,
                business_entity=setting_values(ctx.model, "BusinessEntity", invoice.get("BusinessEntity")),
                sub_invoices=subs[invoice_id],
            )
    return [out[i] for i in invoice_ids if i in out]


def find_invoices(conn: sa.Connection, ctx: Context, *, names: Iterable[str] = (),
                  run_id: int | None = None) -> list[tuple[int, str]]:
    """(id, number) of the named invoices and/or of the invoices of a run,
    named ones in the given order, a run's by number. Raises
    :class:`InvoiceNotFound` (a LookupError) naming the invoices that do not
    exist."""
    inv_table = ctx.table("Invoice")
    found: list[tuple[int, str]] = []
    names = list(dict.fromkeys(names))
    if names:
        rows = dict(conn.execute(sa.select(inv_table.c.name, inv_table.c.id).where(inv_table.c.name.in_(names))).all())
        missing = [n for n in names if n not in rows]
        if missing:
            raise InvoiceNotFound(f"no invoice numbered {', '.join(repr(n) for n in missing)}",
                                  where=invoice_where(", ".join(missing)))
        found.extend((rows[n], n) for n in names)
    if run_id is not None:
        run_field = ctx.obj("Invoice").field("InvoiceRun")
        rows = conn.execute(sa.select(inv_table.c.id, inv_table.c.name)
                            .where(inv_table.c[run_field.column_name] == run_id)
                            .order_by(inv_table.c.name, inv_table.c.id)).all()
        seen = {i for i, _ in found}
        found.extend((r.id, r.name) for r in rows if r.id not in seen)
    return found
