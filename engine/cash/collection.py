"""Payment balance collection (domain-spec §4.6 "Collect", seed 002).

Money a customer paid that was never matched to an invoice belongs to the
business after the statute of limitations. The collectable balances of a
business entity are the balances

* of type Payment or Prepayment,
* not related to an invoice,
* not locked (the ``Locked`` formula) and not drafts,
* of that business entity (the balance's ``BusinessEntity``, else its
  account's ``ON_BusinessEntity__c``),
* dated before today minus ``StatuteOfLimitationsYears`` (GlobalSettings),
* covered by the account's free credit (oldest first): money already paid
  back by a free refund or payout is not collected again.

Collecting one creates a ``Write off`` balance of the opposite amount on the
same account (reason "Statute of limitations", no tax: no invoice to take it
from), booked like every write-off, and locks both (LockedReason
"Collected"): the pair nets to zero, and neither is exported, assigned or
collected again, so a second run finds nothing (idempotent).

Streaming: candidates are read in keyset pages by balance id; each page's
write-offs are created in the caller's transaction. A dry run is this same
work in a transaction that is rolled back
(:func:`engine.cash.service.collect_balances`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.booking.balances import WRITE_OFF, create_balance, refresh_accounts
from engine.booking.write import load_account
from engine.domain.errors import Where
from engine.domain.money import ZERO
from engine.storage.bulk import update_by_id
from engine.storage.context import Context

from .assignment import record_flag
from .errors import CollectionError

RULE_COLLECTION = "payment balance collection"
COLLECTED = "Collected"
REASON = "Statute of limitations"
PAGE = 1000


@dataclass(frozen=True)
class Collectable:
    """A balance that collection writes off."""

    balance_id: int
    name: str
    account_id: int
    account_name: str | None
    type: str
    date: date
    amount: Decimal


@dataclass
class CollectionReport:
    """The balances collected (or, in a dry run, that would be) and the
    write-offs created (none in a dry run: they were rolled back)."""

    cutoff: date
    balances: list[Collectable] = field(default_factory=list)
    write_offs: list[int] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((b.amount for b in self.balances), ZERO)


def cutoff_date(ctx: Context, today: date) -> date:
    """Today minus GlobalSettings.StatuteOfLimitationsYears: balances dated
    before it are past the statute of limitations."""
    setting = ctx.settings.statute_of_limitations_years
    if setting is None:
        raise CollectionError("GlobalSettings.StatuteOfLimitationsYears is not set",
                              hint="set StatuteOfLimitationsYears in custom_settings/GlobalSettings.yaml")
    years = int(setting)
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)


def collect_balances(conn: sa.Connection, ctx: Context, business_entity: str, today: date, *,
                     run: str = "collect-balances") -> CollectionReport:
    """Collect the collectable balances of ``business_entity`` (see the module
    docstring) inside the caller's transaction."""
    model = ctx.model
    entity_argument = Where(argument="--business-entity")
    if not business_entity:
        raise CollectionError("name the business entity whose balances are collected", where=entity_argument)
    if model.setting_record("BusinessEntity", business_entity) is None:
        known = ", ".join(r.name for r in model.setting_records("BusinessEntity"))
        raise CollectionError(f"no business entity {business_entity!r} (known: {known})", where=entity_argument)
    reasons = ctx.obj("Balance").field("WriteOffReason")
    if reasons is not None and reasons.values and REASON not in reasons.values:
        raise CollectionError(f"the Balance.WriteOffReason picklist lacks the value {REASON!r} that collection writes",
                              hint=f"add {REASON!r} to the values of Balance.WriteOffReason")
    report = CollectionReport(cutoff_date(ctx, today))
    balances, accounts = ctx.table("Balance"), ctx.table("Account")
    entity = sa.func.coalesce(balances.c.businessentity, accounts.c.on_businessentity__c)
    last_id = 0
    credit: dict[tuple, Decimal] = {}
    while True:
        page = [dict(r) for r in conn.execute(
            sa.select(balances, accounts.c.name.label("_account_name"))
            .join(accounts, accounts.c.id == balances.c.account)
            .where(balances.c.id > last_id, balances.c.type.in_(("Payment", "Prepayment")),
                   balances.c.invoice.is_(None), balances.c.date < report.cutoff, entity == business_entity,
                   sa.or_(balances.c.draft.is_(None), balances.c.draft == sa.false()))
            .order_by(balances.c.id).limit(PAGE)).mappings()]
        if not page:
            break
        last_id = page[-1]["id"]
        chosen = [b for b in page if b["amount"] < 0 and not record_flag(ctx, "Balance", "Locked", b, today)]
        chosen = _within_free_credit(conn, ctx, chosen, credit, today)
        for balance in chosen:
            report.balances.append(Collectable(balance["id"], balance["name"], balance["account"],
                                               balance["_account_name"], balance["type"], balance["date"],
                                               balance["amount"]))
        if not chosen:
            continue
        for balance in chosen:
            account = load_account(conn, ctx, balance["account"], today)
            row = create_balance(conn, ctx, {
                "account": balance["account"], "type": WRITE_OFF, "amount": -balance["amount"], "date": today,
                "writeoffreason": REASON, "calculatetax": False, "lockedreason": COLLECTED,
                "businessentity": business_entity, "currencyisocode": balance.get("currencyisocode"),
                "reference": f"collects {balance['name']}",
            }, invoice=None, rule=RULE_COLLECTION, run=run, account=account)
            report.write_offs.append(row["id"])
        update_by_id(conn, ctx.obj("Balance"), ["LockedReason"], [(b["id"], (COLLECTED,)) for b in chosen])
        refresh_accounts(conn, ctx, {b["account"] for b in chosen})
    return report


def _within_free_credit(conn: sa.Connection, ctx: Context, chosen: list[dict], credit: dict[tuple, Decimal],
                        today: date) -> list[dict]:
    """Keep the balances the account's free credit covers: never collect
    money that was paid back (a free Refund or Payout), which would turn the
    account into a debt. ``credit`` holds what is left per (account,
    currency) across pages: -Σ of the unlocked, not draft free balances
    (as :func:`engine.booking.balances.free_credits`, but a collected pair,
    the credit and its locked write-off, leaves it out)."""
    balances = ctx.table("Balance")
    missing = sorted({b["account"] for b in chosen} - {key[0] for key in credit})
    if missing:
        rows = [dict(r) for r in conn.execute(
            sa.select(balances).where(balances.c.account.in_(missing), balances.c.invoice.is_(None),
                                      balances.c.draft.is_not(sa.true()))).mappings()]
        for account_id in missing:
            credit.setdefault((account_id, None), ZERO)  # marks the account as read
        for row in rows:
            if not record_flag(ctx, "Balance", "Locked", row, today):
                key = (row["account"], row.get("currencyisocode"))
                credit[key] = credit.get(key, ZERO) - row["amount"]
    kept = []
    for balance in chosen:
        key = (balance["account"], balance.get("currencyisocode"))
        if -balance["amount"] <= credit.get(key, ZERO):
            credit[key] = credit.get(key, ZERO) + balance["amount"]
            kept.append(balance)
    return kept
