"""Typing of filter conditions: which operators and values fit a field.

Every comparison the parser reads is checked here against the field it names:
the operator must suit the field's kind (:data:`OPERATORS`), and each value
is converted to the field's type (text, picklist value in its declared
spelling, Decimal within the field's precision and scale, date, date-time,
record id). A value or operator that does not fit is a problem with code E058
at the offending token, usually with a hint how to write it.
"""

from __future__ import annotations

from datetime import date

from engine.config.diagnostics import did_you_mean
from engine.config.model import FieldDef, FieldType
from engine.config.values import ValueProblem, check_number_shape, parse_decimal

from .lexer import Token, describe
from .tree import (
    DEFAULT_PRECISION,
    DEFAULT_SCALE,
    EQ,
    EXCLUDES,
    IN,
    INCLUDES,
    LIKE,
    MAX_RECORD_ID,
    NE,
    NOT_IN,
    ORDERING,
    TYPE,
    Comparison,
    ConditionProblem,
    FieldRef,
    LikePattern,
    Value,
)


def field_kind(field: FieldDef) -> str:
    """The kind of values a field is compared with (``text``, ``picklist``,
    ``number``, ... ``reference``); ``formula`` for formula fields."""
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


OPERATORS: dict[str, frozenset[str]] = {
    "text": frozenset({EQ, NE, *ORDERING, LIKE, IN, NOT_IN}),
    "picklist": frozenset({EQ, NE, LIKE, IN, NOT_IN}),
    "multipicklist": frozenset({EQ, NE, INCLUDES, EXCLUDES}),
    "number": frozenset({EQ, NE, *ORDERING, IN, NOT_IN}),
    "checkbox": frozenset({EQ, NE}),
    "date": frozenset({EQ, NE, *ORDERING, IN, NOT_IN}),
    "datetime": frozenset({EQ, NE, *ORDERING, IN, NOT_IN}),
    "reference": frozenset({EQ, NE, IN, NOT_IN}),
}


class _Mismatch(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def check_comparison(ref: FieldRef, op: str, op_token: Token, items: list[Token],
                     offset: int) -> Comparison | ConditionProblem:
    """The comparison of ``ref`` by ``op`` with the value tokens ``items``,
    typed; or the problem (E058) at the operator or the value that does not
    fit. ``offset`` is the comparison's own (its field's) offset."""
    kind = field_kind(ref.field)
    if op not in OPERATORS[kind]:
        return ConditionProblem(TYPE, _operator_problem(ref, kind, op), op_token.start, _operator_hint(kind, op))
    current = items[0]  # the value being checked, for the problem's offset
    try:
        if op == LIKE:
            token = items[0]
            if token.kind != "string":
                raise _Mismatch(f"LIKE needs a text pattern in single quotes, not {describe(token)}")
            value: Value = LikePattern(token.value[1], token.value[0])  # type: ignore[index]
        elif op in (INCLUDES, EXCLUDES):
            groups = []
            for token in items:
                current = token
                parts = _multipicklist_parts(ref, token)
                if not parts:
                    raise _Mismatch(f"{op} needs picklist values, not {describe(token)}")
                groups.append(parts)
            value = tuple(groups)
        elif op in (IN, NOT_IN):
            values = []
            for token in items:
                current = token
                if token.kind == "datelit":
                    raise _Mismatch(f"date range literals like {token.text} cannot be used in lists",
                                    f"compare with = {token.text} and combine with OR")
                values.append(_convert(ref, kind, token))
            value = tuple(values)
        else:
            token = items[0]
            current = token
            value = _convert(ref, kind, token)
            if value is None and op not in (EQ, NE):
                raise _Mismatch(f"null can only be compared with = or !=, not {op}")
    except _Mismatch as mismatch:
        return ConditionProblem(TYPE, mismatch.message, current.start, mismatch.hint)
    return Comparison(ref, op, value, offset)


def _convert(ref: FieldRef, kind: str, token: Token) -> object:
    """The typed value of ``token`` compared with ``ref``; raises _Mismatch."""
    if token.kind == "constant" and token.value is None:
        return None
    field = ref.field
    if kind in ("text", "picklist", "multipicklist"):
        if token.kind != "string":
            raise _Mismatch(f"{ref.label} is a {field.type.value} field and cannot be compared with "
                            f"{describe(token)}", f"text values are written in single quotes: '{token.text}'")
        text = token.value[0]  # type: ignore[index]
        if text == "":
            return None  # empty text is never stored: '' means null
        if kind == "picklist":
            return _picklist_value(ref, text)
        if kind == "multipicklist":
            return ";".join(_multipicklist_parts(ref, token))
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
                            f"{describe(token)}", hint)
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
        raise _Mismatch(f"{ref.label} is a Checkbox field and cannot be compared with {describe(token)}", hint)
    if kind == "date":
        if token.kind in ("date", "datelit"):
            return token.value
        raise _Mismatch(f"{ref.label} is a Date field and cannot be compared with {describe(token)}",
                        _date_hint(token))
    if kind == "datetime":
        if token.kind in ("datetime", "datelit"):
            return token.value
        hint = "write a date-time like 2024-01-31T00:00:00Z, or a date literal such as TODAY"
        if token.kind == "date":
            hint = f"write a date-time like {token.text}T00:00:00Z, or a date literal such as TODAY"
        raise _Mismatch(f"{ref.label} is a DateTime field and cannot be compared with {describe(token)}", hint)
    # reference: Lookup, MasterDetail, Id
    if token.kind == "number" and "." not in token.text and 0 < token.value <= MAX_RECORD_ID:  # type: ignore[operator]
        return int(token.value)  # type: ignore[call-overload]
    hint = "compare lookups with a record id (a positive whole number) or null"
    if token.kind == "string" and token.value[0].strip().isdigit():  # type: ignore[index]
        hint = "write record ids without quotes"
    raise _Mismatch(f"{ref.label} is a {field.type.value} field and cannot be compared with {describe(token)}",
                    hint)

def _multipicklist_parts(ref: FieldRef, token: Token) -> tuple[str, ...]:
    """The values of ``'a;b'`` in the field's declared order."""
    if token.kind != "string":
        raise _Mismatch(f"{ref.label} is a multi-select picklist and cannot be compared with "
                        f"{describe(token)}", "write the values in single quotes: 'a;b'")
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


def _date_hint(token: Token) -> str:
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
