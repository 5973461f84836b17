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

from datetime import date, datetime, timezone
from operator import itemgetter
from typing import Any, Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef

from .ids import next_autonumbers, reserve_ids
from .schema import AUTONUMBER_LENGTH, CREATED, DEFAULT_TEXT_LENGTH, ID, MODIFIED, NAME, data_fields
from .types import text_too_long, to_db_column_converter, to_db_converter

#: Field types stored in a column of limited length (``schema._field_spec``).
_LIMITED_TEXT = (FieldType.TEXT, FieldType.EMAIL, FieldType.URL, FieldType.PICKLIST)


def text_limit(fdef: FieldDef) -> int | None:
    """The characters ``fdef``'s column holds, or None when it is unlimited
    (or not text). Checked on every bulk write: SQLite would store a longer
    text that PostgreSQL refuses, so both refuse it here, with the field named."""
    if fdef.type in _LIMITED_TEXT:
        return fdef.length or DEFAULT_TEXT_LENGTH
    if fdef.type is FieldType.AUTONUMBER:
        return AUTONUMBER_LENGTH
    return None


def check_text_column(fdef: FieldDef, limit: int, values: Sequence[Any]) -> None:
    """Raise :class:`~engine.storage.types.TextTooLong` when a text of
    ``values`` exceeds ``limit`` (one pass at C speed when all fit)."""
    texts = [value for value in values if isinstance(value, str)]
    if texts and max(map(len, texts)) > limit:
        raise text_too_long(fdef, next(t for t in texts if len(t) > limit), limit)


