"""Recurring billing's command: ``build-subscriptions``."""

from __future__ import annotations

import click

from engine.cli.app import DATE, command, console, db_option, open_context, org_option


@command("build-subscriptions")
@click.option("--filter", "filter_name", required=True, help="A Filter record of use case SubscriptionBuilder.")
@click.option("--dry-run", is_flag=True, help="Show what would be built; change nothing.")
@click.option("--date", "today", type=DATE, default=None, help="The day relative dates are evaluated against.")
@org_option
@db_option
def build_subscriptions_cmd(filter_name, dry_run, today, org_dir, db_url):
    """Build subscriptions (and items) from the filter's records (closed-won
    opportunities and their products); records already built are skipped."""
    from engine.billing.service import build_subscriptions_of

    ctx = open_context(org_dir)
    report = build_subscriptions_of(db_url, ctx, filter_name, dry_run=dry_run,
                                    today=today.date() if today else None)
    prefix = "(dry run) would build" if dry_run else "Built"
    console.print(f"{prefix} {report.subscriptions} subscription(s) with {report.items} item(s) from "
                  f"{report.records_read} record(s); {report.extended} record(s) added to a master subscription; "
                  f"{len(report.failures)} record error(s).")
    failure = report.failure_error()
    if failure is not None:
        raise failure
