"""SEPA exports: direct debits (pain.008.001.02) and credit transfers
(pain.001.001.03) of one business entity, with the Invoice Export History.

Three exports (domain-spec §7.2-7.4, seed 002):

* :data:`DEBIT` - open invoices with a positive balance whose payment method
  is SEPA or Direct Debit: one direct debit per invoice over its open balance,
  collected under the invoice's mandate.
* :data:`CREDIT` - open invoices and credits with a negative balance and such
  a payment method: one credit transfer per invoice paying out the open
  amount to the invoice's bank account.
* :data:`BALANCES` - free account balances (no invoice) of type Payment or
  Prepayment with a credit (negative amount): one credit transfer per balance
  to the account's bank account. The exported balance and a new reverse
  balance (type Payout, +amount) are both locked (``LockedReason`` =
  Exported), so the account total reflects the pay-out, the balance is never
  exported or assigned again, and the pair nets to zero.

What goes into a file and what does not:

* An invoice whose SEPA data is incomplete or wrong (IBAN, BIC, account
  holder, mandate reference and signature date, sequence type, currency, an
  invoice number that cannot be an EndToEndId) is left out; the reason is
  written to its ``SepaPaymentError`` field (labelled "SEPA Validation Error")
  and listed in the report. The field is cleared when the invoice is
  exported. A balance with bad bank data is listed in the report only (a
  balance has no such field).
* An invoice already exported with the same export setting and the same
  effective due date, where that export locked the history (setting "Only
  One Export"), is skipped and counted; ``force=True`` exports it again and
  marks the new history record ``ForcedExport``.
* Direct debits are only made for invoices due within the next
  :data:`DUE_WINDOW_DAYS` days (or already due), seen from the collection
  date when one is given, else from the export date.
* Creditor data of the business entity that is missing or invalid (name,
  IBAN, BIC, creditor identifier) makes the whole export impossible:
  :class:`SepaExportError`, nothing changes.

Every message is built with lxml and validated against the vendored official
ISO 20022 XSD (:mod:`engine.exports.sepa_xml`) before anything is written.
The content is deterministic: message id and creation time come from the
``created`` timestamp (injected by tests and the ``--created`` option) and a
digest of the transactions; transactions are ordered by invoice or balance
number.

:func:`export_sepa` runs inside the caller's transaction and returns the
file content; :func:`run_export` owns the transaction and writes the file
atomically (``<out>.part``, fsync, commit, rename).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable, Mapping

import sqlalchemy as sa
from lxml import etree
from schwifty import BIC, IBAN
from stdnum.eu import at_02
from stdnum.exceptions import ValidationError as StdnumValidationError

from engine.config.model import SettingRecord
from engine.storage.bulk import RowWriter, update_by_id

from .sepa_xml import MESSAGES, PAIN_001, PAIN_008, amount_text, is_sepa_text, sepa_text, serialize, validate
from engine.storage.context import Context

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
_MESSAGE_CODE = {DEBIT: "DD", CREDIT: "CT", BALANCES: "BP"}

NAME_LENGTH = 70
REMITTANCE_LENGTH = 140
ID_LENGTH = 35
_PLACEHOLDER = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)\]")
_CHUNK = 500


class SepaExportError(ValueError):
    """The export cannot be made at all (nothing was written or changed)."""


# ---------------------------------------------------------------------------
# Parties and settings


@dataclass(frozen=True)
class Creditor:
    """The business entity's side of the messages: the creditor of direct
    debits, the debtor (payer) of credit transfers."""

    entity: str
    name: str
    iban: str
    bic: str | None
    creditor_id: str | None


def _iban(value: object, label: str) -> tuple[str | None, str | None]:
    """``(compact IBAN, None)`` or ``(None, problem)``, checked with schwifty:
    structure, check digits, country format, SEPA zone."""
    text = str(value or "").strip()
    if not text:
        return None, f"{label} is empty"
    try:
        iban = IBAN(text)
    except ValueError as error:
        return None, f"{label} {text!r} is not a valid IBAN ({error})"
    if not iban.in_sepa_zone:
        return None, f"{label} {text!r} is not an IBAN of the SEPA zone"
    return str(iban.compact), None


def _bic(value: object, label: str) -> tuple[str | None, str | None]:
    """``(BIC or None when empty, None)`` or ``(None, problem)`` (schwifty)."""
    text = str(value or "").strip()
    if not text:
        return None, None
    try:
        return str(BIC(text).compact), None
    except ValueError as error:
        return None, f"{label} {text!r} is not a valid BIC ({error})"


def creditor_for(ctx: Context, entity_name: str, kind: str) -> Creditor:
    """The business entity's SEPA data for ``kind``, checked; raises
    :class:`SepaExportError` naming every problem. Credit transfers pay from
    ``CreditIBAN``/``CreditBIC`` when set, else from ``IBAN``/``BIC``; direct
    debits need the SEPA creditor identifier (checked with python-stdnum,
    ISO 7064 MOD 97-10)."""
    model = ctx.model
    record = model.setting_record("BusinessEntity", entity_name)
    if record is None:
        known = ", ".join(sorted(str(r.get("Name")) for r in model.setting_records("BusinessEntity")))
        raise SepaExportError(f"no business entity named {entity_name!r} (known: {known or 'none'})")
    problems = []
    name = sepa_text(record.get("Company"), NAME_LENGTH)
    if not name:
        problems.append("Company is empty")
    if kind == DEBIT:
        iban, problem = _iban(record.get("IBAN"), "IBAN")
        bic, bic_problem = _bic(record.get("BIC"), "BIC")
    else:
        use_credit = bool(str(record.get("CreditIBAN") or "").strip())
        iban, problem = _iban(record.get("CreditIBAN" if use_credit else "IBAN"), "CreditIBAN" if use_credit else "IBAN")
        bic_field = "CreditBIC" if str(record.get("CreditBIC") or "").strip() else "BIC"
        bic, bic_problem = _bic(record.get(bic_field), bic_field)
    problems += [p for p in (problem, bic_problem) if p]
    creditor_id = None
    if kind == DEBIT:
        raw = str(record.get("SEPACreditorId") or "").strip()
        if not raw:
            problems.append("SEPACreditorId is empty (needed for direct debits)")
        else:
            try:
                creditor_id = at_02.validate(raw)
            except StdnumValidationError as error:
                problems.append(f"SEPACreditorId {raw!r} is not a valid SEPA creditor identifier ({error})")
    if problems:
        raise SepaExportError(f"business entity {entity_name}: " + "; ".join(problems))
    assert iban is not None
    return Creditor(entity=entity_name, name=name, iban=iban, bic=bic, creditor_id=creditor_id)


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


def setting_for(ctx: Context, kind: str, name: str | None = None) -> SepaSetting:
    """The ExportSetting record ``name``, or the first active one of the
    export's format (SEPA Direct Debit, SEPA Credit); defaults named after
    the format when there is none."""
    model = ctx.model
    wanted = SETTING_FORMATS[kind]
    record: SettingRecord | None = None
    if name is not None:
        record = model.setting_record("ExportSetting", name)
        if record is None:
            raise SepaExportError(f"no ExportSetting named {name!r}")
        if record.get("Format") != wanted:
            raise SepaExportError(f"ExportSetting {name!r} has Format {record.get('Format')!r}, not {wanted!r}")
    else:
        record = next((r for r in model.setting_records("ExportSetting")
                       if r.get("Format") == wanted and r.get("Active", True)), None)
    if record is None:
        return SepaSetting(name=wanted)
    return SepaSetting(
        name=str(record.get("Name")),
        local_instrument=str(record.get("SepaLocalInstrument") or "CORE"),
        batch_booking=not bool(record.get("SepaBookingPerTransaction")),
        one_time_export=bool(record.get("OneTimeExport", True)),
        reference_text=str(record.get("PaymentReferenceText") or "[Name]"),
        create_payments=bool(record.get("CreatePayments")),
    )


def _reference(template: str, record: Mapping[str, Any]) -> str:
    """The remittance text: ``[Field]`` placeholders replaced by the record's
    values (field API name, case-insensitive; unknown fields become empty)."""

    def value(match: re.Match) -> str:
        found = record.get(match.group(1).lower())
        return "" if found is None else str(found)

    return sepa_text(_PLACEHOLDER.sub(value, template), REMITTANCE_LENGTH)


# ---------------------------------------------------------------------------
# Report


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
    data: bytes | None = None
    history_records: int = 0
    reverse_balances: int = 0
    applied: bool = False

    @property
    def total(self) -> Decimal:
        return sum((t.amount for t in self.transactions), Decimal("0.00"))

    @property
    def forced(self) -> list[str]:
        return [t.record_name for t in self.transactions if t.forced]


# ---------------------------------------------------------------------------
# Selection


def _tables(ctx: Context) -> dict[str, sa.Table]:
    model = ctx.model
    metadata = ctx.metadata
    return {name: metadata.tables[model.require(name).table_name]
            for name in ("Invoice", "InvoiceExportHistory", "Balance", "Account")}


def _due(invoice: sa.Table) -> sa.ColumnElement:
    """The effective due date: the next installment's, else the invoice's."""
    return sa.func.coalesce(invoice.c.nextpaymentduedate, invoice.c.paymentduedate)


def _invoice_query(ctx: Context, tables: Mapping[str, sa.Table], *, entity: str, debit: bool,
                   setting: SepaSetting) -> sa.Select:
    invoice, history = tables["Invoice"], tables["InvoiceExportHistory"]
    due = _due(invoice)
    locked = sa.exists().where(
        history.c.invoice == invoice.c.id,
        history.c.locked == sa.true(),
        history.c.exportsetting == setting.name,
        sa.or_(history.c.nextpaymentduedate == due, sa.and_(history.c.nextpaymentduedate.is_(None), due.is_(None))),
    )
    return (
        sa.select(invoice, due.label("_due"), locked.label("_locked"))
        .where(*_invoice_conditions(ctx, invoice, entity=entity, debit=debit))
        .order_by(invoice.c.name, invoice.c.id)
    )


def _invoice_conditions(ctx: Context, invoice: sa.Table, *, entity: str, debit: bool) -> list:
    """Open invoices of ``entity`` with a SEPA payment method and a positive
    (debit) or negative (credit) balance."""
    entity_match = invoice.c.businessentity == entity
    if _default_entity(ctx) == entity:
        entity_match = sa.or_(entity_match, invoice.c.businessentity.is_(None))
    return [invoice.c.status == "Open", entity_match, invoice.c.paymentmethod.in_(SEPA_METHODS),
            invoice.c.balance > 0 if debit else invoice.c.balance < 0]


def _lock_candidates(conn: sa.Connection, ctx: Context, tables: Mapping[str, sa.Table], kind: str,
                     entity: str) -> None:
    """On PostgreSQL, lock the rows an export may record (``FOR UPDATE``)
    before selecting them: a concurrent export of the same rows waits until
    this one commits, and its following SELECT (a new snapshot under READ
    COMMITTED) then sees the export history and locks written here, so
    nothing is exported twice. SQLite needs no such step: its write
    transactions (``BEGIN IMMEDIATE``) run one at a time."""
    if conn.dialect.name != "postgresql":
        return
    if kind == BALANCES:
        balance = tables["Balance"]
        query = sa.select(balance.c.id).where(
            balance.c.invoice.is_(None), balance.c.type.in_(BALANCE_TYPES), balance.c.lockedreason.is_(None))
    else:
        invoice = tables["Invoice"]
        query = sa.select(invoice.c.id).where(*_invoice_conditions(ctx, invoice, entity=entity,
                                                                     debit=kind == DEBIT))
    conn.execute(query.with_for_update()).all()


def _default_entity(ctx: Context) -> str | None:
    model = ctx.model
    for record in model.setting_records("BusinessEntity"):
        if record.get("Default"):
            return str(record.get("Name"))
    return None


def _used_mandates(conn: sa.Connection, tables: Mapping[str, sa.Table]) -> set[tuple[int, str]]:
    """(account, mandate reference) pairs already collected by an earlier direct debit export."""
    invoice, history = tables["Invoice"], tables["InvoiceExportHistory"]
    query = (
        sa.select(invoice.c.account, invoice.c.directdebitmandatereference).distinct()
        .join(history, history.c.invoice == invoice.c.id)
        .where(history.c.exportformat == PAIN_008, invoice.c.directdebitmandatereference.is_not(None))
    )
    return {(int(a), str(m)) for a, m in conn.execute(query)}


def _sequence_type(given: object, used: bool) -> str:
    """The invoice's sequence type as recorded, except that a recorded FRST
    becomes RCUR once the mandate was collected by an earlier export; when
    none is recorded: FRST for the first collection under the mandate, RCUR
    afterwards (docs/decisions.md, "SEPA exports")."""
    text = str(given or "").strip()
    if text in ("RCUR", "OOFF", "FNAL"):
        return text
    return "RCUR" if used else "FRST"


def _party_problems(row: Mapping[str, Any]) -> tuple[list[str], str | None, str | None, str]:
    """Problems with the invoice's bank data, and its IBAN, BIC and holder."""
    problems: list[str] = []
    iban, problem = _iban(row.get("bankaccount"), "IBAN (BankAccount)")
    if problem:
        problems.append(problem)
    bic, problem = _bic(row.get("bankcode"), "BIC (BankCode)")
    if problem:
        problems.append(problem)
    holder = sepa_text(row.get("bankaccountowner"), NAME_LENGTH)
    if not holder:
        problems.append("account holder (BankAccountOwner) is empty")
    currency = row.get("currencyisocode") or CURRENCY
    if currency != CURRENCY:
        problems.append(f"currency {currency}: SEPA payments are in EUR only")
    name = str(row.get("name") or "")
    if not is_sepa_text(name, ID_LENGTH):
        problems.append(f"invoice number {name!r} cannot be the EndToEndId (at most {ID_LENGTH} SEPA characters)")
    return problems, iban, bic, holder


