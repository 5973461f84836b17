"""Filter conditions as SQLAlchemy expressions.

:func:`compile_condition` turns a :class:`~engine.billing.condition.Condition`
(parsed and checked at load time) into a WHERE expression plus the FROM
clause it needs: the base table LEFT OUTER JOINed with one anonymous alias
per relationship path, on ``lookup column = target.id``. An empty parent
therefore reads as null, and a record is never lost or duplicated by a join
(lookups point at one parent).

Values never become SQL text: every literal is a bound parameter typed with
the column's own type, so ``ExactDecimal`` scales numbers on SQLite exactly
as it does for stored values, and dates and date-times are converted the same
way as on insert.

Null handling follows :mod:`engine.billing.condition` (null is a value; every
comparison is true or false). SQL's three-valued logic would make
``NOT (x = 'a')`` drop the records where x is null, so NOT is pushed down to
the comparisons (De Morgan) and each comparison is emitted in its positive or
negative form with an explicit ``IS NULL`` where nulls must match. Above the
comparisons only AND and OR remain, for which an unknown result behaves
exactly like false.

Two helpers keep both databases answering the same: text ordering (``<``
etc. on text) compares code points (``COLLATE "C"`` on PostgreSQL, SQLite's
default binary collation), and INCLUDES/EXCLUDES search the stored ``a;b;c``
text case-sensitively (``strpos`` / ``instr``).
"""

from __future__ import annotations

import operator
from datetime import date, datetime, time, timezone
from typing import Any, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from engine.config.model import FieldType, ObjectDef
from engine.domain.errors import EngineError
from engine.storage.context import Context

from .tree import (
    EQ,
    EXCLUDES,
    GE,
    GT,
    IN,
    INCLUDES,
    LE,
    LIKE,
    LIKE_ESCAPE,
    LT,
    NE,
    NOT_IN,
    ORDERING,
    And,
    Comparison,
    Condition,
    DateLiteral,
    FieldRef,
    LikePattern,
    Node,
    Not,
    Or,
)

__all__ = ["ConditionCompileError", "compile_condition"]

_ID = "id"
_MULTI_SEPARATOR = ";"
_TEXT_TYPES = (FieldType.TEXT, FieldType.LONGTEXT, FieldType.EMAIL, FieldType.URL, FieldType.AUTONUMBER)
_ORDER_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    LT: operator.lt,
    LE: operator.le,
    GT: operator.gt,
    GE: operator.ge,
}


class ConditionCompileError(EngineError, ValueError):
    """A filter condition does not fit the model it is compiled against (it
    was checked against another model)."""

    code = "R203"


# ---------------------------------------------------------------------------
# Portable SQL helpers


class _position(FunctionElement):
    """``position(haystack, needle)``: 1-based position of needle, 0 if absent;
    case-sensitive on both databases."""

    type = sa.Integer()
    inherit_cache = True
    name = "mb_position"


@compiles(_position)
def _position_default(element: _position, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


@compiles(_position, "sqlite")
def _position_sqlite(element: _position, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


class _codepoint_order(FunctionElement):
    """A text expression that sorts by code point: ``COLLATE "C"`` on
    PostgreSQL (whose default collation may follow a locale), unchanged on
    SQLite (binary collation, the default)."""

    type = sa.String()
    inherit_cache = True
    name = "mb_codepoint_order"


@compiles(_codepoint_order)
def _codepoint_order_default(element: _codepoint_order, compiler: Any, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)} COLLATE "C")'


