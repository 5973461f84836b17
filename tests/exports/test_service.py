"""The export services the CLI calls: one transaction each, typed results,
files staged and never overwritten, errors with codes."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import pytest

from engine.exports.errors import DatevExportError, SepaExportError, UnknownInvoiceNumber
from engine.exports.service import (
    export_datev_file,
    export_journal,
    export_sepa_balances,
    export_sepa_debit,
)

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
    busy.write_bytes(b"")
    with pytest.raises(DatevExportError, match="another export may be running"):
        export_datev_file(demo.engine, context(demo.model), None, PARAMS, created=created)
    busy.unlink()
    result = export_datev_file(demo.engine, context(demo.model), None, PARAMS, created=created)
    assert result.path.name == "EXTF_Buchungsstapel_20241001_120000.csv" and (tmp_path / result.path).exists()


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
