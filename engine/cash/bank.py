"""Payment entries (bank statement lines) settled against invoices: automatic
assignment above the matching threshold, the review list below it, manual
assignment, and returned collections.

Every function works in the caller's transaction (``conn, ctx, ...``);
:mod:`.bank_service` wraps them into the commands' transactions.

* **Assigning** a line registers its amount as a payment on the invoice
  (:func:`.payments.register_payment`: overpayment policy, automatic
  write-off, bookings, the cash-management payment when the integration is
  on). The balance carries the line's bank reference as ``TransactionNo``
  and the line as ``PaymentEntry``; the line becomes ``Assigned`` with the
  invoice, its account, the score and a note saying why.
* **Splitting** a line whose text names several open invoices, or whose
  amount is the sum of several open invoices of the payer
  (:mod:`.splitting`), registers one payment per invoice and leaves what is
  over as a credit on the account.
* **Returns** (a debit marked as returned or reversed: camt ``RtrInf`` /
  ``RvslInd`` / bank transaction code, MT940 GVC 108/109/159/...) find the
  assigned line they return by end-to-end id (our collections carry the
  invoice number), and reverse its payment: a positive ``Payment`` balance
  of the returned amount on the same invoice (booked like the payment, the
  other way round), so the invoice is open again; with cash management on,
  the CM payment and its entry items are reversed too
  (:mod:`.bank_returns`). The bank's charge (``ChargebackFee``) is charged
  to the customer when ``GlobalSettings.ChargeReturnFees`` is on, else it
  stays on the line (docs: decisions of issue 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable

import sqlalchemy as sa

from engine.booking.balances import create_balance, refresh_accounts, refresh_invoices
from engine.domain.errors import Where
from engine.storage.bulk import update_by_id
from engine.storage.context import Context

from .bank_returns import charge_fee, hand_registered_balances, returned_balances, reverse_cm_payment
from .errors import BankAssignmentError, PaymentEntryNotFound, PaymentError
from .matching import Candidate, CandidateIndex, Decision, LineFacts, MatchingRules
from .payments import PaymentDetails, lock_invoice, register_account_payment, register_payment
from .splitting import settle_decision
from .statement_import import ASSIGNED, IGNORED, UNASSIGNED

RULE_RETURN = "bank return"


def update_entry(conn: sa.Connection, ctx: Context, entry_id: int, **values: object) -> None:
    """Set PaymentEntry fields (API names) of one line."""
    update_by_id(conn, ctx.obj("PaymentEntry"), list(values), [(entry_id, list(values.values()))])


def rules_of(ctx: Context) -> MatchingRules:
    """The org's matching rules and threshold."""
    return MatchingRules.from_records(ctx.model.setting_records("PaymentMatchingRule"),
                                      ctx.settings.payment_matching_threshold)


def facts(entry: dict) -> LineFacts:
    """What matching compares of a PaymentEntry row."""
    return LineFacts(amount=Decimal(entry["credit"] or entry["debit"] or 0), currency=entry["currencyisocode"],
                     booking_date=entry["bookingdate"], remittance=entry["reference"],
                     end_to_end_id=entry["endtoendid"], payer_iban=entry["customeriban"],
                     payer_name=entry["customername"], mandate_reference=entry["directdebitmandatereference"])


def candidates(conn: sa.Connection, ctx: Context, *, account: int | None = None,
               invoice: str | None = None) -> list[Candidate]:
    """The Open invoices that owe money (of one account, or one invoice), with
    the IBANs each account paid from (the invoice's own and those of lines
    assigned to the account before)."""
    invoices, accounts, entries = ctx.table("Invoice"), ctx.table("Account"), ctx.table("PaymentEntry")
    known: dict[int, set[str]] = {}
    learned = sa.select(entries.c.account, entries.c.customeriban).distinct().where(
        entries.c.status == ASSIGNED, entries.c.customeriban.is_not(None), entries.c.account.is_not(None))
    if account is not None:
        learned = learned.where(entries.c.account == account)
    for paid_by, iban in conn.execute(learned):
        known.setdefault(int(paid_by), set()).add(str(iban))
    query = (sa.select(invoices.c.id, invoices.c.name, invoices.c.account, invoices.c.balance, invoices.c.status,
                       invoices.c.currencyisocode, invoices.c.date, invoices.c.bankaccount,
                       invoices.c.directdebitmandatereference, accounts.c.name.label("account_name"))
             .join(accounts, accounts.c.id == invoices.c.account)
             .where(invoices.c.status == "Open", invoices.c.balance > 0).order_by(invoices.c.name))
    if account is not None:
        query = query.where(invoices.c.account == account)
    if invoice is not None:
        query = query.where(invoices.c.name == invoice)
    found = []
    for row in conn.execute(query).mappings():
        ibans = set(known.get(int(row["account"]), ()))
        if row["bankaccount"]:
            ibans.add(str(row["bankaccount"]).replace(" ", ""))
        found.append(Candidate(str(row["name"]), int(row["id"]), int(row["account"]), row["account_name"],
                               Decimal(row["balance"]), str(row["currencyisocode"]), row["date"], str(row["status"]),
                               frozenset(ibans), row["directdebitmandatereference"]))
    return found


