"""Benchmark: the subscription run, month after month, against raw insert speed.

Builds a fresh database of the sample org with N subscriptions of 5 items
each (generated, not timed), billed monthly in advance on calendar months:

- accounts: one per two subscriptions, in DE (50 %), AT with a VAT id
  (reverse charge, 15 %), FR (EU rate, 15 %), CH (CHF, 10 %) and US (USD,
  10 %); a subscription is in its account's currency, so the tax rules
  decide per country as in a real run;
- items from a catalogue of 40 products (prices 5.00 to 2,500.00, five
  product groups, one of them at the reduced tax rate), quantities 1 to 10;
  one item in five is priced per year and billed monthly (1/12 of the
  price, cumulative rounding: 8.33, 8.34, ...);
- 5 % of the subscriptions start on the 15th of the first month (their
  first period is prorated day-exact), another 5 % change the price of an
  item in the middle of one of the twelve months (a split period), and
  0.5 % name a template that does not exist (a record error every month,
  as a misconfigured subscription would).

Then bills ``--months`` consecutive months, each a draft run of the
``Subscriptions`` filter, timed with the configuration load as a user pays
for ``metabill invoice-run``. Between two months the month's invoices are
marked Open and the finalization stage that advances
``NextServicePeriodStart`` runs on them (not timed: finalization has its own
benchmark), so each run starts where the last one ended, as in production.

Prints one JSON line per month: ``seconds`` (configuration included),
``invoices``, ``lines``, ``errors``, ``lines_per_second``, and ``ratio_full_width``: the run's
seconds over a plain ``sqlite3.executemany`` of as many invoice and line rows
of the engine's real column counts, measured right after the run in a fresh
process (the full-width yardstick of ``bench.invoice_run``, :mod:`bench.yardstick`;
the issue's must: <= 4 at N = 100,000). A last line sums up the series: every month's seconds and
ratio, ``slowdown`` (the mean of the last three months' seconds over the
mean of the first three; the work follows what is due, not history, so it
stays near 1), ``ratio_slowdown`` (the same of the ratios) and
``cpu_slowdown`` (the same of ``cpu_seconds``, this process's CPU time in
the timed region: SQLite works in the process, so it is the run's work, and
other processes on the machine move it far less than wall-clock seconds; on
PostgreSQL it leaves out the server's work). ``ratio_full_width_cpu`` is
``cpu_seconds`` over the yardstick's own CPU seconds; it counts both
threads of the run, so it is the higher one. Read both, from several
invocations: the yardstick's own time spreads widely on a shared machine
(2.8 to 4.2 s for the same 100k-subscription rows within half an hour,
measured in a fresh process, :mod:`bench.yardstick`), which moves the wall
ratio by a third with no change to the run. On SQLite the run writes the
end of each batch behind, in a second thread, while it drafts the next one,
so ``cpu_seconds`` (both threads) can exceed ``seconds``. The slowdowns need six months
or more (null below).

``--repeat N`` runs the series N times, each in a fresh process on fresh
data, and ends with the median, min and max of each month's figures
(:mod:`bench.spread`): the figure to quote on a shared machine.

Read ratios and CPU seconds, not seconds, on a shared machine: every line
carries the load average, and ``engine_modules_without_bytecode`` (see
:mod:`bench.invoice_run`: 0 unless the sources changed since ``make venv``
where the environment writes no bytecode).

    python -m bench.subscription_run --subscriptions 100000 --months 1   # the ratio at 100k
    python -m bench.subscription_run --subscriptions 100000 --months 1 --repeat 5   # its median, min, max
    python -m bench.subscription_run --subscriptions 10000 --months 12   # twelve months, per month
    python -m bench.subscription_run --subscriptions 20000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from bench.invoice_run import (
    ROOT,
    fresh_database,
    load_average,
    modules_without_bytecode,
    raw_insert_times,
    table_widths,
)
from bench.spread import load_span, measured_in_fresh_processes, repetitions, spreads

ITEMS = 5
PRORATED_SHARE = 20  # every 20th subscription (5 %) starts mid-month
PRICE_CHANGE_SHARE = 20  # 5 % change an item's price in the middle of a month
FAILING_SHARE = 200  # 0.5 % name a template that does not exist
FIRST_MONTH = date(2024, 1, 1)
#: (country, currency, VAT id prefix or None, weight), as bench.workload's realistic profile.
COUNTRIES = (("DE", "EUR", None, 50), ("AT", "EUR", "ATU", 15), ("FR", "EUR", None, 15),
             ("CH", "CHF", None, 10), ("US", "USD", None, 10))
GROUPS = ("Services", "Licences", "Hardware", "Books", "Training")


def month_end(first: date) -> date:
    following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return following - timedelta(days=1)


def add_month(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def catalogue(rng: random.Random) -> list[dict]:
    """40 products: price, product group, tax class (one group reduced)."""
    return [{"title": f"Product {i:02d}", "price": Decimal(rng.randint(500, 250_000)) / 100,
             "group": GROUPS[i % len(GROUPS)], "taxclass": "Reduced" if i % len(GROUPS) == 3 else None}
            for i in range(40)]


def generate(url: str, subscriptions: int) -> None:
    """Migrate and fill the database (not timed)."""
    from engine.project import load_project
    from engine.storage.db import open_engine
    from engine.storage.migrate import apply_migration

    model = load_project(ROOT).model
    engine = open_engine(url)
    apply_migration(engine, model)
    fill(engine, model, subscriptions)
    engine.dispose()


def fill(engine, model, subscriptions: int, seed: int = 20240101) -> None:
    """Insert ``subscriptions`` generated subscriptions (see the module
    docstring) with their accounts and items into a migrated database of the
    sample org; the same ``seed`` gives the same data (the tests of the
    subscription run's row path use it too)."""
    from engine.storage.bulk import RowWriter
    from engine.storage.context import Context

    ctx = Context(model)
    rng = random.Random(seed)
    products = catalogue(rng)
    weighted = [c for c in COUNTRIES for _ in range(c[3])]
    for start in range(0, subscriptions, 5000):
        chunk = range(start, min(start + 5000, subscriptions))
        accounts = {}
        for a in sorted({n // 2 for n in chunk}):
            code, currency, vat, _ = weighted[rng.randrange(len(weighted))]
            accounts[a] = {"name": f"Subscriber {a:07d}", "accountnumber": f"S{a:07d}", "billingcountrycode": code,
                           "billingcity": "City", "currencyisocode": currency, "on_debtorno__c": str(30000 + a),
                           "taxnumber": f"{vat}{10_000_000 + a}" if vat else None}
        with engine.begin() as conn:
            RowWriter(conn, ctx.obj("Account")).insert(list(accounts.values()))
            subs = [{"account": accounts[n // 2]["id"], "subscriptionkey": f"B-{n:07d}", "status": "Active",
                     "billingperiod": "Month", "billingfactor": Decimal(1), "billingpractice": "Advance",
                     "startdate": FIRST_MONTH + timedelta(days=14 if n % PRORATED_SHARE == 0 else 0),
                     "alignment": "Calendar", "prorationmethod": "Day Exact",
                     "currencyisocode": accounts[n // 2]["currencyisocode"], "paymentdue": Decimal(14),
                     "template": "No Such Template" if n % FAILING_SHARE == 7 else None} for n in chunk]
            RowWriter(conn, ctx.obj("Subscription")).insert(subs)
            items = []
            for n, sub in zip(chunk, subs):
                for i in range(ITEMS):
                    product = products[rng.randrange(len(products))]
                    item = {"subscription": sub["id"], "title": product["title"], "billingtype": "Recurring",
                            "quantity": Decimal(rng.randint(1, 10)), "unitprice": product["price"],
                            "priceperiod": "Year" if i == 4 else "Month", "productgroup": product["group"],
                            "producttaxclass": product["taxclass"]}
                    if i == 0 and n % PRICE_CHANGE_SHARE == 3:
                        item["pricechangedate"] = add_month(FIRST_MONTH, n % 12) + timedelta(days=rng.randint(5, 20))
                        item["newunitprice"] = (product["price"] * Decimal("1.10")).quantize(Decimal("0.01"))
                    items.append(item)
            RowWriter(conn, ctx.obj("SubscriptionItem")).insert(items)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="time monthly subscription runs")
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--db-url", help="run on this database (PostgreSQL: in a fresh schema); default SQLite")
    parser.add_argument("--repeat", type=repetitions, default=1,
                        help="measure the series N times, each in a fresh process on fresh data, and end with "
                             "the median, min and max of each month's figures (bench.spread)")
    args = parser.parse_args(argv)
    if args.repeat > 1:
        repeated(sys.argv[1:] if argv is None else argv, args.repeat)
        return

    import sqlalchemy as sa

    from engine.billing.run import RunRequest, run_invoices
    from engine.billing.subscription_state import advance_service_periods
    from engine.project import load_project
    from engine.storage.context import Context
    from engine.storage.db import open_engine

    months: list[float] = []
    ratios: list[float] = []
    cpus: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db_url, Path(tmp), "subs") as url:
        generate(url, args.subscriptions)
        first = FIRST_MONTH
        for _ in range(args.months):
            load_before = load_average()
            started, cpu_started = time.perf_counter(), time.process_time()
            result = load_project(ROOT)
            ctx = Context(result.model)
            engine = open_engine(url)
            request = RunRequest(("Subscriptions",), first, month_end(first), month_end(first),
                                 batch_size=args.batch_size, today=first)
            report = run_invoices(engine, ctx, request)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            load_after = load_average()
            with engine.begin() as conn:  # stands in for finalization (its own benchmark), not timed
                invoices = ctx.table("Invoice")
                conn.execute(sa.update(invoices).where(invoices.c.invoicerun == report.run_id).values(status="Open"))
                rows = [dict(r) for r in conn.execute(sa.select(invoices.c.id, invoices.c.type)
                                                      .where(invoices.c.invoicerun == report.run_id)).mappings()]
                advance_service_periods(conn, ctx, rows)
            engine.dispose()
            widths = table_widths(ctx, "invoice", "invoicelineitem")
            raw, raw_cpu = raw_insert_times((report.invoice_count, widths["invoice"]),
                                            (report.line_count, widths["invoicelineitem"]))
            months.append(seconds)
            cpus.append(cpu)
            ratios.append(seconds / raw if raw else 0.0)
            print(json.dumps({
                "benchmark": "subscription_run", "backend": "postgresql" if url.startswith("postgresql") else "sqlite",
                "subscriptions": args.subscriptions, "items": args.subscriptions * ITEMS, "month": str(first)[:7],
                "invoices": report.invoice_count, "lines": report.line_count, "errors": report.failure_count,
                "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "lines_per_second": round(report.line_count / seconds) if seconds else None,
                "raw_insert_seconds_full_width": round(raw, 3),
                "ratio_full_width": round(seconds / raw, 2) if raw else None,
                "raw_insert_cpu_seconds_full_width": round(raw_cpu, 3),
                "ratio_full_width_cpu": round(cpu / raw_cpu, 2) if raw_cpu else None,
                "load_average": {"before": load_before, "after": load_after},
                "engine_modules_without_bytecode": modules_without_bytecode(),
            }), flush=True)
            first = month_end(first) + timedelta(days=1)
    def slowdown(values: list[float]) -> float | None:
        """Mean of the last three over the first three (None below six months: they would overlap)."""
        if len(values) < 6 or not all(values):
            return None
        return round(statistics.mean(values[-3:]) / statistics.mean(values[:3]), 2)

    print(json.dumps({"benchmark": "subscription_run", "summary": True, "subscriptions": args.subscriptions,
                      "months": len(months), "seconds_per_month": [round(m, 2) for m in months],
                      "ratio_per_month": [round(r, 2) for r in ratios],
                      "cpu_seconds_per_month": [round(c, 2) for c in cpus],
                      "slowdown": slowdown(months), "ratio_slowdown": slowdown(ratios), "cpu_slowdown": slowdown(cpus),
                      "load_average": load_average()}), flush=True)


#: The figures of a month the summary of ``--repeat`` gives the spread of.
SUMMARIZED = ("seconds", "cpu_seconds", "raw_insert_seconds_full_width", "ratio_full_width",
              "raw_insert_cpu_seconds_full_width", "ratio_full_width_cpu")


def repeated(argv: list[str], count: int) -> None:
    """``--repeat``: the series ``count`` times, each in a fresh process
    (:func:`bench.spread.measured_in_fresh_processes`), then per month of
    the series the spread of each figure."""
    months: dict[str, list[dict]] = {}
    for line in measured_in_fresh_processes("bench.subscription_run", argv, count):
        if not line.get("summary"):
            months.setdefault(line["month"], []).append(line)
    print(json.dumps({
        "benchmark": "subscription_run", "summary": True, "repetitions": count,
        "subscriptions": next(iter(months.values()))[0]["subscriptions"] if months else None,
        "per_month": [{"month": month, **spreads(measured, SUMMARIZED)} for month, measured in months.items()],
        "load_average": load_span([line for measured in months.values() for line in measured]),
    }), flush=True)


if __name__ == "__main__":
    main()
