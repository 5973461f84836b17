"""Running the exports in tests and reading their files back."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from engine.exports.datev import DatevParams, DatevReport, export_datev
from engine.exports.journal import journal_rows, write_journal_csv

from .conftest import CREATED, GOLDEN, PARAMS, Demo
from contexts import context

UPDATE_ENV = "METABILL_UPDATE_GOLDEN"


def journal_text(demo: Demo, **options) -> str:
    out = io.StringIO(newline="")
    with demo.engine.connect() as conn:
        write_journal_csv(journal_rows(conn, context(demo.model), **options), out)
    return out.getvalue()


def datev_export(demo: Demo, params: DatevParams = PARAMS, **options) -> tuple[bytes, DatevReport]:
    out = io.BytesIO()
    with demo.engine.begin() as conn:
        report = export_datev(conn, context(demo.model), out, params, created=CREATED, **options)
    return out.getvalue(), report


def datev_lines(data: bytes) -> list[list[str]]:
    """The file's records as cells (quotes removed), header line included."""
    text = data.decode("cp1252")
    assert text.endswith("\r\n")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=";"))


def datev_records(data: bytes) -> list[dict[str, str]]:
    """The data lines (from line 3) keyed by column heading."""
    lines = datev_lines(data)
    headings = lines[1]
    return [dict(zip(headings, cells)) for cells in lines[2:]]


def check_golden(name: str, data: bytes) -> None:
    """Compare with tests/exports/golden/<name>; METABILL_UPDATE_GOLDEN=1 rewrites it."""
    path: Path = GOLDEN / name
    if os.environ.get(UPDATE_ENV):
        path.write_bytes(data)
    assert path.exists(), f"{path} missing: run once with {UPDATE_ENV}=1 and review it"
    assert data == path.read_bytes(), f"{name} differs from the golden file (review, then {UPDATE_ENV}=1)"
