"""The e-invoice formats of ``metabill render``: XRechnung CII and UBL (the
XML stored at finalization, returned unchanged) and ZUGFeRD / Factur-X
EN 16931 (the issued document's PDF as PDF/A-3b with the stored CII
embedded as ``factur-x.xml``, relationship ``Data``, and the Factur-X XMP
metadata, made by the ``factur-x`` package).

The ZUGFeRD PDF is made on demand from stored content only (the stored
HTML, the stored CII), with its dates pinned to the invoice date, so it is
the same bytes every time, like the plain PDF.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import sqlalchemy as sa

from engine.documents.context import DocumentInput
from engine.documents.errors import invoice_where
from engine.storage.context import Context

from .cii import cii_xml
from .errors import EInvoiceNotIssued, ValidatorUnavailable
from .issue import KIND_CII, KIND_UBL, einvoice_of, preceding_invoices, preceding_of, stored_einvoice, zugferd_xml
from .ubl import ubl_xml

#: ``--format`` name -> (stored kind, file suffix).
EINVOICE_FORMATS = {"xrechnung-cii": (KIND_CII, "-xrechnung-cii.xml"), "xrechnung-ubl": (KIND_UBL,
                                                                                       "-xrechnung-ubl.xml"),
                    "zugferd": (KIND_CII, "-zugferd.pdf")}
DRAFT_STATUSES = ("Draft", "Pre-Draft")


def einvoice_xml(conn: sa.Connection, ctx: Context, data: DocumentInput, kind: str) -> bytes:
    """The stored XML of kind ``kind`` of an issued invoice; for an invoice
    issued before e-invoices were stored, made now from its booked data.
    :class:`EInvoiceNotIssued` for a draft."""
    name = str(data.invoice.get("Name") or data.invoice.get("Id"))
    if data.invoice.get("Status") in DRAFT_STATUSES:
        raise EInvoiceNotIssued(f"invoice {name} is a draft: e-invoices exist for issued invoices only",
                                where=invoice_where(name), hint="finalize it first (metabill finalize)")
    stored = stored_einvoice(conn, ctx, int(data.invoice["Id"]), kind)
    if stored is not None:
        return stored
    doc = einvoice_of(ctx, data, preceding_of(data, preceding_invoices(conn, ctx, [data.invoice])))
    return cii_xml(doc) if kind == KIND_CII else ubl_xml(doc)


def zugferd_pdf(pdf_a3: bytes, cii: bytes, *, invoice_date: date | None, title: str, lang: str = "de-DE") -> bytes:
    """A PDF/A-3b with the CII embedded as Factur-X / ZUGFeRD EN 16931."""
    try:
        import facturx
    except ImportError as error:
        raise ValidatorUnavailable(f"ZUGFeRD output needs the factur-x package: {error}",
                                   hint="pip install factur-x") from None
    xml = zugferd_xml(cii)
    stamp = datetime.combine(invoice_date or date(2000, 1, 1), datetime.min.time(), tzinfo=timezone.utc)
    metadata = {"author": "metabill", "keywords": "Factur-X, ZUGFeRD", "title": title,
                "subject": f"Invoice {title}"}
    return _pinned(stamp, lambda: facturx.generate_from_binary(
        pdf_a3, xml, flavor="factur-x", level="en16931", check_xsd=True, pdf_metadata=metadata, lang=lang))


def _pinned(stamp: datetime, make):
    """Run ``make`` with the factur-x package's clock reading ``stamp``, so
    its XMP and PDF dates are the invoice date (same bytes every time)."""
    import facturx.facturx as inner

    real = inner.datetime

    class _Clock(real):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz=None):
            return stamp if tz is None else stamp.astimezone(tz)

        @classmethod
        def utcnow(cls):
            return stamp.replace(tzinfo=None)

    inner.datetime = _Clock
    try:
        return make()
    finally:
        inner.datetime = real


def output_name(stem: str, fmt: str) -> str:
    return stem + EINVOICE_FORMATS[fmt][1]


__all__ = ["EINVOICE_FORMATS", "einvoice_xml", "output_name", "zugferd_pdf"]
