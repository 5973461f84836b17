"""E-invoices issued with their invoice, and read back unchanged.

At finalization (:func:`prepare_einvoices` and then
:meth:`PreparedEInvoices.complete`, called by
:func:`engine.documents.finalization.issue_documents` inside the batch's
transaction, which renders the HTML in between while the validation runs,
:mod:`.parallel`) every invoice, credit note and cancellation gets its
XRechnung CII and UBL XML, stored as :data:`~engine.documents.issued.DOCUMENT_OBJECT`
records of kinds :data:`KIND_CII` / :data:`KIND_UBL` (format ``xml``, the
same parts and SHA-256 as the HTML). When the mapping says so
(``validation.at_finalization``) both are validated (XSD + EN 16931 +
XRechnung); the result is recorded on the invoice (``EInvoiceStatus``,
``EInvoiceViolations`` as JSON with rule, terms, message and the mapping
entry's ``file:line``), which ``metabill audit`` lists. Only when the mapping
says ``block_finalization: true`` does a violation (or an invoice that lacks
what the standard needs) keep the invoice a draft.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Iterable, Sequence

import sqlalchemy as sa

from engine.documents.context import DocumentInput
from engine.documents.issued import content_hash, document_parts, stored_document
from engine.storage.context import Context

from .build import EInvoice, EInvoiceDataError, build_einvoice
from .cii import EN16931_ID, cii_xml
from .errors import EInvoiceIncomplete
from .mapping import EInvoiceMapping, load_mapping
from .ubl import ubl_xml
from .validation import Violation, errors_of
from engine.documents.errors import invoice_where

KIND_CII = "XRechnung CII"
KIND_UBL = "XRechnung UBL"
FORMAT_XML = "xml"
VALID, INVALID, NOT_VALIDATED = "Valid", "Invalid", "Not Validated"


def mapping_service(ctx: Context) -> EInvoiceMapping:
    """The org's mapping, loaded once per command (``ctx.service(mapping_service)``)."""
    return load_mapping(ctx.model)


def einvoice_of(ctx: Context, data: DocumentInput, preceding: tuple[str, date | None] | None) -> EInvoice:
    """The e-invoice of one invoice's document data; :class:`EInvoiceIncomplete`
    naming the business term and its mapping entry when data is missing."""
    mapping = ctx.service(mapping_service)
    try:
        return build_einvoice(data.invoice, data.lines, data.account, data.business_entity, mapping,
                              preceding=preceding)
    except EInvoiceDataError as error:
        name = str(data.invoice.get("Name") or data.invoice.get("Id"))
        where = f" (mapping {error.where.render()})" if error.where is not None else ""
        raise EInvoiceIncomplete(f"{error}{where}", where=invoice_where(name),
                                 hint=f"fill the field that feeds {error.term}" if error.term else None) from None


def preceding_invoices(conn: sa.Connection, ctx: Context, invoices: Iterable[dict]) -> dict[int, tuple[str, date]]:
    """(number, date) of the invoice each cancellation corrects, by the
    referenced invoice's id (``RelatedInvoice``)."""
    ids = sorted({int(i["RelatedInvoice"]) for i in invoices if i.get("RelatedInvoice") is not None})
    if not ids:
        return {}
    table = ctx.table("Invoice")
    rows = conn.execute(sa.select(table.c.id, table.c.name, table.c.date).where(table.c.id.in_(ids))).all()
    return {row.id: (row.name, row.date) for row in rows}


def preceding_of(data: DocumentInput, found: dict[int, tuple[str, date]]) -> tuple[str, date | None] | None:
    related = data.invoice.get("RelatedInvoice")
    return found.get(int(related)) if related is not None else None


def violation_record(violation: Violation, syntax: str, doc: EInvoice | None) -> dict:
    """A violation as stored on the invoice: with the mapping entry of the
    first business term it names that a mapping fed."""
    record = {"format": syntax, **violation.as_dict()}
    if doc is not None:
        for term in violation.terms:
            if term in doc.sources:
                record["mapping"] = doc.sources[term].render()
                break
    return record


@dataclass
class Issued:
    """What issuing the e-invoices of a batch produced."""

    documents: list[dict] = field(default_factory=list)
    status: list[tuple[int, tuple]] = field(default_factory=list)
    #: (invoice id, message) of invoices refused (only with block_finalization).
    refused: list[tuple[int, str]] = field(default_factory=list)


def issue_einvoices(conn: sa.Connection, ctx: Context, datas: Sequence[DocumentInput]) -> Issued:
    """The e-invoice documents and validation results of just-finalized invoices."""
    return prepare_einvoices(conn, ctx, datas).complete()


@dataclass
class _Made:
    """One invoice's e-invoice as built: its syntaxes' XML (or the
    problem that kept it from being built)."""

    invoice_id: int
    doc: EInvoice | None
    xmls: tuple[tuple[str, bytes], ...] = ()
    problem: EInvoiceIncomplete | None = None