@compiles(_codepoint_order, "sqlite")
def _codepoint_order_sqlite(element: _codepoint_order, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


# ---------------------------------------------------------------------------


def compile_condition(
    condition: Condition,
    ctx: Context,
    base: sa.FromClause,
    *,
    today: date,
) -> tuple[sa.ColumnElement[bool], sa.FromClause]:
    """Return the WHERE expression and a FROM clause = base LEFT OUTER JOINed
    with one aliased table per relationship path used (joined on lookup
    column = target.id).

    The joined tables are the context's (``ctx.metadata``); ``base`` is the
    table of the condition's object, or an alias of it. Relative date
    literals are evaluated against ``today``. Use it as
    ``select(...).select_from(from_clause).where(where)``."""
    if condition.root is None:
        return sa.true(), base
    model = ctx.model
    root = model.object(condition.object_name)
    if root is None:
        raise ConditionCompileError(f"the condition's object {condition.object_name} is not in the model")
    sources: dict[tuple[str, ...], sa.FromClause] = {(): base}
    objects: dict[tuple[str, ...], ObjectDef] = {(): root}
    joined: sa.FromClause = base
    for path in sorted(condition.paths, key=lambda p: (len(p), p)):
        parent = objects[path[:-1]]
        lookup = parent.relationship(path[-1])
        target = model.object(lookup.reference_to) if lookup is not None and lookup.reference_to else None
        if lookup is None or target is None:
            raise ConditionCompileError(f"{parent.name} has no relationship {path[-1]} to a known object")
        table = ctx.metadata.tables.get(target.table_name)
        if table is None:
            raise ConditionCompileError(f"no table for {target.name} (relationship {'.'.join(path)})")
        alias = table.alias()
        joined = joined.outerjoin(alias, _column(sources[path[:-1]], lookup.column_name) == alias.c[_ID])
        sources[path] = alias
        objects[path] = target
    return _Builder(sources, today).build(condition.root, False), joined


def _column(source: sa.FromClause, name: str) -> sa.ColumnElement[Any]:
    try:
        return source.c[name]
    except KeyError:
        raise ConditionCompileError(f"{source} has no column {name}") from None


class _Builder:
    def __init__(self, sources: Mapping[tuple[str, ...], sa.FromClause], today: date) -> None:
        self.sources = sources
        self.today = today

    def build(self, node: Node, negate: bool) -> sa.ColumnElement[bool]:
        # Depth is bounded by the parser (50 levels of parentheses and NOT).
        if isinstance(node, Comparison):
            return self.comparison(node, negate)
        if isinstance(node, Not):
            return self.build(node.operand, not negate)
        if isinstance(node, And):
            parts = [self.build(operand, negate) for operand in node.operands]
            return sa.or_(*parts) if negate else sa.and_(*parts)
        if isinstance(node, Or):
            parts = [self.build(operand, negate) for operand in node.operands]
            return sa.and_(*parts) if negate else sa.or_(*parts)
        raise ConditionCompileError(f"unexpected condition node {type(node).__name__}")  # pragma: no cover

    def column(self, ref: FieldRef) -> sa.ColumnElement[Any]:
        source = self.sources.get(ref.path)
        if source is None:
            raise ConditionCompileError(f"no join for the relationship path {'.'.join(ref.path)}")
        return _column(source, ref.field.column_name)

    def comparison(self, node: Comparison, negate: bool) -> sa.ColumnElement[bool]:
        column = self.column(node.field)
        op, value = node.op, node.value
        if value is None and op in (EQ, NE):
            return column.is_(None) if (op == EQ) != negate else column.is_not(None)
        core, null_matches, complement = self.core(node, column)
        # The comparison is `core` (complement=False) or its negation; with
        # NOT above it the other way round.
        want_core = complement == negate
        if core is None:  # IN (null): the core is "column is null"
            return column.is_(None) if want_core else column.is_not(None)
        if want_core:
            return sa.or_(core, column.is_(None)) if null_matches else core
        # not_(core) is unknown for a null column, which then does not match:
        # right when the core matches nulls, else nulls must be added.
        return sa.not_(core) if null_matches else sa.or_(sa.not_(core), column.is_(None))

    def core(
        self, node: Comparison, column: sa.ColumnElement[Any]
    ) -> tuple[sa.ColumnElement[bool] | None, bool, bool]:
        """(core expression, whether the comparison matches a null column,
        whether the comparison is the core's negation). The core is unknown
        (NULL) when the column is null, else true or false."""
        op, value, field = node.op, node.value, node.field.field
        if isinstance(value, DateLiteral):
            low, high = self.bounds(value, field.type)
            if op in (EQ, NE):
                return sa.and_(column >= self.bind(column, low), column <= self.bind(column, high)), False, op == NE
            bound = low if op in (LT, GE) else high
            return _ORDER_OPERATORS[op](column, self.bind(column, bound)), False, False
        if op in (EQ, NE):
            return column == self.bind(column, value), False, op == NE
        if op in ORDERING:
            left = _codepoint_order(column) if field.type in _TEXT_TYPES else column
            return _ORDER_OPERATORS[op](left, self.bind(column, value)), False, False
        if op == LIKE:
            assert isinstance(value, LikePattern)
            return column.ilike(self.bind(column, value.pattern), escape=LIKE_ESCAPE), False, False
        if op in (IN, NOT_IN):
            items = [item for item in value if item is not None]  # type: ignore[union-attr]
            has_null = len(items) < len(value)  # type: ignore[arg-type]
            core = column.in_(items) if items else None
            return core, has_null, op == NOT_IN
        if op in (INCLUDES, EXCLUDES):
            wrapped = (
                sa.literal(_MULTI_SEPARATOR, sa.Text())
                + sa.type_coerce(column, sa.Text())
                + sa.literal(_MULTI_SEPARATOR, sa.Text())
            )
            groups = [
                sa.and_(*(
                    _position(wrapped, sa.literal(f"{_MULTI_SEPARATOR}{item}{_MULTI_SEPARATOR}", sa.Text())) > 0
                    for item in group
                ))
                for group in value  # type: ignore[union-attr]
            ]
            return sa.or_(*groups), False, op == EXCLUDES
        raise ConditionCompileError(f"unknown operator {op}")  # pragma: no cover

    def bounds(self, literal: DateLiteral, kind: FieldType) -> tuple[date | datetime, date | datetime]:
        """First and last instant of a date literal's range: days for Date
        fields, UTC date-times (00:00:00 to 23:59:59.999999) for DateTime."""
        first, last = literal.range(self.today)
        if kind is FieldType.DATETIME:
            return (
                datetime.combine(first, time.min, tzinfo=timezone.utc),
                datetime.combine(last, time.max, tzinfo=timezone.utc),
            )
        return first, last

    @staticmethod
    def bind(column: sa.ColumnElement[Any], value: object) -> sa.BindParameter[Any]:
        """``value`` as a bound parameter of the column's type."""
        return sa.literal(value, type_=column.type)
