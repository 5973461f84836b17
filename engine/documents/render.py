"""Rendering invoice documents: template selection, HTML, PDF, files.

An invoice's template is the Template record it names (``Invoice.Template``),
else the org's default record; the record's ``File`` is a Jinja2 file in
``templates/`` rendered in the sandbox (:mod:`.sandbox`) with the document
context (:mod:`.context`), the same code validate-config runs against its
sample invoices. Every failure a user can fix is a
:class:`~engine.documents.errors.DocumentError` whose message names the
invoice, the template record and, for template errors, ``file:line``.
Files are written whole or not at all (:func:`engine.storage.files.write_file`).
A finalized invoice's document is the one stored when it was issued
(:func:`issued_or_fresh`); only drafts are rendered anew.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Sequence

import sqlalchemy as sa

from engine.domain.batching import chunks
from engine.domain.errors import PARTLY_DONE
from engine.storage.context import Context
from engine.storage.files import write_file

from .context import DocumentInput, document_context, document_environment, invoice_currency
from .data import read_documents
from .einvoice.output import EINVOICE_FORMATS, einvoice_xml, output_name, zugferd_pdf
from .issued import stored_document
from .errors import (
    DocumentError,
    InvoicesNotRendered,
    PdfUnavailable,
    TemplateFailed,
    TemplateNotUsable,
    invoice_where,
)
from .pdf import html_to_pdf
from .sandbox import TEMPLATE_FOLDER, describe_error, render_template, template_path_problem
from .template_records import TemplateSettings, parse_template_settings, select_template_record

FORMATS = ("html", "pdf", "xrechnung-cii", "xrechnung-ubl", "zugferd")
#: Statuses whose documents are rendered fresh every time (not yet issued).
DRAFT_STATUSES = ("Draft", "Pre-Draft")
#: The template name reported for a stored (issued) document.
ISSUED = "(issued document)"
#: Invoices read from the database at a time.
RENDER_BATCH = 200


@dataclass(frozen=True)
class Rendered:
    """One invoice's HTML and the template record that made it."""

    invoice_name: str
    template: str
    html: str


def invoice_label(invoice: dict) -> str:
    """How messages name an invoice: its number, else ``#<id>``."""
    return str(invoice.get("Name") or f"#{invoice.get('Id')}")


def template_settings_for(ctx: Context, invoice: dict) -> TemplateSettings:
    """The parsed Template record of an invoice (:class:`TemplateNotUsable`
    when it names none that can be used)."""
    model = ctx.model
    name = invoice_label(invoice)
    try:
        record = select_template_record(model, invoice.get("Template"))
    except LookupError as error:
        raise TemplateNotUsable(f"invoice {name} {error}", where=invoice_where(name)) from None
    settings = parse_template_settings(model, record)
    problem = template_path_problem(settings.file)
    if problem:
        raise TemplateNotUsable(f"invoice {name}: template '{settings.name}': {problem}", where=invoice_where(name))
    if settings.file.lower() not in model.templates:
        raise TemplateNotUsable(f"invoice {name}: template '{settings.name}': templates/{settings.file} does not exist",
                                where=invoice_where(name))
    return settings


class Environments(dict):
    """The sandboxed environments of one command (``ctx.service(Environments)``),
    by org root, locale and currency: a finalization renders thousands of
    invoices, and a fresh environment per invoice re-read and re-loaded its
    template every time. Kept per context, never per process, so the next
    command renders with the templates as they are on disk then."""

    def __init__(self, ctx: Context | None = None):
        super().__init__()

    def environment(self, org_root: Path, settings: TemplateSettings, data: DocumentInput):
        key = (str(org_root), settings.locale, invoice_currency(data.invoice))
        env = self.get(key)
        if env is None:
            env = self[key] = document_environment(org_root, settings, data)
        return env


def render_html(org_root: Path, ctx: Context, data: DocumentInput) -> Rendered:
    """The HTML of one invoice (:class:`TemplateFailed` with the template's
    file:line when the template fails on this invoice's data)."""
    name = invoice_label(data.invoice)
    settings = template_settings_for(ctx, data.invoice)
    env = ctx.service(Environments).environment(org_root, settings, data)
    try:
        html = render_template(env, settings.file, document_context(ctx.model, settings, data))
    except Exception as error:  # noqa: BLE001 - any template failure is reported with its location
        info = describe_error(error, env, settings.file)
        raise TemplateFailed(f"invoice {name}: template '{settings.name}' failed at {info.where}: {info.message}",
                             where=invoice_where(name)) from None
    return Rendered(name, settings.name, html)


