"""Invoice-run filter conditions: a small subset of the SOQL ``WHERE`` clause,
parsed and type-checked once, when the configuration is loaded.

A Filter record's ``Condition`` selects which records of the filter's target
object an invoice run bills. This module is pure (no database import): it
turns the text into an immutable, checked :class:`Condition` tree, or reports
:class:`ConditionProblem` values pointing at a character offset of the text.
:mod:`engine.billing.sqlcondition` compiles a checked tree into a SQLAlchemy
expression whose values are always bound parameters.

Language
========

``field op value``, combined with ``AND``, ``OR``, ``NOT`` and parentheses.
Keywords are case-insensitive. ``NOT`` binds tighter than ``AND``, which
binds tighter than ``OR``: ``a OR NOT b AND c`` is ``a OR ((NOT b) AND c)``.

Operators
    ``=  !=  <>  <  <=  >  >=``, ``LIKE 'pattern'``, ``IN (v, ...)``,
    ``NOT IN (v, ...)``, and for multi-select picklists ``INCLUDES ('a;b', 'c')``
    / ``EXCLUDES (...)`` (``'a;b'`` means a and b, the list items are or-ed).
Values
    ``'text'`` in single quotes with the escapes ``\\' \\" \\\\ \\n \\r \\t \\b \\f``
    and, meaningful in LIKE patterns, ``\\%`` and ``\\_`` (a literal percent sign
    or underscore); numbers like ``12`` or ``-0.5`` (read as Decimal, never
    float; no exponents); ``true``/``false``; ``null``; dates ``2024-01-31``;
    date-times ``2024-01-31T08:00:00Z`` (a time zone, ``Z`` or ``+01:00``, is
    required); and the relative date literals ``TODAY``, ``YESTERDAY``,
    ``TOMORROW``, ``LAST_N_DAYS:n``, ``NEXT_N_DAYS:n``, ``THIS_MONTH``,
    ``LAST_MONTH``, ``NEXT_MONTH``, ``THIS_YEAR``, ``LAST_YEAR``, ``NEXT_YEAR``.
Fields
    A field of the target (``Status``, ``ON_Type__c``) or a path through
    lookups (``Account.Type``, ``Order__r.Account.Name``): at most 5 hops, each
    named by the lookup's relationship path name (``Account`` for
    ``AccountId``, ``Order__r`` for ``Order__c``).

Types
=====

Text, Email, Url, AutoNumber and LongText fields take text (all operators);
picklists take text (``=``, ``!=``, LIKE, IN; a restricted picklist's value
must be one of its values, matched ignoring case and rewritten to the
declared spelling); multi-select picklists take text (``=``/``!=`` compare
the whole selection in any order, INCLUDES/EXCLUDES); Number, Currency and
Percent take numbers with at most the field's decimals; Checkbox takes
true/false (``=``, ``!=``); Date takes dates and relative date literals;
DateTime takes date-times and relative date literals; lookups and Id take
record ids (whole numbers, ``=``, ``!=``, IN). Every field can be compared
with ``null`` using ``=`` or ``!=``; IN lists may contain ``null``. Formula
fields are refused for now.

Semantics
=========

* **Null is a value**, as in SOQL: every comparison is true or false for
  every record, never unknown. ``x = null`` and ``x != null`` test for a
  missing value; ``x != 'a'``, ``x NOT IN (...)`` and ``x EXCLUDES (...)``
  *match* records where x is null; ``=``, ``<``, ``<=``, ``>``, ``>=``, LIKE,
  IN and INCLUDES never match a null (unless the IN list contains null).
  ``NOT c`` is exactly the records ``c`` does not select. A field reached
  through a lookup that is empty is null. Empty text ``''`` means null
  (the engine never stores empty text).
* **Text equality is exact** (case-sensitive; SOQL ignores case here, except
  that restricted picklist values are matched ignoring case at load time).
  ``<``/``>`` on text compare by Unicode code point on both databases.
* **LIKE ignores case**: ``%`` matches any run of characters, ``_`` exactly
  one; ``\\%``/``\\_`` match the character itself. (SQLite folds ASCII
  letters only; PostgreSQL folds all letters.)
* **Relative date literals are day ranges** evaluated against the ``today``
  passed when the condition is compiled (never the clock): ``TODAY``,
  ``YESTERDAY``, ``TOMORROW`` one day; ``LAST_N_DAYS:n`` from today minus n
  days through today (n + 1 days, today included); ``NEXT_N_DAYS:n`` from
  tomorrow through today plus n days (today excluded); ``THIS/LAST/NEXT_MONTH``
  and ``THIS/LAST/NEXT_YEAR`` the whole calendar month or year. ``= R`` means
  within the range, ``!= R`` outside it (or null), ``< R`` before its first
  day, ``<= R`` on or before its last day, ``> R`` after its last day and
  ``>= R`` on or after its first day. On DateTime fields the days are UTC days.

Limits: 10,000 characters, 500 elements (comparisons, AND, OR, NOT),
nesting 50 levels (parentheses and NOT), 1,000 values per list, n at most
100,000 in ``LAST_N_DAYS:n``/``NEXT_N_DAYS:n``. The parser is recursive
descent, but checks the nesting depth before every descent, so no input can
exhaust the stack.

Codes: E056 syntax or limit, E057 unknown field or relationship, E058 type
error (value or operator does not fit the field, picklist value not defined,
formula field used).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Union

from engine.config.diagnostics import did_you_mean
from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.config.values import ValueProblem, check_number_shape, parse_decimal

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
#: engine.storage.types, which this pure module does not import).
DEFAULT_PRECISION = 18
DEFAULT_SCALE = 0
#: The escape character of the LIKE patterns this module produces.
LIKE_ESCAPE = "/"

# Operators, as stored in Comparison.op.
EQ, NE, LT, LE, GT, GE = "=", "!=", "<", "<=", ">", ">="
LIKE, IN, NOT_IN, INCLUDES, EXCLUDES = "LIKE", "IN", "NOT IN", "INCLUDES", "EXCLUDES"
ORDERING = (LT, LE, GT, GE)

_KEYWORDS = {"AND", "OR", "NOT", "LIKE", "IN", "INCLUDES", "EXCLUDES"}
_CONSTANTS = {"TRUE": True, "FALSE": False, "NULL": None}
RANGE_LITERALS = ("TODAY", "YESTERDAY", "TOMORROW", "THIS_MONTH", "LAST_MONTH", "NEXT_MONTH",
                  "THIS_YEAR", "LAST_YEAR", "NEXT_YEAR")
N_DAY_LITERALS = ("LAST_N_DAYS", "NEXT_N_DAYS")


# ---------------------------------------------------------------------------
# Public values


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


# ---------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # name, keyword, constant, datelit, string, number, date, datetime, op, open, close, comma, end
    text: str
    start: int
    end: int
    value: object = None


class _Failed(Exception):
    """Carries a problem that stops parsing (syntax errors, limits)."""

    def __init__(self, problem: ConditionProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _fail(message: str, offset: int | None, hint: str | None = None, code: str = SYNTAX) -> _Failed:
    return _Failed(ConditionProblem(code, message, offset, hint))


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SCAN = re.compile(
    rf"""
      (?P<space>\s+)
    | (?P<datetime>\d{{4}}-\d{{2}}-\d{{2}}T\d{{2}}:\d{{2}}:\d{{2}}(?:\.\d{{1,6}})?(?P<zone>Z|[+-]\d{{2}}:\d{{2}})?)
    | (?P<date>\d{{4}}-\d{{2}}-\d{{2}})
    | (?P<number>[-+]?(?:\d+(?:\.\d+)?|\.\d+))
    | (?P<name>{_NAME}(?:\.{_NAME})*)
    | (?P<op><>|!=|<=|>=|=|<|>)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    """,
    re.VERBOSE,
)
_N_SUFFIX = re.compile(r":(\d{1,7})(?![0-9A-Za-z_])")
_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
_CHARACTER_HINTS = {
    '"': "text is written in single quotes: 'like this'",
    ";": "a condition is one expression; there is no ';'",
    "&": "use AND",
    "|": "use OR",
    "!": "use != for 'not equal', NOT to negate",
    "[": "lists are written in parentheses: IN ('a', 'b')",
    "{": "lists are written in parentheses: IN ('a', 'b')",
    "-": "comments and arithmetic are not part of conditions",
    "/": "comments and arithmetic are not part of conditions",
    "*": "use LIKE with % as the wildcard",
    "?": "write the value itself; conditions have no parameters",
    ":": "write the value itself; conditions have no bind variables",
    ".": "a field path is written like Account.Type, without spaces",
}
_TRAILING_NUMBER = re.compile(r"[A-Za-z0-9_.]")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char == "'":
            if tokens and tokens[-1].kind == "string":
                raise _fail("unexpected text right after text", position,
                            "write a quote inside text as \\' (not '')")
            value, pattern, end = _scan_text(text, position)
            tokens.append(_Token("string", text[position:end], position, end, (value, pattern)))
            position = end
            continue
        match = _SCAN.match(text, position)
        if match is None:
            raise _fail(f"unexpected character {char!r}", position, _CHARACTER_HINTS.get(char))
        kind = match.lastgroup or ""
        end = match.end()
        word = match.group()
        if kind == "space":
            position = end
            continue
        if kind in ("datetime", "date", "number") and end < length and _TRAILING_NUMBER.match(text[end]):
            if kind == "date" and text[end] in "T:":
                raise _fail(f"malformed date-time starting with {word}", position,
                            f"write a date-time like {word}T00:00:00Z")
            raise _fail(f"{word} cannot be followed directly by {text[end]!r}", end,
                        "write numbers like 1234.5 (no exponents) and separate values with spaces")
        if kind == "datetime":
            if match.group("zone") is None:
                raise _fail("a date-time needs a time zone", end, "end it with Z (UTC) or an offset like +01:00")
            try:
                value = datetime.fromisoformat(word[:-1] + "+00:00" if word.endswith("Z") else word)
            except ValueError:
                raise _fail(f"{word} is not a valid date-time", position) from None
            tokens.append(_Token("datetime", word, position, end, value.astimezone(timezone.utc)))
        elif kind == "date":
            try:
                value = date.fromisoformat(word)
            except ValueError:
                raise _fail(f"{word} is not a valid date", position, "write dates as YYYY-MM-DD") from None
            tokens.append(_Token("date", word, position, end, value))
        elif kind == "number":
            tokens.append(_Token("number", word, position, end, parse_decimal(word)))
        elif kind == "name":
            upper = word.upper()
            if upper in N_DAY_LITERALS:
                suffix = _N_SUFFIX.match(text, end)
                if suffix is None:
                    raise _fail(f"{upper} needs a number of days", end, f"write it like {upper}:30")
                n = int(suffix.group(1))
                if not 1 <= n <= MAX_DAYS:
                    raise _fail(f"the number of days in {upper}:{n} must be between 1 and {MAX_DAYS:,}",
                                suffix.start(1))
                end = suffix.end()
                tokens.append(_Token("datelit", text[position:end], position, end, DateLiteral(upper, n)))
            elif end < length and text[end] == ":":
                raise _fail(f"unexpected ':' after {word}", end,
                            "only LAST_N_DAYS:n and NEXT_N_DAYS:n take a number after ':'")
            elif end < length and text[end] == ".":
                raise _fail(f"the field path {word}. does not end in a field name", end,
                            "write paths like Account.Type, without spaces")
            elif upper in RANGE_LITERALS:
                tokens.append(_Token("datelit", word, position, end, DateLiteral(upper)))
            elif upper in _KEYWORDS:
                tokens.append(_Token("keyword", upper, position, end, upper))
            elif upper in _CONSTANTS:
                tokens.append(_Token("constant", word, position, end, _CONSTANTS[upper]))
            else:
                segments = []
                offset = position
                for segment in word.split("."):
                    segments.append((segment, offset))
                    offset += len(segment) + 1
                tokens.append(_Token("name", word, position, end, tuple(segments)))
        else:
            tokens.append(_Token(kind, word, position, end))
        position = end
    tokens.append(_Token("end", "", length, length))
    return tokens


def _like_literal(char: str) -> str:
    return LIKE_ESCAPE + char if char in ("%", "_", LIKE_ESCAPE) else char


def _scan_text(text: str, start: int) -> tuple[str, str, int]:
    """Decode the quoted text at ``start``: its value, its LIKE pattern and
    the offset after the closing quote."""
    value: list[str] = []
    pattern: list[str] = []
    position = start + 1
    length = len(text)
    while position < length:
        char = text[position]
        if char == "'":
            return "".join(value), "".join(pattern), position + 1
        if char == "\\":
            if position + 1 >= length:
                break
            escaped = text[position + 1]
            if escaped in ("%", "_"):
                value.append(escaped)
                pattern.append(LIKE_ESCAPE + escaped)
            elif escaped in _ESCAPES:
                value.append(_ESCAPES[escaped])
                pattern.append(_like_literal(_ESCAPES[escaped]))
            else:
                raise _fail(f"unknown escape sequence \\{escaped} in text", position,
                            "known escapes: \\' \\\" \\\\ \\n \\r \\t \\b \\f \\% \\_")
            position += 2
            continue
        value.append(char)
        pattern.append(char if char in ("%", "_") else _like_literal(char))
        position += 1
    raise _fail("text is never closed", start, "end it with '")


# ---------------------------------------------------------------------------
# Field kinds


def _kind(field: FieldDef) -> str:
    kind = field.type
    if kind is FieldType.FORMULA or field.formula is not None:
        return "formula"
    if kind in (FieldType.TEXT, FieldType.LONGTEXT, FieldType.EMAIL, FieldType.URL, FieldType.AUTONUMBER):
        return "text"
    if kind is FieldType.PICKLIST:
        return "picklist"
    if kind is FieldType.MULTIPICKLIST:
        return "multipicklist"
    if kind.is_numeric:
        return "number"
    if kind is FieldType.CHECKBOX:
        return "checkbox"
    if kind is FieldType.DATE:
        return "date"
    if kind is FieldType.DATETIME:
        return "datetime"
    return "reference"  # Lookup, MasterDetail, Id


_OPERATORS: dict[str, frozenset[str]] = {
    "text": frozenset({EQ, NE, *ORDERING, LIKE, IN, NOT_IN}),
    "picklist": frozenset({EQ, NE, LIKE, IN, NOT_IN}),
    "multipicklist": frozenset({EQ, NE, INCLUDES, EXCLUDES}),
    "number": frozenset({EQ, NE, *ORDERING, IN, NOT_IN}),
    "checkbox": frozenset({EQ, NE}),
    "date": frozenset({EQ, NE, *ORDERING, IN, NOT_IN}),
    "datetime": frozenset({EQ, NE, *ORDERING, IN, NOT_IN}),
    "reference": frozenset({EQ, NE, IN, NOT_IN}),
}

_LITERAL_WORDS = {
    "string": "text",
    "number": "the number",
    "date": "the date",
    "datetime": "the date-time",
    "datelit": "the date literal",
    "constant": "",
}


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the condition"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    if token.kind == "constant":
        return str(token.text).lower()
    word = _LITERAL_WORDS.get(token.kind)
    return f"{word} {text}" if word else f"'{text}'" if token.kind != "name" else text


class _Mismatch(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


# ---------------------------------------------------------------------------
# Parser and checker


class _Parser:
    """Recursive descent over the token list. Syntax errors and limits stop
    parsing (raised as _Failed); unknown names and type errors are collected,
    so one pass reports all of them."""

    def __init__(self, text: str, tokens: list[_Token], obj: ObjectDef,
                 lookup_object: Callable[[str], ObjectDef | None]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        self.obj = obj
        self.lookup = lookup_object
        self.nodes = 0
        self.problems: list[ConditionProblem] = []
        self.paths: set[tuple[str, ...]] = set()
        self.references: set[tuple[str, ...]] = set()
        self._current: _Token | None = None  # the value being checked, for problem offsets

    # -- token access -----------------------------------------------------

    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def is_keyword(self, word: str) -> bool:
        token = self.peek
        return token.kind == "keyword" and token.value == word

    def count(self, offset: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _fail(f"the condition has more than {MAX_NODES} elements (comparisons, AND, OR, NOT)", offset,
                        "split the selection over several filters, or use IN lists")

    def problem(self, code: str, message: str, offset: int | None, hint: str | None = None) -> None:
        self.problems.append(ConditionProblem(code, message, offset, hint))

    # -- grammar ----------------------------------------------------------

    def parse(self) -> Node | None:
        root = self.or_(0)
        token = self.peek
        if token.kind != "end":
            if token.kind == "close":
                raise _fail("')' has no matching '('", token.start)
            hint = None
            if token.kind == "name" or token.kind == "keyword" and token.value in ("NOT", "LIKE", "IN"):
                hint = "is AND or OR missing before it?"
            raise _fail(f"expected AND, OR or the end of the condition, found {_describe(token)}", token.start, hint)
        return root

    def or_(self, depth: int) -> Node | None:
        operands = [self.and_(depth)]
        while self.is_keyword("OR"):
            self.count(self.advance().start)
            operands.append(self.and_(depth))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))  # type: ignore[arg-type]

    def and_(self, depth: int) -> Node | None:
        operands = [self.not_(depth)]
        while self.is_keyword("AND"):
            self.count(self.advance().start)
            operands.append(self.not_(depth))
        return operands[0] if len(operands) == 1 else And(tuple(operands))  # type: ignore[arg-type]

    def not_(self, depth: int) -> Node | None:
        if self.is_keyword("NOT"):
            token = self.advance()
            self.count(token.start)
            if depth + 1 > MAX_DEPTH:
                raise _fail(f"the condition is nested more than {MAX_DEPTH} levels deep", token.start)
            operand = self.not_(depth + 1)
            return Not(operand, token.start)  # type: ignore[arg-type]
        return self.primary(depth)

    def primary(self, depth: int) -> Node | None:
        token = self.peek
        if token.kind == "open":
            self.advance()
            if depth + 1 > MAX_DEPTH:
                raise _fail(f"the condition is nested more than {MAX_DEPTH} levels deep", token.start)
            inner = self.or_(depth + 1)
            closing = self.peek
            if closing.kind != "close":
                if closing.kind == "end":
                    raise _fail("'(' is never closed", token.start, "add the missing ')'")
                raise _fail(f"expected AND, OR or ')', found {_describe(closing)}", closing.start)
            self.advance()
            return inner
        if token.kind == "name":
            return self.comparison()
        raise self.expected_field(token)

    def expected_field(self, token: _Token) -> _Failed:
        if token.kind == "end":
            if self.index == 0:  # pragma: no cover - an empty condition never gets here
                return _fail("the condition is empty", 0)
            return _fail("the condition ends unexpectedly", token.start, "a comparison is missing at the end")
        if token.kind in ("string", "number", "date", "datetime", "constant", "datelit"):
            return _fail(f"expected a field name, found {_describe(token)}", token.start,
                         "write the field first: Field = value (comparing two values is not supported)")
        if token.kind == "keyword":
            return _fail(f"expected a field name, NOT or '(', found {token.value}", token.start)
        return _fail(f"expected a field name, NOT or '(', found {_describe(token)}", token.start)

    def comparison(self) -> Comparison | None:
        name = self.advance()
        self.count(name.start)
        if name.text.upper() in ("WHERE", "SELECT") and self.peek.kind in ("name", "keyword"):
            raise _fail(f"{name.text.upper()} is not part of a condition", name.start,
                        "write only what follows WHERE, e.g. Status = 'Activated'")
        ref = self.resolve(name)
        op_token = self.advance()
        if op_token.kind == "op":
            op = NE if op_token.text == "<>" else op_token.text
            if op == EQ and self.peek.kind == "op" and self.peek.text == "=" and self.peek.start == op_token.end:
                raise _fail("'==' is not an operator", op_token.start, "use a single = for 'equals'")
            value_token = self.value_token(op_token)
            return self.check(ref, op, op_token, [value_token], name.start)
        if op_token.kind == "keyword" and op_token.value == "LIKE":
            value_token = self.value_token(op_token)
            return self.check(ref, LIKE, op_token, [value_token], name.start)
        if op_token.kind == "keyword" and op_token.value in ("IN", "INCLUDES", "EXCLUDES"):
            items = self.value_list(op_token)
            return self.check(ref, str(op_token.value), op_token, items, name.start)
        if op_token.kind == "keyword" and op_token.value == "NOT":
            following = self.advance()
            if following.kind != "keyword" or following.value != "IN":
                raise _fail("after a field name, NOT can only start NOT IN", op_token.start,
                            "to negate a comparison write NOT (Field LIKE 'x%')")
            items = self.value_list(following)
            return self.check(ref, NOT_IN, op_token, items, name.start)
        raise _fail(f"expected an operator after {name.text}, found {_describe(op_token)}", op_token.start,
                    "operators: = != < <= > >= LIKE IN NOT IN INCLUDES EXCLUDES")

    def value_token(self, op_token: _Token) -> _Token:
        token = self.advance()
        if token.kind in ("string", "number", "date", "datetime", "constant", "datelit"):
            return token
        what = op_token.text if op_token.kind == "op" else str(op_token.value)
        if token.kind == "name":
            if self._names_field(token):
                raise _fail(f"{token.text} is a field: comparing two fields is not supported", token.start,
                            "compare the field with a value")
            raise _fail(f"expected a value after {what}, found {token.text}", token.start,
                        f"text values are written in single quotes: '{token.text}'")
        if token.kind == "open":
            raise _fail(f"expected a value after {what}, found '('", token.start,
                        "a list of values needs IN: Field IN ('a', 'b')")
        raise _fail(f"expected a value after {what}, found {_describe(token)}", token.start)

    def _names_field(self, token: _Token) -> bool:
        segments = [s for s, _ in token.value]  # type: ignore[union-attr]
        obj: ObjectDef | None = self.obj
        for segment in segments[:-1]:
            lookup = obj.relationship(segment) if obj else None
            obj = self.lookup(lookup.reference_to) if lookup and lookup.reference_to else None
        return obj is not None and obj.field(segments[-1]) is not None

    def value_list(self, op_token: _Token) -> list[_Token]:
        opening = self.advance()
        if opening.kind != "open":
            raise _fail(f"{op_token.value} needs a list in parentheses, found {_describe(opening)}", opening.start,
                        f"write it like {op_token.value} ('a', 'b')")
        items: list[_Token] = []
        while True:
            if self.peek.kind == "close" and not items:
                raise _fail("the list is empty", self.peek.start, "give at least one value")
            token = self.value_token(op_token)
            items.append(token)
            if len(items) > MAX_IN_ITEMS:
                raise _fail(f"the list has more than {MAX_IN_ITEMS:,} values", token.start,
                            "split the selection over several filters")
            separator = self.advance()
            if separator.kind == "close":
                return items
            if separator.kind != "comma":
                if separator.kind == "end":
                    raise _fail("the list is never closed", opening.start, "add the missing ')'")
                raise _fail(f"expected ',' or ')' in the list, found {_describe(separator)}", separator.start)

    # -- names ------------------------------------------------------------

    def resolve(self, token: _Token) -> FieldRef | None:
        segments: tuple[tuple[str, int], ...] = token.value  # type: ignore[assignment]
        if len(segments) - 1 > MAX_HOPS:
            raise _fail(f"{token.text} follows {len(segments) - 1} relationships; at most {MAX_HOPS} are allowed",
                        token.start)
        obj = self.obj
        path: list[str] = []
        for index, (segment, offset) in enumerate(segments[:-1]):
            lookup = obj.relationship(segment)
            if lookup is None:
                self.unknown_relationship(obj, segment, offset, segments[index + 1][0])
                return None
            target = self.lookup(lookup.reference_to) if lookup.reference_to else None
            if target is None:
                self.problem(UNKNOWN, f"{obj.name}.{lookup.name} refers to the unknown object "
                             f"{lookup.reference_to}", offset)
                return None
            if target.is_setting:
                self.problem(UNKNOWN, f"{obj.name}.{lookup.name} points to the custom setting {target.name}, "
                             "whose records are not in the database", offset)
                return None
            path.append((lookup.path_name or lookup.name).lower())
            obj = target
        name, offset = segments[-1]
        field = obj.field(name)
        if field is None:
            if obj.relationship(name) is not None:
                hint = f"{name} is a relationship; name one of its fields, e.g. {name}.Name"
            else:
                hint = did_you_mean(name, [f.name for f in obj.fields])
            self.problem(UNKNOWN, f"unknown field {name} on {obj.name}", offset, hint)
            return None
        if _kind(field) == "formula":
            self.problem(TYPE, f"{obj.name}.{field.name} is a formula field: formula fields cannot be used in "
                         "filter conditions yet: compare the fields the formula reads", offset)
            return None
        for end in range(1, len(path) + 1):
            self.paths.add(tuple(path[:end]))
        self.references.add((*path, field.key))
        return FieldRef(tuple(path), field, token.text, token.start)

    def unknown_relationship(self, obj: ObjectDef, segment: str, offset: int, following: str) -> None:
        field = obj.field(segment)
        if field is not None and field.type.is_reference and field.path_name:
            self.problem(UNKNOWN, f"{segment} is the id of a lookup; follow the relationship {field.path_name} "
                         "instead", offset, f"did you mean {field.path_name}.{following}?")
        elif field is not None:
            self.problem(UNKNOWN, f"{obj.name}.{field.name} is not a lookup, so '.' cannot follow it", offset)
        else:
            candidates = [f.path_name for f in obj.fields if f.path_name]
            self.problem(UNKNOWN, f"unknown relationship {segment} on {obj.name}", offset,
                         did_you_mean(segment, candidates))

    # -- types ------------------------------------------------------------

    def check(self, ref: FieldRef | None, op: str, op_token: _Token, items: list[_Token],
              offset: int) -> Comparison | None:
        if ref is None:
            return None
        kind = _kind(ref.field)
        if op not in _OPERATORS[kind]:
            self.problem(TYPE, _operator_problem(ref, kind, op), op_token.start, _operator_hint(kind, op))
            return None
        self._current = items[0]
        try:
            if op == LIKE:
                token = items[0]
                if token.kind != "string":
                    raise _Mismatch(f"LIKE needs a text pattern in single quotes, not {_describe(token)}")
                value: Value = LikePattern(token.value[1], token.value[0])  # type: ignore[index]
            elif op in (INCLUDES, EXCLUDES):
                groups = []
                for token in items:
                    self._current = token
                    parts = self.multipicklist_parts(ref, token)
                    if not parts:
                        raise _Mismatch(f"{op} needs picklist values, not {_describe(token)}")
                    groups.append(parts)
                value = tuple(groups)
            elif op in (IN, NOT_IN):
                values = []
                for token in items:
                    self._current = token
                    if token.kind == "datelit":
                        raise _Mismatch(f"date range literals like {token.text} cannot be used in lists",
                                        f"compare with = {token.text} and combine with OR")
                    values.append(self.convert(ref, kind, token))
                value = tuple(values)
            else:
                token = items[0]
                self._current = token
                value = self.convert(ref, kind, token)
                if value is None and op not in (EQ, NE):
                    raise _Mismatch(f"null can only be compared with = or !=, not {op}")
        except _Mismatch as mismatch:
            self.problem(TYPE, mismatch.message, self._current.start, mismatch.hint)
            return None
        return Comparison(ref, op, value, offset)

    def convert(self, ref: FieldRef, kind: str, token: _Token) -> object:
        """The typed value of ``token`` compared with ``ref``; raises _Mismatch."""
        if token.kind == "constant" and token.value is None:
            return None
        field = ref.field
        if kind in ("text", "picklist", "multipicklist"):
            if token.kind != "string":
                raise _Mismatch(f"{ref.label} is a {field.type.value} field and cannot be compared with "
                                f"{_describe(token)}", f"text values are written in single quotes: '{token.text}'")
            text = token.value[0]  # type: ignore[index]
            if text == "":
                return None  # empty text is never stored: '' means null
            if kind == "picklist":
                return _picklist_value(ref, text)
            if kind == "multipicklist":
                return ";".join(self.multipicklist_parts(ref, token))
            return text
        if kind == "number":
            if token.kind != "number":
                hint = None
                if token.kind == "string":
                    try:
                        parse_decimal(token.value[0])  # type: ignore[index]
                        hint = f"write numbers without quotes: {token.value[0].strip()}"  # type: ignore[index]
                    except ValueProblem:
                        pass
                raise _Mismatch(f"{ref.label} is a {field.type.value} field and cannot be compared with "
                                f"{_describe(token)}", hint)
            precision = field.precision if field.precision is not None else DEFAULT_PRECISION
            scale = field.scale if field.scale is not None else DEFAULT_SCALE
            try:
                return check_number_shape(token.value, precision, scale)  # type: ignore[arg-type]
            except ValueProblem as problem:
                raise _Mismatch(f"{token.text} cannot be compared with {ref.label} "
                                f"(Number({precision}, {scale})): {problem}") from None
        if kind == "checkbox":
            if token.kind == "constant":
                return token.value
            hint = "compare checkboxes with true or false"
            if token.kind == "string" and token.value[0].strip().lower() in ("true", "false"):  # type: ignore[index]
                hint = "write true or false without quotes"
            raise _Mismatch(f"{ref.label} is a Checkbox field and cannot be compared with {_describe(token)}", hint)
        if kind == "date":
            if token.kind in ("date", "datelit"):
                return token.value
            raise _Mismatch(f"{ref.label} is a Date field and cannot be compared with {_describe(token)}",
                            _date_hint(token))
        if kind == "datetime":
            if token.kind in ("datetime", "datelit"):
                return token.value
            hint = "write a date-time like 2024-01-31T00:00:00Z, or a date literal such as TODAY"
            if token.kind == "date":
                hint = f"write a date-time like {token.text}T00:00:00Z, or a date literal such as TODAY"
            raise _Mismatch(f"{ref.label} is a DateTime field and cannot be compared with {_describe(token)}", hint)
        # reference: Lookup, MasterDetail, Id
        if token.kind == "number" and "." not in token.text and 0 < token.value <= MAX_RECORD_ID:  # type: ignore[operator]
            return int(token.value)  # type: ignore[call-overload]
        hint = "compare lookups with a record id (a positive whole number) or null"
        if token.kind == "string" and token.value[0].strip().isdigit():  # type: ignore[index]
            hint = "write record ids without quotes"
        raise _Mismatch(f"{ref.label} is a {field.type.value} field and cannot be compared with {_describe(token)}",
                        hint)

    def multipicklist_parts(self, ref: FieldRef, token: _Token) -> tuple[str, ...]:
        """The values of ``'a;b'`` in the field's declared order."""
        if token.kind != "string":
            raise _Mismatch(f"{ref.label} is a multi-select picklist and cannot be compared with "
                            f"{_describe(token)}", "write the values in single quotes: 'a;b'")
        field = ref.field
        chosen = {_picklist_value(ref, part.strip()) for part in token.value[0].split(";") if part.strip()}  # type: ignore[index]
        order = {value: index for index, value in enumerate(field.values)}
        return tuple(sorted(chosen, key=lambda v: (order.get(v, len(order)), v)))


