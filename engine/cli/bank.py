"""Bank commands: ``metabill bank import|review|assign|reassign|ignore|explain`` and
``metabill instrument add|list|from-accounts``.

Bank statements (camt.053, camt.054, MT940) in, their lines matched to open
invoices by the PaymentMatchingRule settings; each command calls one service
of :mod:`engine.cash.bank_service` and renders its result. Commands that
change data are one transaction; ``import --dry-run`` runs the same work and
rolls it back.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine.cli.app import DATE, console, db_option, group, open_context, org_option
from engine.storage.db import open_engine


@group("bank")
def bank() -> None:
    """Bank statements in: import, review, assign, explain."""


@bank.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-match", is_flag=True, help="Only store the lines; assign nothing.")
@click.option("--dry-run", is_flag=True, help="Do everything, then roll it back.")
@org_option
@db_option
def bank_import(file, no_match, dry_run, org_dir, db_url):
    """Import a bank statement FILE (camt.053, camt.054 or MT940): all or
    nothing, each statement and line once; returns reopen their invoice,
    received money is assigned when matching is sure, the rest waits for
    review."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    done = bank_service.import_statement(open_engine(db_url, create=False), ctx, file, dry_run=dry_run, settle=not no_match)
    prefix = "Dry run: would have imported" if dry_run else "Imported"
    console.print(f"{prefix} {done.format} {file}: {len(done.statements)} statement(s), {done.entries} line(s); "
                  f"{done.count('assigned')} assigned, {done.count('returned')} returned, "
                  + (f"{done.count('split')} split over several invoices, " if done.count("split") else "")
                  + (f"{done.count('rejected')} rejected, " if done.count("rejected") else "") +
                  f"{done.count('review')} for review.", markup=False)
    for settled in done.settled:
        target = f" -> {settled.invoice}" if settled.invoice else ""
        console.print(f"  {settled.entry} {settled.amount:>12} {settled.outcome}{target}: {settled.note}", markup=False)
    for skipped in done.skipped:
        console.print(f"  skipped: {skipped}", markup=False)


@bank.command("review")
@org_option
@db_option
def bank_review(org_dir, db_url):
    """List the statement lines waiting for a decision, with the best candidate."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    waiting = bank_service.review(open_engine(db_url, create=False), ctx)
    click.echo(f"{'entry':<10} {'booked':<10} {'amount':>12} {'payer':<28} {'best candidate':<16} {'score':>5}  text")
    for row, decision in waiting:
        amount = row["credit"] if row["credit"] is not None else -(row["debit"] or 0)
        best = decision.best
        click.echo(f"{row['name']:<10} {row['bookingdate']!s:<10} {amount!s:>12} {(row['customername'] or '')[:28]:<28} "
                   f"{best.candidate.invoice if best else '-':<16} {decision.score:>5}  {(row['reference'] or '')[:50]}")
    click.echo(f"{len(waiting)} line(s) to review; metabill bank explain ENTRY shows why, "
               "metabill bank assign ENTRY INVOICE decides.")


@bank.command("assign")
@click.argument("entry")
@click.argument("invoice")
@org_option
@db_option
def bank_assign(entry, invoice, org_dir, db_url):
    """Assign the statement line ENTRY (PE-...) to INVOICE: its amount is
    registered as a payment there."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    done = bank_service.assign_entry(open_engine(db_url, create=False), ctx, entry, invoice)
    console.print(f"Assigned {done.entry} ({done.amount}) to {done.invoice}.", markup=False)


@bank.command("reassign")
@click.argument("entry")
@click.argument("invoice")
@click.option("--date", "when", type=DATE, default=None, help="Date of the move (default today).")
@org_option
@db_option
def bank_reassign(entry, invoice, when, org_dir, db_url):
    """Move the payment of the assigned line ENTRY to INVOICE (of the same or
    another account): the old payment is reversed, the new one registered,
    both booked."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    done = bank_service.reassign_entry(open_engine(db_url, create=False), ctx, entry, invoice, when=when.date() if when else None)
    console.print(f"Moved {done.entry} ({done.amount}) to {done.invoice}.", markup=False)


@bank.command("refunds")
@click.option("--business-entity", "entity", required=True, help="The business entity whose credit balances are handled.")
@click.option("--strategy", type=click.Choice(["Future Settlement", "Prepared Refund", "Direct Refund"]), default=None,
              help="Override the entity's CreditBalanceStrategy.")
@click.option("--date", "when", type=DATE, default=None, help="Date of the refunds (default today).")
@click.option("--dry-run", is_flag=True, help="Do everything, then roll it back.")
@org_option
@db_option
def bank_refunds(entity, strategy, when, dry_run, org_dir, db_url):
    """Apply the credit balance strategy to the entity's credit balances (free
    credit of accounts, open credit invoices)."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    done = bank_service.refunds(open_engine(db_url, create=False), ctx, entity, strategy=strategy,
                                when=when.date() if when else None, dry_run=dry_run)
    console.print(f"{done.strategy}: {len(done.credits)} credit balance(s), {done.total} in all.", markup=False)
    refunded = {credit.target: name for credit, name in done.refunded}
    for credit in done.credits:
        what = (f"refunded ({refunded[credit.target]})" if credit.target in refunded
                else "paid out by the next SEPA credit export" if done.strategy == "Prepared Refund"
                else "kept for later invoices")
        console.print(f"  {credit.target:<16} {credit.amount:>12}  {what}", markup=False)


