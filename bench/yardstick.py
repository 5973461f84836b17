"""The raw-insert yardstick the benchmarks compare against, measured in a
fresh process.

A plain ``sqlite3.executemany`` of ``rows`` rows of ``columns`` columns for
each ``(rows, columns)`` given, into fresh tables (no index, no trigger) of
a fresh file database, in one transaction. It runs in a child process of
its own, so that nothing the benchmark's process holds after a run (its
heap, its caches, its threads) can make the yardstick slower and the ratio
look better. Measured in 2026-12 (100,000 invoice and 497,500 line rows,
alternating in-process and child measurements): before a run 3.49/3.00 s
in the process against 3.15/3.41 s in a child, after a run 4.17/3.32 s
against 3.80/3.28 s. The effect of the run's state is small beside the
machine's own spread (2.8 to 4.2 s for these rows within half an hour),
so read ratios from several invocations, with their load averages.

    python -m bench.yardstick 10000:74 100000:36    # prints {"seconds": ..., "cpu_seconds": ...}
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def raw_insert_times(*tables: tuple[int, int]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the yardstick for ``tables``, measured
    in a fresh child process."""
    spec = [f"{rows}:{columns}" for rows, columns in tables]
    done = subprocess.run([sys.executable, "-m", "bench.yardstick", *spec], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the yardstick failed ({' '.join(spec)}):\n{done.stderr.strip()}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return measured["seconds"], measured["cpu_seconds"]


def measure_here(*tables: tuple[int, int]) -> tuple[float, float]:
    """The yardstick in this process (what the child runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        batches = []
        for number, (rows, columns) in enumerate(tables):
            db.execute(f"CREATE TABLE t{number} (" + ", ".join(f"c{i}" for i in range(columns)) + ")")
            data = [tuple(([n, f"ROW-{n:07d}", "2024-01-31", 1234500] + [f"v{n}"] * max(columns - 4, 0))[:columns])
                    for n in range(rows)]
            batches.append((f"INSERT INTO t{number} VALUES ({', '.join('?' * columns)})", data))
        started, cpu = time.perf_counter(), time.process_time()
        db.execute("BEGIN")
        for sql, data in batches:
            db.executemany(sql, data)
        db.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        db.close()
    return elapsed, cpu


def main(argv: list[str]) -> None:
    usage = "usage: python -m bench.yardstick ROWS:COLUMNS [ROWS:COLUMNS ...]"
    try:
        tables = [tuple(int(part) for part in spec.split(":")) for spec in argv]
    except ValueError:
        raise SystemExit(usage) from None
    if not tables or any(len(t) != 2 or min(t) < 1 for t in tables):
        raise SystemExit(usage)
    seconds, cpu = measure_here(*tables)  # type: ignore[arg-type]
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu}))


if __name__ == "__main__":
    main(sys.argv[1:])
