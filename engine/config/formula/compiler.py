"""The formula compiler: resolves names against the metadata model, checks
types and builds the evaluator, once per formula.

Why closures and not simpleeval at run time: simpleeval evaluates by
dispatching every node through its ``nodes`` table on each call and checking
every intermediate result; its functions receive evaluated arguments, so a
lazy IF (``IF(Q = 0, 0, 1 / Q)``) would need per-call special cases on top.
That suits one-off expressions, but a billing run evaluates the same few
formulas on every record: plain simpleeval manages about 80k evaluations per
second of the benchmark formula here -- without null rules, laziness or
limits -- while the closures below do about 400k with all of them. So the
restricted simpleeval
subclass (:class:`.syntax.RestrictedEval`) stays the parser and validator --
the one place deciding which syntax a formula may contain -- and the
:class:`_Builder` below walks the validated tree through that same ``nodes``
table once, returning for each node its type and a Python closure. Evaluating
a formula is then a direct call of nested closures: no ``eval``/``compile``
of source text, no attribute access, only dict lookups on the plain record
dicts. ``bench/formula.py`` measures the result.

Formula fields used by a formula (on the same object or across a
relationship) are compiled recursively, memoized per (object, field), and
evaluated inline on the (related) record. A field met again while it is
still being compiled closes a cycle, reported as E053 with the chain.
"""

from __future__ import annotations

import ast
from typing import Callable

from ..diagnostics import did_you_mean
from ..model import FieldDef, FieldType, ObjectDef
from . import runtime as rt
from .errors import CYCLE, LIMIT, SYNTAX, TYPE, UNKNOWN, FormulaProblem, ProblemFound
from .functions import FUNCTIONS
from .operators import arithmetic_operator, compare_operator, concat_operator, logical_operator, negate_operator
from .runtime import CompiledFormula
from .syntax import ParsedFormula, RestrictedEval
from .types import NOT_CONSTANT, PICKLISTS, FType, Node, TypeProblem, misuse, of_field_type, to_field_type

# Limits over a formula *including* the formula fields it uses inline.
MAX_TOTAL_NODES = 10_000  # evaluation work per record
MAX_TOTAL_DEPTH = 200  # keeps evaluation far from Python's recursion limit
MAX_FORMULA_CHAIN = 10  # formula fields using formula fields using...

Result = tuple[CompiledFormula | None, list[FormulaProblem]]


def _never(record: object, today: object) -> object:  # pragma: no cover - never called
    raise RuntimeError("an invalid formula was evaluated")


def _expected_type(kind: FieldType) -> FType | None:
    """What a formula must produce for a declared type (None: cannot)."""
    if kind.is_numeric:
        return FType.NUMBER
    if kind in (FieldType.CHECKBOX, FieldType.DATE, FieldType.DATETIME):
        return of_field_type(kind)
    if kind.is_textual or kind is FieldType.ID or kind.is_reference:
        return FType.TEXT
    return None