def _debit(row: Mapping[str, Any], *, when: date, used: set[tuple[int, str]], setting: SepaSetting,
           forced: bool) -> Transaction | str:
    """The direct debit of an invoice, or the reason it cannot be made."""
    problems, iban, bic, holder = _party_problems(row)
    mandate = str(row.get("directdebitmandatereference") or "").strip()
    if not mandate:
        problems.append("mandate reference (DirectDebitMandateReference) is empty")
    elif not is_sepa_text(mandate, ID_LENGTH):
        problems.append(f"mandate reference {mandate!r} is not at most {ID_LENGTH} characters of "
                        "A-Z a-z 0-9 / - ? : ( ) . , ' + and space")
    signed = row.get("directdebitmandategranted")
    if signed is None:
        problems.append("mandate signature date (DirectDebitMandateGranted) is empty")
    elif signed > when:
        problems.append(f"mandate signature date {signed} is after the collection date {when}")
    given = row.get("directdebitsequencetype")
    if given not in (None, "") and given not in SEQUENCE_TYPES:
        problems.append(f"sequence type {given!r} is not one of {', '.join(SEQUENCE_TYPES)}")
    if problems:
        return "; ".join(problems)
    assert iban is not None
    return Transaction(
        record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
        account=int(row["account"]), account_name=row.get("accountname"),
        amount=Decimal(row["balance"]).quantize(Decimal("0.01")), currency=CURRENCY, when=when,
        iban=iban, bic=bic, holder=holder, remittance=_reference(setting.reference_text, row),
        due_date=row.get("_due"), sequence_type=_sequence_type(given, (int(row["account"]), mandate) in used),
        mandate_id=mandate, mandate_date=signed, forced=forced,
    )


