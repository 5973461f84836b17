"""A dry run reports exactly what the real run then does, and changes
nothing (every table, and on SQLite the database file itself); the batch
size changes nothing either.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from engine.storage.db import open_engine

from databases import migrate_and_load

from . import scenario
from .helpers import Harness, assert_invariants, db_summaries, snapshot, summaries, writeback_state


def _filters(report):
    return [(f.name, f.records_read, f.invoices, f.lines, [(x.object_name, x.record_id, x.message) for x in f.failures])
            for f in report.filters]


def _file_state(h: Harness) -> tuple[str, bool]:
    """sha256 of the SQLite file after all connections are closed (the WAL
    is checkpointed into the file), and whether a WAL file is left over."""
    h.engine.dispose()
    path = Path(make_url(h.url).database)
    return hashlib.sha256(path.read_bytes()).hexdigest(), Path(f"{path}-wal").exists()


def _dry_then_real(h: Harness):
    before = h.dump_all_tables()
    file_before = _file_state(h) if h.backend == "sqlite" else None
    dry = scenario.run(h, dry_run=True, batch_size=2)
    if file_before is not None:
        assert _file_state(h) == file_before
    assert h.dump_all_tables() == before

    real = scenario.run(h, batch_size=2)
    assert dry.dry_run and not real.dry_run
    assert real.invoice_count > 0
    assert summaries(dry) == summaries(real)
    assert _filters(dry) == _filters(real)
    assert (dry.joined_existing, dry.run_name) == (real.joined_existing, real.run_name)
    assert summaries(real) == db_summaries(h, [s.id for s in real.invoices])
    assert h.dump_all_tables() != before
    return real


def test_dry_run_equals_the_real_run_and_changes_nothing(billing):
    h = billing
    scenario.phase1_data(h)
    first = _dry_then_real(h)  # a new run; the final invoices are refused (draft sub invoices)
    assert (first.joined_existing, first.invoice_count, first.failure_count) == (False, 13, 5)
    assert summaries(scenario.run(h, dry_run=True)) == []  # nothing left to bill: the joined run is empty
    scenario.phase2_data(h)
    second = _dry_then_real(h)  # joins the run and builds the four final invoices with deduction lines
    assert (second.joined_existing, second.invoice_count, second.failure_count) == (True, 4, 2)
    assert sorted(s.type for s in second.invoices) == ["Final"] * 4
    assert_invariants(h)


@pytest.fixture(scope="module")
def reference(prepared_files, test_model, test_org_dir, tmp_path_factory):
    """The scenario on SQLite with the default batch size: what every other
    batch size and backend must produce."""
    path = tmp_path_factory.mktemp("reference") / "reference.db"
    shutil.copyfile(prepared_files.file_for(test_model, migrate_and_load), path)
    engine = open_engine(f"sqlite:///{path}")
    try:
        h = Harness(engine, test_model, f"sqlite:///{path}", test_org_dir)
        scenario.phase1_data(h)
        first = scenario.run(h)
        phase1 = (snapshot(h), writeback_state(h), _filters(first))
        scenario.phase2_data(h)
        second = scenario.run(h)
        phase2 = (snapshot(h), writeback_state(h), _filters(second))
    finally:
        engine.dispose()
    return phase1, phase2


@pytest.mark.parametrize("batch_size", [1, 3, 500])
def test_batch_size_does_not_change_the_invoices(billing, batch_size, reference):
    h = billing
    scenario.phase1_data(h)
    first = scenario.run(h, batch_size=batch_size)
    assert (snapshot(h), writeback_state(h), _filters(first)) == reference[0]
    scenario.phase2_data(h)
    second = scenario.run(h, batch_size=batch_size)
    assert (snapshot(h), writeback_state(h), _filters(second)) == reference[1]
    assert_invariants(h)
