"""Invoice-run filter conditions: a small subset of the SOQL ``WHERE`` clause,
parsed and type-checked once, when the configuration is loaded.

A Filter record's ``Condition`` selects which records of the filter's target
object an invoice run bills. :func:`parse_condition` turns the text into an
immutable, checked :class:`Condition` tree, or reports
:class:`ConditionProblem` values pointing at a character offset of the text.
The package is pure (no database import) except :mod:`.sql`, which compiles
a checked tree into a SQLAlchemy expression whose values are always bound
parameters, and which nothing here imports.

Modules: :mod:`.tree` (the values and constants), :mod:`.lexer` (tokens),
:mod:`.parser` (grammar and names), :mod:`.typecheck` (operators and values
per field type), :mod:`.sql` (compiling to SQL).

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

from typing import Callable

from engine.config.model import ObjectDef

from .lexer import ParseFailure, tokenize
from .parser import Parser
from .tree import (
    DEFAULT_PRECISION,
    DEFAULT_SCALE,
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
    MAX_DAYS,
    MAX_DEPTH,
    MAX_HOPS,
    MAX_IN_ITEMS,
    MAX_LENGTH,
    MAX_NODES,
    MAX_RECORD_ID,
    N_DAY_LITERALS,
    NE,
    NOT_IN,
    ORDERING,
    RANGE_LITERALS,
    SYNTAX,
    TYPE,
    UNKNOWN,
    And,
    Comparison,
    Condition,
    ConditionProblem,
    DateLiteral,
    FieldRef,
    LikePattern,
    Node,
    Not,
    Or,
    Value,
)


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
        parser = Parser(text, tokenize(text), obj, lookup_object)
        root = parser.parse()
    except ParseFailure as failed:
        return None, [failed.problem]
    if parser.problems:
        return None, parser.problems
    return Condition(text, obj.name, root, frozenset(parser.paths), frozenset(parser.references)), []


__all__ = [
    "DEFAULT_PRECISION", "DEFAULT_SCALE", "EQ", "EXCLUDES", "GE", "GT", "IN", "INCLUDES", "LE", "LIKE", "LIKE_ESCAPE",
    "LT", "MAX_DAYS", "MAX_DEPTH", "MAX_HOPS", "MAX_IN_ITEMS", "MAX_LENGTH", "MAX_NODES", "MAX_RECORD_ID",
    "N_DAY_LITERALS", "NE", "NOT_IN", "ORDERING", "RANGE_LITERALS", "SYNTAX", "TYPE", "UNKNOWN",
    "And", "Comparison", "Condition", "ConditionProblem", "DateLiteral", "FieldRef", "LikePattern", "Node", "Not",
    "Or", "Value", "parse_condition",
]
