"""Issued documents are unchanged (issue 13, item 3).

At finalization the document of an invoice is rendered and stored
(``engine.documents.finalization``: ``InvoiceDocument`` records of kind
Invoice, the HTML in parts, each part carrying the SHA-256 of the whole), the
invoice records that hash (``DocumentHash``) and the fingerprint of its legal
content and lines (``IssuedFingerprint``,
:func:`engine.documents.issued.fingerprint`). The audit recomputes both, per
finalized invoice, from three streams ordered by invoice (the invoices, their
lines, their stored parts, read a few at a time):

* the stored parts are complete (1..Parts of the latest hash), their content
  has that hash, and the invoice recorded it (A601);
* the invoice and its lines still give the fingerprint it was issued with
  (A602): a finalized invoice's legal content cannot change unnoticed, even
  where the database guards do not reach;
* a finalized invoice has a stored document at all (A603): finalization
  refuses an invoice whose document cannot be rendered, so an invoice without
  one was finalized before documents were stored, or its document was deleted.

An org without the ``InvoiceDocument`` object (or without the two Invoice
fields) is reported as not checked (``report.skipped``), never as passing.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.documents.einvoice.issue import INVALID
from engine.documents.issued import DOCUMENT_OBJECT, INVOICE_FIELDS, KIND_INVOICE, LINE_FIELDS, content_hash, fingerprint

from .base import UNFINALIZED, AuditRun, merge, stream
from .findings import Finding, finding

#: Stored parts fetched per round trip: a part holds up to 100,000 characters.
PART_BATCH = 20
RECORDED = ("documenthash", "issuedfingerprint")

Rows = Sequence[Mapping[str, Any]]


def _streams(run: AuditRun):
    invoices = run.table("Invoice")
    lines = run.table("InvoiceLineItem")
    parts = run.table(DOCUMENT_OBJECT)
    finalized = invoices.c.status.not_in(UNFINALIZED)
    head = [invoices.c[key] for key in (*INVOICE_FIELDS, *RECORDED) if key in invoices.c]
    yield stream(run.conn, sa.select(invoices.c.id, *head).where(finalized).order_by(invoices.c.id))
    body = [lines.c[key] for key in LINE_FIELDS if key in lines.c]
    yield stream(run.conn, sa.select(lines.c.invoice.label("id"), *body)
                 .select_from(lines.join(invoices, invoices.c.id == lines.c.invoice))
                 .where(finalized).order_by(lines.c.invoice))
    yield stream(run.conn, sa.select(parts.c.invoice.label("id"), parts.c.part, parts.c.parts, parts.c.sha256,
                                     parts.c.content)
                 .where(parts.c.kind == KIND_INVOICE).order_by(parts.c.invoice, parts.c.id), batch=PART_BATCH)


def check_issued_documents(run: AuditRun) -> Iterator[Finding]:
    """A601, A602, A603."""
    invoices = run.table("Invoice")
    if run.ctx.model.object(DOCUMENT_OBJECT) is None or any(key not in invoices.c for key in RECORDED):
        run.report.skipped["issued documents"] = (f"the org has no {DOCUMENT_OBJECT} object or no Invoice "
                                                  "DocumentHash/IssuedFingerprint fields")
        return
    for _, (invoice, lines, parts) in merge(lambda r: r["id"], *_streams(run)):
        if invoice:
            run.report.count("issued documents")
            yield from judge_document(invoice[0], lines, parts)


def judge_document(invoice: Mapping[str, Any], lines: Rows, parts: Rows) -> Iterator[Finding]:
    """The findings of one finalized invoice's issued document (pure):
    ``lines`` its lines, ``parts`` its stored parts in insertion order."""
    name = invoice["name"]
    issued = invoice["issuedfingerprint"]
    if issued is not None:
        now = fingerprint(invoice, lines)
        if now != issued:
            yield finding("A602", "invoice", name, "the invoice or its lines differ from what was issued "
                          "(its fingerprint changed)", expected=issued, actual=now,
                          hint="a finalized invoice is never changed: restore it, or cancel it and invoice anew")
    if not parts:
        yield finding("A603", "invoice", name, "finalized without a stored document"
                      + ("" if invoice["documenthash"] or issued else
                         " and without a recorded hash or fingerprint (finalized before documents were stored?)"),
                      expected=invoice["documenthash"], actual=None)
        return
    if issued is None:
        yield finding("A602", "invoice", name, "its document is stored, but no issued fingerprint was recorded")
    digest = parts[-1]["sha256"]
    latest = sorted((p for p in parts if p["sha256"] == digest), key=lambda p: int(p["part"]))
    problems = []
    if [int(p["part"]) for p in latest] != list(range(1, int(latest[0]["parts"]) + 1)):
        problems.append("parts are missing")
    content = "".join(p["content"] or "" for p in latest)
    if content_hash(content) != digest:
        problems.append("its content does not have its SHA-256")
    if invoice["documenthash"] != digest:
        problems.append("its SHA-256 is not the one the invoice recorded")
    if problems:
        yield finding("A601", "invoice", name, f"the stored document was altered: {', '.join(problems)}",
                      expected=invoice["documenthash"], actual=content_hash(content),
                      hint="restore it from a backup; a stored document is never rewritten")


def check_einvoices(run: AuditRun) -> Iterator[Finding]:
    """A604: issued invoices whose e-invoices were found invalid at
    finalization (``Invoice.EInvoiceStatus``), with the violated rules and
    the mapping entries that fed them (``EInvoiceViolations``)."""
    invoices = run.table("Invoice")
    if "einvoicestatus" not in invoices.c or "einvoiceviolations" not in invoices.c:
        run.report.skipped["e-invoices"] = "the org has no Invoice EInvoiceStatus/EInvoiceViolations fields"
        return
    query = (sa.select(invoices.c.name, invoices.c.einvoicestatus, invoices.c.einvoiceviolations)
             .where(invoices.c.status.not_in(UNFINALIZED), invoices.c.einvoicestatus.is_not(None))
             .order_by(invoices.c.id))
    for row in stream(run.conn, query):
        run.report.count("e-invoices")
        if row["einvoicestatus"] == INVALID:
            yield from judge_einvoice(row["name"], row["einvoiceviolations"])


def judge_einvoice(name: str, violations: str | None) -> Iterator[Finding]:
    """One finding per violated rule of an invoice's e-invoices (pure)."""
    try:
        found = json.loads(violations or "[]")
    except ValueError:
        found = [{"rule": "?", "message": violations}]
    for item in found or [{"rule": "?", "message": "marked invalid"}]:
        where = f" (mapping {item['mapping']})" if item.get("mapping") else ""
        yield finding("A604", "invoice", name, f"{item.get('format', '')} {item.get('rule')}: {item.get('message')}"
                      f"{where}".strip(), hint="fix the data or the mapping, then cancel and invoice anew")
