"""The shared machinery of the cash-management integration (domain-spec §8).

Billing keeps its own ledger (Balance records on invoices and accounts);
cash management keeps *entries* (open items) settled by *entry items*
(parts of CM payments) and *reductions* (settlement without money). This
module keeps the two in step, always set-based over a list of invoices:

* :func:`expected_entries` says which entries an invoice should have: one
  for the invoice (statement type Invoice, or Credit for a negative total)
  or, when it has installments, one per installment, each with its open
  amount, due date, business partner number and payment reference;
* :func:`insert_entries` writes them, :func:`cancel_entries` cancels
  entries (their entry items are deleted, so the payments behind them are
  unassigned again: "reverses payment associations"), and
  :func:`refresh_entries` recomputes every entry's outstanding amount
  ``Amount = OpenAmount + Σ entry items + Σ reductions`` (zero ⇒ Settled),
  the installments' open amounts and the invoice's next payment due;
* :func:`mirror_balances` mirrors what happened on the billing side into
  cash management: every balance with ``Origin`` JPAY1 of a money type on an
  invoice gets an entry item on that invoice's entries (oldest due first; a
  balance spanning several installments is split, so that each entry item
  has exactly one balance, §8.4), and every write-off, clearing (discount,
  final invoice) and settlement balance a reduction;
* :func:`assign_free_money` is "payment assignment" and "prepaid entry
  assignment" on finalization: the account's free JPAY1 balances (CM money
  not yet assigned to an entry) are assigned to the new entries, oldest
  first, with entry items.

A JPAY1 balance finds its CM payment through its ``TransactionNo``, which
is the payment's ``EndToEndId`` (§8.4).

Signs follow the balances: an entry's OpenAmount is the invoice's (positive:
the customer owes), an entry item's Amount is its balance's (negative: money
received), a reduction's Amount is signed like the balance it mirrors.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Iterable, Sequence

import sqlalchemy as sa

from engine.booking.balances import refresh_invoices
from engine.domain.batching import chunks
from engine.domain.errors import Where
from engine.domain.money import ZERO
from engine.storage.bulk import RowWriter, fetch_records, update_by_id
from engine.storage.context import Context
from engine.storage.schema import CREATED, ID, MODIFIED, NAME

from .assignment import same_assignment_key
from .errors import CashManagementError

ORIGIN = "JPAY1"
#: Balance types that are money flows: CM payments and entry items.
MONEY_TYPES = ("Payment", "Prepayment", "Prepaid", "Refund", "Payout")
#: Balance types mirrored as reductions (no money moves).
REDUCING_TYPES = ("Write off", "Clearing", "Settlement")
#: Invoice types that never get entries (a cancellation settles its original).
NO_ENTRY_TYPES = ("Cancelation",)
LIVE = ("Open", "Settled")
_CHUNK = 900

RULE_SPLIT = "cash management: split"
PROCESS_FINALIZATION = "Payment assignment on finalization"
PROCESS_PREPAID = "Prepaid entry assignment"
PROCESS_REGISTRATION = "Payment registration"
PROCESS_MIGRATION = "Balance migration"
PROCESS_REATTACH = "Entry re-creation"


def enabled(ctx: Context) -> bool:
    """GlobalSettings.EnableCashManagementIntegration (or a command's override
    of it: ``fix-invoices --enable-integration``)."""
    return ctx.settings.cash_management_integration


def require_enabled(ctx: Context) -> None:
    """Refuse a cash-management process while the integration is off."""
    if not enabled(ctx):
        raise CashManagementError("the cash-management integration is off: set "
                                  "GlobalSettings.EnableCashManagementIntegration to true first")


def invoice_where(name: object) -> Where:
    """What an error about the invoice numbered ``name`` concerns."""
    return Where(object="Invoice", record=None if name is None else str(name))


def locked_invoice(conn: sa.Connection, ctx: Context, name: str) -> dict:
    """The invoice numbered ``name``, row-locked for the change (``FOR
    UPDATE`` on PostgreSQL; SQLite serialises writers anyway)."""
    t = ctx.table("Invoice")
    query = sa.select(t).where(t.c.name == name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise CashManagementError(f"no invoice {name}", where=invoice_where(name))
    return dict(row)


def select_in(conn: sa.Connection, ctx: Context, name: str, column: str, values: Iterable, *where,
              order: Sequence[str] = ("id",), lock: bool = False) -> list[dict]:
    """Rows of object ``name`` whose ``column`` is in ``values`` (chunked IN
    lists); ``lock`` takes their row locks (``FOR UPDATE`` on PostgreSQL;
    SQLite serialises writers anyway)."""
    t = ctx.table(name)
    values = sorted({v for v in values if v is not None}, key=str)
    rows: list[dict] = []
    for chunk in chunks(values, _CHUNK):
        query = sa.select(t).where(t.c[column].in_(chunk), *where).order_by(*(t.c[o] for o in order))
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        rows.extend(fetch_records(conn, query))
    return rows


def entry_key(invoice: dict, installment: dict | None) -> str:
    """The entry's AssignmentKey: unique per statement (invoice or installment)."""
    if installment is None:
        return f"Invoice:{invoice['id']}"
    return f"Installment:{installment['id']}"


