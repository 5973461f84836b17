"""Writing one batch of an invoice run, inside the batch's transaction.

For the drafts a batch built, :class:`BatchWriter` checks that every lookup
filled from an ON field points to an existing record, then writes the
invoices and their lines, one billing claim per source record (the
``_mb_claim`` primary key makes a record billed twice impossible), and the
write-back to the sources (``ON_Invoice<sfx>``, ``ON_LastInvoiceRun<sfx>``,
the error field cleared). Records that could not be billed get their error
and the run instead. What a transaction did is returned as a
:class:`BatchOutcome`, recorded by the caller only after the commit (the
transaction may be run again after a lost race).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, ObjectDef
from engine.domain.batching import chunks
from engine.storage.bulk import RowWriter, insert_tuples, now_utc, update_by_id
from engine.storage.context import Context
from engine.storage.db import copy_rows
from engine.storage.guards import insert_lines_checked
from engine.storage.ids import next_autonumbers
from engine.storage.schema import CLAIM
from engine.storage.types import TextTooLong, ValueOutOfRange

from .build import DraftInvoice, InvariantError
from .plan import FilterPlan
from .report import InvoiceSummary, RecordFailure

#: The longest text of ON_InvoiceBuildError.
ERROR_LENGTH = 255
#: Ids per ``IN (...)`` list.
ID_CHUNK = 500
#: Rows from which an insert on PostgreSQL goes through COPY.
COPY_MIN_ROWS = 100


@dataclass
class BatchOutcome:
    """What one committed transaction of a filter run did."""

    invoices: int = 0
    lines: int = 0
    failures: list[RecordFailure] = field(default_factory=list)
    summaries: list[InvoiceSummary] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # records of accounts billed elsewhere right now


class BatchWriter:
    """Writes the drafts and failures of one filter's batches (see the module docstring)."""

    def __init__(self, ctx: Context, plan: FilterPlan, run_id: int | None,
                 reference_targets: Sequence[tuple[FieldDef, str]]):
        self.ctx = ctx
        self.plan = plan
        self.run_id = run_id
        self.invoice_obj = ctx.obj("Invoice")
        self.line_obj = ctx.obj("InvoiceLineItem")
        self.reference_targets = list(reference_targets)

    def check_references(self, conn: sa.Connection, drafts: list[DraftInvoice],
                         failures: list[RecordFailure]) -> list[DraftInvoice]:
        """Lookups filled from ON fields must point to existing records: a
        draft that refers to a missing record becomes a record error of its
        sources (added to ``failures``) instead of failing the whole batch on
        the foreign key. Returns the drafts to write."""
        targets = self.reference_targets
        if not targets or not drafts:
            return drafts
        wanted: dict[str, set[int]] = defaultdict(set)
        for draft in drafts:
            for target, name in targets:
                rows = [draft.header] if name == "Invoice" else draft.lines
                for row in rows:
                    value = row.get(target.key)
                    if isinstance(value, int):
                        wanted[target.reference_to].add(value)  # type: ignore[index]
        existing: dict[str, set[int]] = {}
        for object_name, ids in wanted.items():
            table = self.ctx.table(object_name)
            found: set[int] = set()
            for chunk in chunks(sorted(ids), ID_CHUNK):
                found.update(conn.execute(sa.select(table.c.id).where(table.c.id.in_(chunk))).scalars())
            existing[object_name] = found
        kept = []
        for draft in drafts:
            missing = None
            for target, name in targets:
                rows = [draft.header] if name == "Invoice" else draft.lines
                for row in rows:
                    value = row.get(target.key)
                    if isinstance(value, int) and value not in existing[target.reference_to]:  # type: ignore[index]
                        missing = f"{name}.{target.name}: no {target.reference_to} with id {value}"
                        break
                if missing:
                    break
            if missing:
                failures.extend(RecordFailure(s.object_name, s.record_id, missing) for s in draft.sources)
            else:
                kept.append(draft)
        return kept

    def write(self, conn: sa.Connection, drafts: list[DraftInvoice], out: BatchOutcome) -> None:
        """Insert the drafts and their lines, claim their source records and
        write back to the sources; count it all in ``out``."""
        if not drafts:
            return
        insert_drafts(conn, self.invoice_obj, self.line_obj, drafts)
        self.record_written(conn, drafts, out, [len(draft.lines) for draft in drafts])

    def record_written(self, conn: sa.Connection, drafts: list[DraftInvoice], out: BatchOutcome,
                       line_counts: Sequence[int]) -> None:
        """For drafts already inserted (with ``line_counts`` lines each):
        claim their source records, write back to the sources and count it
        all in ``out``. Shared by the Python and the set-based path."""
        suffix = self.plan.suffix
        source_table = self.plan.header.obj.table_name
        # A header record whose lines were split by a line-level invoice
        # criterion feeds several invoices; it is claimed by, and points to,
        # the first of them.
        first_invoice: dict[int, int] = {}
        for draft in drafts:
            for source in draft.sources:
                first_invoice.setdefault(source.record_id, draft.header["id"])
        claims = [
            (source_table, record_id, suffix, invoice_id, self.run_id)
            for record_id, invoice_id in first_invoice.items()
        ]
        insert_tuples(conn, CLAIM, ("source_table", "source_id", "suffix", "invoice_id", "run_id"), claims)
        wb = self.plan.header_writeback
        update_by_id(
            conn,
            self.plan.header.obj,
            [wb["ON_Invoice"].name, wb["ON_LastInvoiceRun"].name, wb["ON_InvoiceBuildError"].name],
            [(record_id, (invoice_id, self.run_id, None)) for record_id, invoice_id in first_invoice.items()],
        )
        self.count_written(drafts, out, line_counts)

    def count_written(self, drafts: list[DraftInvoice], out: BatchOutcome, line_counts: Sequence[int]) -> None:
        """Count drafts written (with ``line_counts`` lines each) in ``out``, with their summaries."""
        out.invoices += len(drafts)
        out.lines += sum(line_counts)
        for draft, count in zip(drafts, line_counts):
            header = draft.header
            out.summaries.append(
                InvoiceSummary(
                    header["id"], header["name"], str(header.get("accountname") or header["account"]),
                    header["type"], count, header["totalnet"], header["grandtotal"],
                    str(header.get("currencyisocode") or ""),
                )
            )

    def write_fitting(self, conn: sa.Connection, drafts: list[DraftInvoice], out: BatchOutcome,
                      failures: list[RecordFailure]) -> None:
        """:meth:`write`, except that drafts with a value that does not fit
        its column are left out and become record errors of their sources
        (added to ``failures``)."""
        keys = [(record, set(record)) for draft in drafts for record in (draft.header, *draft.lines)]
        savepoint = conn.begin_nested()
        try:
            self.write(conn, drafts, out)
        except (ValueOutOfRange, TextTooLong):
            savepoint.rollback()
        else:
            savepoint.commit()
            return
        # (Any other failure leaves the savepoint to the batch's rollback: no
        # statement is sent after it.)
        # Take back what the rolled-back write gave the drafts (ids, names,
        # links, timestamps): they were reserved in the savepoint, which is gone.
        for record, before in keys:
            for key in set(record) - before:
                del record[key]
        self.write(conn, self._each_fitting(conn, drafts, failures), out)

    def fitting(self, conn: sa.Connection, drafts: list[DraftInvoice],
                failures: list[RecordFailure]) -> list[DraftInvoice]:
        """The drafts whose values all fit their columns, the others made
        record errors of their sources (added to ``failures``), as
        :meth:`write_fitting` decides, but without writing: all drafts are
        converted at once (one row writer per object), and only when a value
        does not fit is each draft tried alone to find which."""
        try:
            RowWriter(conn, self.line_obj).rows([line for draft in drafts for line in draft.lines])
            RowWriter(conn, self.invoice_obj).rows([draft.header for draft in drafts])
        except (ValueOutOfRange, TextTooLong):
            pass
        else:
            return drafts
        return self._each_fitting(conn, drafts, failures)

    def _each_fitting(self, conn: sa.Connection, drafts: list[DraftInvoice],
                      failures: list[RecordFailure]) -> list[DraftInvoice]:
        """The drafts whose values fit their columns, tried one by one; each
        other draft's sources become record failures naming the value."""
        kept = []
        for draft in drafts:
            problem = self.unfit(conn, draft)
            if problem is None:
                kept.append(draft)
            else:
                failures.extend(RecordFailure(s.object_name, s.record_id, problem) for s in draft.sources)
        return kept

    def unfit(self, conn: sa.Connection, draft: DraftInvoice) -> str | None:
        """Why ``draft`` cannot be stored (the first value that does not fit
        its column, naming the field), or None."""
        try:
            # Lines first: a line amount is where a too large quantity or price shows.
            RowWriter(conn, self.line_obj).rows(draft.lines)
            RowWriter(conn, self.invoice_obj).rows([draft.header])
        except (ValueOutOfRange, TextTooLong) as error:
            where = error.where
            field_name = f"{where.object}.{where.field}: " if where.field and str(error)[:len(where.object or "")] \
                != where.object else ""
            hint = f"; {error.hint}" if error.hint else ""
            return f"{field_name}{error}{hint}"[:ERROR_LENGTH]
        return None

    def write_failures(self, conn: sa.Connection, failures: list[RecordFailure], out: BatchOutcome) -> BatchOutcome:
        """Write each failure's message and the run to its source record."""
        wb = self.plan.header_writeback
        update_by_id(
            conn,
            self.plan.header.obj,
            [wb["ON_LastInvoiceRun"].name, wb["ON_InvoiceBuildError"].name],
            [(f.record_id, (self.run_id, f.message[:ERROR_LENGTH])) for f in failures],
        )
        out.failures.extend(failures)
        return out