class FormulaCompiler:
    """Compiles formula fields and free expressions of one org's objects.

    ``lookup_object`` finds an object by (case-insensitive) name, for
    relationship paths. Results of :meth:`compile` are memoized per (object,
    field), so one compiler should serve one loaded model.
    """

    def __init__(self, lookup_object: Callable[[str], ObjectDef | None]) -> None:
        self._lookup = lookup_object
        self._memo: dict[tuple[str, str], tuple[CompiledFormula | None, tuple[FormulaProblem, ...]]] = {}
        self._active: list[tuple[tuple[str, str], str]] = []  # fields being compiled, outermost first

    def compile(self, obj: ObjectDef, field: FieldDef) -> Result:
        """Compile ``field.formula.expression`` in the context of ``obj`` and
        check its type against ``field.formula.returns``."""
        compiled, problems = self._compile_field(obj, field)
        return compiled, list(problems)

    def compile_expression(self, obj: ObjectDef, expression: str, expected: FieldType | None = None) -> Result:
        """Compile a free expression (e.g. a controlling-field formula) in
        the context of ``obj``; check its type against ``expected`` if given."""
        return self._compile(obj, expression, expected, blanks_as_zero=False, field=None)

    # -- internals -----------------------------------------------------------

    def lookup(self, name: str) -> ObjectDef | None:
        return self._lookup(name)

    def _compile_field(
        self, obj: ObjectDef, field: FieldDef
    ) -> tuple[CompiledFormula | None, tuple[FormulaProblem, ...]]:
        if field.formula is None:
            raise ValueError(f"{obj.name}.{field.name} is not a formula field")
        key = (obj.key, field.key)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        name = f"{obj.name}.{field.name}"
        for index, (active, _) in enumerate(self._active):
            if active == key:
                chain = " -> ".join([n for _, n in self._active[index:]] + [name])
                return None, (FormulaProblem(CYCLE, f"formula cycle: {chain}", None),)
        if len(self._active) >= MAX_FORMULA_CHAIN:
            chain = " -> ".join([n for _, n in self._active] + [name])
            return None, (FormulaProblem(LIMIT, f"formula fields use each other more than "
                                         f"{MAX_FORMULA_CHAIN} levels deep: {chain}", None),)
        self._active.append((key, name))
        try:
            formula = field.formula
            compiled, problems = self._compile(obj, formula.expression, formula.returns,
                                               blanks_as_zero=formula.blanks_as_zero, field=field)
        finally:
            self._active.pop()
        result = (compiled, tuple(problems))
        self._memo[key] = result
        return result

    def _compile(
        self, obj: ObjectDef, expression: str, expected: FieldType | None, *, blanks_as_zero: bool,
        field: FieldDef | None,
    ) -> Result:
        builder = _Builder(self, obj, blanks_as_zero)
        try:
            parsed = builder.parse(expression)
            root = builder.eval(expression, parsed)
        except ProblemFound as found:
            return None, [found.problem]
        except RecursionError:
            return None, [FormulaProblem(LIMIT, "the formula (with the formula fields it uses) "
                                         "nests too deeply", None)]
        if builder.problems:
            return None, builder.problems
        kind = root.type
        if kind in PICKLISTS:
            found = misuse(0, root)
            return None, [FormulaProblem(TYPE, found.message, parsed.offset(parsed.tree), found.hint)]
        if expected is not None:
            wanted = _expected_type(expected)
            if wanted is None:
                return None, [FormulaProblem(TYPE, f"a formula cannot produce {expected.value} values", None)]
            if kind is FType.NULL:
                kind = wanted
            elif kind is not wanted:
                where = "the field is declared" if field is not None else "the expected type is"
                return None, [FormulaProblem(TYPE, f"formula returns {kind.label} but {where} {expected.value}",
                                             None, _conversion_hint(kind, wanted))]
        elif kind is FType.NULL:
            kind = FType.TEXT
        cost = parsed.node_count + builder.inlined_cost
        depth = parsed.depth + builder.inlined_depth
        if cost > MAX_TOTAL_NODES:
            return None, [FormulaProblem(LIMIT, f"the formula and the formula fields it uses have {cost} elements; "
                                         f"at most {MAX_TOTAL_NODES} are allowed", None)]
        if depth > MAX_TOTAL_DEPTH:
            return None, [FormulaProblem(LIMIT, f"the formula and the formula fields it uses nest {depth} levels "
                                         f"deep; at most {MAX_TOTAL_DEPTH} are allowed", None)]
        compiled = CompiledFormula(expression, to_field_type(kind), frozenset(builder.references), root.fn,
                                   cost, depth)
        return compiled, []


def _conversion_hint(actual: FType, wanted: FType) -> str | None:
    if wanted is FType.TEXT and actual in (FType.NUMBER, FType.DATE, FType.DATETIME, FType.CHECKBOX):
        return "wrap the expression in TEXT()"
    if wanted is FType.NUMBER and actual is FType.TEXT:
        return "wrap the expression in VALUE()"
    return None


