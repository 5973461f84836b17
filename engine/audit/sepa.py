"""SEPA exports against the balances and installments they collect.

Every SEPA export of invoices writes one export history record per order
(``InvoiceExportHistory``: amount, effective due date, file, forced or not)
and counts it in ``Invoice.TimesExported``; an export of free balances locks
each balance and adds its locked Payout reverse balance (Reference = the
balance's number, TransactionNo = the message id). So:

* ``TimesExported`` = the invoice's history records (A510);
* a direct debit never collects more than is due (A511): an invoice's direct
  debits together (forced re-exports repeat a collection and are left out)
  collect at most its grand total plus what the bank returned of them
  (``PaymentEntry.IsReturn`` lines assigned to the invoice, issue 18: a returned
  collection is collected again), and with a payment plan each direct debit
  collects at most the installments it marked as collected (Installment
  ExportFile = the debit's file; deposit installments, which stand for money
  already received, are never collected);
* each exported balance has exactly one Payout reverse balance, of at most
  its credit (less when other free balances of the account, a refund or a
  fee, had taken part of the credit before the export: sepa-balances pays
  no more than the account's free credit), and each such Payout one
  exported balance (A512);
* with ``--sepa FILE...``: each file's orders (EndToEndId, amount; an
  installment's ``<number>/<no.>`` stands for the invoice) are the history
  records of that file (matched by file name), or for a balance
  export the Payout reverse balances of its message id (A513, A514); a file
  that is no valid pain message or matches no recorded export is A515.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.domain.money import ZERO
from engine.exports.errors import SepaXmlError
from engine.exports.sepa_message import MESSAGE_CODES
from engine.exports.sepa_orders import BALANCE_TYPES, BALANCES, LOCKED_REASON, PAYOUT_TYPE
from engine.exports.sepa_xml import DEBIT_MESSAGES, read_message

from .base import AuditRun, merge, stream
from .findings import FileSummary, Finding, finding

Rows = Sequence[Mapping[str, Any]]


def check_times_exported(run: AuditRun) -> Iterator[Finding]:
    """A510."""
    invoices = run.table("Invoice")
    history = run.table("InvoiceExportHistory")
    count = sa.func.count(history.c.id)
    times = sa.func.coalesce(invoices.c.timesexported, 0)
    query = (sa.select(invoices.c.name, times.label("times"), count.label("n"))
             .select_from(invoices.outerjoin(history, history.c.invoice == invoices.c.id))
             .group_by(invoices.c.id, invoices.c.name, invoices.c.timesexported)
             .having(count != times).order_by(invoices.c.id))
    for row in stream(run.conn, query):
        yield finding("A510", "invoice", row["name"], "Times Exported differs from its export history records",
                      expected=row["n"], actual=int(row["times"]),
                      hint="an export history record was deleted or added by hand")
    run.report.count("export history records",
                     run.conn.execute(sa.select(sa.func.count()).select_from(history)).scalar_one())


def _collection_streams(run: AuditRun):
    invoices = run.table("Invoice")
    history = run.table("InvoiceExportHistory")
    installments = run.table("Installment")
    debited = sa.select(history.c.invoice).where(history.c.exportformat.in_(DEBIT_MESSAGES))
    entry = run.ctx.model.object("PaymentEntry")
    if entry is not None and entry.field("IsReturn") is not None:
        entries = run.table("PaymentEntry")
        returned = (sa.select(sa.func.coalesce(sa.func.sum(entries.c.debit), 0))
                    .where(entries.c.invoice == invoices.c.id, entries.c.isreturn.is_(True),
                           entries.c.status == "Assigned").scalar_subquery())
    else:
        returned = sa.literal(0)
    yield stream(run.conn, sa.select(invoices.c.id, invoices.c.name, invoices.c.grandtotal, returned.label("returned"))
                 .where(invoices.c.id.in_(debited)).order_by(invoices.c.id))
    yield stream(run.conn, sa.select(history.c.invoice.label("id"), history.c.amount, history.c.filename,
                                     history.c.nextpaymentduedate, history.c.forcedexport)
                 .where(history.c.exportformat.in_(DEBIT_MESSAGES))
                 .order_by(history.c.invoice, history.c.exportedat, history.c.id))
    marked = installments.c.exportfile if "exportfile" in installments.c else sa.null()
    yield stream(run.conn, sa.select(installments.c.invoice.label("id"), installments.c.amount,
                                     installments.c.isdeposit, marked.label("exportfile"))
                 .where(installments.c.invoice.in_(debited)).order_by(installments.c.invoice, installments.c.id))


def check_collections(run: AuditRun) -> Iterator[Finding]:
    """A511 per invoice collected by direct debit."""
    for _, (invoice, debits, plan) in merge(lambda r: r["id"], *_collection_streams(run)):
        if invoice:
            yield from judge_collections(invoice[0], debits, plan)


def judge_collections(invoice: Mapping[str, Any], debits: Rows, plan: Rows) -> Iterator[Finding]:
    """The findings of one invoice's direct debits (pure): ``debits`` its
    direct-debit history records in export order, ``plan`` its installments
    (``exportfile``: the file of the direct debit that collected it)."""
    name = invoice["name"]
    grand_total = Decimal(invoice["grandtotal"] or 0) + Decimal(invoice.get("returned") or 0)
    installments = [row for row in plan if not row["isdeposit"]]
    collected = ZERO
    for debit in debits:
        if debit["forcedexport"]:
            continue  # a forced re-export repeats a collection
        amount = Decimal(debit["amount"] or 0)
        collected += amount
        if installments:
            due = sum((Decimal(row["amount"]) for row in installments
                       if row["exportfile"] is not None and row["exportfile"] == debit["filename"]), ZERO)
            if amount > due:
                yield finding("A511", "invoice", name,
                              f"the direct debit of {debit['filename']} (due {debit['nextpaymentduedate']}) collects "
                              f"{amount}; the installments it collected amount to {due}",
                              expected=due, actual=amount,
                              hint="a direct debit of an installment plan collects the installments due, not the "
                                   "whole open amount (domain-spec §4.9)")
        if collected > grand_total:
            yield finding("A511", "invoice", name, f"its direct debits collect {collected} in all, more than its "
                          "grand total (plus returned collections)", expected=grand_total, actual=collected)
            return


def check_exported_balances(run: AuditRun) -> Iterator[Finding]:
    """A512: exported balances and their Payout reverse balances, pair by pair."""
    balances = run.table("Balance")
    payout = balances.alias("payout")
    exported = sa.and_(balances.c.lockedreason == LOCKED_REASON, balances.c.type.in_(BALANCE_TYPES))
    pairs = sa.and_(payout.c.reference == balances.c.name, payout.c.account == balances.c.account,
                    payout.c.type == PAYOUT_TYPE, payout.c.lockedreason == LOCKED_REASON)
    query = (sa.select(balances.c.id, balances.c.name, balances.c.amount, sa.func.count(payout.c.id).label("n"),
                       sa.func.sum(payout.c.amount).label("paid"))
             .select_from(balances.outerjoin(payout, pairs)).where(exported)
             .group_by(balances.c.id, balances.c.name, balances.c.amount).order_by(balances.c.id))
    for row in stream(run.conn, query):
        run.report.count("exported balances")
        credit, paid = -Decimal(row["amount"]), Decimal(row["paid"] or 0)
        if row["n"] != 1 or not ZERO < paid <= credit:
            yield finding("A512", "balance", row["name"], f"exported by SEPA with {row['n']} Payout reverse "
                          f"balance(s) of {paid} in all, where one of more than 0 and at most its credit "
                          f"{credit} belongs", expected=credit, actual=paid)
    orphan = balances.alias("exported")
    query = (sa.select(payout.c.name, payout.c.reference, payout.c.amount)
             .select_from(payout.outerjoin(orphan, sa.and_(orphan.c.name == payout.c.reference,
                                                           orphan.c.account == payout.c.account,
                                                           orphan.c.lockedreason == LOCKED_REASON,
                                                           orphan.c.type.in_(BALANCE_TYPES))))
             .where(payout.c.type == PAYOUT_TYPE, payout.c.lockedreason == LOCKED_REASON, orphan.c.id.is_(None))
             .order_by(payout.c.id))
    for row in stream(run.conn, query):
        yield finding("A512", "balance", row["name"], f"a Payout reverse balance of {row['amount']} for "
                      f"{row['reference']!r}, which is no exported balance of the account")


def _orders(tree) -> list[tuple[str, Decimal]]:
    """(EndToEndId, amount) of every order of a pain.008 or pain.001 message."""
    orders = []
    for tx in (*tree.iter("{*}DrctDbtTxInf"), *tree.iter("{*}CdtTrfTxInf")):
        end_to_end = tx.findtext("{*}PmtId/{*}EndToEndId") or ""
        amount = tx.findtext("{*}InstdAmt") or tx.findtext("{*}Amt/{*}InstdAmt") or "0"
        orders.append((end_to_end, Decimal(amount)))
    return orders


def reference_of(end_to_end_id: str, known: set[str]) -> str:
    """The invoice or balance number an order's EndToEndId stands for: the id
    itself, or for a direct debit of installments ``<number>/<installment
    no.>`` its number."""
    if end_to_end_id in known:
        return end_to_end_id
    number, _, installment = end_to_end_id.rpartition("/")
    return number if installment.isdigit() and number in known else end_to_end_id


def _recorded(run: AuditRun, path: Path, message: str, msg_id: str) -> tuple[str, Counter] | None:
    """What the database recorded for a file: (kind, Counter of (reference, amount))."""
    if msg_id[2:4] == MESSAGE_CODES[BALANCES]:
        balances = run.table("Balance")
        rows = run.conn.execute(sa.select(balances.c.reference, balances.c.amount)
                                .where(balances.c.type == PAYOUT_TYPE, balances.c.transactionno == msg_id)).all()
        kind = "SEPA balances"
    else:
        history = run.table("InvoiceExportHistory")
        invoices = run.table("Invoice")
        rows = run.conn.execute(sa.select(invoices.c.name, history.c.amount)
                                .select_from(history.join(invoices, invoices.c.id == history.c.invoice))
                                .where(history.c.filename == path.name, history.c.exportformat == message)).all()
        kind = "SEPA invoices"
    if not rows:
        return None
    return kind, Counter((str(reference), Decimal(amount)) for reference, amount in rows)


def check_sepa_files(run: AuditRun) -> Iterator[Finding]:
    """A513, A514, A515 for the files given (nothing without files)."""
    for path in run.sepa_files:
        try:
            message, tree = read_message(path.read_bytes())
        except SepaXmlError as error:
            yield finding("A515", "file", path, f"not a valid SEPA message: {error}")
            continue
        msg_id = tree.findtext(".//{*}GrpHdr/{*}MsgId") or ""
        recorded = _recorded(run, path, message, msg_id)
        if recorded is None:
            yield finding("A515", "file", path, f"{message} message {msg_id!r} matches no recorded export "
                          "(export history by file name, or Payout balances by message id)")
            continue
        kind, records = recorded
        known = {reference for reference, _ in records}
        orders = Counter((reference_of(end_to_end, known), amount) for end_to_end, amount in _orders(tree))
        run.report.count("SEPA orders", sum(orders.values()))
        run.report.files.append(FileSummary(str(path), kind, sum(orders.values()), sum((orders & records).values()),
                                            sum((amount * n for (_, amount), n in orders.items()), ZERO)))
        for (reference, amount), count in sorted((orders - records).items()):
            yield finding("A513", "file", path, f"{count} order(s) {reference} of {amount} are not recorded so",
                          expected=0, actual=count)
        for (reference, amount), count in sorted((records - orders).items()):
            yield finding("A514", "file", path, f"{count} recorded export(s) of {reference} of {amount} are not in "
                          "the file", expected=count, actual=0)
