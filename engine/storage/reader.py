"""Reading records with their related records, as plain nested dicts.

Formulas and the invoice run work on plain data: a record is a dict keyed by
lower-case field name, and a relationship path (``Order__r.Account.Name``) is
a nested dict under the lower-case path name (``record["order__r"]["account"]
["name"]``), None when the lookup is empty. :class:`RecordReader` builds one
SELECT with a LEFT JOIN per relationship prefix, streams the rows, converts
driver values with the storage converters (cheaper than SQLAlchemy's typed
result processing) and assembles the dicts.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator, Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef, OrgModel

from .context import Context
from .schema import ID
from .types import from_db_converter


class PathError(KeyError):
    """A field path that does not resolve against the metadata.

    Paths come from the validated model (formula references, filter fields),
    so this is a bug in the engine, not a user error."""


class RecordReader:
    """Reads ``obj`` with the given field paths (tuples of lower-case names:
    relationship path names, then a stored field).

    By default every stored field of ``obj`` is read as well, so a record is
    complete. ``all_fields=False`` reads only ``id`` and the given paths: the
    invoice run knows exactly which fields its getters and formulas read, and
    the other columns (timestamps, descriptions...) would only cost fetching
    and converting.
    """

    def __init__(
        self,
        model: OrgModel,
        tables: sa.MetaData,
        obj: ObjectDef,
        paths: Iterable[Sequence[str]],
        dialect_name: str,
        *,
        all_fields: bool = True,
    ):
        self.model = model
        self.obj = obj
        self.base = tables.tables[obj.table_name]
        self._aliases: dict[tuple[str, ...], tuple[sa.FromClause, ObjectDef, FieldDef]] = {}
        self._from: sa.FromClause = self.base
        # (output position, prefix, key, converter)
        self._columns: list[sa.ColumnElement] = []
        self._slots: list[tuple[tuple[str, ...], str, Callable[[Any], Any]]] = []
        self._tables = tables
        self._dialect = dialect_name
        wanted = {tuple(p) for p in paths} | {("id",)}
        if all_fields:
            for fdef in obj.fields:
                if fdef.is_stored:
                    wanted.add((fdef.key,))
        for path in sorted(wanted, key=lambda p: (len(p), p)):
            self._add_path(tuple(path))

    @classmethod
    def of(cls, ctx: Context, obj: ObjectDef, paths: Iterable[Sequence[str]], dialect_name: str, *,
           all_fields: bool = True) -> "RecordReader":
        """The reader of ``obj`` over the command's tables (``ctx.metadata``)."""
        return cls(ctx.model, ctx.metadata, obj, paths, dialect_name, all_fields=all_fields)

    def _join(self, prefix: tuple[str, ...]) -> tuple[sa.FromClause, ObjectDef]:
        if not prefix:
            return self.base, self.obj
        if prefix in self._aliases:
            alias, target, _ = self._aliases[prefix]
            return alias, target
        parent_from, parent_obj = self._join(prefix[:-1])
        lookup = parent_obj.relationship(prefix[-1])
        if lookup is None or not lookup.reference_to:
            raise PathError(f"{parent_obj.name} has no relationship '{prefix[-1]}'")
        target = self.model.require(lookup.reference_to)
        alias = self._tables.tables[target.table_name].alias(f"r{len(self._aliases) + 1}")
        self._from = self._from.outerjoin(alias, parent_from.c[lookup.column_name] == alias.c[ID])
        self._aliases[prefix] = (alias, target, lookup)
        # The joined id tells "no related record" apart from "all fields empty".
        self._columns.append(sa.type_coerce(alias.c[ID], sa.types.NullType()))
        self._slots.append((prefix, "id", _int_or_none))
        return alias, target

    def _add_path(self, path: tuple[str, ...]) -> None:
        prefix, name = path[:-1], path[-1]
        source, target = self._join(prefix)
        if name == "id":
            if not prefix:
                self._columns.append(sa.type_coerce(source.c[ID], sa.types.NullType()))
                self._slots.append(((), "id", _identity_like))
            return
        fdef = target.field(name)
        if fdef is None:
            relation = target.relationship(name)
            if relation is not None:  # a path that ends at a relationship: its id
                self._join(prefix + (name,))
                return
            raise PathError(f"{target.name} has no field '{name}'")
        if not fdef.is_stored:
            raise PathError(f"{target.name}.{fdef.name} is a formula and has no column")
        if any(slot[0] == prefix and slot[1] == fdef.key for slot in self._slots):
            return
        self._columns.append(sa.type_coerce(source.c[fdef.column_name], sa.types.NullType()))
        self._slots.append((prefix, fdef.key, _converter(fdef, self._dialect)))

    def select(self) -> sa.Select:
        """The SELECT; add ``.where``/``.order_by`` against :attr:`base`."""
        return sa.select(*self._columns).select_from(self._from)

    def records(self, rows: Iterable[Sequence[Any]]) -> Iterator[dict]:
        """Assemble plain records from raw driver rows (in :meth:`select` order).

        The per-row work is planned once here: base-object columns that need
        no conversion are picked with one ``itemgetter`` and zipped into the
        dict; joined records are built per relationship prefix, parents before
        children, so a related record found through a join always replaces a
        stored value of the same name (a lookup named like its relationship
        keeps the nested record), while an empty join only fills a missing
        key with None.
        """
        plain = [(i, key) for i, (prefix, key, convert) in enumerate(self._slots)
                 if not prefix and convert is _identity_like]
        converted = [(i, key, convert) for i, (prefix, key, convert) in enumerate(self._slots)
                     if prefix == () and convert is not _identity_like]
        plain_keys = tuple(key for _, key in plain)
        pick = _picker([i for i, _ in plain])
        joins = self._join_plan()
        for row in rows:
            record = dict(zip(plain_keys, pick(row)))
            for i, key, convert in converted:
                value = row[i]
                record[key] = None if value is None else convert(value)
            if joins:
                nested: dict[tuple[str, ...], dict | None] = {(): record}
                for prefix, parent_prefix, name, id_index, fields in joins:
                    parent = nested[parent_prefix]
                    value = row[id_index]
                    if value is None or parent is None:
                        nested[prefix] = None
                        if parent is not None and type(parent.get(name)) is not dict:
                            parent.setdefault(name, None)
                        continue
                    child = {"id": value}
                    for i, key, convert in fields:
                        found = row[i]
                        child[key] = None if found is None else (found if convert is None else convert(found))
                    nested[prefix] = child
                    parent[name] = child
            yield record

    def _join_plan(self) -> list[tuple[tuple[str, ...], tuple[str, ...], str, int, list]]:
        """Per joined prefix, parents first: (prefix, parent prefix, name in
        the parent, position of the joined id, [(position, key, converter or
        None)])."""
        ids: dict[tuple[str, ...], int] = {}
        fields: dict[tuple[str, ...], list] = {}
        for i, (prefix, key, convert) in enumerate(self._slots):
            if not prefix:
                continue
            if key == "id" and prefix not in ids:
                ids[prefix] = i
                fields[prefix] = []
            else:
                fields[prefix].append((i, key, None if convert is _identity_like else convert))
        ordered = sorted(ids, key=lambda p: (len(p), ids[p]))
        return [(p, p[:-1], p[-1], ids[p], fields[p]) for p in ordered]

    def read(
        self,
        conn: sa.Connection,
        *,
        where: sa.ColumnElement[bool] | None = None,
        order_by: Sequence[sa.ColumnElement] = (),
        chunk: int = 5000,
    ) -> Iterator[dict]:
        for batch in self._partitions(conn, where, order_by, chunk):
            yield from self.records(batch)

    def read_with_rows(
        self,
        conn: sa.Connection,
        *,
        where: sa.ColumnElement[bool] | None = None,
        order_by: Sequence[sa.ColumnElement] = (),
        chunk: int = 5000,
    ) -> Iterator[tuple[Sequence[Any], dict]]:
        """Like :meth:`read`, with each record's raw driver row: two equal
        rows give equal records, so a caller can tell cheaply whether a
        record it read before is unchanged."""
        for batch in self._partitions(conn, where, order_by, chunk):
            yield from zip(batch, self.records(batch))

    def _partitions(
        self,
        conn: sa.Connection,
        where: sa.ColumnElement[bool] | None,
        order_by: Sequence[sa.ColumnElement],
        chunk: int,
    ) -> Iterator[Sequence[Sequence[Any]]]:
        statement = self.select()
        if where is not None:
            statement = statement.where(where)
        if order_by:
            statement = statement.order_by(*order_by)
        # Execution options go with this statement only: Connection.execution_options()
        # would change the caller's connection for good (stream_results on
        # PostgreSQL would then run every later statement, UPDATEs included,
        # through a server-side cursor).
        result = conn.execute(statement, execution_options={"stream_results": True, "yield_per": chunk})
        with result:
            yield from result.partitions(chunk)


