"""No source record billed twice.

An invoice run claims each header record it bills (``_mb_claim``: source
table, record, transactional suffix -> invoice; the primary key refuses a
second claim) and writes the invoice back into the record's
``ON_Invoice<suffix>`` field, in the same transaction. A cancellation
releases both. So, in any committed state:

* claims and write-back agree, record by record (A231);
* a claim names an invoice that exists, is not cancelled and is not itself a
  cancellation (A232);
* a source record (a line's ``SourceObject``/``SourceRecordId``) is billed
  by at most one live invoice per suffix (A230): lines of cancelled invoices
  and of cancellations, and deduction lines of final invoices, do not bill.
"""

from __future__ import annotations

from typing import Iterator

import sqlalchemy as sa

from engine.billing.drafts import invoice_backrefs
from engine.storage.schema import CLAIM

from .base import AuditRun, stream
from .findings import Finding, finding

#: Invoices whose lines no longer bill their sources.
NOT_BILLING_STATUSES = ("Canceled",)
NOT_BILLING_TYPES = ("Cancelation",)
BACKREF_PREFIX = "on_invoice"
#: Source records looked at together with their invoices' suffixes.
CANDIDATE_CHUNK = 500


def _suffix(column: str) -> str:
    """``on_invoicesub__c`` -> ``sub`` (lower case, as column names are)."""
    return column[len(BACKREF_PREFIX):-len("__c")]


def check_claims(run: AuditRun) -> Iterator[Finding]:
    """A231 and A232."""
    conn = run.conn
    invoices = run.table("Invoice")
    run.report.count("billing claims", conn.execute(sa.select(sa.func.count()).select_from(CLAIM)).scalar_one())
    for table_name, column in invoice_backrefs(run.ctx):
        source = run.ctx.metadata.tables[table_name]
        backref = source.c[column]
        suffix = _suffix(column)
        same_claim = sa.and_(CLAIM.c.source_table == table_name, CLAIM.c.source_id == source.c.id,
                             sa.func.lower(CLAIM.c.suffix) == suffix)
        written = (sa.select(source.c.id, backref.label("invoice"), source.c.name)
                   .where(backref.is_not(None), ~sa.exists().where(same_claim, CLAIM.c.invoice_id == backref))
                   .order_by(source.c.id))
        for row in stream(conn, written):
            yield finding("A231", "source record", f"{table_name} {row['id']}",
                          f"{column} names invoice id {row['invoice']}, but no billing claim for that invoice exists",
                          expected=row["invoice"], actual=None)
        claimed = (sa.select(CLAIM.c.source_id, CLAIM.c.invoice_id, backref.label("written"))
                   .select_from(CLAIM.outerjoin(source, source.c.id == CLAIM.c.source_id))
                   .where(CLAIM.c.source_table == table_name, sa.func.lower(CLAIM.c.suffix) == suffix,
                          backref.is_distinct_from(CLAIM.c.invoice_id))
                   .order_by(CLAIM.c.source_id))
        for row in stream(conn, claimed):
            yield finding("A231", "source record", f"{table_name} {row['source_id']}",
                          f"claimed by invoice id {row['invoice_id']}, but {column} says otherwise",
                          expected=row["invoice_id"], actual=row["written"])
    wrong = (sa.select(CLAIM.c.source_table, CLAIM.c.source_id, CLAIM.c.suffix, CLAIM.c.invoice_id,
                       invoices.c.name, invoices.c.status, invoices.c.type)
             .select_from(CLAIM.outerjoin(invoices, invoices.c.id == CLAIM.c.invoice_id))
             .where(sa.or_(invoices.c.id.is_(None), invoices.c.status.in_(NOT_BILLING_STATUSES),
                           invoices.c.type.in_(NOT_BILLING_TYPES)))
             .order_by(CLAIM.c.source_table, CLAIM.c.source_id))
    for row in stream(conn, wrong):
        what = "a missing invoice" if row["name"] is None else f"{row['name']} ({row['status']} {row['type']})"
        yield finding("A232", "source record", f"{row['source_table']} {row['source_id']}",
                      f"its billing claim (suffix {row['suffix']!r}) names {what}",
                      hint="a cancellation releases its sources; run the billing again for them")


def check_billed_once(run: AuditRun) -> Iterator[Finding]:
    """A230: a source record on two live invoices of the same suffix.

    In two steps, so that no plan has to join every line with the claims:
    the database finds the records on more than one live invoice (whatever
    the suffix), then only those are looked at with the suffixes their
    invoices claimed with (the same record billed under two suffixes, by a
    sub and its final invoice, is right; an invoice that claims nothing, a
    partial credit, bills nothing)."""
    invoices = run.table("Invoice")
    lines = run.table("InvoiceLineItem")
    live = sa.and_(lines.c.sourcerecordid.is_not(None), lines.c.isdeduction.is_not(sa.true()),
                   invoices.c.status.not_in(NOT_BILLING_STATUSES), invoices.c.type.not_in(NOT_BILLING_TYPES))
    billing = lines.join(invoices, invoices.c.id == lines.c.invoice)
    keys = [lines.c.sourceobject, lines.c.sourcerecordid]
    candidates = (sa.select(*keys).select_from(billing).where(live).group_by(*keys)
                  .having(sa.func.count(sa.distinct(lines.c.invoice)) > 1).order_by(*keys))
    found = [(row["sourceobject"], row["sourcerecordid"]) for row in stream(run.conn, candidates)]
    for start in range(0, len(found), CANDIDATE_CHUNK):
        chunk = found[start:start + CANDIDATE_CHUNK]
        wanted = set(chunk)
        query = (sa.select(*keys, lines.c.invoice, invoices.c.name, CLAIM.c.suffix)
                 .select_from(billing.join(CLAIM, CLAIM.c.invoice_id == lines.c.invoice))
                 .where(live, lines.c.sourcerecordid.in_(sorted({record for _, record in chunk}))))
        billed: dict[tuple, dict[int, str]] = {}
        for row in run.conn.execute(query).mappings():
            key = (row["sourceobject"], row["sourcerecordid"])
            if key in wanted:
                billed.setdefault((*key, row["suffix"]), {})[row["invoice"]] = row["name"]
        for (source, record, suffix), names in sorted(billed.items()):
            if len(names) > 1:
                shown = sorted(names.values())
                yield finding("A230", "source record", f"{source} {record}",
                              f"billed by {len(names)} live invoices ({', '.join(shown[:5])})"
                              + (f" with suffix {suffix!r}" if suffix else ""),
                              expected=1, actual=len(names), hint="cancel the invoice that bills it again")