def _credit(row: Mapping[str, Any], *, when: date, setting: SepaSetting, forced: bool) -> Transaction | str:
    """The credit transfer paying out an invoice's negative open balance."""
    problems, iban, bic, holder = _party_problems(row)
    if problems:
        return "; ".join(problems)
    assert iban is not None
    return Transaction(
        record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
        account=int(row["account"]), account_name=row.get("accountname"),
        amount=(-Decimal(row["balance"])).quantize(Decimal("0.01")), currency=CURRENCY, when=when,
        iban=iban, bic=bic, holder=holder, remittance=_reference(setting.reference_text, row),
        due_date=row.get("_due"), forced=forced,
    )


# ---------------------------------------------------------------------------
# Messages


def message_id(kind: str, created: datetime, transactions: Iterable[Transaction]) -> str:
    """``MB<DD|CT|BP><yyyymmddHHMMSS><8 hex digits>`` (26 characters): the
    creation time plus a digest of the orders, so the same input gives the
    same id and different files of one second differ."""
    digest = hashlib.sha256()
    for t in transactions:
        digest.update(f"{t.end_to_end_id}|{t.amount}|{t.when}|{t.iban}|{t.sequence_type}\n".encode())
    return f"MB{_MESSAGE_CODE[kind]}{created:%Y%m%d%H%M%S}{digest.hexdigest()[:8]}"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{parent.nsmap[None]}}}{tag}", **attributes)
    if text is not None:
        element.text = text
    return element