def _picklist_value(ref: FieldRef, text: str) -> str:
    """``text`` as a value of the picklist: exact, or its declared spelling
    when only the case differs; raises _Mismatch for a restricted picklist's
    unknown value."""
    field = ref.field
    if not field.restricted or not field.values or text in field.values:
        return text
    for value in field.values:
        if value.lower() == text.lower():
            return value
    hint = did_you_mean(text, field.values)
    if hint is None:
        shown = ", ".join(field.values[:12]) + (", ..." if len(field.values) > 12 else "")
        hint = f"values of {ref.label}: {shown}"
    raise _Mismatch(f"'{text}' is not a value of the picklist {ref.label}", hint)


def _date_hint(token: _Token) -> str:
    if token.kind == "string":
        try:
            day = date.fromisoformat(token.value[0].strip())  # type: ignore[index]
            return f"write dates without quotes: {day.isoformat()}"
        except ValueError:
            pass
    if token.kind == "datetime":
        return f"compare Date fields with a date like {token.text[:10]}"
    return "write a date like 2024-01-31, or a date literal such as TODAY or THIS_MONTH"


def _operator_problem(ref: FieldRef, kind: str, op: str) -> str:
    type_name = ref.field.type.value
    if op == LIKE:
        return f"LIKE needs a text field; {ref.label} is a {type_name} field"
    if op in (INCLUDES, EXCLUDES):
        return f"{op} applies to multi-select picklists; {ref.label} is a {type_name} field"
    if kind == "multipicklist":
        return f"{op} cannot be used on the multi-select picklist {ref.label}"
    if kind == "picklist" and op in ORDERING:
        return f"picklist values have no order, so {op} cannot compare {ref.label}"
    return f"{op} cannot compare {type_name} values ({ref.label})"


