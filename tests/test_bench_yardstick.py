"""The benchmarks' raw-insert yardstick (bench.yardstick): measured in a
child process, so that the benchmark's own heap after a run cannot slow it
(its state could make the yardstick slower and the ratio look better)."""

from __future__ import annotations

import os

import pytest

import bench.yardstick as yardstick


def test_the_yardstick_is_measured_in_a_child_process(monkeypatch):
    measured_here: list[int] = []
    original = yardstick.measure_here
    monkeypatch.setattr(yardstick, "measure_here",
                        lambda *tables: measured_here.append(os.getpid()) or original(*tables))
    seconds, cpu = yardstick.raw_insert_times((300, 74), (900, 36))
    assert seconds > 0 and cpu > 0
    assert measured_here == []  # not in this process: the patched function was never called here


@pytest.mark.parametrize("argv", [["-1:3"], ["ten:3"], ["5"], ["5:0"], []])
def test_a_bad_table_spec_is_a_usage_message_not_a_traceback(argv):
    with pytest.raises(SystemExit, match="ROWS:COLUMNS"):
        yardstick.main(argv)


def test_a_failing_child_says_why():
    with pytest.raises(SystemExit, match=r"(?s)the yardstick failed .*ROWS:COLUMNS"):
        yardstick.raw_insert_times((-1, 3))