class _Builder(RestrictedEval):
    """Walks a validated formula tree (through simpleeval's ``nodes`` table)
    and returns a :class:`~.types.Node` -- type plus evaluator -- per node.
    Name and type problems are collected, not raised, so one compile reports
    all of them; a node with a problem gets the ERROR type, which every
    check accepts silently."""

    def __init__(self, compiler: FormulaCompiler, obj: ObjectDef, blanks_as_zero: bool) -> None:
        super().__init__(FUNCTIONS)
        self.compiler = compiler
        self.obj = obj
        self.blanks_as_zero = blanks_as_zero
        self.problems: list[FormulaProblem] = []
        self.references: set[tuple[str, ...]] = set()
        self.inlined_cost = 0
        self.inlined_depth = 0

    @property
    def source(self) -> ParsedFormula:
        assert self.parsed is not None
        return self.parsed

    def _problem(self, code: str, message: str, offset: int | None, hint: str | None, label: str) -> Node:
        self.problems.append(FormulaProblem(code, message, offset, hint))
        return Node(FType.ERROR, _never, label)

    def _type_problem(self, problem: TypeProblem, operands: list[ast.AST], whole: ast.AST,
                      operator_offset: int | None = None) -> Node:
        if 0 <= problem.index < len(operands):
            offset = self.source.offset(operands[problem.index])
        elif operator_offset is not None:
            offset = operator_offset
        else:
            offset = self.source.offset(whole)
        return self._problem(TYPE, problem.message, offset, problem.hint, self.source.text(whole))

    # -- leaves ----------------------------------------------------------------

    def _eval_constant(self, node: ast.Constant) -> Node:
        value = node.value
        if value is None:
            kind = FType.NULL
        elif isinstance(value, bool):
            kind = FType.CHECKBOX
        elif isinstance(value, str):
            kind = FType.TEXT
        else:  # validation turned every number literal into a Decimal
            kind = FType.NUMBER
        return Node(kind, lambda record, today: value, self.source.text(node), value)

    def _eval_name(self, node: ast.Name) -> Node:
        return self._field(node, [node.id])

    def _eval_attribute(self, node: ast.Attribute) -> Node:
        segments: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            segments.append(current.attr)
            current = current.value
        assert isinstance(current, ast.Name)  # guaranteed by validation
        segments.append(current.id)
        return self._field(node, segments[::-1])

    def _field(self, node: ast.AST, segments: list[str]) -> Node:
        """Resolve a field path: relationships, then the field."""
        label = ".".join(segments)
        offset = self.source.offset(node)
        obj = self.obj
        path: list[str] = []
        for segment in segments[:-1]:
            lookup = obj.relationship(segment)
            if lookup is None:
                return self._unknown_relationship(obj, segment, segments, offset, label)
            target = self.compiler.lookup(lookup.reference_to) if lookup.reference_to else None
            if target is None:
                return self._problem(UNKNOWN, f"{obj.name}.{lookup.name} refers to the unknown object "
                                     f"{lookup.reference_to}", offset, None, label)
            path.append((lookup.path_name or lookup.name).lower())
            obj = target
        name = segments[-1]
        field = obj.field(name)
        if field is None:
            return self._unknown_field(obj, name, offset, label)
        if field.formula is not None:
            return self._inline(obj, field, tuple(path), offset, label)
        kind = of_field_type(field.type)
        if kind is None:
            return self._problem(TYPE, f"{obj.name}.{field.name} ({field.type.value}) cannot be used in formulas",
                                 offset, None, label)
        self.references.add((*path, field.key))
        reader = rt.field_reader(tuple(path), field.key, field.type, f"{obj.name}.{field.name}", self._blank(kind))
        return Node(kind, reader, label)

    def _blank(self, kind: FType) -> object:
        """What a missing value reads as."""
        if kind is FType.CHECKBOX:
            return False  # a checkbox is never null
        if self.blanks_as_zero:
            if kind is FType.NUMBER:
                return rt.ZERO
            if kind in (FType.TEXT, FType.PICKLIST):
                return ""
        return None

    def _inline(self, obj: ObjectDef, field: FieldDef, path: tuple[str, ...], offset: int, label: str) -> Node:
        compiled, problems = self.compiler._compile_field(obj, field)
        if compiled is None:
            first = problems[0] if problems else FormulaProblem(TYPE, "invalid formula", None)
            if first.code in (CYCLE, LIMIT) and first.message.startswith(("formula cycle", "formula fields use")):
                return self._problem(first.code, first.message, offset, None, label)
            return self._problem(first.code, f"{obj.name}.{field.name} cannot be used: its formula is invalid "
                                 f"({first.message})", offset, first.hint, label)
        kind = of_field_type(compiled.result_type)
        assert kind is not None
        self.references.update((*path, *ref) for ref in compiled.references)
        self.inlined_cost += compiled._cost
        self.inlined_depth = max(self.inlined_depth, compiled._depth)
        reader = rt.formula_reader(path, compiled.evaluator, f"{obj.name}.{field.name}", self._blank(kind))
        return Node(kind, reader, label)

    def _unknown_relationship(self, obj: ObjectDef, segment: str, segments: list[str], offset: int,
                              label: str) -> Node:
        field = obj.field(segment)
        if field is not None and field.type.is_reference and field.path_name:
            following = segments[segments.index(segment) + 1]
            return self._problem(UNKNOWN, f"{segment} is the id of a lookup; follow the relationship "
                                 f"{field.path_name} instead", offset,
                                 f"did you mean {field.path_name}.{following}?", label)
        if field is not None:
            return self._problem(UNKNOWN, f"{obj.name}.{field.name} is not a lookup, so '.' cannot follow it",
                                 offset, None, label)
        candidates = [f.path_name for f in obj.fields if f.path_name]
        return self._problem(UNKNOWN, f"unknown relationship {segment} on {obj.name}", offset,
                             did_you_mean(segment, candidates), label)

    def _unknown_field(self, obj: ObjectDef, name: str, offset: int, label: str) -> Node:
        hint = did_you_mean(name, [f.name for f in obj.fields])
        if hint is None and name.upper() in self.functions:
            hint = f"{name.upper()} is a function: write {name.upper()}(...)"
        if hint is None and obj.relationship(name) is not None:
            hint = f"{name} is a relationship; name one of its fields, e.g. {name}.Name"
        return self._problem(UNKNOWN, f"unknown field {name} on {obj.name}", offset, hint, label)

    # -- operators and calls ---------------------------------------------------

    def _eval_unaryop(self, node: ast.UnaryOp) -> Node:
        operand = self._eval(node.operand)
        try:
            kind, fn = negate_operator(self.operators[type(node.op)], operand)
        except TypeProblem as problem:
            return self._type_problem(problem, [node.operand], node)
        return Node(kind, fn, self.source.text(node))

    def _eval_binop(self, node: ast.BinOp) -> Node:
        left = self._eval(node.left)
        right = self._eval(node.right)
        token = self.source.operator(node.left, node.right)
        try:
            if token.text == "&":  # & and + share Python's '+'
                kind, fn = concat_operator(left, right)
            else:
                kind, fn = arithmetic_operator(self.operators[type(node.op)], left, right)
        except TypeProblem as problem:
            return self._type_problem(problem, [node.left, node.right], node, token.start)
        return Node(kind, fn, self.source.text(node))

    def _eval_compare(self, node: ast.Compare) -> Node:
        left = self._eval(node.left)
        right = self._eval(node.comparators[0])
        token = self.source.operator(node.left, node.comparators[0])
        try:
            kind, fn = compare_operator(self.operators[type(node.ops[0])], left, right)
        except TypeProblem as problem:
            return self._type_problem(problem, [node.left, node.comparators[0]], node, token.start)
        return Node(kind, fn, self.source.text(node))

    def _eval_boolop(self, node: ast.BoolOp) -> Node:
        operands = [self._eval(value) for value in node.values]
        try:
            kind, fn = logical_operator(self.operators[type(node.op)], operands)
        except TypeProblem as problem:
            return self._type_problem(problem, list(node.values), node)
        return Node(kind, fn, self.source.text(node))

    def _eval_call(self, node: ast.Call) -> Node:
        assert isinstance(node.func, ast.Name)  # guaranteed by validation
        function = self.functions[node.func.id.upper()]
        args = [self._eval(arg) for arg in node.args]
        label = self.source.text(node)
        wrong_count = function.arity_problem(len(args))
        if wrong_count:
            return self._problem(SYNTAX, wrong_count, self.source.offset(node), None, label)
        try:
            kind = function.check(args)
        except TypeProblem as problem:
            return self._type_problem(problem, list(node.args), node)
        if kind is FType.ERROR or any(arg.type is FType.ERROR for arg in args):
            return Node(kind, _never, label)
        return Node(kind, function.build(args), label, NOT_CONSTANT)
