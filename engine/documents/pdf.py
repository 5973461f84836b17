"""HTML → PDF through WeasyPrint: confined resources, deterministic bytes.

* **Missing system libraries.** WeasyPrint needs Pango (and HarfBuzz,
  fontconfig) from the operating system; when they cannot be loaded the
  import fails with an ``OSError`` from cffi. :func:`load_weasyprint` turns that
  into a :class:`~engine.documents.errors.PdfUnavailable` naming the library
  and how to install it.
* **No file or network access.** The document's resources (images, fonts,
  stylesheets, attachments) come only from ``templates/`` or ``data:`` URLs
  (:class:`ConfinedFetcher`); a template cannot embed ``/etc/passwd`` as a PDF
  attachment or call out to the network.
* **Same input, same bytes.** The creation and modification dates are the
  invoice date (not the clock), the generator string is fixed, the file
  identifier is derived from the HTML, and the embedded font subsets carry the
  invoice date as their timestamp (``SOURCE_DATE_EPOCH`` while writing), so
  rendering an invoice twice gives identical PDFs.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from contextlib import contextmanager
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import PdfUnavailable
from .sandbox import TemplateRefused, confined_path

_INSTALL_HINT = (
    "install the system libraries WeasyPrint needs: on Debian/Ubuntu "
    "'apt-get install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libfontconfig1', "
    "on Fedora 'dnf install pango', on macOS 'brew install pango' "
    "(see https://doc.courtbouillon.org/weasyprint/stable/first_steps.html); HTML output works without them"
)


def _import_weasyprint() -> Any:
    return importlib.import_module("weasyprint")


def load_weasyprint() -> Any:
    """The weasyprint module, or :class:`PdfUnavailable` with a message that
    names the missing library and how to install it."""
    try:
        return _import_weasyprint()
    except OSError as error:
        text = str(error)
        match = re.search(r"cannot load library '([^']+)'", text) or re.search(r"(lib[\w.+-]+\.so[\w.]*)", text)
        library = match.group(1) if match else "a system library (Pango, HarfBuzz or fontconfig)"
        raise PdfUnavailable(f"PDF output needs WeasyPrint, which cannot load {library}; {_INSTALL_HINT}") from None
    except ImportError as error:
        raise PdfUnavailable(f"PDF output needs the Python package weasyprint ({error}); "
                             "install it with 'pip install weasyprint' (make test/make demo do)") from None


def _fetcher_class(weasyprint: Any) -> type:
    base = weasyprint.urls.URLFetcher

    class ConfinedFetcher(base):  # type: ignore[misc, valid-type]
        """Fetches ``data:`` URLs and files inside templates/, nothing else."""

        def __init__(self, root: Path):
            super().__init__(allowed_protocols=("file", "data"), allow_redirects=False)
            self.root = Path(root)

        def fetch(self, url: str, headers: Any = None) -> Any:
            if url.startswith("data:"):
                return super().fetch(url, headers)
            if not url.startswith("file:"):
                raise ValueError(f"documents may not load {url}: only files in templates/ and data: URLs")
            from urllib.request import url2pathname

            path = Path(url2pathname(url.split("?")[0].split("#")[0].removeprefix("file:"))).resolve()
            base_dir = self.root.resolve()
            if not path.is_relative_to(base_dir):
                raise ValueError(f"documents may not load {url}: it is outside templates/")
            try:
                confined_path(self.root, path.relative_to(base_dir).as_posix())
            except TemplateRefused as error:
                raise ValueError(str(error)) from None
            return super().fetch(url, headers)

    return ConfinedFetcher


def pdf_stamp(day: date | None) -> str:
    """The W3C date written as the PDF's creation and modification date."""
    return f"{(day or date(2000, 1, 1)).isoformat()}T00:00:00Z"


def html_to_pdf(html: str, templates_root: Path, *, document_date: date | None, title: str | None = None,
                pdf_variant: str | None = None) -> bytes:
    """The PDF of ``html``: resources relative to ``templates_root``, dates
    pinned to ``document_date``, identifier from the HTML; ``pdf_variant``
    (``pdf/a-3b``) for the base of a ZUGFeRD / Factur-X invoice."""
    weasyprint = load_weasyprint()
    fetcher = _fetcher_class(weasyprint)(templates_root)
    document = weasyprint.HTML(string=html, base_url=str(Path(templates_root).resolve()) + "/",
                               url_fetcher=fetcher).render()
    stamp = pdf_stamp(document_date)
    metadata = document.metadata
    metadata.created = stamp
    metadata.modified = stamp
    metadata.generator = f"metabill (WeasyPrint {weasyprint.__version__})"
    if title:
        metadata.title = title
    identifier = hashlib.sha256(html.encode("utf-8")).hexdigest()[:32].encode("ascii")
    with _pinned_font_timestamp(document_date):
        if pdf_variant:
            return document.write_pdf(pdf_identifier=identifier, pdf_variant=pdf_variant)
        return document.write_pdf(pdf_identifier=identifier)


@contextmanager
def _pinned_font_timestamp(day: date | None) -> Iterator[None]:
    """fontTools stamps the embedded font subsets with the current time unless
    SOURCE_DATE_EPOCH is set (the reproducible-builds convention): pin it to
    the document date while the PDF is written."""
    epoch = int(datetime.combine(day or date(2000, 1, 1), time(0), tzinfo=timezone.utc).timestamp())
    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before
