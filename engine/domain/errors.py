"""Runtime errors as data: one protocol for every failure a user can act on.

Configuration problems are :class:`~engine.config.diagnostics.Diagnostic`
values with a stable code, a location in a file and a message. Failures at
run time follow the same shape: a :class:`Problem` has a stable code
(``R`` + three digits, documented in ``docs/runtime-errors.md``), a
:class:`Where` naming the record, the input row or the argument it concerns,
a message and an optional hint.

Code raises :class:`EngineError` (or a subclass owned by its package, each
with its own code) when it cannot do what was asked; the error carries one or
more problems. The CLI renders them in one place, as text or JSON, and takes
its exit code from them. Anything else that escapes is a bug and reported as
one.

Code ranges: R0xx general, R1xx storage and records, R2xx billing, R3xx
booking, R4xx cash, R5xx exports, R6xx documents, R9xx environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence

from engine.config.diagnostics import Severity


@dataclass(frozen=True, slots=True)
class Where:
    """What a runtime problem concerns: a record (object and name or id), a
    row of an input file (file, row, field), or a command argument."""

    object: str | None = None
    record: str | None = None
    file: str | None = None
    row: int | None = None
    field: str | None = None
    argument: str | None = None

    def render(self) -> str:
        """Compiler style: ``payments.csv:3:Amount``, ``Invoice INV-2024-00001``,
        ``--period-end``; empty when nothing is known."""
        if self.file is not None:
            parts = [self.file] + [str(p) for p in (self.row, self.field) if p is not None]
            return ":".join(parts)
        if self.argument is not None:
            return self.argument
        text = " ".join(p for p in (self.object, self.record) if p)
        if self.field:
            text = f"{text}.{self.field}" if text else self.field
        return text

    def to_dict(self) -> dict[str, object]:
        return {key: value for key in ("object", "record", "file", "row", "field", "argument")
                if (value := getattr(self, key)) is not None}


NOWHERE = Where()

#: The exit code of a command that did part of what it was asked and reports
#: the rest as problems (records not billed, invoices not finalized, orders
#: left out of a file): a scheduler must notice, and must not retry the whole.
PARTLY_DONE = 4


@dataclass(frozen=True, slots=True)
class Problem:
    """One runtime problem: stable code, what it concerns, message, hint."""

    code: str
    message: str
    where: Where = NOWHERE
    hint: str | None = None
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "severity": self.severity.value, "message": self.message,
                "where": self.where.to_dict(), "hint": self.hint}


class EngineError(Exception):
    """A failure the user can act on (bad input, a state that forbids the
    command, a missing setting), never a bug.

    Subclasses name their package's failures and set ``code``; the message is
    ``str(error)``. ``problems`` carries more than one finding when a command
    checks a whole input before refusing it (a CSV with several bad rows).
    """

    code: ClassVar[str] = "R000"
    #: The exit code of a command that ends with this error: 1, nothing (or
    #: not all) of what was asked was done; :data:`PARTLY_DONE` when the rest
    #: of the command's work was done and committed.
    exit_code: int = 1

    def __init__(self, message: str, *, where: Where | None = None, hint: str | None = None,
                 problems: Sequence[Problem] = (), partly_done: bool = False):
        super().__init__(message)
        self.message = message
        self.where = where or NOWHERE
        self.hint = hint
        self._problems = tuple(problems)
        if partly_done:
            self.exit_code = PARTLY_DONE

    @property
    def problems(self) -> tuple[Problem, ...]:
        """The problems to show: the listed ones, else this error as one."""
        if self._problems:
            return self._problems
        return (Problem(self.code, self.message, self.where, self.hint),)


def error_classes() -> Iterable[type[EngineError]]:
    """Every EngineError subclass defined so far (for the code catalogue test)."""
    seen: list[type[EngineError]] = []
    pending = [EngineError]
    while pending:
        cls = pending.pop()
        seen.append(cls)
        pending.extend(cls.__subclasses__())
    return seen
