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
from decimal import Decimal, InvalidOperation

import click
from engine.cli.app import UserError, command, console, db_option, err_console, group, open_context, org_option

_DATE = click.DateTime(["%Y-%m-%d"])


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
    from engine.cash.cm_core import CashManagementError
    from engine.cash.fixtasks import TASK_ENTRIES, create_or_fix_entries, create_payments_and_migrate_balances
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    if enable_integration and not ctx.settings.cash_management_integration:
        ctx = ctx.with_settings(ctx.settings.with_cash_management(),
                                "GlobalSettings.EnableCashManagementIntegration=true")
    engine = open_engine(db_url)
    failed = 0
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            for task in tasks:
                console.print(f"-- {task}", markup=False)
                run = create_or_fix_entries if task == TASK_ENTRIES else create_payments_and_migrate_balances
                changes = run(conn, ctx, list(names) or None, when=_day(when))
                _render_changes(changes, dry_run)
                failed += len(changes.errors)
        except CashManagementError as error:
            transaction.rollback()
            raise UserError(str(error)) from None
        except BaseException:
            transaction.rollback()
            raise
        if dry_run:
            transaction.rollback()
        else:
            transaction.commit()
    if failed:
        raise UserError(f"{failed} problem(s); see CM_IntegrationError__c of the invoices named above")


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
    from engine.cash.cm_core import CashManagementError
    from engine.cash.cm_plans import change_payment_plan
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)

    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            changes = change_payment_plan(conn, ctx, invoice, None if plan.lower() == "none" else plan, _day(when))
    except CashManagementError as error:
        raise UserError(str(error)) from None
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
    import sqlalchemy as sa

    from engine.cash.cm_core import table
    from engine.storage.db import open_engine, transaction

    ctx = open_context(org_dir)

    engine = open_engine(db_url)
    with transaction(engine, readonly=True) as conn:
        e, i, r, inv = (table(ctx, n) for n in ("Entry", "EntryItem", "Reduction", "Invoice"))
        query = sa.select(e).order_by(e.c.invoice, e.c.duedate, e.c.id)
        if names:
            query = query.where(e.c.invoice.in_(sa.select(inv.c.id).where(inv.c.name.in_(names))))
        if not show_all:
            query = query.where(e.c.status != "Canceled")
        rows = [dict(x) for x in conn.execute(query).mappings()]
        ids = [x["id"] for x in rows]
        items = dict(conn.execute(sa.select(i.c.entry, sa.func.count()).where(i.c.entry.in_(ids)).group_by(i.c.entry)).all()) if ids else {}
        reductions = dict(conn.execute(sa.select(r.c.entry, sa.func.count()).where(r.c.entry.in_(ids)).group_by(r.c.entry)).all()) if ids else {}
    # Plain fixed-width lines: readable in a terminal and in a log, never truncated.
    header = f"{'entry':<11} {'statement':<32} {'due':<10} {'open amount':>12} {'outstanding':>12} {'status':<8} items reductions"
    click.echo(header)
    for row in rows:
        statement = f"{row['statementtype']} {row['statementno']}"
        click.echo(f"{row['name']:<11} {statement:<32} {str(row['duedate'] or ''):<10} {row['openamount']!s:>12} "
                   f"{row['amount']!s:>12} {row['status']:<8} {items.get(row['id'], 0):>5} {reductions.get(row['id'], 0):>10}")
    click.echo(f"{len(rows)} entr(y/ies).")


def _amount(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise click.BadParameter(f"{text!r} is not an amount such as 100.00") from None


@entries.command("settle")
@click.argument("invoice")
@click.argument("credit")
@click.option("--amount", default=None, help="Amount to settle (default: as much as both allow).")
@click.option("--date", "when", type=_DATE, default=None, help="Settlement date (default today).")
@org_option
@db_option
def entries_settle(invoice, credit, amount, when, org_dir, db_url):
    """Offset INVOICE against the credit CREDIT of the same account (entry settlement)."""
    from engine.cash.cm_core import CashManagementError
    from engine.cash.cm_settlement import settle_invoices
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)

    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            settled = settle_invoices(conn, ctx, invoice, credit, _amount(amount), _day(when))
    except CashManagementError as error:
        raise UserError(str(error)) from None
    console.print(f"Settled {settled} of {invoice} against {credit}.", markup=False)


@command("partial-credit")
@click.argument("invoice")
@click.option("--line", "lines", multiple=True, metavar="NAME", help="A line of INVOICE to credit; repeat (default: all).")
@click.option("--reason", default=None, help="The reason printed on the credit.")
@click.option("--date", "when", type=_DATE, default=None, help="Credit date (default today).")
@org_option
@db_option
def partial_credit(invoice, lines, reason, when, org_dir, db_url):
    """Credit some lines of INVOICE; with cash management its entries are reduced."""
    from engine.cash.cm_core import CashManagementError
    from engine.cash.cm_settlement import create_partial_credit
    from engine.project import finalize
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)

    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            draft = create_partial_credit(conn, ctx, invoice, list(lines), reason)
    except CashManagementError as error:
        raise UserError(str(error)) from None
    report = finalize(engine, ctx, [draft], today=when.date() if when else None)
    for _, message in report.failures:
        raise UserError(f"the credit for {invoice} could not be finalized: {message}")
    item = report.finalized[0]
    console.print(f"Credited {invoice} with {item.number} ({item.date}, {item.grand_total}).", markup=False)


COMMANDS = (fix_invoices, payment_plan, entries, partial_credit)
