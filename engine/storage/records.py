"""Records in and out: loading CSV/JSON files and exporting CSV.

Loading is all-or-nothing. A file is read as a stream (CSV: :mod:`.csvio`;
JSON, parsed whole within a size cap: :mod:`.jsonio`), its headers are
classified (:mod:`.headers`), and its rows are validated in chunks, each
chunk inserted (Core ``insert()``, executemany) inside a single transaction
as long as no problem has been found (:mod:`.loading`); at the end, one
problem anywhere rolls the whole transaction back. Memory therefore stays
bounded by the chunk size plus the keys needed for uniqueness checks,
whatever the file size. Every problem is collected (up to
:data:`MAX_ERRORS`) as a :class:`~engine.storage.csvio.RecordError`, never
raised as a traceback; :func:`load_file` turns them into one
:class:`~engine.storage.csvio.InputFileRefused`.

Values are converted by :func:`engine.config.values.coerce`, the one
conversion shared with settings, so a CSV cell means what the same text means
in YAML.

Exporting streams the table by keyset pagination (``WHERE id > last ORDER BY
id LIMIT n``): no whole-table fetch, the same on both backends. Text cells
that a spreadsheet would run as a formula are prefixed with ``'`` (and a
text starting with ``'`` gets a second one); loading removes that one mark
again, so an export loads back to exactly the stored values
(:func:`~engine.storage.csvio.record_cell` / :func:`~engine.storage.csvio.restore_cell`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, TextIO

import sqlalchemy as sa

from engine.config.contract import engine_owned
from engine.config.diagnostics import did_you_mean
from engine.config.model import ObjectDef
from engine.domain.errors import EngineError, Problem, Where

from . import schema as s
from .context import Context
from .csvio import MAX_ROWS, InputFileRefused, RecordError, csv_records, record_cell, restore_cell
from .db import transaction
from .files import staged_file
from .headers import LoadColumn
from .jsonio import json_records
from .loading import LoadRow, RecordLoader, StopLoading
from .records_upsert import UpsertKeyInvalid, UpsertLoader, upsert_key

#: Longest cell, in characters (also the csv module's default field limit).
MAX_CELL = 131_072
#: Largest JSON file (JSON is parsed whole; CSV is streamed and has no such cap).
MAX_JSON_BYTES = 256 * 2**20
#: Problems collected before a load gives up reading.
MAX_ERRORS = 1_000
#: Rows validated, looked up and inserted together.
CHUNK_ROWS = 2_000
#: Rows fetched per page when exporting.
EXPORT_PAGE = 5_000

__all__ = [
    "CHUNK_ROWS", "EXPORT_PAGE", "MAX_CELL", "MAX_ERRORS", "MAX_JSON_BYTES", "MAX_ROWS",
    "EngineOwnedObject", "ExportFieldError", "UpsertKeyInvalid", "ExportReport", "InputFileRefused", "LoadReport", "NotADataObject", "RecordError", "UnknownObject",
    "data_object", "export_records", "loadable_object", "export_records_file", "load_file", "load_records",
    "upsert_key",
]


class UnknownObject(EngineError, KeyError):
    """The named object is not defined in the org's metadata."""

    code = "R121"


class NotADataObject(EngineError, ValueError):
    """The named object is a setting, whose records live in the org's
    metadata, not in the database.

    Settings are neither loaded nor exported as records."""

    code = "R122"


class EngineOwnedObject(EngineError, ValueError):
    """The named object's records are created by the engine only; a record file
    cannot load them.

    Invoices, their lines, booking details, balances, number ranges and the
    other objects of ``engine.config.contract.ENGINE_OWNED`` carry invariants
    (gapless numbers, balanced postings, balances that add up to their
    invoice) that only the commands creating them keep."""

    code = "R124"


class ExportFieldError(EngineError, ValueError):
    """A field asked for in an export does not exist or has no stored value."""

    code = "R123"


def loadable_object(ctx: Context, object_name: str) -> ObjectDef:
    """:func:`data_object`, refusing objects only the engine writes
    (:class:`EngineOwnedObject`, naming the commands that create them)."""
    obj = data_object(ctx, object_name)
    commands = engine_owned(obj.name)
    if commands is not None:
        raise EngineOwnedObject(
            f"{obj.name} records are created by the engine, not loaded: {commands}",
            where=Where(object=obj.name),
            hint=f"load the source records (accounts, orders, ...) and let {commands.split(',')[0]} create them; "
                 f"'metabill export-records {obj.name}' still exports them",
        )
    return obj


