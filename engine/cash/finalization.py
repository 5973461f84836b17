"""The cash stages of finalization that work without cash management
(domain-spec §4.2 g and steps 6 and 8, §4.4-§4.6, §4.9).

Each function has the :data:`engine.booking.finalize.FinalizationStage`
signature and runs in the batch's transaction after the invoices were
numbered, opened and booked; ``engine/project.py`` composes them, in this
order, before the finalization write-off and the cash-management entries:

1. :func:`create_prepaid_balances`: an invoice whose ``PP_Amount__c`` is set
   (the org's pre-payment fields, §2.1 5) gets its ``Prepaid`` balance of
   −PP_Amount, with the other ``PP_<X>__c`` values copied to the balance's
   ``<X>__c`` or ``<X>`` field; it is booked like a prepayment (the money
   was received: bank against debtor), so the debtor in the books equals the
   balances. Nothing happens in an org without ``PP_Amount__c``.
2. :func:`assign_free_balances`: free balances of the invoices' accounts
   (payments on account, prepayments, overpayment excesses) are assigned to
   the new invoices (§4.6 step 8), with the rules and the order of the
   assignment job (:mod:`engine.cash.assignment`), restricted to the new
   invoices; ``ON_NoAutoBalanceAssignment__c`` on the invoice or account
   opts out, and so do progress and cancellation invoices. With cash
   management on, its own stage assigns CM money instead.
3. :func:`create_installments`: an invoice with a payment plan
   (``InstallmentType``) gets its installments (§4.9), what is already
   settled (a prepaid or assigned balance) as the deposit installment; their
   open amounts and ``NextPaymentDue`` then follow the invoice's balance
   (:mod:`engine.booking.dues`). With cash management on, the entries are
   made per installment by :func:`engine.cash.entries.create_entries`.

A direct debit collects the invoice's balance (or the due installments), so
money the customer already paid is never collected again.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import BalanceError, create_balance, refresh_accounts, refresh_invoices
from engine.booking.dues import refresh_installments
from engine.booking.finalize import StageError
from engine.booking.write import load_accounts
from engine.config.model import FieldType
from engine.storage.bulk import RowWriter
from engine.storage.context import Context

from .assignment import NO_ASSIGNMENT_INVOICE_TYPES, assign_balances
from .cm_core import enabled, select_in
from .cm_plans import build_installments, open_amounts
from .errors import InstallmentError

RUN = "finalization"
RULE_PREPAID = "PP_ fields at finalization"
PREPAID_AMOUNT_FIELD = "PP_Amount__c"
PREPAID_PREFIX = "pp_"
#: Balance fields a PP_ field never sets (the stage sets them, or they are the engine's).
_NOT_FROM_PP = {"amount", "type", "account", "invoice", "isprepaid", "origin", "rule", "run", "confighash",
                "splitfrom", "id", "name"}


def _refresh_rows(conn: sa.Connection, ctx: Context, invoices: list[dict], ids: set[int]) -> None:
    """The rows handed to the stages follow the invoices' new balances."""
    if not ids:
        return
    current = {r["id"]: r for r in select_in(conn, ctx, "Invoice", "id", ids)}
    for invoice in invoices:
        row = current.get(invoice["id"])
        if row is not None:
            invoice.update(balance=row["balance"], status=row["status"], paymentdate=row.get("paymentdate"),
                           nextpaymentdue=row.get("nextpaymentdue"), nextpaymentduedate=row.get("nextpaymentduedate"))


# --- 1. prepaid balances -------------------------------------------------------------------


def prepaid_balance(ctx: Context, invoice: dict) -> dict | None:
    """The Prepaid balance fields of an invoice with ``PP_Amount__c`` set
    (pure; None without one): amount −PP_Amount, the other PP_ values on
    the balance fields of the same name without ``PP_``."""
    amount = invoice.get(PREPAID_AMOUNT_FIELD.lower())
    if amount in (None, "") or Decimal(amount) == 0:
        return None
    balance_obj = ctx.obj("Balance")
    fields: dict = {"account": invoice["account"], "invoice": invoice["id"], "type": "Prepaid",
                    "amount": -Decimal(amount), "date": invoice.get("date"), "isprepaid": True}
    for fdef in ctx.obj("Invoice").fields:
        key = fdef.key
        if not key.startswith(PREPAID_PREFIX) or key == PREPAID_AMOUNT_FIELD.lower() or invoice.get(key) in (None, ""):
            continue
        base = fdef.name[3:-3] if fdef.name.endswith("__c") else fdef.name[3:]
        target = balance_obj.field(f"{base}__c") or balance_obj.field(base)
        if target is None or target.key in _NOT_FROM_PP or target.type is FieldType.FORMULA or not target.is_stored:
            continue
        fields[target.key] = invoice[key]
    return fields


