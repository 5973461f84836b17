"""Benchmark: finalizing and booking the invoices of an invoice run (SQLite).

Builds the same database as ``bench.invoice_run`` (N order lines), runs the
draft invoice run (not timed), then times ``finalize_invoices`` over all its
drafts (numbers, invoice balances, line G/L accounts, booking details) and
prints one JSON line with ``seconds``, the booking rows written, and
``raw_insert_seconds`` / ``ratio`` against plain ``sqlite3.executemany`` of
the same number of booking rows of the same width.

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
from engine.booking.finalize import finalize_invoices
from engine.billing.run import RunRequest, run_invoices
from engine.config.loader import load_org
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration
from engine.storage.schema import build_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description="time finalization and booking")
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args()
    model = load_org(ROOT).model
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        apply_migration(engine, model)
        generate(engine, model, args.lines)
        report = run_invoices(engine, model, RunRequest(("Order Invoice",), date(2024, 1, 1), date(2024, 12, 31),
                                                        invoice_date=date(2024, 1, 31)))
        with engine.connect() as conn:
            ids = draft_ids(conn, model, run_id=report.run_id)
        started = time.perf_counter()
        finalized = finalize_invoices(engine, model, ids, today=date(2024, 2, 1))
        seconds = time.perf_counter() - started
        tables = build_metadata(model).tables
        with engine.connect() as conn:
            details = conn.execute(sa.select(sa.func.count()).select_from(tables["bookingdetail"])).scalar_one()
            balances = conn.execute(sa.select(sa.func.count()).select_from(tables["balance"])).scalar_one()
        columns = len(tables["bookingdetail"].columns)
        engine.dispose()
    raw = raw_insert_seconds((details + balances, columns))
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
        "ratio": round(seconds / raw, 1) if raw else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