def _path(parent: etree._Element, tags: str, text: str) -> etree._Element:
    """``_path(x, "Id/IBAN", v)`` adds ``<Id><IBAN>v</IBAN></Id>``."""
    *outer, last = tags.split("/")
    for tag in outer:
        parent = _sub(parent, tag)
    return _sub(parent, last, text)


def _agent(parent: etree._Element, tag: str, bic: str | None) -> None:
    """A financial institution by BIC, or ``NOTPROVIDED`` (IBAN-only)."""
    institution = _sub(_sub(parent, tag), "FinInstnId")
    if bic:
        _sub(institution, "BIC", bic)
    else:
        _path(institution, "Othr/Id", "NOTPROVIDED")


def _group_header(root: etree._Element, msg_id: str, created: datetime, transactions: list[Transaction],
                  creditor: Creditor) -> None:
    header = _sub(root, "GrpHdr")
    _sub(header, "MsgId", msg_id)
    _sub(header, "CreDtTm", created.strftime("%Y-%m-%dT%H:%M:%S"))
    _sub(header, "NbOfTxs", str(len(transactions)))
    _sub(header, "CtrlSum", amount_text(sum((t.amount for t in transactions), Decimal(0))))
    _path(header, "InitgPty/Nm", creditor.name)


def build_pain008(msg_id: str, created: datetime, transactions: list[Transaction], creditor: Creditor,
                  setting: SepaSetting) -> etree._Element:
    """A Customer Direct Debit Initiation: one PmtInf per (collection date,
    sequence type), transactions in the given order."""
    root = etree.Element(f"{{{MESSAGES[PAIN_008]}}}Document", nsmap={None: MESSAGES[PAIN_008]})
    initiation = _sub(root, "CstmrDrctDbtInitn")
    _group_header(initiation, msg_id, created, transactions, creditor)
    ordered = sorted(transactions, key=lambda t: (t.when, SEQUENCE_TYPES.index(t.sequence_type or "RCUR")))
    for number, ((when, sequence), group) in enumerate(
        groupby(ordered, key=lambda t: (t.when, t.sequence_type)), start=1
    ):
        batch = list(group)
        info = _sub(initiation, "PmtInf")
        _sub(info, "PmtInfId", f"{msg_id}-{number}")
        _sub(info, "PmtMtd", "DD")
        _sub(info, "BtchBookg", "true" if setting.batch_booking else "false")
        _sub(info, "NbOfTxs", str(len(batch)))
        _sub(info, "CtrlSum", amount_text(sum((t.amount for t in batch), Decimal(0))))
        kind = _sub(info, "PmtTpInf")
        _path(kind, "SvcLvl/Cd", "SEPA")
        _path(kind, "LclInstrm/Cd", setting.local_instrument)
        _sub(kind, "SeqTp", str(sequence))
        _sub(info, "ReqdColltnDt", when.isoformat())
        _path(info, "Cdtr/Nm", creditor.name)
        _path(info, "CdtrAcct/Id/IBAN", creditor.iban)
        _agent(info, "CdtrAgt", creditor.bic)
        _sub(info, "ChrgBr", "SLEV")
        other = _path(info, "CdtrSchmeId/Id/PrvtId/Othr/Id", str(creditor.creditor_id)).getparent()
        _path(other, "SchmeNm/Prtry", "SEPA")
        for t in batch:
            tx = _sub(info, "DrctDbtTxInf")
            _path(tx, "PmtId/EndToEndId", t.end_to_end_id)
            _sub(tx, "InstdAmt", amount_text(t.amount), Ccy=t.currency)
            mandate = _path(tx, "DrctDbtTx/MndtRltdInf/MndtId", str(t.mandate_id)).getparent()
            _sub(mandate, "DtOfSgntr", t.mandate_date.isoformat() if t.mandate_date else "")
            _agent(tx, "DbtrAgt", t.bic)
            _path(tx, "Dbtr/Nm", t.holder)
            _path(tx, "DbtrAcct/Id/IBAN", t.iban)
            if t.remittance:
                _path(tx, "RmtInf/Ustrd", t.remittance)
    return root


