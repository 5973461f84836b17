"""The spread of a benchmark's repeated measurements, in one JSON line.

On a shared machine one invocation of a benchmark says little: the same
commit's 100k-line run spreads by a third from one invocation to the next,
and its yardstick as much (see :mod:`bench.yardstick`). ``--repeat N``
(``bench.invoice_run``, ``bench.subscription_run``) measures N times, each
in a fresh process on freshly generated data with its own yardstick right
after it, and ends
with a summary line of :func:`spread` for each figure: the median is the
figure to read, min and max show how far one invocation may land from it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent


def spread(values: Iterable[float | None], digits: int = 3) -> dict | None:
    """Median, minimum and maximum of ``values`` (rounded to ``digits``),
    with how many there were; None when none was measured (a figure a
    repetition could not give, e.g. a CPU ratio with worker processes)."""
    measured = [value for value in values if value is not None]
    if not measured:
        return None
    return {"median": round(statistics.median(measured), digits), "min": round(min(measured), digits),
            "max": round(max(measured), digits), "n": len(measured)}


def spreads(lines: Sequence[dict], keys: Sequence[str], digits: int = 3) -> dict:
    """:func:`spread` of each of ``keys`` over the repetitions' JSON lines."""
    return {key: spread((line.get(key) for line in lines), digits) for key in keys}


def repetitions(value: str) -> int:
    """``--repeat``'s argument: a whole number from 1 (argparse type)."""
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: the number of repetitions is a whole number from 1")
    return count


def measured_in_fresh_processes(module: str, argv: Sequence[str], count: int) -> list[dict]:
    """``python -m module *argv --repeat 1`` ``count`` times, each a fresh
    process (as a user runs a command: nothing imported, compiled or cached
    by an earlier repetition, and its own peak RSS); every JSON line each
    prints, with its ``repetition``, echoed as it comes and returned."""
    once = [*argv, "--repeat", "1"]  # the last one counts (argparse), however the first was spelled
    lines: list[dict] = []
    for repetition in range(1, count + 1):
        done = subprocess.run([sys.executable, "-m", module, *once], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"repetition {repetition} failed:\n{done.stderr.strip()}")
        for text in done.stdout.splitlines():
            if text.startswith("{"):
                lines.append({**json.loads(text), "repetition": repetition})
                print(json.dumps(lines[-1]), flush=True)
    return lines


def load_span(lines: Sequence[dict]) -> dict:
    """The lowest one-minute load average before and the highest after, over ``lines``."""
    return {"min": min((line["load_average"]["before"][0] for line in lines), default=None),
            "max": max((line["load_average"]["after"][0] for line in lines), default=None)}
