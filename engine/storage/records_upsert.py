"""Insert or update by a key: ``metabill load --upsert --key FIELD``.

:class:`UpsertLoader` is :class:`~engine.storage.loading.RecordLoader`
with one difference: a row whose key (a unique or external-id field, or
``Id``) names an existing record updates that record instead of inserting
a new one. Everything else is the plain load: the same parsing, the same
checks of references and required values, chunk by chunk inside one
transaction, all or nothing.

An update writes only the columns the file has (a column the file leaves out
keeps its value, it is not reset to its default), and only when a value
differs (else the record counts as *unchanged* and keeps its modification
time). Fields the engine writes itself are never overwritten by a file: the
invoice run's write-back fields (``ON_Invoice__c``, ``ON_LastInvoiceRun__c``,
``ON_InvoiceBuildError__c`` with any transactional suffix), system fields
and auto numbers. A file may repeat their stored value (an export edited and
loaded back); a different value is a problem of its row.
"""

from __future__ import annotations

from typing import Any, Mapping

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.domain.errors import EngineError, Where
from engine.domain.naming import CONTROLLING_FIELDS, SUFFIX_PATTERN

from . import schema as s
from .headers import ID_COLUMN, LoadColumn
from .ids import next_autonumbers
from .loading import LOOKUP_BATCH, LoadRow, RecordLoader, StopLoading, show_value

#: The controlling fields the invoice run writes back to its sources.
_WRITTEN_BACK = tuple(base for base, spec in CONTROLLING_FIELDS.items() if spec.writable)


class UpsertKeyInvalid(EngineError, ValueError):
    """The key of an upsert is no field that identifies one record: it must
    be ``Id`` or a unique or external-id field of the object."""

    code = "R141"


def engine_written(fdef: FieldDef) -> str | None:
    """Why the engine owns ``fdef``'s value on a loadable record (a load
    never overwrites it), or None."""
    if fdef.type is FieldType.AUTONUMBER:
        return "an auto number"
    if fdef.system:
        return "maintained by the engine"
    name = fdef.name
    for base in _WRITTEN_BACK:
        if name.startswith(base) and name.endswith("__c"):
            suffix = name[len(base):-3]
            if not suffix or SUFFIX_PATTERN.fullmatch(suffix):
                return "written back by the invoice run"
    return None


def upsert_key(obj: ObjectDef, key: str) -> FieldDef | None:
    """The field ``key`` names (None for ``Id``), or :class:`UpsertKeyInvalid`."""
    if key.lower() == s.ID:
        return None
    fdef = obj.field(key)
    candidates = [f.name for f in obj.fields if (f.unique or f.external_id) and f.is_stored]
    if fdef is None or not fdef.is_stored or not (fdef.unique or fdef.external_id):
        what = "no field of" if fdef is None else "not a unique or external-id field of"
        raise UpsertKeyInvalid(
            f"--key {key}: {what} {obj.name}, so it cannot tell which record a row updates",
            where=Where(object=obj.name, argument="--key"),
            hint=("use Id or one of " + ", ".join(candidates)) if candidates else
            f"use Id, or declare a field of {obj.name} with 'external_id: true' (and migrate)",
        )
    return fdef