def build_pain001(msg_id: str, created: datetime, transactions: list[Transaction], creditor: Creditor,
                  setting: SepaSetting) -> etree._Element:
    """A Customer Credit Transfer Initiation paid from the business entity's
    account: one PmtInf per execution date."""
    root = etree.Element(f"{{{MESSAGES[PAIN_001]}}}Document", nsmap={None: MESSAGES[PAIN_001]})
    initiation = _sub(root, "CstmrCdtTrfInitn")
    _group_header(initiation, msg_id, created, transactions, creditor)
    ordered = sorted(transactions, key=lambda t: t.when)
    for number, (when, group) in enumerate(groupby(ordered, key=lambda t: t.when), start=1):
        batch = list(group)
        info = _sub(initiation, "PmtInf")
        _sub(info, "PmtInfId", f"{msg_id}-{number}")
        _sub(info, "PmtMtd", "TRF")
        _sub(info, "BtchBookg", "true" if setting.batch_booking else "false")
        _sub(info, "NbOfTxs", str(len(batch)))
        _sub(info, "CtrlSum", amount_text(sum((t.amount for t in batch), Decimal(0))))
        _path(info, "PmtTpInf/SvcLvl/Cd", "SEPA")
        _sub(info, "ReqdExctnDt", when.isoformat())
        _path(info, "Dbtr/Nm", creditor.name)
        _path(info, "DbtrAcct/Id/IBAN", creditor.iban)
        _agent(info, "DbtrAgt", creditor.bic)
        _sub(info, "ChrgBr", "SLEV")
        for t in batch:
            tx = _sub(info, "CdtTrfTxInf")
            _path(tx, "PmtId/EndToEndId", t.end_to_end_id)
            _sub(_sub(tx, "Amt"), "InstdAmt", amount_text(t.amount), Ccy=t.currency)
            if t.bic:
                _path(tx, "CdtrAgt/FinInstnId/BIC", t.bic)
            _path(tx, "Cdtr/Nm", t.holder)
            _path(tx, "CdtrAcct/Id/IBAN", t.iban)
            if t.remittance:
                _path(tx, "RmtInf/Ustrd", t.remittance)
    return root


