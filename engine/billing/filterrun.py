"""One filter of an invoice run, in two passes.

**Pass 1** (:meth:`FilterRun.evaluate`) selects the unbilled header records
of the filter's target (``ON_Invoice<sfx>`` empty, the filter's condition
compiled to SQL), reads them as plain records and evaluates them
(:mod:`engine.billing.evaluate`); records that cannot be billed get their
error written, the others are returned as ``(group key, record id)``
sorted by key.

**Pass 2** (:meth:`FilterRun.bill`) cuts the sorted records into batches
without splitting a group; each batch re-reads its records inside its write
transaction (so a record billed meanwhile is skipped; one whose row is
unchanged keeps its evaluation from pass 1, one changed meanwhile is
evaluated again), reads the line records, builds one invoice per group
(:mod:`engine.billing.build`) and writes everything in that same
transaction (:mod:`engine.billing.writing`). A crash loses at most the
batch in flight, and the next run bills exactly what is left.

The workers of ``invoice-run --workers`` run the same passes on parts of the
records (:mod:`engine.billing.workers`).
"""

from __future__ import annotations

import decimal
import gc
import os
from collections import defaultdict
from contextlib import contextmanager
from datetime import date
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from engine.domain.batching import chunks
from engine.domain.values import field_paths
from engine.storage.context import Context
from engine.storage.reader import RecordReader

from .build import FINAL_TYPE, BuildError, DraftInvoice, RunFacts, SourceHeader, build_invoice
from .condition.sql import compile_condition
from .evaluate import SourceEvaluator, Unbillable, split_by_line_criterion
from .keyorder import SortedKeys
from .plan import FilterPlan
from .report import FilterReport, InvoiceSummary, Progress, RecordFailure
from .runrecord import lock_class
from .session import RunSession
from .setplan import plan_set
from .setrun import SetBatchWriter
from .subinvoices import open_sub_invoices
from .writing import ID_CHUNK, BatchOutcome, BatchWriter

# Header records whose accounts are resolved together (one query per kind of
# lookup instead of up to three per account).
ACCOUNT_PREFETCH = 2000
#: Decimal digits while a batch is built: the product of two 18-digit column
#: values and a tax rate is exact, so only the column checks decide what fits.
BUILD_PRECISION = 60
#: Evaluated headers pass 1 keeps for pass 2 (about 1 kB each); beyond, pass 2
#: evaluates a header again. Bounds the run's memory (issue 19).
EVALUATED_KEPT = 25_000
#: Account records cached before the cache is emptied and refilled as
#: needed (each is read again at most once per prefetch chunk or batch).
ACCOUNTS_KEPT = 20_000
#: Invoices a filter's run lists in its report (``RunReport.invoices``, the
#: ``--show-invoices`` table); the counts always cover all. About 400 bytes
#: per invoice listed: the last part of a run's memory that grew with its size.
LISTED_INVOICES = 10_000
#: Header ids per re-read statement of the set path (well below the bound
#: parameters either database takes in one statement).
REREAD_CHUNK = 5_000
#: How a batch evaluates its line records: ``python`` (every record in
#: Python) or ``set`` (lines in SQL where the filter allows it, see
#: :mod:`engine.billing.setrun`; the rest falls back to Python).
EVALUATIONS = ("python", "set")
#: The evaluation when neither the caller nor ``METABILL_EVALUATION`` names one:
#: ``set`` since both paths number a batch alike (``tests/billing`` and
#: ``tests/booking`` pass with either, on SQLite and PostgreSQL).
DEFAULT_EVALUATION = "set"
#: Header controlling fields the run writes, never reads to evaluate a record.
WRITEBACK_BASES = ("ON_Invoice", "ON_LastInvoiceRun", "ON_InvoiceBuildError")
#: Controlling fields only a record's line reads (single-object mode).
LINE_ONLY_BASES = ("ON_Title", "ON_Quantity", "ON_UnitPrice")
# Advisory lock keys are 32-bit: account ids are folded into that range.
_INT4 = 2**31 - 1

T = TypeVar("T")


