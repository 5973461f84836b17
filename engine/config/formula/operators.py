"""Typing and evaluators for the formula operators.

Each ``*_operator`` function checks the operand types (raising TypeProblem
with the operand's index) and returns the result type with its evaluator.
Null rules: arithmetic and comparisons with a null operand give null; ``&``
(and ``+`` on text) reads null as empty text; ``&&``/``||`` read null as
false. Evaluators take ``(record, today)``; operands are evaluated left to
right and the right one only when the left one is not null.
"""

from __future__ import annotations

import operator
from typing import Callable

from . import runtime as rt
from .types import Evaluator, FType, Node, TypeProblem, comparable, misuse

NUMERIC = (FType.NUMBER, FType.NULL)
TEXTUAL = (FType.TEXT, FType.NULL)


def _never(record: object, today: object) -> object:  # pragma: no cover - placeholder
    raise RuntimeError("an invalid formula was evaluated")


def _strict(combine: Callable[[object, object], object], left: Evaluator, right: Evaluator) -> Evaluator:
    """Null in, null out."""
    def run(record, today):
        a = left(record, today)
        if a is None:
            return None
        b = right(record, today)
        if b is None:
            return None
        return combine(a, b)
    return run


def _add(a, b):
    return rt.check_number(rt.EXACT.add(a, b))


def _subtract(a, b):
    return rt.check_number(rt.EXACT.subtract(a, b))


def _multiply(a, b):
    return rt.check_number(rt.EXACT.multiply(a, b))


def _concat(left: Evaluator, right: Evaluator) -> Evaluator:
    def run(record, today):
        return rt.concat(left(record, today), right(record, today))
    return run


def _flip(function):
    return lambda a, b: function(b, a)


def _refuse_picklists(left: Node, right: Node) -> None:
    for index, node in enumerate((left, right)):
        if node.type in (FType.PICKLIST, FType.MULTIPICKLIST):
            raise misuse(index, node)


def _mismatch(symbol: str, left: Node, right: Node, hint: str | None = None) -> TypeProblem:
    return TypeProblem(
        -1,  # points at the operator
        f"'{symbol}' cannot combine {left.label} ({left.type.label}) and {right.label} ({right.type.label})",
        hint,
    )


def arithmetic_operator(symbol: str, left: Node, right: Node) -> tuple[FType, Evaluator]:
    """``+ - * / ^`` including date arithmetic and ``+`` on text."""
    _refuse_picklists(left, right)
    ltype, rtype = left.type, right.type
    if FType.ERROR in (ltype, rtype):
        return FType.ERROR, _never
    lf, rf = left.fn, right.fn
    if ltype in NUMERIC and rtype in NUMERIC:
        combine = {"+": _add, "-": _subtract, "*": _multiply, "/": rt.divide, "^": rt.power}[symbol]
        return FType.NUMBER, _strict(combine, lf, rf)
    if symbol == "+":
        if ltype in (FType.DATE, FType.DATETIME) and rtype in NUMERIC:
            shift = rt.add_days if ltype is FType.DATE else rt.add_datetime_days
            return ltype, _strict(shift, lf, rf)
        if rtype in (FType.DATE, FType.DATETIME) and ltype in NUMERIC:
            shift = rt.add_days if rtype is FType.DATE else rt.add_datetime_days
            return rtype, _strict(_flip(shift), lf, rf)
        if ltype in TEXTUAL and rtype in TEXTUAL:
            return FType.TEXT, _concat(lf, rf)
        hint = "use & to join text and TEXT() to turn a value into text" if FType.TEXT in (ltype, rtype) else None
        raise _mismatch(symbol, left, right, hint)
    if symbol == "-":
        for kind, between, shift in (
            (FType.DATE, rt.days_between, rt.add_days),
            (FType.DATETIME, rt.datetime_days_between, rt.add_datetime_days),
        ):
            if rtype is kind and ltype in (kind, FType.NULL):
                return FType.NUMBER, _strict(between, lf, rf)  # days between
            if ltype is kind and rtype in NUMERIC:
                return kind, _strict(lambda d, n, shift=shift: shift(d, rt.EXACT.minus(n)), lf, rf)
    raise _mismatch(symbol, left, right)


