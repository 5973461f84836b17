"""The set-based path of a filter's batch: lines evaluated and written in SQL.

The Python path (:meth:`engine.billing.filterrun.FilterRun._python_batch`)
reads every line record into a dict, evaluates it, builds each invoice in
Python and inserts the lines row by row. Here the batch's header records
are still evaluated in Python (they decide the invoice: account, template,
type, currency...; a tenth of the rows), and everything per line happens in
the database, inside the batch's transaction:

1. ``mb_set_src``: the batch's header records, each with its group (the
   invoice it goes to) and the group's tax context (``hkey``).
2. ``mb_set_line``: one INSERT ... SELECT evaluates every line record of
   those headers into InvoiceLineItem values (:mod:`engine.billing.setplan`
   compiled the filter's line program into SQL).
3. Groups with a line the Python path would refuse or treat specially (a
   text too long for its column, a number beyond its column or
   :data:`~engine.billing.setplan.AMOUNT_BOUND`, a header without lines) are
   found by one query and handed back to the caller, who builds them on the
   Python path (same records, same messages). So are final invoices that
   deduct sub invoices, deposit invoices and gross invoices. A header record
   with a line of an empty title or price (about 1 % of the records) is
   refused here, with the Python path's record error, and the rest of its
   group stays set-based: its header is drafted again without the record.
   Up to here (:meth:`SetBatchWriter.prepare`) nothing is written.
4. Tax is decided per distinct (header context, line context) in Python,
   by the run's :class:`~engine.billing.tax.TaxResolver` (the same pure
   decision with its trace), and joined from ``mb_set_tax``; a context no
   rule decides sends its groups to the Python path, which reports it.
5. Amounts are computed in SQL exactly as :func:`engine.billing.build._amounts`
   does per line (half-up to cents; on SQLite in integer minor units, on
   PostgreSQL in NUMERIC), the header totals are their sums, read back as
   Decimals. :meth:`SetBatchWriter.finish` writes these drafts and the
   Python path's drafts of the fallback together in group key order: invoice
   ids, line ids and line names are reserved as one block each and handed
   out in that order, as the Python path numbers a batch; the staged headers
   are written by the ordinary row writer and their lines by one INSERT ...
   SELECT.
6. The invoice invariants (:func:`engine.billing.build.check_invoice`) are
   checked on the written rows by one query per batch: every header's
   totals are the sums of its lines, every line's gross is net + tax, and
   every invoice has a line; two decimals are what the columns store.
   A violation raises :class:`~engine.billing.build.InvariantError` and the
   batch rolls back, as on the Python path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType
from engine.domain.money import CENT, ZERO
from engine.storage.bulk import RowWriter, now_utc
from engine.storage.context import Context
from engine.storage.db import copy_rows
from engine.storage.ids import reserve_autonumbers, reserve_ids
from engine.storage.schema import CLAIM
from engine.storage.types import TextTooLong, ValueOutOfRange, scaled_to_decimal, to_db_converter

from .accounts import AccountCache
from .build import DEPOSIT_TYPE, FINAL_TYPE, DraftInvoice, InvariantError, RunFacts, SourceHeader, draft_header
from .plan import FilterPlan
from .report import RecordFailure
from .setplan import AMOUNT_BOUND, GRP, LINE, ORD, RATE_BOUND, SRC, TAX, SetPlan, order_lines
from .subinvoices import open_sub_invoices
from .tax import TaxError
from .writing import BatchOutcome, BatchWriter, insert_drafts, insert_headers, insert_selected_lines



@dataclass
class Prepared:
    """A batch staged by :meth:`SetBatchWriter.prepare`, before anything is written."""

    #: Group number -> draft (header with its totals, no lines), in group key order.
    live: dict[int, DraftInvoice] = field(default_factory=dict)
    #: Group number -> group key (the order :meth:`SetBatchWriter.finish` writes in).
    keys: dict[int, tuple] = field(default_factory=dict)
    #: Group number -> its staged lines.
    counts: dict[int, int] = field(default_factory=dict)
    #: Record ids the Python path bills instead.
    fallback: list[int] = field(default_factory=list)
    #: Record ids refused here as the Python path refuses them (their errors
    #: are in the caller's failures); a batch redone in Python reads them again.
    refused: list[int] = field(default_factory=list)
    #: Whether the temporary tables exist (dropped by ``finish``).
    staged: bool = False


class SetBatchWriter:
    """Evaluates and writes the lines of a filter's batches in SQL; see the module docstring."""

    def __init__(self, ctx: Context, plan: FilterPlan, setplan: SetPlan, run: RunFacts, accounts: AccountCache,
                 writer: BatchWriter, dialect: str):
        self.ctx, self.plan, self.setplan, self.run = ctx, plan, setplan, run
        self.accounts, self.writer = accounts, writer
        self.sqlite = dialect == "sqlite"
        self.line_obj = ctx.obj("InvoiceLineItem")
        self.invoice_obj = ctx.obj("Invoice")
        resolver = run.tax
        self.header_tax_fields = tuple(c.context_field.lower() for c in resolver.criteria
                                       if c.context_object.lower() != "invoicelineitem")
        self._columns = [(c.key, c) for c in setplan.columns]
        self._stage_sql = self._stage()

    # -- SQL text ---------------------------------------------------------------------

    def q(self, name: str) -> str:
        return f'"{name}"'

    def _field(self, key: str) -> FieldDef:
        found = self.line_obj.field(key)
        assert found is not None
        return found

    def _scale(self, key: str) -> int:
        return self._field(key).scale or 0

    def _stage(self) -> str:
        """INSERT ... SELECT of the line records of ``mb_set_src`` into ``mb_set_line``."""
        q, plan = self.q, self.plan
        table = plan.line.obj.table_name
        parent = "id" if plan.single else plan.child_lookup.column_name  # type: ignore[union-attr]
        joins: dict[tuple[str, ...], str] = {}
        # Driven by the batch's records (SQLite: CROSS JOIN fixes the join
        # order; it knows nothing of the temporary table's size and would
        # scan the whole line table per batch, which grows with the data).
        join = "CROSS JOIN" if self.sqlite else "JOIN"
        from_sql = [f"{SRC} s {join} {q(table)} b ON b.{q(parent)} = s.record_id"]
        select = [f"b.{q(parent)}", "b.id"]
        for key, column in self._columns:
            values = []
            for step in column.steps:
                alias = "b"
                for depth in range(len(step.lookups)):
                    path = tuple(f.key for f in step.lookups[:depth + 1])
                    if path not in joins:
                        lookup = step.lookups[depth]
                        joins[path] = f"j{len(joins)}"
                        target = self.ctx.model.require(lookup.reference_to).table_name  # type: ignore[arg-type]
                        from_sql.append(f"LEFT JOIN {q(target)} {joins[path]} "
                                        f"ON {joins[path]}.id = {alias}.{q(lookup.column_name)}")
                    alias = joins[path]
                values.append(self._value(f"{alias}.{q(step.source.column_name)}", step.source, column.target))
            select.append(values[0] if len(values) == 1 else f"COALESCE({', '.join(reversed(values))})")
        names = ", ".join(["hdr", "rec"] + [q(key) for key, _ in self._columns])
        return f"INSERT INTO {LINE} ({names}) SELECT {', '.join(select)} FROM {' '.join(from_sql)}"

    def _value(self, ref: str, source: FieldDef, target: FieldDef) -> str:
        """A stored source value as the target column stores it, blank as NULL."""
        if target.type.is_numeric:
            shift = (target.scale or 0) - (source.scale or 0)
            return f"({ref} * {10 ** shift})" if self.sqlite and shift else ref
        if target.type is FieldType.DATE:
            return ref
        return f"NULLIF({ref}, '')"

    def _kind(self, fdef: FieldDef) -> str:
        if fdef.type.is_numeric:
            return "INTEGER" if self.sqlite else "NUMERIC"
        return "DATE" if fdef.type is FieldType.DATE and not self.sqlite else "TEXT"

    def _create_temps(self, conn: sa.Connection) -> None:
        self._drop_temps(conn)
        big = "INTEGER" if self.sqlite else "BIGINT"
        cols = ", ".join(f"{self.q(key)} {self._kind(c.target)}" for key, c in self._columns)
        tax_cols = "".join(f", {self.q(f)} TEXT" for f in self.setplan.tax_fields)
        rate = "INTEGER" if self.sqlite else "NUMERIC"
        temp = "TEMP TABLE"
        for sql in (
            f"CREATE {temp} {SRC} (record_id {big} PRIMARY KEY, grp {big} NOT NULL, hkey {big} NOT NULL)",
            f"CREATE {temp} {LINE} (rec {big} PRIMARY KEY, hdr {big} NOT NULL{', ' + cols if cols else ''})",
            f"CREATE {temp} {TAX} (hkey {big} NOT NULL{tax_cols}, rate {rate}, code TEXT, rule TEXT, cat TEXT)",
            f"CREATE {temp} {GRP} (grp {big} PRIMARY KEY, inv {big} NOT NULL, off {big} NOT NULL, "
            f"first {big} NOT NULL, cnt {big} NOT NULL)",
            # SQLite numbers the lines by the rowid ``seq`` (see setplan.order_lines).
            f"CREATE {temp} {ORD} (seq INTEGER PRIMARY KEY, grp INTEGER NOT NULL, rec INTEGER NOT NULL)"
            if self.sqlite else f"CREATE {temp} {ORD} (rn {big} PRIMARY KEY, rec {big} NOT NULL, pos {big} NOT NULL)",
        ):
            conn.exec_driver_sql(sql)

    def _drop_temps(self, conn: sa.Connection) -> None:
        for name in (SRC, LINE, TAX, GRP, ORD):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    def _insert(self, conn: sa.Connection, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        """Fill a temporary table (``columns``: unquoted names): one
        ``executemany`` on SQLite, COPY on PostgreSQL (psycopg's
        ``executemany`` has the server parse and execute one INSERT per row:
        0.65 s of a 100k-line run for ``mb_set_src`` alone)."""
        if not rows:
            return
        if not self.sqlite:
            copy_rows(conn, table, columns, rows)
            return
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(self.q(c) for c in columns)}) VALUES "
                             f"({', '.join('?' for _ in columns)})", rows)

    def _half_up(self, value: str, digits: int) -> str:
        """``value`` (an integer at some scale) rounded half away from zero by
        ``digits`` decimal places (SQLite's integer division truncates)."""
        if digits <= 0:
            return f"({value}) * {10 ** -digits}"
        d = 10 ** digits
        return f"(CASE WHEN ({value}) >= 0 THEN (({value}) + {d // 2}) / {d} ELSE -((-({value}) + {d // 2}) / {d}) END)"

    def _amounts(self) -> tuple[str, str, str]:
        """SQL of a staged line's quantity, net and tax (``l`` the staged
        line, ``t`` its tax decision), exactly as ``build._amounts`` computes
        them per line: net = round(quantity × unit price), tax = round(net ×
        rate / 100), both half away from zero to cents."""
        q = self.q
        one = 10 ** self._scale("quantity") if self.sqlite else 1
        qty = f"COALESCE(l.{q('quantity')}, {one})" if self.setplan.column("quantity") else str(one)
        if self.sqlite:
            net = self._half_up(f"{qty} * l.{q('unitprice')}", self._scale("quantity") + self._scale("unitprice") - 2)
            return qty, net, self._half_up(f"{net} * t.rate", self._scale("taxrate") + 2)
        net = f"ROUND({qty} * l.{q('unitprice')}, 2)"
        return qty, net, f"ROUND({net} * t.rate / 100, 2)"

    def _lines_from(self, ordered: bool) -> str:
        """FROM clause of the staged lines with their group and tax decision;
        ``ordered`` drives it from ``mb_set_ord`` (see :func:`~engine.billing.setplan.order_lines`)
        and adds the invoice (``g.inv``)."""
        q = self.q
        tax_join = "".join(f" AND COALESCE(l.{q(f)}, '') = t.{q(f)}" if self.setplan.column(f)
                           else f" AND t.{q(f)} = ''" for f in self.setplan.tax_fields)
        lines = f"{ORD} o JOIN {LINE} l ON l.rec = o.rec" if ordered else f"{LINE} l"
        groups = f" JOIN {GRP} g ON g.grp = s.grp" if ordered else ""
        return f"{lines} JOIN {SRC} s ON s.record_id = l.hdr{groups} JOIN {TAX} t ON t.hkey = s.hkey{tax_join}"

    # -- one batch ---------------------------------------------------------------------

    def prepare(self, conn: sa.Connection, sources: list[SourceHeader], failures: list[RecordFailure]) -> Prepared:
        """Stage ``sources`` (evaluated headers, without lines) in SQL up to
        the invoices' totals; nothing is written yet. The result names the
        record ids the caller bills on the Python path instead (``fallback``):
        their drafts go back to :meth:`finish`, which writes both kinds in
        group key order."""
        groups: dict[tuple, list[SourceHeader]] = defaultdict(list)
        for source in sources:
            groups[source.group_key()].append(source)
        self.accounts.load(conn, (group[0].account_id for group in groups.values()))
        finals = (s.assignment_key for group in groups.values() for s in group if s.invoice_type == FINAL_TYPE)
        subs = open_sub_invoices(conn, self.ctx, finals)  # type: ignore[arg-type]
        prepared = Prepared()
        drafts: list[tuple[tuple, DraftInvoice]] = []
        for key in sorted(groups):
            group = groups[key]
            first = group[0]
            if first.invoice_type == DEPOSIT_TYPE or subs.get((first.account_id, first.assignment_key)):  # type: ignore[arg-type]
                prepared.fallback.extend(s.record_id for s in group)
                continue
            header = self._draft_header(group)
            if header.get("grossinvoice"):
                prepared.fallback.extend(s.record_id for s in group)
                continue
            drafts.append((key, DraftInvoice(header, [], list(group))))
        if drafts:
            self._create_temps(conn)
            prepared.staged = True
            self._stage_drafts(conn, drafts, prepared, failures)
        return prepared

    def _draft_header(self, group: Sequence[SourceHeader]) -> dict:
        first = group[0]
        return draft_header(self.run, group, self.accounts.record(first.account_id),
                            self.accounts.copies(first.account_id))

    def _stage_drafts(self, conn: sa.Connection, drafts: list[tuple[tuple, DraftInvoice]], prepared: Prepared,
                      failures: list[RecordFailure]) -> None:
        hkeys: dict[tuple, int] = {}
        representative: dict[int, dict] = {}
        src_rows = []
        for grp, (key, draft) in enumerate(drafts):
            hkey = hkeys.setdefault(self._tax_context(draft.header), len(hkeys))
            representative.setdefault(hkey, draft.header)
            src_rows.extend((s.record_id, grp, hkey) for s in draft.sources)
            prepared.keys[grp] = key
        self._insert(conn, SRC, ("record_id", "grp", "hkey"), src_rows)
        staged = self._stage_lines(conn)
        live = prepared.live
        live.update((grp, draft) for grp, (_, draft) in enumerate(drafts))  # group number -> draft, in key order
        suspects, refused = self._suspects(conn, staged)
        refused = {record_id: found for record_id, found in refused.items() if found[0] not in suspects}
        if refused:
            suspects |= self._refuse(conn, live, refused, failures, hkeys, representative)
            prepared.refused.extend(sorted(refused))
        prepared.fallback.extend(self._drop(conn, live, suspects | self._decide_tax(conn, representative)))
        kept = {id(d) for d in self.writer.check_references(conn, list(live.values()), failures)}
        self._drop(conn, live, {grp for grp, d in live.items() if id(d) not in kept})  # their errors are reported
        if live:
            prepared.counts = self._totals(conn, live)

    def finish(self, conn: sa.Connection, prepared: Prepared, python: list[tuple[tuple, DraftInvoice]],
               out: BatchOutcome) -> list[int]:
        """Write the staged drafts of ``prepared`` and the Python path's
        ``python`` drafts (``(group key, draft)``, built from its fallback,
        references checked, every value fitting its column) together, in
        group key order: invoice ids, DRAFT names, line ids and line names are
        reserved as one block each and handed out in that order, exactly as
        the Python path numbers a batch. Returns the staged drafts' record
        ids when one of their headers does not fit its column: then nothing
        was written, and the caller bills them (with the fallback) on the
        Python path, which reports which value does not fit."""
        live, counts = prepared.live, prepared.counts
        if not live and not python:
            if prepared.staged:
                self._drop_temps(conn)
            return []
        order = sorted([(prepared.keys[grp], 0, grp) for grp in live] + [(key, 1, i) for i, (key, _) in enumerate(python)])
        merged = [live[ref] if kind == 0 else python[ref][1] for _, kind, ref in order]
        merged_counts = [counts[ref] if kind == 0 else len(python[ref][1].lines) for _, kind, ref in order]
        total = sum(merged_counts)
        savepoint = conn.begin_nested()
        try:
            invoice_ids = reserve_ids(conn, self.invoice_obj.table_name, len(merged))
            line_ids = reserve_ids(conn, self.line_obj.table_name, total)
            names = reserve_autonumbers(conn, self.line_obj, total) if RowWriter(conn, self.line_obj).autonumber else []
            offsets: dict[int, int] = {}
            running = 0
            for (_, kind, ref), draft, invoice_id, count in zip(order, merged, invoice_ids, merged_counts):
                draft.header["id"] = invoice_id
                if kind == 0:
                    offsets[ref] = running
                else:
                    for line in draft.lines:
                        line["id"] = line_ids[running]
                        if names:
                            line["name"] = names[running]
                        running += 1
                    continue
                running += count
            if live:
                insert_headers(conn, self.invoice_obj, [d.header for d in live.values()])
        except (ValueOutOfRange, TextTooLong):
            # A staged header value that does not fit: the Python path finds
            # which and reports it per record (BatchWriter.write_fitting).
            savepoint.rollback()
            self._drop_temps(conn)
            return [s.record_id for d in live.values() for s in d.sources]
        savepoint.commit()
        if python:
            drafts = [draft for _, draft in python]
            insert_drafts(conn, self.invoice_obj, self.line_obj, drafts)
            self.writer.record_written(conn, drafts, BatchOutcome(), [len(d.lines) for d in drafts])
        if live:
            # ``first``: the group's first line in the staged order (1-based,
            # groups in number order), ``cnt`` its lines (see setplan.order_lines).
            rows, first = [], 1
            for grp, draft in sorted(live.items()):
                rows.append((grp, draft.header["id"], offsets[grp], first, counts[grp]))
                first += counts[grp]
            self._insert(conn, GRP, ("grp", "inv", "off", "first", "cnt"), rows)
            self._analyze(conn, GRP, TAX)
            written = [d.header["id"] for d in live.values()]
            self._insert_lines(conn, line_ids.start, names[0] if names else None, written)
            self._check_invariants(conn, min(written), max(written))
            self._claim_and_write_back(conn)
        self.writer.count_written(merged, out, merged_counts)
        # Only after success: on an error no further statement is sent (on
        # PostgreSQL it would fail in the aborted transaction and hide the
        # error), and the caller's rollback removes the temporary tables with
        # everything else (their creation is part of the transaction).
        if prepared.staged:
            self._drop_temps(conn)
        return []

    def _claim_and_write_back(self, conn: sa.Connection) -> None:
        """What :meth:`BatchWriter.record_written` does, in two statements:
        one billing claim per source record (the ``_mb_claim`` primary key
        refuses a record billed twice) and the write-back to the sources
        (``ON_Invoice<sfx>``, ``ON_LastInvoiceRun<sfx>``, the error cleared)."""
        q, plan = self.q, self.plan
        dialect = "sqlite" if self.sqlite else "postgresql"
        run_id = self.run.run_id
        conn.execute(sa.text(
            f"INSERT INTO {q(CLAIM.name)} (source_table, source_id, suffix, invoice_id, run_id) "
            f"SELECT :source_table, s.record_id, :suffix, g.inv, :run FROM {SRC} s JOIN {GRP} g ON g.grp = s.grp"
        ).bindparams(source_table=plan.header.obj.table_name, suffix=plan.suffix, run=run_id))
        wb = plan.header_writeback
        table = plan.header.obj.table_name
        modified = plan.header.obj.field("LastModifiedDate")
        stamp = to_db_converter(modified, dialect)(now_utc()) if modified else now_utc()  # type: ignore[arg-type]
        rest = (f"{q(wb['ON_LastInvoiceRun'].column_name)} = :run, {q(wb['ON_InvoiceBuildError'].column_name)} = NULL, "
                f"{q(modified.column_name if modified else 'lastmodifieddate')} = :stamp")
        if self.sqlite:
            # By id from the batch's records: SQLite would drive UPDATE ...
            # FROM from the source table, a scan that grows with the data.
            sql = (f"UPDATE {q(table)} SET {q(wb['ON_Invoice'].column_name)} = (SELECT g.inv FROM {SRC} s "
                   f"JOIN {GRP} g ON g.grp = s.grp WHERE s.record_id = {q(table)}.id), {rest} "
                   f"WHERE id IN (SELECT s.record_id FROM {SRC} s JOIN {GRP} g ON g.grp = s.grp)")
        else:
            sql = (f"UPDATE {q(table)} SET {q(wb['ON_Invoice'].column_name)} = x.inv, {rest} "
                   f"FROM (SELECT s.record_id, g.inv FROM {SRC} s JOIN {GRP} g ON g.grp = s.grp) x "
                   f"WHERE {q(table)}.id = x.record_id")
        conn.execute(sa.text(sql).bindparams(run=run_id, stamp=stamp))

    def _stage_lines(self, conn: sa.Connection) -> int | None:
        """Stage the line records of ``mb_set_src``; returns how many (None
        when the driver does not say)."""
        self._analyze(conn, SRC)
        staged = conn.exec_driver_sql(self._stage_sql).rowcount
        # The row count and the join keys are what the plans need; statistics
        # of every value column cost ten times as much (0.2 s of a 100k-line run).
        self._analyze(conn, f"{LINE} (rec, hdr)")
        return staged if staged is not None and staged >= 0 else None

    def _analyze(self, conn: sa.Connection, *tables: str) -> None:
        """PostgreSQL plans the next statements with the temporary tables'
        real sizes (it never analyzes temporary tables by itself)."""
        if not self.sqlite:
            conn.exec_driver_sql(f"ANALYZE {', '.join(tables)}")

    def _drop(self, conn: sa.Connection, live: dict[int, DraftInvoice], groups: set[int]) -> list[int]:
        """Take the groups ``groups`` out of ``live`` and the temporary
        tables; returns their record ids."""
        groups = groups & set(live)
        if not groups:
            return []
        # One statement each (the group numbers are our own integers, written
        # as literals): a statement per group scanned both tables per group.
        listed = ", ".join(str(int(grp)) for grp in sorted(groups))
        conn.exec_driver_sql(f"DELETE FROM {LINE} WHERE hdr IN (SELECT record_id FROM {SRC} WHERE grp IN ({listed}))")
        conn.exec_driver_sql(f"DELETE FROM {SRC} WHERE grp IN ({listed})")
        return [s.record_id for grp in sorted(groups) for s in live.pop(grp).sources]

    def _tax_context(self, header: dict) -> tuple:
        """What of a draft header the tax rules read (its ``hkey``)."""
        return tuple(map(header.get, self.header_tax_fields))

    def _refuse(self, conn: sa.Connection, live: dict[int, DraftInvoice], refused: dict[int, tuple[int, str]],
                failures: list[RecordFailure], hkeys: dict[tuple, int], representative: dict[int, dict]) -> set[int]:
        """The header records of ``refused`` (record id -> (group, record
        error)) fail as the Python path fails them, and leave their groups:
        the rest of a group is billed here without them, as the Python path
        bills it. The header of a group that lost records is drafted again
        from the records left (its ON copies and first record may differ);
        returns the groups that must go to the Python path after all (a
        header that turned gross)."""
        listed = ", ".join(str(int(record_id)) for record_id in sorted(refused))
        conn.exec_driver_sql(f"DELETE FROM {LINE} WHERE hdr IN ({listed})")
        conn.exec_driver_sql(f"DELETE FROM {SRC} WHERE record_id IN ({listed})")
        name = self.plan.header.obj.name
        failures.extend(RecordFailure(name, record_id, refused[record_id][1]) for record_id in sorted(refused))
        moved: list[tuple[int, int]] = []
        gross: set[int] = set()
        for grp in sorted({grp for grp, _ in refused.values()}):
            draft = live[grp]
            draft.sources = [s for s in draft.sources if s.record_id not in refused]
            if not draft.sources:
                del live[grp]
                continue
            draft.header = self._draft_header(draft.sources)
            if draft.header.get("grossinvoice"):
                gross.add(grp)
            context = self._tax_context(draft.header)
            hkey = hkeys.get(context)
            if hkey is None:
                hkey = hkeys[context] = len(hkeys)
                representative[hkey] = draft.header
            moved.append((hkey, grp))
        # The groups' tax context, should the records left give another one
        # (an ON copy of the header that only a refused record had).
        self._update_hkeys(conn, moved)
        return gross

    def _update_hkeys(self, conn: sa.Connection, moved: list[tuple[int, int]]) -> None:
        if moved:
            mark = "?" if self.sqlite else "%s"
            conn.exec_driver_sql(f"UPDATE {SRC} SET hkey = {mark} WHERE grp = {mark} AND hkey <> {mark}",
                                 [(hkey, grp, hkey) for hkey, grp in moved])

    def _suspects(self, conn: sa.Connection, staged: int | None) -> tuple[set[int], dict[int, tuple[int, str]]]:
        """Groups with a line the set path cannot take (a value beyond its
        column or the SQL amounts' bounds, too many lines for the sequence)
        or a header without lines, for the Python path; and the header
        records the Python path refuses for an empty title or price of a
        line, with their group and record error (see :meth:`_refused`).
        ``staged``: the number of lines staged, if known."""
        q = self.q
        tests = []
        for key, column in self._columns:
            target, ref = column.target, f"l.{q(key)}"
            if target.type.is_numeric:
                units = AMOUNT_BOUND if key in ("quantity", "unitprice") \
                    else 10 ** ((target.precision or 18) - (target.scale or 0))
                bound = units * 10 ** (target.scale or 0) if self.sqlite else units
                tests.append(f"ABS({ref}) >= {bound}")
            elif target.type is not FieldType.DATE:
                length = target.length or (4000 if target.type is FieldType.LONGTEXT else 255)
                tests.append(f"{'LENGTH' if self.sqlite else 'CHAR_LENGTH'}({ref}) > {length}")
        if not all(self.setplan.column(key) for key in ("title", "unitprice")):
            tests.append("1 = 1")
        found: set[int] = set()
        joined = f"FROM {LINE} l JOIN {SRC} s ON s.record_id = l.hdr"
        if tests:
            # A filter, not a grouping: only the few lines that fail a test are sorted.
            found.update(conn.exec_driver_sql(
                f"SELECT DISTINCT s.grp {joined} WHERE {' OR '.join(tests)}").scalars())
        sequence = self._field("sequence")
        most = 10 ** ((sequence.precision or 18) - (sequence.scale or 0))
        if staged is None or staged >= most:
            # More lines than InvoiceLineItem.Sequence can number: only
            # possible when the batch staged that many lines in all.
            found.update(conn.exec_driver_sql(
                f"SELECT s.grp {joined} GROUP BY s.grp HAVING COUNT(*) >= {most}").scalars())
        empty = conn.exec_driver_sql(
            f"SELECT DISTINCT grp FROM {SRC} WHERE record_id NOT IN (SELECT hdr FROM {LINE})"
        ).scalars().all()
        return found | set(empty), self._refused(conn)

    def _refused(self, conn: sa.Connection) -> dict[int, tuple[int, str]]:
        """Header records with a line of an empty title or price: record id
        -> (group, the record error the Python path writes). Python stops at
        the record's first such line (lines in id order) and names its
        title before its price. Only meaningful for groups without other
        suspects: there no line has a value Python refuses first."""
        if not all(self.setplan.column(key) for key in ("title", "unitprice")):
            return {}  # every group is a suspect then
        q = self.q
        rows = conn.exec_driver_sql(
            f"SELECT l.hdr, s.grp, CASE WHEN l.{q('title')} IS NULL THEN 1 ELSE 0 END FROM {LINE} l "
            f"JOIN {SRC} s ON s.record_id = l.hdr WHERE l.{q('title')} IS NULL OR l.{q('unitprice')} IS NULL "
            f"ORDER BY l.hdr, l.rec").all()
        level = self.plan.line
        messages = {1: f"{level.field('ON_Title').name} is empty",  # type: ignore[union-attr]
                    0: f"{level.field('ON_UnitPrice').name} is empty"}  # type: ignore[union-attr]
        refused: dict[int, tuple[int, str]] = {}
        for record_id, grp, title in rows:
            if record_id not in refused:
                refused[record_id] = (grp, messages[int(title)])
        return refused

    def _decide_tax(self, conn: sa.Connection, headers: dict[int, dict]) -> set[int]:
        """Tax per distinct (header context, line context), decided in Python
        and stored in ``mb_set_tax``; returns the groups no rule decides."""
        q = self.q
        fields = self.setplan.tax_fields
        present = [f for f in fields if self.setplan.column(f)]
        values = "".join(f", COALESCE(l.{q(f)}, '')" for f in present)
        rows = conn.exec_driver_sql(
            f"SELECT DISTINCT s.hkey{values} FROM {LINE} l JOIN {SRC} s ON s.record_id = l.hdr").all()
        rate_out = to_db_converter(self._field("taxrate"), "sqlite" if self.sqlite else "postgresql")
        decided, failed = [], []
        deciders = {hkey: self.run.tax.for_header(header) for hkey, header in headers.items()}
        when = self.run.period_start
        for row in rows:
            line = {f: (row[1 + present.index(f)] or None) if f in present else None for f in fields}
            try:
                decision = deciders[row[0]](line, when)
                if abs(decision.rate) >= RATE_BOUND:
                    raise TaxError("tax rate beyond the set path's bound")
            except TaxError:
                failed.append(row)
                continue
            decided.append((row[0], *(line[f] or "" for f in fields), rate_out(decision.rate),
                            decision.code or None, decision.rule or None, decision.category))
        self._insert(conn, TAX, ("hkey", *fields, "rate", "code", "rule", "cat"), decided)
        if not failed:
            return set()
        unmatched = "".join(f" AND COALESCE(l.{q(f)}, '') = t.{q(f)}" if f in present else f" AND t.{q(f)} = ''"
                            for f in fields)
        return set(conn.exec_driver_sql(
            f"SELECT DISTINCT s.grp FROM {LINE} l JOIN {SRC} s ON s.record_id = l.hdr WHERE NOT EXISTS "
            f"(SELECT 1 FROM {TAX} t WHERE t.hkey = s.hkey{unmatched})").scalars().all())

    def _totals(self, conn: sa.Connection, live: dict[int, DraftInvoice]) -> dict[int, int]:
        """Each draft's totals (the sums of its lines' amounts), class and
        service period; returns the line count of each group."""
        _, net_sql, tax_sql = self._amounts()
        rows = conn.exec_driver_sql(
            f"SELECT s.grp, COUNT(*), SUM({net_sql}), SUM({tax_sql}) FROM {self._lines_from(False)} GROUP BY s.grp").all()
        counts = dict.fromkeys(live, 0)
        for grp, count, net, tax in rows:
            net, tax = self._money(net), self._money(tax)
            header = live[grp].header
            counts[grp] = count
            header["totalnet"], header["totaltax"], header["grandtotal"] = net, tax, net + tax
            header["class"] = "Invoice" if header["grandtotal"] >= 0 else "Credit"
            header["serviceperiodstart"], header["serviceperiodend"] = self.run.period_start, self.run.period_end
        if not all(counts.values()):
            raise InvariantError("an invoice needs at least one line")
        return counts

    def _money(self, value: object) -> Decimal:
        if self.sqlite:
            return scaled_to_decimal(int(value), 2)  # type: ignore[call-overload]
        return Decimal(value).quantize(CENT) if value is not None else ZERO  # type: ignore[arg-type]

    def _insert_lines(self, conn: sa.Connection, base: int, first_name: str | None, invoice_ids: list[int]) -> None:
        """The staged lines into InvoiceLineItem: one INSERT ... SELECT. The
        batch's line ids and AutoNumber names were reserved as one block
        (starting at ``base`` and ``first_name``); a staged line takes the
        one of its number in the batch (``mb_set_ord.rn``, counted in group
        key order over the Python fallback's lines too)."""
        q, obj = self.q, self.line_obj
        dialect = "sqlite" if self.sqlite else "postgresql"
        writer = RowWriter(conn, obj)
        params: dict[str, object] = {"base": base}
        rn, pos, order, within, expected = order_lines(conn, self.sqlite, self._analyze)
        columns: list[tuple[str, str]] = [("id", f":base + {rn} - 1")]
        if writer.autonumber is not None:
            assert first_name is not None
            fmt = writer.autonumber.autonumber_format or ""
            head, tail = fmt.split("{", 1)[0], fmt.rsplit("}", 1)[-1]
            width = len(fmt) - len(head) - len(tail) - 2
            params.update(first=int(first_name[len(head):len(first_name) - len(tail) or None]), head=head, tail=tail)
            number = f"(:first + {rn} - 1)"
            digits = f"printf('%0{width}d', {number})" if self.sqlite else \
                f"CASE WHEN LENGTH({number}::text) >= {width} THEN {number}::text ELSE LPAD({number}::text, {width}, '0') END"
            columns.append((writer.autonumber.column_name, f":head || {digits} || :tail"))
        stamp = now_utc()
        for name in ("createddate", "lastmodifieddate"):
            field = obj.field(name)
            params[name] = to_db_converter(field, dialect)(stamp) if field else stamp  # type: ignore[arg-type]
            columns.append((field.column_name if field else name, f":{name}"))
        for key, value in (("serviceperiodstart", self.run.period_start), ("serviceperiodend", self.run.period_end),
                           ("sourceobject", self.plan.line.obj.name)):
            params[key] = to_db_converter(self._field(key), dialect)(value)
            columns.append((self._field(key).column_name, f":{key}"))
        qty, net, tax = self._amounts()
        price = f"l.{q('unitprice')}"
        computed = {
            "invoice": "g.inv", "sequence": pos, "quantity": qty, "unitprice": price, "unitpricenet": price,
            "postotalnet": net, "postotaltax": tax, "postotalgross": f"{net} + {tax}", "taxrate": "t.rate",
            "taxcode": "t.code", "appliedtaxrule": "t.rule", "vatcategorycode": "t.cat",
            "sourcerecordid": "CAST(l.rec AS TEXT)",
        }
        defaults = {key: (convert, default) for _, key, convert, default in writer.columns if default is not None}
        for key, _ in self._columns:
            if key in computed:
                continue
            computed[key] = f"l.{q(key)}"
            if key in defaults:  # a blank copy leaves the field to its default, as RowWriter writes it
                params[f"d_{key}"] = defaults[key][0](defaults[key][1])
                computed[key] = f"COALESCE(l.{q(key)}, :d_{key})"
        for key, expression in computed.items():
            columns.append((self._field(key).column_name, expression))
        written = {key for key in computed} | {"serviceperiodstart", "serviceperiodend", "sourceobject", "id", "name",
                                               "createddate", "lastmodifieddate"}
        for column, key, convert, default in writer.columns:
            if key not in written and default is not None:
                params[f"d_{key}"] = convert(default)
                columns.append((column, f":d_{key}"))
        sql = (f"INSERT INTO {q(obj.table_name)} ({', '.join(q(c) for c, _ in columns)}) "
               f"SELECT {', '.join(e for _, e in columns)} FROM {self._lines_from(True)}"
               f"{' WHERE ' + within if within else ''} ORDER BY {order}")
        # A line outside its group's numbering range, or one without its tax
        # decision, fails the batch rather than being written misnumbered or not at all.
        insert_selected_lines(conn, self.invoice_obj.table_name, invoice_ids, sa.text(sql).bindparams(**params),
                              expected)

    def _check_invariants(self, conn: sa.Connection, low: int, high: int) -> None:
        """check_invoice on the written rows of the batch, one query: each of
        the batch's invoices (their ids lie between ``low`` and ``high``) read
        by its key, its lines by the index on the invoice.

        The statement differs by database because the planners do: SQLite
        reads the id range of the invoice table and tests membership in
        ``mb_set_grp`` by an index it builds for the IN list; PostgreSQL is
        driven by ``mb_set_grp`` (analyzed), because the invoice table's
        statistics lag behind a run that is filling it, and a range planned
        as one row re-scanned the batch's groups for every invoice
        (quadratic in the batch: 0.69 s of a 100k-line run, now 0.17 s)."""
        q = self.q
        inv, line = self.invoice_obj, self.line_obj

        def col(obj, name: str) -> str:
            return q(obj.field(name).column_name)

        net, tax, gross = col(line, "PosTotalNet"), col(line, "PosTotalTax"), col(line, "PosTotalGross")
        tn, tt, tg = col(inv, "TotalNet"), col(inv, "TotalTax"), col(inv, "GrandTotal")
        lines = f"LEFT JOIN {q(line.table_name)} l ON l.{col(line, 'Invoice')} = i.id"
        batch = (f"FROM {q(inv.table_name)} i {lines} WHERE i.id BETWEEN {int(low)} AND {int(high)} "
                 f"AND i.id IN (SELECT inv FROM {GRP})" if self.sqlite
                 else f"FROM {GRP} g JOIN {q(inv.table_name)} i ON i.id = g.inv {lines}")
        broken = conn.exec_driver_sql(
            f"SELECT i.id {batch} "
            f"GROUP BY i.id, i.{tn}, i.{tt}, i.{tg} "
            f"HAVING COUNT(l.id) = 0 OR SUM(CASE WHEN l.{gross} = l.{net} + l.{tax} THEN 0 ELSE 1 END) > 0 "
            f"OR i.{tn} <> SUM(l.{net}) OR i.{tt} <> SUM(l.{tax}) OR i.{tg} <> SUM(l.{gross}) "
            f"OR i.{tg} <> i.{tn} + i.{tt} OR i.{tn} IS NULL OR i.{tt} IS NULL OR i.{tg} IS NULL LIMIT 1").first()
        if broken is not None:
            raise InvariantError(f"invoice {broken[0]}: totals differ from the sums of its lines")