class FilterRun:
    """The run of one filter plan within an invoice run; see the module docstring."""

    def __init__(self, session: RunSession, ctx: Context, plan: FilterPlan, run: RunFacts, today: date,
                 batch_size: int, progress: Progress | None, evaluation: str | None = None):
        self.session = session
        self.ctx = ctx
        self.plan = plan
        self.run = run
        self.today = today
        self.batch_size = max(1, batch_size)
        self.progress = progress
        self.report = FilterReport(plan.name)
        self.summaries: list[InvoiceSummary] = []
        self.header_table = ctx.table(plan.header.obj.name)
        self.accounts = session.account_cache(ctx, today)
        self.sources = SourceEvaluator(ctx, plan, self.accounts, (run.period_start, run.period_end), today)
        self.writer = BatchWriter(ctx, plan, run.run_id, self.sources.reference_targets())
        #: ``python`` or ``set`` (see EVALUATIONS); with ``set``, why the
        #: filter still runs in Python (empty when it does not).
        self.evaluation = evaluation or default_evaluation()
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation must be one of {', '.join(EVALUATIONS)}, not {self.evaluation!r}")
        self.set_reasons: list[str] = []
        self.set_writer: SetBatchWriter | None = None
        if self.evaluation == "set":
            line_fields = tuple(c.context_field.lower() for c in run.tax.criteria
                                if c.context_object.lower() == "invoicelineitem")
            setplan = plan_set(ctx, plan, line_fields, run.rounding)
            self.set_reasons = list(setplan.reasons)
            if setplan.eligible:
                self.set_writer = SetBatchWriter(ctx, plan, setplan, run, self.accounts, self.writer, session.dialect)
        # Pass 1's evaluated headers with the rows they came from (see
        # _current_header), until their batch is built; at most EVALUATED_KEPT.
        self._evaluated: dict[int, tuple[Sequence[object], SourceHeader]] = {}
        # The set path's re-read statement and id column, as SQL (see _current_headers).
        self._reread: tuple[str, str] | None = None
        # The run reads exactly the fields its getters and formulas need
        # (plus the header's own CurrencyIsoCode, a currency fallback), not
        # every column of the source objects.
        dialect = session.dialect
        header_paths = plan.header.paths()
        currency_field = plan.header.obj.field("CurrencyIsoCode")
        if currency_field is not None and currency_field.is_stored:
            header_paths = header_paths | {(currency_field.key,)}
        self._header_reader = RecordReader(ctx.model, ctx.metadata, plan.header.obj, header_paths, dialect,
                                           all_fields=False)
        # Pass 1 and the set path's re-read only evaluate headers: they read
        # no write-back field and, in single-object mode, none of the fields
        # only its line reads (a third of a delivery's columns); the Python
        # path reads the record whole, as a line too.
        self._key_reader = self._header_reader
        if self.set_writer is not None:
            self._key_reader = RecordReader(ctx.model, ctx.metadata, plan.header.obj,
                                            self._evaluation_paths(currency_field), dialect, all_fields=False)
        self._child_reader: RecordReader | None = None
        if not plan.single:
            child_paths = plan.line.paths() | {(plan.child_lookup.key,)}  # type: ignore[union-attr]
            self._child_reader = RecordReader(ctx.model, ctx.metadata, plan.line.obj, child_paths, dialect,
                                              all_fields=False)

    def _evaluation_paths(self, currency_field) -> set[tuple[str, ...]]:
        """What evaluating a header record (:meth:`SourceEvaluator.header`)
        reads: its controlling fields but the write-back ones and, in
        single-object mode, those of its line; its ON copies to the invoice;
        its own CurrencyIsoCode."""
        plan = self.plan
        level = plan.header
        skipped = set(WRITEBACK_BASES) | (set(LINE_ONLY_BASES) if plan.single else set())
        fields = [fdef for base, fdef in level.controls.items() if base not in skipped]
        fields += [source for source, _, target in level.copies if target == "Invoice"]
        paths: set[tuple[str, ...]] = {("id",)}
        for fdef in fields:
            paths |= field_paths(fdef)
        if currency_field is not None and currency_field.is_stored:
            paths.add((currency_field.key,))
        return paths

    # -- selection ----------------------------------------------------------------

    def _unbilled(self) -> sa.ColumnElement[bool]:
        column = self.header_table.c[self.plan.header_writeback["ON_Invoice"].column_name]
        return column.is_(None)

    def _condition(self) -> sa.ColumnElement[bool] | None:
        if self.plan.condition is None:
            return None
        where, source = compile_condition(self.plan.condition, self.ctx, self.header_table, today=self.today)
        matching = sa.select(self.header_table.c.id).select_from(source).where(where)
        return self.header_table.c.id.in_(matching.scalar_subquery())

    # -- the passes -----------------------------------------------------------------

    def execute(self) -> FilterReport:
        """Both passes in this process. What pass 1 leaves alive for pass 2
        (its evaluations, keys, accounts) is kept out of the cyclic
        collector's sight until pass 2 is done (:func:`pass_one_frozen`)."""
        with pass_one_frozen(self.evaluate) as keyed, keyed:
            self.bill(keyed)
        return self.report

    def evaluate(self, partition: tuple[int, int] | None = None) -> SortedKeys:
        """Pass 1: select and evaluate the unbilled header records; write the
        errors of those that cannot be billed. Returns ``(group key, record
        id)`` of the rest, iterated sorted by key (close it when done).
        ``partition=(i, n)`` evaluates only the records with ``id % n == i``
        (workers share pass 1 that way).

        Memory stays bounded: the records stream from the database, the
        keys spill to a scratch file beyond :data:`keyorder.KEYS_IN_MEMORY`,
        at most :data:`EVALUATED_KEPT` evaluations are kept for pass 2 and
        the account cache is emptied beyond :data:`ACCOUNTS_KEPT`."""
        header_reader = self._key_reader
        where = self._unbilled()
        condition = self._condition()
        if condition is not None:
            where = sa.and_(where, condition)
        if partition is not None:
            index, count = partition
            where = sa.and_(where, self.header_table.c.id % count == index)
        keyed = SortedKeys()
        failures: list[RecordFailure] = []
        with self.session.read() as conn, cyclic_gc_paused(), exact_arithmetic():
            rows = header_reader.read_with_rows(conn, where=where, order_by=[self.header_table.c.id])
            for chunk in _batched(rows, ACCOUNT_PREFETCH):
                if len(self.accounts) > ACCOUNTS_KEPT:
                    self.accounts.forget()
                raws = [self.sources.raw_account(record) for _, record in chunk]
                self.accounts.prefetch(conn, raws)
                for (row, record), raw in zip(chunk, raws):
                    try:
                        source = self.sources.header(conn, record, raw)
                    except (Unbillable, ArithmeticError) as error:
                        self.report.records_read += 1
                        failures.append(self._header_failure(record, error))
                        continue
                    if source is None:
                        continue
                    self.report.records_read += 1
                    keyed.add(source.group_key(), record["id"])
                    if len(self._evaluated) < EVALUATED_KEPT:
                        # A plain tuple: pass 2 compares it with the row it reads again.
                        self._evaluated[record["id"]] = (tuple(row), source)
                if len(failures) >= ACCOUNT_PREFETCH:
                    self._write_failures(failures)
                    failures = []
        if failures:
            self._write_failures(failures)
        return keyed

    def _header_failure(self, record: dict, error: Exception) -> RecordFailure:
        """The record error of a header record that cannot be billed: the
        reason it gave (:class:`Unbillable`), or arithmetic that failed."""
        message = error.message if isinstance(error, Unbillable) else _incomputable(error)  # type: ignore[arg-type]
        return RecordFailure(self.plan.header.obj.name, record["id"], message)

    def _write_failures(self, failures: list[RecordFailure]) -> None:
        """Pass 1's record errors, in a write transaction of their own."""
        self._apply(self.session.write(lambda conn: self.writer.write_failures(conn, failures, BatchOutcome())))

    def bill(self, keyed: Iterable[tuple[tuple, int]], total: int | None = None) -> None:
        """Pass 2: build and write the records of ``keyed`` (sorted by group
        key; iterated once, so it may stream) batch by batch, one
        transaction each; ``total`` is the number of records, for progress
        (default: ``len(keyed)`` when it has a length).

        On PostgreSQL, where other processes may bill the same data at the
        same time, a batch first claims the accounts it bills (advisory locks,
        see :meth:`claim_accounts`); records of an account another process
        is billing right now are left out, so that both keep working, and
        after the last batch they are tried once more, waiting for the other
        process this time: by then it has billed them (the re-read skips
        them), or it failed and they are billed here."""
        if total is None and hasattr(keyed, "__len__"):
            total = len(keyed)  # type: ignore[arg-type]
        done = 0
        # The records of accounts another process was billing (few: only
        # contended accounts), tried again at the end.
        deferred: list[tuple[tuple, int]] = []
        for wait, items in ((False, keyed), (True, None)):
            if items is None:
                if not deferred:
                    break
                items = deferred
            for batch in self._batches(items):
                if len(self.accounts) > ACCOUNTS_KEPT:
                    self.accounts.forget()
                outcome = self.session.write(lambda conn: self._process(conn, batch, wait))
                self._apply(outcome)
                if outcome.skipped and not wait:
                    skipped = set(outcome.skipped)
                    deferred.extend(item for item in batch if item[1] in skipped)
                done += len(batch) - len(outcome.skipped)
                if self.progress:
                    self.progress(self.plan.name, done, total if total is not None else done)
        self._evaluated.clear()  # records billed by someone else meanwhile

    def _apply(self, outcome: BatchOutcome) -> None:
        """Record what a committed batch did."""
        self.report.invoices += outcome.invoices
        self.report.lines += outcome.lines
        self.report.failures.extend(outcome.failures)
        room = LISTED_INVOICES - len(self.summaries)
        if room > 0:
            self.summaries.extend(outcome.summaries[:room])

    def claim_accounts(self, conn: sa.Connection, ids: list[int], wait: bool,
                       account_of: dict[int, int]) -> tuple[list[int], list[int]]:
        """PostgreSQL: take the transaction-scoped advisory lock of every
        account the batch bills, so that no two processes bill one account at
        the same time (a group, and so an invoice, never spans accounts).
        Without ``wait`` accounts locked elsewhere are skipped
        (``pg_try_advisory_xact_lock``); with it the batch queues for them.
        Locks are taken in account order and before anything else of the
        transaction, so queuing batches cannot deadlock. Returns the ids to
        bill now and the ids skipped. SQLite needs none of this: its write
        transactions run one at a time (BEGIN IMMEDIATE).

        The ``_mb_claim`` primary key stays the backstop: a record whose
        account changed since pass 1 may be billed under an account not
        locked here; the loser of such a race fails on the claim, is retried,
        and its re-read skips the record."""
        if conn.dialect.name != "postgresql" or self.session.dry_run:
            return ids, []
        accounts = sorted({account_of.get(i) for i in ids} - {None})
        if not accounts:
            return ids, []
        ordered = sa.select(sa.func.unnest(sa.literal(accounts, type_=ARRAY(sa.BigInteger))).label("a")) \
            .order_by(sa.text("1")).subquery()
        lock = sa.func.pg_advisory_xact_lock if wait else sa.func.pg_try_advisory_xact_lock
        rows = conn.execute(
            sa.select(ordered.c.a, lock(lock_class("account"), sa.cast(ordered.c.a % _INT4, sa.Integer)))
        ).all()
        if wait:
            return ids, []
        busy = {account for account, ok in rows if not ok}
        if not busy:
            return ids, []
        return ([i for i in ids if account_of.get(i) not in busy],
                [i for i in ids if account_of.get(i) in busy])

    def _batches(self, keyed: Iterable[tuple[tuple, int]]) -> Iterator[list[tuple[tuple, int]]]:
        """Consecutive groups of equal keys, cut into batches of about
        ``batch_size`` records without splitting a group. Final invoices never
        share a batch with other records: they must see the sub invoices the
        earlier batches wrote."""
        batch: list[int] = []
        previous = None
        for key, record_id in keyed:
            phase_change = previous is not None and key[0] != previous[0]
            if batch and key != previous and (len(batch) >= self.batch_size or phase_change):
                yield batch
                batch = []
            batch.append((key, record_id))
            previous = key
        if batch:
            yield batch

    # -- one batch ----------------------------------------------------------------

    def _current_header(self, conn: sa.Connection, row: Sequence[object], record: dict) -> SourceHeader | None:
        """The header as evaluated in pass 1 when its row (joined records
        included) is still the same, else evaluated afresh. Evaluation is a
        function of the row (and of the run's cached accounts, shared by both
        passes), so reusing it gives the same result without evaluating every
        header twice; a record changed in between is evaluated again."""
        remembered = self._evaluated.pop(record["id"], None)
        if remembered is not None and remembered[0] == row:
            return remembered[1]
        return self.sources.header(conn, record)

    def _process(self, conn: sa.Connection, batch: list[tuple[tuple, int]], wait: bool = True) -> BatchOutcome:
        """One batch of ``(group key, record id)``, inside its transaction:
        what it did, for :meth:`_apply` after the commit (the transaction may
        be run again)."""
        out = BatchOutcome()
        account_of = {record_id: key[1] for key, record_id in batch}
        ids, out.skipped = self.claim_accounts(conn, [record_id for _, record_id in batch], wait, account_of)
        with cyclic_gc_paused(), exact_arithmetic():
            self._build_and_write(conn, ids, out)
        return out

    def _read_batch(self, conn: sa.Connection, ids: list[int],
                    with_children: bool = True) -> tuple[list, dict[int, list[dict]]]:
        """The batch's header records still unbilled (with their rows), and
        the line records of each (parent-child mode)."""
        plan = self.plan
        headers: list[tuple[Sequence[object], dict]] = []
        for chunk in chunks(ids, ID_CHUNK):
            headers.extend(
                self._header_reader.read_with_rows(
                    conn, where=sa.and_(self.header_table.c.id.in_(chunk), self._unbilled()),
                    order_by=[self.header_table.c.id],
                )
            )
        children: dict[int, list[dict]] = defaultdict(list)
        if not plan.single and headers and with_children:
            child_table = self.ctx.table(plan.line.obj.name)
            fk = child_table.c[plan.child_lookup.column_name]  # type: ignore[union-attr]
            child_reader = self._child_reader
            assert child_reader is not None
            parent_key = plan.child_lookup.key  # type: ignore[union-attr]
            for chunk in chunks([record["id"] for _, record in headers], ID_CHUNK):
                for child in child_reader.read(conn, where=fk.in_(chunk), order_by=[fk, child_table.c.id]):
                    parent = child.get(parent_key)
                    if isinstance(parent, dict):
                        parent = parent.get("id")
                    children[parent].append(child)
        return headers, children

    def _build_and_write(self, conn: sa.Connection, ids: list[int], out: BatchOutcome) -> None:
        failures: list[RecordFailure] = []
        if self.set_writer is not None:
            ids = self._set_batch(conn, ids, out, failures)
        if ids:
            self._python_batch(conn, ids, out, failures)
        if failures:
            self.writer.write_failures(conn, failures, out)

    def _set_batch(self, conn: sa.Connection, ids: list[int], out: BatchOutcome,
                   failures: list[RecordFailure]) -> list[int]:
        """The set-based path: headers evaluated here, lines in SQL
        (:class:`~engine.billing.setrun.SetBatchWriter`); returns the ids
        of the records to bill on the Python path instead."""
        current = self._current_headers(conn, ids)
        # Only records evaluated afresh resolve their accounts here; a
        # remembered evaluation carries its account (loaded by the writer).
        self.accounts.prefetch(conn, (self.sources.raw_account(item) for item in current if isinstance(item, dict)))
        sources: list[SourceHeader] = []
        for item in current:
            if not isinstance(item, dict):
                sources.append(item)
                continue
            record = item
            try:
                source = self.sources.header(conn, record)
            except (Unbillable, ArithmeticError) as error:
                failures.append(self._header_failure(record, error))
                continue
            if source is not None:
                sources.append(source)
        writer = self.set_writer
        assert writer is not None
        mark = len(failures)
        prepared = writer.prepare(conn, sources, failures)
        python = self._fitting_drafts(conn, prepared.fallback, failures) if prepared.fallback else []
        redo = writer.finish(conn, prepared, python, out)
        if not redo:
            return []
        # A staged header that does not fit: the whole batch goes the Python
        # way, which reports again what was reported since ``mark``.
        del failures[mark:]
        return redo + prepared.refused + prepared.fallback

    def _fitting_drafts(self, conn: sa.Connection, ids: list[int],
                        failures: list[RecordFailure]) -> list[tuple[tuple, DraftInvoice]]:
        """The Python path's drafts of ``ids`` whose values all fit their
        columns (the others become record errors, as
        :meth:`BatchWriter.write_fitting` makes them), for the set path to
        write in one numbering with its own."""
        keyed = self._python_drafts(conn, ids, failures)
        kept = {id(draft) for draft in self.writer.fitting(conn, [draft for _, draft in keyed], failures)}
        return [(key, draft) for key, draft in keyed if id(draft) in kept]

    def _current_headers(self, conn: sa.Connection, ids: list[int]) -> list[SourceHeader | dict]:
        """The set path's re-read of a batch's headers: what
        :meth:`_read_batch` and :meth:`_current_header` do together, cheaper.
        The raw rows of the records still unbilled, in id order; a row equal
        to pass 1's gives its remembered evaluation without being assembled
        into a record again, another gives its record (to evaluate afresh).
        The record id travels as an extra last column, so that the rows
        compare as pass 1 read them."""
        reader, table = self._key_reader, self.header_table
        current: list[SourceHeader | dict] = []
        evaluated = self._evaluated
        # Few large statements fetched at once: a statement per 500 ids and a
        # fetch per row cost more than comparing the rows.
        if self._reread is None:
            # Compiled once: the statement has no parameters, the ids are our
            # own integers, written as literals (SQLAlchemy's expanding IN
            # rendered and processed 5,000 bound values per statement).
            compiled = reader.select().add_columns(table.c.id).where(self._unbilled()).compile(dialect=conn.dialect)
            assert not compiled.params, "the re-read takes no parameters"
            self._reread = (str(compiled), str(table.c.id.compile(dialect=conn.dialect)))
        select, id_column = self._reread
        for chunk in chunks(sorted(ids), REREAD_CHUNK):
            listed = ", ".join(str(int(record_id)) for record_id in chunk)
            statement = f"{select} AND {id_column} IN ({listed}) ORDER BY {id_column}"
            for found in conn.exec_driver_sql(statement).fetchall():
                row = tuple(found)
                record_id = row[-1]
                row = row[:-1]
                remembered = evaluated.pop(record_id, None)
                if remembered is not None and remembered[0] == row:
                    current.append(remembered[1])
                else:
                    current.append(next(reader.records([row])))
        return current

    def _python_batch(self, conn: sa.Connection, ids: list[int], out: BatchOutcome,
                      failures: list[RecordFailure]) -> None:
        """The Python path: every record read, evaluated and built in Python."""
        drafts = [draft for _, draft in self._python_drafts(conn, ids, failures)]
        self.writer.write_fitting(conn, drafts, out, failures)

    def _python_drafts(self, conn: sa.Connection, ids: list[int],
                       failures: list[RecordFailure]) -> list[tuple[tuple, DraftInvoice]]:
        """The drafts of the records ``ids`` with their group keys, in key
        order, their references checked; what cannot be billed goes to ``failures``."""
        plan = self.plan
        headers, children = self._read_batch(conn, ids)
        # The accounts of the batch, in bulk (the cache may have been emptied
        # since pass 1, see ACCOUNTS_KEPT).
        self.accounts.prefetch(conn, (self.sources.raw_account(record) for _, record in headers))
        groups: dict[tuple, list[SourceHeader]] = defaultdict(list)
        for row, record in headers:
            try:
                source = self._current_header(conn, row, record)
                if source is None:
                    continue
                self.sources.add_lines(source, record, children.get(record["id"], ()))
                if not source.lines:
                    raise Unbillable(f"{plan.header.obj.name} {record['id']} has no {plan.line.obj.name} records to bill")
            except (Unbillable, ArithmeticError) as error:
                failures.append(self._header_failure(record, error))
                continue
            for part in split_by_line_criterion(source):
                groups[part.group_key()].append(part)
        self.accounts.load(conn, (sources[0].account_id for sources in groups.values()))
        finals = (s.assignment_key for group in groups.values() for s in group if s.invoice_type == FINAL_TYPE)
        subs = open_sub_invoices(conn, self.ctx, finals)  # type: ignore[arg-type]
        drafts: list[DraftInvoice] = []
        keys: dict[int, tuple] = {}
        for key in sorted(groups):
            sources = groups[key]
            first = sources[0]
            try:
                account = self.accounts.record(first.account_id)
                related = list(subs.get((first.account_id, first.assignment_key), []))  # type: ignore[arg-type]
                drafts.append(build_invoice(self.run, sources, account, self.accounts.copies(first.account_id),
                                            related))
                keys[id(drafts[-1])] = key
            except (BuildError, Unbillable) as error:
                message = str(error)
                failures.extend(RecordFailure(s.object_name, s.record_id, message) for s in sources)
            except ArithmeticError as error:
                failures.extend(RecordFailure(s.object_name, s.record_id, _incomputable(error)) for s in sources)
        return [(keys[id(draft)], draft) for draft in self.writer.check_references(conn, drafts, failures)]