class PreparedEInvoices:
    """The e-invoices of a batch, built and stored as document rows, their
    validation under way (in worker processes when the batch is large,
    :mod:`.parallel`): :meth:`complete` waits for it and gives the
    :class:`Issued` result. Between the two the caller does other work (the
    HTML documents)."""

    def __init__(self, mapping: EInvoiceMapping, made: list[_Made], documents: list[dict], pending):
        self._mapping = mapping
        self._made = made
        self._documents = documents
        self._pending = pending

    def cancel(self) -> None:
        """The batch will not be issued: stop the validations not yet started."""
        if self._pending is not None:
            self._pending.cancel()

    def complete(self) -> Issued:
        """Wait for the validations; the documents, each invoice's status
        and violations, and the invoices refused (``block_finalization``)."""
        mapping = self._mapping
        results = iter(self._pending.results() if self._pending is not None else ())
        out = Issued(documents=self._documents)
        for made in self._made:
            invoice_id = made.invoice_id
            if made.problem is not None:
                error = made.problem
                problem = {"format": "all", "rule": error.code, "flag": "fatal", "terms": [], "message": str(error)}
                if mapping.block_finalization:
                    out.refused.append((invoice_id, f"its e-invoice cannot be made: {error}"))
                out.status.append((invoice_id, (INVALID, json.dumps([problem], ensure_ascii=False))))
                continue
            violations: list[dict] = []
            if mapping.validate_at_finalization:
                for syntax, _xml in made.xmls:
                    violations += [violation_record(v, syntax, made.doc) for v in errors_of(next(results))]
            status = NOT_VALIDATED if not mapping.validate_at_finalization else (INVALID if violations else VALID)
            if violations and mapping.block_finalization:
                rules = ", ".join(sorted({v["rule"] for v in violations}))
                out.refused.append((invoice_id, f"its e-invoice violates {rules}"))
            recorded = json.dumps(violations, ensure_ascii=False) if violations else None
            out.status.append((invoice_id, (status, recorded)))
        return out


def prepare_einvoices(conn: sa.Connection, ctx: Context, datas: Sequence[DocumentInput]) -> PreparedEInvoices:
    """Build the e-invoices of just-finalized invoices and their document
    rows, and start validating them (every document, in full, when the
    mapping says ``validation.at_finalization``)."""
    from .parallel import Validators

    mapping = ctx.service(mapping_service)
    preceding = preceding_invoices(conn, ctx, [d.invoice for d in datas])
    made: list[_Made] = []
    documents: list[dict] = []
    to_validate: list[bytes] = []
    for data in datas:
        invoice_id = int(data.invoice["Id"])
        try:
            doc = einvoice_of(ctx, data, preceding_of(data, preceding))
        except EInvoiceIncomplete as error:
            made.append(_Made(invoice_id, None, problem=error))
            continue
        xmls = (("cii", cii_xml(doc)), ("ubl", ubl_xml(doc)))
        for (syntax, xml), kind in zip(xmls, (KIND_CII, KIND_UBL)):
            text = xml.decode("utf-8")
            parts = document_parts(text)
            digest = content_hash(text)
            for number, part in enumerate(parts, start=1):
                documents.append({"invoice": invoice_id, "kind": kind, "format": FORMAT_XML,
                                  "part": Decimal(number), "parts": Decimal(len(parts)), "content": part,
                                  "sha256": digest, "template": "einvoice", "confighash": ctx.config_hash})
            if mapping.validate_at_finalization:
                to_validate.append(xml)
        made.append(_Made(invoice_id, doc, xmls))
    pending = ctx.service(Validators).submit(to_validate) if to_validate else None
    return PreparedEInvoices(mapping, made, documents, pending)


def stored_einvoice(conn: sa.Connection, ctx: Context, invoice_id: int, kind: str) -> bytes | None:
    """The e-invoice XML stored at finalization (its hash checked), or None."""
    text = stored_document(conn, ctx, invoice_id, kind=kind)
    return text.encode("utf-8") if text is not None else None


def zugferd_xml(cii: bytes) -> bytes:
    """The stored XRechnung CII as the Factur-X / ZUGFeRD EN 16931 XML: the
    same document, with BT-24 the EN 16931 identifier."""
    from .build import XRECHNUNG_ID

    old = f"<ram:ID>{XRECHNUNG_ID}</ram:ID>".encode()
    return cii.replace(old, f"<ram:ID>{EN16931_ID}</ram:ID>".encode(), 1)


__all__ = ["FORMAT_XML", "INVALID", "Issued", "KIND_CII", "KIND_UBL", "NOT_VALIDATED", "PreparedEInvoices", "VALID",
           "einvoice_of", "issue_einvoices", "mapping_service", "preceding_invoices", "preceding_of",
           "prepare_einvoices", "stored_einvoice", "violation_record", "zugferd_xml"]
