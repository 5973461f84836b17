"""Invoice fix tasks for the cash-management integration (domain-spec
§8.6, seed 000): preparing data billed before the integration was switched on.

* :func:`create_or_fix_entries` ("Create or Fix Entries") gives every
  finalized invoice the entries it should have: invoices with a payment plan
  and no installments get their installments (what is settled already
  becomes the deposit installment); a missing entry is created; an entry
  whose amount, account, currency or statement changed is canceled and
  created anew (its payments re-attached); changed descriptive fields (due
  date, business entity, partner number, titles) are updated in place;
  surplus entries and the live entries of canceled invoices are canceled.
  Then every CM balance and every write-off, settlement or clearing of the
  invoice is mirrored on the entries (entry items, reductions).
* :func:`create_payments_and_migrate_balances` ("Create Payments and
  Migrate Balances") makes every money balance without Origin (payments,
  prepayments, prepaid, refunds, payouts) a CM payment with entry items on
  its invoice's entries and marks it JPAY1; free balances become payments
  without entry items (unassigned CM money). An invoice whose entries are
  missing is refused: run the first task before.

Problems are written to ``Invoice.CM_IntegrationError__c`` (a run that
succeeds clears it); the other invoices go on. Both tasks work in pages of
invoices (keyset by id), set-based per page, inside the caller's
transaction; running them again changes nothing.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from engine.booking.balances import refresh_accounts
from engine.booking.dues import refresh_installments
from engine.domain.errors import Where
from engine.storage.bulk import RowWriter, update_by_id
from engine.storage.context import Context

from .cm_core import (
    AMOUNT_FIELDS,
    DESCRIPTIVE,
    ORIGIN,
    PROCESS_MIGRATION,
    PROCESS_REATTACH,
    Changes,
    cancel_entries,
    expected_entries,
    insert_entries,
    live_entries,
    mirror_balances,
    require_enabled,
    select_in,
    wants_entries,
)
from .cm_payments import migrate_balances, unmigrated_balances
from .cm_plans import build_installments, open_amounts
from .errors import CashManagementError, InstallmentError

TASK_ENTRIES = "create-or-fix-entries"
TASK_PAYMENTS = "create-payments-and-migrate-balances"
TASKS = (TASK_ENTRIES, TASK_PAYMENTS)
ERROR_FIELD = "CM_IntegrationError__c"
PAGE = 500
RUN_ENTRIES = "fix: create or fix entries"
RUN_PAYMENTS = "fix: create payments"


def _pages(conn: sa.Connection, ctx: Context, names: list[str] | None, statuses: tuple[str, ...]):
    """The invoices in scope, page by page (keyset by id); unknown names are an error."""
    t = ctx.table("Invoice")
    if names:
        found = select_in(conn, ctx, "Invoice", "name", names)
        unknown = sorted(set(names) - {r["name"] for r in found})
        if unknown:
            raise CashManagementError(f"no invoice numbered {', '.join(unknown)}",
                                      where=Where(object="Invoice", record=", ".join(unknown)))
        rows = [r for r in found if r["status"] in statuses]
        for start in range(0, len(rows), PAGE):
            yield rows[start:start + PAGE]
        return
    last = 0
    while True:
        page = [dict(r) for r in conn.execute(
            sa.select(t).where(t.c.id > last, t.c.status.in_(statuses)).order_by(t.c.id).limit(PAGE)).mappings()]
        if not page:
            return
        last = page[-1]["id"]
        yield page


def _write_errors(conn: sa.Connection, ctx: Context, invoices: list[dict], errors: dict[int, str]) -> None:
    """CM_IntegrationError__c: the message for failed invoices, cleared for
    the others (only what differs is written)."""
    fdef = ctx.obj("Invoice").field(ERROR_FIELD)
    if fdef is None or not fdef.is_stored:
        return
    rows = []
    for invoice in invoices:
        message = errors.get(invoice["id"])
        if message is not None:
            message = message[:255]
        if invoice.get(fdef.key) != message:
            rows.append((invoice["id"], (message,)))
    update_by_id(conn, ctx.obj("Invoice"), [ERROR_FIELD], rows)


def create_or_fix_entries(conn: sa.Connection, ctx: Context, names: list[str] | None = None, *,
                          when: date | None = None) -> Changes:
    """The task "Create or Fix Entries" (see the module docstring)."""
    require_enabled(ctx)
    when = when or date.today()
    changes = Changes()
    for page in _pages(conn, ctx, names, ("Open", "Paid", "Canceled")):
        _fix_page(conn, ctx, page, when, changes)
    return changes


def _fix_page(conn: sa.Connection, ctx: Context, page: list[dict], when: date, changes: Changes) -> None:
    ids = [i["id"] for i in page]
    live = live_entries(conn, ctx, ids)
    canceled = [i for i in page if i["status"] == "Canceled" and live.get(i["id"])]
    if canceled:
        with_cancellation = {r["id"]: r for r in select_in(conn, ctx, "Invoice", "id",
                                                           [i.get("canceledwith") for i in canceled])}
        for invoice in canceled:
            cancellation = with_cancellation.get(invoice.get("canceledwith"))
            reason = str((cancellation or {}).get("cancelationreason") or "Invoice canceled")
            changes.entries_canceled += cancel_entries(conn, ctx, live[invoice["id"]], reason,
                                                       cancellation=cancellation)
            changes.lines.append(f"{invoice['name']}: canceled {len(live[invoice['id']])} entr(y/ies) of the canceled invoice")
    wanted = [i for i in page if wants_entries(i)]
    errors: dict[int, str] = {}
    if wanted:
        installments: dict[int, list[dict]] = {}
        for row in select_in(conn, ctx, "Installment", "invoice", [i["id"] for i in wanted],
                             order=("invoice", "sequence", "id")):
            installments.setdefault(row["invoice"], []).append(row)
        opened = open_amounts(conn, ctx, [i["id"] for i in wanted])
        accounts = {a["id"]: a for a in select_in(conn, ctx, "Account", "id", [i["account"] for i in wanted])}
        writer = RowWriter(conn, ctx.obj("Installment"))
        new_installments, new_entries, to_cancel, updates = [], [], [], []
        recreated: set[int] = set()
        for invoice in wanted:
            own = installments.get(invoice["id"], [])
            if not own and invoice.get("installmenttype"):
                try:
                    own = build_installments(ctx, invoice, opened[invoice["id"]])
                except InstallmentError as error:
                    errors[invoice["id"]] = f"payment plan: {error}"
                    continue
                writer.assign_ids(own)
                new_installments.extend(own)
                if own:
                    changes.lines.append(f"{invoice['name']}: created {len(own)} installment(s)")
            expected = {e["assignmentkey"]: e for e in expected_entries(ctx, invoice, own,
                                                                         accounts.get(invoice["account"], {}))}
            current = {e["assignmentkey"]: e for e in live.get(invoice["id"], [])}
            outdated = [e for key, e in current.items() if key in expected and any(
                e.get(f) != expected[key].get(f) for f in AMOUNT_FIELDS)]
            surplus = [e for key, e in current.items() if key not in expected]
            if outdated or surplus:
                # An amount changed or an entry is too many: cancel the invoice's
                # entries and create them anew, the payments re-attached.
                to_cancel.extend(current.values())
                new_entries.extend(expected.values())
                recreated.add(invoice["id"])
                changes.lines.append(f"{invoice['name']}: {len(current)} outdated entr(y/ies) canceled and created anew")
                continue
            for key, entry in expected.items():
                if key not in current:
                    new_entries.append(entry)
                    changes.lines.append(f"{invoice['name']}: created entry {entry['statementno']} "
                                         f"({entry['openamount']} due {entry['duedate']})")
                    continue
                differing = [f for f in DESCRIPTIVE if current[key].get(f) != entry.get(f)]
                if differing:
                    updates.append((current[key]["id"], tuple(entry.get(f) for f in DESCRIPTIVE)))
                    changes.lines.append(f"{invoice['name']}: updated {', '.join(differing)} of entry "
                                         f"{current[key]['name']}")
        writer.insert(new_installments)
        refresh_installments(conn, ctx, {row["invoice"] for row in new_installments})
        changes.installments_created += len(new_installments)
        changes.entries_canceled += cancel_entries(conn, ctx, to_cancel, "Outdated: replaced by the fix task")
        insert_entries(conn, ctx, new_entries, RUN_ENTRIES)
        changes.entries_created += len(new_entries)
        entry_fields = {f.key: f.name for f in ctx.obj("Entry").fields}
        update_by_id(conn, ctx.obj("Entry"), [entry_fields[f] for f in DESCRIPTIVE], updates)
        changes.entries_updated += len(updates)
        ok = [i["id"] for i in wanted if i["id"] not in errors]
        items, reductions = mirror_balances(conn, ctx, ok, when, process=PROCESS_REATTACH, run=RUN_ENTRIES)
        changes.entry_items_created += items
        changes.reductions_created += reductions
        if items or reductions:
            changes.lines.append(f"{items} entry item(s) and {reductions} reduction(s) mirrored from balances")
    for invoice_id, message in errors.items():
        name = next(i["name"] for i in page if i["id"] == invoice_id)
        changes.errors.append((name, message))
    _write_errors(conn, ctx, page, errors)


def create_payments_and_migrate_balances(conn: sa.Connection, ctx: Context, names: list[str] | None = None, *,
                                         when: date | None = None) -> Changes:
    """The task "Create Payments and Migrate Balances" (see the module docstring)."""
    require_enabled(ctx)
    when = when or date.today()
    changes = Changes()
    accounts: set[int] = set()
    for page in _pages(conn, ctx, names, ("Open", "Paid", "Canceled", "Settled", "Closed")):
        ids = [i["id"] for i in page]
        balances = unmigrated_balances(conn, ctx, invoice_ids=ids, include_free=False)
        live = live_entries(conn, ctx, ids)
        errors: dict[int, str] = {}
        ready = []
        by_id = {i["id"]: i for i in page}
        for balance in balances:
            invoice = by_id[balance["invoice"]]
            if wants_entries(invoice) and not live.get(invoice["id"]):
                errors[invoice["id"]] = "no entries: run the task create-or-fix-entries first"
                continue
            ready.append(balance)
        names_by_id = {i["id"]: i["name"] for i in page}
        changes.payments_created, migrated = _migrate(conn, ctx, ready, changes, accounts, when,
                                                      changes.payments_created, names_by_id)
        for invoice_id, message in errors.items():
            changes.errors.append((by_id[invoice_id]["name"], message))
        # a refused balance leaves its invoice's error in place
        for balance, message in migrated:
            errors[balance["invoice"]] = message
        _write_errors(conn, ctx, page, errors)
    if not names:
        free = unmigrated_balances(conn, ctx, invoice_ids=[], include_free=True)
        changes.payments_created, refused = _migrate(conn, ctx, free, changes, accounts, when,
                                                     changes.payments_created, {})
        for balance, message in refused:
            changes.errors.append((f"balance {balance['name']}", message))
    refresh_accounts(conn, ctx, accounts)
    return changes


def _migrate(conn: sa.Connection, ctx: Context, balances: list[dict], changes: Changes, accounts: set[int],
             when: date, created_so_far: int, names: dict[int, str]) -> tuple[int, list[tuple[dict, str]]]:
    if not balances:
        return created_so_far, []
    created, migrated, refused = migrate_balances(conn, ctx, balances, process=PROCESS_MIGRATION,
                                                  run=RUN_PAYMENTS)
    changes.balances_migrated += migrated
    accounts.update(b["account"] for b in balances)
    invoice_ids = {b["invoice"] for b in balances if b.get("invoice") is not None and b.get("origin") == ORIGIN}
    items, reductions = mirror_balances(conn, ctx, invoice_ids, when, process=PROCESS_MIGRATION, run=RUN_PAYMENTS)
    changes.entry_items_created += items
    changes.reductions_created += reductions
    refused_ids = {b["id"] for b, _ in refused}
    for balance in balances:
        if balance["id"] in refused_ids:
            continue
        where = f"on {names.get(balance['invoice'], balance['invoice'])}" if balance.get("invoice") else "free (unassigned)"
        changes.lines.append(f"balance {balance['name']} ({balance['type']} {balance['amount']}) {where}: "
                             f"payment {balance['transactionno']}")
    return created_so_far + created, refused
