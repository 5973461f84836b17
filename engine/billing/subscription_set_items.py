"""The subscription run's items as raw driver rows, converted only when needed.

A month's run reads every open item (five per subscription) but decides far
fewer distinct things: the decision of an item depends on its
:data:`~engine.billing.subscriptions._DECISION_FIELDS` and its subscription's
terms, its line (the taxed, priced template of
:class:`~engine.billing.subscription_lines.LineRows`) on the charge, its
quantity, title, product group, tax class, unit and billing type. Both are
remembered under the item's raw values (what the driver returns: scaled
integers and ISO dates on SQLite, Decimals and dates on PostgreSQL), so an
item that matches a remembered one needs no dict and no value conversion;
only an item that does not is converted (:meth:`NarrowItems.record`), to
exactly the record :class:`~engine.storage.reader.RecordReader` reads
(the same converters, the same keys), which the decision and the line are
then made from.

Raw values are equal exactly when the stored values are (one column stores
one representation: a fixed scale, one date format), so keying by them
cannot join two items the dict path would treat apart.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Sequence

import sqlalchemy as sa

from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.storage.context import Context
from engine.storage.types import from_db_converter

#: The item fields a line's template depends on (with its charge and the practice).
LINE_KEY_FIELDS = ("quantity", "title", "productgroup", "producttaxclass", "unit", "billingtype")
_AS_STORED = (FieldType.TEXT, FieldType.LONGTEXT, FieldType.PICKLIST, FieldType.EMAIL, FieldType.URL,
              FieldType.AUTONUMBER)


class NarrowItems:
    """Reads items (``id`` and the stored ``fields``) as raw rows; see the module docstring."""

    def __init__(self, ctx: Context, obj: ObjectDef, fields: Sequence[str], decision_fields: Sequence[str],
                 dialect: str):
        self.table = ctx.table(obj.name)
        defs: list[FieldDef] = [f for f in (obj.field(name) for name in fields) if f is not None and f.is_stored]
        self.keys = ("id", *(f.key for f in defs))
        self.at = {key: index for index, key in enumerate(self.keys)}
        self.columns = [sa.type_coerce(self.table.c.id, sa.types.NullType())] + \
                       [sa.type_coerce(self.table.c[f.column_name], sa.types.NullType()) for f in defs]
        self._convert: list[tuple[int, Callable[[Any], Any]]] = [
            (index, convert) for index, convert in enumerate((None, *(_converter(f, dialect) for f in defs)))
            if convert is not None]
        #: The raw values a decision depends on, and those a line's template depends on.
        self.decision_key = itemgetter(*(self.at[k] for k in decision_fields))
        self.line_key = itemgetter(*(self.at[k] for k in LINE_KEY_FIELDS))

    def read(self, conn: sa.Connection, where: sa.ColumnElement[bool],
             order_by: Sequence[sa.ColumnElement]) -> list[Sequence[Any]]:
        """The raw rows (the driver's own tuples: nothing is built per row)."""
        result = conn.execute(sa.select(*self.columns).where(where).order_by(*order_by))
        try:
            return result.cursor.fetchall()  # type: ignore[union-attr]
        finally:
            result.close()

    def record(self, row: Sequence[Any]) -> dict:
        """The item as :class:`~engine.storage.reader.RecordReader` reads it."""
        values = list(row)
        for index, convert in self._convert:
            value = values[index]
            if value is not None:
                values[index] = convert(value)
        return dict(zip(self.keys, values))


def _converter(fdef: FieldDef, dialect: str) -> Callable[[Any], Any] | None:
    """The reader's conversion of a field's raw value (None: taken as it is)."""
    if fdef.type.is_reference or fdef.type is FieldType.ID or fdef.type in _AS_STORED:
        return None
    return from_db_converter(fdef, dialect)
