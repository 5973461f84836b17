"""Invoice documents: HTML and PDF from sandboxed Jinja2 templates (issue 7).

See README.md in this folder. The template contract (the sandbox, the
Template records, the context templates see, formatting, the sample invoices
validate-config renders) is pure code over the model in :mod:`.sandbox`,
:mod:`.template_records`, :mod:`.context`, :mod:`.formatting`,
:mod:`.labels` and :mod:`.sample`; :mod:`.service` is ``metabill render``.
"""

#: Each public name and the submodule defining it (imported when first used).
_LAZY = {
    "find_invoices": ".data",
    "read_documents": ".data",
    "DocumentError": ".errors",
    "InvoiceNotFound": ".errors",
    "InvoicesNotRendered": ".errors",
    "NothingToRender": ".errors",
    "PdfUnavailable": ".errors",
    "TemplateFailed": ".errors",
    "TemplateNotUsable": ".errors",
    "RenderReport": ".render",
    "render_html": ".render",
    "render_invoices": ".render",
    "render_pdf": ".render",
}

__all__ = ["DocumentError", "InvoiceNotFound", "InvoicesNotRendered", "NothingToRender", "PdfUnavailable",
           "RenderReport", "TemplateFailed", "TemplateNotUsable", "find_invoices", "read_documents", "render_html",
           "render_invoices", "render_pdf"]


def __getattr__(name: str):
    """Names of the submodules, imported on first use: importing the
    package (which every ``engine.documents.x`` import does) stays cheap, so
    validate-config does not pay for the database layer it never uses."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
