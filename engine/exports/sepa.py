"""SEPA exports: direct debits (pain.008.001.02) and credit transfers
(pain.001.001.03) of one business entity, with the Invoice Export History.

Three exports (domain-spec §7.2-7.4, seed 002):

* :data:`DEBIT` - open invoices with a positive balance whose payment method
  is SEPA or Direct Debit: one direct debit per invoice over its open balance,
  or, for an invoice with a payment plan, over its installments that are
  due (domain-spec §4.9), collected under the invoice's mandate; the export
  history records the amount collected, the collected installments the
  export's date and file.
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

The parts: :mod:`.sepa_orders` (kinds, constants, report values),
:mod:`.sepa_parties` (creditor, export setting, bank data checks),
:mod:`.sepa_selection` (what is paid), :mod:`.sepa_message` (the XML) and
this module, which records an export and writes its file.
:func:`export_sepa` runs inside the caller's transaction and returns the
file content; :func:`run_export` owns the transaction and the file (staged,
synced before the commit, given its name after it). A dry run is the same
code in a unit of work that is rolled back, with the file staged in memory.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.booking.balances import BalanceError, create_balance, refresh_accounts
from engine.booking.write import load_accounts
from engine.domain.batching import chunks
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context
from engine.storage.db import unit_of_work
from engine.storage.files import StagedFile
from engine.storage.retry import DEFAULT_ATTEMPTS, backoff, is_retryable

from .errors import SepaExportError
from .output import (
    output_file,
    publish_batch,
    publish_pending_batches,
    record_batch,
    refuse_existing,
)
from .sepa_message import message_id, render
from .sepa_orders import (
    BALANCES,
    CREDIT,
    DEBIT,
    DUE_WINDOW_DAYS,
    ERROR_FIELD,
    KINDS,
    LOCKED_REASON,
    PAYOUT_TYPE,
    Creditor,
    Rejected,
    SepaReport,
    SepaSetting,
    Transaction,
)
from .sepa_parties import creditor_for, setting_for

#: The Rule (provenance) of the reverse balances of a balance export.
RULE_PAYOUT = "SEPA balance export: pay-out"
from .sepa_selection import lock_candidates, select_orders
from .sepa_versions import message_for

#: The export batches of SEPA files (engine.exports.output).
BATCH_DESTINATION = "SEPA"

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
) -> SepaReport:
    """Build the SEPA message of ``kind`` for ``business_entity`` in
    ``conn``'s transaction, record the export there, and return the report
    with the validated file content (``report.data``; None when there is
    nothing to pay).

    ``when`` is the collection date (debit) or execution date (credits);
    default: the due date, but not before the export date (debit), or the
    export date (credits). ``created`` is the message's creation time
    (default now), which also is the export date. Recorded: export history
    and TimesExported of exported invoices, SepaPaymentError of rejected and
    exported invoices, locks and reverse balances of exported balances. A dry
    run is this function in a transaction that is rolled back
    (:func:`run_export`)."""
    if kind not in KINDS:
        raise SepaExportError(f"unknown SEPA export {kind!r} (one of {', '.join(KINDS)})")
    if kind == BALANCES and force:
        raise SepaExportError("exported balances are locked and never exported again; --force does not apply")
    created = (created or datetime.now()).replace(microsecond=0)
    creditor = creditor_for(ctx, business_entity, kind)
    setting = setting_for(ctx, kind, setting_name)
    report = SepaReport(kind=kind, message=message_for(kind, setting.version), setting=setting, creditor=creditor, created=created)
    today = created.date()
    if when is not None and when < today:
        raise SepaExportError(f"the {'collection' if kind == DEBIT else 'execution'} date {when} is before "
                              f"the export date {today}")
    lock_candidates(conn, ctx, kind, business_entity)
    select_orders(conn, ctx, report, when=when, today=today, force=force)
    if report.transactions:
        report.message_id = message_id(kind, created, report.transactions)
        report.data = render(kind, report.message_id, created, report.transactions, creditor, setting)
    stamp = created.astimezone(timezone.utc) if created.tzinfo else created.astimezone().astimezone(timezone.utc)
    if kind == BALANCES:
        _record_balances(conn, ctx, report, stamp)
    else:
        _record_invoices(conn, ctx, report, stamp, file_name=file_name, file_url=file_url)
    return report


def _record_invoices(conn: sa.Connection, ctx: Context, report: SepaReport, stamp: datetime, *,
                     file_name: str | None, file_url: str | None) -> None:
    """Export history, TimesExported and SepaPaymentError, set-based."""
    invoice_obj = ctx.obj("Invoice")
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
    RowWriter(conn, ctx.obj("InvoiceExportHistory")).insert(history, timestamp=stamp)
    report.history_records = len(history)
    collected = [(installment, (stamp.date(), file_name)) for t in report.transactions for installment in t.installments]
    if collected:  # the installments a direct debit collects carry its date and file
        update_by_id(conn, ctx.obj("Installment"), ["ExportDate", "ExportFile"], collected, timestamp=stamp)
    invoice = ctx.table("Invoice")
    for chunk in chunks([t.record_id for t in report.transactions]):
        values: dict[str, Any] = {
            "timesexported": sa.func.coalesce(invoice.c.timesexported, 0) + 1,
            "lastmodifieddate": stamp,
        }
        if error_field is not None:
            values[error_field.key] = None
        conn.execute(sa.update(invoice).where(invoice.c.id.in_(chunk)).values(values))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record_balances(conn: sa.Connection, ctx: Context, report: SepaReport, stamp: datetime) -> None:
    """Lock the exported balances and add their locked Payout reverse
    balances, booked like every payment-type balance (Payout: the debtor is
    debited, the bank credited, through the collective account of type
    Payout) when payment bookkeeping is on, so that the journal and DATEV
    show the money paid out; then Account.Balance follows."""
    if not report.transactions:
        return
    balance_obj = ctx.obj("Balance")
    update_by_id(conn, balance_obj, ["LockedReason"],
                 [(t.record_id, (LOCKED_REASON,)) for t in report.transactions], timestamp=stamp)
    accounts = load_accounts(conn, ctx, {t.account for t in report.transactions}, stamp.date())
    run = f"{report.kind}:{report.message_id}"
    for t in report.transactions:
        try:
            create_balance(conn, ctx, {
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
            }, invoice=None, rule=RULE_PAYOUT, run=run, account=accounts.get(t.account))
        except BalanceError as error:
            raise SepaExportError(f"balance {t.record_name}: the pay-out cannot be booked: {error}",
                                  where=error.where, hint=error.hint or "add a collective account of type Payout"
                                  ) from None
    refresh_accounts(conn, ctx, {t.account for t in report.transactions})
    report.reverse_balances = len(report.transactions)


# ---------------------------------------------------------------------------
# File and transaction


def run_export(engine: sa.Engine, ctx: Context, kind: str, out: Path | None, *, dry_run: bool = False,
               **options: Any) -> SepaReport:
    """:func:`export_sepa` in a unit of work of its own, writing ``out``: the
    validated content is staged (``<out>.part``) and synced, the transaction
    commits (history, locks, errors), then the file gets its name. An
    existing ``out`` is never overwritten (it may be the only copy of orders
    already recorded as exported). ``dry_run`` runs the same code, rolls the
    transaction back and stages the file in memory: it writes neither file
    nor database (and needs no ``out``). ``options`` are those of
    :func:`export_sepa`. When PostgreSQL aborts the transaction for a lost
    race (a concurrent export, payment or cancellation of the same rows), the
    staged file is dropped and the whole export runs again
    (:data:`engine.storage.retry.RETRYABLE_SQLSTATES`)."""
    if out is None and not dry_run:
        raise SepaExportError("no output file given")
    if out is not None:
        refuse_existing(out, SepaExportError)
    names = {"file_name": out.name, "file_url": str(out)} if out is not None else {}
    attempt = 0
    while True:
        attempt += 1
        try:
            report = _export_once(engine, ctx, kind, out, dry_run, names, options)
        except sa.exc.DBAPIError as error:
            if not is_retryable(error) or attempt >= DEFAULT_ATTEMPTS:
                raise
            time.sleep(backoff(attempt))
            continue
        report.dry_run = dry_run
        return report


def _export_once(engine: sa.Engine, ctx: Context, kind: str, out: Path | None, dry_run: bool,
                 names: dict[str, str], options: dict[str, Any]) -> SepaReport:
    """One attempt of :func:`run_export` (a failure removes the staged file).

    The file is recorded as an export batch (content and hash) in the same
    transaction as the export history, and published after the commit: a
    process that dies between the two leaves a batch that the next export, or
    ``metabill export recover``, writes out again; no exported order is lost."""
    if not dry_run:
        publish_pending_batches(engine, BATCH_DESTINATION)
    with ExitStack() as files:
        staged: StagedFile | None = None
        batch_id: int | None = None
        with unit_of_work(engine, dry_run=dry_run) as conn:
            report = export_sepa(conn, ctx, kind, **names, **options)
            if report.data is not None and out is not None:
                staged = files.enter_context(output_file(out, error=SepaExportError, dry_run=dry_run))
                staged.handle.write(report.data)
                staged.sync()
                if not dry_run:
                    batch_id = record_batch(conn, BATCH_DESTINATION, out, report.data, len(report.transactions))
        if staged is not None:
            if batch_id is not None:
                publish_batch(engine, staged, batch_id)
            else:
                staged.publish()
            report.file = None if dry_run else out
    return report


__all__ = [
    "BALANCES", "CREDIT", "DEBIT", "DUE_WINDOW_DAYS", "KINDS", "Creditor", "Rejected", "SepaExportError",
    "SepaReport", "SepaSetting", "Transaction", "creditor_for", "export_sepa", "message_id", "render", "run_export",
    "setting_for",
]
