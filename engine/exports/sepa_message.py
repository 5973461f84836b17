"""The ISO 20022 messages of the SEPA exports, built and validated.

:func:`render` builds a pain.008.001.02 Customer Direct Debit Initiation
(:func:`build_pain008`) or a pain.001.001.03 Customer Credit Transfer
Initiation (:func:`build_pain001`) from the orders, validates it against the
vendored official XSD and returns its bytes; a message that is not valid is
never returned (:class:`~engine.exports.errors.SepaXmlError`).

The content is deterministic: the message id and creation time come from the
``created`` timestamp and a digest of the orders (:func:`message_id`), and
payment information blocks follow the order dates (and sequence types).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from itertools import groupby
from typing import Iterable

from lxml import etree

from .errors import SepaXmlError
from .sepa_orders import (
    BALANCES,
    CREDIT,
    DEBIT,
    ID_LENGTH,
    MESSAGE_OF,
    SEQUENCE_TYPES,
    Creditor,
    SepaSetting,
    Transaction,
)
from .sepa_versions import message_for, upgrade
from .sepa_xml import (
    MESSAGES,
    PAIN_001,
    PAIN_008,
    amount_text,
    is_sepa_text,
    serialize,
    validate,
)

#: The kind's code inside message ids.
MESSAGE_CODES = {DEBIT: "DD", CREDIT: "CT", BALANCES: "BP"}


def message_id(kind: str, created: datetime, transactions: Iterable[Transaction]) -> str:
    """``MB<DD|CT|BP><yyyymmddHHMMSS><8 hex digits>`` (26 characters): the
    creation time plus a digest of the orders, so the same input gives the
    same id and different files of one second differ."""
    digest = hashlib.sha256()
    for t in transactions:
        digest.update(f"{t.end_to_end_id}|{t.amount}|{t.when}|{t.iban}|{t.sequence_type}\n".encode())
    return f"MB{MESSAGE_CODES[kind]}{created:%Y%m%d%H%M%S}{digest.hexdigest()[:8]}"


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


def check_identifiers(msg_id: str, transactions: Iterable[Transaction]) -> None:
    """Every identifier of the message follows the SEPA rules
    (:func:`~engine.exports.sepa_xml.is_sepa_text`: basic characters, no
    leading or trailing ``/``, no ``//``), else :class:`SepaXmlError` naming
    the order: the selection rejects such orders one by one, and this is
    the last line before a file, so a message breaking the rules is never
    written (the XSD checks only lengths)."""
    problems = [] if is_sepa_text(msg_id, ID_LENGTH) else [f"message id {msg_id!r}"]
    for t in transactions:
        if not is_sepa_text(str(t.end_to_end_id), ID_LENGTH):
            problems.append(f"EndToEndId {t.end_to_end_id!r} of {t.record_name}")
        if t.mandate_id is not None and not is_sepa_text(str(t.mandate_id), ID_LENGTH):
            problems.append(f"mandate reference {t.mandate_id!r} of {t.record_name}")
    if problems:
        raise SepaXmlError("not a valid SEPA identifier (at most 35 of A-Z a-z 0-9 / - ? : ( ) . , ' + and space, "
                           "no leading or trailing '/', no '//'): " + "; ".join(problems))


def render(kind: str, msg_id: str, created: datetime, transactions: list[Transaction], creditor: Creditor,
           setting: SepaSetting) -> bytes:
    """The message of ``kind`` as bytes, validated against its XSD first
    (:class:`engine.exports.sepa_xml.SepaXmlError` when it is not valid)."""
    check_identifiers(msg_id, transactions)
    build = build_pain008 if kind == DEBIT else build_pain001
    root = build(msg_id, created, transactions, creditor, setting)
    message = message_for(kind, setting.version)
    if message != MESSAGE_OF[kind]:
        root = upgrade(root, message)  # the current versions (ExportSetting.SepaMessageVersion)
    validate(root, message)
    return serialize(root)
