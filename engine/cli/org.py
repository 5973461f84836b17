"""The org's own commands: ``init``, ``validate-config``, ``db plan|migrate``, ``load``, ``export-records``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli.app import (
    Table,
    UserError,
    command,
    console,
    db_option,
    emit,
    err_console,
    group,
    json_output,
    jsonable,
    open_context,
    org_option,
)
from engine.config.diagnostics import render_human, render_json, summary_line, to_json_dict
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
    if fmt == "json" or json_output():
        click.echo(render_json(diagnostics, result.files_checked))
    else:
        for diagnostic in diagnostics:
            click.echo(render_human(diagnostic))
        click.echo(summary_line(diagnostics, result.files_checked))
    failed = any(d.is_error for d in diagnostics) or (strict and diagnostics)
    sys.exit(1 if failed else 0)


@command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from-sample", is_flag=True, help="Copy the sample org (with its data/) instead of a minimal org.")
def init(directory: Path, from_sample: bool) -> None:
    """Create a new org in DIRECTORY: the product objects and settings, a
    business entity to fill in and a commented example filter (or, with
    --from-sample, the sample org); then validate it."""
    from engine.config.scaffold import InitError, create_org

    try:
        written = create_org(directory, from_sample=from_sample)
    except InitError as error:
        raise UserError(str(error)) from None
    result = load_project(directory)
    if not emit("init", {"org": directory, "files": written, "errors": len(result.errors),
                         "warnings": len(result.diagnostics) - len(result.errors),
                         "diagnostics": [to_json_dict(d) for d in result.diagnostics]}):
        for diagnostic in result.diagnostics:
            click.echo(render_human(diagnostic))
        what = "a copy of the sample org" if from_sample else "a new org"
        click.echo(f"Created {what} in {directory} ({len(written)} files); "
                   + summary_line(list(result.diagnostics), result.files_checked))
        click.echo(f"Next: cd {directory} && metabill db migrate")
    if result.errors:
        sys.exit(1)


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
            "[red]REFUSED[/]" if getattr(change, "refused", None) else
            ("[red]YES[/]" if change.data_loss else "no"),
        )
    console.print(table)
    if getattr(plan, "backup", None):
        console.print(f"Backup of the affected data written before the changes: {plan.backup}", markup=False)


@db.command("plan")
@click.option("--impact", is_flag=True,
              help="Also list the drafts and open invoices today's configuration decides differently "
                   "(tax of draft lines, accounts of booked invoices).")
@org_option
@db_option
def db_plan(impact: bool, org_dir: Path, db_url: str | None) -> None:
    """Show the differences between the metadata and the database."""
    from engine.storage.db import open_engine
    from engine.storage.migrate import plan_migration

    from engine.storage.environment import DatabaseMissing

    ctx = open_context(org_dir)
    try:
        engine = open_engine(db_url, create=False)
    except DatabaseMissing:
        # planned against an empty database (what migrate would create), without creating the file
        if not json_output():
            console.print("The database does not exist yet; 'metabill db migrate' creates it with:", markup=False)
        engine = open_engine("sqlite://")
    plan = plan_migration(engine, ctx.model)
    effects = None
    if impact and not plan.changes:
        from engine.booking.impact import configuration_impact

        effects = configuration_impact(engine, ctx)
    if emit("db plan", {**jsonable(plan), "impact": effects}):
        return
    _render_plan(plan)
    if impact and plan.changes:
        console.print("The impact is computed on a migrated database: run 'metabill db migrate' first, then "
                      "'metabill db plan --impact'.", markup=False)
    if effects is not None:
        _render_impact(effects)
    if any(c.data_loss for c in plan.changes):
        console.print("Changes marked YES lose data; 'metabill db migrate' refuses them unless given --allow-data-loss.")


def _render_impact(report) -> None:
    for title, items, checked in (("Drafts taxed differently today", report.drafts, report.drafts_checked),
                                  ("Open invoices booked to other accounts today", report.open_invoices,
                                   report.open_checked)):
        console.print(f"{title}: {len(items)} of {checked}", markup=False)
        for item in items:
            for change in item.changes:
                console.print(f"  {item.invoice}: {change}", markup=False)


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
    if emit("db migrate", plan):
        return
    _render_plan(plan)
    if plan.changes:
        console.print(f"Applied {len(plan.changes)} change(s).")


@command("load")
@click.argument("object_name", metavar="OBJECT")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default=None, help="Default: from the file suffix.")
@click.option("--upsert", is_flag=True, help="Update the records whose --key value exists, insert the others.")
@click.option("--key", "key", default=None, metavar="FIELD",
              help="The field that identifies a record for --upsert: Id, or a unique or external-id field.")
@org_option
@db_option
def load(object_name: str, file: Path, fmt: str | None, upsert: bool, key: str | None, org_dir: Path,
         db_url: str | None) -> None:
    """Load records of OBJECT from a CSV or JSON FILE (all or nothing).

    With --upsert --key FIELD, a row whose FIELD value names an existing
    record updates the columns the file has (fields the engine writes are
    never overwritten); the other rows are inserted."""
    from engine.storage.db import open_engine
    from engine.storage.records import load_file, loadable_object, upsert_key

    if upsert != (key is not None):
        raise click.UsageError("--upsert and --key FIELD go together")
    ctx = open_context(org_dir)
    obj = loadable_object(ctx, object_name)  # a wrong object or key is named before the database
    if key is not None:
        upsert_key(obj, key)
    report = load_file(open_engine(db_url, create=False), ctx, object_name, file, fmt=fmt, key=key)
    if emit("load", {"object": report.object_name, "file": file, "inserted": report.inserted,
                     "updated": report.updated, "unchanged": report.unchanged}):
        return
    if upsert:
        console.print(f"Loaded {file} into {report.object_name}: {report.inserted} inserted, {report.updated} "
                      f"updated, {report.unchanged} unchanged.", markup=False)
    else:
        console.print(f"Loaded {report.inserted} {report.object_name} record(s) from {file}.", markup=False)


@command("export-records")
@click.argument("object_name", metavar="OBJECT")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
@org_option
@db_option
def export_records_cmd(object_name: str, out_file: Path | None, org_dir: Path, db_url: str | None) -> None:
    """Write the records of OBJECT as CSV (text cells defused against formula injection)."""
    from engine.storage.db import open_engine
    from engine.storage.records import data_object, export_records, export_records_file

    ctx = open_context(org_dir)
    data_object(ctx, object_name)  # a wrong object is named before the database
    engine = open_engine(db_url, create=False)
    if out_file is None:
        export_records(engine, ctx, object_name, sys.stdout)
    else:
        report = export_records_file(engine, ctx, object_name, out_file)
        if emit("export-records", {"object": report.object_name, "file": out_file, "records": report.count}):
            return
        err_console.print(f"Wrote {report.count} {report.object_name} record(s) to {out_file}.")


