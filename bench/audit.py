"""Benchmark: ``metabill audit`` on a database of N invoice lines.

Builds the database of ``bench.invoice_run`` (N order lines, 10 per order),
bills and finalizes it (``engine.project.finalize``: numbers, balances,
booking details), registers a payment on every ``--pay-every``-th invoice
and exports the DATEV batch (accounting documents, the file); none of this is
timed (``--orders-per-account 1`` makes one invoice of every 10 lines instead
of one per account). Then it times the audit (every check, plus the DATEV file) in a fresh
child process, so that the peak memory printed is the audit's own and not
the build's, and prints one JSON line: ``seconds``, ``peak_rss_mb`` (the
child's whole process) beside ``rss_before_audit_mb`` (the same process
with the engine imported and the org loaded, before the audit),
``python_peak_mb`` (tracemalloc's peak of the audit's Python allocations,
from a second, untimed run), the counts checked and the findings (0 on a
correct database).

    python -m bench.audit --lines 100000
    python -m bench.audit --lines 100000 --orders-per-account 1   # 10,000 invoices
    python -m bench.audit --lines 100000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

import bench.invoice_run as invoice_run
from bench.invoice_run import ROOT, fresh_database, generate
from engine.audit import audit
from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.cash.payments import register_payment
from engine.exports.datev import DatevParams
from engine.exports.service import export_datev_file
from engine.project import finalize, load_project
from engine.storage.context import Context
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration

PARAMS = DatevParams(consultant=29098, client=55003, fiscal_year_start=date(2024, 1, 1), account_length=4)


def build(url: str, lines: int, pay_every: int, datev: Path) -> dict:
    """The database to audit; returns what was built."""
    model = load_project(ROOT).model
    ctx = Context(model)
    engine = open_engine(url)
    apply_migration(engine, model)
    generate(engine, model, lines)
    report = run_invoices(engine, ctx, RunRequest(("Order Invoice",), date(2024, 1, 1), date(2024, 12, 31),
                                                  invoice_date=date(2024, 1, 31)))
    with engine.connect() as conn:
        ids = draft_ids(conn, ctx, run_id=report.run_id)
    finalized = finalize(engine, ctx, ids, today=date(2024, 2, 1))
    invoices = ctx.table("Invoice")
    with engine.begin() as conn:
        due = conn.execute(sa.select(invoices.c.name, invoices.c.grandtotal).where(invoices.c.status == "Open")
                           .order_by(invoices.c.id)).all()[::pay_every]
        for name, amount in due:
            register_payment(conn, ctx, name, Decimal(amount), date(2024, 2, 20))
    export_datev_file(engine, ctx, datev, PARAMS, created=datetime(2024, 3, 1, 9, 0))
    engine.dispose()
    return {"lines": report.line_count, "invoices": len(finalized.finalized), "payments": len(due)}


def measure(url: str, datev: Path) -> dict:
    """Run the audit in this process (the child): once timed, then once more
    under tracemalloc for the peak of its Python allocations (tracemalloc
    slows Python down, so that run is not timed)."""
    ctx = Context(load_project(ROOT).model)
    engine = open_engine(url)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    report = audit(engine, ctx, datev_files=[datev])
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    audit(engine, ctx, datev_files=[datev])
    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    engine.dispose()
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1),
            "rss_before_audit_mb": round(baseline, 1), "python_peak_mb": round(python_peak / 2**20, 1),
            "findings": len(report.findings), "by_code": report.codes(), "checked": report.checked}


def main() -> None:
    parser = argparse.ArgumentParser(description="time metabill audit")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--pay-every", type=int, default=4, help="register a payment on every n-th invoice")
    parser.add_argument("--orders-per-account", type=int, default=invoice_run.ORDERS_PER_ACCOUNT,
                        help="orders per account: one invoice per account (1 = one invoice per 10 lines)")
    parser.add_argument("--db-url", help="build and audit on this database (PostgreSQL: a fresh schema)")
    parser.add_argument("--measure", nargs=2, metavar=("URL", "DATEV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    invoice_run.ORDERS_PER_ACCOUNT = args.orders_per_account
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db_url, Path(tmp), "audit") as url:
        datev = Path(tmp) / "EXTF_Buchungsstapel.csv"
        started = time.perf_counter()
        built = build(url, args.lines, args.pay_every, datev)
        build_seconds = time.perf_counter() - started
        child = subprocess.run([sys.executable, "-m", "bench.audit", "--measure", url, str(datev)],
                               check=True, capture_output=True, text=True, cwd=ROOT)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps({"benchmark": "audit", "backend": url.split(":", 1)[0], **built,
                      "build_seconds": round(build_seconds, 1), **measured}))


if __name__ == "__main__":
    main()
