"""Bulk writes of typed records at driver speed.

The invoice run and the booking engine write hundreds of thousands of rows.
SQLAlchemy Core's per-row parameter processing costs about four times the
driver's own ``executemany`` (see ``../shared/reference/perf-reliability.md``,
A3), so these helpers convert values once per column with
:func:`engine.storage.types.to_db_converter` and hand positional tuples to the
driver through ``Connection.exec_driver_sql``. Ids are reserved in blocks
(:func:`engine.storage.ids.reserve_ids`), so no ``RETURNING`` is needed.

Values are always bound parameters; identifiers come from validated metadata
and are quoted by the dialect's identifier preparer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef

from .ids import next_autonumbers, reserve_ids
from .schema import CREATED, ID, MODIFIED, NAME, data_fields
from .types import to_db_converter


_PROBE = object()  # a value only identity converters return unchanged


def _placeholder(conn: sa.Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class RowWriter:
    """Inserts records of one object: dicts keyed by lower-case field name.

    Build once per object and connection; :meth:`insert` takes any number of
    records, fills ``id`` (when missing), AutoNumber names, ``CreatedDate`` and
    ``LastModifiedDate``, converts each value for the driver, and executes one
    ``executemany``. Fields absent from a record are written as their default
    (Checkbox false, declared defaults) or NULL.
    """

    def __init__(self, conn: sa.Connection, obj: ObjectDef):
        self.conn = conn
        self.obj = obj
        dialect = conn.dialect.name
        name_field = obj.field("Name")
        self.autonumber = name_field if name_field is not None and name_field.type is FieldType.AUTONUMBER else None
        fields = data_fields(obj)
        self.columns: list[tuple[str, str, Callable[[Any], Any], Any]] = [
            (ID, "id", lambda v: v, None),
            (NAME, "name", lambda v: v, None),
            (CREATED, "createddate", to_db_converter(_datetime_field(obj), dialect), None),
            (MODIFIED, "lastmodifieddate", to_db_converter(_datetime_field(obj), dialect), None),
        ]
        for fdef in fields:
            default = fdef.default
            if default is None and fdef.type is FieldType.CHECKBOX:
                default = False
            self.columns.append((fdef.column_name, fdef.key, to_db_converter(fdef, dialect), default))
        # Per column: record key, converter (None when the driver takes the
        # value as it is) and the converted default written for missing values.
        self._keys = [key for _, key, _, _ in self.columns]
        self._converted: list[tuple[int, Callable[[Any], Any]]] = []
        self._defaults: list[tuple[int, Any]] = []
        for position, (_, _, convert, default) in enumerate(self.columns):
            try:
                identity = convert(_PROBE) is _PROBE
            except Exception:  # noqa: BLE001 - a converter that inspects its value is not the identity
                identity = False
            if not identity:
                self._converted.append((position, convert))
            if default is not None:
                self._defaults.append((position, convert(default)))
        names = ", ".join(_quote(conn, c[0]) for c in self.columns)
        marks = ", ".join(_placeholder(conn) for _ in self.columns)
        self.sql = f"INSERT INTO {_quote(conn, obj.table_name)} ({names}) VALUES ({marks})"

    def assign_ids(self, records: Sequence[dict]) -> None:
        """Give every record without an ``id`` a freshly reserved one."""
        missing = [r for r in records if r.get("id") is None]
        if missing:
            for record, new_id in zip(missing, reserve_ids(self.conn, self.obj.table_name, len(missing))):
                record["id"] = new_id

    def insert(self, records: Sequence[dict], *, timestamp: datetime | None = None) -> int:
        if not records:
            return 0
        self.assign_ids(records)
        if self.autonumber is not None:
            unnamed = [r for r in records if not r.get("name")]
            if unnamed:
                for record, name in zip(unnamed, next_autonumbers(self.conn, self.obj, len(unnamed))):
                    record["name"] = name
        stamp = timestamp or now_utc()
        for record in records:
            record.setdefault("createddate", stamp)
            record.setdefault("lastmodifieddate", stamp)
        keys, converted, defaults = self._keys, self._converted, self._defaults
        # The timestamps are the same object for most records: convert once.
        stamp_converter = self.columns[2][2]
        stamp_value = stamp_converter(stamp)
        rows = []
        for record in records:
            get = record.get
            row = [get(key) for key in keys]
            if row[2] is stamp:
                row[2] = stamp_value
            if row[3] is stamp:
                row[3] = stamp_value
            for position, convert in converted:
                value = row[position]
                if value is not None and value is not stamp_value:
                    row[position] = convert(value)
            for position, default in defaults:
                if row[position] is None:
                    row[position] = default
            rows.append(tuple(row))
        self.conn.exec_driver_sql(self.sql, rows)
        return len(rows)


def _datetime_field(obj: ObjectDef) -> FieldDef:
    found = obj.field("CreatedDate")
    if found is not None:
        return found
    return FieldDef("CreatedDate", obj.name, FieldType.DATETIME, "Created Date")


def update_by_id(
    conn: sa.Connection,
    obj: ObjectDef,
    field_names: Sequence[str],
    rows: Iterable[tuple[int, Sequence[Any]]],
    *,
    timestamp: datetime | None = None,
) -> int:
    """``UPDATE obj SET f1 = ?, ... , lastmodifieddate = ? WHERE id = ?`` for
    many rows in one ``executemany``. ``rows`` holds ``(id, (v1, v2, ...))``
    with typed values in the order of ``field_names``."""
    dialect = conn.dialect.name
    fields = [obj.field(name) for name in field_names]
    if any(f is None for f in fields):
        unknown = [n for n, f in zip(field_names, fields) if f is None]
        raise KeyError(f"{obj.name} has no field(s) {unknown}")
    converters = [to_db_converter(f, dialect) for f in fields]  # type: ignore[arg-type]
    stamp = to_db_converter(_datetime_field(obj), dialect)(timestamp or now_utc())
    mark = _placeholder(conn)
    assignments = ", ".join(f"{_quote(conn, f.column_name)} = {mark}" for f in fields)  # type: ignore[union-attr]
    sql = (
        f"UPDATE {_quote(conn, obj.table_name)} SET {assignments}, {_quote(conn, MODIFIED)} = {mark} "
        f"WHERE {_quote(conn, ID)} = {mark}"
    )
    params = [
        tuple(convert(value) for convert, value in zip(converters, values)) + (stamp, record_id)
        for record_id, values in rows
    ]
    if params:
        conn.exec_driver_sql(sql, params)
    return len(params)


def typed_values(obj: ObjectDef, record: Mapping[str, Any], names: Iterable[str]) -> list[Any]:
    """The values of ``names`` (API names) from a record keyed by lower-case name."""
    return [record.get(name.lower()) for name in names]
