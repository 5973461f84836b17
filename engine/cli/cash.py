"""Cash commands: ``metabill payment ...``, ``write-off``, ``collect-balances``, ``jobs ...``.

Every command that changes data is one transaction (``engine.begin()``; payment registrations
through ``run_in_transaction``, which runs them again after a PostgreSQL serialization failure).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from engine.cli.app import (
    Table,
    DATE,
    UserError,
    command,
    console,
    db_option,
    emit,
    err_console,
    group,
    jsonable,
    open_context,
    org_option,
    parse_amount,
)
from engine.storage.db import open_engine

_DATE = DATE






def _details(reference, method, provider, bank_account, transaction, key):
    from engine.cash.payments import PaymentDetails

    return PaymentDetails(reference=reference, payment_method=method, payment_provider=provider,
                          bank_account_id=bank_account, transaction_no=transaction, assignment_key=key)


def _payment_options(function):
    for option in reversed((
        click.option("--reference", default=None, help="Bank reference text."),
        click.option("--payment-method", "method", default=None, help="Balance payment method (e.g. Bank Transfer)."),
        click.option("--payment-provider", "provider", default=None, help="Payment provider (collective-account criterion)."),
        click.option("--bank-account-id", "bank_account", default=None, help="IBAN or provider account the money came through."),
        click.option("--transaction-no", "transaction", default=None,
                     help="Bank transaction number; a number is registered once."),
    )):
        function = option(function)
    return function


@group("payment")
def payment() -> None:
    """Payments received and paid back."""


@payment.command("register")
@click.argument("invoice")
@click.argument("amount")
@click.option("--date", "when", type=_DATE, required=True, help="The date the money arrived.")
@_payment_options
@org_option
@db_option
def payment_register(invoice, amount, when, reference, method, provider, bank_account, transaction, org_dir, db_url):
    """Register AMOUNT received on INVOICE (its number): balance, bookings,
    overpayment policy (AllowOverpayments) and automatic write-off."""
    from engine.cash import service

    value = parse_amount(amount)
    ctx = open_context(org_dir)
    done = service.register_payment(open_engine(db_url, create=False), ctx, invoice, value, when.date(),
                                    details=_details(reference, method, provider, bank_account, transaction, None))
    if emit("payment register", done):
        return
    console.print(f"Registered {done.amount} on {done.invoice_name}: open amount {done.invoice_balance}, "
                  f"status {done.status}.")
    if done.free_amount:
        console.print(f"The overpayment of {done.free_amount} is a free balance on the account "
                      "(AllowOverpayments is off).")
    if done.written_off:
        console.print(f"Wrote off the remaining {done.written_off} (Missing amount below threshold).")


@payment.command("on-account")
@click.argument("account")
@click.argument("amount")
@click.option("--date", "when", type=_DATE, required=True, help="The date the money arrived.")
@click.option("--type", "balance_type", type=click.Choice(["Payment", "Prepayment"]), default="Payment",
              show_default=True)
@click.option("--assignment-key", "key", default=None, help="Balance assignment key: only invoices with this key take it.")
@_payment_options
@org_option
@db_option
def payment_on_account(account, amount, when, balance_type, key, reference, method, provider, bank_account,
                       transaction, org_dir, db_url):
    """Register AMOUNT received from ACCOUNT (its account number) without an
    invoice: a free balance, for the assignment job."""
    from engine.cash import service

    value = parse_amount(amount)
    ctx = open_context(org_dir)
    done = service.register_account_payment(open_engine(db_url, create=False), ctx, account, value, when.date(),
                                            balance_type=balance_type,
                                            details=_details(reference, method, provider, bank_account, transaction, key))
    if emit("payment on-account", done):
        return
    console.print(f"Registered {balance_type} {done.amount} on account {account}: account balance {done.account_balance}.")


@payment.command("refund")
@click.argument("amount")
@click.option("--invoice", default=None, help="The invoice (number) whose credit is paid back.")
@click.option("--account", default=None, help="The account (number) whose free credit is paid back.")
@click.option("--date", "when", type=_DATE, required=True, help="The date the money left.")
@_payment_options
@org_option
@db_option
def payment_refund(amount, invoice, account, when, reference, method, provider, bank_account, transaction, org_dir,
                   db_url):
    """Pay AMOUNT back to the customer: a Refund balance on --invoice or --account."""
    from engine.cash import service

    value = parse_amount(amount)
    ctx = open_context(org_dir)
    done = service.register_refund(open_engine(db_url, create=False), ctx, value, when.date(), invoice=invoice, account=account,
                                   details=_details(reference, method, provider, bank_account, transaction, None))
    if emit("payment refund", done):
        return
    console.print(f"Registered refund {done.name} of {value} on {done.target}.")


@payment.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@org_option
@db_option
def payment_import(file, org_dir, db_url):
    """Import payments from a CSV FILE (columns Invoice or Account, Amount,
    Date, optional Type, Reference, PaymentMethod, PaymentProvider,
    BankAccountId, TransactionNo, BalanceAssignmentKey). All or nothing."""
    from engine.cash import service

    ctx = open_context(org_dir)
    report = service.import_payments(open_engine(db_url, create=False), ctx, file)
    if emit("payment import", report):
        return
    for line in report.skipped:
        err_console.print(line, markup=False)
    console.print(f"Imported {report.registered} row(s) from {file} ({report.total} in total); "
                  f"{len(report.skipped)} skipped.")


@command("write-off")
@click.argument("invoice")
@click.argument("amount", required=False)
@click.option("--reason", required=True, help="A Balance.WriteOffReason value, e.g. Uncollectible.")
@click.option("--date", "when", type=_DATE, default=None, help="Write-off date (default today).")
@click.option("--no-tax", is_flag=True, help="Book the gross amount without a tax correction (Calculate Tax off).")
@org_option
@db_option
def write_off_cmd(invoice, amount, reason, when, no_tax, org_dir, db_url):
    """Write off AMOUNT (default: everything open) of INVOICE, with a reason."""
    from engine.cash import service

    value = parse_amount(amount) if amount is not None else None
    ctx = open_context(org_dir)
    done = service.write_off(open_engine(db_url, create=False), ctx, invoice, value, reason=reason,
                             when=when.date() if when else None, calculate_tax=not no_tax)
    if emit("write-off", done):
        return
    console.print(f"Wrote off {done.amount} of {invoice} ({reason}) as {done.name}.")


@command("collect-balances")
@click.option("--business-entity", "entity", required=True, help="The BusinessEntity record whose balances are collected.")
@click.option("--date", "when", type=_DATE, default=None, help="Today for the statute of limitations (default today).")
@click.option("--dry-run", is_flag=True, help="List the collectable balances; change nothing.")
@org_option
@db_option
def collect_balances_cmd(entity, when, dry_run, org_dir, db_url):
    """Collect free Payment/Prepayment balances past the statute of
    limitations by writing them off (locked, with bookings)."""
    from engine.cash import service

    ctx = open_context(org_dir)
    report = service.collect_balances(open_engine(db_url, create=False), ctx, entity, today=when.date() if when else None,
                                      dry_run=dry_run)
    if emit("collect-balances", {"dry_run": dry_run, **jsonable(report)}):
        return
    table = Table(title=f"Balances of {entity} dated before {report.cutoff}"
                  + (" (dry run: nothing written)" if dry_run else " (collected)"))
    for column in ("balance", "account", "type", "date", "amount"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for item in report.balances:
        table.add_row(item.name, item.account_name or str(item.account_id), item.type, str(item.date), str(item.amount))
    console.print(table)
    verb = "would collect" if dry_run else "collected"
    console.print(f"{len(report.balances)} balance(s) {verb}, {report.total} in total.")


@group("jobs")
def jobs() -> None:
    """Scheduled jobs (JobSchedule settings): run, list, next fire times, tick."""


@jobs.command("run")
@click.argument("job")
@click.option("--date", "when", type=_DATE, default=None, help="The job's today (default today).")
@org_option
@db_option
def jobs_run(job, when, org_dir, db_url):
    """Run JOB now (e.g. AssignBalancesChain), in one transaction."""
    from engine.cash import service

    ctx = open_context(org_dir)
    run, summary = service.run_job(open_engine(db_url, create=False), ctx, job, today=when.date() if when else None)
    if emit("jobs run", {"job": job, "run": run, "summary": summary}):
        return
    console.print(f"{job} ({run}): {summary}.")


def _parse_at(at: str | None) -> datetime:
    if at is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise UserError(f"--at: expected an ISO date-time like 2024-10-27T02:30+01:00, got {at!r}") from None
    if moment.tzinfo is None:
        raise UserError("--at: give the UTC offset (e.g. 2024-10-27T02:30+01:00 or ...Z)")
    return moment


@jobs.command("list")
@click.option("--at", default=None, help="Now, as an ISO date-time with offset (default: now).")
@org_option
@db_option
def jobs_list(at, org_dir, db_url):
    """The job schedules with their next run and last executed slot."""
    from engine.cash import service

    now = _parse_at(at)
    ctx = open_context(org_dir)
    engine = open_engine(db_url, create=False) if db_url is not None or Path("metabill.db").exists() else None
    statuses = service.list_jobs(engine, ctx, now)
    if emit("jobs list", {"schedules": statuses}):
        return
    table = Table(title="Job schedules")
    for column in ("name", "job", "cron", "time zone", "active", "next run", "last slot"):
        table.add_column(column)
    for status in statuses:
        schedule = status.schedule
        if status.invalid is not None:
            upcoming = f"invalid: {status.invalid}"
        else:
            upcoming = status.next_run.isoformat() if status.next_run else "-"
        runnable = "" if status.available else " (not available)"
        table.add_row(schedule.name, schedule.job + runnable, schedule.cron, schedule.time_zone,
                      "yes" if schedule.active else "no", upcoming, status.last_slot or "-")
    console.print(table)


@jobs.command("next")
@click.option("--count", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option("--at", default=None, help="Start after this ISO date-time with offset (default: now).")
@org_option
def jobs_next(count, at, org_dir):
    """The next COUNT fire times over all active schedules (one per slot:
    the repeated hour of a daylight-saving change fires once)."""
    from engine.cash import service

    ctx = open_context(org_dir)
    upcoming = service.next_runs(ctx, _parse_at(at), count)
    if emit("jobs next", {"next": [{"at": moment, "job": schedule.job, "schedule": schedule.name}
                                   for moment, schedule in upcoming]}):
        return
    for moment, schedule in upcoming:
        click.echo(f"{moment.isoformat()}  {moment.astimezone(timezone.utc):%Y-%m-%dT%H:%MZ}  "
                   f"{schedule.job}  ({schedule.name})")


@jobs.command("tick")
@click.option("--at", default=None, help="Now, as an ISO date-time with offset (default: now).")
@org_option
@db_option
def jobs_tick(at, org_dir, db_url):
    """Run each active schedule's due slot that has not run yet (call this
    every few minutes from the system's scheduler)."""
    from engine.cash import service
    from engine.project import finalize_drafts

    ctx = open_context(org_dir)
    results = list(service.tick(open_engine(db_url, create=False), ctx, _parse_at(at), finalize=finalize_drafts))
    if emit("jobs tick", {"schedules": results}):
        return
    for result in results:
        state = "ran" if result.ran else "skipped"
        click.echo(f"{result.schedule} [{result.job}] slot {result.slot or '-'}: {state}: {result.summary}")


