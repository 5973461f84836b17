"""The ``metabill export`` commands as services: one function per command.

Each opens its own transaction, does the whole export, and returns a typed
result the CLI renders; a failure is an EngineError of this package
(:mod:`.errors`). Files go through :mod:`.output`: staged, synced before the
commit that records the export, named after it, never overwritten (the
journal, which records nothing, replaces its file).

* :func:`export_journal` - ``export bookings``: the booking journal CSV;
* :func:`export_datev_file` - ``export datev``: the Buchungsstapel, its
  accounting documents and the export marks, recorded as an export batch so
  that a file lost between the commit and the rename is written again;
* :func:`recover_export_files` - ``export recover``: those files, written
  again without a new export;
* :func:`export_sepa_debit`, :func:`export_sepa_credit`,
  :func:`export_sepa_balances` - the SEPA files with their export history,
  or a dry run of them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Sequence, TextIO

import sqlalchemy as sa

from engine.domain.errors import Where
from engine.storage.context import Context
from engine.storage.db import transaction, unit_of_work

from .datev import DESTINATION, DatevParams, DatevReport, export_datev
from .errors import DatevExportError, JournalExportError, UnknownInvoiceNumber
from .journal import journal_rows, write_journal_csv
from .output import (
    PublishedBatch,
    output_file,
    publish_batch,
    publish_pending_batches,
    record_batch,
)
from .sepa import BALANCES, CREDIT, DEBIT, SepaReport, run_export

# ---------------------------------------------------------------------------
# Booking journal


@dataclass(frozen=True)
class JournalExport:
    """The journal written: its row count, and its file (None for a stream)."""

    rows: int
    path: Path | None


def invoice_ids(conn: sa.Connection, ctx: Context, numbers: Sequence[str]) -> list[int]:
    """The ids of the invoices numbered ``numbers``; :class:`UnknownInvoiceNumber`
    naming every number that matches no invoice."""
    invoices = ctx.table("Invoice")
    found = dict(conn.execute(
        sa.select(invoices.c.name, invoices.c.id).where(invoices.c.name.in_(sorted(set(numbers))))
    ).all())
    unknown = [number for number in numbers if number not in found]
    if unknown:
        raise UnknownInvoiceNumber(f"no invoice numbered {', '.join(repr(n) for n in unknown)}",
                                   where=Where(object="Invoice", record=", ".join(unknown)))
    return list(found.values())


def export_journal(engine: sa.Engine, ctx: Context, out: Path | TextIO, *, invoice_numbers: Sequence[str] = (),
                   only_unexported: bool = False) -> JournalExport:
    """Write the booking journal (all booking details, or those of
    ``invoice_numbers``, optionally only the unexported ones) to the file
    ``out`` (replaced when it exists) or to the text stream ``out``, from one
    consistent snapshot."""
    with transaction(engine, readonly=True) as conn:
        ids = invoice_ids(conn, ctx, invoice_numbers) if invoice_numbers else None
        rows = journal_rows(conn, ctx, invoice_ids=ids, only_unexported=only_unexported)
        if not isinstance(out, Path):
            return JournalExport(write_journal_csv(rows, out), None)
        with output_file(out, error=JournalExportError, overwrite=True, binary=False) as staged:
            count = write_journal_csv(rows, staged.handle)
            staged.publish()
    return JournalExport(count, out)


# ---------------------------------------------------------------------------
# DATEV


@dataclass(frozen=True)
class DatevExport:
    """The DATEV export: its report and its file. ``written`` is False when
    no detail was exported; then no file exists. ``recovered`` lists the
    files of earlier exports that were written again first (their process
    died between the commit and the rename)."""

    report: DatevReport
    path: Path
    written: bool
    recovered: tuple[PublishedBatch, ...] = ()


def default_datev_path(created: datetime) -> Path:
    """``EXTF_Buchungsstapel_<yyyymmdd_HHMMSS>.csv`` in the working folder."""
    return Path(f"EXTF_Buchungsstapel_{created:%Y%m%d_%H%M%S}.csv")


def export_datev_file(engine: sa.Engine, ctx: Context, out: Path | None, params: DatevParams, *,
                      force: bool = False, created: datetime | None = None) -> DatevExport:
    """Export the booking details of ``params`` to the EXTF file ``out``
    (default :func:`default_datev_path`), create their accounting documents
    and mark them exported, in one transaction. Raises
    :class:`DatevExportError` (an existing ``out`` is never overwritten).

    No kill point loses or repeats an exported detail: the file is complete
    and synced in ``<out>.part`` before the commit, and the same transaction
    records it as an export batch (:func:`.output.record_batch`, content and
    hash); it gets its name after the commit. Files of earlier exports that
    never got theirs are published first (:func:`recover_export_files`). The
    file is written only when details were exported."""
    recovered = tuple(publish_pending_batches(engine, DESTINATION))
    created = created or datetime.now()
    out = out if out is not None else default_datev_path(created)
    with output_file(out, error=DatevExportError) as staged:
        batch_id = None
        with unit_of_work(engine) as conn:
            body = io.BytesIO()
            report = export_datev(conn, ctx, body, params, force=force, created=created)
            if report.exported:
                content = body.getvalue()
                batch_id = record_batch(conn, DESTINATION, out, content, report.exported)
                staged.handle.write(content)
                staged.sync()
        if batch_id is not None:
            publish_batch(engine, staged, batch_id)
    return DatevExport(report, out, written=batch_id is not None, recovered=recovered)


def recover_export_files(engine: sa.Engine, ctx: Context) -> list[PublishedBatch]:
    """``export recover``: write the file of every committed export whose
    process died before the file got its name (from the export batch the
    export recorded), and record the files found intact. Returns the files
    written. ``ctx`` is the command's context (unused: batches are the
    engine's own table)."""
    del ctx
    return publish_pending_batches(engine)


