"""``metabill render``: invoice documents as HTML and/or PDF."""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import (
    command,
    console,
    db_option,
    emit,
    err_console,
    open_context,
    org_option,
)


@command("render")
@click.argument("invoices", nargs=-1, metavar="INVOICE...")
@click.option("--run", "run_name", default=None, help="Render the invoices of this invoice run (IR-000001 or id).")
@click.option("--format", "formats",
              type=click.Choice(["html", "pdf", "xrechnung-cii", "xrechnung-ubl", "zugferd"]), multiple=True,
              default=("pdf",), show_default=True,
              help="Output format; repeat for several. xrechnung-cii/-ubl: the XML stored at finalization; "
                   "zugferd: PDF/A-3 with the CII embedded.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("invoices"),
              show_default=True, help="Folder for the files <invoice number>.<format> (created if missing).")
@org_option
@db_option
def render(invoices: tuple[str, ...], run_name: str | None, formats: tuple[str, ...], out_dir: Path,
           org_dir: Path, db_url: str | None) -> None:
    """Render invoice documents with their templates (Invoice.Template, else
    the default Template record): INVOICE numbers and/or --run. Writes
    <number>.html / <number>.pdf; the same invoice gives the same bytes."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from engine.billing.service import find_run
    from engine.documents.service import render as render_documents
    from engine.storage.db import open_engine

    if not invoices and not run_name:
        raise click.UsageError("give invoice numbers or --run")
    ctx = open_context(org_dir)
    engine = open_engine(db_url, create=False)
    run_id = None
    if run_name:
        with engine.connect() as conn:
            run_id = find_run(conn, ctx, run_name)
    columns = (TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
               TimeRemainingColumn())
    with Progress(*columns, console=err_console.real, transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        report = render_documents(engine, ctx, org_dir, names=invoices, run_id=run_id, formats=formats,
                                  out_dir=out_dir, progress=progress)
    if not emit("render", {"out": out_dir, "formats": formats, "rendered": report.rendered,
                           "files": report.written}):
        console.print(f"Rendered {report.rendered} invoice(s) to {out_dir}/ ({', '.join(formats)}): "
                      f"{len(report.written)} file(s).")
    failure = report.failure_error()
    if failure is not None:
        raise failure


