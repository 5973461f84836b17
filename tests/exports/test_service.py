"""The export services the CLI calls: one transaction each, typed results,
files staged and never overwritten, errors with codes."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import multiprocessing
import os
import shutil
import signal
import subprocess
from datetime import datetime

import pytest

from engine.exports.errors import DatevExportError, SepaExportError, UnknownInvoiceNumber
from engine.exports.service import (
    export_datev_file,
    export_journal,
    export_sepa_balances,
    export_sepa_debit,
    recover_export_files,
)
from engine.storage.environment import environment_error
from engine.storage.records import export_records_file

from .conftest import CREATED, PARAMS
from .helpers import datev_lines
from contexts import context


def test_export_journal_to_a_stream_and_a_file(demo_sqlite, tmp_path):
    demo = demo_sqlite
    out = io.StringIO(newline="")
    result = export_journal(demo.engine, context(demo.model), out, invoice_numbers=["INV-2024-00005"])
    assert (result.rows, result.path) == (4, None)
    assert {r["InvoiceNo"] for r in csv.DictReader(io.StringIO(out.getvalue()))} == {"INV-2024-00005"}

    path = tmp_path / "journal" / "bookings.csv"
    path.parent.mkdir()
    path.write_text("old", encoding="utf-8")
    result = export_journal(demo.engine, context(demo.model), path)
    assert (result.rows, result.path) == (23, path)  # the journal replaces its file
    assert path.read_text(encoding="utf-8").startswith("BookingDate,") and not list(path.parent.glob("*.part"))


def test_export_journal_names_unknown_invoices(demo_sqlite):
    with pytest.raises(UnknownInvoiceNumber) as caught:
        export_journal(demo_sqlite.engine, context(demo_sqlite.model), io.StringIO(),
                       invoice_numbers=["INV-2024-00005", "NOPE"])
    assert str(caught.value) == "no invoice numbered 'NOPE'" and caught.value.code == "R520"
    assert isinstance(caught.value, LookupError)


def test_export_datev_file(demo_sqlite, tmp_path):
    demo = demo_sqlite
    out = tmp_path / "extf.csv"
    result = export_datev_file(demo.engine, context(demo.model), out, PARAMS, created=CREATED)
    assert result.written and result.path == out and result.report.exported == 16
    assert len(datev_lines(out.read_bytes())) == 2 + 16

    again = export_datev_file(demo.engine, context(demo.model), tmp_path / "again.csv", PARAMS, created=CREATED)
    assert not again.written and again.report.exported == 0 and not (tmp_path / "again.csv").exists()
    assert not list(tmp_path.glob("*.part"))

    with pytest.raises(DatevExportError, match="never overwritten") as caught:
        export_datev_file(demo.engine, context(demo.model), out, PARAMS, force=True, created=CREATED)
    assert caught.value.where.file == str(out)


def test_export_datev_file_default_name_and_busy_part(demo_sqlite, tmp_path, monkeypatch):
    demo = demo_sqlite
    monkeypatch.chdir(tmp_path)
    created = datetime(2024, 10, 1, 12, 0, 0)
    busy = tmp_path / "EXTF_Buchungsstapel_20241001_120000.csv.part"
    with open(busy, "wb") as writer:  # a writer at work holds the lock of its part file
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DatevExportError, match="another export may be running"):
            export_datev_file(demo.engine, context(demo.model), None, PARAMS, created=created)
    # The writer is gone (killed, say) and left its part file: it is taken over.
    assert busy.exists()
    result = export_datev_file(demo.engine, context(demo.model), None, PARAMS, created=created)
    assert result.path.name == "EXTF_Buchungsstapel_20241001_120000.csv" and (tmp_path / result.path).exists()
    assert not busy.exists()


def test_sepa_services_and_their_dry_run(demo_sqlite, tmp_path):
    demo = demo_sqlite
    out = tmp_path / "debit.xml"
    dry = export_sepa_debit(demo.engine, context(demo.model), out, business_entity="DE01",
                            created=datetime(2024, 10, 1, 12, 0, 0), dry_run=True)
    assert dry.dry_run and dry.file is None and len(dry.transactions) == 2 and dry.history_records == 2
    assert not out.exists() and demo.rows("InvoiceExportHistory") == []  # recorded, then rolled back

    report = export_sepa_debit(demo.engine, context(demo.model), out, business_entity="DE01",
                               created=datetime(2024, 10, 1, 12, 0, 0))
    assert not report.dry_run and report.file == out and out.read_bytes() == report.data
    with pytest.raises(SepaExportError, match="never overwritten"):
        export_sepa_debit(demo.engine, context(demo.model), out, business_entity="DE01", dry_run=True)

    nothing = export_sepa_balances(demo.engine, context(demo.model), tmp_path / "balances.xml",
                                   business_entity="DE01")
    assert nothing.data is None and nothing.file is None and not (tmp_path / "balances.xml").exists()


# --- every file atomic and durable; no exported detail lost or repeated (issue 14) ----


class Killed(BaseException):
    """The process dies here (not an Exception: nothing may catch it)."""


def _exported(demo) -> set[int]:
    table = demo.table("BookingDetail")
    return {r["id"] for r in demo.rows("BookingDetail", table.c.exported.is_(True))}


def _file_details(path) -> int:
    return len(datev_lines(path.read_bytes())) - 2


@pytest.mark.parametrize("step", ["write", "sync", "commit"])
def test_a_failure_before_the_commit_exports_nothing(demo, tmp_path, monkeypatch, step):
    """Out of space while the file is written or synced, or the database gone
    at the commit: no detail is marked, no document, no file, no part file."""
    from engine.exports import service as service_module
    from engine.storage import files as files_module

    out = tmp_path / "extf.csv"
    if step == "write":
        class Full(io.BytesIO):
            def getvalue(self):
                raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(service_module.io, "BytesIO", Full)
    elif step == "sync":
        def no_space(self):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.part))
        monkeypatch.setattr(files_module.StagedFile, "sync", no_space)
    else:
        original = service_module.record_batch

        def then_fail(conn, *args):
            original(conn, *args)
            raise ConnectionError("the server went away at the commit")
        monkeypatch.setattr(service_module, "record_batch", then_fail)
    with pytest.raises((OSError, ConnectionError)):
        export_datev_file(demo.engine, context(demo.model), out, PARAMS, created=CREATED)
    assert _exported(demo) == set() and demo.rows("AccountingDocument") == []
    assert not out.exists() and not list(tmp_path.glob("*.part"))
    monkeypatch.undo()
    result = export_datev_file(demo.engine, context(demo.model), out, PARAMS, created=CREATED)
    assert result.report.exported == 16 and _file_details(out) == 16 and not result.recovered


@pytest.mark.parametrize("step", ["rename", "record"])
def test_a_death_after_the_commit_loses_no_exported_detail(demo, tmp_path, monkeypatch, step):
    """The 1,500-details case of the issue, in small: the details are marked
    exported, the process dies before the file has its name (or before the
    published file is recorded). The next export writes the file again from
    its batch (or finds it intact), and exports nothing twice."""
    from engine.exports import output as output_module

    out = tmp_path / "extf.csv"
    if step == "rename":
        def die(self):
            raise Killed
        monkeypatch.setattr(output_module.StagedFile, "publish", die)
    else:
        def die_after(engine, batch_id, path=None):
            raise Killed
        monkeypatch.setattr(output_module, "mark_published", die_after)
    with pytest.raises(Killed):
        export_datev_file(demo.engine, context(demo.model), out, PARAMS, created=CREATED)
    marked = _exported(demo)
    assert len(marked) == 16  # committed: these will never be exported again
    assert out.exists() == (step == "record")
    monkeypatch.undo()

    later = tmp_path / "later.csv"
    result = export_datev_file(demo.engine, context(demo.model), later, PARAMS, created=CREATED)
    assert result.report.exported == 0 and not later.exists()
    assert _file_details(out) == 16  # the lost file is back, complete
    assert [(r.path, r.details, r.how) for r in result.recovered] == ([(out, 16, "recreated")] if step == "rename" else [])
    assert recover_export_files(demo.engine, context(demo.model)) == []  # nothing pending any more


def test_a_killed_writer_leaves_a_part_file_the_recovery_takes_over(demo_sqlite, tmp_path):
    """A real kill -9 after the commit: the synced part file stays behind
    (no lock held any more); recovery writes the file under its name."""
    out = tmp_path / "extf.csv"
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_export_and_hang, args=(str(demo_sqlite.url), str(out), queue))
    process.start()
    assert queue.get(timeout=120) == "committed"
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=120)
    part = out.with_name(out.name + ".part")
    assert part.exists() and not out.exists() and len(_exported(demo_sqlite)) == 16
    written = recover_export_files(demo_sqlite.engine, context(demo_sqlite.model))
    assert [(w.path, w.how) for w in written] == [(out, "recreated")]
    assert _file_details(out) == 16 and not part.exists()


def _export_and_hang(url: str, out: str, queue) -> None:
    import time
    from pathlib import Path

    from engine.exports import output as output_module
    from engine.project import load_project
    from engine.storage.db import open_engine

    from config.orgcopy import REPO_ROOT

    def hang(self):
        queue.put("committed")
        time.sleep(3600)

    output_module.StagedFile.publish = hang
    model = load_project(REPO_ROOT).model
    export_datev_file(open_engine(url), context(model), Path(out), PARAMS, created=CREATED)


def test_a_file_in_the_way_is_never_overwritten_by_the_recovery(demo_sqlite, tmp_path, monkeypatch):
    from engine.exports import output as output_module

    out = tmp_path / "extf.csv"

    def die(self):
        raise Killed
    monkeypatch.setattr(output_module.StagedFile, "publish", die)
    with pytest.raises(Killed):
        export_datev_file(demo_sqlite.engine, context(demo_sqlite.model), out, PARAMS, created=CREATED)
    monkeypatch.undo()
    out.write_bytes(b"someone else's file")
    [written] = recover_export_files(demo_sqlite.engine, context(demo_sqlite.model))
    assert written.how == "beside" and written.path == out.with_name("extf.csv.batch-1")
    assert out.read_bytes() == b"someone else's file" and _file_details(written.path) == 16


def test_a_full_disk_leaves_no_partial_export_file(demo_sqlite, small_disk):
    """On a real small file system where one is available (tmpfs), else with
    ENOSPC injected: the DATEV file, the journal and a record export fail
    cleanly, leave no partial file and mark nothing."""
    demo = demo_sqlite
    ctx = context(demo.model)
    with small_disk() as folder:
        with pytest.raises(OSError) as full:
            export_datev_file(demo.engine, ctx, folder / "extf.csv", PARAMS, created=CREATED)
        assert full.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            export_journal(demo.engine, ctx, folder / "journal.csv")
        with pytest.raises(OSError):
            export_records_file(demo.engine, ctx, "BookingDetail", folder / "details.csv")
        assert sorted(p.name for p in folder.iterdir() if p.name != "filler") == []
    assert _exported(demo) == set()
    assert environment_error(full.value).code == "R904"


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """``with small_disk() as folder``: a folder on a tiny tmpfs that is
    full (mounted when this process may, i.e. as root on Linux), else
    a folder in which every write fails with ENOSPC."""
    @contextlib.contextmanager
    def make():
        folder = tmp_path / "small"
        folder.mkdir()
        mounted = os.geteuid() == 0 and not os.environ.get("METABILL_TEST_NO_TMPFS") and shutil.which("mount") and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True).returncode == 0
        try:
            if mounted:
                with open(folder / "filler", "wb", buffering=0) as filler:  # fill it up
                    with contextlib.suppress(OSError):
                        while True:
                            filler.write(b"\0" * 4096)
            else:
                from engine.storage import files as files_module

                class FullDisk:
                    """A staged file's handle on a full disk: every write fails."""

                    def __init__(self, handle):
                        self._handle = handle

                    def write(self, data):
                        raise OSError(errno.ENOSPC, "No space left on device")

                    def __getattr__(self, name):
                        return getattr(self._handle, name)

                real_init = files_module.StagedFile.__init__

                def init(self, path, handle, part):
                    real_init(self, path, FullDisk(handle) if part is not None else handle, part)
                monkeypatch.setattr(files_module.StagedFile, "__init__", init)
            yield folder
        finally:
            if mounted:
                subprocess.run(["umount", str(folder)], check=False)
    return make


def test_a_sepa_export_that_dies_before_its_rename_is_written_again(demo, tmp_path, monkeypatch):
    """The SEPA history is committed (the invoices are locked as exported),
    the process dies before the file has its name: the next export, or
    ``export recover``, writes the file from its batch; nothing is collected
    twice and nothing is lost."""
    from engine.exports import output as output_module

    out = tmp_path / "debit.xml"

    def die(self):
        raise Killed

    monkeypatch.setattr(output_module.StagedFile, "publish", die)
    with pytest.raises(Killed):
        export_sepa_debit(demo.engine, context(demo.model), out, business_entity="DE01", created=CREATED)
    assert not out.exists()
    monkeypatch.undo()
    [written] = recover_export_files(demo.engine, context(demo.model))
    assert (written.path, written.how) == (out, "recreated")
    assert b"INV-2024-00010" in out.read_bytes()
    again = export_sepa_debit(demo.engine, context(demo.model), tmp_path / "again.xml", business_entity="DE01",
                              created=CREATED)
    assert again.transactions == [] and not (tmp_path / "again.xml").exists()
