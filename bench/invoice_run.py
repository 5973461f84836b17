"""Benchmark: the generic invoice run on SQLite, against raw insert speed.

Builds a fresh SQLite database of the sample org with N order lines (10 lines
per order, about 20 orders per account; generation is not timed), then times
the draft invoice run of the filter "Order Invoice" and prints one JSON line:

- ``seconds``, ``lines_per_second``, ``invoices``, ``peak_rss_mb``;
- ``raw_insert_seconds``: plain ``sqlite3.executemany`` inserting the same
  number of invoice and line rows of the same width into a fresh file
  database, measured in the same process;
- ``ratio`` = seconds / raw_insert_seconds (goal <= 4, must <= 6 at 100k).

    python -m bench.invoice_run --lines 100000
    python -m bench.invoice_run --lines 100000 --profile run.prof   # + cProfile of the run
    python -m bench.invoice_run --lines 100000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --workers 1,2                                               # PostgreSQL, 1 and 2 worker processes

``--db-url`` runs on that database instead of a temporary SQLite file (on
PostgreSQL inside a fresh schema that is dropped afterwards); ``--workers``
takes a comma-separated list and prints one JSON line per worker count, each
on freshly generated data (``invoice-run --workers N``:
:mod:`engine.billing.workers`). ``raw_insert_seconds`` and ``ratio`` are always
against SQLite's raw insert speed, so lines of different backends compare.

``--profile FILE`` (optional instrumentation) writes cProfile statistics of
the timed run only (not of the data generation) to FILE, for
``python -m pstats FILE``; the profiler slows the run down, so the printed
times are then not comparable with unprofiled ones.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import resource
import sqlite3
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from engine.billing.run import RunRequest, run_invoices
from engine.billing.workers import run_invoices_parallel
from engine.project import load_project
from engine.storage.bulk import RowWriter
from engine.storage.db import open_engine, private_schema
from engine.storage.migrate import apply_migration
from engine.storage.schema import build_metadata
from engine.storage.context import Context

ROOT = Path(__file__).resolve().parent.parent
LINES_PER_ORDER = 10
ORDERS_PER_ACCOUNT = 20


def generate(engine, model, lines: int) -> None:
    orders = max(lines // LINES_PER_ORDER, 1)
    accounts = max(orders // ORDERS_PER_ACCOUNT, 1)
    with engine.begin() as conn:
        account_rows = [
            {
                "name": f"Bench Customer {i:06d}",
                "accountnumber": f"B{i:07d}",
                "billingcountrycode": "DE",
                "billingcity": "Berlin",
                "currencyisocode": "EUR",
                "on_debtorno__c": str(20000 + i),
            }
            for i in range(accounts)
        ]
        RowWriter(conn, model.require("Account")).insert(account_rows)
        product = {"name": "Consulting hour", "productcode": "BENCH-1", "productgroup": "Services"}
        RowWriter(conn, model.require("Product")).insert([product])
        order_writer = RowWriter(conn, model.require("Order"))
        item_writer = RowWriter(conn, model.require("OrderItem"))
        chunk = 5000
        for start in range(0, orders, chunk):
            order_rows = [
                {
                    "name": f"Order {n:07d}",
                    "accountid": account_rows[n % accounts]["id"],
                    "ordernumber": f"BO-{n:07d}",
                    "effectivedate": date(2024, 1, 15),
                    "status": "Activated",
                    "currencyisocode": "EUR",
                }
                for n in range(start, min(start + chunk, orders))
            ]
            order_writer.insert(order_rows)
            item_rows = [
                {
                    "orderid": order["id"],
                    "productid": product["id"],
                    "quantity": Decimal(1 + (k % 5)),
                    "unitprice": Decimal("12.5000") + k,
                    "on_title__c": f"Service item {k + 1}",
                }
                for order in order_rows
                for k in range(LINES_PER_ORDER)
            ]
            item_writer.insert(item_rows)


def raw_insert_seconds(*tables: tuple[int, int]) -> float:
    """Plain sqlite3 ``executemany`` of ``rows`` rows of ``columns`` columns for
    each ``(rows, columns)`` given, into fresh tables of a fresh file database,
    in one transaction: the yardstick the benchmarks compare against."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        batches = []
        for number, (rows, columns) in enumerate(tables):
            db.execute(f"CREATE TABLE t{number} (" + ", ".join(f"c{i}" for i in range(columns)) + ")")
            data = [tuple([n, f"ROW-{n:07d}", "2024-01-31", 1234500] + [f"v{n}"] * (columns - 4)) for n in range(rows)]
            batches.append((f"INSERT INTO t{number} VALUES ({', '.join('?' * columns)})", data))
        started = time.perf_counter()
        db.execute("BEGIN")
        for sql, data in batches:
            db.executemany(sql, data)
        db.execute("COMMIT")
        elapsed = time.perf_counter() - started
        db.close()
    return elapsed


@contextmanager
def fresh_database(db_url: str | None, tmp: Path, label: str):
    """The URL of an empty database: a SQLite file in ``tmp``, or a new
    schema on the PostgreSQL server of ``db_url`` (dropped on exit)."""
    if not db_url:
        yield f"sqlite:///{tmp / f'bench-{label}.db'}"
        return
    with private_schema(db_url, "bench") as url:
        yield url


def main() -> None:
    parser = argparse.ArgumentParser(description="time the draft invoice run")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--profile", metavar="FILE", help="write cProfile statistics of the timed run to FILE")
    parser.add_argument("--db-url", help="run on this database (PostgreSQL: in a fresh schema); default SQLite")
    parser.add_argument("--workers", default="1", help="worker counts to time, comma-separated (e.g. 1,2)")
    args = parser.parse_args()
    result = load_project(ROOT)
    if not result.ok:
        raise SystemExit("the sample org does not validate; run metabill validate-config")
    model = result.model
    ctx = Context(model)
    tables = build_metadata(model).tables
    invoice_columns = len(tables["invoice"].columns)
    line_columns = len(tables["invoicelineitem"].columns)
    for workers in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db_url, Path(tmp), str(workers)) as url:
            engine = open_engine(url)
            apply_migration(engine, model)
            generate(engine, model, args.lines)
            backend = engine.dialect.name
            request = RunRequest(
                filters=("Order Invoice",),
                period_start=date(2024, 1, 1),
                period_end=date(2024, 12, 31),
                invoice_date=date(2024, 1, 31),
                batch_size=args.batch_size,
            )
            profiler = cProfile.Profile() if args.profile else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            if workers > 1:
                report = run_invoices_parallel(url, ROOT, ctx, request, workers)
            else:
                report = run_invoices(engine, ctx, request)
            if profiler is not None:
                profiler.disable()
            seconds = time.perf_counter() - started
            if profiler is not None:
                profiler.dump_stats(args.profile)
            engine.dispose()
        raw = raw_insert_seconds((report.invoice_count, invoice_columns), (report.line_count, line_columns))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "benchmark": "invoice_run",
                    "backend": backend,
                    "workers": workers,
                    "lines": report.line_count,
                    "invoices": report.invoice_count,
                    "errors": report.failure_count,
                    "seconds": round(seconds, 2),
                    "lines_per_second": round(report.line_count / seconds) if seconds else None,
                    "peak_rss_mb": round(peak, 1),
                    "raw_insert_seconds": round(raw, 2),
                    "ratio": round(seconds / raw, 2) if raw else None,
                    "batch_size": args.batch_size,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