def render(kind: str, msg_id: str, created: datetime, transactions: list[Transaction], creditor: Creditor,
           setting: SepaSetting) -> bytes:
    """The message of ``kind`` as bytes, validated against its XSD first
    (:class:`engine.exports.sepa_xml.SepaXmlError` when it is not valid)."""
    build = build_pain008 if kind == DEBIT else build_pain001
    root = build(msg_id, created, transactions, creditor, setting)
    validate(root, MESSAGE_OF[kind])
    return serialize(root)


# ---------------------------------------------------------------------------
# The exports


def export_sepa(
    conn: sa.Connection,
    ctx: Context,
    kind: str,
    *,
    business_entity: str,
    when: date | None = None,
    force: bool = False,
    created: datetime | None = None,
    setting_name: str | None = None,
    file_name: str | None = None,
    file_url: str | None = None,
    apply: bool = True,
) -> SepaReport:
    """Build the SEPA message of ``kind`` for ``business_entity`` in
    ``conn``'s transaction and return the report with the validated file
    content (``report.data``; None when there is nothing to pay).

    ``when`` is the collection date (debit) or execution date (credits);
    default: the due date, but not before the export date (debit), or the
    export date (credits). ``created`` is the message's creation time
    (default now), which also is the export date. With ``apply`` (the
    default) the export is recorded in the same transaction: export history
    and TimesExported of exported invoices, SepaPaymentError of rejected and
    exported invoices, locks and reverse balances of exported balances.
    ``apply=False`` is the dry run: nothing is written."""
    if kind not in KINDS:
        raise SepaExportError(f"unknown SEPA export {kind!r} (one of {', '.join(KINDS)})")
    if kind == BALANCES and force:
        raise SepaExportError("exported balances are locked and never exported again; --force does not apply")
    created = (created or datetime.now()).replace(microsecond=0)
    creditor = creditor_for(ctx, business_entity, kind)
    setting = setting_for(ctx, kind, setting_name)
    report = SepaReport(kind=kind, message=MESSAGE_OF[kind], setting=setting, creditor=creditor, created=created)
    tables = _tables(ctx)
    today = created.date()
    if when is not None and when < today:
        raise SepaExportError(f"the {'collection' if kind == DEBIT else 'execution'} date {when} is before "
                              f"the export date {today}")
    if apply:
        _lock_candidates(conn, ctx, tables, kind, business_entity)
    if kind == BALANCES:
        _select_balances(conn, ctx, tables, report, when or today)
    else:
        used = _used_mandates(conn, tables) if kind == DEBIT else set()
        horizon = (when or today) + timedelta(days=DUE_WINDOW_DAYS)
        query = _invoice_query(ctx, tables, entity=business_entity, debit=kind == DEBIT, setting=setting)
        for row in conn.execute(query).mappings():
            forced = bool(row["_locked"])
            if forced and not force:
                report.already_exported.append(str(row["name"]))
                continue
            due: date | None = row["_due"]
            if kind == DEBIT:
                if due is not None and due > horizon:
                    report.not_due.append(str(row["name"]))
                    continue
                result = _debit(row, when=when or max(due or today, today), used=used, setting=setting,
                                forced=forced)
            else:
                result = _credit(row, when=when or today, setting=setting, forced=forced)
            if isinstance(result, str):
                report.rejected.append(Rejected(int(row["id"]), str(row["name"]), row.get("accountname"),
                                                Decimal(row["balance"]), result))
            else:
                report.transactions.append(result)
    if report.transactions:
        report.message_id = message_id(kind, created, report.transactions)
        report.data = render(kind, report.message_id, created, report.transactions, creditor, setting)
    if apply:
        stamp = created.astimezone(timezone.utc) if created.tzinfo else created.astimezone().astimezone(timezone.utc)
        if kind == BALANCES:
            _record_balances(conn, ctx, report, stamp)
        else:
            _record_invoices(conn, ctx, tables, report, stamp, file_name=file_name, file_url=file_url)
        report.applied = True
    return report


