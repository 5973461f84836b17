"""A state machine of recurring billing: month after month, with crashes.

Rules over the sample subscriptions (examples/subscriptions/) on SQLite:
bill the next month ("recurring month", finalized or left as drafts), bill a
month again, crash in the middle of a month's run (the database "dies" after
k statements), delete the drafts, cancel a finalized subscription invoice.
After every step, whatever happened before:

* no service period of an item is billed by two live invoices (no overlap);
* each item's live periods tile its service from its first day, except for
  periods released by a deletion or cancellation and not yet billed again;
* after a month was billed completely, the tiles reach that month's due
  periods, and each item's billed amounts telescope: their sum is exactly the
  cumulative amount of the span they cover (no cent gained or lost, whatever
  mix of crashes, re-runs, cancellations and re-billing);
* every invoice's totals are the sums of its lines.

Profiles as the other machines (``METABILL_RELIABILITY``, default "ci").
"""

from __future__ import annotations

import shutil
from collections import Counter
import tempfile
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from billing.helpers import InjectedFault, fault_after
from billing.test_subscription_run import load_subscriptions
from databases import REPO_ROOT, load_model
from engine.billing.drafts import delete_drafts, draft_ids
from engine.billing.periods import cumulative, position
from engine.billing.run import RunRequest, run_invoices
from engine.billing.subscription_terms import item_terms
from engine.project import cancel_invoice, finalize
from engine.storage.db import open_engine
from engine.storage.reader import RecordReader

from contexts import context

from .conftest import reliability_settings

MONTHS = [date(2024, m, 1) for m in range(1, 13)]
_PREPARED: dict[str, Path] = {}
#: What the machine did, over all examples (asserted non-vacuous at the end).
steps: Counter = Counter()


def month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


