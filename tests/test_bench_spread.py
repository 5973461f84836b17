"""``--repeat`` of the benchmarks (bench.spread): N measurements, each in a
fresh process on fresh data, summed up as median, min and max, because one
invocation's figure on a shared machine says little."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench.spread import repetitions, spread, spreads

ROOT = Path(__file__).resolve().parent.parent


def test_the_spread_is_median_min_and_max_of_what_was_measured():
    assert spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    assert spread([None, 0.1234, None]) == {"median": 0.123, "min": 0.123, "max": 0.123, "n": 1}
    assert spread([None, None]) is None
    assert spreads([{"a": 1.0, "b": None}, {"a": 3.0}], ["a", "b"]) == {
        "a": {"median": 2.0, "min": 1.0, "max": 3.0, "n": 2}, "b": None}


@pytest.mark.parametrize("text", ["0", "-2", "two", "1.5", ""])
def test_a_repetition_count_is_a_whole_number_from_one(text):
    with pytest.raises(argparse.ArgumentTypeError, match="whole number from 1"):
        repetitions(text)
    assert repetitions("3") == 3


def run_benchmark(*argv: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_invoice_run_repeated_measures_in_fresh_processes_and_sums_up():
    out = run_benchmark("bench.invoice_run", "--lines", "200", "--repeat", "2")
    measured, summary = out[:-1], out[-1]
    assert [line["repetition"] for line in measured] == [1, 2]
    assert not any(line.get("summary") for line in measured)
    assert summary["summary"] and summary["repetitions"] == 2
    for key in ("seconds", "ratio_full_width", "raw_insert_seconds_full_width"):
        values = [line[key] for line in measured]
        assert summary[key] == {"median": round(statistics.median(values), 3), "min": min(values),
                                "max": max(values), "n": 2}
    # Each repetition's own process: its peak RSS is its own, not the largest so far.
    assert summary["peak_rss_mb"]["n"] == 2


def test_subscription_run_repeated_sums_up_each_month():
    out = run_benchmark("bench.subscription_run", "--subscriptions", "30", "--months", "2", "--repeat", "2")
    months = [line for line in out if not line.get("summary")]
    assert sorted((line["month"], line["repetition"]) for line in months) == [
        ("2024-01", 1), ("2024-01", 2), ("2024-02", 1), ("2024-02", 2)]
    summary = out[-1]
    assert summary["summary"] and summary["repetitions"] == 2
    assert [month["month"] for month in summary["per_month"]] == ["2024-01", "2024-02"]
    for month in summary["per_month"]:
        ratios = [line["ratio_full_width"] for line in months if line["month"] == month["month"]]
        assert month["ratio_full_width"]["min"] == min(ratios) and month["ratio_full_width"]["max"] == max(ratios)


def test_repeating_a_profiled_run_is_refused():
    done = subprocess.run([sys.executable, "-m", "bench.invoice_run", "--repeat", "2", "--cprofile", "x.prof"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--cprofile profiles one run" in done.stderr