def data_object(ctx: Context, object_name: str) -> ObjectDef:
    """The data object ``object_name`` names (any case), or
    :class:`UnknownObject` / :class:`NotADataObject`."""
    obj = ctx.model.object(object_name)
    if obj is None:
        names = [o.name for o in ctx.model.data_objects]
        raise UnknownObject(f"'{object_name}' is not a data object of this org",
                            where=Where(object=object_name), hint=did_you_mean(object_name, names))
    if obj.is_setting:
        raise NotADataObject(f"'{object_name}' is not a data object of this org", where=Where(object=obj.name),
                             hint=f"{obj.name} is a setting; its records live in the org metadata, not in the database")
    return obj


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The outcome of :func:`load_records`: rows inserted (0 when there were
    errors: nothing is written then) and every problem found."""

    object_name: str
    file: str
    inserted: int
    errors: tuple[RecordError, ...]
    #: With an upsert key: records the file changed, and records it named
    #: with the values they already had.
    updated: int = 0
    unchanged: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def problems(self) -> tuple[Problem, ...]:
        """The problems as runtime-error data (code, file, row, column)."""
        return tuple(error.problem for error in self.errors)

    def render(self) -> str:
        if self.ok and (self.updated or self.unchanged):
            return (f"{self.file}: {self.object_name}: {self.inserted} inserted, {self.updated} updated, "
                    f"{self.unchanged} unchanged.")
        if self.ok:
            return f"{self.file}: {self.inserted} {self.object_name} record{'s' if self.inserted != 1 else ''} loaded."
        lines = [e.render() for e in self.errors]
        lines.append(
            f"{self.file}: {len(self.errors)} problem{'s' if len(self.errors) != 1 else ''}; nothing was loaded."
        )
        return "\n".join(lines)


class _Rollback(Exception):
    """Leaves the load transaction so that it rolls back."""


def load_records(
    engine: sa.Engine,
    ctx: Context,
    object_name: str,
    path: str | Path,
    *,
    fmt: str | None = None,
    key: str | None = None,
) -> LoadReport:
    """Insert the records of a CSV or JSON file into ``object_name``'s table.

    ``fmt`` is ``"csv"`` or ``"json"``; by default the file suffix decides.
    With ``key`` (``Id``, or a unique or external-id field) a row whose key
    names an existing record updates it instead
    (:class:`~engine.storage.records_upsert.UpsertLoader`); an invalid key is
    :class:`~engine.storage.records_upsert.UpsertKeyInvalid`.
    All or nothing: when the report has errors, nothing was written.
    Raises :class:`UnknownObject` (a KeyError) for an unknown object and
    :class:`NotADataObject` (a ValueError) for a setting.

    This is the loading primitive (tests and preparations seed any object
    with it); the ``load`` command goes through :func:`load_file`, which
    also refuses objects only the engine writes.
    """
    path = Path(path)
    display = str(path)
    obj = data_object(ctx, object_name)
    if key is not None:
        upsert_key(obj, key)  # refused before anything is read
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind not in ("csv", "json"):
        problem = RecordError(display, None, None, f"unknown file format {kind!r}: use a .csv or .json file")
        return LoadReport(obj.name, display, 0, (problem,))
    if not path.is_file():
        return LoadReport(obj.name, display, 0, (RecordError(display, None, None, "no such file"),))

    loader: RecordLoader | None = None
    try:
        with transaction(engine) as conn:
            if key is None:
                loader = RecordLoader(conn, ctx, obj, display, max_cell=MAX_CELL, max_errors=MAX_ERRORS)
            else:
                loader = UpsertLoader(conn, ctx, obj, display, max_cell=MAX_CELL, max_errors=MAX_ERRORS, key=key)
            if not sa.inspect(conn).has_table(obj.table_name):
                loader.error(None, None, f"the database has no table for {obj.name}; apply the schema migration first")
                raise _Rollback
            try:
                if kind == "csv":
                    _load_csv(loader, path)
                else:
                    _load_json(loader, path)
            except StopLoading:
                pass
            except OSError as exc:
                loader.error(None, None, f"cannot read the file: {exc.strerror or exc}")
            if loader.errors:
                raise _Rollback
    except _Rollback:
        pass
    assert loader is not None
    if loader.errors:
        return LoadReport(obj.name, display, 0, loader.sorted_errors())
    return LoadReport(obj.name, display, loader.inserted, (), getattr(loader, "updated", 0),
                      getattr(loader, "unchanged", 0))


def load_file(engine: sa.Engine, ctx: Context, object_name: str, path: str | Path, *,
              fmt: str | None = None, key: str | None = None) -> LoadReport:
    """:func:`load_records` for the ``load`` command: the report of a load that
    wrote its rows, else :class:`InputFileRefused` with every problem of the
    file (its message: ``3 problem(s) in FILE; nothing was loaded``).
    :class:`EngineOwnedObject` for an object only the engine writes
    (:data:`engine.config.contract.ENGINE_OWNED`): nothing is read then."""
    loadable_object(ctx, object_name)
    report = load_records(engine, ctx, object_name, path, fmt=fmt, key=key)
    if not report.ok:
        raise InputFileRefused.of(f"{len(report.errors)} problem(s) in {report.file}; nothing was loaded",
                                  report.errors)
    return report


def _load_csv(loader: RecordLoader, path: Path) -> None:
    headers: list[str] | None = None
    columns: dict[str, LoadColumn] = {}
    chunk: list[LoadRow] = []
    for line, cells in csv_records(path, loader.display, loader.report, MAX_ROWS):
        if headers is None:
            headers = cells
            columns = loader.check_header(headers, line)
            continue
        chunk.append(loader.parse(line, dict(zip(headers, map(restore_cell, cells))), columns))
        if len(chunk) >= CHUNK_ROWS:
            loader.process(chunk, columns)
            chunk = []
    if chunk:
        loader.process(chunk, columns)


def _load_json(loader: RecordLoader, path: Path) -> None:
    chunk: list[LoadRow] = []
    columns: dict[str, LoadColumn] = {}
    items = json_records(path, loader.display, loader.report, max_bytes=MAX_JSON_BYTES, max_rows=MAX_ROWS)
    for index, item in items:
        keys = [str(k) for k in item]
        for key in keys:
            if key not in columns:
                column = loader.column_for(key, index)
                if column is not None:
                    columns[key] = column
        usable: dict[str, LoadColumn] = {}
        targets: dict[str, str] = {}
        row_bad = False
        for key in keys:
            column = columns.get(key)
            if column is None:
                continue
            if column.column in targets:
                loader.error(index, key, f"repeats the key {targets[column.column]!r}")
                row_bad = True
                continue
            targets[column.column] = key
            usable[key] = column
        row = loader.parse(index, {k: item[k] for k in keys if k in usable}, usable)
        if row_bad:
            row.failed.add("")
        chunk.append(row)
        if len(chunk) >= CHUNK_ROWS:
            loader.process(chunk, columns)
            chunk = []
    if chunk:
        loader.process(chunk, columns)


# ---------------------------------------------------------------------------
# Exporting


def _export_columns(obj: ObjectDef, fields: Iterable[str] | None) -> list[tuple[str, str]]:
    """(header, column) pairs to export."""
    name = s.name_field(obj)
    default: list[tuple[str, str]] = [("Id", s.ID), ((name.name if name else "Name"), s.NAME)]
    default += [(f.name, f.column_name) for f in s.data_fields(obj)]
    if fields is None:
        return default
    system = {"id": ("Id", s.ID), "createddate": ("CreatedDate", s.CREATED), "lastmodifieddate": ("LastModifiedDate", s.MODIFIED)}
    chosen = []
    for requested in fields:
        key = requested.strip().lower()
        if key in system:
            chosen.append(system[key])
            continue
        field = obj.field(key)
        if field is None:
            hint = did_you_mean(requested, [h for h, _ in default])
            raise ExportFieldError(f"{obj.name} has no field {requested!r}" + (f"; {hint}" if hint else ""),
                                   where=Where(object=obj.name, field=requested))
        if not field.is_stored:
            raise ExportFieldError(f"{obj.name}.{field.name} is a formula field and has no stored value",
                                   where=Where(object=obj.name, field=field.name))
        chosen.append((field.name, field.column_name))
    return chosen


def export_records(
    engine: sa.Engine,
    ctx: Context,
    object_name: str,
    out: TextIO,
    *,
    fields: Iterable[str] | None = None,
) -> int:
    """Write ``object_name``'s records to ``out`` as CSV, ordered by id, and
    return the number of records. ``fields`` picks columns (API names, any
    order); by default ``Id``, ``Name`` and every stored field. Text cells
    a spreadsheet would run as a formula (``= + - @`` TAB CR) carry a
    protective ``'``, and a text starting with ``'`` gets a second one
    (:func:`~engine.storage.csvio.record_cell`), so the file loads back with
    :func:`load_records` to exactly the stored values."""
    obj = data_object(ctx, object_name)
    columns = _export_columns(obj, fields)
    table = s.data_table(ctx.metadata, obj)
    selected = [table.c[column] for _, column in columns]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([header for header, _ in columns])
    count = 0
    last_id: int | None = None
    with transaction(engine, readonly=True) as conn:
        while True:
            query = sa.select(table.c[s.ID], *selected).order_by(table.c[s.ID]).limit(EXPORT_PAGE)
            if last_id is not None:
                query = query.where(table.c[s.ID] > last_id)
            rows = conn.execute(query).all()
            if not rows:
                break
            for row in rows:
                writer.writerow([record_cell(v) for v in row[1:]])
            count += len(rows)
            last_id = rows[-1][0]
            if len(rows) < EXPORT_PAGE:
                break
    return count


@dataclass(frozen=True, slots=True)
class ExportReport:
    """The outcome of :func:`export_records_file`: which object (API
    spelling), the file written and how many records it holds."""

    object_name: str
    path: Path
    count: int


def export_records_file(engine: sa.Engine, ctx: Context, object_name: str, path: str | Path, *,
                        fields: Iterable[str] | None = None) -> ExportReport:
    """:func:`export_records` into the file ``path`` (UTF-8; folders
    created), written whole or not at all (:func:`~engine.storage.files.staged_file`)."""
    obj = data_object(ctx, object_name)
    with staged_file(Path(path), binary=False, encoding="utf-8", newline="") as staged:
        count = export_records(engine, ctx, obj.name, staged.handle, fields=fields)
        staged.publish()
    return ExportReport(obj.name, Path(path), count)
