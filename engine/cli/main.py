"""The ``metabill`` command line.

Every command starts from :func:`engine.project.load_project`; commands
that change data refuse to run on a configuration with errors. Output for
people goes through rich (plain text when piped); machine output is JSON.
User errors end with a message and a non-zero exit code, never a traceback:
exit 1 for problems in the configuration or data, 2 for usage errors.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from engine.config.diagnostics import render_human, render_json, summary_line
from engine.config.loader import LoadResult
from engine.project import load_project
from engine.storage.context import Context

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class UserError(click.ClickException):
    """A problem the user can fix; printed without a traceback, exit 1."""

    exit_code = 1

    def show(self, file=None) -> None:  # noqa: ARG002 - click's signature
        err_console.print(f"[bold red]error:[/] {self.message}", markup=True)


def _org_option(function):
    return click.option(
        "--org",
        "org_dir",
        default=".",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The org directory (holding metadata/, custom_settings/, templates/).",
    )(function)


def _db_option(function):
    return click.option(
        "--db",
        "db_url",
        default=None,
        envvar="METABILL_DB_URL",
        help="Database URL; default sqlite:///metabill.db in the working directory (env METABILL_DB_URL).",
    )(function)


def load_valid_org(org_dir: Path) -> LoadResult:
    """Load the org and stop with its errors when it is not valid."""
    result = load_project(org_dir)
    if not result.ok:
        for diagnostic in result.errors[:20]:
            err_console.print(render_human(diagnostic), markup=False)
        more = len(result.errors) - 20
        raise UserError(
            f"the configuration in {org_dir} has {len(result.errors)} error(s)"
            + (f" ({more} more not shown)" if more > 0 else "")
            + "; run 'metabill validate-config' and fix them first"
        )
    return result


def load_context(org_dir: Path) -> Context:
    """The runtime context of a valid org (stops with its errors otherwise)."""
    return Context(load_valid_org(org_dir).model)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="metabill")
def cli() -> None:
    """metabill: a declarative, metadata-driven billing engine."""


@cli.command("validate-config")
@click.argument("directory", default=".", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["human", "json"]), default="human", show_default=True)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def validate_config(directory: Path, fmt: str, strict: bool) -> None:
    """Check every metadata, setting and template file of an org.

    Prints each problem as path:line:col: CODE severity: message, then a summary.
    Exits 0 when clean (or warnings only), 1 on errors (or warnings with --strict).
    """
    result = load_project(directory)
    diagnostics = list(result.diagnostics)
    if fmt == "json":
        click.echo(render_json(diagnostics, result.files_checked))
    else:
        for diagnostic in diagnostics:
            click.echo(render_human(diagnostic))
        click.echo(summary_line(diagnostics, result.files_checked))
    failed = any(d.is_error for d in diagnostics) or (strict and diagnostics)
    sys.exit(1 if failed else 0)


@cli.group()
def db() -> None:
    """Derive the database schema from the metadata and migrate it."""


def _render_plan(plan) -> None:
    if not plan.changes:
        console.print("The database matches the metadata: nothing to do.")
        return
    table = Table(title="Schema changes", show_lines=False)
    table.add_column("change")
    table.add_column("object")
    table.add_column("field")
    table.add_column("details")
    table.add_column("data loss")
    for change in plan.changes:
        table.add_row(
            change.kind,
            change.object_name,
            change.field_name or "",
            change.message,
            "[red]YES[/]" if change.data_loss else "no",
        )
    console.print(table)


@db.command("plan")
@_org_option
@_db_option
def db_plan(org_dir: Path, db_url: str | None) -> None:
    """Show the differences between the metadata and the database."""
    from engine.storage.db import open_engine
    from engine.storage.migrate import plan_migration

    result = load_valid_org(org_dir)

    Context(result.model)
    engine = open_engine(db_url)
    plan = plan_migration(engine, result.model)
    _render_plan(plan)
    if any(c.data_loss for c in plan.changes):
        console.print("Changes marked YES lose data; 'metabill db migrate' refuses them unless given --allow-data-loss.")


@db.command("migrate")
@_org_option
@_db_option
@click.option("--allow-data-loss", is_flag=True, help="Also apply changes that drop columns, tables or data.")
def db_migrate(org_dir: Path, db_url: str | None, allow_data_loss: bool) -> None:
    """Create or alter the database schema to match the metadata (one transaction)."""
    from engine.storage.db import open_engine
    from engine.storage.migrate import DataLossRefused, apply_migration

    result = load_valid_org(org_dir)

    Context(result.model)
    engine = open_engine(db_url)
    try:
        plan = apply_migration(engine, result.model, allow_data_loss=allow_data_loss)
    except DataLossRefused as refused:
        _render_plan(refused.plan)
        raise UserError(
            "these changes would lose data and were not applied (nothing was changed); "
            "re-run with --allow-data-loss to apply them"
        ) from None
    _render_plan(plan)
    if plan.changes:
        console.print(f"Applied {len(plan.changes)} change(s).")


@cli.command("load")
@click.argument("object_name", metavar="OBJECT")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None, help="Default: from the file suffix.")
@_org_option
@_db_option
def load(object_name: str, file: Path, fmt: str | None, org_dir: Path, db_url: str | None) -> None:
    """Load records of OBJECT from a CSV or JSON FILE (all or nothing)."""
    from engine.storage.db import open_engine
    from engine.storage.records import load_records

    result = load_valid_org(org_dir)

    ctx = Context(result.model)
    obj = result.model.object(object_name)
    if obj is None or obj.is_setting:
        raise UserError(f"'{object_name}' is not a data object of this org")
    engine = open_engine(db_url)
    report = load_records(engine, ctx, obj.name, file, fmt=fmt)
    if report.errors:
        for error in report.errors:
            err_console.print(error.render(), markup=False)
        raise UserError(f"{len(report.errors)} problem(s) in {file}; nothing was loaded")
    console.print(f"Loaded {report.inserted} {obj.name} record(s) from {file}.")


@cli.command("export-records")
@click.argument("object_name", metavar="OBJECT")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
@_org_option
@_db_option
def export_records_cmd(object_name: str, out_file: Path | None, org_dir: Path, db_url: str | None) -> None:
    """Write the records of OBJECT as CSV (text cells defused against formula injection)."""
    from engine.storage.db import open_engine
    from engine.storage.records import export_records

    result = load_valid_org(org_dir)

    ctx = Context(result.model)
    obj = result.model.object(object_name)
    if obj is None or obj.is_setting:
        raise UserError(f"'{object_name}' is not a data object of this org")
    engine = open_engine(db_url)
    if out_file is None:
        count = export_records(engine, ctx, obj.name, sys.stdout)
    else:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with out_file.open("w", encoding="utf-8", newline="") as handle:
            count = export_records(engine, ctx, obj.name, handle)
        err_console.print(f"Wrote {count} {obj.name} record(s) to {out_file}.")


@cli.command("invoice-run")
@click.option("--filter", "filters", multiple=True, required=True, help="A Filter record name; repeat for several.")
@click.option("--period-start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--period-end", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--invoice-date", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Default: set at finalization.")
@click.option("--dry-run", is_flag=True, help="Show what would be billed; change nothing.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes sharing the run (split by account). Safe to start on several machines too; "
                   "on SQLite the workers' writes take turns, use PostgreSQL to scale out.")
@click.option("--show-invoices/--no-show-invoices", default=None, help="List the invoices (default: with --dry-run).")
@click.option("--finalize", "finalize_after", is_flag=True, help="Finalize the run's drafts right after the run.")
@_org_option
@_db_option
def invoice_run(filters, period_start, period_end, invoice_date, dry_run, batch_size, workers, show_invoices,
                finalize_after, org_dir, db_url):
    """Bill the source records selected by the filters into draft invoices."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from engine.billing.run import RunError, RunRequest, run_invoices
    from engine.storage.db import open_engine

    result = load_valid_org(org_dir)

    ctx = Context(result.model)
    engine = open_engine(db_url)
    request = RunRequest(
        filters=tuple(filters),
        period_start=period_start.date(),
        period_end=period_end.date(),
        invoice_date=invoice_date.date() if invoice_date else None,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console,
                  transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        from engine.billing.workers import WorkerError, run_invoices_parallel
        from engine.storage.db import resolve_url
        from engine.storage.retry import DatabaseBusyError

        try:
            if workers > 1:
                report = run_invoices_parallel(resolve_url(db_url), org_dir, ctx, request, workers, progress)
            else:
                report = run_invoices(engine, ctx, request, progress)
        except (RunError, DatabaseBusyError, WorkerError) as error:
            raise UserError(str(error)) from None
    title = "Dry run (nothing was written)" if dry_run else (
        f"Invoice run {report.run_name}" + (" (joined the existing run)" if report.joined_existing else "")
    )
    table = Table(title=title)
    for column in ("filter", "records read", "invoices", "lines", "errors"):
        table.add_column(column, justify="left" if column == "filter" else "right")
    for f in report.filters:
        table.add_row(f.name, str(f.records_read), str(f.invoices), str(f.lines), str(len(f.failures)))
    table.add_row("total", str(sum(f.records_read for f in report.filters)), str(report.invoice_count),
                  str(report.line_count), str(report.failure_count), style="bold")
    console.print(table)
    if show_invoices or (show_invoices is None and dry_run):
        listing = Table(title="Invoices")
        for column in ("invoice", "account", "type", "lines", "net", "gross"):
            listing.add_column(column, justify="right" if column in ("lines", "net", "gross") else "left")
        for inv in report.invoices:
            listing.add_row(inv.name, inv.account, inv.type, str(inv.lines), f"{inv.total_net} {inv.currency}",
                            f"{inv.grand_total} {inv.currency}")
        console.print(listing)
    for f in report.filters:
        for failure in f.failures[:20]:
            err_console.print(f"{f.name}: {failure.object_name} {failure.record_id}: {failure.message}", markup=False)
    console.print(f"{report.invoice_count} invoice(s), {report.line_count} line(s), "
                  f"{report.failure_count} record error(s) in {report.seconds:.2f} s.")
    if finalize_after and not dry_run:
        from engine.billing.drafts import draft_ids
        from engine.project import finalize as finalize_invoices

        with engine.connect() as conn:
            ids = draft_ids(conn, ctx, run_id=report.run_id)
        finalized = finalize_invoices(engine, ctx, ids)
        for item in finalized.finalized:
            console.print(f"finalized {item.draft_name} as {item.number} ({item.date}, {item.grand_total})")
        for name, message in finalized.failures:
            err_console.print(f"invoice {name}: {message}", markup=False)


def _run_id(conn, model, run_name: str) -> int:
    """The id of an invoice run given by name (IR-000001) or id."""
    import sqlalchemy as sa

    from engine.storage.schema import build_metadata

    runs = build_metadata(model).tables[model.require("InvoiceRun").table_name]
    condition = runs.c.name == run_name
    if run_name.isdigit():
        condition = sa.or_(condition, runs.c.id == int(run_name))
    row = conn.execute(sa.select(runs.c.id).where(condition)).first()
    if row is None:
        raise UserError(f"no invoice run '{run_name}'")
    return row.id


@cli.command("delete-drafts")
@click.option("--run", "run_name", default=None, help="Delete the drafts of this invoice run (name like IR-000001, or id).")
@click.option("--invoice", "names", multiple=True, help="A draft invoice name (DRAFT-000001); repeat for several.")
@_org_option
@_db_option
def delete_drafts_cmd(run_name, names, org_dir, db_url):
    """Delete draft invoices and release their source records for the next run."""

    from engine.billing.drafts import DraftError, delete_drafts, draft_ids
    from engine.storage.db import open_engine

    if not run_name and not names:
        raise click.UsageError("give --run or --invoice")
    result = load_valid_org(org_dir)
    ctx = Context(result.model)
    model = result.model
    engine = open_engine(db_url)
    with engine.begin() as conn:
        run_id = _run_id(conn, model, run_name) if run_name else None
        ids = draft_ids(conn, ctx, run_id=run_id, names=names)
        if names:
            found = len(ids) if run_id is None else None
            if found is not None and found != len(set(names)):
                raise UserError("some of the named invoices are not drafts or do not exist; nothing was deleted")
        try:
            deleted = delete_drafts(conn, ctx, ids)
        except DraftError as error:
            raise UserError(str(error)) from None
    console.print(f"Deleted {deleted} draft invoice(s); their source records will be billed by the next run.")


@cli.command("finalize")
@click.option("--run", "run_name", default=None, help="Finalize the drafts of this invoice run (name or id).")
@click.option("--invoice", "names", multiple=True, help="A draft invoice name (DRAFT-000001); repeat for several.")
@click.option("--date", "today", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="The finalization date (default: today); invoices without a date get it.")
@_org_option
@_db_option
def finalize_cmd(run_name, names, today, org_dir, db_url):
    """Finalize draft invoices: final numbers, Open status, invoice balances."""

    from engine.billing.drafts import draft_ids
    from engine.project import finalize as finalize_invoices
    from engine.storage.db import open_engine

    if not run_name and not names:
        raise click.UsageError("give --run or --invoice")
    result = load_valid_org(org_dir)
    ctx = Context(result.model)
    model = result.model
    engine = open_engine(db_url)
    with engine.connect() as conn:
        run_id = _run_id(conn, model, run_name) if run_name else None
        ids = draft_ids(conn, ctx, run_id=run_id, names=names)
    if not ids:
        raise UserError("no draft invoices to finalize")
    report = finalize_invoices(engine, ctx, ids, today=today.date() if today else None)
    table = Table(title="Finalized invoices")
    for column in ("draft", "invoice number", "date", "grand total"):
        table.add_column(column, justify="right" if column == "grand total" else "left")
    for item in report.finalized:
        table.add_row(item.draft_name, item.number, item.date.isoformat(), str(item.grand_total))
    console.print(table)
    for name, message in report.failures:
        err_console.print(f"invoice {name}: {message}", markup=False)
    if report.failures:
        raise UserError(f"{len(report.failures)} invoice(s) could not be finalized")


@cli.command("cancel")
@click.argument("invoice")
@click.option("--reason", default=None, help="The cancellation reason printed on the cancellation invoice.")
@click.option("--date", "when", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Cancellation date (default today).")
@click.option("--draft-only", is_flag=True, help="Create the cancellation invoice as a draft and stop.")
@_org_option
@_db_option
def cancel_cmd(invoice, reason, when, draft_only, org_dir, db_url):
    """Cancel a finalized INVOICE: a cancellation invoice mirrors it, balances are
    cleared, its bookings reversed and its source records released."""
    from engine.booking.cancel import CancelError, create_cancellation
    from engine.project import finalize as finalize_invoices
    from engine.storage.db import open_engine

    result = load_valid_org(org_dir)

    ctx = Context(result.model)
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            draft_id = create_cancellation(conn, ctx, invoice, reason)
    except CancelError as error:
        raise UserError(str(error)) from None
    if draft_only:
        console.print(f"Created the cancellation draft DRAFT-{draft_id:06d} for {invoice}.")
        return
    report = finalize_invoices(engine, ctx, [draft_id], today=when.date() if when else None)
    for name, message in report.failures:
        raise UserError(f"the cancellation of {invoice} could not be finalized: {message}")
    item = report.finalized[0]
    console.print(f"Cancelled {invoice} with {item.number} ({item.date}, {item.grand_total}).")


@cli.command("explain")
@click.argument("invoice")
@_org_option
@_db_option
def explain_cmd(invoice, org_dir, db_url):
    """Show, for every booking detail of INVOICE, the rule that chose its account,
    the criteria compared and the rules that lost."""
    from engine.booking.explain import ExplainError, explain_invoice
    from engine.storage.db import open_engine

    result = load_valid_org(org_dir)

    ctx = Context(result.model)
    engine = open_engine(db_url)
    try:
        with engine.connect() as conn:
            explanations = explain_invoice(conn, ctx, invoice)
    except ExplainError as error:
        raise UserError(str(error)) from None
    for explanation in explanations:
        for line in explanation.lines():
            click.echo(line)


# The command modules come last: they use the helpers defined above. exports and
# render define a group/command that is added here; cash and cashmgmt attach
# their commands to `cli` when imported.
from engine.cli.exports import export  # noqa: E402
from engine.cli.render import render as render_command  # noqa: E402
import engine.cli.cash  # noqa: E402,F401  (payment, write-off, collect-balances, jobs)
import engine.cli.cashmgmt  # noqa: E402,F401  (fix-invoices, payment-plan, entries, partial-credit)

cli.add_command(export)
cli.add_command(render_command)


def main() -> None:
    """Entry point: click's own errors exit 2; anything unexpected is reported
    as an internal error without a Python traceback (set METABILL_DEBUG=1 to see it)."""
    import os

    from engine.storage.retry import DatabaseBusyError

    try:
        cli.main(standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except DatabaseBusyError as exc:  # another metabill process holds SQLite's write lock: not a bug
        err_console.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last line of defence for users
        if os.environ.get("METABILL_DEBUG"):
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "This is a bug in metabill; set METABILL_DEBUG=1 to see the traceback.",
            markup=True,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