def _operator_hint(kind: str, op: str) -> str | None:
    if kind == "multipicklist":
        return "use INCLUDES ('a', 'b') or EXCLUDES (...), or = 'a;b' for an exact selection"
    if kind == "picklist" and op in ORDERING:
        return "list the values with IN ('a', 'b')"
    if kind == "picklist" and op in (INCLUDES, EXCLUDES):
        return "use IN ('a', 'b') for a single-select picklist"
    if kind == "checkbox":
        return "compare checkboxes with = true or = false"
    return None


# ---------------------------------------------------------------------------
# Entry point


def parse_condition(
    text: str, obj: ObjectDef, lookup_object: Callable[[str], ObjectDef | None]
) -> tuple[Condition | None, list[ConditionProblem]]:
    """Parse and check ``text`` as a condition on ``obj``.

    ``lookup_object`` finds an object by case-insensitive name (for
    relationship paths). Returns the condition and no problems, or None and
    at least one problem. Empty or blank text is the empty condition."""
    if text is None or not text.strip():
        return Condition(text or "", obj.name, None, frozenset(), frozenset()), []
    if len(text) > MAX_LENGTH:
        return None, [ConditionProblem(SYNTAX, f"the condition has {len(text):,} characters; at most "
                                       f"{MAX_LENGTH:,} are allowed", None,
                                       "split the selection over several filters")]
    try:
        parser = _Parser(text, _tokenize(text), obj, lookup_object)
        root = parser.parse()
    except _Failed as failed:
        return None, [failed.problem]
    if parser.problems:
        return None, parser.problems
    return Condition(text, obj.name, root, frozenset(parser.paths), frozenset(parser.references)), []
