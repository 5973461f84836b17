"""The org's own commands: ``validate-config``, ``db plan|migrate``, ``load``, ``export-records``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from engine.cli.app import (
    UserError,
    command,
    console,
    db_option,
    err_console,
    group,
    open_context,
    org_option,
)
from engine.config.diagnostics import render_human, render_json, summary_line
from engine.project import load_project


@command("validate-config")
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


@group()
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
@org_option
@db_option
def db_plan(org_dir: Path, db_url: str | None) -> None:
    """Show the differences between the metadata and the database."""
    from engine.storage.db import open_engine
    from engine.storage.migrate import plan_migration

    ctx = open_context(org_dir)
    engine = open_engine(db_url)
    plan = plan_migration(engine, ctx.model)
    _render_plan(plan)
    if any(c.data_loss for c in plan.changes):
        console.print("Changes marked YES lose data; 'metabill db migrate' refuses them unless given --allow-data-loss.")


@db.command("migrate")
@org_option
@db_option
@click.option("--allow-data-loss", is_flag=True, help="Also apply changes that drop columns, tables or data.")
def db_migrate(org_dir: Path, db_url: str | None, allow_data_loss: bool) -> None:
    """Create or alter the database schema to match the metadata (one transaction)."""
    from engine.storage.db import open_engine
    from engine.storage.migrate import DataLossRefused, apply_migration

    ctx = open_context(org_dir)
    engine = open_engine(db_url)
    try:
        plan = apply_migration(engine, ctx.model, allow_data_loss=allow_data_loss)
    except DataLossRefused as refused:
        _render_plan(refused.plan)
        raise UserError(
            "these changes would lose data and were not applied (nothing was changed); "
            "re-run with --allow-data-loss to apply them", problems=refused.problems
        ) from None
    _render_plan(plan)
    if plan.changes:
        console.print(f"Applied {len(plan.changes)} change(s).")


@command("load")
@click.argument("object_name", metavar="OBJECT")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None, help="Default: from the file suffix.")
@org_option
@db_option
def load(object_name: str, file: Path, fmt: str | None, org_dir: Path, db_url: str | None) -> None:
    """Load records of OBJECT from a CSV or JSON FILE (all or nothing)."""
    from engine.storage.db import open_engine
    from engine.storage.records import load_file

    ctx = open_context(org_dir)
    report = load_file(open_engine(db_url), ctx, object_name, file, fmt=fmt)
    console.print(f"Loaded {report.inserted} {report.object_name} record(s) from {file}.")


@command("export-records")
@click.argument("object_name", metavar="OBJECT")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
@org_option
@db_option
def export_records_cmd(object_name: str, out_file: Path | None, org_dir: Path, db_url: str | None) -> None:
    """Write the records of OBJECT as CSV (text cells defused against formula injection)."""
    from engine.storage.db import open_engine
    from engine.storage.records import export_records, export_records_file

    ctx = open_context(org_dir)
    engine = open_engine(db_url)
    if out_file is None:
        export_records(engine, ctx, object_name, sys.stdout)
    else:
        report = export_records_file(engine, ctx, object_name, out_file)
        err_console.print(f"Wrote {report.count} {report.object_name} record(s) to {out_file}.")