def load_entry(conn: sa.Connection, ctx: Context, name: str, *, lock: bool = False) -> dict:
    """The PaymentEntry named ``name`` (``PE-000001``), or PaymentEntryNotFound."""
    entries = ctx.table("PaymentEntry")
    query = sa.select(entries).where(entries.c.name == name)
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise PaymentEntryNotFound(f"no payment entry {name}", where=Where(object="PaymentEntry", record=name),
                                   hint="metabill bank review lists the entries waiting for assignment")
    return dict(row)


@dataclass(frozen=True)
class Settled:
    """What happened to one line."""

    entry: str
    outcome: str                  # assigned, review, returned, ignored
    invoice: str | None
    amount: Decimal
    note: str


def assign(conn: sa.Connection, ctx: Context, entry: dict, invoice_name: str, *, run: str, score: int | None,
           note: str, transaction_no: str | None = None) -> Settled:
    """Register the line's money on ``invoice_name`` and mark it Assigned
    (the balance's TransactionNo is the line's bank reference, or
    ``transaction_no`` when the line was assigned before: :mod:`.bank_transfer`)."""
    where = Where(object="PaymentEntry", record=str(entry["name"]))
    if entry["status"] == ASSIGNED:
        raise BankAssignmentError(f"{entry['name']} is assigned already", where=where)
    if entry["isreturn"] or not entry["credit"]:
        raise BankAssignmentError(f"{entry['name']} is not money received (a debit or a return)", where=where)
    amount = Decimal(entry["credit"])
    details = PaymentDetails(reference=entry["reference"], payment_method="Bank Transfer",
                             bank_account_id=entry["customeriban"],
                             transaction_no=transaction_no or entry["externaltransactionid"],
                             extra={"paymententry": entry["id"]})
    try:
        registered = register_payment(conn, ctx, invoice_name, amount, entry["bookingdate"], details=details, run=run)
    except PaymentError as error:
        raise BankAssignmentError(f"{entry['name']} cannot be assigned to {invoice_name}: {error.message}",
                                  where=where, hint=error.hint) from None
    invoice = lock_invoice(conn, ctx, invoice_name)
    update_entry(conn, ctx, entry["id"], Status=ASSIGNED, Invoice=invoice["id"], Account=invoice["account"],
            MatchScore=score, MatchNote=note[:255], Run=run[:64], ConfigHash=ctx.config_hash)
    return Settled(str(entry["name"]), "assigned", invoice_name, registered.amount, note)


