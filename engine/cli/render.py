"""``metabill render``: invoice documents as HTML and/or PDF."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import UserError, command, console, db_option, err_console, open_context, org_option


@command("render")
@click.argument("invoices", nargs=-1, metavar="INVOICE...")
@click.option("--run", "run_name", default=None, help="Render the invoices of this invoice run (IR-000001 or id).")
@click.option("--format", "formats", type=click.Choice(["html", "pdf"]), multiple=True, default=("pdf",),
              show_default=True, help="Output format; repeat for both (--format html --format pdf).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("invoices"),
              show_default=True, help="Folder for the files <invoice number>.<format> (created if missing).")
@org_option
@db_option
def render(invoices: tuple[str, ...], run_name: str | None, formats: tuple[str, ...], out_dir: Path,
           org_dir: Path, db_url: str | None) -> None:
    """Render invoice documents with their templates (Invoice.Template, else
    the default Template record): INVOICE numbers and/or --run. Writes
    <number>.html / <number>.pdf; the same invoice gives the same bytes."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from engine.cli.runs import _run_id
    from engine.documents import DocumentError, find_invoices, render_invoices
    from engine.documents.pdf import PdfUnavailable, load_weasyprint
    from engine.storage.db import open_engine

    if not invoices and not run_name:
        raise click.UsageError("give invoice numbers or --run")
    if "pdf" in formats:
        try:
            load_weasyprint()  # fail before any work when PDF output cannot work here
        except PdfUnavailable as error:
            raise UserError(str(error)) from None
    ctx = open_context(org_dir)
    model = ctx.model
    engine = open_engine(db_url)
    with engine.connect() as conn:
        run_id = _run_id(conn, model, run_name) if run_name else None
        try:
            found = find_invoices(conn, ctx, names=invoices, run_id=run_id)
        except LookupError as error:
            raise UserError(str(error)) from None
        if not found:
            raise UserError(f"invoice run '{run_name}' has no invoices")
        columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeRemainingColumn())
        with Progress(*columns, console=err_console, transient=True) as progress:
            task = progress.add_task("", total=len(found))

            def advance(name: str) -> None:
                progress.update(task, advance=1, description=name)

            try:
                report = render_invoices(conn, ctx, org_dir, found, formats, out_dir, progress=advance)
            except DocumentError as error:
                raise UserError(str(error)) from None
    for name, message in report.failures:
        err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    rendered = len(found) - len(report.failures)
    console.print(f"Rendered {rendered} invoice(s) to {out_dir}/ ({', '.join(formats)}): {len(report.written)} file(s).")
    if report.failures:
        raise UserError(f"{len(report.failures)} invoice(s) could not be rendered")


COMMANDS = (render,)
