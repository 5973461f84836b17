"""The filter condition tree: the checked values a parsed condition is made
of, and the constants of the language (problem codes, limits, operators).

Pure values (frozen dataclasses, no database import); the parser
(:mod:`.parser`) builds them, :mod:`.sql` compiles them.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Union

from engine.config.model import FieldDef

#: Problem codes (docs/diagnostics.md): syntax or limit, unknown field or
#: relationship, type error.
SYNTAX = "E056"
UNKNOWN = "E057"
TYPE = "E058"

MAX_LENGTH = 10_000  # characters
MAX_NODES = 500  # comparisons, AND, OR and NOT
MAX_DEPTH = 50  # nesting of parentheses and NOT
MAX_IN_ITEMS = 1_000  # values in one IN / NOT IN / INCLUDES / EXCLUDES list
MAX_HOPS = 5  # lookups in one field path
MAX_DAYS = 100_000  # n in LAST_N_DAYS:n / NEXT_N_DAYS:n
MAX_RECORD_ID = 2**63 - 1  # ids are BIGINT
#: Storage defaults for numbers declared without precision/scale (the same as
#: engine.storage.types, which this pure package does not import).
DEFAULT_PRECISION = 18
DEFAULT_SCALE = 0
#: The escape character of the LIKE patterns the lexer produces.
LIKE_ESCAPE = "/"

# Operators, as stored in Comparison.op.
EQ, NE, LT, LE, GT, GE = "=", "!=", "<", "<=", ">", ">="
LIKE, IN, NOT_IN, INCLUDES, EXCLUDES = "LIKE", "IN", "NOT IN", "INCLUDES", "EXCLUDES"
ORDERING = (LT, LE, GT, GE)

RANGE_LITERALS = ("TODAY", "YESTERDAY", "TOMORROW", "THIS_MONTH", "LAST_MONTH", "NEXT_MONTH",
                  "THIS_YEAR", "LAST_YEAR", "NEXT_YEAR")
N_DAY_LITERALS = ("LAST_N_DAYS", "NEXT_N_DAYS")



@dataclass(frozen=True, slots=True)
class ConditionProblem:
    """One problem of a condition; ``offset`` is a 0-based character offset
    into the condition text (None: the condition as a whole)."""

    code: str
    message: str
    offset: int | None
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class DateLiteral:
    """A relative date literal (``THIS_MONTH``, ``LAST_N_DAYS:30``); a range of
    days once a ``today`` is known."""

    name: str  # upper case, e.g. "LAST_N_DAYS"
    n: int | None = None

    def __str__(self) -> str:
        return self.name if self.n is None else f"{self.name}:{self.n}"

    def range(self, today: date) -> tuple[date, date]:
        """The first and last day (both inclusive) relative to ``today``."""
        name = self.name
        if name == "TODAY":
            return today, today
        if name == "YESTERDAY":
            day = _shift(today, -1)
            return day, day
        if name == "TOMORROW":
            day = _shift(today, 1)
            return day, day
        if name == "LAST_N_DAYS":
            return _shift(today, -(self.n or 0)), today
        if name == "NEXT_N_DAYS":
            return _shift(today, 1), _shift(today, self.n or 0)
        if name.endswith("_MONTH"):
            months = today.year * 12 + today.month - 1 + {"THIS": 0, "LAST": -1, "NEXT": 1}[name[:4]]
            year, month = divmod(months, 12)
            if not date.min.year <= year <= date.max.year:
                return (date.min, date.min) if year < date.min.year else (date.max, date.max)
            month += 1
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        if name.endswith("_YEAR"):
            year = today.year + {"THIS": 0, "LAST": -1, "NEXT": 1}[name[:4]]
            year = min(max(year, date.min.year), date.max.year)
            return date(year, 1, 1), date(year, 12, 31)
        raise ValueError(f"unknown date literal {name}")  # pragma: no cover - the lexer only makes known ones


def _shift(day: date, days: int) -> date:
    try:
        return day + timedelta(days=days)
    except OverflowError:
        return date.min if days < 0 else date.max


@dataclass(frozen=True, slots=True)
class LikePattern:
    """A LIKE pattern: ``pattern`` uses ``%``/``_`` as wildcards and
    :data:`LIKE_ESCAPE` before a literal ``%``, ``_`` or ``/``; ``text`` is
    the pattern as written (for messages)."""

    pattern: str
    text: str


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field as used in a condition: the relationship path leading to it
    (lower-case path names, empty for the target's own fields) and the
    field definition on the object the path ends at."""

    path: tuple[str, ...]
    field: FieldDef
    text: str  # as written, e.g. "Account.Type"
    offset: int

    @property
    def label(self) -> str:
        return f"{self.field.object_name}.{self.field.name}"


#: A comparison's value: None (null), str, Decimal, bool, int (record id),
#: date, datetime, DateLiteral, LikePattern; for IN/NOT IN a tuple of those;
#: for INCLUDES/EXCLUDES a tuple of tuples of picklist values.
Value = object


@dataclass(frozen=True, slots=True)
class Comparison:
    field: FieldRef
    op: str
    value: Value
    offset: int  # of the field


@dataclass(frozen=True, slots=True)
class Not:
    operand: "Node"
    offset: int


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple["Node", ...]


Node = Union[Comparison, Not, And, Or]


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed and checked condition on ``object_name``.

    ``root`` is None for an empty condition (every record). ``paths`` holds
    every relationship path a join is needed for, as tuples of lower-case path
    names, prefixes included (``Opportunity.Account.Name`` gives
    ``("opportunity",)`` and ``("opportunity", "account")``). ``references``
    holds the fields read, as path + lower-case field name."""

    text: str
    object_name: str
    root: Node | None
    paths: frozenset[tuple[str, ...]]
    references: frozenset[tuple[str, ...]]

    @property
    def is_empty(self) -> bool:
        return self.root is None
