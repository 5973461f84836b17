"""Crash safety of the invoice run (run.py: "a crash loses at most the batch
in flight, and the next run bills exactly what is left").

A SQLAlchemy ``before_cursor_execute`` listener makes the database fail from
the (k+1)-th SQL statement of a run on (helpers.fault_after). Then the
listener is removed and the same run is started again. The result must equal
an uninterrupted run on a fresh, identical database: the same invoices
(account, type, header values, lines, totals), the same write-back on every
source record, every source billed at most once per suffix (``_mb_claim``
agrees with the ON_Invoice<sfx> fields), no line without its invoice and no
invoice without lines.

k runs over every third statement of the uninterrupted run (batch size 2,
so many batches have committed before the fault), for both phases of the
scenario (scenario.py): the first run with its sub invoices and errors, and
the second, joined run that builds the final invoices with deduction lines.
On PostgreSQL a few k spread over the run are checked against the SQLite
reference.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.storage.db import open_engine

from databases import migrate_and_load

from . import scenario
from .helpers import (
    Harness, InjectedFault, assert_invariants, count_statements, fault_after, snapshot, writeback_state,
)

STRIDE = 3
BATCH = 2


def _state(h: Harness) -> tuple:
    runs = h.select("InvoiceRun")
    return (
        snapshot(h),
        writeback_state(h),
        sorted((c["source_table"], c["source_id"], c["suffix"]) for c in h.claims()),
        [(r["name"], r["status"], r["numinvoices"], r["numnegativeinvoices"]) for r in runs],
    )


class _Files:
    """SQLite files: the prepared start of each phase, copied over one fixed
    attempt file per attempt. The attempt file keeps one engine (disposed
    before each copy), so SQLAlchemy's statement cache stays warm."""

    def __init__(self, root: Path, template: Path, model, org_dir: Path):
        self.start = {1: root / "phase1.db", 2: root / "phase2.db"}
        self.path = root / "attempt.db"
        self.url = f"sqlite:///{self.path}"
        self.engine = open_engine(self.url)
        self.harness = Harness(self.engine, model, self.url, org_dir)
        shutil.copyfile(template, self.start[1])
        h = self.fresh(1)
        scenario.phase1_data(h)
        self.engine.dispose()
        shutil.copyfile(self.path, self.start[1])
        h = self.fresh(1)
        scenario.run(h, batch_size=BATCH)
        scenario.phase2_data(h)
        self.engine.dispose()
        shutil.copyfile(self.path, self.start[2])

    def fresh(self, phase: int) -> Harness:
        assert self.engine.pool.checkedout() == 0, "a connection was left open"
        self.engine.dispose()
        for leftover in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            leftover.unlink(missing_ok=True)
        shutil.copyfile(self.start[phase], self.path)
        return self.harness


@pytest.fixture(scope="module")
def files(prepared_files, test_model, test_org_dir, tmp_path_factory):
    template = prepared_files.file_for(test_model, migrate_and_load)
    files = _Files(tmp_path_factory.mktemp("crash"), template, test_model, test_org_dir)
    yield files
    files.engine.dispose()


@pytest.fixture(scope="module")
def reference(files) -> dict[int, tuple[int, tuple]]:
    """Per phase: the statement count of an uninterrupted run and its state."""
    out = {}
    for phase in (1, 2):
        h = files.fresh(phase)
        with count_statements(h.engine) as counter:
            scenario.run(h, batch_size=BATCH)
        assert_invariants(h)
        out[phase] = (counter[0], _state(h))
    return out


@pytest.mark.parametrize("phase", [1, 2])
def test_crash_at_every_third_statement_then_rerun(files, reference, phase):
    total, expected = reference[phase]
    assert total > 30  # a run of many batches
    mismatches = []
    for k in range(0, total, STRIDE):
        h = files.fresh(phase)
        with fault_after(h.engine, k) as counter:
            with pytest.raises(InjectedFault):
                scenario.run(h, batch_size=BATCH)
        # The run stopped at the first failing statement; the one statement
        # after it is its attempt to mark the run Failed (issue 14: no run
        # stays Running), which fails the same way here.
        assert k + 1 <= counter[0] <= k + 2
        assert h.engine.pool.checkedout() == 0
        assert_invariants(h)  # even the crashed state is consistent
        scenario.run(h, batch_size=BATCH)
        assert_invariants(h)
        if _state(h) != expected:
            mismatches.append(k)
    assert mismatches == [], f"state after crash at statement k+1 and re-run differs for k in {mismatches}"


@pytest.mark.postgres
@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.7])
def test_crash_and_rerun_on_postgresql(pg_schema_url, prepared, test_model, test_org_dir, reference, fraction):
    h = Harness(prepared(pg_schema_url, test_model), test_model, pg_schema_url, test_org_dir)
    scenario.phase1_data(h)
    total, expected = reference[1]
    k = int(total * fraction)
    with fault_after(h.engine, k):
        with pytest.raises(InjectedFault):
            scenario.run(h, batch_size=BATCH)
    assert_invariants(h)
    scenario.run(h, batch_size=BATCH)
    assert_invariants(h)
    assert _state(h) == expected
