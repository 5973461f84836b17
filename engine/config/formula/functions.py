"""The function table: every function a formula may call, with its arity,
its typing rule and how to build its evaluator.

Names are matched case-insensitively (the table is keyed in upper case).
Unless noted, a function returns null when any argument is null. The
exceptions follow Salesforce: IF/CASE/AND/OR/NOT read a null condition as
false; ISBLANK/ISNULL/BLANKVALUE/NULLVALUE exist to look at nulls; LEN of null
is 0; CONTAINS/BEGINS/ISPICKVAL/INCLUDES read null as empty text and answer
true or false. IF, CASE, AND, OR, BLANKVALUE and NULLVALUE are lazy: an
argument that is not needed is never evaluated (``IF(Q = 0, 0, 1 / Q)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Mapping, Sequence

from . import runtime as rt
from .operators import all_true, any_true, logical_operator
from .types import PICKLISTS, VALUE_TYPES, Evaluator, FType, Node, TypeProblem, expect, misuse, unify

NUMBER = frozenset({FType.NUMBER})
TEXT = frozenset({FType.TEXT})
CHECKBOX = frozenset({FType.CHECKBOX})
DATE = frozenset({FType.DATE})
PICKLIST = frozenset({FType.PICKLIST})
MULTIPICKLIST = frozenset({FType.MULTIPICKLIST})
ANY = frozenset(VALUE_TYPES | PICKLISTS)


@dataclass(frozen=True, eq=False)
class Function:
    """One formula function."""

    name: str
    min_args: int
    max_args: int | None  # None: any number
    check: Callable[[Sequence[Node]], FType]  # raises TypeProblem
    build: Callable[[Sequence[Node]], Evaluator]
    pairs: bool = False  # CASE: an even number of arguments

    def arity_problem(self, count: int) -> str | None:
        """A message when ``count`` arguments do not fit, else None."""
        low, high = self.min_args, self.max_args
        if low <= count and (high is None or count <= high) and not (self.pairs and count % 2):
            return None
        if self.pairs:
            wanted = "a value, pairs of match and result, and a default (an even number of arguments, at least 4)"
        elif high is None:
            wanted = f"at least {low} argument{'s' if low != 1 else ''}"
        elif low == high:
            wanted = f"{low} argument{'s' if low != 1 else ''}" if low else "no arguments"
        else:
            wanted = f"{low} to {high} arguments"
        return f"{self.name} takes {wanted}, but {count} {'was' if count == 1 else 'were'} given"


# -- typing helpers ------------------------------------------------------------


def _signature(name: str, params: Sequence[frozenset[FType]], result: FType) -> Callable[[Sequence[Node]], FType]:
    """A typing rule for fixed parameter types (the last one repeats)."""
    def check(args: Sequence[Node]) -> FType:
        for index, arg in enumerate(args):
            allowed = params[min(index, len(params) - 1)]
            expect(index, arg, allowed, f"argument {index + 1} of {name}")
        return result
    return check


def _common(name: str, args: Sequence[Node], indexes: Sequence[int]) -> FType:
    """The one type the alternatives at ``indexes`` share (IF branches, CASE
    results, BLANKVALUE's value and substitute)."""
    result = FType.NULL
    first: Node | None = None
    for index in indexes:
        arg = args[index]
        if arg.type in PICKLISTS:
            raise misuse(index, arg)
        merged = unify(result, arg.type)
        if merged is None:
            assert first is not None
            raise TypeProblem(
                index,
                f"{name} mixes {first.type.label} ({first.label}) and {arg.type.label} ({arg.label}); "
                "all results must have the same type",
                "convert with TEXT() or VALUE() so the results match",
            )
        if arg.type is not FType.NULL and first is None:
            first = arg
        result = merged
    return result


# -- evaluator helpers ---------------------------------------------------------


def _strict(compute: Callable[..., object]) -> Callable[[Sequence[Node]], Evaluator]:
    """Evaluate every argument; null if any is null, else ``compute(*values)``."""
    def build(args: Sequence[Node]) -> Evaluator:
        fns = [a.fn for a in args]
        if len(fns) == 1:
            (only,) = fns

            def run1(record, today):
                value = only(record, today)
                return None if value is None else compute(value)
            return run1
        if len(fns) == 2:
            first, second = fns

            def run2(record, today):
                a = first(record, today)
                if a is None:
                    return None
                b = second(record, today)
                return None if b is None else compute(a, b)
            return run2

        def run(record, today):
            values = []
            for fn in fns:
                value = fn(record, today)
                if value is None:
                    return None
                values.append(value)
            return compute(*values)
        return run
    return build


def _total(compute: Callable[..., object]) -> Callable[[Sequence[Node]], Evaluator]:
    """Evaluate every argument and pass nulls on to ``compute``."""
    def build(args: Sequence[Node]) -> Evaluator:
        fns = [a.fn for a in args]
        if len(fns) == 1:
            (only,) = fns
            return lambda record, today: compute(only(record, today))
        if len(fns) == 2:
            first, second = fns
            return lambda record, today: compute(first(record, today), second(record, today))
        return lambda record, today: compute(*(fn(record, today) for fn in fns))
    return build


def _constant(compute: Callable[[object], object]) -> Callable[[Sequence[Node]], Evaluator]:
    """For TODAY() and NOW(): the value depends only on ``today``/the clock."""
    def build(args: Sequence[Node]) -> Evaluator:
        return lambda record, today: compute(today)
    return build


def _is_blank(value: object) -> bool:
    # Null, empty text and an empty multi-select are blank; " " is not.
    return value is None or (type(value) in (str, tuple) and not value)


# -- the lazy and polymorphic functions ----------------------------------------


def _check_if(args: Sequence[Node]) -> FType:
    expect(0, args[0], CHECKBOX, "the condition of IF")
    return _common("IF", args, (1, 2))


def _build_if(args: Sequence[Node]) -> Evaluator:
    condition, yes, no = (a.fn for a in args)

    def run(record, today):
        if condition(record, today) is True:
            return yes(record, today)
        return no(record, today)
    return run


def _check_case(args: Sequence[Node]) -> FType:
    subject = args[0]
    expect(0, subject, VALUE_TYPES | PICKLIST, "the first argument of CASE")
    wanted = FType.TEXT if subject.type is FType.PICKLIST else subject.type
    for index in range(1, len(args) - 1, 2):
        value = args[index]
        if value.type in PICKLISTS:
            raise misuse(index, value)
        if unify(wanted, value.type) is None:
            raise TypeProblem(index, f"CASE compares {subject.label} ({subject.type.label}) "
                              f"with {value.label} ({value.type.label})",
                              "the values to match must have the type of the first argument")
    return _common("CASE", args, [*range(2, len(args) - 1, 2), len(args) - 1])


def _build_case(args: Sequence[Node]) -> Evaluator:
    subject = args[0].fn
    pairs = [(args[i], args[i + 1].fn) for i in range(1, len(args) - 1, 2)]
    otherwise = args[-1].fn
    if all(match.is_constant for match, _ in pairs):
        # Literal match values (the usual case): one dict lookup instead of
        # evaluating each candidate; the first of duplicate values wins.
        table: dict[object, Evaluator] = {}
        for match, result in pairs:
            if match.const is not None:
                table.setdefault(match.const, result)

        def lookup(record, today):
            value = subject(record, today)
            chosen = table.get(value) if value is not None else None
            return (chosen or otherwise)(record, today)
        return lookup
    candidates = [(match.fn, result) for match, result in pairs]

    def scan(record, today):
        value = subject(record, today)
        if value is not None:
            for match, result in candidates:
                if match(record, today) == value:
                    return result(record, today)
        return otherwise(record, today)
    return scan


def _check_blankvalue(args: Sequence[Node]) -> FType:
    value = args[0]
    expect(0, value, VALUE_TYPES | PICKLIST, "the first argument of BLANKVALUE")
    if value.type is FType.PICKLIST:  # its value is text
        args = [Node(FType.TEXT, value.fn, value.label), *args[1:]]
    return _common("BLANKVALUE", args, (0, 1))


def _build_blankvalue(args: Sequence[Node]) -> Evaluator:
    value, substitute = (a.fn for a in args)

    def run(record, today):
        result = value(record, today)
        return substitute(record, today) if result is None or result == "" else result
    return run


def _check_nullvalue(args: Sequence[Node]) -> FType:
    return _common("NULLVALUE", args, (0, 1))


def _build_nullvalue(args: Sequence[Node]) -> Evaluator:
    value, substitute = (a.fn for a in args)

    def run(record, today):
        result = value(record, today)
        return substitute(record, today) if result is None else result
    return run


def _check_logical(name: str) -> Callable[[Sequence[Node]], FType]:
    def check(args: Sequence[Node]) -> FType:
        return logical_operator(name, list(args))[0]
    return check


def _build_not(args: Sequence[Node]) -> Evaluator:
    inner = args[0].fn
    return lambda record, today: inner(record, today) is not True


def _check_ispickval(args: Sequence[Node]) -> FType:
    field, value = args
    if field.type not in (FType.PICKLIST, FType.NULL, FType.ERROR):
        raise TypeProblem(0, f"ISPICKVAL needs a picklist field, but {field.label} is {field.type.label}",
                          "compare other values with =")
    expect(1, value, TEXT, "the value of ISPICKVAL")
    return FType.CHECKBOX


def _check_includes(args: Sequence[Node]) -> FType:
    field, value = args
    if field.type not in (FType.MULTIPICKLIST, FType.NULL, FType.ERROR):
        raise TypeProblem(0, f"INCLUDES needs a multi-select picklist field, but {field.label} is "
                          f"{field.type.label}", "use CONTAINS() for text")
    expect(1, value, TEXT, "the value of INCLUDES")
    return FType.CHECKBOX


def _includes(chosen: object, value: object) -> bool:
    return chosen is not None and value is not None and value in chosen  # type: ignore[operator]


_TEXT_OF = {
    FType.NUMBER: rt.number_text,
    FType.DATE: rt.date_text,
    FType.DATETIME: rt.datetime_text,
    FType.CHECKBOX: lambda flag: "true" if flag else "false",
    FType.TEXT: lambda text: text,
    FType.PICKLIST: lambda text: text,
    FType.NULL: lambda value: value,
}


def _build_text(args: Sequence[Node]) -> Evaluator:
    return _strict(_TEXT_OF[args[0].type])(args)


def _max_or_min(pick: Callable[..., object]) -> Callable[..., object]:
    return lambda *values: pick(values)


def _define(
    name: str,
    params: Sequence[frozenset[FType]] | None,
    result: FType | None,
    build: Callable[[Sequence[Node]], Evaluator],
    low: int,
    high: int | None,
    check: Callable[[Sequence[Node]], FType] | None = None,
    pairs: bool = False,
) -> Function:
    if check is None:
        assert params is not None and result is not None
        check = _signature(name, params, result)
    return Function(name, low, high, check, build, pairs)


FUNCTIONS: Mapping[str, Function] = {
    f.name: f
    for f in (
        # logic
        _define("IF", None, None, _build_if, 3, 3, _check_if),
        _define("AND", None, None, lambda a: all_true([x.fn for x in a]), 1, None, _check_logical("AND")),
        _define("OR", None, None, lambda a: any_true([x.fn for x in a]), 1, None, _check_logical("OR")),
        _define("NOT", [CHECKBOX], FType.CHECKBOX, _build_not, 1, 1),
        _define("CASE", None, None, _build_case, 4, None, _check_case, pairs=True),
        _define("ISBLANK", [ANY], FType.CHECKBOX, _total(_is_blank), 1, 1),
        _define("ISNULL", [VALUE_TYPES], FType.CHECKBOX, _total(lambda v: v is None), 1, 1),
        _define("BLANKVALUE", None, None, _build_blankvalue, 2, 2, _check_blankvalue),
        _define("NULLVALUE", None, None, _build_nullvalue, 2, 2, _check_nullvalue),
        # conversion and picklists
        _define("TEXT", [VALUE_TYPES | PICKLIST], FType.TEXT, _build_text, 1, 1),
        _define("VALUE", [TEXT], FType.NUMBER, _strict(rt.value_of), 1, 1),
        _define("ISPICKVAL", None, None, _total(lambda v, w: (v or "") == (w or "")), 2, 2, _check_ispickval),
        _define("INCLUDES", None, None, _total(_includes), 2, 2, _check_includes),
        # text
        _define("LEFT", [TEXT, NUMBER], FType.TEXT, _strict(rt.left), 2, 2),
        _define("RIGHT", [TEXT, NUMBER], FType.TEXT, _strict(rt.right), 2, 2),
        _define("MID", [TEXT, NUMBER, NUMBER], FType.TEXT, _strict(rt.mid), 3, 3),
        _define("LEN", [TEXT], FType.NUMBER, _total(lambda t: Decimal(len(t or ""))), 1, 1),
        _define("UPPER", [TEXT], FType.TEXT, _strict(lambda t: rt.check_text(t.upper())), 1, 1),
        _define("LOWER", [TEXT], FType.TEXT, _strict(lambda t: rt.check_text(t.lower())), 1, 1),
        _define("TRIM", [TEXT], FType.TEXT, _strict(str.strip), 1, 1),
        _define("SUBSTITUTE", [TEXT, TEXT, TEXT], FType.TEXT,
                _total(lambda t, o, n: None if t is None else rt.substitute(t, o, n)), 3, 3),
        _define("CONTAINS", [TEXT, TEXT], FType.CHECKBOX, _total(lambda t, s: (s or "") in (t or "")), 2, 2),
        _define("BEGINS", [TEXT, TEXT], FType.CHECKBOX,
                _total(lambda t, s: (t or "").startswith(s or "")), 2, 2),
        # dates
        _define("TODAY", [], FType.DATE, _constant(rt.today_of), 0, 0),
        _define("NOW", [], FType.DATETIME, _constant(lambda _: rt.now()), 0, 0),
        _define("DATE", [NUMBER], FType.DATE, _strict(rt.make_date), 3, 3),
        _define("YEAR", [DATE], FType.NUMBER, _strict(lambda d: Decimal(d.year)), 1, 1),
        _define("MONTH", [DATE], FType.NUMBER, _strict(lambda d: Decimal(d.month)), 1, 1),
        _define("DAY", [DATE], FType.NUMBER, _strict(lambda d: Decimal(d.day)), 1, 1),
        _define("ADDMONTHS", [DATE, NUMBER], FType.DATE, _strict(rt.add_months), 2, 2),
        # numbers
        _define("ROUND", [NUMBER], FType.NUMBER, _strict(rt.round_half_up), 2, 2),
        _define("ABS", [NUMBER], FType.NUMBER, _strict(rt.EXACT.abs), 1, 1),
        _define("FLOOR", [NUMBER], FType.NUMBER, _strict(rt.floor_toward_zero), 1, 1),
        _define("CEILING", [NUMBER], FType.NUMBER, _strict(rt.ceiling_away_from_zero), 1, 1),
        _define("MAX", [NUMBER], FType.NUMBER, _strict(_max_or_min(max)), 1, None),
        _define("MIN", [NUMBER], FType.NUMBER, _strict(_max_or_min(min)), 1, None),
        _define("MOD", [NUMBER], FType.NUMBER, _strict(rt.modulo), 2, 2),
    )
}
