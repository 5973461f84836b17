"""A small billing world for the reliability tests: a database that can be
reset quickly, the few operations the tests drive (bill, finalize, pay,
cancel), and the invariant checks that must hold after any of them, crashed
or not.

The source records are ``Usage__c`` records of the test org
(tests/billing/helpers.py): single-object, plain controlling fields, so a
test knows exactly what each record bills.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.billing.run import RunReport, RunRequest, run_invoices
from engine.booking.cancel import create_cancellation
from engine.booking.finalize import FinalizeReport, finalize_invoices
from engine.booking.postings import account_movements, check_postings, sides
from engine.cash.payments import Registered, register_payment
from engine.config.model import OrgModel
from engine.storage.bulk import RowWriter
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration
from engine.storage.retry import run_in_transaction
from engine.storage.schema import CLAIM, META, SCHEMA_FIELD, ON_DEMAND, build_metadata
from contexts import context

ACCOUNTS = ("S1", "S2", "S3")
PERIOD = (date(2024, 1, 1), date(2024, 12, 31))
SERVICE_DATE = date(2024, 6, 1)
TODAY = date(2024, 12, 31)
FILTER = "Usage"
ZERO = Decimal("0.00")
CENT = Decimal("0.01")
_NUMBER = re.compile(r"^(.*?)(\d+)$")


def account_rows() -> list[dict]:
    return [
        {"name": f"Reliability {number}", "accountnumber": number, "billingcountrycode": "DE",
         "billingcity": "Berlin", "currencyisocode": "EUR", "on_debtorno__c": str(30001 + i)}
        for i, number in enumerate(ACCOUNTS)
    ]


class World:
    """One database (SQLite file or PostgreSQL schema) with the org's schema
    and three accounts; :meth:`reset` brings it back to that state."""

    def __init__(self, url: str, model: OrgModel, workdir: Path):
        self.url = url
        self.model = model
        self.tables = build_metadata(model)
        self.engine = open_engine(url)
        self.backend = self.engine.dialect.name
        apply_migration(self.engine, model)
        self._template: Path | None = None
        if self.backend == "sqlite":
            self._seed()
            self.engine.dispose()  # checkpoints the WAL into the file
            self._template = workdir / "reliability-template.db"
            shutil.copyfile(make_url(url).database, self._template)

    def close(self) -> None:
        self.engine.dispose()

    def t(self, object_name: str) -> sa.Table:
        return self.tables.tables[self.model.require(object_name).table_name]

    def reset(self) -> None:
        if self._template is not None:
            self.engine.dispose()
            path = Path(make_url(self.url).database)
            for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
            shutil.copyfile(self._template, path)
            return
        keep = {SCHEMA_FIELD.name, META.name}
        names = sorted(name for name in self.tables.tables if name not in keep)  # one TRUNCATE: no order needed
        with self.engine.begin() as conn:
            # Tables created on first use (run owners, export batches, job slots) go too.
            present = set(sa.inspect(conn).get_table_names())
            names += sorted(t for t in ON_DEMAND.tables if t in present)
            prep = conn.dialect.identifier_preparer
            conn.exec_driver_sql("TRUNCATE " + ", ".join(prep.quote(n) for n in names))
        self._seed()

    def _seed(self) -> None:
        with self.engine.begin() as conn:
            RowWriter(conn, self.model.require("Account")).insert(account_rows())

    # -- operations ------------------------------------------------------------------

    def add_usage(self, account: str, quantity: Decimal, price: Decimal, title: str) -> int:
        record = {"on_account__c": account, "on_title__c": title, "on_quantity__c": quantity,
                  "on_unitprice__c": price, "on_servicedate__c": SERVICE_DATE}
        with self.engine.begin() as conn:
            RowWriter(conn, self.model.require("Usage__c")).insert([record])
        return record["id"]

    def set_price(self, usage_id: int, price: Decimal) -> None:
        table = self.t("Usage__c")
        with self.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == usage_id).values(on_unitprice__c=price))

    def delete_usage(self, usage_id: int) -> None:
        table = self.t("Usage__c")
        with self.engine.begin() as conn:
            conn.execute(sa.delete(table).where(table.c.id == usage_id).where(table.c.on_invoice__c.is_(None)))

    def run(self, batch_size: int, engine: sa.Engine | None = None) -> RunReport:
        request = RunRequest(filters=(FILTER,), period_start=PERIOD[0], period_end=PERIOD[1],
                             batch_size=batch_size, today=TODAY)
        return run_invoices(engine or self.engine, context(self.model), request)

    def drafts(self) -> list[int]:
        table = self.t("Invoice")
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(table.c.id).where(table.c.status == "Draft").order_by(table.c.id))
                        .scalars())

    def finalize(self, ids: list[int], engine: sa.Engine | None = None) -> FinalizeReport:
        return finalize_invoices(engine or self.engine, context(self.model), ids, today=TODAY)

    def pay(self, invoice_name: str, amount: Decimal, engine: sa.Engine | None = None) -> Registered:
        return run_in_transaction(engine or self.engine,
                                  lambda conn: register_payment(conn, context(self.model), invoice_name, amount, TODAY))

    def cancel(self, invoice_name: str) -> FinalizeReport:
        draft = run_in_transaction(self.engine, lambda conn: create_cancellation(conn, context(self.model), invoice_name, "test"))
        return self.finalize([draft])

    # -- reading -----------------------------------------------------------------------

    def rows(self, object_name: str, *where) -> list[dict]:
        table = self.t(object_name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where).order_by(table.c.id))]

    def claims(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(CLAIM))]


# --- invariants -------------------------------------------------------------------------

#: Invoice fields that never change once an invoice is finalized (status,
#: balance and payment date do: payments and cancellations move them).
FROZEN_INVOICE = ("name", "account", "type", "class", "date", "paymentduedate", "totalnet", "totaltax", "grandtotal",
                  "currencyisocode", "relatedinvoice", "invoicerun")
FROZEN_LINE = ("id", "invoice", "title", "quantity", "unitprice", "postotalnet", "postotaltax", "postotalgross",
               "taxrate", "taxcode", "glaccount", "sourcerecordid")


@dataclass
class Frozen:
    """What finalized invoices looked like when first seen finalized."""

    invoices: dict[int, tuple]
    lines: dict[int, tuple]
    details: dict[int, tuple]


def frozen_view(world: World) -> Frozen:
    invoices = {i["id"]: tuple(i[k] for k in FROZEN_INVOICE) for i in world.rows("Invoice") if i["status"] != "Draft"}
    lines = {
        line["id"]: tuple(line[k] for k in FROZEN_LINE)
        for line in world.rows("InvoiceLineItem") if line["invoice"] in invoices
    }
    details = {d["id"]: (d["invoice"], d["amount"], sides(d)) for d in world.rows("BookingDetail")}
    return Frozen(invoices, lines, details)


def check_invariants(world: World, before: Frozen | None = None) -> Frozen:
    """Every invariant that holds in any committed state; returns the frozen
    view to compare the next state with.

    * I1: each source record is claimed at most once (the claim table's key)
      and the claims are exactly the records' ON_Invoice write-back, pointing
      to an invoice that is neither canceled nor a cancellation;
    * I2: Σ debit == Σ credit over all booking details (and each posting is
      well-formed); booking details are never changed or deleted;
    * I3: every invoice has lines, its totals are the sums of its lines, gross
      = net + tax on invoices and lines;
    * I7: finalized invoices and their lines keep their values;
    * I8: final numbers are unique and gapless per prefix, and each number
      range's counter is its highest number;
    * balances: an invoice's balance is the sum of its balance records.
    """
    invoices = world.rows("Invoice")
    lines = world.rows("InvoiceLineItem")
    by_invoice: dict[int, list[dict]] = defaultdict(list)
    for line in lines:
        by_invoice[line["invoice"]].append(line)
    ids = {i["id"] for i in invoices}
    assert set(by_invoice) <= ids, "lines without their invoice"
    for invoice in invoices:
        own = by_invoice.get(invoice["id"], [])
        assert own, f"{invoice['name']} has no lines"
        for key, total in (("postotalnet", "totalnet"), ("postotaltax", "totaltax"), ("postotalgross", "grandtotal")):
            assert sum((line[key] for line in own), ZERO) == invoice[total], f"{invoice['name']}: {total} != lines"
        assert invoice["grandtotal"] == invoice["totalnet"] + invoice["totaltax"]
        for line in own:
            assert line["postotalgross"] == line["postotalnet"] + line["postotaltax"]

    # I1: claims and write-back agree; billed at most once.
    claims = world.claims()
    keys = [(c["source_table"], c["source_id"], c["suffix"]) for c in claims]
    assert len(keys) == len(set(keys)), "a source record claimed twice"
    claimed = {c["source_id"]: c["invoice_id"] for c in claims if c["source_table"] == world.t("Usage__c").name}
    written = {u["id"]: u["on_invoice__c"] for u in world.rows("Usage__c") if u["on_invoice__c"] is not None}
    assert claimed == written, "claims differ from the ON_Invoice write-back"
    status = {i["id"]: (i["status"], i["type"]) for i in invoices}
    for usage_id, invoice_id in claimed.items():
        assert invoice_id in status, f"usage {usage_id} billed by a missing invoice"
        assert status[invoice_id][0] != "Canceled" and status[invoice_id][1] != "Cancelation"
    billed_lines = defaultdict(list)
    for line in lines:
        if status[line["invoice"]][1] != "Cancelation" and status[line["invoice"]][0] != "Canceled":
            billed_lines[str(line["sourcerecordid"])].append(line["invoice"])
    assert all(len(v) == 1 for v in billed_lines.values()), "a source record on two live invoices"

    # I2: double entry.
    details = world.rows("BookingDetail")
    check_postings(details)
    debit = sum((abs(d["amount"]) for d in details if sides(d)[0]), ZERO)
    credit = sum((abs(d["amount"]) for d in details if sides(d)[1]), ZERO)
    assert debit == credit
    assert sum(account_movements(details).values(), ZERO) == 0

    # I8: gapless, unique numbers.
    numbers: dict[str, list[int]] = defaultdict(list)
    for invoice in invoices:
        if invoice["status"] == "Draft":
            assert invoice["name"].startswith("DRAFT-")
            continue
        match = _NUMBER.match(invoice["name"])
        assert match, f"finalized invoice without a number: {invoice['name']}"
        numbers[match.group(1)].append(int(match.group(2)))
    for prefix, values in numbers.items():
        values.sort()
        assert values == list(range(values[0], values[0] + len(values))), f"{prefix}: numbers {values} have gaps/dupes"
        assert values[0] == 1, f"{prefix}: numbering starts at {values[0]}"
    ranges = world.rows("NumberRange")
    assert sorted(int(r["counter"]) for r in ranges) == sorted(max(v) for v in numbers.values())

    # Balances: nothing lost.
    sums: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for balance in world.rows("Balance"):
        if balance["invoice"] is not None:
            sums[balance["invoice"]] += balance["amount"]
    for invoice in invoices:
        if invoice["status"] != "Draft":
            assert invoice["balance"] == sums[invoice["id"]], f"{invoice['name']}: balance != its balance records"

    now = frozen_view(world)
    if before is not None:
        for key, value in before.invoices.items():
            assert now.invoices.get(key) == value, f"finalized invoice {key} changed"
        for key, value in before.lines.items():
            assert now.lines.get(key) == value, f"line {key} of a finalized invoice changed"
        for key, value in before.details.items():
            assert now.details.get(key) == value, f"booking detail {key} changed"
    return now


def number_of(name: str) -> tuple[str, int]:
    match = _NUMBER.match(name)
    assert match
    return match.group(1), int(match.group(2))


def money(value: Decimal) -> Decimal:
    """Commercial rounding to cents (half away from zero), as invoices round."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
