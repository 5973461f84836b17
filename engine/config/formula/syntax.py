"""From formula text to a validated Python syntax tree.

Salesforce formula syntax is close enough to Python expression syntax that the
standard parser can do the heavy lifting once the few tokens that differ are
rewritten. Parsing therefore happens in three steps, once per formula:

1. :func:`tokenize` scans the formula with the formula's own, small token set
   (names, numbers, quoted text, ``+ - * / ^ & = == <> != < <= > >= && ||``,
   parentheses, commas and dots). Every other character is refused here, so
   Python-only syntax such as ``[]``, ``{}``, ``:``, ``%`` or ``lambda`` never
   reaches the parser. Each token is rewritten to its Python spelling
   (``=`` to ``==``, ``<>`` to ``!=``, ``^`` to ``**``, ``&&``/``||`` to
   ``and``/``or``, ``&`` to ``+`` at the same precedence as in Salesforce,
   ``TRUE``/``FALSE``/``NULL`` to ``True``/``False``/``None``, text literals to
   escaped ASCII literals) and remembered with both positions, so any Python
   position maps back to a character offset in the formula.
2. ``ast.parse(..., mode="eval")`` parses the rewritten one-line source, so
   statements cannot even be expressed.
3. :class:`RestrictedEval` -- a cut-down subclass of ``simpleeval.SimpleEval``
   -- validates the tree: only the node types in its ``nodes`` table and the
   operators in its ``operators`` table are allowed, calls must name an
   allow-listed function directly (no methods, no keywords, no ``*args``),
   ``.`` may only join the names of a field path, names may not start with
   ``_`` (simpleeval's ``DISALLOW_PREFIXES``), the size limits hold, and number
   literals become ``Decimal`` values read from the formula text (Python would
   make floats of them). Nothing is evaluated here: the compiler subclasses
   :class:`RestrictedEval` and walks the same ``nodes`` table to build the
   evaluator, so the list of what a formula may contain lives in one place.
"""

from __future__ import annotations

import ast
import bisect
import keyword
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping

from simpleeval import DISALLOW_METHODS, DISALLOW_PREFIXES, SimpleEval

from ..diagnostics import did_you_mean
from .errors import LIMIT, SYNTAX, UNKNOWN, ProblemFound, fail

MAX_LENGTH = 3900  # characters in an expression
MAX_NODES = 1000  # syntax tree nodes
MAX_DEPTH = 60  # nesting levels of the syntax tree (and of parentheses)
MAX_HOPS = 5  # relationships in one field path
MAX_LITERAL_DIGITS = 40  # digits before the decimal point of a number literal
LABEL_LENGTH = 60  # longest expression excerpt quoted in a message


@dataclass(frozen=True, slots=True)
class Token:
    """One formula token: where it is in the formula and in the Python source."""

    kind: str  # name, literal, number, string, op, open, close, comma, dot
    text: str  # as written in the formula
    start: int
    end: int
    py: str  # its spelling in the rewritten Python source
    py_start: int

    @property
    def py_end(self) -> int:
        return self.py_start + len(self.py)