def assign_split(conn: sa.Connection, ctx: Context, entry: dict, decision: Decision, *, run: str) -> Settled:
    """Register a split line (:mod:`.splitting`): one payment per part, each
    under ``<bank reference>/p<n>`` (a transaction number is registered
    once), the remainder a free Payment balance (a credit) on the payer's
    account; the line becomes Assigned to the first part's invoice, its
    MatchNote lists every part."""
    where = Where(object="PaymentEntry", record=str(entry["name"]))
    if entry["status"] == ASSIGNED:
        raise BankAssignmentError(f"{entry['name']} is assigned already", where=where)
    if len(decision.parts) < 2:
        raise BankAssignmentError(f"{entry['name']}: a split needs at least two invoices", where=where)
    reference = str(entry["externaltransactionid"])
    first: dict | None = None
    for number, (invoice_name, amount) in enumerate(decision.parts, start=1):
        details = PaymentDetails(reference=entry["reference"], payment_method="Bank Transfer",
                                 bank_account_id=entry["customeriban"], transaction_no=f"{reference}/p{number}",
                                 extra={"paymententry": entry["id"]})
        try:
            register_payment(conn, ctx, invoice_name, amount, entry["bookingdate"], details=details, run=run)
        except PaymentError as error:
            raise BankAssignmentError(f"{entry['name']} cannot be split onto {invoice_name}: {error.message}",
                                      where=where, hint=error.hint) from None
        first = first or lock_invoice(conn, ctx, invoice_name)
    assert first is not None  # the loop ran: two parts at least (checked above)
    if decision.remainder > 0:
        accounts = ctx.table("Account")
        number = conn.execute(sa.select(accounts.c.accountnumber).where(accounts.c.id == first["account"])).scalar_one()
        details = PaymentDetails(reference=entry["reference"], payment_method="Bank Transfer",
                                 bank_account_id=entry["customeriban"], transaction_no=f"{reference}/rest",
                                 extra={"paymententry": entry["id"]})
        try:
            register_account_payment(conn, ctx, str(number), decision.remainder, entry["bookingdate"],
                                     details=details, run=run)
        except PaymentError as error:
            raise BankAssignmentError(f"{entry['name']}: the remainder cannot be registered: {error.message}",
                                      where=where, hint=error.hint) from None
    note = f"automatic: {decision.note()}"
    update_entry(conn, ctx, entry["id"], Status=ASSIGNED, Invoice=first["id"], Account=first["account"],
                 MatchScore=decision.score, MatchNote=note[:255], Run=run[:64], ConfigHash=ctx.config_hash)
    return Settled(str(entry["name"]), "split", ", ".join(name for name, _ in decision.parts),
                   Decimal(entry["credit"]), note)


def settle_lines(conn: sa.Connection, ctx: Context, entry_ids: Iterable[int], *, run: str) -> list[Settled]:
    """Returns first, then automatic assignment of the received lines among
    ``entry_ids`` (in position order); lines below the threshold get their
    reason as MatchNote and stay Unassigned (the review list)."""
    entries = ctx.table("PaymentEntry")
    ids = list(entry_ids)
    rows = [dict(r) for r in conn.execute(sa.select(entries).where(entries.c.id.in_(ids))
                                          .order_by(entries.c.bookingdate, entries.c.id)).mappings()] if ids else []
    done: list[Settled] = []
    for row in rows:
        if row["status"] == UNASSIGNED and row["isreturn"]:
            done.append(record_rejection(conn, ctx, row, run=run) if row["rejected"]
                        else reverse_returned(conn, ctx, row, run=run))
    rules = rules_of(ctx)
    index = CandidateIndex(candidates(conn, ctx), rules)
    for row in rows:
        if row["status"] != UNASSIGNED or row["isreturn"]:
            continue
        line = facts(row)
        shortlist = {c.invoice: c for c in [*index.shortlist(line), *index.payer_candidates(line)]}
        decision = settle_decision(line, sorted(shortlist.values(), key=lambda c: c.invoice), rules)
        if decision.outcome in ("assign", "split"):
            if decision.outcome == "assign":
                settled = assign(conn, ctx, row, decision.invoice or "", run=run, score=decision.score,
                                 note=f"automatic: {decision.note()}")
            else:
                settled = assign_split(conn, ctx, row, decision, run=run)
            done.append(settled)
            # the invoices' open amounts changed, and their account now paid from the line's IBAN
            paid = [name for name, _ in decision.parts] or [decision.invoice or ""]
            accounts = sorted({index.by_name[name].account_id for name in paid})
            reloaded = [c for account in accounts for c in candidates(conn, ctx, account=account)]
            for name in paid:
                index.remove(name)  # back only while it still owes money
            for changed in reloaded:
                index.add(changed)
        else:
            update_entry(conn, ctx, row["id"], MatchScore=decision.score, MatchNote=decision.note(), Run=run[:64])
            done.append(Settled(str(row["name"]), "review", None, Decimal(row["credit"]), decision.note()))
    return done


