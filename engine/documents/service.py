"""``metabill render`` as a service: invoice documents of numbers or a run.

:func:`render` checks that PDF output can work here before any work, finds
the invoices, renders each with its template and writes
``<out_dir>/<number>.<format>``. One invoice that fails is reported in the
result (and :meth:`~engine.documents.render.RenderReport.failure_error` is the
error to end the command with); the others are written.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Sequence

import sqlalchemy as sa

from engine.storage.context import Context
from engine.storage.db import transaction

from .data import find_invoices
from .errors import NothingToRender
from .pdf import load_weasyprint
from .render import FORMATS, RenderReport, render_invoices

#: ``progress(done, total, invoice)``: called with ``(0, total, "")`` before
#: the first invoice and after each one.
Progress = Callable[[int, int, str], None]


def render(engine: sa.Engine, ctx: Context, org_dir: Path, *, names: Sequence[str] = (), run_id: int | None = None,
           formats: Iterable[str] = ("pdf",), out_dir: Path, progress: Progress | None = None,
           today: date | None = None) -> RenderReport:
    """Render the invoices numbered ``names`` and/or those of the invoice run
    ``run_id`` (named ones first, in the given order; a run's by number) in
    ``formats`` (``html``, ``pdf``) to ``out_dir``, from one consistent
    snapshot. Raises :class:`~engine.documents.errors.PdfUnavailable` before
    any work when PDF output cannot work here,
    :class:`~engine.documents.errors.InvoiceNotFound` for numbers of no
    invoice and :class:`NothingToRender` when there is no invoice."""
    formats = tuple(f for f in FORMATS if f in set(formats))
    if "pdf" in formats or "zugferd" in formats:
        load_weasyprint()
    with transaction(engine, readonly=True) as conn:
        found = find_invoices(conn, ctx, names=names, run_id=run_id)
        if not found:
            raise NothingToRender(_nothing_message(conn, ctx, run_id))
        total = len(found)
        done = 0

        def advance(invoice: str) -> None:
            nonlocal done
            done += 1
            progress(done, total, invoice)

        if progress is not None:
            progress(0, total, "")
        return render_invoices(conn, ctx, org_dir, found, formats, out_dir,
                               progress=advance if progress is not None else None, today=today)


def _nothing_message(conn: sa.Connection, ctx: Context, run_id: int | None) -> str:
    """Why there is nothing to render: the run (by name) has no invoices."""
    if run_id is None:
        return "no invoices to render: give invoice numbers or an invoice run"
    runs = ctx.table("InvoiceRun")
    name = conn.execute(sa.select(runs.c.name).where(runs.c.id == run_id)).scalar_one_or_none()
    return f"invoice run '{name or run_id}' has no invoices"


__all__ = ["Progress", "render"]
