"""The documents stage of finalization: issued documents are stored
(issue 13, item 3; :mod:`engine.documents.issued` says what is stored and
what the fingerprint covers).

:func:`issue_documents` has the :data:`engine.booking.finalize.FinalizationStage`
signature; ``engine/project.py`` composes it last, after every balance and
installment of the finalization exists, so the document shows what was
prepaid or assigned at that moment. Per batch: the invoices' document data
is read with a handful of queries (:func:`engine.documents.data.read_documents`),
each invoice rendered once (HTML, the template contract of ``metabill
render``), its parts inserted in one statement and the hashes recorded with
one executemany; both e-invoices are built first and validated in full
while the HTML renders (:mod:`.einvoice.parallel`); the rule sets are
compiled before the first batch's transaction (the stage's ``prepare``,
:func:`engine.booking.finalize.prepare_stages`), not while it holds the
write lock. A PDF is not made here:
it is made from the stored HTML whenever asked for, byte for byte the same
each time (:mod:`.pdf`), and
rendering PDFs would multiply the time of a finalization (see
docs/decisions.md, "Issued documents").
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Sequence

import sqlalchemy as sa

from engine.booking.finalize import StageError
from engine.domain.batching import chunks
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .data import read_documents
from .einvoice.issue import KIND_CII, mapping_service, prepare_einvoices
from .einvoice.validation import compile_rules
from .errors import DocumentError
from .issued import DOCUMENT_OBJECT, FORMAT_HTML, KIND_INVOICE, LINE_FIELDS, content_hash, document_parts, fingerprint
from .render import render_html


def issue_documents(conn: sa.Connection, ctx: Context, invoices: list[dict]) -> None:
    """The finalization stage: render, store and record the document and the
    fingerprint of every just-finalized invoice (rows with lower-case keys),
    inside the batch's transaction. An invoice whose template fails on its
    data is refused (:class:`~engine.booking.finalize.StageError`): it stays
    a draft, so no invoice is ever issued without its document."""
    if not invoices or ctx.model.object(DOCUMENT_OBJECT) is None:
        return
    ids = [int(invoice["id"]) for invoice in invoices]
    rows_of = {int(invoice["id"]): invoice for invoice in invoices}
    lines_of = _lines(conn, ctx, ids)
    when = max((invoice.get("date") or date.today()) for invoice in invoices)
    documents: list[dict] = []
    recorded: list[tuple[int, tuple]] = []
    root = Path(ctx.model.root)
    datas = read_documents(conn, ctx, ids, today=when)
    # The e-invoices first: their validation runs (in worker processes for a
    # large batch) while this process renders the HTML.
    einvoices = prepare_einvoices(conn, ctx, datas) if einvoices_enabled(ctx) else None
    for data in datas:
        invoice_id = int(data.invoice["Id"])
        try:
            rendered = render_html(root, ctx, data)
        except DocumentError as error:
            if einvoices is not None:
                einvoices.cancel()
            raise StageError(invoice_id, f"{data.invoice.get('Name')}: its document cannot be rendered: {error}"
                             ) from None
        digest = content_hash(rendered.html)
        parts = document_parts(rendered.html)
        for number, part in enumerate(parts, start=1):
            documents.append({"invoice": invoice_id, "kind": KIND_INVOICE, "format": FORMAT_HTML,
                              "part": Decimal(number), "parts": Decimal(len(parts)), "content": part,
                              "sha256": digest, "template": rendered.template[:80], "confighash": ctx.config_hash})
        issued = fingerprint(rows_of[invoice_id], lines_of.get(invoice_id, []))
        recorded.append((invoice_id, (digest, issued)))
        rows_of[invoice_id].update(documenthash=digest, issuedfingerprint=issued)
    if einvoices is not None:
        issued = einvoices.complete()
        if issued.refused:
            invoice_id, message = issued.refused[0]
            raise StageError(invoice_id, f"{rows_of[invoice_id].get('name')}: {message}")
        documents += issued.documents
        update_by_id(conn, ctx.obj("Invoice"), ["EInvoiceStatus", "EInvoiceViolations"], issued.status)
    RowWriter(conn, ctx.obj(DOCUMENT_OBJECT)).insert(documents)
    update_by_id(conn, ctx.obj("Invoice"), ["DocumentHash", "IssuedFingerprint"], recorded)


def _prepare(ctx: Context) -> None:
    """Before the first batch's transaction (:func:`engine.booking.finalize.prepare_stages`):
    compile the e-invoice rule sets when this finalization will validate
    e-invoices. Only a head start: whatever fails here (a validator that
    cannot be loaded, a mapping that cannot be read) fails again in the
    stage and is reported there, per batch, where it always was."""
    try:
        if ctx.model.object(DOCUMENT_OBJECT) is None or not einvoices_enabled(ctx):
            return
        if ctx.service(mapping_service).validate_at_finalization:
            compile_rules()
    except Exception:  # noqa: BLE001 - see the docstring: the stage reports it
        return


issue_documents.prepare = _prepare  # type: ignore[attr-defined]


def einvoices_enabled(ctx: Context) -> bool:
    """Whether the org's metadata can hold issued e-invoices (the document
    kinds and the invoice's status fields exist)."""
    kind = ctx.obj(DOCUMENT_OBJECT).field("Kind")
    invoice = ctx.obj("Invoice")
    return (kind is not None and KIND_CII in kind.values and invoice.field("EInvoiceStatus") is not None
            and invoice.field("EInvoiceViolations") is not None)


def _lines(conn: sa.Connection, ctx: Context, ids: Sequence[int]) -> dict[int, list[dict]]:
    """The fingerprinted fields of the invoices' lines."""
    table = ctx.table("InvoiceLineItem")
    columns = [table.c.invoice, *(table.c[key] for key in LINE_FIELDS if key in table.c)]
    found: dict[int, list[dict]] = {}
    for chunk in chunks(list(ids), 900):
        for row in conn.execute(sa.select(*columns).where(table.c.invoice.in_(chunk))).mappings():
            found.setdefault(row["invoice"], []).append(dict(row))
    return found


__all__ = ["issue_documents"]
