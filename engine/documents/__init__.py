"""Invoice documents: HTML and PDF from sandboxed Jinja2 templates (issue 7).

See README.md in this folder; the template sandbox and the data shape
templates see live in :mod:`engine.config.templating`.
"""

from .data import find_invoices, read_documents
from .render import (
           DocumentError,
           RenderReport,
           render_html,
           render_invoices,
           render_pdf,
)

__all__ = ["DocumentError", "RenderReport", "find_invoices", "read_documents", "render_html", "render_invoices",
           "render_pdf"]
