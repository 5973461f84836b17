"""Shared helpers of the cash-management tests: the sample org with the
integration switched on (a copy whose GlobalSettings says
``EnableCashManagementIntegration: true``), books that finalize through the
product's finalization chain (:func:`engine.project.finalize`, every stage), and
the invariants that tie entries to invoices.

:func:`assert_entries_match` checks, from the whole Entry, EntryItem,
Reduction, Balance and Invoice tables:

* every finalized invoice with a non-zero total (not a cancellation) has live
  entries, whose open amounts sum to its grand total, one per installment
  when it has installments;
* each live entry's outstanding amount == open amount + Σ its entry items +
  Σ its reductions, and its status is Settled exactly when that is zero;
* when all of an invoice's money balances are CM balances (JPAY1), Σ of the
  outstanding amounts of its live entries == the invoice's balance;
* every entry item has exactly one balance, with the same amount; every
  JPAY1 balance carries the End-to-End Id of an existing payment, and a
  payment's amount is −Σ of its JPAY1 balances;
* canceled invoices have no live entries.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.cash.cm_core import MONEY_TYPES, ORIGIN
from engine.cash.payments import register_payment
from engine.project import finalize as pipeline_finalize

from booking.helpers import ZERO, Books
from config.orgcopy import Replace
from contexts import context

CM_ON = Replace("custom_settings/GlobalSettings.yaml", "EnableCashManagementIntegration: false",
                "EnableCashManagementIntegration: true")


class CMBooks(Books):
    """Books whose finalization is the product's: every stage of the chain."""

    def finalize(self, ids, today):
        return pipeline_finalize(self.engine, context(self.model), list(ids), today=today)

    def with_model(self, model, org_dir=None) -> "CMBooks":
        """The same database seen through another configuration (e.g. the integration switched on)."""
        return CMBooks(self.engine, model, self.url, org_dir or self.org_dir)

    def update(self, object_name: str, record_id: int, **values) -> None:
        """Change a record behind the engine's back (typed values, any backend)."""
        table = self.t(object_name)
        with self.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == record_id).values(**values))

    def entries(self, invoice: str | None = None, *, live: bool = False) -> list[dict]:
        t = self.t("Entry")
        where = []
        if invoice is not None:
            where.append(t.c.invoice == self.invoice(invoice)["id"])
        if live:
            where.append(t.c.status.in_(("Open", "Settled")))
        return sorted(self.select("Entry", *where), key=lambda e: (e["duedate"], e["id"]))

    def items(self, entry: dict) -> list[dict]:
        return self.select("EntryItem", self.t("EntryItem").c.entry == entry["id"])

    def reductions(self, entry: dict) -> list[dict]:
        return self.select("Reduction", self.t("Reduction").c.entry == entry["id"])

    def installments(self, invoice: str) -> list[dict]:
        rows = self.select("Installment", self.t("Installment").c.invoice == self.invoice(invoice)["id"])
        return sorted(rows, key=lambda r: r["sequence"])

    def payments(self) -> list[dict]:
        return self.select("Payment")


def pay_cm(books: Books, invoice: str, amount: str | Decimal, when: date = date(2024, 11, 1), **kwargs):
    """A payment registration (register_payment records the cash-management
    payment itself when the integration is on); returns the registration and
    the Payment record made from its balance (None when there is none)."""
    with books.engine.begin() as conn:
        registered = register_payment(conn, context(books.model), invoice, Decimal(amount), when, **kwargs)
        payments = books.t("Payment")
        found = conn.execute(sa.select(payments).where(payments.c.balance == registered.balance_id)).mappings().first()
    return registered, dict(found) if found is not None else None


def assert_entries_match(books: CMBooks) -> None:
    invoices = {i["id"]: i for i in books.invoices()}
    entries = books.select("Entry")
    items = books.select("EntryItem")
    reductions = books.select("Reduction")
    balances = books.balances()
    installments = books.select("Installment")
    payments = {p["endtoendid"]: p for p in books.payments()}

    live: dict[int, list[dict]] = defaultdict(list)
    for entry in entries:
        if entry["status"] in ("Open", "Settled"):
            live[entry["invoice"]].append(entry)
    effect: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for row in items + reductions:
        effect[row["entry"]] += row["amount"]
    with_installments = {i["invoice"] for i in installments}
    for invoice in invoices.values():
        own = live.get(invoice["id"], [])
        if invoice["status"] == "Canceled" or invoice["type"] == "Cancelation":
            assert not own, f"{invoice['name']} ({invoice['status']}) has live entries"
            continue
        if invoice["status"] not in ("Open", "Paid") or invoice["grandtotal"] == 0:
            continue
        assert own, f"{invoice['name']} has no entries"
        assert sum((e["openamount"] for e in own), ZERO) == invoice["grandtotal"], invoice["name"]
        if invoice["id"] in with_installments:
            assert all(e["statementtype"] == "Installment" for e in own), invoice["name"]
        else:
            assert len(own) == 1, f"{invoice['name']}: {len(own)} entries"
        money = [b for b in balances if b["invoice"] == invoice["id"] and b["type"] in MONEY_TYPES]
        if all(b["origin"] == ORIGIN for b in money):
            outstanding = sum((e["amount"] for e in own), ZERO)
            assert outstanding == invoice["balance"], f"{invoice['name']}: entries {outstanding} != balance {invoice['balance']}"
    for entry in entries:
        if entry["status"] == "Canceled":
            assert entry["amount"] == 0
            continue
        expected = entry["openamount"] + effect[entry["id"]]
        assert entry["amount"] == expected, f"{entry['name']}: {entry['amount']} != {expected}"
        assert entry["status"] == ("Settled" if expected == 0 else "Open"), entry["name"]
    by_item = defaultdict(list)
    for balance in balances:
        if balance["entryitem"] is not None:
            by_item[balance["entryitem"]].append(balance)
    for item in items:
        linked = by_item.get(item["id"], [])
        assert len(linked) == 1, f"entry item {item['name']}: {len(linked)} balances"
        assert linked[0]["amount"] == item["amount"], item["name"]
    sums: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for balance in balances:
        if balance["origin"] == ORIGIN and balance["type"] in MONEY_TYPES:
            assert balance["transactionno"] in payments, f"{balance['name']}: no payment {balance['transactionno']}"
            sums[balance["transactionno"]] += balance["amount"]
    for reference, payment in payments.items():
        assert payment["amount"] == -sums[reference], f"payment {payment['name']}: {payment['amount']} != {-sums[reference]}"