def insert_drafts(conn: sa.Connection, invoice_obj: ObjectDef, line_obj: ObjectDef,
                  drafts: list[DraftInvoice]) -> tuple[list[dict], list[dict]]:
    """Insert draft invoices (named ``DRAFT-<id>``) and their lines; returns
    the headers and lines as written. Every kind of run writes its drafts
    here, so the guard that no line goes under a finalized invoice is checked
    once per set (:func:`engine.storage.guards.insert_lines_checked`)."""
    lines = RowWriter(conn, line_obj)
    headers = insert_headers(conn, invoice_obj, [d.header for d in drafts])
    all_lines = []
    for draft in drafts:
        for line in draft.lines:
            line["invoice"] = draft.header["id"]
            all_lines.append(line)
    insert_lines_checked(conn, invoice_obj.table_name, (h["id"] for h in headers),
                         lambda: insert_many(conn, lines, all_lines))
    return headers, all_lines


def insert_selected_lines(conn: sa.Connection, invoice_table: str, invoice_ids: Sequence[int],
                          statement: sa.Executable, expected: int) -> None:
    """Run ``statement``, an INSERT ... SELECT of the lines of ``invoice_ids``
    from staged rows, under the lines' guard (:func:`insert_lines_checked`),
    and raise :class:`InvariantError` unless it wrote exactly ``expected``
    lines: a staged line the SELECT's joins lose (its template or tax
    decision missing, a line outside its numbering range) fails the batch,
    which rolls back, instead of going missing. The set run and the
    subscription run write their lines so."""

    def insert() -> None:
        written = conn.execute(statement).rowcount
        if written != expected:
            raise InvariantError(f"{written} lines written of {expected} staged")

    insert_lines_checked(conn, invoice_table, invoice_ids, insert)