def returned_payment(conn: sa.Connection, ctx: Context, row: dict) -> tuple[str, str, bool] | None:
    """The invoice whose payment a returned line takes back, what was
    returned, and whether that is a statement line (its name) rather than a
    payment registered by hand: the assigned statement line with the same end-to-end id and
    amount (each earlier return of that id used one up), else the invoice
    numbered like the end-to-end id (our collections carry the invoice
    number, ``<number>/<installment>`` for installments) when it received at
    least that much that was not returned yet (a collection registered by
    hand or by a CSV import)."""
    e2e = row["endtoendid"]
    if not e2e:
        return None
    entries, invoices, balances = ctx.table("PaymentEntry"), ctx.table("Invoice"), ctx.table("Balance")
    amount = Decimal(row["debit"] or 0)
    returned = sa.select(entries.c.id).where(entries.c.isreturn.is_(True), entries.c.rejected.is_(False),
                                             entries.c.status == ASSIGNED, entries.c.endtoendid == e2e)
    originals = conn.execute(sa.select(entries.c.name, entries.c.invoice).where(
        entries.c.status == ASSIGNED, entries.c.isreturn.is_(False), entries.c.endtoendid == e2e,
        entries.c.credit == amount, entries.c.invoice.is_not(None))
        .order_by(entries.c.bookingdate, entries.c.id)).all()
    used = len(conn.execute(returned).all())
    if len(originals) > used:
        name, invoice_id = originals[used]
        number = conn.execute(sa.select(invoices.c.name).where(invoices.c.id == invoice_id)).scalar_one()
        return str(number), str(name), True
    number = str(e2e).split("/")[0]
    invoice = conn.execute(sa.select(invoices.c.id).where(invoices.c.name == number)).scalar()
    if invoice is None:
        return None
    paid = conn.execute(sa.select(
        sa.func.coalesce(sa.func.sum(sa.case((balances.c.amount < 0, -balances.c.amount), else_=0)), 0),
        sa.func.coalesce(sa.func.sum(sa.case((balances.c.amount > 0, balances.c.amount), else_=0)), 0))
        .where(balances.c.invoice == invoice, balances.c.type == "Payment")).one()
    if Decimal(paid[0]) - Decimal(paid[1]) >= amount:
        return number, f"the payment of {number}", False
    return None


def record_rejection(conn: sa.Connection, ctx: Context, row: dict, *, run: str) -> Settled:
    """A collection rejected before settlement (pain.002): no money moved, so
    nothing is booked; the line is assigned to the invoice numbered like its
    end-to-end id, which makes the collection count as returned (the mandate
    is not used by it; the audit does not count it as collected)."""
    amount = Decimal(row["debit"] or 0)
    invoices = ctx.table("Invoice")
    number = str(row["endtoendid"] or "").split("/")[0]
    invoice = conn.execute(sa.select(invoices.c.id, invoices.c.account).where(invoices.c.name == number)).first()
    reason = row["returnreason"] or "no reason"
    if invoice is None:
        note = f"rejected collection {row['endtoendid']} ({reason}): no invoice {number}; check it by hand"
        update_entry(conn, ctx, row["id"], MatchNote=note[:255], Run=run[:64])
        return Settled(str(row["name"]), "review", None, amount, note)
    note = f"collection of {number} rejected before settlement ({reason}): no money moved, nothing booked"
    update_entry(conn, ctx, row["id"], Status=ASSIGNED, Invoice=invoice.id, Account=invoice.account,
                 MatchNote=note[:255], Run=run[:64], ConfigHash=ctx.config_hash)
    return Settled(str(row["name"]), "rejected", number, amount, note)


