"""``metabill einvoice validate`` as a service: files in, results out.

One unreadable file does not stop the others; :meth:`ValidationReport.failure_error`
is the error to end the command with (one problem per violated rule, per
unreadable file).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from engine.domain.errors import Problem, Where

from .errors import EInvoiceError, EInvoiceInvalid, ValidatorUnavailable
from .validation import FileResult, validate_file


@dataclass
class ValidationReport:
    results: list[FileResult] = field(default_factory=list)
    unreadable: list[EInvoiceError] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"files": [{"path": r.path, "syntax": r.syntax, "xrechnung": r.xrechnung,
                           "valid": not r.errors, "violations": [v.as_dict() for v in r.violations]}
                          for r in self.results],
                "unreadable": [{"code": e.code, "message": e.message} for e in self.unreadable]}

    def failure_error(self) -> EInvoiceInvalid | None:
        problems = [Problem(EInvoiceInvalid.code, f"{v.rule}: {v.message}", Where(file=r.path),
                            hint=", ".join(v.terms) or None)
                    for r in self.results for v in r.errors]
        problems += [problem for error in self.unreadable for problem in error.problems]
        if not problems:
            return None
        failed = sum(1 for r in self.results if r.errors) + len(self.unreadable)
        return EInvoiceInvalid(f"{failed} of {len(self.results) + len(self.unreadable)} file(s) are not valid "
                               "e-invoices", problems=problems)


def validate_files(paths: Iterable[Path]) -> ValidationReport:
    """Validate each file (:func:`.validation.validate_file`); a missing
    validator (:class:`ValidatorUnavailable`) stops everything."""
    report = ValidationReport()
    for path in paths:
        try:
            report.results.append(validate_file(Path(path)))
        except ValidatorUnavailable:
            raise
        except EInvoiceError as error:
            report.unreadable.append(error)
    return report


__all__ = ["ValidationReport", "validate_files"]
