"""Benchmark: finalizing and booking the invoices of an invoice run.

Builds the database of ``bench.invoice_run`` (N source lines of a workload
profile, :mod:`bench.workload`), runs the draft invoice run (not timed),
then times what a user pays for ``metabill finalize --run``: loading the
configuration and the finalization chain (that of ``engine.project.finalize``:
numbers, invoice balances, line G/L accounts, booking details, write-offs,
entries, issued documents) over all the run's drafts. Prints one JSON line with ``seconds``
(configuration included; ``config_seconds`` of it) and two yardsticks, each
a plain ``sqlite3.executemany`` of rows of the same widths into tables
without triggers or indexes (``bench.invoice_run.raw_insert_seconds``):

* ``raw_insert_seconds`` / ``ratio``: every row finalization writes or
  rewrites: the rows it inserts into any table (counted per table before
  and after), and the invoice headers and lines it updates (each line gets
  its G/L account). This is the yardstick the issue's goal is read against
  (ratio <= 2): booking details aggregate the lines (domain-spec 5.3), so a
  yardstick of the inserted rows alone would measure the aggregation, not
  the speed;
* ``inserted_rows_raw_seconds`` / ``inserted_rows_ratio``: the inserted rows
  only, printed for transparency;
* the two parts of finalization, timed in the same run (the documents stage
  is wrapped with a clock, nothing is skipped): ``documents_seconds`` (the
  stage :func:`engine.documents.finalization.issue_documents`: HTML, both
  e-invoice XMLs, their validation, storage) and ``documents_per_second``
  (finalized invoices per second of it); ``bookkeeping_seconds`` (the rest of
  the chain: numbers, balances, G/L accounts, booking details and the other
  stages; configuration excluded, it is ``config_seconds``) against
  ``bookkeeping_raw_insert_seconds``, the yardstick of the rows bookkeeping
  writes or rewrites (every inserted row but the documents, the invoice
  headers and lines): ``bookkeeping_ratio`` is the issue's goal (<= 2) read
  for the bookkeeping alone. ``seconds`` and ``ratio`` stay the whole;
  ``validation_workers``: the e-invoice validation processes the documents
  stage may use besides this one (``METABILL_VALIDATION_WORKERS``);
* CPU seconds of this process beside the wall clock, which on a shared
  machine also counts the time other processes had the CPU: ``cpu_seconds``
  (the whole), ``documents_cpu_seconds`` / ``documents_per_cpu_second`` and
  ``bookkeeping_cpu_seconds`` / ``bookkeeping_cpu_ratio`` (against the same
  yardstick). Validation workers' CPU is not in them: compare CPU figures
  with ``METABILL_VALIDATION_WORKERS=0``;
* ``load_average`` before and after the timed region, as in
  ``bench.invoice_run``.

Invoices a realistic run leaves as drafts because a record failed are not
there to finalize; drafts that fail finalization are counted in
``failures``.

    python -m bench.finalize --lines 100000                    # realistic profile
    python -m bench.finalize --lines 100000 --profile uniform  # the earlier profile (200 lines per invoice)
    python -m bench.finalize --lines 100000 --cprofile fin.prof
    METABILL_VALIDATION_WORKERS=0 python -m bench.finalize --lines 20000  # e-invoices validated in this process only
"""

from __future__ import annotations

import argparse
import cProfile
import json
import resource
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.invoice_run import ROOT, load_average, prepared_database, raw_insert_seconds
from bench.workload import FILTERS, INVOICE_DATE, PROFILES, RUN_PERIOD


#: The table of issued documents (HTML and e-invoice XML parts).
DOCUMENT_TABLE = "invoicedocument"


class StageClock:
    """The finalization stages, each wrapped with a clock: the same work,
    and the seconds spent in each stage (summed over batches, retries
    included) in :attr:`seconds`, the CPU seconds of this process in
    :attr:`cpu_seconds` (on a shared machine the wall clock also counts
    the time other processes had the CPU)."""

    def __init__(self, stages):
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.stages = tuple(self._timed(stage) for stage in stages)

    def _timed(self, stage):
        name = getattr(stage, "__name__", repr(stage))

        def timed(conn, ctx, invoices):
            started, cpu_started = time.perf_counter(), time.process_time()
            try:
                return stage(conn, ctx, invoices)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
                self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu_started

        timed.__name__ = name
        prepare = getattr(stage, "prepare", None)
        if prepare is not None:  # before the first transaction: the stage's work too
            def timed_prepare(ctx):
                started, cpu_started = time.perf_counter(), time.process_time()
                try:
                    return prepare(ctx)
                finally:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
                    self.cpu_seconds[name] = self.cpu_seconds.get(name, 0.0) + time.process_time() - cpu_started

            timed.prepare = timed_prepare
        return timed


def row_counts(engine, ctx) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for name, table in ctx.metadata.tables.items()}


