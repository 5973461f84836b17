"""Benchmark: the generic invoice run, against raw insert speed.

Builds a fresh database of the sample org with about N source lines of a
workload profile (:mod:`bench.workload`; generated in a child process and
not timed), then times what a user pays for ``metabill invoice-run``:
loading the configuration (``load_project``) and the draft invoice run of
the profile's filters. Prints one JSON line per worker count:

- ``seconds`` (configuration included; ``config_seconds`` of it),
  ``lines_per_second``, ``invoices``, ``lines``, ``errors`` (records that
  failed with a record error), ``peak_rss_mb`` (of this process, which does
  not generate the data: configuration and run only);
- ``raw_insert_seconds_full_width`` and ``ratio_full_width``: a plain
  ``sqlite3.executemany`` of as many invoice and line rows as the run wrote,
  into tables of the engine's real column counts, without triggers or
  indexes, into a fresh file database, measured in a fresh process right
  after the run (:mod:`bench.yardstick`; the issue's must: ratio <= 4 at 100k lines, goal <= 3);
  ``raw_insert_seconds`` and ``ratio`` are the same figures under the names
  earlier versions printed;
- ``raw_insert_seconds_15_columns`` / ``ratio_15_columns``: the same rows
  into 15-column tables, the narrower yardstick the issue also quotes;
- ``cpu_seconds``, ``raw_insert_cpu_seconds_full_width`` and
  ``ratio_full_width_cpu``: the same region and yardstick in CPU seconds of
  this process (one worker only): on a machine other processes keep busy
  the wall clock stretches both by different amounts, the CPU time much less;
- ``load_average``: ``os.getloadavg()`` before and after the timed region;
  other processes on the machine slow the run and the yardstick alike, so
  read ratios, not seconds, when the machine is busy;
- ``engine_modules_without_bytecode``: engine modules with no current
  ``.pyc`` (:func:`modules_without_bytecode`). An installed engine has its
  bytecode (``make venv`` writes it, as installing a wheel does); where the
  environment sets ``PYTHONDONTWRITEBYTECODE`` and the sources changed since,
  the modules the run imports lazily are compiled inside the timed region
  (about 0.1 s of the configuration load here). Run
  ``python -m compileall -q engine`` first when this is not 0.

    python -m bench.invoice_run --lines 100000                     # realistic profile, SQLite
    python -m bench.invoice_run --lines 100000 --repeat 5          # five times + median, min, max
    python -m bench.invoice_run --lines 100000 --profile uniform   # the earlier profile
    python -m bench.invoice_run --lines 100000 --cprofile run.prof # + cProfile of the timed region
    python -m bench.invoice_run --lines 100000 --evaluation python,set  # both evaluation paths, same run
    python -m bench.invoice_run --lines 100000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test \
        --workers 1,2                                              # PostgreSQL, 1 and 2 worker processes

``--db-url`` runs on that database instead of a temporary SQLite file (on
PostgreSQL inside a fresh schema that is dropped afterwards); ``--workers``
takes a comma-separated list, each on freshly generated data
(:mod:`engine.billing.workers`). The yardsticks are always SQLite's, so
lines of different backends compare.

``--repeat N`` measures N times, each in a fresh process (as a user runs
``metabill invoice-run``) on freshly generated data with its own yardstick
right after it, prints every line with its ``repetition`` and ends with a
``summary`` line per configuration: the median, min and max of each figure
(:mod:`bench.spread`). On a shared machine one invocation's ratio lands
anywhere in a band a third wide; the median of five is the figure to quote.

``--cprofile FILE`` writes cProfile statistics of the timed region to FILE
(``python -m pstats FILE``); the profiler slows the run down, so the printed
times are then not comparable with unprofiled ones.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.spread import load_span, measured_in_fresh_processes, repetitions, spreads
from bench.workload import FILTERS, INVOICE_DATE, PROFILES, RUN_PERIOD
from bench.yardstick import raw_insert_times

ROOT = Path(__file__).resolve().parent.parent
NARROW_COLUMNS = 15


def generate(engine, model, lines: int):
    """The ``uniform`` profile in this process, as this module's
    ``generate`` did before the profiles (``bench.audit`` uses it)."""
    from bench.workload import generate as generate_profile

    return generate_profile(engine, model, lines, "uniform")


def generate_in_child(url: str, lines: int, profile: str) -> dict:
    """Fill the migrated database at ``url`` in a child process (so the
    generator's memory is not the benchmark's); what it wrote."""
    done = subprocess.run([sys.executable, "-m", "bench.workload", url, str(lines), profile, str(ROOT)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    headers, source_lines, failing = (int(x) for x in done.stdout.split()[-3:])
    return {"headers": headers, "lines": source_lines, "failing": failing}


def raw_insert_seconds(*tables: tuple[int, int]) -> float:
    """The yardstick's wall seconds for ``tables`` (:mod:`bench.yardstick`,
    measured in a fresh process)."""
    return raw_insert_times(*tables)[0]


@contextmanager
def fresh_database(db_url: str | None, tmp: Path, label: str):
    """The URL of an empty database: a SQLite file in ``tmp``, or a new
    schema on the PostgreSQL server of ``db_url`` (dropped on exit)."""
    from engine.storage.db import private_schema

    if not db_url:
        yield f"sqlite:///{tmp / f'bench-{label}.db'}"
        return
    with private_schema(db_url, "bench") as url:
        yield url


def prepared_database(url: str, lines: int, profile: str) -> dict:
    """Migrate the empty database at ``url`` and fill it (not timed)."""
    from engine.project import load_project
    from engine.storage.db import open_engine
    from engine.storage.migrate import apply_migration

    engine = open_engine(url)
    apply_migration(engine, load_project(ROOT).model)
    engine.dispose()
    return generate_in_child(url, lines, profile)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed_run(url: str, profile: str, batch_size: int, workers: int, profiler: cProfile.Profile | None):
    """The timed region: configuration, context, the run. Returns the
    report, the seconds and the configuration's share of them."""
    from engine.billing.run import RunRequest, run_invoices
    from engine.billing.workers import run_invoices_parallel
    from engine.project import load_project
    from engine.storage.context import Context
    from engine.storage.db import open_engine

    request = RunRequest(filters=FILTERS[profile], period_start=RUN_PERIOD[0], period_end=RUN_PERIOD[1],
                         invoice_date=INVOICE_DATE, batch_size=batch_size)
    started, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    result = load_project(ROOT)
    if not result.ok:
        raise SystemExit("the sample org does not validate; run metabill validate-config")
    ctx = Context(result.model)
    config_seconds = time.perf_counter() - started
    if workers > 1:
        report = run_invoices_parallel(url, ROOT, ctx, request, workers)
    else:
        engine = open_engine(url)
        report = run_invoices(engine, ctx, request)
        engine.dispose()
    if profiler is not None:
        profiler.disable()
    # CPU seconds of this process: the run's own work (SQLite runs in it), which
    # other processes on a busy machine stretch less than the wall clock.
    # Worker processes are not in it (``workers`` > 1: read ``seconds``).
    return report, time.perf_counter() - started, config_seconds, ctx, time.process_time() - cpu


