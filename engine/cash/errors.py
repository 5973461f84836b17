"""The failures of the cash layer that a user can act on: codes R400-R499.

Each class names one kind of refusal and carries a stable code
(``docs/runtime-errors.md``); the message says what was refused and why, and
``where`` names the invoice, account, schedule or input row concerned. They
stay ``ValueError`` subclasses, as they were before they had codes, so code
that caught them as such keeps working.

The modules that raise them import them from here (``payments.PaymentError``,
``imports.ImportFailed``, ``jobs.JobError``, ``collection.CollectionError``,
``cm_core.CashManagementError``, ``cm_payments.MigrationError``,
``installments.InstallmentError`` are the same classes).
"""

from __future__ import annotations

from typing import Sequence

from engine.domain.errors import EngineError, Problem, Where
from engine.storage.csvio import RecordError


class PaymentError(EngineError, ValueError):
    """A payment, refund or write-off cannot be registered as asked.

    An amount that does not fit, an invoice in a state that takes none, a
    transaction number registered already, a write-off reason the org does
    not know."""

    code = "R401"


class PaymentTargetNotFound(PaymentError):
    """The invoice or account a payment, refund or write-off names does not exist."""

    code = "R402"


class ImportFailed(EngineError, ValueError):
    """A payment file was not imported: some of its rows are malformed or were refused.

    Nothing of the file was registered. ``errors`` are the rows' problems as :class:`RecordError` (file, row,
    column, message); ``problems`` the same as runtime problems, one per row.
    """

    code = "R410"

    def __init__(self, errors: Sequence[RecordError]):
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} problem(s); nothing was imported",
                         problems=[Problem(self.code, error.message,
                                           Where(file=error.file, row=error.row, field=error.field))
                                   for error in self.errors])


class JobError(EngineError, ValueError):
    """A job cannot be run, or a job schedule cannot be read.

    An unknown job, an unknown time zone, a cron expression that does not
    work."""

    code = "R420"


class CollectionError(EngineError, ValueError):
    """Payment balance collection cannot run.

    An unknown business entity, GlobalSettings.StatuteOfLimitationsYears not
    set, the write-off reason it writes missing from the picklist."""

    code = "R430"


class CashManagementError(EngineError, ValueError):
    """A cash-management process cannot run for an invoice.

    The integration is off, the invoice does not exist or is in a state the
    process does not take, an amount does not fit what is open."""

    code = "R440"


class MigrationError(EngineError, ValueError):
    """A billing balance cannot become a cash-management payment.

    Its transaction number, which becomes the payment's End-to-End Id, is
    longer than 35 characters."""

    code = "R441"


class InstallmentError(EngineError, ValueError):
    """A payment plan cannot be applied to an invoice.

    The plan is unknown, its Period or Rates are malformed, the amount is too
    small to split, or the invoice has no date to start from."""

    code = "R442"


class FixTasksIncomplete(CashManagementError):
    """Some invoices could not be prepared for cash management by the fix tasks.

    Each one's CM_IntegrationError__c says why; the others were prepared."""

    code = "R443"


class StatementImportFailed(ImportFailed):
    """A bank statement file (camt.053, camt.054, MT940) was not imported.

    It is malformed, does not add up (opening + entries != closing balance),
    or some lines cannot be stored; each problem names the file, the line and
    the position in the statement. Nothing of the file was imported."""

    code = "R450"


class BankAssignmentError(EngineError, ValueError):
    """A payment entry (a bank statement line) cannot be assigned as asked.

    It is assigned already, is not money received, names an invoice that
    does not take payments, or is a return whose original payment is unknown."""

    code = "R451"


class PaymentEntryNotFound(BankAssignmentError, LookupError):
    """The payment entry a command names does not exist."""

    code = "R452"


class InstrumentError(EngineError, ValueError):
    """A payment instrument is refused: IBAN or BIC invalid (schwifty), a
    mandate without reference or date of signature, a mandate reference used
    by another instrument. One problem per reason."""

    code = "R453"


__all__ = ["BankAssignmentError", "InstrumentError", "PaymentEntryNotFound", "StatementImportFailed",
           "CashManagementError", "CollectionError", "FixTasksIncomplete", "ImportFailed", "InstallmentError",
           "JobError", "MigrationError", "PaymentError", "PaymentTargetNotFound"]