def _picker(positions: Sequence[int]) -> Callable[[Sequence[Any]], Sequence[Any]]:
    """A function returning the values at ``positions`` of a row, as a tuple."""
    if not positions:
        return lambda row: ()
    if len(positions) == 1:
        only = positions[0]
        return lambda row: (row[only],)
    return itemgetter(*positions)


def _identity_like(value: Any) -> Any:
    return value


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _converter(fdef: FieldDef, dialect: str) -> Callable[[Any], Any]:
    if fdef.type.is_reference or fdef.type is FieldType.ID:
        return _identity_like  # drivers return integer ids already
    if fdef.type in (FieldType.TEXT, FieldType.LONGTEXT, FieldType.PICKLIST, FieldType.EMAIL, FieldType.URL,
                     FieldType.AUTONUMBER):
        return _identity_like
    convert = from_db_converter(fdef, dialect)
    if fdef.type.is_numeric and dialect == "sqlite":
        return _int_memo(convert)
    return convert


#: Distinct stored integers remembered per numeric column of a reader.
INT_MEMO_SIZE = 4096


def _int_memo(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``convert`` for SQLite's scaled integers, remembering the Decimal of
    up to INT_MEMO_SIZE distinct integers. Quantities and prices repeat a lot,
    an int is hashed for free, and the Decimal built from it is immutable, so
    sharing one between records changes nothing but the time spent."""
    memo: dict[int, Any] = {}

    def convert_int(value: Any) -> Any:
        if type(value) is not int:
            return convert(value)
        found = memo.get(value)
        if found is None:
            found = convert(value)
            if len(memo) < INT_MEMO_SIZE:
                memo[value] = found
        return found

    return convert_int