_PROBE = object()  # a value only identity converters return unchanged
ColumnConverter = Callable[[list[Any]], list[Any]]


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

    A column that is NULL in every record of one insert is left out of the
    statement (the table then stores NULL, its default; see
    :meth:`_omittable`): binding ``None`` is by far the most expensive
    parameter for the sqlite3 driver (it goes through the adapter protocol),
    and wide objects such as invoice lines leave a third of their columns empty.
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
        numeric: dict[str, ColumnConverter] = {}
        #: Text columns of limited length: column -> (field, characters).
        self._limits: dict[str, tuple[FieldDef, int]] = {}
        if name_field is not None and name_field.is_stored and text_limit(name_field):
            self._limits[NAME] = (name_field, text_limit(name_field))  # type: ignore[assignment]
        for fdef in fields:
            limit = text_limit(fdef)
            if limit is not None:
                self._limits[fdef.column_name] = (fdef, limit)
            default = fdef.default
            if default is None and fdef.type is FieldType.CHECKBOX:
                default = False
            self.columns.append((fdef.column_name, fdef.key, to_db_converter(fdef, dialect), default))
            if fdef.type.is_numeric:
                numeric[fdef.column_name] = to_db_column_converter(fdef, dialect)
        # Per column: record key, converter (None when the driver takes the
        # value as it is), the whole-column converter of a number column, the
        # converted default written for missing values, and whether the column
        # may be left out of an insert when all its values are NULL.
        self._plan: list[tuple[str, Callable[[Any], Any] | None, ColumnConverter | None, Any, bool]] = []
        omittable = self._omittable(obj)
        for column, key, convert, default in self.columns:
            try:
                identity = convert(_PROBE) is _PROBE
            except Exception:  # noqa: BLE001 - a converter that inspects its value is not the identity
                identity = False
            self._plan.append((
                key,
                None if identity else convert,
                numeric.get(column),
                None if default is None else convert(default),
                default is None and column in omittable,
            ))
        self._sql_cache: dict[tuple[str, ...], str] = {}

    @staticmethod
    def _omittable(obj: ObjectDef) -> set[str]:
        """Columns whose table default is NULL: every data column except
        Checkbox ones (server default false, see ``schema.make_column``); the
        system columns are always written."""
        return {f.column_name for f in data_fields(obj) if f.type is not FieldType.CHECKBOX}

    def insert_sql(self, columns: tuple[str, ...]) -> str:
        """The INSERT of ``columns`` (as :meth:`rows` names them), built once per column set."""
        sql = self._sql_cache.get(columns)
        if sql is None:
            sql = self._sql_cache[columns] = self._insert_sql(columns)
        return sql

    def _insert_sql(self, columns: tuple[str, ...]) -> str:
        names = ", ".join(_quote(self.conn, c) for c in columns)
        marks = ", ".join(_placeholder(self.conn) for _ in columns)
        return f"INSERT INTO {_quote(self.conn, self.obj.table_name)} ({names}) VALUES ({marks})"

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
        names, rows = self.rows(records)
        self.conn.exec_driver_sql(self.insert_sql(names), rows)
        return len(rows)

    def rows(self, records: Sequence[dict]) -> tuple[tuple[str, ...], list[tuple]]:
        """The column names and driver rows of ``records`` (ids, names and
        timestamps already set), built column by column: a column's values
        are converted in one go (see :func:`_convert_column`), columns that
        may be left out and are NULL throughout are dropped, and the rest are
        zipped into tuples."""
        present = set().union(*records)  # the keys any record has: the others need no lookups
        raw = _columns(records, [key for key, *_ in self._plan if key in present], len(present))
        return self._driver_rows(raw, present, len(records))

    @property
    def keys(self) -> tuple[str, ...]:
        """The record key of every column, in the order :meth:`rows_of_values`
        takes values (:func:`record_keys` of the object)."""
        return tuple(key for key, *_ in self._plan)

    def rows_of_values(self, records: Sequence[Sequence[Any]], *,
                       omit_nulls: bool = True) -> tuple[tuple[str, ...], list[tuple]]:
        """:meth:`rows` of records given as sequences of values in the order
        of :attr:`keys` (None where a dict record would lack the key): the
        same column names and driver rows, without a dict per record (the
        subscription run builds its lines so). ``omit_nulls=False``: every
        column, also one NULL throughout (for rows converted once and
        written with others later)."""
        raw = dict(zip(self.keys, map(list, zip(*records)))) if records else {}
        return self._driver_rows(raw, set(raw), len(records), omit_nulls)

    def column_values(self, key: str, values: Sequence[Any]) -> list[Any]:
        """The driver values of ``values`` of the column of record key ``key``,
        converted as :meth:`rows` converts that column (for callers that
        stage a few columns of rows themselves and copy the rest by SQL)."""
        for plan_key, convert, convert_column, default, _ in self._plan:
            if plan_key == key:
                return _convert_column(list(values), convert, convert_column, default)
        raise KeyError(f"{self.obj.name} has no column for '{key}'")

    def column_name(self, key: str) -> str:
        """The column of record key ``key``."""
        for column, plan_key, *_ in self.columns:
            if plan_key == key:
                return column
        raise KeyError(f"{self.obj.name} has no column for '{key}'")

    def _driver_rows(self, raw: Mapping[str, list[Any]], present: set[str],
                     count: int, omit_nulls: bool = True) -> tuple[tuple[str, ...], list[tuple]]:
        """The column names and driver rows of the values ``raw`` (one list
        per key in ``present``, ``count`` records): see :meth:`rows`."""
        names: list[str] = []
        columns: list[list[Any]] = []
        for (column, *_), (key, convert, convert_column, default, omittable) in zip(self.columns, self._plan):
            if key in present:
                values = _convert_column(raw[key], convert, convert_column, default)
            else:
                values = [default] * count
            if omittable and omit_nulls and values.count(None) == count:
                continue
            limited = self._limits.get(column)
            if limited is not None:
                check_text_column(limited[0], limited[1], values)
            names.append(column)
            columns.append(values)
        return tuple(names), list(zip(*columns))


def record_keys(obj: ObjectDef) -> tuple[str, ...]:
    """The record keys of ``obj``'s columns in the order of
    :attr:`RowWriter.keys`, without a connection."""
    return ("id", "name", "createddate", "lastmodifieddate", *(fdef.key for fdef in data_fields(obj)))


def _columns(records: Sequence[dict], keys: list[str], distinct_keys: int) -> dict[str, list[Any]]:
    """The values of ``keys`` in ``records``, as one list per key. When every
    record has every key (records built alike, such as invoice lines) one
    ``itemgetter`` per record and a transposition do it at C speed; else each
    record's values are looked up with its ``get``, mapped over the keys (the
    loop over keys runs in C: half the time of one Python loop per key over
    the records), and transposed alike."""
    if not keys:
        return {}
    if len(keys) > 1 and set(map(len, records)) == {distinct_keys}:
        return dict(zip(keys, map(list, zip(*map(itemgetter(*keys), records)))))
    return dict(zip(keys, map(list, zip(*[tuple(map(record.get, keys)) for record in records]))))