class UpsertLoader(RecordLoader):
    """Loads rows, updating the records whose key exists (see the module docstring)."""

    def __init__(self, *args, key: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.key = upsert_key(self.obj, key)
        self.key_column = self.key.column_name if self.key is not None else s.ID
        self.updated = 0
        self.unchanged = 0
        self.seen_keys: dict[Any, int] = {}
        self.owned = {f.column_name: why for f in self.stored if (why := engine_written(f)) is not None}

    def process(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        covered = self._covered(columns)
        if self.key_column not in covered and self.key is not None:
            self.error(None, self.key.name, f"the file has no column {self.key.name}, the key of the upsert")
            return
        existing = self._match(chunk, columns)
        updates = [row for row in chunk if row.line in existing]
        inserts = [row for row in chunk if row.line not in existing]
        self._assign_ids(inserts, columns)
        self._check_unique_against_others(chunk, columns)
        self._resolve_references(chunk, columns)
        self._check_required(inserts, columns)
        self._check_required_columns(updates, columns, covered)
        changes = self._changes(updates, existing, columns, covered)
        if self.errors:
            return
        for field in self.autonumbers:
            for row, number in zip(inserts, next_autonumbers(self.conn, self.obj, len(inserts), field)):
                row.values[field.column_name] = number
        self.insert(inserts)
        self._update(changes)

    # -- matching -------------------------------------------------------

    def _covered(self, columns: Mapping[str, LoadColumn]) -> set[str]:
        found = {c.column for c in columns.values() if c.kind != ID_COLUMN}
        if any(c.kind == ID_COLUMN for c in columns.values()):
            found.add(s.ID)
        return found

    def _key_of(self, row: LoadRow) -> Any:
        return row.explicit_id if self.key is None else row.values.get(self.key_column)

    def _match(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> dict[int, dict]:
        """line -> the stored record the row's key names (rows without a key,
        or repeating one, are reported)."""
        header = "Id" if self.key is None else self.header_of(self.key_column, columns)
        keyed: dict[Any, LoadRow] = {}
        for row in chunk:
            value = self._key_of(row)
            if value is None:
                if self.key is not None and header not in row.failed:
                    self.fail(row, header, f"{self.key.name} is empty: the upsert needs it to find the record")
                continue
            earlier = self.seen_keys.get(value)
            if earlier is not None:
                self.fail(row, header, f"{show_value(value)} repeats row {earlier}; each record once per file")
                continue
            self.seen_keys[value] = row.line
            keyed[value] = row
        column = self.table.c[self.key_column]
        found: dict[int, dict] = {}
        wanted = list(keyed)
        for start in range(0, len(wanted), LOOKUP_BATCH):
            part = wanted[start:start + LOOKUP_BATCH]
            for record in self.conn.execute(sa.select(self.table).where(column.in_(part))).mappings():
                row = keyed[record[self.key_column]]
                found[row.line] = dict(record)
        for row in chunk:
            stored = found.get(row.line)
            if stored is None:
                continue
            if self.key is not None and row.explicit_id not in (None, stored[s.ID]):
                self.fail(row, "Id", f"Id {row.explicit_id} differs from the Id {stored[s.ID]} of the "
                          f"{self.obj.name} with {self.key.name} {show_value(self._key_of(row))}")
            row.explicit_id = stored[s.ID]
            self.seen_ids[row.explicit_id] = row.line
        return found

    def _check_unique_against_others(self, chunk: list[LoadRow], columns: Mapping[str, LoadColumn]) -> None:
        """Unique values: within the file, and held by no *other* record."""
        for field in self.unique:
            key = field.column_name
            seen = self.seen_unique[key]
            header = self.header_of(key, columns)
            fresh = []
            for row in chunk:
                value = row.values.get(key)
                if value is None:
                    continue
                earlier = seen.get(value)
                if earlier is not None and earlier[0] != row.line:
                    self.fail(row, header, f"{show_value(value)} repeats row {earlier[0]}; {field.name} must be unique")
                    continue
                seen[value] = (row.line, row.explicit_id)
                fresh.append(row)
            holders: dict[Any, int] = {}
            values = list(dict.fromkeys(row.values[key] for row in fresh))
            column = self.table.c[key]
            for start in range(0, len(values), LOOKUP_BATCH):
                part = values[start:start + LOOKUP_BATCH]
                holders.update(self.conn.execute(sa.select(column, self.table.c[s.ID]).where(column.in_(part))).all())
            for row in fresh:
                holder = holders.get(row.values[key])
                if holder is not None and holder != row.explicit_id:
                    self.fail(row, header,
                              f"another {self.obj.name} already has {field.name} {show_value(row.values[key])}")

    def _check_required_columns(self, rows: list[LoadRow], columns: Mapping[str, LoadColumn],
                                covered: set[str]) -> None:
        """An update may leave a required column out (it keeps its value),
        not empty it."""
        required = [f for f in self.stored if f.required and f.type is not FieldType.AUTONUMBER]
        if self.name_field is not None and self.name_field not in required:
            required.insert(0, self.name_field)
        for field in required:
            key = field.column_name
            if key not in covered:
                continue
            header = self.header_of(key, columns)
            for row in rows:
                if row.values.get(key) is None and header not in row.failed:
                    self.fail(row, header, f"{field.name} is required")

    # -- writing --------------------------------------------------------

    def _changes(self, rows: list[LoadRow], existing: dict[int, dict], columns: Mapping[str, LoadColumn],
                 covered: set[str]) -> list[tuple[int, dict[str, Any]]]:
        """(id, changed values) per updated row; engine-owned values that a
        row would change are reported."""
        out = []
        for row in rows:
            stored = existing[row.line]
            changed = {}
            for column in covered - {s.ID}:
                value = row.values.get(column)
                if _same(value, stored.get(column)):
                    continue
                why = self.owned.get(column)
                if why is not None:
                    field = self.obj.field(column)
                    name = field.name if field is not None else column
                    self.fail(row, self.header_of(column, columns),
                              f"{name} is {why} and never overwritten by a load "
                              f"(stored: {show_value(stored.get(column))}); leave the column out or repeat its value")
                    continue
                changed[column] = value
            if changed:
                out.append((row.explicit_id, changed))
            else:
                self.unchanged += 1
        return out

    def _update(self, changes: list[tuple[int, dict[str, Any]]]) -> None:
        """One executemany per set of changed columns."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for record_id, changed in changes:
            names = tuple(sorted(changed))
            groups.setdefault(names, []).append({"_id": record_id, **{f"_{n}": changed[n] for n in names},
                                                 "_modified": self.now})
        for names, params in groups.items():
            statement = (self.table.update().where(self.table.c[s.ID] == sa.bindparam("_id"))
                         .values({**{n: sa.bindparam(f"_{n}") for n in names}, s.MODIFIED: sa.bindparam("_modified")}))
            try:
                self.conn.execute(statement, params)
            except sa.exc.IntegrityError as exc:
                self.error(None, None, f"the database refused the changes: {exc.orig}")
                raise StopLoading from None
            self.updated += len(params)


def _same(new: Any, old: Any) -> bool:
    """Whether a file value equals the stored one (numbers by value, so
    ``10`` and ``10.00`` are the same amount)."""
    if new is None or old is None:
        return new is None and old is None
    try:
        return bool(new == old)
    except TypeError:  # pragma: no cover - values of one column share a type
        return False


__all__ = ["UpsertKeyInvalid", "UpsertLoader", "engine_written", "upsert_key"]