class RecurringMachine(RuleBasedStateMachine):
    model = None

    def __init__(self):
        super().__init__()
        cls = type(self)
        self.tmp = Path(tempfile.mkdtemp(prefix="recurring-"))
        shutil.copyfile(_PREPARED["file"], self.tmp / "db.sqlite")
        self.engine = open_engine(f"sqlite:///{self.tmp / 'db.sqlite'}")
        self.ctx = context(cls.model)
        self.next_month = 0  # index into MONTHS of the next month to bill
        self.complete_until: date | None = None  # the last run end billed completely since the last release

    def teardown(self):
        self.engine.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _run(self, first: date, **options):
        return run_invoices(self.engine, self.ctx, RunRequest(("Subscriptions",), first, month_end(first),
                                                              month_end(first), today=first, **options))

    # -- rules ------------------------------------------------------------------------

    @precondition(lambda self: self.next_month < len(MONTHS))
    @rule(finalize_it=st.booleans())
    def recurring_month(self, finalize_it):
        first = MONTHS[self.next_month]
        report = self._run(first)
        assert report.failure_count == 0
        self.next_month += 1
        self.complete_until = month_end(first)
        steps["recurring_month"] += 1
        if finalize_it and report.invoices:
            done = finalize(self.engine, self.ctx, [i.id for i in report.invoices], today=month_end(first))
            assert not done.failures

    @precondition(lambda self: self.next_month > 0)
    @rule(data=st.data())
    def bill_a_month_again(self, data):
        index = data.draw(st.integers(0, self.next_month - 1))
        report = self._run(MONTHS[index])
        if self.complete_until is not None and month_end(MONTHS[index]) <= self.complete_until:
            assert report.line_count == 0  # nothing twice

    @precondition(lambda self: self.next_month < len(MONTHS))
    @rule(k=st.integers(1, 40))
    def crash_in_the_middle_of_a_month(self, k):
        first = MONTHS[self.next_month]
        try:
            with fault_after(self.engine, k):
                self._run(first, batch_size=1)
        except InjectedFault:
            steps["crash"] += 1
        except sa.exc.StatementError as error:
            assert isinstance(error.orig, InjectedFault)
        self.complete_until = None  # the month may be partly billed; the next recurring month completes it

    @rule()
    def delete_the_drafts(self):
        with self.engine.begin() as conn:
            ids = draft_ids(conn, self.ctx, names=self._draft_names(conn))
            delete_drafts(conn, self.ctx, ids)
        self.complete_until = None

    @rule(data=st.data())
    def cancel_an_invoice(self, data):
        invoices = self.ctx.table("Invoice")
        with self.engine.connect() as conn:
            names = list(conn.execute(sa.select(invoices.c.name).where(
                invoices.c.status.in_(["Open", "Paid"]), invoices.c.subscription.is_not(None),
                invoices.c.type != "Cancelation").order_by(invoices.c.id)).scalars())
        if not names:
            return
        name = data.draw(st.sampled_from(names))
        cancel_invoice(self.engine, self.ctx, name, reason="machine", when=date(2024, 12, 31))
        steps["cancel"] += 1
        self.complete_until = None

    def _draft_names(self, conn) -> list[str]:
        invoices = self.ctx.table("Invoice")
        return list(conn.execute(sa.select(invoices.c.name).where(invoices.c.status == "Draft")).scalars())

    # -- invariants -------------------------------------------------------------------

    def _live_lines(self) -> dict[int, list[tuple[date, date, Decimal]]]:
        inv, line = self.ctx.table("Invoice"), self.ctx.table("InvoiceLineItem")
        out: dict[int, list[tuple[date, date, Decimal]]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(line.c.subscriptionitem, line.c.serviceperiodstart, line.c.serviceperiodend,
                                          line.c.unitprice)
                                .select_from(line.join(inv, inv.c.id == line.c.invoice))
                                .where(line.c.subscriptionitem.is_not(None), inv.c.status != "Canceled",
                                       inv.c.type != "Cancelation")
                                .order_by(line.c.subscriptionitem, line.c.serviceperiodstart)).all()
        for item, start, end, price in rows:
            out.setdefault(item, []).append((start, end, price))
        return out

    @invariant()
    def no_period_is_billed_twice(self):
        for item, lines in self._live_lines().items():
            for (s1, e1, _), (s2, e2, _) in zip(lines, lines[1:]):
                assert e1 < s2, f"item {item}: {s1}..{e1} overlaps {s2}..{e2}"

    @invariant()
    def complete_months_tile_and_telescope(self):
        if self.complete_until is None:
            return
        lines = self._live_lines()
        with self.engine.connect() as conn:
            subs = {r["id"]: r for r in RecordReader.of(self.ctx, self.ctx.obj("Subscription"), (), "sqlite").read(conn)}
            items = list(RecordReader.of(self.ctx, self.ctx.obj("SubscriptionItem"), (), "sqlite").read(conn))
        for item in items:
            if item["billingtype"] != "Recurring":
                continue
            terms, _ = item_terms(subs[item["subscription"]], item)
            billed = lines.get(item["id"], [])
            assert billed, f"item {item['itemkey']} billed nothing by {self.complete_until}"
            assert billed[0][0] == terms.start
            for (_, e1, _), (s2, _, _) in zip(billed, billed[1:]):
                assert s2 == e1 + timedelta(days=1), f"item {item['itemkey']}: a gap after {e1}"
            if terms.change_date is None:
                span = cumulative(terms.unit_price, position(terms.anchor, billed[-1][1] + timedelta(days=1)),
                                  terms.price_months) \
                    - cumulative(terms.unit_price, position(terms.anchor, terms.start), terms.price_months)
                assert sum(p for _, _, p in billed) == span
                steps["checked"] += 1

    @invariant()
    def invoices_add_up(self):
        inv, line = self.ctx.table("Invoice"), self.ctx.table("InvoiceLineItem")
        with self.engine.connect() as conn:
            sums = {r[0]: (r[1], r[2]) for r in conn.execute(
                sa.select(line.c.invoice, sa.func.sum(line.c.postotalnet), sa.func.sum(line.c.postotalgross))
                .group_by(line.c.invoice))}
            for invoice_id, net, gross in conn.execute(sa.select(inv.c.id, inv.c.totalnet, inv.c.grandtotal)):
                assert sums.get(invoice_id) == (net, gross)


def test_recurring_months(prepared_files):
    model = load_model(REPO_ROOT)
    RecurringMachine.model = model
    _PREPARED["file"] = prepared_files.file_for(model, load_subscriptions, "subscriptions")
    steps.clear()
    run_state_machine_as_test(RecurringMachine, settings=settings(
        reliability_settings(), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]))
    # the machine really billed months, crashed, cancelled and checked the tiling (not a vacuous run)
    assert steps["recurring_month"] > 0 and steps["checked"] > 0, steps
