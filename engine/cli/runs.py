"""The billing cycle's commands: ``invoice-run``, ``delete-drafts``, ``finalize``, ``cancel``, ``explain``."""

from __future__ import annotations

import click

from engine.cli.app import (
    Table,
    DATE,
    command,
    console,
    db_option,
    emit,
    err_console,
    jsonable,
    open_context,
    org_option,
    render_problems,
)


@command("invoice-run")
@click.option("--filter", "filters", multiple=True, required=True, help="A Filter record name; repeat for several.")
@click.option("--period-start", type=DATE, required=True)
@click.option("--period-end", type=DATE, required=True)
@click.option("--invoice-date", type=DATE, default=None, help="Default: set at finalization.")
@click.option("--dry-run", is_flag=True, help="Show what would be billed; change nothing.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=2000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes draining the run's work queue (pass 2 split by account); more join from "
                   "other machines with 'metabill worker --run'. On SQLite the workers' writes take turns, "
                   "use PostgreSQL to scale out.")
@click.option("--show-invoices/--no-show-invoices", default=None, help="List the invoices (default: with --dry-run).")
@click.option("--finalize", "finalize_after", is_flag=True, help="Finalize the run's drafts right after the run.")
@org_option
@db_option
def invoice_run(filters, period_start, period_end, invoice_date, dry_run, batch_size, workers, show_invoices,
                finalize_after, org_dir, db_url):
    """Bill the source records selected by the filters into draft invoices."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from engine.billing.run import RunRequest
    from engine.billing.service import invoice_run as run_invoices
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    open_engine(db_url, create=False).dispose()  # a missing database is named before the run starts
    request = RunRequest(
        filters=tuple(filters),
        period_start=period_start.date(),
        period_end=period_end.date(),
        invoice_date=invoice_date.date() if invoice_date else None,
        dry_run=dry_run,
        batch_size=batch_size,
    )
    import time

    from engine.billing.workers import QUEUE_PROGRESS
    from engine.billing.workqueue import eta_seconds, format_eta

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err_console.real,
                  transient=True) as bar:
        tasks: dict[str, int] = {}
        started = time.monotonic()

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            description = name
            if name == QUEUE_PROGRESS:  # a parallel run: its queue's chunks, with an estimate of the time left
                description = f"{name} (ETA {format_eta(eta_seconds(done, total, time.monotonic() - started))})"
            bar.update(tasks[name], completed=done, total=total, description=description)

        report = run_invoices(db_url, org_dir, ctx, request, workers=workers, progress=progress)
    finalized = None
    if finalize_after and not dry_run:
        from engine.project import finalize_drafts

        finalized = finalize_drafts(open_engine(db_url, create=False), ctx, run=report.run_id)
    if not emit("invoice-run", {"run": report, "finalization": finalized}):
        _show_run(report, dry_run, show_invoices, finalized)
    failures = [report.failure_error()]
    if finalized is not None:
        from engine.project import finalization_failure

        failures.append(finalization_failure(finalized))
    failures = [failure for failure in failures if failure is not None]
    for failure in failures[:-1]:
        render_problems(failure)
    if failures:
        raise failures[-1]


def _show_run(report, dry_run: bool, show_invoices: bool | None, finalized) -> None:
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
    console.print(f"{report.invoice_count} invoice(s), {report.line_count} line(s), "
                  f"{report.failure_count} record error(s) in {report.seconds:.2f} s.")
    for item in finalized.finalized if finalized is not None else ():
        console.print(f"finalized {item.draft_name} as {item.number} ({item.date}, {item.grand_total})")


@command("delete-drafts")
@click.option("--run", "run_name", default=None, help="Delete the drafts of this invoice run (name like IR-000001, or id).")
@click.option("--invoice", "names", multiple=True, help="A draft invoice name (DRAFT-000001); repeat for several.")
@org_option
@db_option
def delete_drafts_cmd(run_name, names, org_dir, db_url):
    """Delete draft invoices and release their source records for the next run."""
    from engine.billing.service import delete_drafts_of
    from engine.storage.db import open_engine

    if not run_name and not names:
        raise click.UsageError("give --run or --invoice")
    ctx = open_context(org_dir)
    deleted = delete_drafts_of(open_engine(db_url, create=False), ctx, run=run_name, names=names)
    if emit("delete-drafts", {"deleted": deleted}):
        return
    console.print(f"Deleted {deleted} draft invoice(s); their source records will be billed by the next run.")


@command("finalize")
@click.option("--run", "run_name", default=None, help="Finalize the drafts of this invoice run (name or id).")
@click.option("--invoice", "names", multiple=True, help="A draft invoice name (DRAFT-000001); repeat for several.")
@click.option("--date", "today", type=DATE, default=None,
              help="The finalization date (default: today); invoices without a date get it.")
@org_option
@db_option
def finalize_cmd(run_name, names, today, org_dir, db_url):
    """Finalize draft invoices: final numbers, Open status, invoice balances."""
    from engine.project import finalization_failure, finalize_drafts
    from engine.storage.db import open_engine

    if not run_name and not names:
        raise click.UsageError("give --run or --invoice")
    ctx = open_context(org_dir)
    report = finalize_drafts(open_engine(db_url, create=False), ctx, run=run_name, names=names,
                             today=today.date() if today else None)
    if not emit("finalize", report):
        table = Table(title="Finalized invoices")
        for column in ("draft", "invoice number", "date", "grand total"):
            table.add_column(column, justify="right" if column == "grand total" else "left")
        for item in report.finalized:
            table.add_row(item.draft_name, item.number, item.date.isoformat(), str(item.grand_total))
        console.print(table)
    failure = finalization_failure(report)
    if failure is not None:
        raise failure


@command("cancel")
@click.argument("invoice")
@click.option("--reason", default=None, help="The cancellation reason printed on the cancellation invoice.")
@click.option("--date", "when", type=DATE, default=None, help="Cancellation date (default today).")
@click.option("--draft-only", is_flag=True, help="Create the cancellation invoice as a draft and stop.")
@org_option
@db_option
def cancel_cmd(invoice, reason, when, draft_only, org_dir, db_url):
    """Cancel a finalized INVOICE: a cancellation invoice mirrors it, balances are
    cleared, its bookings reversed and its source records released."""
    from engine.project import cancel_invoice
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    done = cancel_invoice(open_engine(db_url, create=False), ctx, invoice, reason=reason,
                          when=when.date() if when else None, draft_only=draft_only)
    if emit("cancel", done):
        return
    item = done.finalized
    if item is None:
        console.print(f"Created the cancellation draft {done.draft_name} for {invoice}.")
        return
    console.print(f"Cancelled {invoice} with {item.number} ({item.date}, {item.grand_total}).")


@command("explain")
@click.argument("invoice")
@org_option
@db_option
def explain_cmd(invoice, org_dir, db_url):
    """Show, for every booking detail of INVOICE, the rule that chose its account,
    the criteria compared and the rules that lost; for lines billing a
    subscription item, the item, the service period and its proration."""
    from engine.billing.subscription_explain import explain_service_periods
    from engine.booking.explain import explain
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    engine = open_engine(db_url, create=False)
    service = explain_service_periods(engine, ctx, invoice)
    drafted = bool(service.lines) and not service.finalized  # a draft has no booking details yet
    explanations = [] if drafted else explain(engine, ctx, invoice)
    if emit("explain", {"invoice": invoice, "service_periods": service.lines,
                        "bookings": [{"text": list(e.lines()), **jsonable(e)} for e in explanations]}):
        return
    for line in service.lines:
        click.echo(line)
    for explanation in explanations:
        for line in explanation.lines():
            click.echo(line)




@command("runs")
@click.argument("names", nargs=-1, metavar="[RUN]...")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="How many of the newest runs to list (without RUN names).")
@click.option("--recover", is_flag=True,
              help="Mark dead runs (no live process works on them) Failed; running them again bills the rest.")
@org_option
@db_option
def runs_cmd(names, limit, recover, org_dir, db_url):
    """List invoice runs with their state (Dead: Running, but no process works
    on it any more), or recover dead ones with --recover."""
    from engine.billing.service import list_runs, recover_runs
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    engine = open_engine(db_url, create=False)
    if recover:
        recovered = recover_runs(engine, ctx, names=names)
        if emit("runs --recover", {"recovered": recovered}):
            return
        for run in recovered:
            console.print(f"Recovered {run.name} ({', '.join(run.owners) or 'no process'}): now Failed; "
                          "run the same invoice run again to bill the rest.", markup=False)
        if not recovered:
            console.print("No dead runs.")
        return
    runs = list_runs(engine, ctx, names=names, limit=limit)
    if emit("runs", {"runs": runs}):
        return
    from engine.billing.workqueue import format_eta

    table = Table(title="Invoice runs")
    for column in ("run", "state", "period", "filters", "invoices", "errors", "chunks", "ETA", "started",
                   "processes"):
        table.add_column(column, justify="right" if column in ("invoices", "errors", "chunks") else "left")
    for run in runs:
        state = f"[red]{run.state}[/]" if run.dead else run.state
        queue = run.queue
        chunks = "" if queue is None else f"{queue.done}/{queue.total}" + (f" ({queue.failed} failed)"
                                                                          if queue.failed else "")
        eta = format_eta(queue.eta_seconds) if queue is not None and run.status == "Running" else ""
        table.add_row(run.name, state, f"{run.period_start} .. {run.period_end}", run.filters, str(run.invoices),
                      str(run.errors), chunks, eta, str(run.started_at or ""), "; ".join(run.owners))
    console.print(table)


@command("worker")
@click.option("--run", "run_name", required=True, help="The invoice run to work on (name like IR-000001, or id).")
@org_option
@db_option
def worker_cmd(run_name, org_dir, db_url):
    """Join the work queue of a parallel invoice run (started elsewhere with
    'invoice-run --workers N') and work on its chunks until none is left.
    Start it on as many machines as reach the database, with the same org."""
    from engine.billing.workers import join_run
    from engine.storage.db import resolve_url

    ctx = open_context(org_dir)
    ran = join_run(resolve_url(db_url), ctx, run_name)
    if emit("worker", {"run": run_name, "chunks": ran}):
        return
    console.print(f"Worked on {ran} chunk(s) of {run_name}; its queue is drained.", markup=False)
