"""The source data the run benchmarks bill: two profiles of the sample org.

``realistic`` (the default of ``bench.invoice_run`` and ``bench.finalize``)
is what an org of this shape bills in one run, through three filters of
``custom_settings/Filter.yaml``:

* **Order Invoice** (parent-child): one standard order per account with 5-15
  items, each at its own price, of 40 products in several product groups and
  two tax classes (books are reduced-rate in Germany); line-level formulas
  (``ON_ProductGroup__c``, ``ON_ProductTaxClass__c``, quantity and price)
  and ON copies (``ON_CostObject__c`` on a third of the items, the header's
  ``ON_PurchaseOrderNo__c`` on half of the orders);
* **Order Sub Invoice** (single object): 5-15 partial deliveries of a
  final-invoice order, grouped by the order number into one partial
  invoice. The final invoice of such an order can only be built once its
  partial invoices are finalized (a later run), so these orders start in
  2025: **Order Invoice** reads them and leaves them alone;
* **UC1 Final Invoice** (parent-child with the transactional suffix
  ``Final``): opportunities with 5-15 products, read through the
  ``...Final__c`` controlling fields.

Accounts are in Germany (19 % and 7 %), Austria with a VAT id (reverse
charge), France without one (EU rate), Switzerland (non-EU, CHF) and the
US (non-EU, USD). About 1 % of the header records fail with a record
error (an item or delivery without a title), which the run reports and
writes back. The share of billed lines is about 55 % standard orders, 20 %
deliveries, 25 % opportunity products.

``uniform`` is the earlier profile, kept for comparison: one filter, 10
lines per order, 20 orders per account (so 200 lines per invoice), one
product, ten prices, one tax rule, no errors.

Generation is deterministic (fixed seed) and is never part of a timed
region. ``python -m bench.workload URL LINES PROFILE`` fills an empty,
migrated database (the benchmarks run it in a child process, so that the
peak memory they report is the run's, not the generator's).
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from engine.storage.bulk import RowWriter

PROFILES = ("realistic", "uniform")
#: The filters each profile bills, in the run's order.
FILTERS = {
    "realistic": ("UC1 Final Invoice", "Order Sub Invoice", "Order Invoice"),
    "uniform": ("Order Invoice",),
}
RUN_PERIOD = (date(2024, 1, 1), date(2024, 12, 31))
INVOICE_DATE = date(2024, 1, 31)

# Countries: (code, currency, VAT id or None, weight).
_COUNTRIES = (
    ("DE", "EUR", None, 50),
    ("AT", "EUR", "ATU", 15),
    ("FR", "EUR", None, 15),
    ("CH", "CHF", None, 10),
    ("US", "USD", None, 10),
)
_GROUPS = ("Services", "Licences", "Hardware", "Books", "Training")
#: Share of header records that fail with a record error.
FAILING_SHARE = 0.01


@dataclass
class Written:
    """What a profile wrote: header records per filter, source lines."""
    headers: int = 0
    lines: int = 0
    failing: int = 0


def generate(engine, model, lines: int, profile: str = "realistic") -> Written:
    """Fill a migrated, empty database with about ``lines`` source lines."""
    if profile == "uniform":
        return _uniform(engine, model, lines)
    if profile != "realistic":
        raise ValueError(f"unknown profile {profile!r}; one of {', '.join(PROFILES)}")
    return _Realistic(engine, model, lines).write()


def _uniform(engine, model, lines: int) -> Written:
    per_order, per_account = 10, 20
    orders = max(lines // per_order, 1)
    accounts = max(orders // per_account, 1)
    with engine.begin() as conn:
        account_rows = [
            {"name": f"Bench Customer {i:06d}", "accountnumber": f"B{i:07d}", "billingcountrycode": "DE",
             "billingcity": "Berlin", "currencyisocode": "EUR", "on_debtorno__c": str(20000 + i)}
            for i in range(accounts)
        ]
        RowWriter(conn, model.require("Account")).insert(account_rows)
        product = {"name": "Consulting hour", "productcode": "BENCH-1", "productgroup": "Services"}
        RowWriter(conn, model.require("Product")).insert([product])
        order_writer = RowWriter(conn, model.require("Order"))
        item_writer = RowWriter(conn, model.require("OrderItem"))
        for start in range(0, orders, 5000):
            order_rows = [
                {"name": f"Order {n:07d}", "accountid": account_rows[n % accounts]["id"],
                 "ordernumber": f"BO-{n:07d}", "effectivedate": date(2024, 1, 15), "status": "Activated",
                 "currencyisocode": "EUR"}
                for n in range(start, min(start + 5000, orders))
            ]
            order_writer.insert(order_rows)
            item_writer.insert([
                {"orderid": order["id"], "productid": product["id"], "quantity": Decimal(1 + (k % 5)),
                 "unitprice": Decimal("12.5000") + k, "on_title__c": f"Service item {k + 1}"}
                for order in order_rows for k in range(per_order)
            ])
    return Written(headers=orders, lines=orders * per_order)


class _Realistic:
    """The realistic profile; see the module docstring."""

    CHUNK = 2000  # header records written per insert

    def __init__(self, engine, model, lines: int):
        self.engine = engine
        self.model = model
        self.target = max(lines, 100)
        self.rng = random.Random(20240131)
        self.out = Written()

    def _size(self) -> int:
        return self.rng.randint(5, 15)

    def _price(self) -> Decimal:
        return Decimal(self.rng.randint(500, 250_000)) / 100

    def _fails(self) -> bool:
        if self.rng.random() < FAILING_SHARE:
            self.out.failing += 1
            return True
        return False

    def write(self) -> Written:
        standard_lines = self.target * 55 // 100
        delivery_lines = self.target * 20 // 100
        opportunity_lines = self.target - standard_lines - delivery_lines
        with self.engine.begin() as conn:
            self.conn = conn
            self._products()
            self._standard_orders(standard_lines)
            self._final_orders(delivery_lines)
            self._opportunities(opportunity_lines)
        return self.out

    def _products(self) -> None:
        self.products = [
            {"name": f"Product {i:02d}", "productcode": f"BP-{i:02d}", "productgroup": _GROUPS[i % len(_GROUPS)],
             "family": _GROUPS[i % len(_GROUPS)], "taxclass": "Reduced" if i % len(_GROUPS) == 3 else "Standard",
             "isactive": True}
            for i in range(40)
        ]
        RowWriter(self.conn, self.model.require("Product")).insert(self.products)

    def _accounts(self, count: int, start: int) -> list[dict]:
        codes = [c for c in _COUNTRIES for _ in range(c[3])]
        rows = []
        for i in range(start, start + count):
            code, currency, vat_prefix, _ = codes[self.rng.randrange(len(codes))]
            rows.append({
                "name": f"Bench Customer {i:07d}", "accountnumber": f"B{i:07d}", "billingcountrycode": code,
                "billingcity": "City", "currencyisocode": currency, "on_debtorno__c": str(20000 + i),
                "taxnumber": f"{vat_prefix}{10_000_000 + i}" if vat_prefix else None,
            })
        RowWriter(self.conn, self.model.require("Account")).insert(rows)
        return rows

    def _items(self, order: dict, count: int, fail: bool) -> list[dict]:
        rows = []
        for k in range(count):
            product = self.products[self.rng.randrange(len(self.products))]
            rows.append({
                "orderid": order["id"], "productid": product["id"],
                "orderitemnumber": f"{order['ordernumber']}-{k + 1}",
                "quantity": Decimal(self.rng.randint(1, 40)) / 4, "unitprice": self._price(),
                "on_title__c": None if fail and k == count - 1 else f"{product['name']} item {k + 1}",
                "on_costobject__c": f"CO-{self.rng.randint(1, 400):03d}" if k % 3 == 0 else None,
            })
        return rows

    def _standard_orders(self, budget: int) -> None:
        order_writer = RowWriter(self.conn, self.model.require("Order"))
        item_writer = RowWriter(self.conn, self.model.require("OrderItem"))
        self.accounts: list[dict] = []
        written = 0
        n = 0
        while written < budget:
            sizes = []
            while written < budget and len(sizes) < self.CHUNK:
                sizes.append(self._size())
                written += sizes[-1]
            accounts = self._accounts(len(sizes), len(self.accounts))
            self.accounts.extend(accounts)
            orders = []
            for account in accounts:
                orders.append({
                    "name": f"Order {n:07d}", "accountid": account["id"], "ordernumber": f"BO-{n:07d}",
                    "effectivedate": date(2024, 1, 1 + n % 28), "status": "Activated",
                    "currencyisocode": account["currencyisocode"],
                    "ponumber": f"PO-{n:07d}" if n % 2 == 0 else None,
                })
                n += 1
            order_writer.insert(orders)
            items = []
            for order, size in zip(orders, sizes):
                items.extend(self._items(order, size, self._fails()))
            item_writer.insert(items)
            self.out.headers += len(orders)
            self.out.lines += len(items)
        self._next_order = n

    def _account(self) -> dict:
        return self.accounts[self.rng.randrange(len(self.accounts))]

    def _final_orders(self, delivery_budget: int) -> None:
        """Final-invoice orders of 2025 with one item each, and their
        partial deliveries of 2024 (Order Sub Invoice, one partial invoice
        per order); the source lines counted are the deliveries."""
        order_writer = RowWriter(self.conn, self.model.require("Order"))
        item_writer = RowWriter(self.conn, self.model.require("OrderItem"))
        delivery_writer = RowWriter(self.conn, self.model.require("Partial_Delivery__c"))
        n = self._next_order
        deliveries_written = 0
        while deliveries_written < delivery_budget:
            orders, sizes = [], []
            while len(orders) < self.CHUNK and deliveries_written < delivery_budget:
                account = self._account()
                orders.append({
                    "name": f"Order {n:07d}", "accountid": account["id"], "ordernumber": f"BO-{n:07d}",
                    "effectivedate": date(2025, 6, 1 + n % 28), "status": "Activated",
                    "currencyisocode": account["currencyisocode"], "on_type__c": "Final",
                })
                sizes.append((1, self._size()))
                deliveries_written += sizes[-1][1]
                n += 1
            order_writer.insert(orders)
            per_order = [self._items(order, item_count, False) for order, (item_count, _) in zip(orders, sizes)]
            items = [item for order_items in per_order for item in order_items]
            item_writer.insert(items)  # gives the items their ids
            deliveries = []
            for order, (_, delivery_count), order_items in zip(orders, sizes, per_order):
                for d in range(delivery_count):
                    fail = self._fails()  # one delivery is one header record
                    item = order_items[d % len(order_items)]
                    deliveries.append({
                        "deliverynumber__c": f"PD-{order['ordernumber']}-{d + 1}", "order__c": order["id"],
                        "orderitem__c": item["id"], "deliverydate__c": date(2024, 5, 1 + d),
                        "on_type__c": "Partial", "on_title__c": None if fail else item["on_title__c"],
                        "on_quantity__c": Decimal(self.rng.randint(1, 8)) / 2, "on_unitprice__c": self._price(),
                        "on_isitem__c": True,
                    })
            delivery_writer.insert(deliveries)
            self.out.headers += len(deliveries)
            self.out.lines += len(deliveries)
        self._next_order = n

    def _opportunities(self, budget: int) -> None:
        opp_writer = RowWriter(self.conn, self.model.require("Opportunity"))
        line_writer = RowWriter(self.conn, self.model.require("OpportunityLineItem"))
        written = n = 0
        while written < budget:
            opps, sizes = [], []
            while written < budget and len(opps) < self.CHUNK:
                account = self._account()
                opps.append({
                    "name": f"Project {n:07d}", "opportunitynumber": f"OPP-{n:07d}", "accountid": account["id"],
                    "stagename": "Closed Won", "closedate": date(2024, 2, 1 + n % 28), "type": "Project",
                    "currencyisocode": account["currencyisocode"], "on_typefinal__c": "Final",
                    "on_servicedatefinal__c": date(2024, 7, 1 + n % 28),
                })
                sizes.append(self._size())
                written += sizes[-1]
                n += 1
            opp_writer.insert(opps)
            lines = []
            for opp, size in zip(opps, sizes):
                fail = self._fails()
                for k in range(size):
                    product = self.products[self.rng.randrange(len(self.products))]
                    lines.append({
                        "name": None if fail and k == 0 else f"Milestone {k + 1}",
                        "linenumber": f"{opp['opportunitynumber']}-{k + 1:02d}", "opportunityid": opp["id"],
                        "productid": product["id"], "quantity": Decimal(self.rng.randint(1, 20)),
                        "unitprice": self._price(),
                    })
            line_writer.insert(lines)
            self.out.headers += len(opps)
            self.out.lines += len(lines)


def main(argv: list[str]) -> None:
    from engine.project import load_project
    from engine.storage.db import open_engine

    url, lines, profile, root = argv[0], int(argv[1]), argv[2], argv[3]
    model = load_project(root).model
    engine = open_engine(url)
    written = generate(engine, model, lines, profile)
    engine.dispose()
    print(f"{written.headers} {written.lines} {written.failing}")


if __name__ == "__main__":
    main(sys.argv[1:])
