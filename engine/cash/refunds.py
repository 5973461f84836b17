"""Credit balances and what happens to them: the credit balance strategy
(seed 000: "SCT order export from balance replaced by refund creation via
credit balance strategy", "manual refund creation", "SCT order transfer from
refunds"; ``metabill bank refunds``).

A credit balance is money the business owes a customer: an account's free
credit (overpayments, prepayments not used: -Σ of its free, not draft
balances in its currency, :func:`engine.booking.balances.free_credits`) or a
credit invoice with a negative open balance. The strategy of the business
entity (``BusinessEntity.CreditBalanceStrategy``, JustOn's values, overridable
per run) decides:

* ``Future Settlement`` (default): nothing now; the credit stays for the
  balance assignment job (``AssignBalancesChain``) and later invoices;
* ``Prepared Refund``: the credit is paid out by credit transfer: the next
  ``metabill export sepa-balances`` (free credit) and ``sepa-credit``
  (credit invoices) write the pain.001 orders; the run lists what they will
  take and changes nothing;
* ``Direct Refund``: the money was or is paid back at once (a provider, cash,
  a manual transfer): a ``Refund`` balance of the credit is registered on the
  account or the credit invoice (:func:`.payments.register_refund`), booked
  like every refund through its collective accounts, which closes the credit.

Manual refunds of any amount stay ``metabill payment refund``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import free_credits
from engine.domain.errors import Where
from engine.domain.money import ZERO
from engine.storage.context import Context

from .errors import PaymentError
from .payments import PaymentDetails, currency_of, register_refund

FUTURE, PREPARED, DIRECT = "Future Settlement", "Prepared Refund", "Direct Refund"
STRATEGIES = (FUTURE, PREPARED, DIRECT)


@dataclass(frozen=True)
class Credit:
    """One credit balance: ``target`` is ``account 10002`` or a credit's number."""

    target: str
    account_number: str
    invoice: str | None
    amount: Decimal


@dataclass
class RefundReport:
    strategy: str
    credits: list[Credit] = field(default_factory=list)
    refunded: list[tuple[Credit, str]] = field(default_factory=list)   # (credit, Refund balance name)

    @property
    def total(self) -> Decimal:
        return sum((c.amount for c in self.credits), ZERO)


def strategy_of(ctx: Context, entity: str, given: str | None = None) -> str:
    """The strategy to apply: ``given``, else the business entity's, else Future Settlement."""
    if given is not None:
        if given not in STRATEGIES:
            raise PaymentError(f"credit balance strategy {given!r} is not one of {', '.join(STRATEGIES)}",
                               where=Where(argument="--strategy"))
        return given
    record = ctx.model.setting_record("BusinessEntity", entity)
    if record is None:
        raise PaymentError(f"no business entity named {entity!r}", where=Where(object="BusinessEntity", record=entity))
    return str(record.get("CreditBalanceStrategy") or FUTURE)


def _is_default(ctx: Context, entity: str) -> bool:
    record = ctx.model.setting_record("BusinessEntity", entity)
    return bool(record is not None and record.get("Default"))


def credit_balances(conn: sa.Connection, ctx: Context, entity: str) -> list[Credit]:
    """The entity's credit balances: accounts with free credit (their free
    balances belong to the entity, or to none when it is the default one),
    then Open credit invoices with a negative balance, by number."""
    balances, accounts, invoices = ctx.table("Balance"), ctx.table("Account"), ctx.table("Invoice")
    owned = balances.c.businessentity == entity
    if _is_default(ctx, entity):
        owned = sa.or_(owned, balances.c.businessentity.is_(None))
    rows = conn.execute(sa.select(accounts.c.id, accounts.c.accountnumber, accounts.c.currencyisocode)
                        .where(accounts.c.id.in_(sa.select(balances.c.account)
                                                 .where(balances.c.invoice.is_(None), owned)))
                        .order_by(accounts.c.accountnumber)).mappings().all()
    by_currency: dict[str, list[int]] = {}
    for row in rows:
        by_currency.setdefault(currency_of(ctx, row), []).append(int(row["id"]))
    credits: dict[int, Decimal] = {}
    for currency, ids in by_currency.items():
        credits.update(free_credits(conn, ctx, ids, currency))
    found = []
    for row in rows:
        credit = credits[int(row["id"])]
        if credit > 0:
            found.append(Credit(f"account {row['accountnumber']}", str(row["accountnumber"]), None, credit))
    entity_match = invoices.c.businessentity == entity
    if _is_default(ctx, entity):
        entity_match = sa.or_(entity_match, invoices.c.businessentity.is_(None))
    query = (sa.select(invoices.c.name, accounts.c.accountnumber, invoices.c.balance)
             .join(accounts, accounts.c.id == invoices.c.account)
             .where(invoices.c.status == "Open", invoices.c.balance < 0, entity_match).order_by(invoices.c.name))
    for name, number, balance in conn.execute(query):
        found.append(Credit(str(name), str(number), str(name), -Decimal(balance)))
    return found


def apply_strategy(conn: sa.Connection, ctx: Context, entity: str, *, strategy: str | None, when: date,
                   run: str) -> RefundReport:
    """Apply the credit balance strategy to the entity's credit balances (see the module docstring)."""
    chosen = strategy_of(ctx, entity, strategy)
    report = RefundReport(chosen, credit_balances(conn, ctx, entity))
    if chosen != DIRECT:
        return report
    for credit in report.credits:
        details = PaymentDetails(reference=f"credit balance strategy {DIRECT}")
        row = register_refund(conn, ctx, credit.amount, when, invoice_name=credit.invoice,
                              account_number=None if credit.invoice else credit.account_number,
                              details=details, run=run)
        report.refunded.append((credit, str(row["name"])))
    return report


__all__ = ["DIRECT", "FUTURE", "PREPARED", "STRATEGIES", "Credit", "RefundReport", "apply_strategy",
           "credit_balances", "strategy_of"]