_SCAN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>&&|\|\||<>|<=|>=|==|!=|[-+*/^&=<>])
    | (?P<open>\()
    | (?P<close>\))
    | (?P<comma>,)
    | (?P<dot>\.)
    """,
    re.VERBOSE,
)
_CALL_FOLLOWS = re.compile(r"\s*\(")
_OPERATORS = {"&&": "and", "||": "or", "<>": "!=", "=": "==", "^": "**", "&": "+"}
_LITERALS = {"true": "True", "false": "False", "null": "None"}
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", '"': '"'}

_CHARACTER_HINTS = {
    "[": "lists and subscripts are not part of the formula language",
    "]": "lists and subscripts are not part of the formula language",
    "{": "dictionaries and sets are not part of the formula language",
    "}": "dictionaries and sets are not part of the formula language",
    ":": "lambdas, slices and := are not part of the formula language",
    "%": "use MOD(number, divisor)",
    "!": "use NOT(condition), or <> for 'not equal'",
    "|": "use || or OR() for 'or'",
    ";": "a formula is a single expression",
}
_RESERVED_HINTS = {
    "and": "use && or AND()",
    "or": "use || or OR()",
    "not": "use NOT()",
    "is": "use = for comparison, or ISBLANK()",
    "in": "use CONTAINS() or INCLUDES()",
    "if": "use IF(condition, value if true, value if false)",
    "else": "use IF(condition, value if true, value if false)",
    "None": "use NULL",
}

# What to call refused Python constructs in messages.
_REFUSED = {
    ast.Tuple: "tuples like (a, b)",
    ast.List: "lists",
    ast.Dict: "dictionaries",
    ast.Set: "sets",
    ast.Starred: "starred arguments (*x)",
    ast.Lambda: "lambda expressions",
    ast.IfExp: "Python conditional expressions (use IF())",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Subscript: "subscripts (x[...])",
    ast.Slice: "slices",
    ast.JoinedStr: "f-strings",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def tokenize(expression: str) -> list[Token]:
    """Scan ``expression`` into tokens carrying their Python spelling.

    Raises ProblemFound (E050) for characters and words outside the formula
    language, unterminated text, unbalanced parentheses; E054 for parentheses
    nested deeper than MAX_DEPTH."""
    tokens: list[Token] = []
    opened: list[int] = []  # offsets of the parentheses still open
    position = 0
    py_position = 0
    length = len(expression)

    def emit(kind: str, text: str, start: int, end: int, py: str) -> None:
        nonlocal py_position
        tokens.append(Token(kind, text, start, end, py, py_position))
        py_position += len(py) + 1  # tokens are joined with one space

    while position < length:
        char = expression[position]
        if char in "'\"":
            if tokens and tokens[-1].kind == "name" and tokens[-1].end == position:
                raise fail(SYNTAX, f"string prefixes such as {tokens[-1].text}'...' are not supported",
                           tokens[-1].start)
            if tokens and tokens[-1].kind == "string":
                # Python would silently join 'a' 'b'; a formula needs &.
                raise fail(SYNTAX, "unexpected text right after text", position, "join text with &")
            value, end = _scan_text(expression, position)
            emit("string", expression[position:end], position, end, ascii(value))
            position = end
            continue
        match = _SCAN.match(expression, position)
        if match is None:
            raise fail(SYNTAX, f"unexpected character {char!r}", position, _CHARACTER_HINTS.get(char))
        kind = match.lastgroup or ""
        text = match.group()
        end = match.end()
        if kind == "number":
            if end < length and (expression[end].isalpha() or expression[end] == "_"):
                raise fail(SYNTAX, f"a number cannot be followed directly by {expression[end]!r}", end,
                           "write numbers like 1234.5 (no exponent notation)")
            # Python refuses leading zeros in integers; the value is taken from
            # the formula text later, so any valid spelling will do here.
            emit(kind, text, position, end, str(int(text)) if text.isdigit() else text)
        elif kind == "name":
            literal = _LITERALS.get(text.lower())
            if literal is not None:
                emit("literal", text, position, end, literal)
            elif keyword.iskeyword(text):
                if _CALL_FOLLOWS.match(expression, end):
                    # IF(, AND(, OR(, NOT( are functions; upper case is no keyword.
                    emit(kind, text, position, end, text.upper())
                else:
                    raise fail(SYNTAX, f"'{text}' is a reserved word, not part of the formula language",
                               position, _RESERVED_HINTS.get(text))
            else:
                emit(kind, text, position, end, text)
        elif kind == "op":
            emit(kind, text, position, end, _OPERATORS.get(text, text))
        elif kind == "open":
            opened.append(position)
            if len(opened) > MAX_DEPTH:
                raise fail(LIMIT, f"parentheses are nested more than {MAX_DEPTH} levels deep", position)
            emit(kind, text, position, end, text)
        elif kind == "close":
            if not opened:
                raise fail(SYNTAX, "')' has no matching '('", position)
            opened.pop()
            emit(kind, text, position, end, text)
        elif kind in ("comma", "dot"):
            emit(kind, text, position, end, text)
        position = end
    if opened:
        raise fail(SYNTAX, "'(' is never closed", opened[-1], "add the missing ')'")
    if not tokens:
        raise fail(SYNTAX, "the formula is empty", 0)
    return tokens


def _scan_text(expression: str, start: int) -> tuple[str, int]:
    """Decode the quoted text starting at ``start``; return it and its end."""
    quote = expression[start]
    parts: list[str] = []
    position = start + 1
    while position < len(expression):
        char = expression[position]
        if char == quote:
            return "".join(parts), position + 1
        if char == "\\":
            if position + 1 >= len(expression):
                break
            escaped = expression[position + 1]
            if escaped not in _ESCAPES:
                raise fail(SYNTAX, f"unknown escape sequence \\{escaped} in text", position,
                           "known escapes: \\n \\r \\t \\\\ \\' \\\"")
            parts.append(_ESCAPES[escaped])
            position += 2
            continue
        parts.append(char)
        position += 1
    raise fail(SYNTAX, "text is never closed", start, f"end it with {quote}")


@dataclass(frozen=True, slots=True)
class ParsedFormula:
    """A parsed, validated formula: the tree plus the way back to the text."""

    expression: str
    tree: ast.expr
    tokens: tuple[Token, ...]
    node_count: int = 0
    depth: int = 0
    py_starts: tuple[int, ...] = ()

    def _token_index(self, py_offset: int) -> int:
        """Index of the token at ``py_offset`` (or the next one after a gap)."""
        index = bisect.bisect_right(self.py_starts, py_offset) - 1
        if index >= 0 and py_offset < self.tokens[index].py_end:
            return index
        return index + 1

    def token_at(self, py_offset: int) -> Token | None:
        index = self._token_index(py_offset)
        return self.tokens[index] if index < len(self.tokens) else None

    def offset(self, node: ast.AST) -> int:
        """Character offset in the formula where ``node`` starts."""
        token = self.token_at(getattr(node, "col_offset", 0))
        return token.start if token else len(self.expression)

    def text(self, node: ast.AST) -> str:
        """``node`` as written in the formula, shortened for messages."""
        first = self.token_at(node.col_offset)  # type: ignore[attr-defined]
        last = self.token_at(max(node.end_col_offset - 1, 0))  # type: ignore[attr-defined]
        if first is None or last is None:
            return ""
        text = " ".join(self.expression[first.start:last.end].split())
        return text if len(text) <= LABEL_LENGTH else text[: LABEL_LENGTH - 3] + "..."

    def operator(self, left: ast.AST, right: ast.AST) -> Token:
        """The operator token between two operands (``&`` and ``+`` share a
        Python spelling, so the compiler asks which one was written)."""
        index = self._token_index(left.end_col_offset)  # type: ignore[attr-defined]
        while self.tokens[index].kind in ("close", "open"):
            index += 1
        return self.tokens[index]


def parse_source(expression: str) -> tuple[ast.expr, tuple[Token, ...]]:
    """Tokenize, rewrite and parse; the tree is not validated yet."""
    if len(expression) > MAX_LENGTH:
        raise fail(LIMIT, f"the formula is {len(expression)} characters long; at most {MAX_LENGTH} are allowed",
                   MAX_LENGTH)
    tokens = tuple(tokenize(expression))
    source = " ".join(t.py for t in tokens)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as error:
        raise _syntax_problem(error, tokens, expression) from None
    except (RecursionError, MemoryError):
        raise fail(LIMIT, "the formula is nested too deeply", None) from None
    return tree.body, tokens


def _syntax_problem(error: SyntaxError, tokens: tuple[Token, ...], expression: str) -> ProblemFound:
    """Turn Python's SyntaxError into an E050 pointing into the formula."""
    py_offset = (error.offset or 0) - 1
    if "forgot a comma" in (error.msg or "") and error.end_offset:
        py_offset = error.end_offset - 2  # Python marks the whole "a b" range
    index = None
    if py_offset >= 0:
        starts = [t.py_start for t in tokens]
        index = max(bisect.bisect_right(starts, py_offset) - 1, 0)
        if py_offset >= tokens[index].py_end:
            index += 1
    if index is None or index >= len(tokens):
        return fail(SYNTAX, "the formula ends unexpectedly", len(expression),
                    "an operand, an argument or a ')' is missing at the end")
    token = tokens[index]
    previous = tokens[index - 1] if index > 0 else None
    hint = None
    operand_end = ("name", "literal", "number", "string", "close")
    operand_start = ("name", "literal", "number", "string", "open")
    if previous is not None and previous.kind in operand_end and token.kind in operand_start:
        hint = "is an operator or a comma missing before it?"
    elif token.text == "=" and previous is not None and previous.kind == "op":
        hint = "use = or == for 'equals', <> or != for 'not equal'"
    elif token.text == "*" and previous is not None and previous.text == "*":
        hint = "use ^ for powers"
    return fail(SYNTAX, f"unexpected {token.text!r}", token.start, hint)


