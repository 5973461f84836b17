"""The failures of the audit (R700-R799).

An audit never changes anything, so none of these leaves anything behind.
Differences in the books are not errors of the audit: they are findings
(:class:`engine.audit.findings.Finding`), and :class:`AuditDifferences` is
how the command ends when there are any.
"""

from __future__ import annotations

from engine.domain.errors import EngineError


class AuditError(EngineError):
    """The audit cannot run as asked."""

    code = "R700"


class AuditFileUnreadable(AuditError, OSError):
    """A DATEV or SEPA file given to the audit cannot be opened or read.

    A file that can be read but is not what it should be (not a Buchungsstapel,
    not a pain message) is a finding of the audit instead (A505, A515).
    """

    code = "R701"


class AuditDifferences(AuditError):
    """The audit found differences in the books: one problem per finding, with the finding's code (A + 3 digits)."""

    code = "R710"