def concat_operator(left: Node, right: Node) -> tuple[FType, Evaluator]:
    """``&``: text only; null reads as empty text."""
    _refuse_picklists(left, right)
    for index, node in enumerate((left, right)):
        if node.type not in TEXTUAL and node.type is not FType.ERROR:
            raise TypeProblem(index, f"'&' joins text, but {node.label} is {node.type.label}",
                              f"convert it with TEXT({node.label})")
    if FType.ERROR in (left.type, right.type):
        return FType.ERROR, _never
    return FType.TEXT, _concat(left.fn, right.fn)


def negate_operator(symbol: str, operand: Node) -> tuple[FType, Evaluator]:
    if operand.type in (FType.PICKLIST, FType.MULTIPICKLIST):
        raise misuse(0, operand)
    if operand.type is FType.ERROR:
        return FType.ERROR, _never
    if operand.type not in NUMERIC:
        raise TypeProblem(0, f"unary '{symbol}' needs a number, but {operand.label} is {operand.type.label}")
    inner = operand.fn
    sign = rt.EXACT.minus if symbol == "-" else rt.EXACT.plus

    def run(record, today):
        value = inner(record, today)
        return None if value is None else sign(value)
    return FType.NUMBER, run


_COMPARE = {
    "=": operator.eq, "<>": operator.ne,
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_ORDERED = frozenset({FType.NUMBER, FType.TEXT, FType.DATE, FType.DATETIME})


def compare_operator(symbol: str, left: Node, right: Node) -> tuple[FType, Evaluator]:
    """``= <> < <= > >=``: equal types (a picklist against text for = and
    <>); a null operand gives null, which conditions treat as false."""
    ltype, rtype = left.type, right.type
    if symbol in ("=", "<>"):
        if not comparable(ltype, rtype):
            for picklist in (FType.MULTIPICKLIST, FType.PICKLIST):
                if picklist in (ltype, rtype):
                    index = 0 if ltype is picklist else 1
                    raise misuse(index, (left, right)[index])
            raise _mismatch(symbol, left, right, "convert one side with TEXT() or VALUE()")
    else:
        _refuse_picklists(left, right)
        for index, node in enumerate((left, right)):
            if node.type not in _ORDERED and node.type not in (FType.NULL, FType.ERROR):
                raise TypeProblem(index, f"'{symbol}' cannot order {node.type.label} values ({node.label})")
        if ltype is not rtype and FType.NULL not in (ltype, rtype) and FType.ERROR not in (ltype, rtype):
            raise _mismatch(symbol, left, right)
    if FType.ERROR in (ltype, rtype):
        return FType.ERROR, _never
    return FType.CHECKBOX, _strict(_COMPARE[symbol], left.fn, right.fn)


def logical_operator(symbol: str, operands: list[Node]) -> tuple[FType, Evaluator]:
    """``&&`` / ``||`` (and AND() / OR()): checkboxes, evaluated left to right
    and only as far as needed; null counts as false."""
    for index, node in enumerate(operands):
        if node.type in (FType.PICKLIST, FType.MULTIPICKLIST):
            raise misuse(index, node)
        if node.type not in (FType.CHECKBOX, FType.NULL, FType.ERROR):
            raise TypeProblem(index, f"'{symbol}' needs conditions, but {node.label} is {node.type.label}")
    if any(node.type is FType.ERROR for node in operands):
        return FType.ERROR, _never
    return FType.CHECKBOX, (all_true if symbol in ("&&", "AND") else any_true)([n.fn for n in operands])


def all_true(parts: list[Evaluator]) -> Evaluator:
    if len(parts) == 2:
        first, second = parts

        def both(record, today):
            return first(record, today) is True and second(record, today) is True
        return both

    def every(record, today):
        for part in parts:
            if part(record, today) is not True:
                return False
        return True
    return every


def any_true(parts: list[Evaluator]) -> Evaluator:
    if len(parts) == 2:
        first, second = parts

        def either(record, today):
            return first(record, today) is True or second(record, today) is True
        return either

    def some(record, today):
        for part in parts:
            if part(record, today) is True:
                return True
        return False
    return some
