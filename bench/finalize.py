"""Benchmark: finalizing and booking the invoices of an invoice run (SQLite).

Builds the same database as ``bench.invoice_run`` (N order lines), runs the
draft invoice run (not timed), then times the finalization chain
(``engine.project.finalize``: numbers, invoice balances, line G/L
accounts, booking details, write-offs, entries) over all its drafts and
prints one JSON line with ``seconds`` and two yardsticks, each a plain
``sqlite3.executemany`` of rows of the same widths (``bench.invoice_run``):

* ``raw_insert_seconds`` / ``ratio``: every row finalization writes or
  rewrites: the booking details and balances it inserts, and the invoice
  headers and lines it updates (each line gets its G/L account). This is the
  yardstick the issue's goal is read against: booking details aggregate the
  lines (domain-spec §5.3), so a run of 100,000 lines in 500 invoices books
  only 1,000 details, and a yardstick of those alone would measure the
  aggregation, not the speed;
* ``booking_rows_raw_seconds`` / ``booking_rows_ratio``: the inserted booking
  details and balances only, printed for transparency.

    python -m bench.finalize --lines 100000
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import date
from pathlib import Path

import sqlalchemy as sa

from bench.invoice_run import ROOT, generate, raw_insert_seconds
from engine.billing.drafts import draft_ids
from engine.project import finalize as finalize_invoices
from engine.billing.run import RunRequest, run_invoices
from engine.project import load_project
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration
from engine.storage.schema import build_metadata
from engine.storage.context import Context


def main() -> None:
    parser = argparse.ArgumentParser(description="time finalization and booking")
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    model = load_project(ROOT).model
    ctx = Context(model)
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        apply_migration(engine, model)
        generate(engine, model, args.lines)
        report = run_invoices(engine, ctx, RunRequest(("Order Invoice",), date(2024, 1, 1), date(2024, 12, 31),
                                                        invoice_date=date(2024, 1, 31)))
        with engine.connect() as conn:
            ids = draft_ids(conn, ctx, run_id=report.run_id)
        started = time.perf_counter()
        finalized = finalize_invoices(engine, ctx, ids, today=date(2024, 2, 1))
        seconds = time.perf_counter() - started
        tables = build_metadata(model).tables
        with engine.connect() as conn:
            details = conn.execute(sa.select(sa.func.count()).select_from(tables["bookingdetail"])).scalar_one()
            balances = conn.execute(sa.select(sa.func.count()).select_from(tables["balance"])).scalar_one()
        widths = {name: len(tables[name].columns) for name in ("bookingdetail", "balance", "invoice", "invoicelineitem")}
        engine.dispose()
    written = ((details, widths["bookingdetail"]), (balances, widths["balance"]))
    raw_booking = raw_insert_seconds(*written)
    raw = raw_insert_seconds(*written, (len(finalized.finalized), widths["invoice"]),
                             (report.line_count, widths["invoicelineitem"]))
    print(json.dumps({
        "benchmark": "finalize",
        "lines": report.line_count,
        "invoices": len(finalized.finalized),
        "failures": len(finalized.failures),
        "booking_details": details,
        "balances": balances,
        "seconds": round(seconds, 2),
        "invoices_per_second": round(len(finalized.finalized) / seconds, 1) if seconds else None,
        "raw_insert_seconds": round(raw, 4),
        "ratio": round(seconds / raw, 2) if raw else None,
        "booking_rows_raw_seconds": round(raw_booking, 4),
        "booking_rows_ratio": round(seconds / raw_booking, 1) if raw_booking else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
