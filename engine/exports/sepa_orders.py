"""The vocabulary of the SEPA exports: the three kinds, their fixed values,
and the values that pass between selection, message and recording.

* :data:`DEBIT` - direct debits (pain.008.001.02) of open invoices;
* :data:`CREDIT` - credit transfers (pain.001.001.03) paying out the negative
  open balance of invoices and credits;
* :data:`BALANCES` - credit transfers paying out free Payment and Prepayment
  balances.

A :class:`Transaction` is one payment order of a file, a :class:`Rejected`
an invoice or balance left out because of its SEPA data, and a
:class:`SepaReport` what one export found, built and recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from engine.domain.errors import Problem, Where

from .errors import SepaOrdersLeftOut
from .sepa_xml import PAIN_001, PAIN_008

DEBIT = "sepa-debit"
CREDIT = "sepa-credit"
BALANCES = "sepa-balances"
KINDS = (DEBIT, CREDIT, BALANCES)

#: Invoice payment methods that the SEPA exports take.
SEPA_METHODS = ("SEPA", "Direct Debit")
#: Direct debits are made for invoices due at most this many days ahead.
DUE_WINDOW_DAYS = 14
SEQUENCE_TYPES = ("FRST", "RCUR", "OOFF", "FNAL")
#: Free balance types paid out by :data:`BALANCES`.
BALANCE_TYPES = ("Payment", "Prepayment")
PAYOUT_TYPE = "Payout"
LOCKED_REASON = "Exported"
#: Cash Management balances stay out of SEPA transfers (Balance.Origin).
CASH_MANAGEMENT_ORIGIN = "JPAY1"
CURRENCY = "EUR"
#: The Invoice field receiving the validation result.
ERROR_FIELD = "SepaPaymentError"
#: Account fields (customer fields) with the bank data used to pay out free balances.
ACCOUNT_IBAN, ACCOUNT_BIC, ACCOUNT_OWNER = "ON_BankAccount__c", "ON_BankCode__c", "ON_BankAccountOwner__c"
#: Account field naming the business entity of an account's free balances.
ACCOUNT_ENTITY = "ON_BusinessEntity__c"
#: ExportSetting Format of each export.
SETTING_FORMATS = {DEBIT: "SEPA Direct Debit", CREDIT: "SEPA Credit", BALANCES: "SEPA Credit"}
MESSAGE_OF = {DEBIT: PAIN_008, CREDIT: PAIN_001, BALANCES: PAIN_001}

#: Lengths of SEPA text fields: names, unstructured remittance, identifiers.
NAME_LENGTH = 70
REMITTANCE_LENGTH = 140
ID_LENGTH = 35


@dataclass(frozen=True)
class Creditor:
    """The business entity's side of the messages: the creditor of direct
    debits, the debtor (payer) of credit transfers."""

    entity: str
    name: str
    iban: str
    bic: str | None
    creditor_id: str | None


@dataclass(frozen=True)
class SepaSetting:
    """The export setting's options used here (defaults when the org has no
    such setting record)."""

    name: str
    local_instrument: str = "CORE"
    batch_booking: bool = True
    one_time_export: bool = True
    reference_text: str = "[Name]"
    create_payments: bool = False
    #: ``Current`` (pain.008.001.08/pain.001.001.09, the default) or ``Legacy`` (.02/.03):
    #: :mod:`.sepa_versions` (which imports this module, hence the literal).
    version: str = "Current"


@dataclass(frozen=True)
class Transaction:
    """One payment order of the file."""

    record_id: int
    record_name: str
    end_to_end_id: str
    account: int
    account_name: str | None
    amount: Decimal
    currency: str
    when: date                      # collection date (debit) or execution date (credit)
    iban: str
    bic: str | None
    holder: str
    remittance: str
    due_date: date | None = None
    sequence_type: str | None = None
    mandate_id: str | None = None
    mandate_date: date | None = None
    forced: bool = False
    #: The installments a direct debit collects (ids), when the invoice has a payment plan.
    installments: tuple[int, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """An invoice or balance left out because of its SEPA data."""

    record_id: int
    name: str
    account_name: str | None
    amount: Decimal
    reason: str


@dataclass
class SepaReport:
    """One export: the orders of the file and what was left out and why, the
    validated file content (``data``, None when there is nothing to pay),
    what was recorded, and, from :func:`engine.exports.sepa.run_export`,
    whether it was a dry run and the file written."""

    kind: str
    message: str
    setting: SepaSetting
    creditor: Creditor
    created: datetime
    message_id: str | None = None
    transactions: list[Transaction] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    already_exported: list[str] = field(default_factory=list)
    not_due: list[str] = field(default_factory=list)
    #: sepa-balances: credit balances not paid because other free balances of
    #: their account (refunds, pay-outs, fees) already took that credit.
    netted: list[str] = field(default_factory=list)
    data: bytes | None = None
    history_records: int = 0
    reverse_balances: int = 0
    #: Set by run_export: a dry run (nothing recorded, no file) ...
    dry_run: bool = False
    #: ... or the file written (None when there was nothing to pay).
    file: Path | None = None

    @property
    def total(self) -> Decimal:
        return sum((t.amount for t in self.transactions), Decimal("0.00"))

    def failure_error(self) -> SepaOrdersLeftOut | None:
        """The error the command ends with when records were left out of a
        real export (exit code 4: the rest was exported), else None."""
        if not self.rejected or self.dry_run:
            return None
        return SepaOrdersLeftOut(
            f"{len(self.rejected)} record(s) left out of the SEPA file because of their SEPA data",
            problems=[Problem(SepaOrdersLeftOut.code, item.reason, Where(record=item.name)) for item in self.rejected],
            partly_done=True)

    @property
    def forced(self) -> list[str]:
        return [t.record_name for t in self.transactions if t.forced]