def _record_invoices(conn: sa.Connection, ctx: Context, tables: Mapping[str, sa.Table], report: SepaReport,
                     stamp: datetime, *, file_name: str | None, file_url: str | None) -> None:
    """Export history, TimesExported and SepaPaymentError, set-based."""
    model = ctx.model
    invoice_obj = model.require("Invoice")
    error_field = invoice_obj.field(ERROR_FIELD)
    if error_field is not None and report.rejected:
        limit = error_field.length or 255
        update_by_id(conn, invoice_obj, [ERROR_FIELD],
                     [(r.record_id, (_cut(r.reason, limit),)) for r in report.rejected], timestamp=stamp)
    if not report.transactions:
        return
    history = [
        {
            "invoice": t.record_id,
            "exportedat": stamp,
            "exportsetting": report.setting.name,
            "exportformat": report.message,
            "filename": file_name,
            "fileurl": file_url,
            "amount": t.amount,
            "balancecreated": False,
            "locked": report.setting.one_time_export,
            "forcedexport": t.forced,
            "nextpaymentduedate": t.due_date,
            "nextpaymentduedatechanged": False,
        }
        for t in report.transactions
    ]
    RowWriter(conn, model.require("InvoiceExportHistory")).insert(history, timestamp=stamp)
    report.history_records = len(history)
    invoice = tables["Invoice"]
    ids = [t.record_id for t in report.transactions]
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        values: dict[str, Any] = {
            "timesexported": sa.func.coalesce(invoice.c.timesexported, 0) + 1,
            "lastmodifieddate": stamp,
        }
        if error_field is not None:
            values[error_field.key] = None
        conn.execute(sa.update(invoice).where(invoice.c.id.in_(chunk)).values(values))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# Free balances


