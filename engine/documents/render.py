"""Rendering invoice documents: template selection, HTML, PDF, files.

An invoice's template is the Template record it names (``Invoice.Template``),
else the org's default record; the record's ``File`` is a Jinja2 file in
``templates/`` rendered in the sandbox of ``engine/config/templating.py``
(the same code validate-config runs against its sample invoice). Every
failure a user can fix becomes a :class:`DocumentError` whose message names
the invoice, the template record and, for template errors, ``file:line``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Sequence

import sqlalchemy as sa

from .context import DocumentInput, document_context
from .sandbox import TEMPLATE_FOLDER, describe_error, make_environment, render_template, template_path_problem
from .template_records import TemplateSettings, parse_template_settings, select_template_record

from .data import read_documents
from .pdf import PdfUnavailable, html_to_pdf
from engine.storage.context import Context

FORMATS = ("html", "pdf")


class DocumentError(Exception):
    """An invoice document cannot be produced (a message for people)."""


@dataclass(frozen=True)
class Rendered:
    invoice_name: str
    template: str
    html: str


def template_settings_for(ctx: Context, invoice: dict) -> TemplateSettings:
    """The parsed Template record of an invoice (raises DocumentError)."""
    model = ctx.model
    name = invoice.get("Name") or f"#{invoice.get('Id')}"
    try:
        record = select_template_record(model, invoice.get("Template"))
    except LookupError as error:
        raise DocumentError(f"invoice {name} {error}") from None
    settings = parse_template_settings(model, record)
    problem = template_path_problem(settings.file)
    if problem:
        raise DocumentError(f"invoice {name}: template '{settings.name}': {problem}")
    if settings.file.lower() not in model.templates:
        raise DocumentError(f"invoice {name}: template '{settings.name}': templates/{settings.file} does not exist")
    return settings


def render_html(org_root: Path, ctx: Context, data: DocumentInput) -> Rendered:
    """The HTML of one invoice (raises DocumentError with file:line for
    template errors)."""
    model = ctx.model
    name = data.invoice.get("Name") or f"#{data.invoice.get('Id')}"
    settings = template_settings_for(ctx, data.invoice)
    currency = str(data.invoice.get("CurrencyIsoCode") or "EUR")
    env = make_environment(org_root, locale=settings.locale, currency=currency)
    try:
        html = render_template(env, settings.file, document_context(model, settings, data))
    except Exception as error:  # noqa: BLE001 - any template failure is reported with its location
        info = describe_error(error, env, settings.file)
        raise DocumentError(f"invoice {name}: template '{settings.name}' failed at {info.where}: {info.message}") \
            from None
    return Rendered(name, settings.name, html)


def render_pdf(org_root: Path, rendered: Rendered, document_date: date | None) -> bytes:
    try:
        return html_to_pdf(rendered.html, Path(org_root) / TEMPLATE_FOLDER, document_date=document_date,
                           title=rendered.invoice_name)
    except PdfUnavailable as error:
        raise DocumentError(str(error)) from None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(invoice_name: str) -> str:
    """A file name for an invoice number: letters, digits, ``.``, ``_``, ``-``."""
    stem = _UNSAFE.sub("_", invoice_name).strip("._") or "invoice"
    return stem[:120]


def _write_atomic(path: Path, content: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(content)
    os.replace(partial, path)


@dataclass
class RenderReport:
    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (invoice, message)


def render_invoices(conn: sa.Connection, ctx: Context, org_root: Path, invoices: Sequence[tuple[int, str]],
                    formats: Iterable[str], out_dir: Path, *,
                    progress: Callable[[str], None] | None = None, today: date | None = None) -> RenderReport:
    """Render ``invoices`` ((id, number) pairs) to ``out_dir/<number>.<format>``.

    An invoice that fails is reported and the others go on; a missing PDF
    library stops everything (it would fail for every invoice)."""
    formats = [f for f in FORMATS if f in set(formats)]
    out_dir.mkdir(parents=True, exist_ok=True)
    report = RenderReport()
    for chunk_start in range(0, len(invoices), 200):
        chunk = invoices[chunk_start:chunk_start + 200]
        for data in read_documents(conn, ctx, [i for i, _ in chunk], today=today):
            name = str(data.invoice.get("Name") or f"#{data.invoice.get('Id')}")
            try:
                rendered = render_html(org_root, ctx, data)
                stem = file_stem(name)
                if "html" in formats:
                    path = out_dir / f"{stem}.html"
                    _write_atomic(path, rendered.html.encode("utf-8"))
                    report.written.append(path)
                if "pdf" in formats:
                    pdf = render_pdf(org_root, rendered, data.invoice.get("Date"))
                    path = out_dir / f"{stem}.pdf"
                    _write_atomic(path, pdf)
                    report.written.append(path)
            except DocumentError as error:
                if "WeasyPrint" in str(error):
                    raise
                report.failures.append((name, str(error)))
            if progress is not None:
                progress(name)
    return report
