"""Records in and out: loading CSV/JSON files and exporting CSV.

Loading is all-or-nothing. A file is read as a stream, validated in chunks
and each chunk is inserted (Core ``insert()``, executemany) inside a single
transaction as long as no problem has been found; at the end, one problem
anywhere rolls the whole transaction back. Memory therefore stays bounded by
the chunk size plus the keys needed for uniqueness checks, whatever the file
size. Every problem is collected (up to :data:`MAX_ERRORS`) as a
:class:`RecordError`, never raised as a traceback.

Values are converted by :func:`engine.config.values.coerce`, the one
conversion shared with settings, so a CSV cell means what the same text means
in YAML.

Exporting streams the table by keyset pagination (``WHERE id > last ORDER BY
id LIMIT n``): no whole-table fetch, the same on both backends. Text cells
that a spreadsheet would run as a formula are prefixed with ``'``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TextIO

import sqlalchemy as sa

from engine.config.diagnostics import did_you_mean
from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.config.values import ValueProblem, coerce, parse_id
from engine.storage.context import Context

from . import schema as s
from .csvio import MAX_ROWS, RecordError, cell_text, csv_records
from .db import transaction
from .ids import advance_ids_past, next_autonumbers, reserve_ids

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

_ENGINE_SET = (s.CREATED, s.MODIFIED)


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The outcome of :func:`load_records`: rows inserted (0 when there were
    errors: nothing is written then) and every problem found."""

    object_name: str
    file: str
    inserted: int
    errors: tuple[RecordError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    def render(self) -> str:
        if self.ok:
            return f"{self.file}: {self.inserted} {self.object_name} record{'s' if self.inserted != 1 else ''} loaded."
        lines = [e.render() for e in self.errors]
        lines.append(
            f"{self.file}: {len(self.errors)} problem{'s' if len(self.errors) != 1 else ''}; nothing was loaded."
        )
        return "\n".join(lines)


class _Stop(Exception):
    """Ends reading: too many problems, or the database refused a write."""


class _Rollback(Exception):
    """Leaves the load transaction so that it rolls back."""


# ---------------------------------------------------------------------------
# Columns of a data file


@dataclass(frozen=True, slots=True)
class _Column:
    header: str
    kind: str  # "id" | "field" | "ref" (lookup by external id)
    field: FieldDef | None = None
    target: ObjectDef | None = None
    target_field: FieldDef | None = None

    @property
    def column(self) -> str:
        return s.ID if self.kind == "id" else self.field.column_name


def _data_object(ctx: Context, object_name: str) -> ObjectDef:
    model = ctx.model
    obj = model.require(object_name)
    if obj.is_setting:
        raise ValueError(f"{obj.name} is a setting; its records live in the org metadata, not in the database")
    return obj


def _loadable_names(obj: ObjectDef) -> list[str]:
    names = ["Id"]
    for f in obj.fields:
        if f.is_stored and f.type is not FieldType.AUTONUMBER and f.column_name not in _ENGINE_SET and f.column_name != s.ID:
            names.append(f.name)
    return names


def _classify(obj: ObjectDef, ctx: Context, header: str) -> _Column | str:
    """The column a header names, or the problem with it."""
    model = ctx.model
    name = header.strip()
    if not name:
        return "empty column name"
    if name.lower() == "id":
        return _Column(header, "id")
    if name.lower() in _ENGINE_SET:
        spelled = obj.field(name).name if obj.field(name) else {"createddate": "CreatedDate"}.get(name.lower(), "LastModifiedDate")
        return f"{spelled} is set by the engine and cannot be loaded"
    if "." in name:
        left, right = name.split(".", 1)
        ref = obj.field(left) or obj.relationship(left)
        if ref is None or not ref.type.is_reference:
            return f"{left!r} is not a lookup field of {obj.name}"
        target = model.object(ref.reference_to or "")
        if target is None or target.is_setting:
            return f"{obj.name}.{ref.name} does not point at a data object"
        key = target.field(right)
        if key is None:
            hint = did_you_mean(right, [f.name for f in target.fields if f.unique or f.external_id])
            return f"{target.name} has no field {right!r}" + (f"; {hint}" if hint else "")
        if not (key.unique or key.external_id) or not key.is_stored:
            return f"{target.name}.{key.name} is not an external id or unique field, so it cannot identify a record"
        return _Column(header, "ref", ref, target, key)
    field = obj.field(name)
    if field is None:
        hint = did_you_mean(name, _loadable_names(obj))
        return f"{obj.name} has no field {name!r}" + (f"; {hint}" if hint else "")
    if not field.is_stored:
        return f"{obj.name}.{field.name} is a formula field; its value is computed, not loaded"
    if field.type is FieldType.AUTONUMBER:
        return f"{obj.name}.{field.name} is an AutoNumber field; its values are assigned automatically"
    if field.type is FieldType.ID:
        return f"{obj.name}.{field.name} cannot be loaded"
    return _Column(header, "field", field)


# ---------------------------------------------------------------------------
# Reading files


def _json_records(path: Path, display: str, report) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.stat().st_size > MAX_JSON_BYTES:
        # A JSON list is parsed whole, unlike CSV, which is streamed.
        report(RecordError(display, None, None, f"the file exceeds {MAX_JSON_BYTES:,} bytes; split it or use CSV"))
        return
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        report(RecordError(display, None, None, f"the file is not UTF-8 text (line {line})"))
        return
    try:
        items = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        report(RecordError(display, None, None, f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"))
        return
    except ValueError as exc:
        report(RecordError(display, None, None, f"invalid JSON: {exc}"))
        return
    except RecursionError:
        report(RecordError(display, None, None, "invalid JSON: nested too deeply"))
        return
    if not isinstance(items, list):
        report(RecordError(display, None, None, f"expected a JSON list of objects, got {_json_kind(items)}"))
        return
    if len(items) > MAX_ROWS:
        report(RecordError(display, None, None, f"more than {MAX_ROWS:,} records; split the file"))
        return
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            report(RecordError(display, index, None, f"expected an object, got {_json_kind(item)}"))
            continue
        yield index, item


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


# ---------------------------------------------------------------------------
# Loading


@dataclass
class _Row:
    line: int
    values: dict[str, Any]
    refs: dict[str, Any]  # column -> external key to resolve
    explicit_id: int | None = None
    failed: set[str] = dc_field(default_factory=set)  # headers with a problem

    @property
    def bad(self) -> bool:
        return bool(self.failed)


class _Loader:
    def __init__(self, conn: sa.Connection, ctx: Context, obj: ObjectDef, display: str):
        model = ctx.model
        self.ctx = ctx
        self.conn = conn
        self.model = model
        self.obj = obj
        self.display = display
        self.errors: list[RecordError] = []
        self.metadata = ctx.metadata
        self.table = s.data_table(self.metadata, obj)
        self.fields = s.data_fields(obj)
        name = s.name_field(obj)
        self.name_field = name if name is not None and name.is_stored else None
        self.stored = [f for f in (*([self.name_field] if self.name_field else []), *self.fields)]
        self.autonumbers = [f for f in self.stored if f.type is FieldType.AUTONUMBER]
        self.unique = [f for f in self.stored if (f.unique or f.external_id) and f.type is not FieldType.AUTONUMBER]
        self.columns: dict[str, _Column] = {}  # header as written -> column
        self.bad_headers: set[str] = set()
        self.seen_ids: dict[int, int] = {}  # id -> line
        self.seen_unique: dict[str, dict[Any, tuple[int, int | None]]] = {f.column_name: {} for f in self.unique}
        self._defaults: dict[str, tuple[Any, str | None]] = {}
        self._layouts: dict[tuple[str, ...], tuple[dict[str, tuple], list[FieldDef]]] = {}
        self._default_reported: set[str] = set()
        self.now = datetime.now(timezone.utc)
        self.inserted = 0
        self.max_explicit_id = 0
        self.truncated = False

    def sorted_errors(self) -> tuple[RecordError, ...]:
        """Problems in file order (checks run in phases, so they are found
        out of order); problems of the whole file first."""
        ordered = sorted(self.errors, key=lambda e: e.row or 0)
        if self.truncated:
            ordered.append(RecordError(self.display, None, None, f"stopped after {MAX_ERRORS} problems; fix these first"))
        return tuple(ordered)

    # -- problems -------------------------------------------------------

    def error(self, row: int | None, field: str | None, message: str) -> None:
        self.errors.append(RecordError(self.display, row, field, message))
        if len(self.errors) >= MAX_ERRORS:
            self.truncated = True
            raise _Stop

    def report(self, problem: RecordError) -> None:
        self.error(problem.row, problem.field, problem.message)

    # -- columns --------------------------------------------------------

    def column_for(self, header: str, line: int) -> _Column | None:
        found = self.columns.get(header)
        if found is not None or header in self.bad_headers:
            return found
        result = _classify(self.obj, self.ctx, header)
        if isinstance(result, str):
            self.bad_headers.add(header)
            self.error(line, header, result)
            return None
        self.columns[header] = result
        return result

    def check_header(self, headers: Iterable[str], line: int) -> dict[str, _Column]:
        """Classify headers; report unknown and repeated ones."""
        by_target: dict[str, str] = {}
        usable: dict[str, _Column] = {}
        for header in headers:
            column = self.column_for(header, line)
            if column is None:
                continue
            target = column.column
            if target in by_target:
                self.error(line, header, f"repeats the column {by_target[target]!r} (both set {self._label(column)})")
                continue
            by_target[target] = header
            usable[header] = column
        return usable

    def _label(self, column: _Column) -> str:
        return "Id" if column.kind == "id" else f"{self.obj.name}.{column.field.name}"

    # -- defaults -------------------------------------------------------

    def default_of(self, field: FieldDef, line: int) -> Any:
        key = field.column_name
        if key not in self._defaults:
            if field.default is None:
                self._defaults[key] = (False if field.type is FieldType.CHECKBOX else None, None)
            else:
                try:
                    self._defaults[key] = (coerce(field, field.default), None)
                except ValueProblem as problem:
                    self._defaults[key] = (None, f"the default value of {field.name} does not fit the field: {problem}")
        value, problem = self._defaults[key]
        if problem and key not in self._default_reported:
            self._default_reported.add(key)
            self.error(line, field.name, problem)
        return value

    # -- rows -----------------------------------------------------------

    def _layout(self, columns: Mapping[str, _Column]) -> tuple[dict[str, tuple], list[FieldDef]]:
        """Per header (kind, column name, field, key field), plus the stored
        fields the headers do not cover; computed once per set of headers
        because parse() runs for every row."""
        key = tuple(columns)
        found = self._layouts.get(key)
        if found is None:
            by_header = {
                header: (c.kind, None if c.kind == "id" else c.field.column_name, c.field, c.target_field)
                for header, c in columns.items()
            }
            covered = {entry[1] for entry in by_header.values()}
            absent = [f for f in self.stored if f.column_name not in covered and f.type is not FieldType.AUTONUMBER]
            found = self._layouts[key] = (by_header, absent)
        return found

    def parse(self, line: int, raw: Mapping[str, Any], columns: Mapping[str, _Column]) -> _Row:
        row = _Row(line, {}, {})
        values = row.values
        by_header, absent = self._layout(columns)
        for header, cell in raw.items():
            entry = by_header.get(header)
            if entry is None:
                continue
            kind, key, field, key_field = entry
            if isinstance(cell, str):
                if len(cell) > MAX_CELL:
                    self.fail(row, header, f"the value has {len(cell):,} characters; at most {MAX_CELL:,} are allowed")
                    continue
                if "\x00" in cell:
                    self.fail(row, header, "the value contains a NUL character")
                    continue
                empty = not cell or cell.isspace()
            else:
                empty = cell is None
            try:
                if kind == "field":
                    if empty and field.default is not None:
                        values[key] = self.default_of(field, line)
                    else:
                        values[key] = coerce(field, cell)
                elif kind == "ref":
                    if empty:
                        values[key] = None
                    else:
                        row.refs[key] = coerce(key_field, cell)
                elif not empty:
                    row.explicit_id = parse_id(cell)
            except ValueProblem as problem:
                self.fail(row, header, str(problem))
        for field in absent:
            values[field.column_name] = self.default_of(field, line)
        return row

    def fail(self, row: _Row, header: str | None, message: str) -> None:
        row.failed.add(header or "")
        self.error(row.line, header, message)

    def header_of(self, column_name: str, columns: Mapping[str, _Column]) -> str:
        for header, column in columns.items():
            if column.kind != "id" and column.field.column_name == column_name:
                return header
        field = self.obj.field(column_name)
        return field.name if field else column_name

    # -- chunks ---------------------------------------------------------

    def process(self, chunk: list[_Row], columns: Mapping[str, _Column]) -> None:
        conn, table = self.conn, self.table
        # Ids: explicit ones must be new; the rest come from the sequence.
        explicit = [r for r in chunk if r.explicit_id is not None]
        id_header = next((h for h, c in columns.items() if c.kind == "id"), "Id")
        for row in explicit:
            earlier = self.seen_ids.get(row.explicit_id)
            if earlier is not None:
                self.fail(row, id_header, f"Id {row.explicit_id} is already used by row {earlier}")
            else:
                self.seen_ids[row.explicit_id] = row.line
        taken = self._existing(table.c[s.ID], [r.explicit_id for r in explicit])
        for row in explicit:
            if row.explicit_id in taken:
                self.fail(row, id_header, f"another {self.obj.name} already has Id {row.explicit_id}")
        if explicit:
            highest = max(r.explicit_id for r in explicit)
            if highest > self.max_explicit_id:
                self.max_explicit_id = highest
                advance_ids_past(conn, table.name, highest)
        automatic = [r for r in chunk if r.explicit_id is None]
        # Generated ids only need remembering when rows can name ids: an Id
        # column (a later explicit id must not reuse one) or a lookup to
        # this same object. That keeps a plain million-row load lean.
        track = bool(explicit) or self.seen_ids or self._self_lookup(columns)
        for row, new_id in zip(automatic, reserve_ids(conn, table.name, len(automatic))):
            row.explicit_id = new_id
            if track:
                if new_id in self.seen_ids:
                    self.fail(row, id_header, f"the assigned Id {new_id} is also given by row {self.seen_ids[new_id]}")
                self.seen_ids[new_id] = row.line

        # Uniqueness within the file (rows in order), then against the table.
        for field in self.unique:
            key = field.column_name
            seen = self.seen_unique[key]
            header = self.header_of(key, columns)
            fresh: list[_Row] = []
            for row in chunk:
                value = row.values.get(key)
                if value is None:
                    continue
                earlier = seen.get(value)
                if earlier is not None:
                    self.fail(row, header, f"{_show(value)} repeats row {earlier[0]}; {field.name} must be unique")
                    continue
                seen[value] = (row.line, row.explicit_id)
                fresh.append(row)
            existing = self._existing(table.c[key], [r.values[key] for r in fresh])
            for row in fresh:
                if row.values[key] in existing:
                    self.fail(row, header, f"another {self.obj.name} already has {field.name} {_show(row.values[key])}")

        self._resolve_references(chunk, columns)

        required = [f for f in self.fields if f.required and f.type is not FieldType.AUTONUMBER]
        if self.name_field is not None and self.name_field.type is not FieldType.AUTONUMBER:
            required.insert(0, self.name_field)
        for field in required:
            key = field.column_name
            header = self.header_of(key, columns)
            for row in chunk:
                if row.values.get(key) is None and header not in row.failed:
                    self.fail(row, header, f"{field.name} is required")

        if self.errors:
            return  # nothing will be written; keep validating only
        for field in self.autonumbers:
            for row, number in zip(chunk, next_autonumbers(conn, self.obj, len(chunk), field)):
                row.values[field.column_name] = number
        self.insert(chunk)

    def _self_lookup(self, columns: Mapping[str, _Column]) -> bool:
        return any(
            c.kind != "id" and c.field.type.is_reference and (c.field.reference_to or "").lower() == self.obj.key
            for c in columns.values()
        )

    def _existing(self, column: sa.Column, values: list[Any]) -> set[Any]:
        """The ``values`` already present in ``column`` (one query per 1000)."""
        found: set[Any] = set()
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        for start in range(0, len(distinct), 1000):
            part = distinct[start : start + 1000]
            found.update(self.conn.execute(sa.select(column).where(column.in_(part))).scalars())
        return found

    def _resolve_references(self, chunk: list[_Row], columns: Mapping[str, _Column]) -> None:
        done: set[tuple[str, str]] = set()
        for header, column in columns.items():
            if column.kind == "id" or (column.kind, column.column) in done:
                continue  # JSON keys may spell one column several ways
            done.add((column.kind, column.column))
            field = column.field
            if not field.type.is_reference:
                continue
            key = field.column_name
            target = column.target or self.model.object(field.reference_to or "")
            if target is None or target.is_setting:
                continue
            target_table = s.data_table(self.metadata, target)
            same = target.key == self.obj.key
            if column.kind == "field":
                # An id: it must exist (earlier rows of this file count).
                pending = [r for r in chunk if r.values.get(key) is not None]
                if same:
                    pending = [r for r in pending if r.values[key] not in self.seen_ids or self.seen_ids[r.values[key]] >= r.line]
                existing = self._existing(target_table.c[s.ID], [r.values[key] for r in pending])
                for row in pending:
                    if row.values[key] not in existing:
                        self.fail(row, header, f"no {target.name} has Id {row.values[key]}")
                continue
            # An external id: one query per column and chunk.
            key_field = column.target_field
            pending = [r for r in chunk if key in r.refs]
            if same:
                local = self.seen_unique.get(key_field.column_name, {})
                still = []
                for row in pending:
                    hit = local.get(row.refs[key])
                    if hit is not None and hit[0] < row.line:
                        row.values[key] = hit[1]
                    else:
                        still.append(row)
                pending = still
            lookup = target_table.c[key_field.column_name]
            resolved: dict[Any, int] = {}
            wanted = list(dict.fromkeys(r.refs[key] for r in pending))
            for start in range(0, len(wanted), 1000):
                part = wanted[start : start + 1000]
                for value, found_id in self.conn.execute(
                    sa.select(lookup, target_table.c[s.ID]).where(lookup.in_(part))
                ):
                    resolved[value] = found_id
            for row in pending:
                found_id = resolved.get(row.refs[key])
                if found_id is None:
                    self.fail(row, header, f"no {target.name} has {key_field.name} {_show(row.refs[key])}")
                else:
                    row.values[key] = found_id

    def insert(self, chunk: list[_Row]) -> None:
        names = [f.column_name for f in self.stored]
        records = []
        for row in chunk:
            record = {name: row.values.get(name) for name in names}
            record[s.ID] = row.explicit_id
            record[s.CREATED] = self.now
            record[s.MODIFIED] = self.now
            records.append(record)
        if not records:
            return
        try:
            self.conn.execute(self.table.insert(), records)
        except sa.exc.IntegrityError as exc:
            # A concurrent writer got in between the checks and the insert.
            self.error(None, None, f"the database refused the rows: {exc.orig}")
            raise _Stop from None
        self.inserted += len(records)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return repr(";".join(value))
    return str(value)


def load_records(
    engine: sa.Engine,
    ctx: Context,
    object_name: str,
    path: str | Path,
    *,
    fmt: str | None = None,
) -> LoadReport:
    """Insert the records of a CSV or JSON file into ``object_name``'s table.

    ``fmt`` is ``"csv"`` or ``"json"``; by default the file suffix decides.
    All or nothing: when the report has errors, nothing was written.
    Raises KeyError for an unknown object and ValueError for a setting.
    """
    path = Path(path)
    display = str(path)
    obj = _data_object(ctx, object_name)
    kind = (fmt or path.suffix.lstrip(".")).lower()
    if kind not in ("csv", "json"):
        problem = RecordError(display, None, None, f"unknown file format {kind!r}: use a .csv or .json file")
        return LoadReport(obj.name, display, 0, (problem,))
    if not path.is_file():
        return LoadReport(obj.name, display, 0, (RecordError(display, None, None, "no such file"),))

    loader: _Loader | None = None
    try:
        with transaction(engine) as conn:
            loader = _Loader(conn, ctx, obj, display)
            if not sa.inspect(conn).has_table(obj.table_name):
                loader.error(None, None, f"the database has no table for {obj.name}; apply the schema migration first")
                raise _Rollback
            try:
                if kind == "csv":
                    _load_csv(loader, path)
                else:
                    _load_json(loader, path)
            except _Stop:
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
    return LoadReport(obj.name, display, loader.inserted, ())


def _load_csv(loader: _Loader, path: Path) -> None:
    headers: list[str] | None = None
    columns: dict[str, _Column] = {}
    chunk: list[_Row] = []
    for line, cells in csv_records(path, loader.display, loader.report, MAX_ROWS):
        if headers is None:
            headers = cells
            columns = loader.check_header(headers, line)
            continue
        chunk.append(loader.parse(line, dict(zip(headers, cells)), columns))
        if len(chunk) >= CHUNK_ROWS:
            loader.process(chunk, columns)
            chunk = []
    if chunk:
        loader.process(chunk, columns)


def _load_json(loader: _Loader, path: Path) -> None:
    chunk: list[_Row] = []
    columns: dict[str, _Column] = {}
    for index, item in _json_records(path, loader.display, loader.report):
        keys = [str(k) for k in item]
        for key in keys:
            if key not in columns:
                column = loader.column_for(key, index)
                if column is not None:
                    columns[key] = column
        usable: dict[str, _Column] = {}
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
            raise ValueError(f"{obj.name} has no field {requested!r}" + (f"; {hint}" if hint else ""))
        if not field.is_stored:
            raise ValueError(f"{obj.name}.{field.name} is a formula field and has no stored value")
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
    order); by default ``Id``, ``Name`` and every stored field. The output
    loads back with :func:`load_records` (except that cells starting with
    ``= + - @`` TAB or CR carry the protective ``'``)."""
    obj = _data_object(ctx, object_name)
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
                writer.writerow([cell_text(v) for v in row[1:]])
            count += len(rows)
            last_id = rows[-1][0]
            if len(rows) < EXPORT_PAGE:
                break
    return count