def bp_number(ctx: Context, invoice: dict, account: dict) -> str | None:
    """The business partner number: the invoice's debtor number when the org
    has DebtorNo__c, else the account number."""
    value = invoice.get("debtorno__c") if ctx.obj("Invoice").field("DebtorNo__c") is not None else None
    if value in (None, ""):
        value = account.get("accountnumber")
    return None if value in (None, "") else str(value)[:20]


def wants_entries(invoice: dict) -> bool:
    """Does this finalized invoice get entries at all?"""
    return (invoice.get("type") not in NO_ENTRY_TYPES and invoice.get("status") in ("Open", "Paid")
            and Decimal(invoice.get("grandtotal") or 0) != 0)


def expected_entries(ctx: Context, invoice: dict, installments: list[dict], account: dict) -> list[dict]:
    """The entries the invoice should have (dicts of Entry fields)."""
    total = Decimal(invoice.get("grandtotal") or 0)
    statement = "Credit" if total < 0 else "Invoice"
    base = {
        "account": invoice["account"], "accountname": (invoice.get("accountname") or account.get("name") or None),
        "contact": invoice.get("contact"), "businessentity": invoice.get("businessentity"),
        "bpnumber": bp_number(ctx, invoice, account), "currencyisocode": invoice.get("currencyisocode"),
        "statementdate": invoice.get("date"), "invoice": invoice["id"], "paymentreference": invoice.get("name"),
        "status": "Open",
    }
    if base["accountname"]:
        base["accountname"] = str(base["accountname"])[:255]
    out = []
    if not installments:
        out.append({**base, "openamount": total, "duedate": invoice.get("paymentduedate") or invoice.get("date"),
                    "statementtype": statement, "statementno": invoice.get("name"),
                    "statementid": str(invoice["id"]), "installment": None,
                    "title": f"{statement} {invoice.get('name')}", "assignmentkey": entry_key(invoice, None)})
    for inst in sorted(installments, key=lambda i: (int(i.get("sequence") or 0), i["id"])):
        number = f"{invoice.get('name')}/{int(inst.get('sequence') or 0)}"
        out.append({**base, "openamount": inst["amount"], "duedate": inst["date"], "statementtype": "Installment",
                    "statementno": number, "statementid": str(inst["id"]), "installment": inst["id"],
                    "title": f"Installment {number}", "assignmentkey": entry_key(invoice, inst)})
    for entry in out:
        amount = Decimal(entry["openamount"])
        entry.update(type="Debit" if amount > 0 else "Credit", bptype="Debtor" if amount > 0 else "Creditor",
                     amount=amount)
    return out


#: Entry fields that describe the statement; when they change the entry is outdated.
DESCRIPTIVE = ("accountname", "businessentity", "bpnumber", "duedate", "statementno", "statementdate",
               "paymentreference", "title", "contact")
AMOUNT_FIELDS = ("account", "openamount", "currencyisocode", "installment", "assignmentkey")


def insert_entries(conn: sa.Connection, ctx: Context, entries: list[dict], run: str) -> list[dict]:
    """Write new entries (from :func:`expected_entries`), with their provenance."""
    for entry in entries:
        entry.update(confighash=ctx.config_hash, run=run[:64])
    RowWriter(conn, ctx.obj("Entry")).insert(entries)
    return entries