# ---------------------------------------------------------------------------
# SEPA


def export_sepa_debit(engine: sa.Engine, ctx: Context, out: Path | None, *, business_entity: str,
                      collection_date: date | None = None, setting_name: str | None = None,
                      created: datetime | None = None, force: bool = False, dry_run: bool = False) -> SepaReport:
    """``export sepa-debit``: direct debits (pain.008.001.08; .02 with a Legacy setting) of the entity's
    open SEPA invoices due within the window, recorded in the export history;
    ``report.file`` is the file written (None: nothing to collect, or a dry
    run)."""
    return run_export(engine, ctx, DEBIT, out, dry_run=dry_run, business_entity=business_entity,
                      when=collection_date, force=force, created=created, setting_name=setting_name)


def export_sepa_credit(engine: sa.Engine, ctx: Context, out: Path | None, *, business_entity: str,
                       execution_date: date | None = None, setting_name: str | None = None,
                       created: datetime | None = None, force: bool = False, dry_run: bool = False) -> SepaReport:
    """``export sepa-credit``: credit transfers (pain.001.001.09; .03 with a Legacy setting) paying out
    the negative open balance of the entity's SEPA invoices and credits."""
    return run_export(engine, ctx, CREDIT, out, dry_run=dry_run, business_entity=business_entity,
                      when=execution_date, force=force, created=created, setting_name=setting_name)


def export_sepa_balances(engine: sa.Engine, ctx: Context, out: Path | None, *, business_entity: str,
                         execution_date: date | None = None, setting_name: str | None = None,
                         created: datetime | None = None, dry_run: bool = False) -> SepaReport:
    """``export sepa-balances``: credit transfers (pain.001.001.09; .03 with a Legacy setting) paying
    out free Payment and Prepayment balances, each locked with a locked
    Payout reverse balance (never exported twice, so there is no force)."""
    return run_export(engine, ctx, BALANCES, out, dry_run=dry_run, business_entity=business_entity,
                      when=execution_date, created=created, setting_name=setting_name)


__all__ = [
    "DatevExport", "JournalExport", "PublishedBatch", "default_datev_path", "export_datev_file", "export_journal",
    "recover_export_files",
    "export_sepa_balances", "export_sepa_credit", "export_sepa_debit", "invoice_ids",
]
