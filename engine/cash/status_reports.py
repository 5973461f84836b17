"""pain.002 payment status reports: the bank's answer to a SEPA file, read as
a "statement" whose lines are the rejected orders.

A direct debit rejected before settlement (``TxSts`` ``RJCT``, e.g. ``MD01``
no mandate, ``AC04`` account closed) moved no money: nothing is booked, but
the collection did not happen, so it must not count as a use of the mandate
(a rejected first collection is collected again as FRST) and the audit must
not count it as collected. Each rejected transaction becomes a line marked
``rejected`` (and as a return) with the original end-to-end id, amount and
reason; accepted transactions are not lines (their money arrives with the
statement). A rejection of a whole group or payment block without the
transactions listed cannot be attributed and is refused as an error.

Parsed namespace-agnostically (pain.002.001.03 up to .10) with the same safe
parser as camt (:mod:`.statements`).
"""

from __future__ import annotations

from datetime import date

from engine.storage.csvio import RecordError

from .statements import ParsedFile, Statement, StatementLine, _amount, _date, _text

REJECTED = ("RJCT",)


def read_pain002(root, result: ParsedFile) -> None:
    """The rejected transactions of a pain.002 document, into ``result``."""
    shown = result.file
    result.format = "pain.002"
    report = root.find("{*}CstmrPmtStsRpt")
    if report is None:
        result.errors.append(RecordError(shown, root.sourceline, None, "no CstmrPmtStsRpt in the document"))
        return
    msg_id = _text(report, "{*}GrpHdr/{*}MsgId")
    created = _text(report, "{*}GrpHdr/{*}CreDtTm")
    if msg_id is None:
        result.errors.append(RecordError(shown, report.sourceline, "GrpHdr/MsgId", "the report has no MsgId"))
        return
    day = _date((created or "")[:10] or None, report, "GrpHdr/CreDtTm", result)
    group_status = _text(report, "{*}OrgnlGrpInfAndSts/{*}GrpSts")
    blocks = report.findall("{*}OrgnlPmtInfAndSts")
    listed = [tx for block in blocks for tx in block.findall("{*}TxInfAndSts")]
    if group_status in REJECTED and not listed:
        result.errors.append(RecordError(shown, report.sourceline, "OrgnlGrpInfAndSts/GrpSts",
                                         "the whole file was rejected without its transactions; nothing was "
                                         "collected, and there is nothing to settle: correct and send it again"))
        return
    lines: list[StatementLine] = []
    for b, block in enumerate(blocks, 1):
        block_status = _text(block, "{*}PmtInfSts")
        transactions = block.findall("{*}TxInfAndSts")
        if block_status in REJECTED and not transactions:
            result.errors.append(RecordError(shown, block.sourceline, f"OrgnlPmtInfAndSts[{b}]/PmtInfSts",
                                             "a payment block was rejected without its transactions listed"))
        for t, tx in enumerate(transactions, 1):
            status = _text(tx, "{*}TxSts") or block_status or group_status
            if status not in REJECTED:
                continue
            where = f"OrgnlPmtInfAndSts[{b}]/TxInfAndSts[{t}]"
            e2e = _text(tx, "{*}OrgnlEndToEndId")
            amount_element = tx.find("{*}OrgnlTxRef/{*}Amt/{*}InstdAmt")
            if e2e is None or amount_element is None:
                result.errors.append(RecordError(shown, tx.sourceline, where,
                                                 "a rejected transaction needs OrgnlEndToEndId and OrgnlTxRef/Amt"))
                continue
            amount = _amount((amount_element.text or "").strip(), amount_element.sourceline, f"{where}/InstdAmt",
                             result)
            collected = _date(_text(tx, "{*}OrgnlTxRef/{*}ReqdColltnDt") or _text(
                tx, "{*}OrgnlTxRef/{*}ReqdColltnDt/{*}Dt"), tx, f"{where}/ReqdColltnDt", result, required=False)
            if amount is None:
                continue
            lines.append(StatementLine(
                position=len(lines) + 1, where=where, line=tx.sourceline,
                reference=_text(tx, "{*}StsId") or f"{msg_id}/{e2e}",
                booking_date=collected or day or date(1970, 1, 1), value_date=None, amount=amount, credit=False,
                currency=amount_element.get("Ccy") or "EUR",
                counterparty_name=_text(tx, "{*}OrgnlTxRef/{*}Dbtr/{*}Nm") or _text(
                    tx, "{*}OrgnlTxRef/{*}Dbtr/{*}Pty/{*}Nm"),
                counterparty_iban=_text(tx, "{*}OrgnlTxRef/{*}DbtrAcct/{*}Id/{*}IBAN"),
                end_to_end_id=e2e, mandate_reference=_text(tx, "{*}OrgnlTxRef/{*}MndtRltdInf/{*}MndtId"),
                is_return=True, rejected=True, return_reason=_text(tx, "{*}StsRsnInf/{*}Rsn/{*}Cd")))
    account = _text(report, ".//{*}OrgnlTxRef/{*}CdtrAcct/{*}Id/{*}IBAN") or "pain.002"
    result.statements.append(Statement("pain.002", msg_id, account, "EUR", day, None, None, tuple(lines)))


__all__ = ["read_pain002"]
