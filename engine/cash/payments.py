"""Payments, refunds and manual write-offs on invoices and accounts.

A payment of P on an invoice with open amount O (domain-spec §4.5):

* P ≤ O: one ``Payment`` balance of -P on the invoice;
* P > O and ``AllowOverpayments`` off (the default): the invoice receives
  -max(O, 0) and the excess becomes a free ``Payment`` balance on the
  account (no invoice), waiting for the assignment job or a refund;
* P > O and ``AllowOverpayments`` on: the whole -P stays on the invoice,
  whose balance turns negative (it stays ``Open``: a balance that is not
  zero is open, §4.4 [doc]).

After the payment, when the invoice's rest is positive and at most the
payment write-off threshold (:class:`engine.booking.balances.WriteOffSettings`),
the rest is written off with the reason "Missing amount below threshold"
(§4.7) and the invoice is Paid.

A payment on an account (``register_account_payment``) is a free Payment
or Prepayment balance. A refund pays money back: a ``Refund`` balance of +R
on an invoice with a credit (negative balance), or on the account against
its free credit. A manual write-off is a ``Write off`` balance with a reason.

Every function works inside the caller's transaction, locks the invoice or
account row it changes (``FOR UPDATE`` where the database has it; SQLite
serialises writers anyway), books through :mod:`engine.booking.balances`,
and refreshes the invoice and account sums before it returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Mapping

import sqlalchemy as sa

from engine.booking.balances import (
    NO_WRITE_OFF_TYPES,
    REASON_PAYMENT,
    BalanceError,
    WriteOffSettings,
    create_balance,
    free_credits,
    refresh_accounts,
    refresh_invoices,
    write_off,
)
from engine.domain.errors import Where
from engine.domain.money import CENT, ZERO
from engine.storage.context import Context

from .cm_payments import record_cash_payment
from .errors import MigrationError, PaymentError, PaymentTargetNotFound

RULE_PAYMENT = "payment"
RULE_OVERPAYMENT_SPLIT = "AllowOverpayments=false: excess to the account"
RULE_THRESHOLD = "WriteOffThresholdPercent/WriteOffCapAmount"
RULE_REFUND = "refund"
RULE_MANUAL_WRITE_OFF = "manual write-off"
PAYMENT_TYPES = ("Payment", "Prepayment")


@dataclass(frozen=True)
class Registered:
    """A payment registered on an invoice, and what it led to."""

    invoice_name: str
    amount: Decimal
    balance_id: int
    invoice_balance: Decimal
    status: str
    free_amount: Decimal = ZERO          # the excess put on the account (overpayments off)
    free_balance_id: int | None = None
    written_off: Decimal = ZERO          # the automatic write-off after the payment
    write_off_balance_id: int | None = None


@dataclass(frozen=True)
class PaymentDetails:
    """Optional attributes of a payment balance."""

    reference: str | None = None
    payment_method: str | None = None
    payment_provider: str | None = None
    bank_account_id: str | None = None
    transaction_no: str | None = None
    assignment_key: str | None = None
    extra: dict = field(default_factory=dict)

    def fields(self) -> dict:
        values = {
            "reference": self.reference, "paymentmethod": self.payment_method,
            "paymentprovider": self.payment_provider, "bankaccountid": self.bank_account_id,
            "transactionno": self.transaction_no, "balanceassignmentkey": self.assignment_key,
        }
        return {k: v for k, v in {**values, **self.extra}.items() if v not in (None, "")}


def check_amount(amount: Decimal, what: str = "a payment amount") -> Decimal:
    """``amount`` with exactly two decimals, or a PaymentError when it is not
    a positive amount of at most two decimals."""
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0 \
            or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise PaymentError(f"{what} must be positive with at most two decimals, got {amount}")
    return amount.quantize(CENT)


def _locked(conn: sa.Connection, query: sa.Select) -> dict | None:
    """The row of ``query``, row-locked where the database has ``FOR UPDATE``
    (SQLite serialises writers anyway)."""
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    return dict(row) if row is not None else None


def lock_invoice(conn: sa.Connection, ctx: Context, invoice_name: str) -> dict:
    """The Open or Paid invoice numbered ``invoice_name``, locked for the change."""
    invoices = ctx.table("Invoice")
    invoice = _locked(conn, sa.select(invoices).where(invoices.c.name == invoice_name))
    where = Where(object="Invoice", record=invoice_name)
    if invoice is None:
        raise PaymentTargetNotFound(f"no invoice {invoice_name}", where=where)
    if invoice["status"] not in ("Open", "Paid"):
        raise PaymentError(f"{invoice_name} is {invoice['status']}: only Open or Paid invoices take payments",
                           where=where)
    return invoice


def lock_account(conn: sa.Connection, ctx: Context, account_number: str) -> dict:
    """The account with ``account_number``, locked for the change."""
    accounts = ctx.table("Account")
    account = _locked(conn, sa.select(accounts).where(accounts.c.accountnumber == account_number))
    if account is None:
        raise PaymentTargetNotFound(f"no account with account number {account_number}",
                                    where=Where(object="Account", record=account_number))
    return account


def check_transaction(conn: sa.Connection, ctx: Context, details: PaymentDetails) -> None:
    """A transaction number is registered once (payments are idempotent by it)."""
    if not details.transaction_no:
        return
    balances = ctx.table("Balance")
    if conn.execute(sa.select(balances.c.name).where(balances.c.transactionno == details.transaction_no)
                    .limit(1)).first() is not None:
        raise PaymentError(f"transaction {details.transaction_no} is registered already",
                           hint="each bank transaction is registered once; check the transaction number")


def _invoice_balance(conn: sa.Connection, ctx: Context, invoice_id: int) -> tuple[Decimal, str]:
    invoices = ctx.table("Invoice")
    row = conn.execute(sa.select(invoices.c.balance, invoices.c.status).where(invoices.c.id == invoice_id)).one()
    return (row.balance if row.balance is not None else ZERO), row.status


def register_payment(conn: sa.Connection, ctx: Context, invoice_name: str, amount: Decimal, when: date,
                     *, reference: str | None = None, details: PaymentDetails | None = None,
                     run: str = "payment register") -> Registered:
    """Register ``amount`` (> 0) received on the invoice named ``invoice_name``."""
    amount = check_amount(amount)
    details = details or PaymentDetails(reference=reference)
    invoice = lock_invoice(conn, ctx, invoice_name)
    check_transaction(conn, ctx, details)
    open_amount = invoice["balance"] if invoice["balance"] is not None else ZERO
    if ctx.settings.allow_overpayments:
        on_invoice = amount
    else:
        on_invoice = min(amount, max(open_amount, ZERO))
    excess = amount - on_invoice
    base = {"account": invoice["account"], "type": "Payment", "date": when, **details.fields()}
    try:
        assigned = None
        if on_invoice > 0:
            assigned = create_balance(conn, ctx, {**base, "invoice": invoice["id"], "amount": -on_invoice},
                                      invoice=invoice, rule=RULE_PAYMENT, run=run)
        free = None
        if excess > 0:
            free = create_balance(conn, ctx, {**base, "amount": -excess}, invoice=None,
                                  rule=RULE_PAYMENT if assigned is None else RULE_OVERPAYMENT_SPLIT, run=run)
        refresh_invoices(conn, ctx, [invoice["id"]])
        remaining, _ = _invoice_balance(conn, ctx, invoice["id"])
        written = None
        if assigned is not None and remaining > 0 and invoice.get("type") not in NO_WRITE_OFF_TYPES:
            threshold = WriteOffSettings.of(ctx).payment_threshold(
                Decimal(invoice.get("grandtotal") or 0), invoice.get("currencyisocode"))
            if threshold is not None and remaining <= threshold:
                written = write_off(conn, ctx, invoice, remaining, when, reason=REASON_PAYMENT,
                                    rule=RULE_THRESHOLD, run=run)
                refresh_invoices(conn, ctx, [invoice["id"]])
        # With cash management on: the Payment and its Entry Item (origin JPAY1); a no-op otherwise.
        record_cash_payment(conn, ctx, invoice, assigned or free, amount, when, free=free)
    except (BalanceError, MigrationError) as error:
        raise PaymentError(str(error), where=Where(object="Invoice", record=invoice_name),
                           hint=getattr(error, "hint", None)) from None
    refresh_accounts(conn, ctx, [invoice["account"]])
    balance, status = _invoice_balance(conn, ctx, invoice["id"])
    return Registered(
        invoice_name, amount, (assigned or free)["id"], balance, status,  # type: ignore[index]
        free_amount=excess, free_balance_id=free["id"] if free else None,
        written_off=-Decimal(written["amount"]) if written else ZERO,
        write_off_balance_id=written["id"] if written else None,
    )


@dataclass(frozen=True)
class AccountPayment:
    """A payment registered on an account (a free balance)."""

    account_number: str
    balance_id: int
    amount: Decimal
    account_balance: Decimal


def register_account_payment(conn: sa.Connection, ctx: Context, account_number: str, amount: Decimal,
                             when: date, *, balance_type: str = "Payment", details: PaymentDetails | None = None,
                             run: str = "payment on-account") -> AccountPayment:
    """Money received without an invoice: a free Payment or Prepayment
    balance of ``-amount`` on the account (assigned later by the job)."""
    amount = check_amount(amount)
    if balance_type not in PAYMENT_TYPES:
        raise PaymentError(f"a payment on an account is a Payment or Prepayment, not {balance_type!r}",
                           where=Where(object="Account", record=account_number))
    account = lock_account(conn, ctx, account_number)
    check_transaction(conn, ctx, details or PaymentDetails())
    try:
        row = create_balance(conn, ctx, {"account": account["id"], "type": balance_type, "amount": -amount,
                                           "date": when, **(details or PaymentDetails()).fields()},
                             invoice=None, rule=RULE_PAYMENT, run=run)
    except BalanceError as error:
        raise PaymentError(str(error), where=Where(object="Account", record=account_number)) from None
    refresh_accounts(conn, ctx, [account["id"]])
    return AccountPayment(account_number, row["id"], amount, account_balance(conn, ctx, account["id"]))


def account_balance(conn: sa.Connection, ctx: Context, account_id: int) -> Decimal:
    """Σ of all balances of the account (what it owes; negative: its credit)."""
    balances = ctx.table("Balance")
    return conn.execute(sa.select(sa.func.coalesce(sa.func.sum(balances.c.amount), sa.literal(ZERO, balances.c.amount.type)))
                        .where(balances.c.account == account_id)).scalar_one()


def free_credit(conn: sa.Connection, ctx: Context, account: Mapping[str, object]) -> Decimal:
    """What the account (its row) may have paid back in its own currency
    (:func:`engine.booking.balances.free_credits`, the one definition the
    balance export shares: drafts and other currencies' credit excluded)."""
    return free_credits(conn, ctx, [int(account["id"])], currency_of(ctx, account))[int(account["id"])]


def currency_of(ctx: Context, account: Mapping[str, object]) -> str:
    """The account's currency, else the org's default currency."""
    return str(account.get("currencyisocode") or ctx.settings.default_currency)


def register_refund(conn: sa.Connection, ctx: Context, amount: Decimal, when: date, *,
                    invoice_name: str | None = None, account_number: str | None = None,
                    details: PaymentDetails | None = None, run: str = "payment refund") -> dict:
    """Pay ``amount`` back to the customer: a Refund balance of ``+amount``
    on the invoice (at most its credit, i.e. -balance) or, with an account
    number, a free one on the account (at most its free credit)."""
    amount = check_amount(amount, "a refund amount")
    if (invoice_name is None) == (account_number is None):
        raise PaymentError("a refund goes to an invoice or to an account (exactly one of them)")
    where = (Where(object="Invoice", record=invoice_name) if invoice_name is not None
             else Where(object="Account", record=account_number))
    base = {"type": "Refund", "amount": amount, "date": when, **(details or PaymentDetails()).fields()}
    try:
        if invoice_name is not None:
            invoice = lock_invoice(conn, ctx, invoice_name)
            credit = -(invoice["balance"] or ZERO)
            if amount > credit:
                raise PaymentError(f"{invoice_name}: the refund {amount} exceeds the invoice's credit "
                                   f"{max(credit, ZERO)}", where=where)
            row = create_balance(conn, ctx, {**base, "account": invoice["account"], "invoice": invoice["id"]},
                                 invoice=invoice, rule=RULE_REFUND, run=run)
            refresh_invoices(conn, ctx, [invoice["id"]])
            refresh_accounts(conn, ctx, [invoice["account"]])
            return row
        account = lock_account(conn, ctx, account_number)  # type: ignore[arg-type]
        credit = free_credit(conn, ctx, account)
        if amount > credit:
            raise PaymentError(f"account {account_number}: the refund {amount} exceeds its free credit {credit}",
                               where=where)
        row = create_balance(conn, ctx, {**base, "account": account["id"]}, invoice=None, rule=RULE_REFUND, run=run)
        refresh_accounts(conn, ctx, [account["id"]])
        return row
    except BalanceError as error:
        raise PaymentError(str(error), where=where) from None


def manual_write_off(conn: sa.Connection, ctx: Context, invoice_name: str, amount: Decimal | None, when: date,
                     *, reason: str, calculate_tax: bool = True, run: str = "write-off") -> dict:
    """Write off ``amount`` (default: the whole open amount) of an invoice
    with a reason (domain-spec §4.7 "Manual write-off"). The amount is gross
    and may not exceed the open amount; on a credit (negative balance) the
    write-off reduces the credit."""
    invoice = lock_invoice(conn, ctx, invoice_name)
    where = Where(object="Invoice", record=invoice_name)
    if invoice.get("type") in NO_WRITE_OFF_TYPES:
        raise PaymentError(f"{invoice_name} is a {invoice['type']} invoice: its rest is cleared by its final invoice",
                           where=where)
    open_amount = invoice["balance"] or ZERO
    if open_amount == 0:
        raise PaymentError(f"{invoice_name} has nothing open to write off", where=where)
    if amount is None:
        amount = abs(open_amount)
    amount = check_amount(amount, "a write-off amount")
    if amount > abs(open_amount):
        raise PaymentError(f"{invoice_name}: the write-off {amount} exceeds the open amount {abs(open_amount)}",
                           where=where)
    if not reason:
        raise PaymentError("a manual write-off needs a reason", where=where)
    signed = amount if open_amount > 0 else -amount
    try:
        row = write_off(conn, ctx, invoice, signed, when, reason=reason, rule=RULE_MANUAL_WRITE_OFF, run=run,
                        calculate_tax=calculate_tax)
    except BalanceError as error:
        raise PaymentError(str(error), where=where) from None
    refresh_invoices(conn, ctx, [invoice["id"]])
    refresh_accounts(conn, ctx, [invoice["account"]])
    return row
