"""Checking and inserting the rows of a record file, chunk by chunk.

:class:`RecordLoader` is the working half of :func:`engine.storage.records.load_records`:
it turns the cells of one row into typed values (:meth:`RecordLoader.parse`,
through :func:`engine.config.values.coerce`, the conversion settings use too),
then checks a chunk of rows against the file and the table in a few set-based
queries (ids, unique values, references, required fields) and inserts the
chunk with one ``executemany`` as long as nothing anywhere was wrong. Every
problem is collected as a :class:`~engine.storage.csvio.RecordError` against
its row and column; the caller rolls the transaction back when there are any.

Memory stays bounded by the chunk plus the keys a uniqueness or self-lookup
check must remember, whatever the file size.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.config.values import ValueProblem, coerce, parse_id

from . import schema as s
from .context import Context
from .csvio import RecordError
from .headers import FIELD_COLUMN, ID_COLUMN, LOOKUP_COLUMN, LoadColumn, classify_header
from .ids import advance_ids_past, next_autonumbers, reserve_ids

#: Values looked up in one ``IN (...)`` query.
LOOKUP_BATCH = 1000


class StopLoading(Exception):
    """Ends reading: too many problems, or the database refused a write
    (control flow inside a load, never seen by a caller)."""


@dataclass
class LoadRow:
    """One row on its way in: typed values by column, external keys still to
    resolve, its id, and the headers that had a problem."""

    line: int
    values: dict[str, Any]
    refs: dict[str, Any]  # column -> external key to resolve
    explicit_id: int | None = None
    failed: set[str] = dc_field(default_factory=set)

    @property
    def bad(self) -> bool:
        return bool(self.failed)


class RecordLoader:
    """Loads rows of one file into ``obj``'s table inside the caller's
    transaction ``conn``; see the module docstring."""

    def __init__(self, conn: sa.Connection, ctx: Context, obj: ObjectDef, display: str, *,
                 max_cell: int, max_errors: int):
        self.ctx = ctx
        self.conn = conn
        self.obj = obj
        self.display = display
        self.max_cell = max_cell
        self.max_errors = max_errors
        self.errors: list[RecordError] = []
        self.table = s.data_table(ctx.metadata, obj)
        self.fields = s.data_fields(obj)
        name = s.name_field(obj)
        self.name_field = name if name is not None and name.is_stored else None
        self.stored = [f for f in (*([self.name_field] if self.name_field else []), *self.fields)]
        self.autonumbers = [f for f in self.stored if f.type is FieldType.AUTONUMBER]
        self.unique = [f for f in self.stored if (f.unique or f.external_id) and f.type is not FieldType.AUTONUMBER]
        self.columns: dict[str, LoadColumn] = {}  # header as written -> column
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
            ordered.append(RecordError(self.display, None, None, f"stopped after {self.max_errors} problems; fix these first"))
        return tuple(ordered)

    # -- problems -------------------------------------------------------

    def error(self, row: int | None, field: str | None, message: str) -> None:
        self.errors.append(RecordError(self.display, row, field, message))
        if len(self.errors) >= self.max_errors:
            self.truncated = True
            raise StopLoading

    def report(self, problem: RecordError) -> None:
        """Record a problem found by a file reader (:mod:`.csvio`, :mod:`.jsonio`)."""
        self.error(problem.row, problem.field, problem.message)

    def fail(self, row: LoadRow, header: str | None, message: str) -> None:
        row.failed.add(header or "")
        self.error(row.line, header, message)

    # -- columns --------------------------------------------------------

    def column_for(self, header: str, line: int) -> LoadColumn | None:
        """The column ``header`` names (reported once when it names none)."""
        found = self.columns.get(header)
        if found is not None or header in self.bad_headers:
            return found
        result = classify_header(self.obj, self.ctx.model, header)
        if isinstance(result, str):
            self.bad_headers.add(header)
            self.error(line, header, result)
            return None
        self.columns[header] = result
        return result

    def check_header(self, headers: Iterable[str], line: int) -> dict[str, LoadColumn]:
        """Classify headers; report unknown and repeated ones."""
        by_target: dict[str, str] = {}
        usable: dict[str, LoadColumn] = {}
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

    def _label(self, column: LoadColumn) -> str:
        return "Id" if column.kind == ID_COLUMN else f"{self.obj.name}.{column.field.name}"

    def header_of(self, column_name: str, columns: Mapping[str, LoadColumn]) -> str:
        """The header that fills ``column_name`` (else the field's API name)."""
        for header, column in columns.items():
            if column.kind != ID_COLUMN and column.field.column_name == column_name:
                return header
        field = self.obj.field(column_name)
        return field.name if field else column_name

    # -- defaults -------------------------------------------------------

    def default_of(self, field: FieldDef, line: int) -> Any:
        """The value of an empty or absent cell; a declared default that does
        not fit its own field is reported once, on the first row needing it."""
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

    def _layout(self, columns: Mapping[str, LoadColumn]) -> tuple[dict[str, tuple], list[FieldDef]]:
        """Per header (kind, column name, field, key field), plus the stored
        fields the headers do not cover; computed once per set of headers
        because parse() runs for every row."""
        key = tuple(columns)
        found = self._layouts.get(key)
        if found is None:
            by_header = {
                header: (c.kind, None if c.kind == ID_COLUMN else c.field.column_name, c.field, c.target_field)
                for header, c in columns.items()
            }
            covered = {entry[1] for entry in by_header.values()}
            absent = [f for f in self.stored if f.column_name not in covered and f.type is not FieldType.AUTONUMBER]
            found = self._layouts[key] = (by_header, absent)
        return found

    def parse(self, line: int, raw: Mapping[str, Any], columns: Mapping[str, LoadColumn]) -> LoadRow:
        """The typed values of one row (cells of CSV text or JSON values)."""
        row = LoadRow(line, {}, {})
        values = row.values
        by_header, absent = self._layout(columns)
        for header, cell in raw.items():
            entry = by_header.get(header)
            if entry is None:
                continue
            kind, key, field, key_field = entry
            if isinstance(cell, str):
                if len(cell) > self.max_cell:
                    self.fail(row, header, f"the value has {len(cell):,} characters; at most {self.max_cell:,} are allowed")
                    continue
                if "\x00" in cell:
                    self.fail(row, header, "the value contains a NUL character")
                    continue
                empty = not cell or cell.isspace()
            else:
                empty = cell is None
            try:
                if kind == FIELD_COLUMN:
                    if empty and field.default is not None:
                        values[key] = self.default_of(field, line)
                    else:
                        values[key] = coerce(field, cell)
                elif kind == LOOKUP_COLUMN:
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

    # -- chunks ---------------------------------------------------------

    def process(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        """Check a chunk against the file so far and the table; insert it when
        the whole load is still without problems."""
        self._assign_ids(chunk, columns)
        self._check_unique(chunk, columns)
        self._resolve_references(chunk, columns)
        self._check_required(chunk, columns)
        if self.errors:
            return  # nothing will be written; keep validating only
        for field in self.autonumbers:
            for row, number in zip(chunk, next_autonumbers(self.conn, self.obj, len(chunk), field)):
                row.values[field.column_name] = number
        self.insert(chunk)

    def _assign_ids(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        """Explicit ids must be new; the other rows get ids from the sequence."""
        conn, table = self.conn, self.table
        explicit = [r for r in chunk if r.explicit_id is not None]
        id_header = next((h for h, c in columns.items() if c.kind == ID_COLUMN), "Id")
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

    def _check_unique(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        """Unique values: within the file (rows in order), then against the table."""
        for field in self.unique:
            key = field.column_name
            seen = self.seen_unique[key]
            header = self.header_of(key, columns)
            fresh: list[LoadRow] = []
            for row in chunk:
                value = row.values.get(key)
                if value is None:
                    continue
                earlier = seen.get(value)
                if earlier is not None:
                    self.fail(row, header, f"{show_value(value)} repeats row {earlier[0]}; {field.name} must be unique")
                    continue
                seen[value] = (row.line, row.explicit_id)
                fresh.append(row)
            existing = self._existing(self.table.c[key], [r.values[key] for r in fresh])
            for row in fresh:
                if row.values[key] in existing:
                    self.fail(row, header, f"another {self.obj.name} already has {field.name} {show_value(row.values[key])}")

    def _check_required(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        required = [f for f in self.fields if f.required and f.type is not FieldType.AUTONUMBER]
        if self.name_field is not None and self.name_field.type is not FieldType.AUTONUMBER:
            required.insert(0, self.name_field)
        for field in required:
            key = field.column_name
            header = self.header_of(key, columns)
            for row in chunk:
                if row.values.get(key) is None and header not in row.failed:
                    self.fail(row, header, f"{field.name} is required")

    def _self_lookup(self, columns: Mapping[str, LoadColumn]) -> bool:
        return any(
            c.kind != ID_COLUMN and c.field.type.is_reference and (c.field.reference_to or "").lower() == self.obj.key
            for c in columns.values()
        )

    def _existing(self, column: sa.Column, values: list[Any]) -> set[Any]:
        """The ``values`` already present in ``column`` (one query per batch)."""
        found: set[Any] = set()
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        for start in range(0, len(distinct), LOOKUP_BATCH):
            part = distinct[start : start + LOOKUP_BATCH]
            found.update(self.conn.execute(sa.select(column).where(column.in_(part))).scalars())
        return found

    def _resolve_references(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        """Lookups: an id must exist; an external key is replaced by the id
        of the record it names (earlier rows of this file count)."""
        done: set[tuple[str, str]] = set()
        for header, column in columns.items():
            if column.kind == ID_COLUMN or (column.kind, column.column) in done:
                continue  # JSON keys may spell one column several ways
            done.add((column.kind, column.column))
            field = column.field
            if not field.type.is_reference:
                continue
            target = column.target or self.ctx.model.object(field.reference_to or "")
            if target is None or target.is_setting:
                continue
            if column.kind == FIELD_COLUMN:
                self._check_ids(chunk, header, field.column_name, target)
            else:
                self._resolve_keys(chunk, header, column, target)

    def _check_ids(self, chunk: list[LoadRow], header: str, key: str, target: ObjectDef) -> None:
        """An id given for a lookup must exist (earlier rows of this file count)."""
        target_table = s.data_table(self.ctx.metadata, target)
        pending = [r for r in chunk if r.values.get(key) is not None]
        if target.key == self.obj.key:
            pending = [r for r in pending if r.values[key] not in self.seen_ids or self.seen_ids[r.values[key]] >= r.line]
        existing = self._existing(target_table.c[s.ID], [r.values[key] for r in pending])
        for row in pending:
            if row.values[key] not in existing:
                self.fail(row, header, f"no {target.name} has Id {row.values[key]}")

    def _resolve_keys(self, chunk: list[LoadRow], header: str, column: LoadColumn, target: ObjectDef) -> None:
        """External keys to ids: one query per column and chunk."""
        key = column.field.column_name
        key_field = column.target_field
        target_table = s.data_table(self.ctx.metadata, target)
        pending = [r for r in chunk if key in r.refs]
        if target.key == self.obj.key:
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
        for start in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[start : start + LOOKUP_BATCH]
            for value, found_id in self.conn.execute(sa.select(lookup, target_table.c[s.ID]).where(lookup.in_(part))):
                resolved[value] = found_id
        for row in pending:
            found_id = resolved.get(row.refs[key])
            if found_id is None:
                self.fail(row, header, f"no {target.name} has {key_field.name} {show_value(row.refs[key])}")
            else:
                row.values[key] = found_id

    def insert(self, chunk: list[LoadRow]) -> None:
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
            raise StopLoading from None
        self.inserted += len(records)


def show_value(value: Any) -> str:
    """A value in a message: text quoted, a multi-select joined, numbers plain."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple):
        return repr(";".join(value))
    return str(value)
