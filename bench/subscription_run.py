"""Benchmark: the subscription run, month after month, against raw insert speed.

Builds a fresh database of the sample org with N subscriptions of 5 monthly
items each (in advance, calendar months; 5 % of them start in the middle of
the first month, so their first period is prorated), spread over the sample
accounts (generated, not timed). Then bills ``--months`` consecutive months,
each a draft run of the ``Subscriptions`` filter, timed with the
configuration load as a user pays for ``metabill invoice-run``. Between two
months the month's invoices are marked Open and the finalization stage that
advances ``NextServicePeriodStart`` runs on them (not timed: finalization has
its own benchmark), so each run starts where the last one ended, as in
production.

Prints one JSON line per month: ``seconds`` (configuration included),
``invoices``, ``lines``, ``lines_per_second``, and ``ratio``: the run's
seconds over a plain ``sqlite3.executemany`` of as many invoice and line rows
of the engine's real column counts (the yardstick of ``bench.invoice_run``;
the issue's must: <= 4 at N = 100,000). A last line sums up: the first and
the last month's seconds, and ``slowdown`` (last / first; work follows what
is due, not history, so it stays near 1).

    python -m bench.subscription_run --subscriptions 100000 --months 12
    python -m bench.subscription_run --subscriptions 20000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from bench.invoice_run import ROOT, fresh_database, load_average, raw_insert_seconds, table_widths

ITEMS = 5
PRORATED_SHARE = 20  # every 20th subscription (5 %) starts mid-month
FIRST_MONTH = date(2024, 1, 1)


def month_end(first: date) -> date:
    following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return following - timedelta(days=1)


def generate(url: str, subscriptions: int) -> None:
    """Migrate and fill the database (not timed)."""
    import sqlalchemy as sa

    from engine.project import load_project
    from engine.storage.bulk import RowWriter
    from engine.storage.context import Context
    from engine.storage.db import open_engine
    from engine.storage.migrate import apply_migration
    from engine.storage.records import load_records

    model = load_project(ROOT).model
    engine = open_engine(url)
    apply_migration(engine, model)
    ctx = Context(model)
    report = load_records(engine, ctx, "Account", ROOT / "data" / "01_Account.csv")
    assert report.ok, report.render()
    with engine.connect() as conn:
        accounts = [row[0] for row in conn.execute(sa.select(ctx.table("Account").c.id).order_by("id"))
                    if row[0] is not None]
    prices = [Decimal("9.90"), Decimal("19.00"), Decimal("49.00"), Decimal("120.00"), Decimal("7.35")]
    for start in range(0, subscriptions, 5000):
        chunk = range(start, min(start + 5000, subscriptions))
        subs = [{"account": accounts[n % len(accounts)], "subscriptionkey": f"B-{n:07d}", "status": "Active",
                 "startdate": FIRST_MONTH + timedelta(days=14 if n % PRORATED_SHARE == 0 else 0),
                 "billingperiod": "Month", "billingfactor": Decimal(1), "billingpractice": "Advance",
                 "alignment": "Calendar", "prorationmethod": "Day Exact", "currencyisocode": "EUR"} for n in chunk]
        with engine.begin() as conn:
            RowWriter(conn, ctx.obj("Subscription")).insert(subs)
            RowWriter(conn, ctx.obj("SubscriptionItem")).insert([
                {"subscription": sub["id"], "title": f"Service {i + 1}", "billingtype": "Recurring",
                 "quantity": Decimal(1 + i % 3), "unitprice": prices[i], "priceperiod": "Month"}
                for sub in subs for i in range(ITEMS)])
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description="time monthly subscription runs")
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--db-url", help="run on this database (PostgreSQL: in a fresh schema); default SQLite")
    args = parser.parse_args()

    import sqlalchemy as sa

    from engine.billing.run import RunRequest, run_invoices
    from engine.billing.subscription_state import advance_service_periods
    from engine.project import load_project
    from engine.storage.context import Context
    from engine.storage.db import open_engine

    months = []
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db_url, Path(tmp), "subs") as url:
        generate(url, args.subscriptions)
        first = FIRST_MONTH
        for _ in range(args.months):
            load_before = load_average()
            started = time.perf_counter()
            result = load_project(ROOT)
            ctx = Context(result.model)
            engine = open_engine(url)
            request = RunRequest(("Subscriptions",), first, month_end(first), month_end(first),
                                 batch_size=args.batch_size, today=first)
            report = run_invoices(engine, ctx, request)
            seconds = time.perf_counter() - started
            with engine.begin() as conn:  # stands in for finalization (its own benchmark), not timed
                invoices = ctx.table("Invoice")
                conn.execute(sa.update(invoices).where(invoices.c.invoicerun == report.run_id).values(status="Open"))
                rows = [dict(r) for r in conn.execute(sa.select(invoices.c.id, invoices.c.type)
                                                      .where(invoices.c.invoicerun == report.run_id)).mappings()]
                advance_service_periods(conn, ctx, rows)
            engine.dispose()
            widths = table_widths(ctx, "invoice", "invoicelineitem")
            raw = raw_insert_seconds((report.invoice_count, widths["invoice"]),
                                     (report.line_count, widths["invoicelineitem"]))
            months.append(seconds)
            print(json.dumps({
                "benchmark": "subscription_run", "backend": "postgresql" if url.startswith("postgresql") else "sqlite",
                "subscriptions": args.subscriptions, "items": args.subscriptions * ITEMS, "month": str(first)[:7],
                "invoices": report.invoice_count, "lines": report.line_count, "errors": report.failure_count,
                "seconds": round(seconds, 2), "lines_per_second": round(report.line_count / seconds) if seconds else None,
                "raw_insert_seconds": round(raw, 3), "ratio": round(seconds / raw, 2) if raw else None,
                "load_average": {"before": load_before, "after": load_average()},
            }), flush=True)
            first = month_end(first) + timedelta(days=1)
    print(json.dumps({"benchmark": "subscription_run", "summary": True, "months": len(months),
                      "first_seconds": round(months[0], 2), "last_seconds": round(months[-1], 2),
                      "slowdown": round(months[-1] / months[0], 2) if months and months[0] else None}), flush=True)


if __name__ == "__main__":
    main()