def insert_headers(conn: sa.Connection, invoice_obj: ObjectDef, headers: list[dict]) -> list[dict]:
    """Insert draft invoice headers, ids reserved in list order and named
    ``DRAFT-<id>``; returns them as written (by COPY on PostgreSQL for many,
    :func:`insert_many`)."""
    invoices = RowWriter(conn, invoice_obj)
    invoices.assign_ids(headers)
    for header in headers:
        header["name"] = f"DRAFT-{header['id']:06d}"
    insert_many(conn, invoices, headers)
    return headers


def insert_many(conn: sa.Connection, writer: RowWriter, records: list[dict]) -> None:
    """``writer.insert(records)``; on PostgreSQL, for many records, the rows
    (built by the writer, ids, names and timestamps as it sets them) travel
    by COPY instead of executemany: a third of a 100k-line run's time went
    into the server executing one INSERT per line."""
    if conn.dialect.name != "postgresql" or len(records) < COPY_MIN_ROWS:
        writer.insert(records)
        return
    writer.assign_ids(records)
    if writer.autonumber is not None:
        unnamed = [r for r in records if not r.get("name")]
        for record, name in zip(unnamed, next_autonumbers(conn, writer.obj, len(unnamed))):
            record["name"] = name
    stamp = now_utc()
    for record in records:
        record.setdefault("createddate", stamp)
        record.setdefault("lastmodifieddate", stamp)
    names, rows = writer.rows(records)
    copy_rows(conn, writer.obj.table_name, names, rows)