def main() -> None:
    from datetime import date

    from engine.billing.drafts import draft_ids
    from engine.billing.run import RunRequest, run_invoices
    from engine.booking.finalize import finalize_invoices
    from engine.documents.einvoice.parallel import Validators
    from engine.project import finalization_stages, load_project
    from engine.storage.context import Context
    from engine.storage.db import open_engine

    parser = argparse.ArgumentParser(description="time finalization and booking")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--profile", choices=PROFILES, default="realistic", help="workload (bench.workload)")
    parser.add_argument("--cprofile", metavar="FILE", help="write cProfile statistics of the timed region to FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        prepared_database(url, args.lines, args.profile)
        engine = open_engine(url)
        setup_ctx = Context(load_project(ROOT).model)
        report = run_invoices(engine, setup_ctx, RunRequest(FILTERS[args.profile], *RUN_PERIOD,
                                                              invoice_date=INVOICE_DATE))
        with engine.connect() as conn:
            ids = draft_ids(conn, setup_ctx, run_id=report.run_id)
        lines_of_drafts = report.line_count
        before = row_counts(engine, setup_ctx)
        engine.dispose()
        del setup_ctx
        profiler = cProfile.Profile() if args.cprofile else None
        load_before = load_average()
        started, cpu_started = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        ctx = Context(load_project(ROOT).model)
        config_seconds = time.perf_counter() - started
        config_cpu_seconds = time.process_time() - cpu_started
        engine = open_engine(url)
        clock = StageClock(finalization_stages(ctx))
        finalized = finalize_invoices(engine, ctx, ids, today=date(2024, 2, 1), stages=clock.stages)
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        load_after = load_average()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # setup run included
        if profiler is not None:
            profiler.dump_stats(args.cprofile)
        after = row_counts(engine, ctx)
        with engine.connect() as conn:  # the lines finalization rewrote: those of finalized invoices
            invoice, line = ctx.metadata.tables["invoice"], ctx.metadata.tables["invoicelineitem"]
            finalized_lines = conn.execute(
                sa.select(sa.func.count()).select_from(line.join(invoice, line.c.invoice == invoice.c.id))
                .where(invoice.c.status.not_in(("Draft", "Pre-Draft")))).scalar_one()
        engine.dispose()
    widths = {name: len(table.columns) for name, table in ctx.metadata.tables.items()}
    inserted = {name: after[name] - before[name] for name in after if after[name] > before.get(name, 0)}
    written = [(count, widths[name]) for name, count in sorted(inserted.items())]
    raw_inserted = raw_insert_seconds(*written)
    updated = [(len(finalized.finalized), widths["invoice"]), (finalized_lines, widths["invoicelineitem"])]
    raw = raw_insert_seconds(*written, *updated)
    booked = [(count, widths[name]) for name, count in sorted(inserted.items()) if name != DOCUMENT_TABLE]
    raw_booked = raw_insert_seconds(*booked, *updated)
    documents_seconds = clock.seconds.get("issue_documents", 0.0)
    bookkeeping_seconds = seconds - config_seconds - documents_seconds
    documents_cpu_seconds = clock.cpu_seconds.get("issue_documents", 0.0)
    bookkeeping_cpu_seconds = cpu_seconds - config_cpu_seconds - documents_cpu_seconds
    print(json.dumps({
        "benchmark": "finalize",
        "profile": args.profile,
        "lines": lines_of_drafts,
        "finalized_lines": finalized_lines,
        "invoices": len(finalized.finalized),
        "failures": len(finalized.failures),
        "inserted_rows": inserted,
        "seconds": round(seconds, 2),
        "config_seconds": round(config_seconds, 2),
        "invoices_per_second": round(len(finalized.finalized) / seconds, 1) if seconds else None,
        "cpu_seconds": round(cpu_seconds, 2),
        "raw_insert_seconds": round(raw, 3),
        "ratio": round(seconds / raw, 2) if raw else None,
        "inserted_rows_raw_seconds": round(raw_inserted, 3),
        "inserted_rows_ratio": round(seconds / raw_inserted, 1) if raw_inserted else None,
        "bookkeeping_seconds": round(bookkeeping_seconds, 2),
        "bookkeeping_cpu_seconds": round(bookkeeping_cpu_seconds, 2),
        "bookkeeping_cpu_ratio": round(bookkeeping_cpu_seconds / raw_booked, 2) if raw_booked else None,
        "bookkeeping_raw_insert_seconds": round(raw_booked, 3),
        "bookkeeping_ratio": round(bookkeeping_seconds / raw_booked, 2) if raw_booked else None,
        "documents_seconds": round(documents_seconds, 2),
        "documents_per_second": round(len(finalized.finalized) / documents_seconds, 1) if documents_seconds else None,
        "documents_cpu_seconds": round(documents_cpu_seconds, 2),
        "documents_per_cpu_second": (round(len(finalized.finalized) / documents_cpu_seconds, 1)
                                     if documents_cpu_seconds else None),
        "stage_seconds": {name: round(value, 2) for name, value in clock.seconds.items()},
        "validation_workers": ctx.service(Validators).workers,  # e-invoice validation processes besides this one
        "peak_rss_mb": round(peak, 1),
        "load_average": {"before": load_before, "after": load_after},
        "cprofile": bool(args.cprofile),
    }))


if __name__ == "__main__":
    main()