# Exact types whose equal values always convert to the same driver value and
# hash cheaply, so a column of one of them is converted once per distinct
# value. Not Decimal (hashing a fresh one costs as much as converting it) nor
# datetime (equal wall times in one zone may be different instants).
_BY_VALUE = frozenset({date, bool, str})


def _convert_column(
    values: list[Any],
    convert: Callable[[Any], Any] | None,
    convert_column: ColumnConverter | None,
    default: Any,
) -> list[Any]:
    """One column's driver values: ``convert`` applied to every non-null
    value (``convert_column`` to all of them at once, for numbers), then
    ``default`` for what is (or converted to) null.

    Bulk rows repeat values a lot (service dates, tax rates, the one
    timestamp of the insert) and a conversion costs far more than a dict
    lookup, so repeated values are converted once: by value for a column of
    one exact type from ``_BY_VALUE`` (equal values of such a type convert
    alike; mixed types such as ``True`` next to ``1`` take another path),
    else by object identity (see :func:`_by_identity`).
    """
    if convert is None:
        out = values
    elif convert_column is not None:
        out = _by_identity(values, convert_column)
    else:
        kinds = set(map(type, values))
        kinds.discard(type(None))
        if len(kinds) == 1 and kinds <= _BY_VALUE:
            mapping: dict[Any, Any] = {None: default}
            for value in dict.fromkeys(values):
                if value is not None:
                    converted = convert(value)
                    mapping[value] = default if converted is None else converted
            return list(map(mapping.__getitem__, values))
        out = _by_identity(values, lambda column: [None if value is None else convert(value) for value in column])
    return out if default is None else [default if value is None else value for value in out]


def _by_identity(values: list[Any], convert_column: ColumnConverter) -> list[Any]:
    """``convert_column(values)``, converting each distinct object once when
    objects repeat down the column (a line's tax rate is its tax decision's,
    quantities and prices are the reader's shared Decimals, timestamps are
    one object). Keyed by identity, not value: one object always converts
    alike, and the objects stay alive in ``values``, so no id is reused."""
    by_id = dict(zip(map(id, values), values))
    if len(by_id) * 2 > len(values):
        return convert_column(values)
    converted = dict(zip(by_id, convert_column(list(by_id.values()))))
    return list(map(converted.__getitem__, map(id, values)))


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
    limits = [(index, f, text_limit(f)) for index, f in enumerate(fields) if text_limit(f)]  # type: ignore[arg-type]
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
    for index, fdef, limit in limits:
        check_text_column(fdef, limit, [row[index] for row in params])  # type: ignore[arg-type]
    if params:
        conn.exec_driver_sql(sql, params)
    return len(params)


def insert_tuples(conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple]) -> int:
    """``INSERT INTO table (columns) VALUES (...)`` for many positional rows in
    one driver ``executemany``. For the engine's own tables (claims) whose
    values are plain ints and strings that every driver takes as they are; no
    type conversion is done."""
    if not rows:
        return 0
    names = ", ".join(_quote(conn, table.c[name].name) for name in columns)
    marks = ", ".join(_placeholder(conn) for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {_quote(conn, table.name)} ({names}) VALUES ({marks})", list(rows))
    return len(rows)


def typed_values(obj: ObjectDef, record: Mapping[str, Any], names: Iterable[str]) -> list[Any]:
    """The values of ``names`` (API names) from a record keyed by lower-case name."""
    return [record.get(name.lower()) for name in names]


def fetch_records(conn: sa.Connection, query: sa.Select) -> list[dict]:
    """The rows of a Core ``select`` as dicts keyed by column key, fetched
    from the driver's cursor in one go and converted by each column type's own
    result processor: the same values as ``conn.execute(query)`` gives, for
    about two thirds of the cost, since no Row object is built per row.

    For queries whose result fits in memory (the caller bounds it, e.g. one
    batch of invoice lines)."""
    result = conn.execute(query)
    try:
        keys = tuple(result.keys())
        dialect = conn.dialect
        converters = []
        description = result.cursor.description
        for index, column in enumerate(query.selected_columns):
            # The driver's type code of the column, which e.g. PostgreSQL's numeric processor needs.
            processor = column.type.dialect_impl(dialect).result_processor(dialect, description[index][1])
            if processor is not None:
                converters.append((index, processor))
        rows = result.cursor.fetchall()
    finally:
        result.close()
    records = []
    for row in rows:
        if converters:
            row = list(row)
            for index, processor in converters:
                row[index] = processor(row[index])
        records.append(dict(zip(keys, row)))
    return records
