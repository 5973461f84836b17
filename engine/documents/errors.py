"""The failures of invoice documents (R600-R699).

Every one is a :class:`DocumentError`, an
:class:`~engine.domain.errors.EngineError` with a stable code. A failure of
one invoice (its template record, its template) concerns that invoice: a
render of many reports it and writes the others. A missing PDF library stops
a render before any work, since it would fail for every invoice.

The modules that raise them re-export them (``engine.documents.render``,
``engine.documents.pdf``, ``engine.documents.data``) and the package does
(``engine.documents.DocumentError``).
"""

from __future__ import annotations

from typing import Sequence

from engine.domain.errors import EngineError, Where


def invoice_where(name: object) -> Where:
    """What a document failure concerns: the invoice by number (or ``#id``)."""
    return Where(object="Invoice", record=str(name))


class DocumentError(EngineError):
    """An invoice document cannot be produced."""

    code = "R600"


class InvoiceNotFound(DocumentError, LookupError):
    """An invoice number given to render names no invoice."""

    code = "R601"


class NothingToRender(DocumentError):
    """There are no invoices to render: the invoice run has none."""

    code = "R602"


class TemplateNotUsable(DocumentError):
    """An invoice's Template record cannot be used: unknown, no single default,
    or its file missing or outside templates/."""

    code = "R603"


class TemplateFailed(DocumentError):
    """An invoice's template failed on its data; the message names the template's file:line."""

    code = "R604"


class PdfUnavailable(DocumentError, RuntimeError):
    """PDF output is not possible here: WeasyPrint or a system library it
    needs (Pango, HarfBuzz, fontconfig) cannot be loaded.

    HTML output works without them.
    """

    code = "R605"


class InvoicesNotRendered(DocumentError):
    """Some invoices could not be rendered; the others were written.

    One problem per invoice, with the code of its failure.
    """

    code = "R606"

    @classmethod
    def of(cls, failures: Sequence[DocumentError]) -> "InvoicesNotRendered":
        """The error of a render whose ``failures`` are the errors of single invoices."""
        problems = [problem for failure in failures for problem in failure.problems]
        return cls(f"{len(failures)} invoice(s) could not be rendered", problems=problems)


class StoredDocumentAltered(DocumentError):
    """A stored invoice document no longer matches the hash it was issued with.

    Its parts are missing, or its content or hash changed after
    finalization; it is not returned (restore it from a backup).
    """

    code = "R607"


__all__ = ["DocumentError", "InvoiceNotFound", "InvoicesNotRendered", "NothingToRender", "PdfUnavailable",
           "StoredDocumentAltered", "TemplateFailed", "TemplateNotUsable", "invoice_where"]
