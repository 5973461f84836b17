"""The two ways a formula can go wrong, as values the rest of the engine uses.

* At load time the compiler reports :class:`FormulaProblem` values (a stable
  code, a message for the administrator, the character offset into the
  expression and an optional hint); the loader turns them into diagnostics.
* At evaluation time a formula that cannot produce a value for one record
  (division by zero, ``VALUE('abc')``, a date out of range, a limit hit) raises
  :class:`FormulaEvaluationError`; the caller records it against that record.
"""

from __future__ import annotations

from dataclasses import dataclass

# The stable diagnostic codes (documented in engine/config/diagnostics.py).
SYNTAX = "E050"
UNKNOWN = "E051"
TYPE = "E052"
CYCLE = "E053"
LIMIT = "E054"


@dataclass(frozen=True, slots=True)
class FormulaProblem:
    """One problem found while compiling a formula."""

    code: str
    message: str
    offset: int | None
    hint: str | None = None


class FormulaEvaluationError(ValueError):
    """A formula cannot produce a value for this record; the message says why."""


class ProblemFound(Exception):
    """Internal: carries a problem out of deeply nested checking code.

    Used where going on makes no sense (syntax errors, limits); the type
    checker instead collects problems and keeps going.
    """

    def __init__(self, problem: FormulaProblem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def fail(code: str, message: str, offset: int | None, hint: str | None = None) -> ProblemFound:
    """Build the exception for ``raise fail(...)``."""
    return ProblemFound(FormulaProblem(code, message, offset, hint))
