"""The parser of filter conditions: recursive descent over the lexer's tokens.

It builds the condition tree (:mod:`.tree`), resolving every field name
against the target object and its relationship paths (E057 for unknown
names, with a suggestion), and has each comparison typed by
:mod:`.typecheck` (E058). Syntax errors and limits stop it; name and type
problems are collected, so one pass reports all of them.
"""

from __future__ import annotations

from typing import Callable

from engine.config.diagnostics import did_you_mean
from engine.config.model import ObjectDef

from .lexer import ParseFailure, Token, describe, fail
from .tree import (
    EQ,
    LIKE,
    MAX_DEPTH,
    MAX_HOPS,
    MAX_IN_ITEMS,
    MAX_NODES,
    NE,
    NOT_IN,
    TYPE,
    UNKNOWN,
    And,
    Comparison,
    ConditionProblem,
    FieldRef,
    Node,
    Not,
    Or,
)
from .typecheck import check_comparison, field_kind


class Parser:
    """Recursive descent over the token list. Syntax errors and limits stop
    parsing (raised as :class:`~.lexer.ParseFailure`); unknown names and type errors are collected,
    so one pass reports all of them."""

    def __init__(self, text: str, tokens: list[Token], obj: ObjectDef,
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

    # -- token access -----------------------------------------------------

    @property
    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
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
            raise fail(f"the condition has more than {MAX_NODES} elements (comparisons, AND, OR, NOT)", offset,
                        "split the selection over several filters, or use IN lists")

    def problem(self, code: str, message: str, offset: int | None, hint: str | None = None) -> None:
        self.problems.append(ConditionProblem(code, message, offset, hint))

    # -- grammar ----------------------------------------------------------

    def parse(self) -> Node | None:
        root = self.or_(0)
        token = self.peek
        if token.kind != "end":
            if token.kind == "close":
                raise fail("')' has no matching '('", token.start)
            hint = None
            if token.kind == "name" or token.kind == "keyword" and token.value in ("NOT", "LIKE", "IN"):
                hint = "is AND or OR missing before it?"
            raise fail(f"expected AND, OR or the end of the condition, found {describe(token)}", token.start, hint)
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
                raise fail(f"the condition is nested more than {MAX_DEPTH} levels deep", token.start)
            operand = self.not_(depth + 1)
            return Not(operand, token.start)  # type: ignore[arg-type]
        return self.primary(depth)

    def primary(self, depth: int) -> Node | None:
        token = self.peek
        if token.kind == "open":
            self.advance()
            if depth + 1 > MAX_DEPTH:
                raise fail(f"the condition is nested more than {MAX_DEPTH} levels deep", token.start)
            inner = self.or_(depth + 1)
            closing = self.peek
            if closing.kind != "close":
                if closing.kind == "end":
                    raise fail("'(' is never closed", token.start, "add the missing ')'")
                raise fail(f"expected AND, OR or ')', found {describe(closing)}", closing.start)
            self.advance()
            return inner
        if token.kind == "name":
            return self.comparison()
        raise self.expected_field(token)

    def expected_field(self, token: Token) -> ParseFailure:
        if token.kind == "end":
            if self.index == 0:  # pragma: no cover - an empty condition never gets here
                return fail("the condition is empty", 0)
            return fail("the condition ends unexpectedly", token.start, "a comparison is missing at the end")
        if token.kind in ("string", "number", "date", "datetime", "constant", "datelit"):
            return fail(f"expected a field name, found {describe(token)}", token.start,
                         "write the field first: Field = value (comparing two values is not supported)")
        if token.kind == "keyword":
            return fail(f"expected a field name, NOT or '(', found {token.value}", token.start)
        return fail(f"expected a field name, NOT or '(', found {describe(token)}", token.start)

    def comparison(self) -> Comparison | None:
        name = self.advance()
        self.count(name.start)
        if name.text.upper() in ("WHERE", "SELECT") and self.peek.kind in ("name", "keyword"):
            raise fail(f"{name.text.upper()} is not part of a condition", name.start,
                        "write only what follows WHERE, e.g. Status = 'Activated'")
        ref = self.resolve(name)
        op_token = self.advance()
        if op_token.kind == "op":
            op = NE if op_token.text == "<>" else op_token.text
            if op == EQ and self.peek.kind == "op" and self.peek.text == "=" and self.peek.start == op_token.end:
                raise fail("'==' is not an operator", op_token.start, "use a single = for 'equals'")
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
                raise fail("after a field name, NOT can only start NOT IN", op_token.start,
                            "to negate a comparison write NOT (Field LIKE 'x%')")
            items = self.value_list(following)
            return self.check(ref, NOT_IN, op_token, items, name.start)
        raise fail(f"expected an operator after {name.text}, found {describe(op_token)}", op_token.start,
                    "operators: = != < <= > >= LIKE IN NOT IN INCLUDES EXCLUDES")

    def value_token(self, op_token: Token) -> Token:
        token = self.advance()
        if token.kind in ("string", "number", "date", "datetime", "constant", "datelit"):
            return token
        what = op_token.text if op_token.kind == "op" else str(op_token.value)
        if token.kind == "name":
            if self._names_field(token):
                raise fail(f"{token.text} is a field: comparing two fields is not supported", token.start,
                            "compare the field with a value")
            raise fail(f"expected a value after {what}, found {token.text}", token.start,
                        f"text values are written in single quotes: '{token.text}'")
        if token.kind == "open":
            raise fail(f"expected a value after {what}, found '('", token.start,
                        "a list of values needs IN: Field IN ('a', 'b')")
        raise fail(f"expected a value after {what}, found {describe(token)}", token.start)

    def _names_field(self, token: Token) -> bool:
        segments = [s for s, _ in token.value]  # type: ignore[union-attr]
        obj: ObjectDef | None = self.obj
        for segment in segments[:-1]:
            lookup = obj.relationship(segment) if obj else None
            obj = self.lookup(lookup.reference_to) if lookup and lookup.reference_to else None
        return obj is not None and obj.field(segments[-1]) is not None

    def value_list(self, op_token: Token) -> list[Token]:
        opening = self.advance()
        if opening.kind != "open":
            raise fail(f"{op_token.value} needs a list in parentheses, found {describe(opening)}", opening.start,
                        f"write it like {op_token.value} ('a', 'b')")
        items: list[Token] = []
        while True:
            if self.peek.kind == "close" and not items:
                raise fail("the list is empty", self.peek.start, "give at least one value")
            token = self.value_token(op_token)
            items.append(token)
            if len(items) > MAX_IN_ITEMS:
                raise fail(f"the list has more than {MAX_IN_ITEMS:,} values", token.start,
                            "split the selection over several filters")
            separator = self.advance()
            if separator.kind == "close":
                return items
            if separator.kind != "comma":
                if separator.kind == "end":
                    raise fail("the list is never closed", opening.start, "add the missing ')'")
                raise fail(f"expected ',' or ')' in the list, found {describe(separator)}", separator.start)

    # -- names ------------------------------------------------------------

    def resolve(self, token: Token) -> FieldRef | None:
        segments: tuple[tuple[str, int], ...] = token.value  # type: ignore[assignment]
        if len(segments) - 1 > MAX_HOPS:
            raise fail(f"{token.text} follows {len(segments) - 1} relationships; at most {MAX_HOPS} are allowed",
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
        if field_kind(field) == "formula":
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

    def check(self, ref: FieldRef | None, op: str, op_token: Token, items: list[Token],
              offset: int) -> Comparison | None:
        """The typed comparison (:mod:`.typecheck`), or None with its problem
        recorded (also None for a field that did not resolve)."""
        if ref is None:
            return None
        checked = check_comparison(ref, op, op_token, items, offset)
        if isinstance(checked, ConditionProblem):
            self.problems.append(checked)
            return None
        return checked