@bank.command("ignore")
@click.argument("entry")
@click.option("--reason", required=True, help="Why the line needs no assignment.")
@org_option
@db_option
def bank_ignore(entry, reason, org_dir, db_url):
    """Take the statement line ENTRY off the review list; nothing is settled."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    done = bank_service.ignore_entry(open_engine(db_url, create=False), ctx, entry, reason=reason)
    console.print(f"Ignored {done.entry}: {reason}.", markup=False)


@bank.command("explain")
@click.argument("entry")
@org_option
@db_option
def bank_explain(entry, org_dir, db_url):
    """Show how the statement line ENTRY was or would be matched: every
    candidate invoice, every rule's points, and the decision."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    row, decision = bank_service.explain_entry(open_engine(db_url, create=False), ctx, entry)
    amount = row["credit"] if row["credit"] is not None else -(row["debit"] or 0)
    click.echo(f"{row['name']}: {amount} {row['currencyisocode']} booked {row['bookingdate']}, status {row['status']}")
    click.echo(f"  payer {row['customername'] or '-'} {row['customeriban'] or ''}; text {row['reference'] or '-'}; "
               f"end-to-end id {row['endtoendid'] or '-'}")
    if row["matchnote"]:
        click.echo(f"  recorded: {row['matchnote']}")
    if decision is None:
        click.echo("  not money received: matching does not apply" + (" (a return)" if row["isreturn"] else ""))
        return
    for line in decision.lines():
        click.echo(line)


@group("instrument")
def instrument() -> None:
    """Payment instruments: customers' bank accounts and SEPA mandates."""


@instrument.command("add")
@click.argument("account")
@click.option("--iban", required=True, help="The customer's IBAN (checked with schwifty).")
@click.option("--bic", default=None, help="The BIC (derived from a German or Austrian IBAN when left out).")
@click.option("--holder", default=None, help="The account holder.")
@click.option("--mandate", default=None, help="SEPA mandate reference: makes it a SEPA Direct Debit instrument.")
@click.option("--signed", type=DATE, default=None, help="The mandate's date of signature.")
@click.option("--not-default", is_flag=True, help="Keep the account's current default instrument.")
@click.option("--used-before", is_flag=True, help="The mandate was collected before: its next collection is RCUR.")
@org_option
@db_option
def instrument_add(account, iban, bic, holder, mandate, signed, not_default, used_before, org_dir, db_url):
    """Add a payment instrument to ACCOUNT (its account number)."""
    from engine.cash import bank_service
    from engine.cash.instruments import BANK_ACCOUNT, DIRECT_DEBIT, InstrumentInput

    ctx = open_context(org_dir)
    given = InstrumentInput(account, DIRECT_DEBIT if mandate else BANK_ACCOUNT, iban, bic, holder, mandate,
                            signed.date() if signed else None, default=not not_default, used_before=used_before)
    row = bank_service.add_instrument(open_engine(db_url, create=False), ctx, given)
    console.print(f"Added {row['name']} ({row['type']}, {row['iban']}, BIC {row['bic'] or '-'}) to account "
                  f"{account}.", markup=False)


@instrument.command("from-accounts")
@click.option("--dry-run", is_flag=True, help="Check and report, then roll back.")
@org_option
@db_option
def instrument_from_accounts(dry_run, org_dir, db_url):
    """Make instruments from the accounts' bank fields (ON_BankAccount__c ...)."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    done = bank_service.instruments_from_accounts(open_engine(db_url, create=False), ctx, dry_run=dry_run)
    for line in done.created:
        console.print(f"{'would create' if dry_run else 'created'} {line}", markup=False)
    for line in done.skipped:
        console.print(f"skipped {line}", markup=False)
    console.print(f"{len(done.created)} instrument(s), {len(done.skipped)} account(s) skipped.", markup=False)


@instrument.command("list")
@org_option
@db_option
def instrument_list(org_dir, db_url):
    """List the payment instruments."""
    from engine.cash import bank_service

    ctx = open_context(org_dir)
    rows = bank_service.list_instruments(open_engine(db_url, create=False), ctx)
    for row in rows:
        flags = ", ".join(f for f, on in (("default", row["isdefault"]), ("inactive", not row["active"])) if on)
        click.echo(f"{row['name']:<10} {row['accountnumber']:<8} {row['type']:<18} {row['iban']:<34} "
                   f"{row['bic'] or '-':<11} {row['mandatereference'] or '-':<20} {row['mandatesignaturedate'] or '-'!s:<10} "
                   f"{flags}")
    click.echo(f"{len(rows)} instrument(s).")