def default_evaluation() -> str:
    """``METABILL_EVALUATION`` when it names one of :data:`EVALUATIONS`
    (benchmarks and the differential test choose the path that way, in
    worker processes too), else :data:`DEFAULT_EVALUATION`."""
    chosen = os.environ.get("METABILL_EVALUATION", "").strip().lower()
    return chosen if chosen in EVALUATIONS else DEFAULT_EVALUATION


@contextmanager
def exact_arithmetic() -> Iterator[None]:
    """Decimal arithmetic at :data:`BUILD_PRECISION` digits inside the block.

    With the default 28 digits, a quantity times a price of values that each
    fit their columns can already be rounded, and rounding a formula result
    of 30 digits to its field's scale fails: the record then crashed the
    batch instead of being refused. At 60 digits everything a record can
    hold is computed exactly, and the column checks (the ON copy's
    coercion, the batch writer) refuse what does not fit, per record, naming
    the field. Results that fit are the same at either precision."""
    with decimal.localcontext() as context:
        context.prec = BUILD_PRECISION
        yield


def _incomputable(error: ArithmeticError) -> str:
    """The record error of arithmetic that failed even at :data:`BUILD_PRECISION`."""
    return f"its amounts cannot be computed ({type(error).__name__}): check the record's numbers and formulas"


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection inside the block.

    A batch allocates hundreds of thousands of short-lived objects (records,
    line dicts, Decimals) that reference counting frees; none of them form
    cycles that need the collector. Yet every few hundred allocations CPython
    would run the cyclic collector, and as the batch's live objects pile up
    it keeps re-traversing them: about a sixth of the run's time went there.
    The collector runs normally again between batches, so whatever cyclic
    garbage a batch leaves (at most a batch's worth) is collected then. The
    previous state is restored, also when the block raises."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def pass_one_frozen(evaluate: Callable[[], T]) -> Iterator[T]:
    """``evaluate()`` with the cyclic collector paused, then everything alive
    frozen (``gc.freeze``) for the block, unfrozen after it.

    Pass 1 ends with tens of thousands of objects pass 2 needs (evaluated
    headers, rows, account records). Allocated while the collector was
    paused, they were all still young when it resumed: its first
    collections traversed every one of them, about 0.13 s of a 100k-line
    run (issue 19). Frozen, the collector skips them; pass 2's batches
    still run it between batches over what they leave. Freezing frees
    nothing and keeps nothing alive: objects go as their references do; only
    a reference cycle among them would wait for the unfreeze to be
    collected, and pass 1 makes none (see :func:`cyclic_gc_paused`)."""
    with cyclic_gc_paused():
        result = evaluate()
        gc.freeze()
    try:
        yield result
    finally:
        gc.unfreeze()


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
