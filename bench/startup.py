"""Benchmark: what a user waits before a command does anything.

Runs the installed ``metabill`` console script as a new process several
times (what a shell user and ``make demo`` pay per command) and reports the
median wall time and the median CPU time of the child (user + system, less
sensitive to a busy machine than wall time) for

* ``metabill --version`` (goal 0.15 s): the command group alone;
* ``metabill validate-config`` of the sample org (goal 0.6 s): imports, the
  loader and every domain's checks, the templates rendered on the sample
  invoices;

then times ``load_project`` in-process on the 1,000-field org of
:mod:`bench.load_config` (goal 1.0 s). The load average is printed with the
figures: on a loaded machine the wall times say little.

    python -m bench.startup [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METABILL = Path(sys.executable).with_name("metabill")


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(args: list[str], runs: int) -> dict:
    """Median wall and child-CPU seconds of ``metabill ARGS`` over ``runs`` runs (one warm-up)."""
    env = {**os.environ, "METABILL_DB_URL": ""}
    subprocess.run([str(METABILL), *args], cwd=ROOT, env=env, capture_output=True, check=False)  # warm the caches
    walls, cpus = [], []
    for _ in range(runs):
        cpu_before = _child_cpu()
        start = time.perf_counter()
        done = subprocess.run([str(METABILL), *args], cwd=ROOT, env=env, capture_output=True, check=False)
        walls.append(time.perf_counter() - start)
        cpus.append(_child_cpu() - cpu_before)
        if done.returncode != 0:
            raise SystemExit(f"metabill {' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}")
    return {"seconds_median": round(statistics.median(walls), 3), "seconds_min": round(min(walls), 3),
            "cpu_seconds_median": round(statistics.median(cpus), 3)}


def time_large_org(repeat: int) -> dict:
    """In-process ``load_project`` of the generated 1k-field org (after one warm-up load)."""
    from bench.load_config import build_org
    from engine.project import load_project

    with tempfile.TemporaryDirectory() as tmp:
        org = Path(tmp) / "org"
        org.mkdir()
        build_org(org, 100, 1000, 1000)
        load_project(org)
        timings = []
        for _ in range(repeat):
            start = time.perf_counter()
            result = load_project(org)
            timings.append(time.perf_counter() - start)
    return {"seconds_median": round(statistics.median(timings), 3), "errors": len(result.errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    version = time_command(["--version"], args.runs)
    validate = time_command(["validate-config", "."], args.runs)
    large = time_large_org(max(3, args.runs // 2))
    print(json.dumps({
        "benchmark": "startup",
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "version": {**version, "goal_seconds": 0.15},
        "validate_config_sample": {**validate, "goal_seconds": 0.6},
        "validate_1k_fields_in_process": {**large, "goal_seconds": 1.0},
    }))


if __name__ == "__main__":
    main()