def create_prepaid_balances(conn: sa.Connection, ctx: Context, invoices: list[dict]) -> None:
    """The stage (1. of the module docstring)."""
    if ctx.obj("Invoice").field(PREPAID_AMOUNT_FIELD) is None or not invoices:
        return
    wanted = [(invoice, prepaid_balance(ctx, invoice)) for invoice in invoices
              if invoice.get("type") != "Cancelation" and invoice.get("status") in ("Open", "Paid")]
    wanted = [(invoice, fields) for invoice, fields in wanted if fields is not None]
    if not wanted:
        return
    accounts = load_accounts(conn, ctx, {invoice["account"] for invoice, _ in wanted},
                             max(invoice.get("date") or date.today() for invoice, _ in wanted))
    for invoice, fields in wanted:
        try:
            create_balance(conn, ctx, fields, invoice=invoice, rule=RULE_PREPAID, run=RUN,
                           account=accounts.get(invoice["account"]))
        except BalanceError as error:  # no account to book it on, a bad amount
            raise StageError(invoice["id"], f"{invoice.get('name')}: Prepaid balance: {error}") from None
    ids = {invoice["id"] for invoice, _ in wanted}
    refresh_invoices(conn, ctx, ids)
    refresh_accounts(conn, ctx, {invoice["account"] for invoice, _ in wanted})
    _refresh_rows(conn, ctx, invoices, ids)


# --- 2. free balances ----------------------------------------------------------------------


def assign_free_balances(conn: sa.Connection, ctx: Context, invoices: list[dict]) -> None:
    """The stage (2. of the module docstring)."""
    if enabled(ctx):
        return  # cash management assigns its own money (engine.cash.entries)
    targets = [invoice for invoice in invoices
               if invoice.get("status") == "Open" and Decimal(invoice.get("balance") or 0) != 0
               and invoice.get("type") not in NO_ASSIGNMENT_INVOICE_TYPES]
    if not targets:
        return
    today = max(invoice.get("date") or date.today() for invoice in targets)
    report = assign_balances(conn, ctx, today, run=RUN, account_ids=sorted({i["account"] for i in targets}),
                             invoice_ids={i["id"] for i in targets})
    _refresh_rows(conn, ctx, invoices, report.invoices)


# --- 3. installments ---------------------------------------------------------------------


def wants_installments(invoice: dict) -> bool:
    """An invoice with a payment plan that something is open on."""
    return (invoice.get("installmenttype") not in (None, "") and invoice.get("type") != "Cancelation"
            and invoice.get("status") == "Open" and Decimal(invoice.get("grandtotal") or 0) != 0)


def create_installments(conn: sa.Connection, ctx: Context, invoices: list[dict]) -> None:
    """The stage (3. of the module docstring). A plan that cannot be applied
    refuses its invoice (:class:`StageError`: it stays a draft, the reason
    in the finalization report)."""
    planned = [invoice for invoice in invoices if wants_installments(invoice)]
    if not planned:
        return
    opened = open_amounts(conn, ctx, [invoice["id"] for invoice in planned])
    writer = RowWriter(conn, ctx.obj("Installment"))
    rows: list[dict] = []
    for invoice in planned:
        try:
            rows.extend(build_installments(ctx, invoice, opened[invoice["id"]]))
        except InstallmentError as error:
            raise StageError(invoice["id"], f"{invoice.get('name')}: payment plan: {error}") from None
    writer.insert(rows)
    ids = {invoice["id"] for invoice in planned}
    refresh_installments(conn, ctx, ids)
    _refresh_rows(conn, ctx, invoices, ids)


__all__ = ["assign_free_balances", "create_installments", "create_prepaid_balances", "prepaid_balance",
           "wants_installments"]
