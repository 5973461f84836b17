"""The InvoiceRun record and the run's locks on PostgreSQL.

A run of a period and a set of filters has one InvoiceRun record: running
the same period and filters again joins it (and bills only what is left), so
two runs started at the same moment, on several workers or machines, find
one record. The record is closed with the run's totals and a short log.

PostgreSQL's advisory locks serialize what must not happen twice at once:
opening the run record of a (period, filters) and billing one account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Sequence

import sqlalchemy as sa

from engine.domain.errors import EngineError, Where
from engine.storage.bulk import RowWriter
from engine.storage.context import Context

from .report import RunReport

#: Failures per filter written to the run record's log.
LOGGED_FAILURES = 50
#: The longest log the InvoiceRun record keeps.
LOG_LENGTH = 131072


class RunNotFound(EngineError, LookupError):
    """No invoice run has the given name or id."""

    code = "R210"


def find_run(conn: sa.Connection, ctx: Context, name_or_id: str | int) -> int:
    """The id of the invoice run named ``name_or_id`` (``IR-000001``) or with
    that id; :class:`RunNotFound` when there is none."""
    text = str(name_or_id)
    table = ctx.table("InvoiceRun")
    condition = table.c.name == text
    if text.isdigit():
        condition = sa.or_(condition, table.c.id == int(text))
    row = conn.execute(sa.select(table.c.id).where(condition)).first()
    if row is None:
        raise RunNotFound(f"no invoice run '{text}'", where=Where(object="InvoiceRun", record=text))
    return row.id


def lock_class(kind: str) -> sa.ColumnElement[int]:
    """The first key of PostgreSQL's two-key advisory locks of ``kind``
    ("run": run records per period and filters, "account": accounts being
    billed, see :meth:`engine.billing.filterrun.FilterRun.claim_accounts`),
    for the current schema.

    Advisory locks belong to the whole database, and several metabill
    databases may live in one as schemas (tenants, the test suite's private
    schemas): without the schema in the key, a run in one schema would wait
    for, or skip, account 1 because another schema is billing its account 1.
    A hash collision between schemas costs a wait, never correctness."""
    return sa.func.hashtext(sa.func.concat(sa.func.current_schema(), f":metabill:{kind}"))


@dataclass(frozen=True)
class OpenedRun:
    """The InvoiceRun record a run writes into."""

    run_id: int
    name: str
    joined_existing: bool
    invoice_date: date | None


def filters_key(filter_names: Sequence[str]) -> str:
    """The run record's GenericFilters: the filter names, sorted, joined by ';'."""
    return ";".join(sorted(filter_names))


def open_run_record(conn: sa.Connection, ctx: Context, period_start: date, period_end: date,
                    invoice_date: date | None, filter_names: Sequence[str]) -> OpenedRun:
    """Find the run with the same period and filters (and join it, marked
    Running again) or create one."""
    table = ctx.table("InvoiceRun")
    key = filters_key(filter_names)
    if conn.dialect.name == "postgresql":
        # Two runs of the same period and filters started at the same moment
        # (several machines, several workers) must find one run record, not
        # create one each: the check-then-insert below runs under a lock per
        # (period, filters), held until this transaction commits. SQLite's
        # BEGIN IMMEDIATE already serializes it.
        lock_key = f"{period_start}|{period_end}|{key}"
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_class("run"), sa.func.hashtext(lock_key))))
    row = conn.execute(
        sa.select(table.c.id, table.c.name, table.c.invoicedate)
        .where(table.c.periodstartdate == period_start)
        .where(table.c.periodenddate == period_end)
        .where(table.c.genericfilters == key)
        .order_by(table.c.id)
        .limit(1)
    ).first()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if row is not None:
        conn.execute(
            sa.update(table).where(table.c.id == row.id).values(status="Running", startedat=now, lastmodifieddate=now)
        )
        return OpenedRun(row.id, row.name, True, row.invoicedate)
    record = {
        "periodstartdate": period_start,
        "periodenddate": period_end,
        "invoicedate": invoice_date,
        "genericfilters": key,
        "status": "Running",
        "startedat": now,
        "confighash": ctx.config_hash,
    }
    RowWriter(conn, ctx.obj("InvoiceRun")).insert([record])
    return OpenedRun(record["id"], record["name"], False, invoice_date)


def close_run_record(conn: sa.Connection, ctx: Context, run_id: int, report: RunReport) -> None:
    """Mark the run Completed with its totals (counted from the invoices the
    run record holds, earlier joined runs included), its errors and a log."""
    table = ctx.table("InvoiceRun")
    invoice = ctx.table("Invoice")
    counts = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((invoice.c.grandtotal >= 0, 1), else_=0)),
        ).where(invoice.c.invoicerun == run_id)
    ).first()
    total = int(counts[0] or 0)
    positive = int(counts[1] or 0)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    conn.execute(
        sa.update(table)
        .where(table.c.id == run_id)
        .values(
            status="Completed",
            finishedat=now,
            lastmodifieddate=now,
            numinvoices=Decimal(total),
            numpositiveinvoices=Decimal(positive),
            numnegativeinvoices=Decimal(total - positive),
            errorcount=Decimal(report.failure_count),
            duration=Decimal(str(round(report.seconds, 2))),
            log=run_log(report)[:LOG_LENGTH],
        )
    )


def run_log(report: RunReport) -> str:
    """The run record's log: a line per filter, then its first failures."""
    lines = [
        f"{f.name}: {f.records_read} read, {f.invoices} invoices, {f.lines} lines, {len(f.failures)} errors"
        for f in report.filters
    ]
    for f in report.filters:
        for failure in f.failures[:LOGGED_FAILURES]:
            lines.append(f"  {failure.object_name} {failure.record_id}: {failure.message}")
    return "\n".join(lines)
