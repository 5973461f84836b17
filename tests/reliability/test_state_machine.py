"""Crash safety, proven by a stateful property test (issue 8 part 4).

A hypothesis ``RuleBasedStateMachine`` drives one database through random
histories: adding, changing and deleting source records (``Usage__c``),
invoice runs with random batch sizes, finalization, payments and
cancellations, each of them also crashed at a random SQL statement (then
redone, as an operator would), and two invoice runs, finalizations or
payments started at the same moment from two threads with engines of their
own. After every step :func:`support.check_invariants` holds (billed at most
once, debits equal credits, totals equal lines, finalized records unchanged,
invoice numbers gapless, no balance lost), and the database equals what an
uninterrupted history gives: the :class:`Oracle` knows which source records
each live invoice must bill, at which quantity and price, how many numbers
were drawn, and how much money was received.

Runs on SQLite and PostgreSQL (``db_url``). The number of examples comes
from the hypothesis profile named by ``METABILL_HYPOTHESIS_PROFILE`` (``ci``
by default, ``long`` for at least 500 examples per database; see
docs/reliability.md and conftest.py).
"""

from __future__ import annotations

import functools
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from engine.storage.db import open_engine

from billing.helpers import InjectedFault, fault_after

from .conftest import reliability_settings
from .support import ACCOUNTS, ZERO, World, check_invariants, money

quantities = st.integers(1, 40).map(lambda n: Decimal(n) / 4)                 # 0.25 .. 10.00
prices = st.integers(-5_000, 20_000).map(lambda n: (Decimal(n) / 100).quantize(Decimal("0.01")))
batch_sizes = st.integers(1, 5)


@dataclass
class Usage:
    account: str
    quantity: Decimal
    price: Decimal
    invoice: int | None = None  # the live invoice billing it


@dataclass
class Oracle:
    """What an uninterrupted history has produced so far."""

    usages: dict[int, Usage] = field(default_factory=dict)
    # live invoice id -> {usage id: (quantity, unit price) billed}
    invoices: dict[int, dict[int, tuple[Decimal, Decimal]]] = field(default_factory=dict)
    finalized: set[int] = field(default_factory=set)
    canceled: set[int] = field(default_factory=set)
    cancellations: int = 0
    received: Decimal = ZERO
    runs: int = 0

    def unbilled_by_account(self) -> dict[str, set[int]]:
        groups: dict[str, set[int]] = defaultdict(set)
        for usage_id, usage in self.usages.items():
            if usage.invoice is None:
                groups[usage.account].add(usage_id)
        return groups


#: Steps taken per rule in this process (printed by the test, for the record).
STEPS: Counter = Counter()