def live_entries(conn: sa.Connection, ctx: Context, invoice_ids: Iterable[int]) -> dict[int, list[dict]]:
    """The invoices' Open and Settled entries, per invoice, oldest due first."""
    t = ctx.table("Entry")
    out: dict[int, list[dict]] = defaultdict(list)
    for entry in select_in(conn, ctx, "Entry", "invoice", invoice_ids, t.c.status.in_(LIVE),
                           order=("invoice", "duedate", "id")):
        out[entry["invoice"]].append(entry)
    return out


def cancel_entries(conn: sa.Connection, ctx: Context, entries: list[dict], reason: str, *,
                   cancellation: dict | None = None) -> int:
    """Cancel entries: their entry items are deleted (the balances behind
    them lose the link and their payments are unassigned again), the
    entries get status Canceled, outstanding 0, the reason and, for an
    invoice cancellation, the cancellation invoice's number and id. Their
    AssignmentKey is suffixed so that a replacement entry can take it."""
    if not entries:
        return 0
    ids = [e["id"] for e in entries]
    items = ctx.table("EntryItem")
    balances = ctx.table("Balance")
    for chunk in chunks(ids, _CHUNK):
        item_ids = sa.select(items.c.id).where(items.c.entry.in_(chunk))
        conn.execute(sa.update(balances).where(balances.c.entryitem.in_(item_ids)).values(entryitem=None))
        conn.execute(sa.delete(items).where(items.c.entry.in_(chunk)))
    update_by_id(conn, ctx.obj("Entry"),
                 ["Status", "Amount", "CancellationReason", "CancellationNo", "CancellationId", "AssignmentKey"],
                 [(e["id"], ("Canceled", ZERO, reason[:255],
                             cancellation.get("name") if cancellation else None,
                             str(cancellation["id"]) if cancellation else None,
                             f"{e['assignmentkey']}~{e['id']}"[:255] if e.get("assignmentkey") else None))
                  for e in entries])
    return len(entries)


def refresh_entries(conn: sa.Connection, ctx: Context, invoice_ids: Iterable[int]) -> None:
    """Recompute the live entries of the invoices: outstanding amount and
    status; the installments' open amounts and paid dates; the invoice's
    next payment due (first installment still open)."""
    ids = sorted({int(i) for i in invoice_ids if i is not None})
    if not ids:
        return
    entries = [e for group in live_entries(conn, ctx, ids).values() for e in group]
    if not entries:
        return
    entry_ids = [e["id"] for e in entries]
    items, reductions = ctx.table("EntryItem"), ctx.table("Reduction")
    sums: dict[int, Decimal] = defaultdict(lambda: ZERO)
    last_paid: dict[int, date] = {}
    for chunk in chunks(entry_ids, _CHUNK):
        for row in conn.execute(sa.select(items.c.entry, items.c.amount, items.c.paymentdate)
                                .where(items.c.entry.in_(chunk))):
            sums[row.entry] += row.amount or ZERO
            if row.paymentdate and (row.entry not in last_paid or row.paymentdate > last_paid[row.entry]):
                last_paid[row.entry] = row.paymentdate
        for row in conn.execute(sa.select(reductions.c.entry, reductions.c.amount, reductions.c.date)
                                .where(reductions.c.entry.in_(chunk))):
            sums[row.entry] += row.amount or ZERO
            if row.date and (row.entry not in last_paid or row.date > last_paid[row.entry]):
                last_paid[row.entry] = row.date
    changed, installments = [], []
    for entry in entries:
        outstanding = Decimal(entry["openamount"] or 0) + sums[entry["id"]]
        status = "Settled" if outstanding == 0 else "Open"
        if (entry["amount"], entry["status"]) != (outstanding, status):
            changed.append((entry["id"], (outstanding, status)))
        entry["amount"], entry["status"] = outstanding, status
        if entry.get("installment"):
            installments.append((entry["installment"], (outstanding, last_paid.get(entry["id"]) if outstanding == 0 else None)))
    update_by_id(conn, ctx.obj("Entry"), ["Amount", "Status"], changed)
    update_by_id(conn, ctx.obj("Installment"), ["OpenPaymentAmount", "PaymentDate"], installments)
    invoice_obj = ctx.obj("Invoice")
    if invoice_obj.field("NextPaymentDue") is not None and invoice_obj.field("NextPaymentDueDate") is not None:
        next_due = []
        by_invoice: dict[int, list[dict]] = defaultdict(list)
        for entry in entries:
            if entry.get("installment"):
                by_invoice[entry["invoice"]].append(entry)
        for invoice_id, group in by_invoice.items():
            first = next((e for e in sorted(group, key=lambda e: (e["duedate"] or date.max, e["id"]))
                          if e["amount"] != 0), None)
            next_due.append((invoice_id, (first["amount"], first["duedate"]) if first else (None, None)))
        update_by_id(conn, invoice_obj, ["NextPaymentDue", "NextPaymentDueDate"], next_due)


