"""The audit: everything the engine wrote, reconciled (``metabill audit``)."""

from .findings import CODES, AccountPeriod, AuditReport, Finding, LeftOut
from .service import audit

__all__ = ["CODES", "AccountPeriod", "AuditReport", "Finding", "LeftOut", "audit"]