def _select_balances(conn: sa.Connection, ctx: Context, tables: Mapping[str, sa.Table], report: SepaReport,
                     when: date) -> None:
    """The free Payment/Prepayment credits of the entity's accounts that are
    not locked, not drafts and not from Cash Management."""
    model = ctx.model
    balance, account = tables["Balance"], tables["Account"]
    account_obj = model.require("Account")

    def column(name: str) -> sa.ColumnElement:
        fdef = account_obj.field(name)
        if fdef is None or not fdef.is_stored:
            return sa.literal(None).label(f"_{name.lower()}")
        return account.c[fdef.key].label(f"_{name.lower()}")

    entity_column = account_obj.field(ACCOUNT_ENTITY)
    query = (
        sa.select(balance, account.c.name.label("_account_name"), column(ACCOUNT_IBAN), column(ACCOUNT_BIC),
                  column(ACCOUNT_OWNER))
        .join(account, account.c.id == balance.c.account)
        .where(balance.c.invoice.is_(None), balance.c.type.in_(BALANCE_TYPES), balance.c.amount < 0,
               balance.c.lockedreason.is_(None), balance.c.draft.is_not(sa.true()),
               sa.or_(balance.c.origin.is_(None), balance.c.origin != CASH_MANAGEMENT_ORIGIN))
        .order_by(balance.c.name, balance.c.id)
    )
    entity = report.creditor.entity
    if entity_column is not None and entity_column.is_stored:
        match = account.c[entity_column.key] == entity
        if _default_entity(ctx) == entity:
            match = sa.or_(match, account.c[entity_column.key].is_(None), account.c[entity_column.key] == "")
        query = query.where(match)
    elif _default_entity(ctx) != entity:
        return  # accounts name no entity: their balances belong to the default entity
    for row in conn.execute(query).mappings():
        problems: list[str] = []
        iban, problem = _iban(row["_" + ACCOUNT_IBAN.lower()], f"account IBAN ({ACCOUNT_IBAN})")
        if problem:
            problems.append(problem)
        bic, problem = _bic(row["_" + ACCOUNT_BIC.lower()], f"account BIC ({ACCOUNT_BIC})")
        if problem:
            problems.append(problem)
        holder = sepa_text(row["_" + ACCOUNT_OWNER.lower()] or row["_account_name"], NAME_LENGTH)
        if not holder:
            problems.append("account holder is empty")
        currency = row.get("currencyisocode") or CURRENCY
        if currency != CURRENCY:
            problems.append(f"currency {currency}: SEPA payments are in EUR only")
        if problems:
            report.rejected.append(Rejected(int(row["id"]), str(row["name"]), row["_account_name"],
                                            Decimal(row["amount"]), "; ".join(problems)))
            continue
        assert iban is not None
        report.transactions.append(Transaction(
            record_id=int(row["id"]), record_name=str(row["name"]), end_to_end_id=str(row["name"]),
            account=int(row["account"]), account_name=row["_account_name"],
            amount=(-Decimal(row["amount"])).quantize(Decimal("0.01")), currency=CURRENCY, when=when,
            iban=iban, bic=bic, holder=holder, remittance=_reference(report.setting.reference_text, row),
        ))


def _record_balances(conn: sa.Connection, ctx: Context, report: SepaReport, stamp: datetime) -> None:
    """Lock the exported balances and add their locked Payout reverse balances."""
    model = ctx.model
    if not report.transactions:
        return
    balance_obj = model.require("Balance")
    update_by_id(conn, balance_obj, ["LockedReason"],
                 [(t.record_id, (LOCKED_REASON,)) for t in report.transactions], timestamp=stamp)
    reverse = [
        {
            "account": t.account,
            "amount": t.amount,
            "type": PAYOUT_TYPE,
            "date": t.when,
            "currencyisocode": t.currency,
            "reference": t.record_name,
            "transactionno": report.message_id,
            "paymentmethod": "SEPA",
            "bankaccountid": t.iban,
            "lockedreason": LOCKED_REASON,
            "confighash": ctx.config_hash,
        }
        for t in report.transactions
    ]
    RowWriter(conn, balance_obj).insert(reverse, timestamp=stamp)
    report.reverse_balances = len(reverse)


# ---------------------------------------------------------------------------
# File and transaction


def run_export(engine: sa.Engine, ctx: Context, kind: str, out: Path | None, *, dry_run: bool = False,
               **options: Any) -> SepaReport:
    """:func:`export_sepa` in a transaction of its own, writing ``out``
    atomically: the validated content goes to ``<out>.part``, is fsynced,
    the transaction commits (history, locks, errors), then the file is
    renamed. An existing ``out`` is never overwritten (it may be the only
    copy of orders already recorded as exported). ``dry_run`` writes
    neither file nor database."""
    from engine.storage.db import transaction

    if dry_run:
        with transaction(engine, readonly=True) as conn:
            return export_sepa(conn, ctx, kind, apply=False, **options)
    if out is None:
        raise SepaExportError("no output file given")
    if out.exists():
        raise SepaExportError(f"{out} exists; an exported file is never overwritten (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    try:
        with transaction(engine) as conn:
            report = export_sepa(conn, ctx, kind, file_name=out.name, file_url=str(out), **options)
            if report.data is not None:
                with partial.open("xb") as handle:
                    handle.write(report.data)
                    handle.flush()
                    os.fsync(handle.fileno())
    except FileExistsError:
        raise SepaExportError(f"{partial} exists: another export may be running; remove it if not") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if report.data is not None:
        os.replace(partial, out)
    return report


__all__ = [
    "BALANCES", "CREDIT", "DEBIT", "KINDS", "Creditor", "Rejected", "SepaExportError", "SepaReport", "SepaSetting",
    "Transaction", "creditor_for", "export_sepa", "message_id", "render", "run_export", "setting_for",
]
