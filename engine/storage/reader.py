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

from typing import Any, Callable, Iterable, Iterator, Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef, OrgModel

from .schema import ID
from .types import from_db_converter


class PathError(KeyError):
    """A field path that does not resolve against the metadata."""


class RecordReader:
    """Reads ``obj`` with the given field paths (tuples of lower-case names:
    relationship path names, then a stored field)."""

    def __init__(
        self,
        model: OrgModel,
        tables: sa.MetaData,
        obj: ObjectDef,
        paths: Iterable[Sequence[str]],
        dialect_name: str,
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
        wanted = {tuple(p) for p in paths}
        for fdef in obj.fields:
            if fdef.is_stored:
                wanted.add((fdef.key,))
        for path in sorted(wanted, key=lambda p: (len(p), p)):
            self._add_path(tuple(path))

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
        # Base-object columns go straight into the record; only joined columns
        # need the nested assembly below.
        base = [(i, key, None if convert is _identity_like else convert)
                for i, (prefix, key, convert) in enumerate(self._slots) if not prefix]
        base_plain = [(i, key) for i, key, convert in base if convert is None]
        base_converted = [(i, key, convert) for i, key, convert in base if convert is not None]
        joined = [(i, slot) for i, slot in enumerate(self._slots) if slot[0]]
        for row in rows:
            record = {key: row[i] for i, key in base_plain}
            for i, key, convert in base_converted:
                value = row[i]
                record[key] = None if value is None else convert(value)
            if not joined:
                yield record
                continue
            nested: dict[tuple[str, ...], dict | None] = {(): record}
            for i, (prefix, key, convert) in joined:
                value = row[i]
                if key == "id" and (prefix not in nested):
                    parent = nested.get(prefix[:-1])
                    if value is None or parent is None:
                        nested[prefix] = None
                        if parent is not None and not isinstance(parent.get(prefix[-1]), dict):
                            parent.setdefault(prefix[-1], None)
                        continue
                    child = {"id": value}
                    nested[prefix] = child
                    parent[prefix[-1]] = child
                    continue
                target = nested.get(prefix)
                if target is None:
                    continue
                if isinstance(target.get(key), dict):
                    continue  # a lookup named like its relationship keeps the nested record
                target[key] = convert(value) if value is not None else None
            yield record

    def read(
        self,
        conn: sa.Connection,
        *,
        where: sa.ColumnElement[bool] | None = None,
        order_by: Sequence[sa.ColumnElement] = (),
        chunk: int = 5000,
    ) -> Iterator[dict]:
        statement = self.select()
        if where is not None:
            statement = statement.where(where)
        if order_by:
            statement = statement.order_by(*order_by)
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(statement)
        for batch in result.partitions(chunk):
            yield from self.records(batch)


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
    return from_db_converter(fdef, dialect)