# --- moving money onto entries ----------------------------------------------------------


@dataclass
class Move:
    """``amount`` of ``balance`` goes to ``entry`` as one entry item."""

    balance: dict
    entry: dict
    amount: Decimal


def spread(amount: Decimal, entries: list[dict]) -> list[tuple[dict, Decimal]]:
    """How a signed balance amount settles the entries (in their order,
    each entry's ``amount`` being its current outstanding): a credit (< 0)
    pays receivable entries, a debit (> 0) credit entries, each at most up
    to its outstanding; what is left goes to the last entry (an overpaid
    invoice). Updates the entries' outstanding in place."""
    if not entries or amount == 0:
        return []
    rest, out = amount, []
    for entry in entries:
        need = entry["amount"]
        if rest == 0:
            break
        if need == 0 or (need > 0) != (rest < 0):
            continue
        moved = rest if abs(rest) <= abs(need) else -need
        out.append((entry, moved))
        entry["amount"] = need + moved
        rest -= moved
    if rest != 0:
        last = entries[-1]
        if out and out[-1][0] is last:
            out[-1] = (last, out[-1][1] + rest)
        else:
            out.append((last, rest))
        last["amount"] += rest
    return out


def write_moves(conn: sa.Connection, ctx: Context, moves: list[Move], process: str | None, run: str,
                payments: dict[str, dict], rests: dict[int, Decimal] | None = None) -> int:
    """Entry items for the moves, one per move, each with exactly one
    balance (§8.4). A balance with several moves is split: the original
    takes the first part, the others become new balances with ``SplitFrom``
    = its root (splitting books nothing, §4.5). A balance with a free rest
    in ``rests`` keeps the rest, free, and every move is split off it.
    ``payments`` maps a balance's TransactionNo to its CM payment;
    ``process`` None names the process by the balance type."""
    if not moves:
        return 0
    rests = rests or {}
    balance_obj = ctx.obj("Balance")
    copied = [f.key for f in balance_obj.fields if f.is_stored and f.key not in
              (ID, NAME, CREATED, MODIFIED, "amount", "invoice", "splitfrom", "rule", "run", "confighash",
               "entryitem")]
    item_writer = RowWriter(conn, ctx.obj("EntryItem"))
    by_balance: dict[int, list[Move]] = defaultdict(list)
    for move in moves:
        by_balance[move.balance["id"]].append(move)
    items, updates, parts, rest_updates = [], [], [], []
    for balance_id, group in by_balance.items():
        balance = group[0].balance
        payment = payments[balance["transactionno"]]
        keeps_rest = balance_id in rests
        if keeps_rest:
            rest_updates.append((balance_id, (rests[balance_id],)))
        staged = []
        for index, move in enumerate(group):
            item = {"entry": move.entry["id"], "payment": payment["id"], "account": balance["account"],
                    "amount": move.amount, "paymentdate": balance["date"],
                    "businessprocess": (process or _process(balance))[:80], "confighash": ctx.config_hash}
            items.append(item)
            staged.append((index == 0 and not keeps_rest, move, item))
        item_writer.assign_ids([item for _, _, item in staged])
        for in_place, move, item in staged:
            if in_place:
                updates.append((balance_id, (move.amount, move.entry["invoice"], item["id"])))
            else:
                part = {key: balance.get(key) for key in copied}
                part.update(splitfrom=balance.get("splitfrom") or balance_id, rule=RULE_SPLIT, run=run[:64],
                            confighash=ctx.config_hash, amount=move.amount, invoice=move.entry["invoice"],
                            entryitem=item["id"])
                parts.append(part)
    item_writer.insert(items)
    update_by_id(conn, balance_obj, ["Amount"], rest_updates)
    update_by_id(conn, balance_obj, ["Amount", "Invoice", "EntryItem"], updates)
    if parts:
        RowWriter(conn, balance_obj).insert(parts)
    return len(items)