def reverse_returned(conn: sa.Connection, ctx: Context, row: dict, *, run: str) -> Settled:
    """Reverse the payment a returned line takes back (see the module docstring)."""
    where = Where(object="PaymentEntry", record=str(row["name"]))
    amount = Decimal(row["debit"] or 0)
    found = returned_payment(conn, ctx, row)
    if found is not None and ctx.settings.cash_management_integration:
        invoice_name, what, from_line = found
        invoice = lock_invoice(conn, ctx, invoice_name)
        paid = (returned_balances(conn, ctx, what, invoice["id"]) if from_line
                else hand_registered_balances(conn, ctx, invoice["id"], amount))
        if paid is None:  # registered by hand, and the invoice's payments do not say which one came back
            note = (f"return of {row['endtoendid']} ({row['returnreason'] or 'no reason'}): {what} was registered "
                    f"by hand and {invoice_name} has no single cash-management payment of {amount}; "
                    "reverse the right payment and its entry items by hand")
            update_entry(conn, ctx, row["id"], MatchNote=note[:255], Run=run[:64])
            return Settled(str(row["name"]), "review", None, amount, note)
        note = reverse_cm_payment(conn, ctx, row, invoice, what, paid, run=run)
        return _returned(conn, ctx, row, invoice, amount, note, run=run)
    if found is None:
        note = (f"return of {row['endtoendid'] or 'an unknown collection'} ({row['returnreason'] or 'no reason'}): "
                "no payment received with this end-to-end id and amount; settle it by hand")
        update_entry(conn, ctx, row["id"], MatchNote=note[:255], Run=run[:64])
        return Settled(str(row["name"]), "review", None, amount, note)
    invoice_name, what, _ = found
    invoice = lock_invoice(conn, ctx, invoice_name)
    try:
        create_balance(conn, ctx, {"account": invoice["account"], "invoice": invoice["id"], "type": "Payment",
                                   "amount": amount, "date": row["bookingdate"],
                                   "reference": f"return {row['returnreason'] or ''} of {what}".replace("  ", " "),
                                   "transactionno": row["externaltransactionid"], "paymententry": row["id"],
                                   "paymentmethod": "Bank Transfer"},
                       invoice=invoice, rule=f"{RULE_RETURN} {row['returnreason'] or ''}".strip(), run=run)
    except Exception as error:  # BalanceError: a date or amount the books refuse
        raise BankAssignmentError(f"{row['name']}: the return cannot be booked: {error}", where=where) from None
    refresh_invoices(conn, ctx, [invoice["id"]])
    refresh_accounts(conn, ctx, [invoice["account"]])
    note = f"return ({row['returnreason'] or 'no reason'}) of {what} on {invoice['name']}: {amount} reopened"
    return _returned(conn, ctx, row, invoice, amount, note, run=run)


def _returned(conn: sa.Connection, ctx: Context, row: dict, invoice: dict, amount: Decimal, note: str, *,
              run: str) -> Settled:
    """The return's fee charged (or kept on the line) and the line assigned
    to the invoice as a return."""
    fee = Decimal(row["chargebackfee"] or 0)
    charged = charge_fee(conn, ctx, row, invoice, run=run)
    if charged:
        note += f"; bank fee {charged} charged to the customer"
    elif fee:
        note += f"; bank fee {fee} kept on the line"
    update_entry(conn, ctx, row["id"], Status=ASSIGNED, Invoice=invoice["id"], Account=invoice["account"],
                 MatchNote=note[:255], Run=run[:64], ConfigHash=ctx.config_hash)
    return Settled(str(row["name"]), "returned", str(invoice["name"]), amount, note)


def ignore(conn: sa.Connection, ctx: Context, entry: dict, *, reason: str, run: str) -> Settled:
    """Take a line off the review list without settling anything."""
    if entry["status"] == ASSIGNED:
        raise BankAssignmentError(f"{entry['name']} is assigned already",
                                  where=Where(object="PaymentEntry", record=str(entry["name"])))
    update_entry(conn, ctx, entry["id"], Status=IGNORED, MatchNote=f"ignored: {reason}"[:255], Run=run[:64])
    return Settled(str(entry["name"]), "ignored", None, Decimal(entry["credit"] or entry["debit"] or 0), reason)


def review_list(conn: sa.Connection, ctx: Context) -> list[tuple[dict, Decision]]:
    """The Unassigned lines with the decision matching takes on them now."""
    entries = ctx.table("PaymentEntry")
    rows = [dict(r) for r in conn.execute(sa.select(entries).where(entries.c.status == UNASSIGNED)
                                          .order_by(entries.c.bookingdate, entries.c.name)).mappings()]
    rules, pool = rules_of(ctx), candidates(conn, ctx)
    return [(row, settle_decision(facts(row), pool, rules)) for row in rows]


def explain_entry(conn: sa.Connection, ctx: Context, name: str) -> tuple[dict, Decision | None]:
    """The line and, for money received that waits or was assigned, the
    decision matching takes (for an assigned line: on the invoices open now)."""
    row = load_entry(conn, ctx, name)
    if row["isreturn"] or not row["credit"]:
        return row, None
    return row, settle_decision(facts(row), candidates(conn, ctx), rules_of(ctx))


__all__ = ["Settled", "assign", "assign_split", "candidates", "explain_entry", "facts", "ignore", "load_entry", "record_rejection",
           "returned_payment", "reverse_returned", "review_list", "rules_of", "settle_lines", "update_entry"]

