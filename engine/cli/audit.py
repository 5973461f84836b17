"""``metabill audit``: reconcile everything the engine wrote (engine/audit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from engine.cli.app import command, db_option, open_context, org_option

_FILE = click.Path(exists=False, dir_okay=False, path_type=Path)


@command("audit")
@click.option("--datev", "datev_files", multiple=True, type=_FILE, metavar="FILE",
              help="A DATEV Buchungsstapel written by 'metabill export datev'; repeat for several.")
@click.option("--sepa", "sepa_files", multiple=True, type=_FILE, metavar="FILE",
              help="A SEPA file written by 'metabill export sepa-*'; repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (engine/audit/README.md).")
@org_option
@db_option
def audit(datev_files, sepa_files, as_json, org_dir, db_url):
    """Reconcile the books: trial balance, invoices, balances, interim accounts,
    numbers, billing claims, DATEV and SEPA exports (with their files), issued
    documents. Exits 0 only when there is no difference."""
    from engine.audit import audit as run_audit
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    report = run_audit(open_engine(db_url, create=False), ctx, datev_files=datev_files, sepa_files=sepa_files)
    failure = report.failure_error()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str))
        if failure is not None:
            sys.exit(failure.exit_code)
        return
    for finding in report.findings:
        click.echo(finding.render())
    for line in report.summary_lines():
        click.echo(line)
    if failure is not None:
        raise failure