def counted(function):
    """Count the rule's steps in STEPS."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        STEPS[function.__name__] += 1
        return function(*args, **kwargs)

    return wrapper


def make_machine(world: World):
    class BillingMachine(RuleBasedStateMachine):
        """One billing history on ``world``; see the module docstring."""

        @initialize()
        def fresh_database(self) -> None:
            STEPS["(examples)"] += 1
            world.reset()
            self.oracle = Oracle()
            self.frozen = check_invariants(world)
            self.known_invoices: set[int] = set()

        # -- source data --------------------------------------------------------------

        @rule(account=st.sampled_from(ACCOUNTS), quantity=quantities, price=prices)
        @counted
        def add_usage(self, account, quantity, price) -> None:
            usage_id = world.add_usage(account, quantity, price, f"usage {len(self.oracle.usages) + 1}")
            self.oracle.usages[usage_id] = Usage(account, quantity, price)

        @precondition(lambda self: self.oracle.usages)
        @rule(data=st.data(), price=prices)
        @counted
        def change_price(self, data, price) -> None:
            """Source data changes; a billed record's invoice must not follow."""
            usage_id = data.draw(st.sampled_from(sorted(self.oracle.usages)))
            world.set_price(usage_id, price)
            self.oracle.usages[usage_id].price = price

        @precondition(lambda self: any(u.invoice is None for u in self.oracle.usages.values()))
        @rule(data=st.data())
        @counted
        def delete_unbilled(self, data) -> None:
            usage_id = data.draw(st.sampled_from(sorted(i for i, u in self.oracle.usages.items() if u.invoice is None)))
            world.delete_usage(usage_id)
            del self.oracle.usages[usage_id]

        # -- invoice runs ---------------------------------------------------------------

        @rule(batch_size=batch_sizes)
        @counted
        def run(self, batch_size) -> None:
            world.run(batch_size)
            self._billed_round()

        @rule(batch_size=batch_sizes, data=st.data())
        @counted
        def crashed_run_then_rerun(self, batch_size, data) -> None:
            k = data.draw(st.integers(0, 60), label="statements before the crash")
            with fault_after(world.engine, k):
                try:
                    world.run(batch_size)
                except InjectedFault:
                    pass
            self.frozen = check_invariants(world, self.frozen)  # the crashed state is consistent too
            world.run(batch_size)
            self._billed_round()

        @rule(first=batch_sizes, second=batch_sizes)
        @counted
        def concurrent_runs(self, first, second) -> None:
            self._together(lambda engine: world.run(first, engine), lambda engine: world.run(second, engine))
            self._billed_round()

        def _billed_round(self) -> None:
            """Check the invoices a (possibly crashed and redone, or doubled)
            run created against one uninterrupted run: one invoice per
            account with unbilled records, billing exactly those records at
            their current quantity and price."""
            expected = self.oracle.unbilled_by_account()
            accounts = {a["id"]: a["accountnumber"] for a in world.rows("Account")}
            new = [i for i in world.rows("Invoice") if i["id"] not in self.known_invoices]
            lines = defaultdict(list)
            for line in world.rows("InvoiceLineItem"):
                lines[line["invoice"]].append(line)
            got: dict[str, set[int]] = {}
            for invoice in new:
                assert invoice["status"] == "Draft" and invoice["type"] == "Standard"
                account = accounts[invoice["account"]]
                assert account not in got, f"two invoices for {account} in one run"
                billed = {}
                for line in lines[invoice["id"]]:
                    usage_id = int(line["sourcerecordid"])
                    usage = self.oracle.usages[usage_id]
                    assert (line["quantity"], line["unitprice"]) == (usage.quantity, usage.price)
                    assert line["postotalnet"] == money(usage.quantity * usage.price)
                    billed[usage_id] = (usage.quantity, usage.price)
                got[account] = set(billed)
                self.oracle.invoices[invoice["id"]] = billed
                for usage_id in billed:
                    self.oracle.usages[usage_id].invoice = invoice["id"]
                self.known_invoices.add(invoice["id"])
            assert got == {a: ids for a, ids in expected.items() if ids}
            self.oracle.runs += 1
            runs = world.rows("InvoiceRun")
            assert len(runs) == 1, "every run of the same period and filter joins one InvoiceRun"

        # -- finalization ------------------------------------------------------------------

        @precondition(lambda self: self._drafts())
        @rule()
        @counted
        def finalize(self) -> None:
            drafts = self._drafts()
            report = world.finalize(drafts)
            self._finalized(drafts, [report])

        @precondition(lambda self: self._drafts())
        @rule(data=st.data())
        @counted
        def crashed_finalize_then_redo(self, data) -> None:
            drafts = self._drafts()
            k = data.draw(st.integers(0, 40), label="statements before the crash")
            with fault_after(world.engine, k):
                try:
                    world.finalize(drafts)
                except InjectedFault:
                    pass
            self.frozen = check_invariants(world, self.frozen)
            report = world.finalize(world.drafts())
            self._finalized(drafts, [report], redo=True)

        @precondition(lambda self: self._drafts())
        @rule()
        @counted
        def concurrent_finalizations(self) -> None:
            drafts = self._drafts()
            reports = self._together(lambda engine: world.finalize(drafts, engine),
                                     lambda engine: world.finalize(drafts, engine))
            self._finalized(drafts, reports, concurrent=True)

        def _drafts(self) -> list[int]:
            return sorted(i for i in self.oracle.invoices if i not in self.oracle.finalized)

        def _finalized(self, drafts: list[int], reports, *, redo: bool = False, concurrent: bool = False) -> None:
            done = [f.invoice_id for report in reports for f in report.finalized]
            assert len(done) == len(set(done)), "an invoice finalized twice"
            if not redo:
                assert sorted(done) == drafts, [r.failures for r in reports]
            if concurrent:
                # The loser of each race reports "not a draft", nothing else.
                for report in reports:
                    for _, message in report.failures:
                        assert "not a draft" in message, message
            assert world.drafts() == []
            self.oracle.finalized.update(drafts)

        # -- payments ----------------------------------------------------------------------

        def _payable(self) -> list[dict]:
            return [i for i in world.rows("Invoice") if i["status"] == "Open" and i["balance"] > 0]

        @precondition(lambda self: self.oracle.finalized)
        @rule(data=st.data(), crash=st.booleans())
        @counted
        def pay(self, data, crash) -> None:
            payable = self._payable()
            if not payable:
                return
            invoice = data.draw(st.sampled_from(payable))
            cents = data.draw(st.integers(1, int(invoice["balance"] * 100)))
            amount = Decimal(cents) / 100
            if crash:
                k = data.draw(st.integers(0, 12), label="statements before the crash")
                with fault_after(world.engine, k):
                    try:
                        world.pay(invoice["name"], amount)
                        self.oracle.received += amount  # it got through before the fault
                        return
                    except InjectedFault:
                        pass
                self.frozen = check_invariants(world, self.frozen)
            world.pay(invoice["name"], amount)
            self.oracle.received += amount

        @precondition(lambda self: self.oracle.finalized)
        @rule(data=st.data())
        @counted
        def concurrent_payments(self, data) -> None:
            payable = self._payable()
            if not payable:
                return
            invoice = data.draw(st.sampled_from(payable))
            cents = int(invoice["balance"] * 100)
            if cents < 2:
                return
            first = data.draw(st.integers(1, cents - 1))
            second = data.draw(st.integers(1, cents - first))
            self._together(lambda engine: world.pay(invoice["name"], Decimal(first) / 100, engine),
                           lambda engine: world.pay(invoice["name"], Decimal(second) / 100, engine))
            self.oracle.received += Decimal(first + second) / 100

        # -- cancellation ------------------------------------------------------------------

        @precondition(lambda self: self.oracle.finalized - self.oracle.canceled)
        @rule(data=st.data())
        @counted
        def cancel(self, data) -> None:
            invoice_id = data.draw(st.sampled_from(sorted(self.oracle.finalized - self.oracle.canceled)))
            name = next(i["name"] for i in world.rows("Invoice") if i["id"] == invoice_id)
            report = world.cancel(name)
            assert len(report.finalized) == 1, report.failures
            self.known_invoices.add(report.finalized[0].invoice_id)
            self.oracle.canceled.add(invoice_id)
            self.oracle.cancellations += 1
            for usage_id in self.oracle.invoices.pop(invoice_id):
                if usage_id in self.oracle.usages:
                    self.oracle.usages[usage_id].invoice = None  # released: the next run bills it again

        # -- concurrency -------------------------------------------------------------------

        def _together(self, *works):
            """Start the works at the same moment, each in a thread with an
            engine of its own; their results, or the first error raised."""
            barrier = threading.Barrier(len(works))
            results: list = [None] * len(works)
            errors: list[BaseException] = []
            engines = [open_engine(world.url) for _ in works]

            def go(index, work) -> None:
                try:
                    barrier.wait(timeout=30)
                    results[index] = work(engines[index])
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

            threads = [threading.Thread(target=go, args=pair) for pair in enumerate(works)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            for engine in engines:
                engine.dispose()
            assert not any(thread.is_alive() for thread in threads), "a concurrent operation hangs"
            if errors:
                raise errors[0]
            return results

        # -- after every step ----------------------------------------------------------------

        @invariant()
        def invariants_hold(self) -> None:
            self.frozen = check_invariants(world, self.frozen)

        @invariant()
        def equals_uninterrupted_history(self) -> None:
            oracle = self.oracle
            live = {}
            for line in world.rows("InvoiceLineItem"):
                live.setdefault(line["invoice"], {})[int(line["sourcerecordid"])] = (line["quantity"],
                                                                                      line["unitprice"])
            invoices = {i["id"]: i for i in world.rows("Invoice")}
            billed = {i: live[i] for i, inv in invoices.items()
                      if inv["type"] != "Cancelation" and inv["status"] != "Canceled"}
            assert billed == oracle.invoices
            assert {i for i, inv in invoices.items() if inv["status"] == "Canceled"} == oracle.canceled
            assert sum(1 for inv in invoices.values() if inv["type"] == "Cancelation") == oracle.cancellations
            assert {i for i, inv in invoices.items() if inv["type"] != "Cancelation" and inv["status"] != "Draft"} \
                == oracle.finalized
            usages = {u["id"]: u for u in world.rows("Usage__c")}
            assert set(usages) == set(oracle.usages)
            for usage_id, usage in oracle.usages.items():
                assert usages[usage_id]["on_invoice__c"] == usage.invoice
            payments = [b for b in world.rows("Balance") if b["type"] == "Payment"]
            assert -sum((b["amount"] for b in payments), ZERO) == oracle.received, "money received was lost"

    return BillingMachine


def test_billing_histories_keep_every_invariant(db_url, reliability_model, tmp_path):
    world = World(db_url, reliability_model, tmp_path)
    STEPS.clear()
    try:
        run_state_machine_as_test(make_machine(world), settings=reliability_settings())
    finally:
        world.close()
        print(f"\n[{world.backend}] steps per rule: {dict(sorted(STEPS.items()))}")
