"""The formula type system: what kind of value each expression produces.

Field types collapse into a handful of formula types: Number, Currency and
Percent are all NUMBER; every kind of text (and a lookup's record id) is TEXT.
Picklists stay apart (PICKLIST, MULTIPICKLIST) because, as in Salesforce, they
may only be used by a few functions; anywhere else the checker asks for
``TEXT(...)``. ``NULL`` has its own type that fits everywhere, and ERROR marks
an expression that already produced a problem so one mistake is reported once
instead of cascading through every enclosing operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Iterable, Mapping

from ..model import FieldType

# An evaluator: the compiled form of an expression, called with the record and
# the ``today`` given to CompiledFormula.evaluate.
Evaluator = Callable[[Mapping[str, object], object], object]


class FType(Enum):
    NUMBER = "Number"
    TEXT = "Text"
    CHECKBOX = "Checkbox"
    DATE = "Date"
    DATETIME = "DateTime"
    PICKLIST = "Picklist"
    MULTIPICKLIST = "MultiPicklist"
    NULL = "Null"
    ERROR = "invalid"

    @property
    def label(self) -> str:
        return self.value


# Types a formula result (and an IF branch, a CASE result...) may have.
VALUE_TYPES = frozenset({FType.NUMBER, FType.TEXT, FType.CHECKBOX, FType.DATE, FType.DATETIME})
PICKLISTS = frozenset({FType.PICKLIST, FType.MULTIPICKLIST})

_FROM_FIELD = {
    FieldType.NUMBER: FType.NUMBER,
    FieldType.CURRENCY: FType.NUMBER,
    FieldType.PERCENT: FType.NUMBER,
    FieldType.TEXT: FType.TEXT,
    FieldType.LONGTEXT: FType.TEXT,
    FieldType.EMAIL: FType.TEXT,
    FieldType.URL: FType.TEXT,
    FieldType.AUTONUMBER: FType.TEXT,
    FieldType.ID: FType.TEXT,
    FieldType.LOOKUP: FType.TEXT,
    FieldType.MASTERDETAIL: FType.TEXT,
    FieldType.CHECKBOX: FType.CHECKBOX,
    FieldType.DATE: FType.DATE,
    FieldType.DATETIME: FType.DATETIME,
    FieldType.PICKLIST: FType.PICKLIST,
    FieldType.MULTIPICKLIST: FType.MULTIPICKLIST,
}

_TO_FIELD = {
    FType.NUMBER: FieldType.NUMBER,
    FType.TEXT: FieldType.TEXT,
    FType.CHECKBOX: FieldType.CHECKBOX,
    FType.DATE: FieldType.DATE,
    FType.DATETIME: FieldType.DATETIME,
}


def of_field_type(kind: FieldType) -> FType | None:
    """The formula type of a stored field type (None for Formula itself)."""
    return _FROM_FIELD.get(kind)


def to_field_type(kind: FType) -> FieldType:
    """The FieldType reported as ``CompiledFormula.result_type``."""
    return _TO_FIELD[kind]


def unify(a: FType, b: FType) -> FType | None:
    """The common type of two alternatives (IF branches, CASE results), or
    None when they do not fit together. NULL fits anything; ERROR is silent."""
    if a is b:
        return a
    if FType.ERROR in (a, b):
        return FType.ERROR
    if a is FType.NULL:
        return b
    if b is FType.NULL:
        return a
    return None


def comparable(a: FType, b: FType) -> bool:
    """Whether ``a = b`` makes sense. A picklist compares with text only."""
    if FType.NULL in (a, b) or FType.ERROR in (a, b):
        return True
    if FType.MULTIPICKLIST in (a, b):
        return False
    if {a, b} == {FType.PICKLIST, FType.TEXT}:
        return True
    return a is b and a is not FType.PICKLIST


class TypeProblem(Exception):
    """A type error in one operand or argument (``index``; -1 for the
    operator itself), found by the operator and function tables; the
    compiler turns it into a FormulaProblem with the offset."""

    def __init__(self, index: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.message = message
        self.hint = hint


class _NotConstant:
    def __repr__(self) -> str:
        return "NOT_CONSTANT"


NOT_CONSTANT = _NotConstant()


@dataclass(frozen=True, slots=True)
class Node:
    """A checked sub-expression: its type, its evaluator, the text as written
    (for messages) and, for literals, the constant value."""

    type: FType
    fn: Evaluator
    label: str
    const: object = NOT_CONSTANT

    @property
    def is_constant(self) -> bool:
        return self.const is not NOT_CONSTANT


PICKLIST_USES = "ISPICKVAL(), TEXT(), ISBLANK(), BLANKVALUE(), CASE() or compared to text with = or <>"
MULTIPICKLIST_USES = "INCLUDES() and ISBLANK()"


def misuse(index: int, operand: Node) -> TypeProblem:
    """The problem for a picklist used where only plain values are allowed."""
    if operand.type is FType.MULTIPICKLIST:
        return TypeProblem(
            index,
            f"multi-select picklist {operand.label} can only be used in {MULTIPICKLIST_USES}",
            f"use INCLUDES({operand.label}, 'value')",
        )
    return TypeProblem(
        index,
        f"picklist field {operand.label} can only be used in {PICKLIST_USES}",
        "wrap it in TEXT()",
    )


def expect(index: int, operand: Node, allowed: Iterable[FType], what: str) -> None:
    """Refuse an operand whose type is not among ``allowed`` (NULL and ERROR
    always pass). ``what`` names the place, e.g. "the first argument of LEFT"."""
    allowed = frozenset(allowed)
    kind = operand.type
    if kind in allowed or kind in (FType.NULL, FType.ERROR):
        return
    if kind in PICKLISTS:
        raise misuse(index, operand)
    names = " or ".join(sorted(t.label for t in allowed))
    hint = None
    if FType.TEXT in allowed and kind in VALUE_TYPES:
        hint = f"convert it with TEXT({operand.label})"
    elif FType.NUMBER in allowed and kind is FType.TEXT:
        hint = f"convert it with VALUE({operand.label})"
    raise TypeProblem(index, f"{what} must be {names}, but {operand.label} is {kind.label}", hint)
