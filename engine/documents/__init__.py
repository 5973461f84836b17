"""Invoice documents: HTML and PDF from sandboxed Jinja2 templates (issue 7).

See README.md in this folder. The template contract (the sandbox, the
Template records, the context templates see, formatting, the sample invoices
validate-config renders) is pure code over the model in :mod:`.sandbox`,
:mod:`.template_records`, :mod:`.context`, :mod:`.formatting`,
:mod:`.labels` and :mod:`.sample`; :mod:`.service` is ``metabill render``.
"""

from .data import find_invoices, read_documents
from .errors import (
    DocumentError,
    InvoiceNotFound,
    InvoicesNotRendered,
    NothingToRender,
    PdfUnavailable,
    TemplateFailed,
    TemplateNotUsable,
)
from .render import RenderReport, render_html, render_invoices, render_pdf

__all__ = ["DocumentError", "InvoiceNotFound", "InvoicesNotRendered", "NothingToRender", "PdfUnavailable",
           "RenderReport", "TemplateFailed", "TemplateNotUsable", "find_invoices", "read_documents", "render_html",
           "render_invoices", "render_pdf"]