def modules_without_bytecode(package: str = "engine") -> int:
    """How many modules of ``package`` have no bytecode file matching their
    source (what ``importlib`` would compile again on import)."""
    import importlib.util

    missing = 0
    for source in (ROOT / package).rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists():
            missing += 1
            continue
        # A timestamp-based .pyc records the source's mtime and size (bytes 8-16).
        header = cached.read_bytes()[8:16]
        stat = source.stat()
        if header != (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + \
                (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little"):
            missing += 1
    return missing


def table_widths(ctx, *names: str) -> dict[str, int]:
    return {name: len(ctx.metadata.tables[name].columns) for name in names}


def measure(args, workers: int) -> dict:
    """One measurement (see the module docstring): fresh data, the timed
    region, the yardsticks right after it; its JSON line as a dict."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db_url, Path(tmp), str(workers)) as url:
        written = prepared_database(url, args.lines, args.profile)
        profiler = cProfile.Profile() if args.cprofile else None
        load_before = load_average()
        report, seconds, config_seconds, ctx, cpu = timed_run(url, args.profile, args.batch_size, workers, profiler)
        load_after = load_average()
        # The run's own peak (the yardsticks run in child processes, bench.yardstick).
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if profiler is not None:
            profiler.dump_stats(args.cprofile)
        backend = "postgresql" if url.startswith("postgresql") else "sqlite"
    widths = table_widths(ctx, "invoice", "invoicelineitem")
    invoices, lines = report.invoice_count, report.line_count
    full, full_cpu = raw_insert_times((invoices, widths["invoice"]), (lines, widths["invoicelineitem"]))
    narrow = raw_insert_seconds((invoices, NARROW_COLUMNS), (lines, NARROW_COLUMNS))
    return {
        "benchmark": "invoice_run",
        "profile": args.profile,
        "backend": backend,
        "workers": workers,
        "evaluation": os.environ.get("METABILL_EVALUATION") or "default",
        "filters": len(FILTERS[args.profile]),
        "source_headers": written["headers"],
        "source_lines": written["lines"],
        "lines": lines,
        "invoices": invoices,
        "lines_per_invoice": round(lines / invoices, 1) if invoices else None,
        "errors": report.failure_count,
        "seconds": round(seconds, 2),
        "config_seconds": round(config_seconds, 2),
        "lines_per_second": round(lines / seconds) if seconds else None,
        "peak_rss_mb": round(peak, 1),
        "raw_insert_seconds": round(full, 3),
        "ratio": round(seconds / full, 2) if full else None,
        "raw_insert_seconds_full_width": round(full, 3),
        "ratio_full_width": round(seconds / full, 2) if full else None,
        "cpu_seconds": round(cpu, 2),
        "raw_insert_cpu_seconds_full_width": round(full_cpu, 3),
        "ratio_full_width_cpu": round(cpu / full_cpu, 2) if full_cpu and workers == 1 else None,
        "raw_insert_seconds_15_columns": round(narrow, 3),
        "ratio_15_columns": round(seconds / narrow, 2) if narrow else None,
        "columns": widths,
        "batch_size": args.batch_size,
        "load_average": {"before": load_before, "after": load_after},
        "engine_modules_without_bytecode": modules_without_bytecode(),
        "cprofile": bool(args.cprofile),
    }


#: The figures the summary of ``--repeat`` gives the spread of.
SUMMARIZED = ("seconds", "cpu_seconds", "config_seconds", "raw_insert_seconds_full_width", "ratio_full_width",
              "raw_insert_cpu_seconds_full_width", "ratio_full_width_cpu", "peak_rss_mb")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="time the draft invoice run")
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--profile", choices=PROFILES, default="realistic", help="workload (bench.workload)")
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--cprofile", metavar="FILE", help="write cProfile statistics of the timed region to FILE")
    parser.add_argument("--db-url", help="run on this database (PostgreSQL: in a fresh schema); default SQLite")
    parser.add_argument("--workers", default="1", help="worker counts to time, comma-separated (e.g. 1,2)")
    parser.add_argument("--evaluation", default="",
                        help="evaluation paths to time, comma-separated (python,set; default: the engine's)")
    parser.add_argument("--repeat", type=repetitions, default=1,
                        help="measure N times, each in a fresh process on fresh data with its own yardstick, "
                             "and end with the median, min and max of each figure (bench.spread)")
    args = parser.parse_args(argv)
    if args.repeat > 1:
        if args.cprofile:
            parser.error("--cprofile profiles one run: leave out --repeat")
        repeated(sys.argv[1:] if argv is None else argv, args.repeat)
        return
    evaluations = [e.strip() for e in args.evaluation.split(",") if e.strip()] or [None]
    for workers, evaluation in [(int(w), e) for w in args.workers.split(",") for e in evaluations]:
        if evaluation:  # read by every FilterRun, in worker processes too (engine.billing.filterrun)
            os.environ["METABILL_EVALUATION"] = evaluation
        print(json.dumps(measure(args, workers)), flush=True)


def repeated(argv: list[str], count: int) -> None:
    """``--repeat``: this benchmark ``count`` times, each in a fresh process
    (:func:`bench.spread.measured_in_fresh_processes`), then per
    configuration (workers, evaluation) the spread of each figure."""
    configurations: dict[tuple, list[dict]] = {}
    for line in measured_in_fresh_processes("bench.invoice_run", argv, count):
        configurations.setdefault((line["workers"], line["evaluation"]), []).append(line)
    for measured in configurations.values():
        first = measured[0]
        print(json.dumps({
            "benchmark": "invoice_run", "summary": True, "repetitions": len(measured),
            **{key: first[key] for key in ("profile", "backend", "workers", "evaluation", "batch_size")},
            **spreads(measured, SUMMARIZED),
            "load_average": load_span(measured),
        }), flush=True)


if __name__ == "__main__":
    main()