class RestrictedEval(SimpleEval):
    """``simpleeval.SimpleEval`` cut down to the formula language.

    The ``nodes`` and ``operators`` tables of the base class are replaced by
    the few entries a formula needs; :meth:`parse` rewrites, parses and
    validates a formula once; :meth:`eval` walks a validated tree through
    ``nodes``. This class evaluates nothing itself: subclasses supply the
    ``_eval_*`` handlers (the compiler's handlers build evaluators).
    """

    #: Python operator node -> formula spelling; every other operator is refused.
    OPERATORS: Mapping[type, str] = {
        ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "^",
        ast.USub: "-", ast.UAdd: "+",
        ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.And: "&&", ast.Or: "||",
    }

    def __init__(self, functions: Mapping[str, object]) -> None:
        super().__init__(operators=dict(self.OPERATORS), functions=dict(functions), names={})
        # Replace the base table wholesale: anything not listed is refused.
        self.nodes = {
            ast.Constant: self._eval_constant,
            ast.Name: self._eval_name,
            ast.Attribute: self._eval_attribute,
            ast.UnaryOp: self._eval_unaryop,
            ast.BinOp: self._eval_binop,
            ast.BoolOp: self._eval_boolop,
            ast.Compare: self._eval_compare,
            ast.Call: self._eval_call,
        }
        self.parsed: ParsedFormula | None = None

    # -- parsing and validation ------------------------------------------------

    def parse(self, expr: str) -> ParsedFormula:  # type: ignore[override]
        tree, tokens = parse_source(expr)
        starts = tuple(t.py_start for t in tokens)
        count, depth = self._validate(ParsedFormula(expr, tree, tokens, py_starts=starts))
        return ParsedFormula(expr, tree, tokens, count, depth, starts)

    def eval(self, expr: str, previously_parsed: ParsedFormula | None = None):  # type: ignore[override]
        parsed = previously_parsed or self.parse(expr)
        self.parsed = parsed
        self.expr = parsed.expression
        return self._eval(parsed.tree)

    def _eval(self, node: ast.AST):
        handler = self.nodes.get(type(node))
        if handler is None:  # validation refuses these first; kept as a backstop
            raise self._refuse(node)
        return handler(node)

    def _validate(self, parsed: ParsedFormula) -> tuple[int, int]:
        """Check the whole tree before anything else looks at it; return its
        node count and depth. Iterative, so hostile nesting cannot exhaust
        the Python stack."""
        count = 0
        deepest = 0
        stack: list[tuple[ast.AST, int]] = [(parsed.tree, 1)]
        while stack:
            node, depth = stack.pop()
            count += 1
            deepest = max(deepest, depth)
            if count > MAX_NODES:
                raise fail(LIMIT, f"the formula has more than {MAX_NODES} elements", None,
                           "split it into several formula fields")
            if depth > MAX_DEPTH:
                raise fail(LIMIT, f"the formula is nested more than {MAX_DEPTH} levels deep",
                           parsed.offset(node))
            kind = type(node)
            if kind not in self.nodes:
                raise self._refuse(node, parsed)
            children: list[ast.AST] = []
            if kind is ast.Name:
                self._check_name(node.id, node, parsed)  # type: ignore[attr-defined]
            elif kind is ast.Constant:
                self._check_constant(node, parsed)  # type: ignore[arg-type]
            elif kind is ast.Attribute:
                count += self._check_path(node, parsed)  # type: ignore[arg-type]
            elif kind is ast.Call:
                self._check_call(node, parsed)  # type: ignore[arg-type]
                children = list(node.args)  # type: ignore[attr-defined]
            elif kind is ast.BinOp:
                self._check_operator(node.op, node, parsed)  # type: ignore[attr-defined]
                children = [node.left, node.right]  # type: ignore[attr-defined]
            elif kind is ast.UnaryOp:
                self._check_operator(node.op, node, parsed)  # type: ignore[attr-defined]
                children = [node.operand]  # type: ignore[attr-defined]
            elif kind is ast.BoolOp:
                self._check_operator(node.op, node, parsed)  # type: ignore[attr-defined]
                children = list(node.values)  # type: ignore[attr-defined]
            elif kind is ast.Compare:
                if len(node.ops) > 1:  # type: ignore[attr-defined]
                    second = node.comparators[0]  # type: ignore[attr-defined]
                    raise fail(SYNTAX, "comparisons cannot be chained",
                               parsed.operator(second, node.comparators[1]).start,  # type: ignore[attr-defined]
                               "combine them with AND(), e.g. AND(a < b, b < c)")
                self._check_operator(node.ops[0], node, parsed)  # type: ignore[attr-defined]
                children = [node.left, node.comparators[0]]  # type: ignore[attr-defined]
            stack.extend((child, depth + 1) for child in children)
        return count, deepest

    def _refuse(self, node: ast.AST, parsed: ParsedFormula | None = None) -> ProblemFound:
        what = _REFUSED.get(type(node), type(node).__name__)
        parsed = parsed or self.parsed
        offset = parsed.offset(node) if parsed is not None else None
        return fail(SYNTAX, f"{what} are not part of the formula language", offset)

    def _check_operator(self, op: ast.AST, node: ast.AST, parsed: ParsedFormula) -> None:
        if type(op) not in self.operators:
            raise fail(SYNTAX, f"the operator {type(op).__name__} is not part of the formula language",
                       parsed.offset(node))

    def _check_name(self, name: str, node: ast.AST, parsed: ParsedFormula) -> None:
        for prefix in DISALLOW_PREFIXES:
            if name.startswith(prefix):
                raise fail(SYNTAX, f"'{name}': names may not start with {prefix!r}", parsed.offset(node))

    def _check_constant(self, node: ast.Constant, parsed: ParsedFormula) -> None:
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        token = parsed.token_at(node.col_offset)
        if isinstance(value, (int, float)) and token is not None and token.kind == "number":
            integer_part = token.text.split(".")[0].lstrip("0")
            if len(integer_part) > MAX_LITERAL_DIGITS:
                raise fail(LIMIT, f"the number {token.text} has more than {MAX_LITERAL_DIGITS} digits "
                           "before the decimal point", token.start)
            # Exact decimal from the text as written: never a binary float.
            node.value = Decimal(token.text)
            return
        raise fail(SYNTAX, f"the literal {parsed.text(node)} is not part of the formula language",
                   parsed.offset(node))

    def _check_path(self, node: ast.Attribute, parsed: ParsedFormula) -> int:
        """A dotted name must be a field path of plain names; return its hops."""
        segments: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            segments.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            raise fail(SYNTAX, f"'{parsed.text(node)}': only field names can be joined with '.'",
                       parsed.offset(node), "values have no methods or attributes; use functions such as UPPER(text)")
        segments.append(current.id)
        segments.reverse()
        for name in segments:
            self._check_name(name, node, parsed)
            if name in DISALLOW_METHODS:
                raise fail(SYNTAX, f"'.{name}' is not allowed in a field path", parsed.offset(node))
        hops = len(segments) - 1
        if hops > MAX_HOPS:
            raise fail(LIMIT, f"the path {parsed.text(node)} follows {hops} relationships; "
                       f"at most {MAX_HOPS} are allowed", parsed.offset(node))
        return hops

    def _check_call(self, node: ast.Call, parsed: ParsedFormula) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            name = func.attr.upper()
            hint = (f"use the function {name}(...) instead" if name in self.functions
                    else "only functions such as ROUND(number, 2) can be called")
            raise fail(SYNTAX, f"'{parsed.text(func)}(...)': methods cannot be called", parsed.offset(func), hint)
        if not isinstance(func, ast.Name):
            raise fail(SYNTAX, "only functions such as ROUND(number, 2) can be called", parsed.offset(node))
        self._check_name(func.id, func, parsed)
        if func.id.upper() not in self.functions:
            raise fail(UNKNOWN, f"unknown function {func.id}", parsed.offset(func),
                       did_you_mean(func.id.upper(), self.functions))
        if node.keywords:
            raise fail(SYNTAX, f"{func.id}(): keyword arguments and ** unpacking are not allowed",
                       parsed.offset(node.keywords[0].value))
