"""The lexer of filter conditions: text to tokens with character offsets.

Syntax errors stop at the first problem (:class:`ParseFailure`, code E056),
with the offset of the offending character and, where one helps, a hint.
Text values are decoded here, together with their LIKE pattern (escapes
become :data:`~.tree.LIKE_ESCAPE` sequences), and numbers are read as
Decimal, never float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

from engine.config.values import parse_decimal

from .tree import (
    LIKE_ESCAPE,
    MAX_DAYS,
    N_DAY_LITERALS,
    RANGE_LITERALS,
    SYNTAX,
    ConditionProblem,
    DateLiteral,
)

KEYWORDS = {"AND", "OR", "NOT", "LIKE", "IN", "INCLUDES", "EXCLUDES"}
CONSTANTS = {"TRUE": True, "FALSE": False, "NULL": None}


@dataclass(frozen=True, slots=True)
class Token:
    """One lexeme: its kind, its text as written, its offsets and its value."""

    kind: str  # name, keyword, constant, datelit, string, number, date, datetime, op, open, close, comma, end
    text: str
    start: int
    end: int
    value: object = None


class ParseFailure(Exception):
    """Carries a problem that stops parsing (syntax errors, limits)."""

    def __init__(self, problem: ConditionProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def fail(message: str, offset: int | None, hint: str | None = None, code: str = SYNTAX) -> ParseFailure:
    """A failure to raise: the problem at ``offset`` (E056 unless told)."""
    return ParseFailure(ConditionProblem(code, message, offset, hint))


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


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an ``end`` token; raises
    :class:`ParseFailure` at the first character that starts no token."""
    tokens: list[Token] = []
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if char == "'":
            if tokens and tokens[-1].kind == "string":
                raise fail("unexpected text right after text", position,
                            "write a quote inside text as \\' (not '')")
            value, pattern, end = _scan_text(text, position)
            tokens.append(Token("string", text[position:end], position, end, (value, pattern)))
            position = end
            continue
        match = _SCAN.match(text, position)
        if match is None:
            raise fail(f"unexpected character {char!r}", position, _CHARACTER_HINTS.get(char))
        kind = match.lastgroup or ""
        end = match.end()
        word = match.group()
        if kind == "space":
            position = end
            continue
        if kind in ("datetime", "date", "number") and end < length and _TRAILING_NUMBER.match(text[end]):
            if kind == "date" and text[end] in "T:":
                raise fail(f"malformed date-time starting with {word}", position,
                            f"write a date-time like {word}T00:00:00Z")
            raise fail(f"{word} cannot be followed directly by {text[end]!r}", end,
                        "write numbers like 1234.5 (no exponents) and separate values with spaces")
        if kind == "datetime":
            if match.group("zone") is None:
                raise fail("a date-time needs a time zone", end, "end it with Z (UTC) or an offset like +01:00")
            try:
                value = datetime.fromisoformat(word[:-1] + "+00:00" if word.endswith("Z") else word)
            except ValueError:
                raise fail(f"{word} is not a valid date-time", position) from None
            tokens.append(Token("datetime", word, position, end, value.astimezone(timezone.utc)))
        elif kind == "date":
            try:
                value = date.fromisoformat(word)
            except ValueError:
                raise fail(f"{word} is not a valid date", position, "write dates as YYYY-MM-DD") from None
            tokens.append(Token("date", word, position, end, value))
        elif kind == "number":
            tokens.append(Token("number", word, position, end, parse_decimal(word)))
        elif kind == "name":
            upper = word.upper()
            if upper in N_DAY_LITERALS:
                suffix = _N_SUFFIX.match(text, end)
                if suffix is None:
                    raise fail(f"{upper} needs a number of days", end, f"write it like {upper}:30")
                n = int(suffix.group(1))
                if not 1 <= n <= MAX_DAYS:
                    raise fail(f"the number of days in {upper}:{n} must be between 1 and {MAX_DAYS:,}",
                                suffix.start(1))
                end = suffix.end()
                tokens.append(Token("datelit", text[position:end], position, end, DateLiteral(upper, n)))
            elif end < length and text[end] == ":":
                raise fail(f"unexpected ':' after {word}", end,
                            "only LAST_N_DAYS:n and NEXT_N_DAYS:n take a number after ':'")
            elif end < length and text[end] == ".":
                raise fail(f"the field path {word}. does not end in a field name", end,
                            "write paths like Account.Type, without spaces")
            elif upper in RANGE_LITERALS:
                tokens.append(Token("datelit", word, position, end, DateLiteral(upper)))
            elif upper in KEYWORDS:
                tokens.append(Token("keyword", upper, position, end, upper))
            elif upper in CONSTANTS:
                tokens.append(Token("constant", word, position, end, CONSTANTS[upper]))
            else:
                segments = []
                offset = position
                for segment in word.split("."):
                    segments.append((segment, offset))
                    offset += len(segment) + 1
                tokens.append(Token("name", word, position, end, tuple(segments)))
        else:
            tokens.append(Token(kind, word, position, end))
        position = end
    tokens.append(Token("end", "", length, length))
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
                raise fail(f"unknown escape sequence \\{escaped} in text", position,
                            "known escapes: \\' \\\" \\\\ \\n \\r \\t \\b \\f \\% \\_")
            position += 2
            continue
        value.append(char)
        pattern.append(char if char in ("%", "_") else _like_literal(char))
        position += 1
    raise fail("text is never closed", start, "end it with '")


_LITERAL_WORDS = {
    "string": "text",
    "number": "the number",
    "date": "the date",
    "datetime": "the date-time",
    "datelit": "the date literal",
    "constant": "",
}


def describe(token: Token) -> str:
    """The token as a message names it: ``text 'x'``, ``the number 12``, ``null``."""
    if token.kind == "end":
        return "the end of the condition"
    text = token.text if len(token.text) <= 40 else token.text[:37] + "..."
    if token.kind == "constant":
        return str(token.text).lower()
    word = _LITERAL_WORDS.get(token.kind)
    return f"{word} {text}" if word else f"'{text}'" if token.kind != "name" else text