def _process(balance: dict) -> str:
    return PROCESS_PREPAID if balance.get("type") in ("Prepayment", "Prepaid") else PROCESS_FINALIZATION


def payments_by_reference(conn: sa.Connection, ctx: Context, references: Iterable[str]) -> dict[str, dict]:
    return {p["endtoendid"]: p for p in select_in(conn, ctx, "Payment", "endtoendid", references)}


def mirror_balances(conn: sa.Connection, ctx: Context, invoice_ids: Iterable[int], when: date, *,
                    process: str | None, run: str) -> tuple[int, int]:
    """Mirror the invoices' billing balances onto their live entries (see the
    module docstring); returns (entry items, reductions) created. Refreshes
    entries and invoices. ``process`` names the entry items' business
    process (None: by balance type, prepaid or payment assignment)."""
    ids = sorted({int(i) for i in invoice_ids if i is not None})
    if not ids:
        return 0, 0
    refresh_entries(conn, ctx, ids)
    entries = live_entries(conn, ctx, ids)
    b = ctx.table("Balance")
    money = [r for r in select_in(conn, ctx, "Balance", "invoice", list(entries),
                                  b.c.origin == ORIGIN, b.c.entryitem.is_(None), b.c.type.in_(MONEY_TYPES),
                                  order=("date", "id"))]
    money = [r for r in money if r.get("transactionno")]
    payments = payments_by_reference(conn, ctx, [r["transactionno"] for r in money])
    moves = []
    for balance in money:
        if balance["transactionno"] not in payments:
            continue
        for entry, amount in spread(balance["amount"], entries[balance["invoice"]]):
            moves.append(Move(balance, entry, amount))
    created_items = write_moves(conn, ctx, moves, process, run, payments)
    created_reductions = _mirror_reductions(conn, ctx, entries, when)
    refresh_entries(conn, ctx, ids)
    refresh_invoices(conn, ctx, ids)
    return created_items, created_reductions


def _reduction_reason(balance: dict) -> str | None:
    kind = balance["type"]
    if kind == "Write off":
        return "Write-Off"
    if kind == "Settlement":
        return "Partial Credit" if "partial credit" in str(balance.get("rule") or "").lower() else "Entry Settlement"
    if kind == "Clearing":
        reason = balance.get("clearingreason")
        if reason == "Final Invoice":
            return "Final Invoice"
        if reason == "Discount":
            return "Discount"
    return None  # cancellation clearings: the entry is canceled, not reduced


def _mirror_reductions(conn: sa.Connection, ctx: Context, entries: dict[int, list[dict]], when: date) -> int:
    """A reduction for every reducing balance of the invoices that no live
    entry mirrors yet (spread over the entries like money)."""
    if not entries:
        return 0
    b = ctx.table("Balance")
    reducing = select_in(conn, ctx, "Balance", "invoice", list(entries), b.c.type.in_(REDUCING_TYPES),
                         order=("date", "id"))
    live_ids = [e["id"] for group in entries.values() for e in group]
    mirrored = {r["balance"] for r in select_in(conn, ctx, "Reduction", "entry", live_ids) if r.get("balance")}
    rows = []
    for balance in reducing:
        reason = _reduction_reason(balance)
        if reason is None or balance["id"] in mirrored:
            continue
        for entry, amount in spread(balance["amount"], entries[balance["invoice"]]):
            rows.append({"entry": entry["id"], "amount": amount, "date": balance["date"], "reason": reason,
                         "balance": balance["id"], "invoice": balance.get("relatedinvoice"),
                         "description": f"{balance['type']} {balance.get('name')}"[:255],
                         "confighash": ctx.config_hash})
    RowWriter(conn, ctx.obj("Reduction")).insert(rows)
    return len(rows)


