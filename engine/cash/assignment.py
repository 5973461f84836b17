"""The balance assignment job ``AssignBalancesChain`` (domain-spec §4.6).

Free balances (no invoice) are assigned to open invoices of the same
account. Per account, in this order:

1. balances oldest first: ``Date``, then ``Name``;
2. for each balance, the open invoices it may go to, oldest due first:
   ``PaymentDueDate`` (missing last), then ``Date``, then ``Name``.

A balance may go to an invoice when both are in the same currency and carry
the same balance assignment key (both empty, or equal): a key on either side
restricts it to the other side's same key. A credit balance (negative: a
payment, prepayment, write-off ...) goes to invoices with a positive open
amount; a debit balance (positive: refund, payout ...) to invoices with a
negative one (credits, overpaid invoices).

Left alone: draft balances, locked balances (the ``Locked`` formula),
balances with ``NoAutoAssignment``, cash-management balances (``Origin``
JPAY1), Invoice and Prepaid balances; accounts with
``ON_NoAutoBalanceAssignment__c``; invoices with
``ON_NoAutoBalanceAssignment__c``, and Progress, Deposit and cancellation
invoices (a progress or deposit invoice's payments carry interim bookings
that an assignment, which books nothing, could not make).

A balance larger than what the invoice still needs is split: a new balance
of the needed amount, on the invoice, with ``SplitFrom`` = the original (its
root, when the original was split off itself), all other attributes copied;
the original keeps the rest, free. The job never overpays an invoice, with
or without ``AllowOverpayments``. Assigning and splitting book nothing:
booking is per money flow and stays with the original balance (§4.5).

The work is set-based per batch of accounts (keyset pages by account id):
reads of the free balances and open invoices, then one executemany each for
assignments, amount changes and inserted split parts, then the invoice and
account sums are recomputed. Running it again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Collection

import sqlalchemy as sa

from engine.booking.balances import refresh_accounts, refresh_invoices
from engine.domain.money import ZERO
from engine.domain.values import read_value
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context
from engine.storage.schema import CREATED, ID, MODIFIED, NAME

JOB_NAME = "AssignBalancesChain"
RULE_SPLIT = "AssignBalancesChain: split"
CASH_MANAGEMENT_ORIGIN = "JPAY1"
NOT_ASSIGNED_TYPES = ("Invoice", "Prepaid")
NO_ASSIGNMENT_INVOICE_TYPES = ("Progress", "Deposit", "Cancelation")
ACCOUNT_PAGE = 500
#: Invoice ids given as one IN list (more are filtered after reading).
ID_LIST = 400


@dataclass
class AssignmentReport:
    """What one run of the assignment job moved."""

    assigned: int = 0          # balances assigned whole
    split: int = 0             # balances split (one part assigned)
    amount: Decimal = ZERO     # total |amount| assigned
    invoices: set[int] = field(default_factory=set)
    accounts: set[int] = field(default_factory=set)
    moves: list[tuple[str, str, Decimal]] = field(default_factory=list)  # (balance, invoice, amount), first 200


def record_flag(ctx: Context, object_name: str, field_name: str, record: dict, today: date) -> bool:
    """A yes/no field of a record (a formula such as ``Balance.Locked`` is
    evaluated); False when the object has no such field or the value
    cannot be read."""
    fdef = ctx.obj(object_name).field(field_name)
    if fdef is None:
        return False
    try:
        return bool(read_value(fdef, record, today))
    except ValueError:
        return False


def assign_balances(conn: sa.Connection, ctx: Context, today: date, *, run: str,
                    account_ids: list[int] | None = None,
                    invoice_ids: Collection[int] | None = None) -> AssignmentReport:
    """Run the assignment inside the caller's transaction (see the module
    docstring); ``account_ids`` limits it to those accounts, ``invoice_ids``
    to those invoices (finalization assigns free balances to the invoices
    it just finalized, §4.6)."""
    balances, invoices, accounts = ctx.table("Balance"), ctx.table("Invoice"), ctx.table("Account")
    account_obj = ctx.obj("Account")
    report = AssignmentReport()

    eligible = [
        balances.c.invoice.is_(None),
        balances.c.amount != sa.literal(ZERO, balances.c.amount.type),
        balances.c.type.not_in(NOT_ASSIGNED_TYPES),
        sa.or_(balances.c.draft.is_(None), balances.c.draft == sa.false()),
        sa.or_(balances.c.noautoassignment.is_(None), balances.c.noautoassignment == sa.false()),
        sa.or_(balances.c.origin.is_(None), balances.c.origin != CASH_MANAGEMENT_ORIGIN),
    ]
    last_account = -1
    while True:
        page = sa.select(balances.c.account).where(*eligible, balances.c.account > last_account)
        if account_ids is not None:
            page = page.where(balances.c.account.in_(account_ids))
        ids = [r[0] for r in conn.execute(page.distinct().order_by(balances.c.account).limit(ACCOUNT_PAGE))]
        if not ids:
            break
        last_account = ids[-1]
        blocker = account_obj.field("ON_NoAutoBalanceAssignment__c")
        if blocker is not None and blocker.is_stored:
            blocked = {r[0] for r in conn.execute(sa.select(accounts.c.id).where(
                accounts.c.id.in_(ids), accounts.c.on_noautobalanceassignment__c == sa.true()))}
            ids = [i for i in ids if i not in blocked]
        if not ids:
            continue
        lock = conn.dialect.name == "postgresql"  # concurrent payments and jobs wait (SQLite: one writer anyway)
        query = (sa.select(balances).where(*eligible, balances.c.account.in_(ids))
                 .order_by(balances.c.account, balances.c.date, balances.c.name, balances.c.id))
        free = [dict(r) for r in conn.execute(query.with_for_update() if lock else query).mappings()]
        free = [b for b in free if not record_flag(ctx, "Balance", "Locked", b, today)]
        invoice_query = (
            sa.select(invoices).where(
                invoices.c.account.in_(ids), invoices.c.status == "Open",
                invoices.c.balance != sa.literal(ZERO, invoices.c.balance.type),
                sa.or_(invoices.c.type.is_(None), invoices.c.type.not_in(NO_ASSIGNMENT_INVOICE_TYPES)),
            ).order_by(invoices.c.account, invoices.c.paymentduedate.is_(None), invoices.c.paymentduedate,
                       invoices.c.date, invoices.c.name))
        if invoice_ids is not None and len(invoice_ids) <= ID_LIST:
            invoice_query = invoice_query.where(invoices.c.id.in_(sorted(invoice_ids)))  # lock only those
        open_invoices = [dict(r) for r in conn.execute(
            invoice_query.with_for_update() if lock else invoice_query).mappings()]
        if invoice_ids is not None:
            open_invoices = [i for i in open_invoices if i["id"] in invoice_ids]
        open_invoices = [i for i in open_invoices
                         if not record_flag(ctx, "Invoice", "ON_NoAutoBalanceAssignment__c", i, today)]
        _assign_page(conn, ctx, free, open_invoices, run, report)
    refresh_invoices(conn, ctx, report.invoices)
    refresh_accounts(conn, ctx, report.accounts)
    return report


def same_assignment_key(invoice: dict, balance: dict) -> bool:
    """May the balance go to the invoice by their balance assignment keys?
    Both empty, or equal (a key on either side restricts it to that key)."""
    return _key(invoice.get("balanceassignmentkey")) == _key(balance.get("balanceassignmentkey"))


def _key(value: object) -> str:
    return str(value).strip() if value not in (None, "") else ""


def _assign_page(conn: sa.Connection, ctx: Context, free: list[dict], open_invoices: list[dict], run: str,
                 report: AssignmentReport) -> None:
    """Plan the page in memory, then write it in three bulk statements."""
    by_account: dict[int, list[dict]] = {}
    for invoice in open_invoices:
        invoice["_open"] = invoice["balance"]
        by_account.setdefault(invoice["account"], []).append(invoice)
    assign: list[tuple[int, tuple]] = []      # (balance id, (invoice id,))
    amounts: list[tuple[int, tuple]] = []     # (balance id, (new amount,))
    parts: list[dict] = []
    balance_obj = ctx.obj("Balance")
    copied = [f.key for f in balance_obj.fields if f.is_stored and f.key not in
              (ID, NAME, CREATED, MODIFIED, "amount", "invoice", "splitfrom", "rule", "run", "confighash")]
    for balance in free:
        rest = balance["amount"]
        moves: list[tuple[dict, Decimal]] = []
        for invoice in by_account.get(balance["account"], []):
            need = invoice["_open"]
            if rest == 0:
                break
            if need == 0 or (need > 0) != (rest < 0):
                continue  # a credit pays a receivable, a debit pays a credit
            if invoice.get("currencyisocode") != balance.get("currencyisocode"):
                continue
            if not same_assignment_key(invoice, balance):
                continue
            moved = rest if abs(rest) <= abs(need) else -need
            moves.append((invoice, moved))
            invoice["_open"] += moved
            rest -= moved
        if not moves:
            continue
        # Fully used: the last move is the original balance itself (no zero
        # remainder is left behind); otherwise the original keeps the rest.
        split_moves = moves[:-1] if rest == 0 else moves
        for invoice, moved in split_moves:
            parts.append(_part(balance, copied, invoice, moved, ctx, run))
        if rest == 0:
            last_invoice, last_amount = moves[-1]
            assign.append((balance["id"], (last_invoice["id"],)))
            if last_amount != balance["amount"]:
                amounts.append((balance["id"], (last_amount,)))
        else:
            amounts.append((balance["id"], (rest,)))
        if len(moves) == 1 and rest == 0:
            report.assigned += 1
        else:
            report.split += 1
        for invoice, moved in moves:
            report.amount += abs(moved)
            report.invoices.add(invoice["id"])
            if len(report.moves) < 200:
                report.moves.append((str(balance["name"]), str(invoice["name"]), moved))
        report.accounts.add(balance["account"])
    if assign:
        update_by_id(conn, balance_obj, ["Invoice"], assign)
    if amounts:
        update_by_id(conn, balance_obj, ["Amount"], amounts)
    if parts:
        RowWriter(conn, balance_obj).insert(parts)


def _part(balance: dict, copied: list[str], invoice: dict, amount: Decimal, ctx: Context, run: str) -> dict:
    part = {key: balance.get(key) for key in copied}
    part.update(amount=amount, invoice=invoice["id"], splitfrom=balance.get("splitfrom") or balance["id"],
                rule=RULE_SPLIT, run=run[:64], confighash=ctx.config_hash)
    return part
