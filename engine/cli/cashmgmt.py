"""Cash-management commands: ``metabill fix-invoices``, ``payment-plan change``,
``entries list|settle`` and ``partial-credit``.

Every command that changes data is one transaction; ``--dry-run`` runs the
same work and rolls it back.

The integration is switched on in the org: ``EnableCashManagementIntegration:
true`` in ``custom_settings/GlobalSettings.yaml``. ``fix-invoices
--enable-integration`` runs the fix tasks as if it were on, to prepare a
database before the org switches (docs/decisions.md, "Cash management");
records written that way carry the configuration hash of that effective
configuration.
"""

from __future__ import annotations

from datetime import date, datetime

import click

from engine.cli.app import (
    DATE,
    command,
    console,
    db_option,
    emit,
    err_console,
    group,
    open_context,
    org_option,
    parse_amount,
)
from engine.storage.db import open_engine

_DATE = DATE


def _day(value: datetime | None) -> date:
    return value.date() if value else date.today()


def _render_changes(changes, dry_run: bool) -> None:
    for line in changes.lines:
        console.print(line, markup=False)
    for name, message in changes.errors:
        err_console.print(f"invoice {name}: {message}", markup=False)
    summary = (f"{changes.entries_created} entr(y/ies) created, {changes.entries_canceled} canceled, "
               f"{changes.entries_updated} updated, {changes.installments_created} installment(s), "
               f"{changes.payments_created} payment(s), {changes.entry_items_created} entry item(s), "
               f"{changes.reductions_created} reduction(s), {changes.balances_migrated} balance(s) migrated")
    prefix = "Dry run (rolled back): " if dry_run else ""
    console.print(f"{prefix}{summary}; {changes.total} change(s), {len(changes.errors)} error(s).", markup=False)


@command("fix-invoices")
@click.option("--task", "tasks", multiple=True, required=True,
              type=click.Choice(["create-or-fix-entries", "create-payments-and-migrate-balances"]),
              help="The fix task; repeat to run several, in the order given.")
@click.option("--invoice", "names", multiple=True, metavar="NO", help="Only this invoice number; repeat for several.")
@click.option("--dry-run", is_flag=True, help="Show what would change and write nothing.")
@click.option("--date", "when", type=_DATE, default=None, help="Date of the records written (default today).")
@click.option("--enable-integration", is_flag=True,
              help="Run as if GlobalSettings.EnableCashManagementIntegration were on (prepare a database before switching).")
@org_option
@db_option
def fix_invoices(tasks, names, dry_run, when, enable_integration, org_dir, db_url):
    """Prepare invoices for cash management: (re)generate entries, create payments from balances.

    Problems are written to the invoice field CM_IntegrationError__c; running a task again changes nothing."""
    from engine.cash import service

    ctx = open_context(org_dir)
    report = service.fix_invoices(open_engine(db_url, create=False), ctx, tasks, names, when=_day(when), dry_run=dry_run,
                                  enable_integration=enable_integration)
    if not emit("fix-invoices", {"dry_run": dry_run, "tasks": report.tasks}):
        for result in report.tasks:
            console.print(f"-- {result.task}", markup=False)
            _render_changes(result.changes, dry_run)
    if report.failure is not None:
        raise report.failure


@group("payment-plan")
def payment_plan() -> None:
    """Payment plans (installments) of finalized invoices."""


@payment_plan.command("change")
@click.argument("invoice")
@click.argument("plan")
@click.option("--date", "when", type=_DATE, default=None, help="Date of the change (default today).")
@org_option
@db_option
def payment_plan_change(invoice, plan, when, org_dir, db_url):
    """Give INVOICE the InstallmentPlan PLAN ('none' removes the plan): its entries
    are canceled and created anew, payments already received re-attached."""
    from engine.cash import service

    ctx = open_context(org_dir)
    changes = service.change_payment_plan(open_engine(db_url, create=False), ctx, invoice, plan, when=_day(when))
    if emit("payment-plan change", changes):
        return
    for line in changes.lines:
        console.print(line, markup=False)


@group("entries")
def entries() -> None:
    """Cash-management entries (open items)."""


@entries.command("list")
@click.option("--invoice", "names", multiple=True, metavar="NO", help="Only this invoice's entries; repeat for several.")
@click.option("--all", "show_all", is_flag=True, help="Also canceled entries.")
@org_option
@db_option
def entries_list(names, show_all, org_dir, db_url):
    """Show entries with their outstanding amounts, entry items and reductions."""
    from engine.cash import service

    ctx = open_context(org_dir)
    rows = service.list_entries(open_engine(db_url, create=False), ctx, names, include_canceled=show_all)
    if emit("entries list", {"entries": rows}):
        return
    # Plain fixed-width lines: readable in a terminal and in a log, never truncated.
    header = f"{'entry':<11} {'statement':<32} {'due':<10} {'open amount':>12} {'outstanding':>12} {'status':<8} items reductions"
    click.echo(header)
    for row in rows:
        statement = f"{row.statement_type} {row.statement_no}"
        click.echo(f"{row.name:<11} {statement:<32} {str(row.due_date or ''):<10} {row.open_amount!s:>12} "
                   f"{row.outstanding!s:>12} {row.status:<8} {row.entry_items:>5} {row.reductions:>10}")
    click.echo(f"{len(rows)} entr(y/ies).")




@entries.command("settle")
@click.argument("invoice")
@click.argument("credit")
@click.option("--amount", default=None, help="Amount to settle (default: as much as both allow).")
@click.option("--date", "when", type=_DATE, default=None, help="Settlement date (default today).")
@org_option
@db_option
def entries_settle(invoice, credit, amount, when, org_dir, db_url):
    """Offset INVOICE against the credit CREDIT of the same account (entry settlement)."""
    from engine.cash import service

    ctx = open_context(org_dir)
    done = service.settle(open_engine(db_url, create=False), ctx, invoice, credit, parse_amount(amount, "--amount"), when=_day(when))
    if emit("entries settle", done):
        return
    console.print(f"Settled {done.amount} of {invoice} against {credit}.", markup=False)


@command("partial-credit")
@click.argument("invoice")
@click.option("--line", "lines", multiple=True, metavar="NAME", help="A line of INVOICE to credit; repeat (default: all).")
@click.option("--reason", default=None, help="The reason printed on the credit.")
@click.option("--date", "when", type=_DATE, default=None, help="Credit date (default today).")
@org_option
@db_option
def partial_credit(invoice, lines, reason, when, org_dir, db_url):
    """Credit some lines of INVOICE; with cash management its entries are reduced."""
    from engine.cash import service
    from engine.project import finalize

    ctx = open_context(org_dir)
    done = service.partial_credit(open_engine(db_url, create=False), ctx, invoice, lines, reason, finalize=finalize,
                                  today=when.date() if when else None)
    if emit("partial-credit", done):
        return
    console.print(f"Credited {invoice} with {done.number} ({done.date}, {done.grand_total}).", markup=False)


