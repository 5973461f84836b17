"""What an invoice run reports: per filter the records it read, the invoices
and lines it wrote and the records it could not bill, plus one summary per
invoice.

A record that cannot be billed does not stop the run: the run writes the
reason to the record (``ON_InvoiceBuildError<sfx>``), bills the rest and
lists the record here as a :class:`RecordFailure`, whose :attr:`~RecordFailure.problem`
the CLI renders like every other runtime problem (code R204).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from engine.domain.errors import EngineError, Problem, Where

#: ``progress(filter name, records done, records to do)``, called after each batch.
Progress = Callable[[str, int, int], None]


class RecordNotBilled(EngineError):
    """A source record could not be billed; the run wrote the reason to the
    record's ON_InvoiceBuildError field and billed the others.

    Never raised: the run reports such records in its :class:`RunReport`
    (:attr:`RecordFailure.problem` carries this code). Fix the record (or
    the rule it needs) and run again; the next run bills it.
    """

    code = "R204"


class RecordsNotBilled(EngineError):
    """Some source records of an invoice run could not be billed; the others
    were (one problem per record, the reason is also on the record)."""

    code = "R212"


@dataclass(frozen=True)
class RecordFailure:
    """A source record the run could not bill, and why."""

    object_name: str
    record_id: int
    message: str

    @property
    def problem(self) -> Problem:
        """The failure as a runtime problem concerning the source record."""
        return Problem(RecordNotBilled.code, self.message, Where(object=self.object_name, record=str(self.record_id)))


@dataclass
class FilterReport:
    """What the run did for one filter."""

    name: str
    records_read: int = 0
    invoices: int = 0
    lines: int = 0
    failures: list[RecordFailure] = field(default_factory=list)


@dataclass(frozen=True)
class InvoiceSummary:
    """One draft invoice the run wrote (or, in a dry run, would write)."""

    id: int
    name: str
    account: str
    type: str
    lines: int
    total_net: Decimal
    grand_total: Decimal
    currency: str


@dataclass
class RunReport:
    """What one invoice run did: its InvoiceRun record, each filter's
    counts and failures, the invoices, and how long it took."""

    run_id: int
    run_name: str
    joined_existing: bool
    dry_run: bool
    filters: list[FilterReport] = field(default_factory=list)
    invoices: list[InvoiceSummary] = field(default_factory=list)
    seconds: float = 0.0
    #: The dead processes this run was recovered from (descriptions).
    recovered: tuple[str, ...] = ()

    @property
    def invoice_count(self) -> int:
        return sum(f.invoices for f in self.filters)

    @property
    def line_count(self) -> int:
        return sum(f.lines for f in self.filters)

    @property
    def failure_count(self) -> int:
        return sum(len(f.failures) for f in self.filters)

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every record failure as a problem, in report order (filter by filter)."""
        return tuple(failure.problem for f in self.filters for failure in f.failures)

    def failure_error(self) -> RecordsNotBilled | None:
        """The error the command ends with when records failed (exit code 4:
        the command ran, the other records were billed, or would be in a dry
        run), else None."""
        if not self.failure_count:
            return None
        done = "would be" if self.dry_run else "were"
        return RecordsNotBilled(f"{self.failure_count} source record(s) could not be billed; the others {done}",
                                problems=self.problems, partly_done=True)
