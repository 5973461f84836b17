"""``metabill export ...``: the booking journal, the DATEV Buchungsstapel and the SEPA files."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from engine.cli.app import (
    Table,
    DATE,
    BusinessDate,
    UserError,
    console,
    db_option,
    emit,
    err_console,
    group,
    jsonable,
    open_context,
    org_option,
)


@group("export")
def export() -> None:
    """Export booking data (booking journal CSV, DATEV EXTF Buchungsstapel) and SEPA payment files."""


_DATE = DATE


@export.command("bookings")
@click.option("--format", "fmt", type=click.Choice(["csv"]), default="csv", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Default: stdout.")
@click.option("--invoice", "invoice_numbers", multiple=True, metavar="NO",
              help="Only the booking details of this invoice number; repeat for several.")
@click.option("--only-unexported", is_flag=True, help="Only booking details not exported yet.")
@org_option
@db_option
def bookings(fmt: str, out_file: Path | None, invoice_numbers: tuple[str, ...], only_unexported: bool,
             org_dir: Path, db_url: str | None) -> None:
    """Write the booking journal: one line per booking detail with its debit
    and credit account, ordered by booking date, invoice number and id."""
    from engine.exports.service import export_journal
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    written = export_journal(open_engine(db_url, create=False), ctx, out_file if out_file is not None else sys.stdout,
                             invoice_numbers=invoice_numbers, only_unexported=only_unexported)
    if out_file is not None and emit("export bookings", {"file": out_file, "rows": written.rows}):
        return  # (written to standard output, the journal itself is the result)
    err_console.print(f"Wrote {written.rows} booking detail(s)" + (f" to {out_file}." if out_file else "."),
                      markup=False)


@export.command("datev")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The EXTF file to write (must not exist). Default: EXTF_Buchungsstapel_<timestamp>.csv.")
@click.option("--force", is_flag=True, help="Export already exported booking details again.")
@click.option("--setting", "setting_name", default=None,
              help="The ExportSetting record with the DATEV parameters (default: the first active one with them).")
@click.option("--consultant", type=int, default=None, help="Beraternummer (1001-9999999).")
@click.option("--client", type=int, default=None, help="Mandantennummer (1-99999).")
@click.option("--fiscal-year-start", type=_DATE, default=None, help="Wirtschaftsjahresbeginn, YYYY-MM-DD.")
@click.option("--account-length", type=int, default=None, help="Sachkontenlänge (4-8).")
@click.option("--chart-of-accounts", default=None, help="Sachkontenrahmen for the header, e.g. 03 (SKR 03).")
@click.option("--from", "date_from", type=_DATE, default=None, help="First booking date (default: fiscal year start).")
@click.option("--to", "date_to", type=_DATE, default=None, help="Last booking date (default: fiscal year end).")
@click.option("--description", default=None, help="Bezeichnung of the batch (at most 30 characters).")
@org_option
@db_option
def datev(out_file: Path | None, force: bool, setting_name: str | None, consultant: int | None,
          client: int | None, fiscal_year_start: datetime | None, account_length: int | None,
          chart_of_accounts: str | None, date_from: datetime | None, date_to: datetime | None,
          description: str | None, org_dir: Path, db_url: str | None) -> None:
    """Export booking details to DATEV as an EXTF Buchungsstapel, create the
    accounting documents and mark the details exported (one transaction).
    Interim bookings of progress invoices are not exported; they are listed."""
    from engine.exports.datev import params_from_setting
    from engine.exports.service import export_datev_file
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    params = params_from_setting(
        ctx,
        setting_name,
        consultant=consultant,
        client=client,
        fiscal_year_start=fiscal_year_start.date() if fiscal_year_start else None,
        account_length=account_length,
        chart_of_accounts=chart_of_accounts,
        date_from=date_from.date() if date_from else None,
        date_to=date_to.date() if date_to else None,
        description=description,
    )
    exported = export_datev_file(open_engine(db_url, create=False), ctx, out_file, params, force=force)
    report, out_file = exported.report, exported.path
    if not emit("export datev", {"file": out_file if exported.written else None, "forced": force,
                                 "recovered": getattr(exported, "recovered", ()), **jsonable(report)}):
        _show_datev(exported, report, out_file, force)
    failure = report.failure_error()
    if failure is not None:
        raise failure


def _show_datev(exported, report, out_file: Path | None, force: bool) -> None:
    summary = Table(title="DATEV export" + (" (forced: exported details included)" if force else ""))
    summary.add_column("")
    summary.add_column("", justify="right")
    summary.add_row("booking dates", f"{report.date_from} .. {report.date_to}")
    summary.add_row("booking details exported", str(report.exported))
    if not force:
        summary.add_row("already exported (skipped)", str(report.already_exported))
    summary.add_row("not exportable (listed below)", str(len(report.excluded)))
    summary.add_row("accounting documents created", str(report.documents))
    summary.add_row("accounting document items created", str(report.items))
    console.print(summary)
    if report.excluded:
        listing = Table(title="Booking details not exported to DATEV")
        for column in ("detail", "type", "invoice", "date", "amount", "reason"):
            listing.add_column(column, justify="right" if column == "amount" else "left")
        for item in report.excluded:
            listing.add_row(item.name or str(item.detail_id), item.type, item.invoice_no or "",
                            str(item.booking_date or ""), str(item.amount), item.reason)
        console.print(listing)
    for batch in getattr(exported, "recovered", ()):
        console.print(f"Recovered the file of an earlier export: {batch.path} ({batch.details} detail(s), {batch.how}).",
                      markup=False)
    if exported.written:
        console.print(f"Wrote {report.exported} booking detail(s) to {out_file}.")
    else:
        console.print("Nothing to export: no file written.")


# ---------------------------------------------------------------------------
# SEPA (engine/exports/sepa.py)


def _sepa_options(date_option: str, date_help: str):
    """The options shared by the three SEPA commands."""

    def decorate(function):
        for option in reversed([
            click.option("--business-entity", "business_entity", required=True, metavar="NAME",
                         help="The BusinessEntity record whose invoices or balances are paid (creditor/payer)."),
            click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                         help="The XML file to write (must not exist); required unless --dry-run."),
            click.option(date_option, "when", type=_DATE, default=None, help=date_help),
            click.option("--setting", "setting_name", default=None,
                         help="The ExportSetting record (default: the first active one of the format)."),
            click.option("--created", type=BusinessDate(("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")), default=None,
                         help="Creation time of the message, YYYY-MM-DDTHH:MM:SS (default now); same input and "
                              "time give the same file."),
            click.option("--dry-run", is_flag=True, help="Check and list the orders; write neither file nor database."),
            org_option,
            db_option,
        ]):
            function = option(function)
        return function

    return decorate


def _run_sepa(kind: str, *, business_entity: str, out_file: Path | None, when: datetime | None,
              setting_name: str | None, created: datetime | None, dry_run: bool, force: bool, org_dir: Path,
              db_url: str | None) -> None:
    from engine.exports import service
    from engine.storage.db import open_engine

    if out_file is None and not dry_run:
        raise UserError("--out is required (or use --dry-run)", hint="give the XML file to write, or run with --dry-run")
    ctx = open_context(org_dir)
    engine = open_engine(db_url, create=False)
    day = when.date() if when else None
    common = dict(business_entity=business_entity, setting_name=setting_name, created=created, dry_run=dry_run)
    if kind == "sepa-debit":
        report = service.export_sepa_debit(engine, ctx, out_file, collection_date=day, force=force, **common)
    elif kind == "sepa-credit":
        report = service.export_sepa_credit(engine, ctx, out_file, execution_date=day, force=force, **common)
    else:
        report = service.export_sepa_balances(engine, ctx, out_file, execution_date=day, **common)
    document = {key: value for key, value in jsonable(report).items() if key != "data"}
    if not emit(f"export {kind}", {"file": out_file if report.data is not None and not dry_run else None,
                                   "dry_run": dry_run, "business_entity": business_entity, **document}):
        _show_sepa(kind, report, business_entity, out_file, dry_run)
    failure = report.failure_error()
    if failure is not None:
        raise failure


def _show_sepa(kind: str, report, business_entity: str, out_file: Path | None, dry_run: bool) -> None:
    from engine.exports.sepa import DUE_WINDOW_DAYS

    what = {"sepa-debit": "direct debits", "sepa-credit": "credit transfers",
            "sepa-balances": "credit transfers of free balances"}[kind]
    title = f"SEPA {report.message} ({what}), {business_entity}"
    summary = Table(title=title + (" - dry run, nothing written" if dry_run else ""))
    summary.add_column("")
    summary.add_column("", justify="right")
    summary.add_row("export setting", report.setting.name)
    summary.add_row("message id", report.message_id or "-")
    summary.add_row("orders", str(len(report.transactions)))
    summary.add_row("total (EUR)", f"{report.total:.2f}")
    if kind != "sepa-balances":
        summary.add_row("already exported (skipped)", str(len(report.already_exported)))
        summary.add_row("exported again (--force)", str(len(report.forced)))
    if kind == "sepa-debit":
        summary.add_row(f"not due within {DUE_WINDOW_DAYS} days", str(len(report.not_due)))
    summary.add_row("left out: SEPA data invalid", str(len(report.rejected)))
    if kind == "sepa-balances":
        summary.add_row("not paid: credit already refunded, paid out or owed", str(len(report.netted)))
    if not dry_run:
        if kind == "sepa-balances":
            summary.add_row("balances locked / reverse balances", f"{len(report.transactions)} / {report.reverse_balances}")
        else:
            summary.add_row("export history records", str(report.history_records))
    console.print(summary)
    if report.transactions:
        orders = Table(title="Orders")
        for column in ("reference", "date", "type", "amount", "account holder"):
            orders.add_column(column, justify="right" if column == "amount" else "left",
                              no_wrap=column != "account holder")
        for t in report.transactions:
            orders.add_row(t.end_to_end_id + (" (forced)" if t.forced else ""), str(t.when),
                           t.sequence_type or "TRF", f"{t.amount:.2f}", t.holder)
        console.print(orders)
    if report.rejected:
        listing = Table(title="Left out because of their SEPA data" + (
            "" if kind == "sepa-balances" or dry_run else " (written to SepaPaymentError)"))
        for column in ("record", "account", "amount", "reason"):
            listing.add_column(column, justify="right" if column == "amount" else "left")
        for item in report.rejected:
            listing.add_row(item.name, item.account_name or "", f"{item.amount:.2f}", item.reason)
        console.print(listing)
    if report.setting.create_payments:
        err_console.print(f"Note: ExportSetting {report.setting.name!r} has Create Payments on; SEPA exports do "
                          "not create payment balances (register the payments when the bank confirms).",
                          markup=False)
    if report.data is None:
        console.print("Nothing to export: no file written.")
    elif dry_run:
        console.print(f"Dry run: the file would hold {len(report.transactions)} order(s); nothing written.")
    else:
        console.print(f"Wrote {len(report.transactions)} order(s) to {out_file}.", markup=False)


@export.command("sepa-debit")
@_sepa_options("--collection-date", "Collection date (default: each invoice's due date, not before today).")
@click.option("--force", is_flag=True, help="Export invoices again that an earlier export locked.")
def sepa_debit(**options) -> None:
    """SEPA direct debits (pain.008.001.08; .02 with a Legacy setting) for the open SEPA invoices with a
    mandate. Invoices with invalid SEPA data are left out and get the reason in
    their SEPA Validation Error; each exported invoice gets an export history
    record."""
    _run_sepa("sepa-debit", **options)


@export.command("sepa-credit")
@_sepa_options("--execution-date", "Execution date (default: today).")
@click.option("--force", is_flag=True, help="Export invoices again that an earlier export locked.")
def sepa_credit(**options) -> None:
    """SEPA credit transfers (pain.001.001.09; .03 with a Legacy setting) paying out the negative open
    balance of SEPA invoices and credits."""
    _run_sepa("sepa-credit", **options)


@export.command("sepa-balances")
@_sepa_options("--execution-date", "Execution date (default: today).")
def sepa_balances(**options) -> None:
    """SEPA credit transfers (pain.001.001.09; .03 with a Legacy setting) paying out free Payment and
    Prepayment balances; each exported balance and its new reverse balance
    (type Payout) are locked."""
    _run_sepa("sepa-balances", force=False, **options)


@export.command("recover")
@org_option
@db_option
def recover(org_dir: Path, db_url: str | None) -> None:
    """Write the file of every export (DATEV, SEPA) whose process died after
    it was recorded but before the file got its name."""
    from engine.exports.service import recover_export_files
    from engine.storage.db import open_engine

    ctx = open_context(org_dir)
    written = recover_export_files(open_engine(db_url, create=False), ctx)
    if emit("export recover", {"files": written}):
        return
    for batch in written:
        console.print(f"Wrote {batch.path} ({batch.destination}, {batch.details} record(s), {batch.how}).",
                      markup=False)
    if not written:
        console.print("Every export's file is in place: nothing to recover.")