def free_money(conn: sa.Connection, ctx: Context, account_ids: Iterable[int]) -> list[dict]:
    """The accounts' free JPAY1 money balances (CM money not assigned to an
    entry: credits, and debits such as a payout of a free credit), oldest
    first, row-locked; locked, draft and no-auto-assignment ones are left."""
    b = ctx.table("Balance")
    rows = select_in(conn, ctx, "Balance", "account", account_ids, b.c.origin == ORIGIN, b.c.invoice.is_(None),
                     b.c.type.in_(MONEY_TYPES), order=("account", "date", "name", "id"), lock=True)
    return [r for r in rows if not r.get("draft") and not r.get("noautoassignment") and not r.get("lockedreason")
            and r.get("transactionno")]


def assign_free_money(conn: sa.Connection, ctx: Context, invoices: list[dict], run: str) -> int:
    """Payment and prepaid entry assignment on finalization: the accounts'
    free CM money goes to the invoices' open receivable entries, oldest due
    first, same currency and balance assignment key only, at most the
    account's net free CM credit in that currency (money paid back by a free
    payout is not assigned again); not for invoices (or accounts) with
    ``ON_NoAutoBalanceAssignment__c``. Returns the number of entry items
    created."""
    eligible = [i for i in invoices if not i.get("on_noautobalanceassignment__c")]
    if not eligible:
        return 0
    entries = live_entries(conn, ctx, [i["id"] for i in eligible])
    account_field = ctx.obj("Account").field("ON_NoAutoBalanceAssignment__c")
    blocked: set[int] = set()
    if account_field is not None and account_field.is_stored:
        a = ctx.table("Account")
        blocked = {r["id"] for r in select_in(conn, ctx, "Account", "id", [i["account"] for i in eligible],
                                              a.c.on_noautobalanceassignment__c == sa.true())}
    by_account: dict[int, list[tuple[dict, dict]]] = defaultdict(list)
    for invoice in sorted(eligible, key=lambda i: (i.get("paymentduedate") or date.max, i.get("date") or date.max,
                                                   str(i.get("name")))):
        if invoice["account"] in blocked:
            continue
        for entry in entries.get(invoice["id"], []):
            if entry["amount"] > 0:
                by_account[invoice["account"]].append((invoice, entry))
    if not by_account:
        return 0
    free = free_money(conn, ctx, list(by_account))
    # Only the net free credit per account and currency is money to assign:
    # a free payment paid back by a free payout is gone.
    credit: dict[tuple, Decimal] = defaultdict(lambda: ZERO)
    for balance in free:
        credit[(balance["account"], balance.get("currencyisocode"))] -= balance["amount"]
    free = [b for b in free if b["amount"] < 0]
    payments = payments_by_reference(conn, ctx, [r["transactionno"] for r in free])
    moves: list[Move] = []
    rests: dict[int, Decimal] = {}
    for balance in free:
        pot = (balance["account"], balance.get("currencyisocode"))
        if balance["transactionno"] not in payments or credit[pot] <= 0:
            continue
        usable = max(balance["amount"], -credit[pot])
        rest = usable
        for invoice, entry in by_account[balance["account"]]:
            if rest == 0:
                break
            if entry["amount"] <= 0 or invoice.get("currencyisocode") != balance.get("currencyisocode"):
                continue
            if not same_assignment_key(invoice, balance):
                continue
            moved = rest if -rest <= entry["amount"] else -entry["amount"]
            moves.append(Move(balance, entry, moved))
            entry["amount"] += moved
            rest -= moved
        assigned = usable - rest
        credit[pot] += assigned
        if assigned != 0 and assigned != balance["amount"]:
            rests[balance["id"]] = balance["amount"] - assigned
    return write_moves(conn, ctx, moves, None, run, payments, rests)


@dataclass
class Changes:
    """What a cash-management process changed (for reports and idempotency)."""

    entries_created: int = 0
    entries_canceled: int = 0
    entries_updated: int = 0
    installments_created: int = 0
    payments_created: int = 0
    entry_items_created: int = 0
    reductions_created: int = 0
    balances_migrated: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)   # (invoice name, message)
    lines: list[str] = field(default_factory=list)                # what changed, for people

    @property
    def total(self) -> int:
        return (self.entries_created + self.entries_canceled + self.entries_updated + self.installments_created
                + self.payments_created + self.entry_items_created + self.reductions_created
                + self.balances_migrated)