def issued_or_fresh(conn: sa.Connection, ctx: Context, org_root: Path, data: DocumentInput) -> Rendered:
    """The document of an invoice: for a finalized invoice the one stored
    when it was issued (:func:`engine.documents.issued.stored_document`,
    its hash checked), which later payments never change; for a draft (or
    an invoice finalized before documents were stored) a fresh rendering."""
    if data.invoice.get("Status") not in DRAFT_STATUSES:
        stored = stored_document(conn, ctx, int(data.invoice["Id"]))
        if stored is not None:
            return Rendered(invoice_label(data.invoice), ISSUED, stored)
    return render_html(org_root, ctx, data)


def _einvoice_bytes(conn: sa.Connection, ctx: Context, org_root: Path, data: DocumentInput, rendered: Rendered,
                    fmt: str) -> bytes:
    """One e-invoice format of an issued invoice (:mod:`.einvoice.output`)."""
    kind = EINVOICE_FORMATS[fmt][0]
    xml = einvoice_xml(conn, ctx, data, kind)
    if fmt != "zugferd":
        return xml
    pdf = html_to_pdf(rendered.html, Path(org_root) / TEMPLATE_FOLDER, document_date=data.invoice.get("Date"),
                      title=rendered.invoice_name, pdf_variant="pdf/a-3b")
    return zugferd_pdf(pdf, xml, invoice_date=data.invoice.get("Date"), title=rendered.invoice_name)


def render_pdf(org_root: Path, rendered: Rendered, document_date: date | None) -> bytes:
    """The PDF of rendered HTML, resources confined to templates/ (:mod:`.pdf`);
    :class:`PdfUnavailable` when WeasyPrint cannot be loaded."""
    return html_to_pdf(rendered.html, Path(org_root) / TEMPLATE_FOLDER, document_date=document_date,
                       title=rendered.invoice_name)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(invoice_name: str) -> str:
    """A file name for an invoice number: letters, digits, ``.``, ``_``, ``-``."""
    stem = _UNSAFE.sub("_", invoice_name).strip("._") or "invoice"
    return stem[:120]


@dataclass
class RenderReport:
    """What a render did: the invoices it was given, the files written, and
    the invoices that failed (number and message; their errors in ``errors``)."""

    invoices: int = 0
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (invoice, message)
    errors: list[DocumentError] = field(default_factory=list)

    @property
    def rendered(self) -> int:
        return self.invoices - len(self.failures)

    def failure_error(self) -> InvoicesNotRendered | None:
        """The error to end the command with when invoices failed (one problem
        per failed invoice), else None."""
        if not self.errors:
            return None
        error = InvoicesNotRendered.of(self.errors)
        if self.rendered:
            error.exit_code = PARTLY_DONE
        return error


def render_invoices(conn: sa.Connection, ctx: Context, org_root: Path, invoices: Sequence[tuple[int, str]],
                    formats: Iterable[str], out_dir: Path, *,
                    progress: Callable[[str], None] | None = None, today: date | None = None) -> RenderReport:
    """Render ``invoices`` ((id, number) pairs) to ``out_dir/<number>.<format>``.

    An invoice that fails is reported and the others go on; a missing PDF
    library stops everything (it would fail for every invoice)."""
    formats = [f for f in FORMATS if f in set(formats)]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = RenderReport(invoices=len(invoices))
    for batch in chunks(invoices, RENDER_BATCH):
        for data in read_documents(conn, ctx, [i for i, _ in batch], today=today):
            name = invoice_label(data.invoice)
            try:
                rendered = issued_or_fresh(conn, ctx, org_root, data)
                stem = file_stem(name)
                if "html" in formats:
                    path = out_dir / f"{stem}.html"
                    write_file(path, rendered.html.encode("utf-8"))
                    report.written.append(path)
                if "pdf" in formats:
                    pdf = render_pdf(org_root, rendered, data.invoice.get("Date"))
                    path = out_dir / f"{stem}.pdf"
                    write_file(path, pdf)
                    report.written.append(path)
                for fmt in formats:
                    if fmt in EINVOICE_FORMATS:
                        path = out_dir / output_name(stem, fmt)
                        write_file(path, _einvoice_bytes(conn, ctx, org_root, data, rendered, fmt))
                        report.written.append(path)
            except PdfUnavailable:
                raise
            except DocumentError as error:
                report.failures.append((name, str(error)))
                report.errors.append(error)
            if progress is not None:
                progress(name)
    return report
