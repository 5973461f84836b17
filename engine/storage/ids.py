"""Record ids and AutoNumber values, handed out by the engine.

Both come from named counters in ``_mb_sequence``: ``<table>`` for the ids of
a table, ``<table>.<column>`` for an AutoNumber field. A reservation is one
``UPDATE ... SET next_value = next_value + n`` inside the caller's
transaction. The updated row stays locked until that transaction ends, so
concurrent reservers queue on both databases (row lock on PostgreSQL, the
write lock taken by ``BEGIN IMMEDIATE`` on SQLite) and never receive the
same numbers. A rolled-back transaction gives its numbers back.

Reserving a whole block at once is what lets bulk inserts skip RETURNING.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.config.model import FieldDef, FieldType, ObjectDef

from .schema import ID, SEQUENCE

_MASK = re.compile(r"\{(0+)\}")


def _insert_if_missing(conn: sa.Connection, name: str, start: int) -> None:
    dialect = conn.dialect.name
    values = {"name": name, "next_value": start}
    if dialect == "postgresql":
        stmt = postgresql.insert(SEQUENCE).values(values).on_conflict_do_nothing(index_elements=["name"])
    elif dialect == "sqlite":
        stmt = sqlite.insert(SEQUENCE).values(values).on_conflict_do_nothing(index_elements=["name"])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        exists = conn.execute(sa.select(SEQUENCE.c.name).where(SEQUENCE.c.name == name)).first()
        if exists:
            return
        stmt = SEQUENCE.insert().values(values)
    conn.execute(stmt)


def _advance(conn: sa.Connection, name: str, count: int, initial: Callable[[], int]) -> int:
    """Move counter ``name`` on by ``count``; return the first value taken."""
    bump = (
        SEQUENCE.update()
        .where(SEQUENCE.c.name == name)
        .values(next_value=SEQUENCE.c.next_value + count)
        .returning(SEQUENCE.c.next_value)
    )
    after = conn.execute(bump).scalar_one_or_none()
    if after is None:
        # First use. ON CONFLICT DO NOTHING: a concurrent first user may have
        # inserted the row meanwhile; both then go through the same UPDATE.
        _insert_if_missing(conn, name, initial())
        after = conn.execute(bump).scalar_one()
    return after - count


def _first_free_id(conn: sa.Connection, table_name: str) -> Callable[[], int]:
    def initial() -> int:
        # Rows written before the counter existed (or by hand) must not clash.
        table = sa.table(table_name, sa.column(ID))
        highest = conn.execute(sa.select(sa.func.max(table.c[ID]))).scalar()
        return int(highest or 0) + 1

    return initial


def reserve_ids(conn: sa.Connection, table_name: str, count: int) -> range:
    """Reserve ``count`` consecutive record ids for ``table_name``.

    Runs inside the caller's transaction; the ids are final once it commits.
    The first reservation for a table starts after its highest existing id.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    if count == 0:
        return range(0)
    first = _advance(conn, table_name, count, _first_free_id(conn, table_name))
    return range(first, first + count)


def advance_ids_past(conn: sa.Connection, table_name: str, used_id: int) -> None:
    """Make sure later reservations for ``table_name`` start after ``used_id``
    (called after rows were written with explicit ids)."""
    first = _first_free_id(conn, table_name)
    _insert_if_missing(conn, table_name, max(first(), used_id + 1))
    conn.execute(
        SEQUENCE.update()
        .where(SEQUENCE.c.name == table_name)
        .where(SEQUENCE.c.next_value <= used_id)
        .values(next_value=used_id + 1)
    )


def autonumber_field(obj: ObjectDef, field: FieldDef | str | None = None) -> FieldDef:
    """The AutoNumber field to number: the one named, else the Name field when
    it is an AutoNumber, else the object's only AutoNumber field."""
    if isinstance(field, FieldDef):
        found: FieldDef | None = field
    elif isinstance(field, str):
        found = obj.field(field)
    else:
        found = obj.field("Name")
        if found is None or found.type is not FieldType.AUTONUMBER:
            candidates = [f for f in obj.fields if f.type is FieldType.AUTONUMBER]
            found = candidates[0] if len(candidates) == 1 else None
    if found is None or found.type is not FieldType.AUTONUMBER:
        raise ValueError(f"{obj.name} has no such AutoNumber field")
    if not found.autonumber_format:
        raise ValueError(f"AutoNumber field {obj.name}.{found.name} has no format")
    return found


def format_autonumber(fmt: str, number: int) -> str:
    """Render ``number`` into ``fmt``: ``INV-{000000}`` and 42 give
    ``INV-000042``. The zeros set the minimum width; a wider number is written
    in full, never truncated."""
    match = _MASK.search(fmt)
    if match is None:
        raise ValueError(f"AutoNumber format {fmt!r} has no {{0...}} number mask")
    width = len(match.group(1))
    return f"{fmt[: match.start()]}{number:0{width}d}{fmt[match.end():]}"


def autonumber_sequence_name(obj: ObjectDef, field: FieldDef) -> str:
    return f"{obj.table_name}.{field.column_name}"


class AutoNumbers(Sequence[str]):
    """A reserved block of AutoNumber values, each formatted when it is read.

    Why: a set-based insert numbers its rows in SQL from the block's first
    value and reads few of the others in Python; formatting every value of
    a 100k-row block first cost more than the reservation itself."""

    def __init__(self, fmt: str, first: int, count: int):
        match = _MASK.search(fmt)
        assert match is not None
        head, tail, width = fmt[: match.start()], fmt[match.end():], len(match.group(1))
        # One %-template for the whole block (same text as format_autonumber).
        self._template = f"{head.replace('%', '%%')}%0{width}d{tail.replace('%', '%%')}"
        self.first, self._count = first, count

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._template % n for n in range(self.first, self.first + self._count)[index]]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError("AutoNumber block index out of range")
        return self._template % (self.first + index)

    def __iter__(self) -> Iterator[str]:
        template = self._template
        return (template % n for n in range(self.first, self.first + self._count))


def reserve_autonumbers(
    conn: sa.Connection, obj: ObjectDef, count: int, field: FieldDef | str | None = None
) -> AutoNumbers:
    """The next ``count`` AutoNumber values of ``obj`` (its Name field unless
    ``field`` names another AutoNumber field), inside the caller's
    transaction, as a lazily formatted block (:class:`AutoNumbers`)."""
    target = autonumber_field(obj, field)
    fmt = target.autonumber_format or ""
    format_autonumber(fmt, 0)  # fail before touching the counter
    if count <= 0:
        return AutoNumbers(fmt, 1, 0)
    first = _advance(conn, autonumber_sequence_name(obj, target), count, lambda: 1)
    return AutoNumbers(fmt, first, count)


def next_autonumbers(
    conn: sa.Connection, obj: ObjectDef, count: int, field: FieldDef | str | None = None
) -> list[str]:
    """The next ``count`` AutoNumber values of ``obj`` (its Name field unless
    ``field`` names another AutoNumber field), inside the caller's transaction."""
    # Bulk inserts number hundreds of thousands of rows: one template, formatted in one pass.
    return list(reserve_autonumbers(conn, obj, count, field))
