"""The whole billing cycle, proven by a stateful property test (issue 13
item 4).

A hypothesis ``RuleBasedStateMachine`` drives one database through random
histories of what users do, each step through the service its command calls
(``engine.project``, ``engine.cash.service``, ``engine.exports.service``):

* source records: standard usages (some with a payment plan, the SEPA
  customer's with direct debit), progress and deposit usages of a project,
  and the project's final usage;
* invoice runs and finalization (the whole finalization chain), so payments
  land before and after a final invoice's draft is built;
* payments (partial and full), payments on account and prepayments,
  write-offs, cancellations (of standard, sub and final invoices; a sub
  invoice that a finalized final invoice deducts must be refused, and
  nothing may change then);
* payment plan changes (refused, changing nothing, once a direct debit
  collected from the plan), refunds of free credit;
* SEPA direct debits and balance payouts, DATEV exports, each file kept and
  reconciled by the audit from then on;

and each of these crashed at a random SQL statement (``fault_after``), the
crashed state checked, and then done again as an operator would (after a
crashed export: ``export recover`` first, so no committed export loses its
file).

After every step:

* ``engine.audit.audit`` — the code of ``metabill audit`` — over the
  database and every DATEV and SEPA file written finds nothing;
* the money model agrees: per account, what the customer owes (Σ of its
  Balance records) equals Σ of the gross of the usages billed on live
  finalized invoices (a project's progress and deposit usages stop counting
  once its final invoice is finalized: the final bills the whole project;
  the unpaid rest of a sub invoice that a since cancelled final invoice
  cleared stays cleared), less the money received, less the write-offs of
  live invoices, plus what was refunded or paid out;
* no usage is billed twice, and a run bills every unbilled usage except a
  final usage whose project still has sub invoices in the making.

Runs on SQLite and PostgreSQL (``db_url``). The number of examples comes from
the profile named by ``METABILL_HYPOTHESIS_PROFILE`` (see conftest.py and
docs/reliability.md).
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from engine.domain.errors import EngineError

from billing.helpers import InjectedFault, fault_after

from .conftest import lifecycle_settings
from .lifecycle_world import ACCOUNTS, SEPA_ACCOUNT, START, ZERO, LifecycleWorld, gross, money

#: Payment plans of the org's InstallmentPlan records (custom_settings).
PLANS = ("30 days x6", "Monthly x12")
#: The automatic write-offs and their limits (GlobalSettings of the org).
AUTO_WRITE_OFF = {"Missing amount below threshold": Decimal("5.00"), "Invoice below threshold": Decimal("0.50")}
#: Accounts with projects: the org's interim collective accounts are German
#: (DE_19); a progress invoice of the reverse-charge or non-EU customer is
#: refused at finalization (no Interim Revenue account for its tax code).
SUB_ACCOUNTS = ("10001", "10004")
#: Invoices whose rest only their final invoice clears: a write-off is refused.
NO_WRITE_OFF = ("Progress", "Deposit")
#: Statuses of a finalized invoice that still bills what it lists.
LIVE = ("Open", "Paid", "Closed", "Settled")

prices = st.integers(1_000, 500_000).map(lambda n: Decimal(n) / 100)          # 10.00 .. 5,000.00
quantities = st.integers(1, 12).map(Decimal)
days = st.integers(0, 12)
crashes = st.one_of(st.none(), st.integers(0, 40))


@dataclass
class Usage:
    account: str
    kind: str                      # Standard, Progress, Deposit, Final
    project: str | None
    net: Decimal                   # what the invoice line bills, net
    gross: Decimal


@dataclass
class Money:
    """What an uninterrupted history has moved so far, per account."""

    received: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    #: per invoice id: a write-off forgives what is open on that invoice, so
    #: it stops counting when the invoice is cancelled (the cancellation
    #: clears all that is left on it)
    written_off: dict[int, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    paid_out: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))


STEPS: Counter = Counter()


def counted(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        STEPS[function.__name__] += 1
        return function(*args, **kwargs)

    return wrapper


def pick(data, invoices: list[dict]) -> dict:
    """One of the invoices, drawn by its number (so a failing history reads well)."""
    by_name = {i["name"]: i for i in invoices}
    return by_name[data.draw(st.sampled_from(sorted(by_name)), label="invoice")]


def crashed(world: LifecycleWorld, k: int | None, work) -> bool:
    """Run ``work`` with the database dying after ``k`` statements (None: no
    crash); True when it crashed."""
    if k is None:
        work()
        return False
    with fault_after(world.engine, k):
        try:
            work()
            return False
        except InjectedFault:
            STEPS["(crashes)"] += 1
            return True


def make_machine(world: LifecycleWorld):
    class LifecycleMachine(RuleBasedStateMachine):
        """One billing history on ``world``; see the module docstring."""

        @initialize(standard=st.lists(st.tuples(st.sampled_from(sorted(ACCOUNTS)), prices), max_size=3),
                    project=st.one_of(st.none(), st.tuples(st.sampled_from(SUB_ACCOUNTS), prices)))
        def fresh_database(self, standard, project) -> None:
            STEPS["(examples)"] += 1
            if STEPS["(examples)"] % 50 == 0:  # progress of a long run (with -s)
                print(f"[{world.backend}] {STEPS['(examples)']} examples, {sum(STEPS.values())} steps", flush=True)
            world.reset()
            self.today = START
            self.usages: dict[int, Usage] = {}
            self.projects: dict[str, tuple[str, str]] = {}   # key -> (account, Progress|Deposit)
            self.finals: set[str] = set()                    # projects with a final usage
            self.money = Money()
            self.auto_write_offs: set[int] = set()
            self.drafts = False       # drafts are waiting (cheap guards for the rules)
            self.finalized = False    # something was finalized
            self.first_records(standard, project)

        def advance(self, by: int) -> date:
            self.today += timedelta(days=by)
            return self.today

        # -- source data --------------------------------------------------------------

        @rule(account=st.sampled_from(sorted(ACCOUNTS)), quantity=quantities, price=prices,
              plan=st.one_of(st.none(), st.sampled_from(PLANS)))
        @counted
        def add_standard(self, account, quantity, price, plan) -> None:
            record = self._record(account, "usage", quantity, price)
            if plan is not None:
                record["on_installmenttype__c"] = plan
            self._add(record, Usage(account, "Standard", None, money(quantity * price),
                                    gross(money(quantity * price), ACCOUNTS[account])))

        @rule(account=st.sampled_from(SUB_ACCOUNTS), kind=st.sampled_from(("Progress", "Deposit")),
              price=prices, rate=st.sampled_from((10, 25, 30, 50)), data=st.data())
        @counted
        def add_sub(self, account, kind, price, rate, data) -> None:
            """A progress or deposit usage: of a new project, or of an open one
            (no final usage yet) of the same account and kind."""
            open_ = sorted(k for k, v in self.projects.items() if v == (account, kind) and k not in self.finals)
            key = data.draw(st.sampled_from(open_ + [None]), label="project")
            self._add_sub(account, kind, key or self._project(account, kind), price, rate)

        def _project(self, account: str, kind: str) -> str:
            key = f"P{len(self.projects) + 1}"
            self.projects[key] = (account, kind)
            return key

        def _add_sub(self, account: str, kind: str, key: str, price: Decimal, rate: int) -> None:
            record = self._record(account, f"{kind} {key}", Decimal(1), price)
            record.update(on_type__c=kind, on_subinvoiceassignmentkey__c=key,
                          on_invoicecriterion__c=f"{key}-{len(self.usages)}")
            net = money(price)
            if kind == "Deposit":
                record["on_depositrate__c"] = Decimal(rate)
                net = money(net * rate / 100)
            self._add(record, Usage(account, kind, key, net, gross(net, ACCOUNTS[account])))

        @precondition(lambda self: set(self.projects) - self.finals)
        @rule(data=st.data(), extra=st.integers(0, 200_000).map(lambda n: Decimal(n) / 100))
        @counted
        def add_final(self, data, extra) -> None:
            """The project's final usage: the whole project (at least what
            its sub usages bill, so a final invoice is never negative)."""
            key = data.draw(st.sampled_from(sorted(set(self.projects) - self.finals)), label="project")
            account, _kind = self.projects[key]
            subs = [u for u in self.usages.values() if u.project == key]
            base = sum((u.net for u in subs), ZERO)
            if any(u.kind == "Deposit" for u in subs):
                base = sum((u.net * 100 for u in subs), ZERO)  # a deposit is a share: bill at least 100 %
            price = money(base + extra)
            record = self._record(account, f"Final {key}", Decimal(1), price)
            record.update(on_type__c="Final", on_subinvoiceassignmentkey__c=key, on_invoicecriterion__c=f"{key}-F")
            self.finals.add(key)
            self._add(record, Usage(account, "Final", key, price, gross(price, ACCOUNTS[account])))

        def _record(self, account: str, title: str, quantity: Decimal, price: Decimal) -> dict:
            record = {"on_account__c": account, "on_title__c": title, "on_quantity__c": quantity,
                      "on_unitprice__c": price, "on_servicedate__c": self.today}
            if account == SEPA_ACCOUNT:
                record.update(on_paymentmethod__c="Direct Debit", on_directdebitsequencetype__c="RCUR")
            return record

        def _add(self, record: dict, usage: Usage) -> None:
            self.usages[world.add_usage(record)] = usage

        # -- invoice runs and finalization ----------------------------------------------------

        def first_records(self, standard, project) -> None:
            """A few records to start with, so short histories reach the money."""
            for account, price in standard:
                self.add_standard(account, Decimal(1), price, None)
            if project is not None:
                account, price = project
                key = self._project(account, "Progress")
                self._add_sub(account, "Progress", key, price, 0)

        @precondition(lambda self: self.usages)
        @rule(by=days, crash=crashes, then_finalize=st.booleans())
        @counted
        def run(self, by, crash, then_finalize) -> None:
            """An invoice run (crashed and done again), often finalized at
            once, as ``invoice-run --finalize`` does."""
            today = self.advance(by)
            if crashed(world, crash, lambda: world.run(today)):
                self.check_all()
            report = world.run(today)
            failures = [f.message for fr in report.filters for f in fr.failures]
            self._check_billed(failures)
            self.drafts = bool(world.drafts())
            if then_finalize and self.drafts:
                self._finalize(0, None)

        @precondition(lambda self: self.drafts)
        @rule(by=days, crash=crashes)
        @counted
        def finalize(self, by, crash) -> None:
            self._finalize(by, crash)

        def _finalize(self, by: int, crash: int | None) -> None:
            STEPS["(finalizations)"] += 1
            drafts = world.drafts()
            if not drafts:
                return
            today = self.advance(by)
            if crashed(world, crash, lambda: world.finalize(drafts, today)):
                self.check_all()
            report = world.finalize(world.drafts(), today)
            assert not report.failures, report.failures
            assert world.drafts() == []
            self.drafts = False
            self.finalized = True

        # -- money ----------------------------------------------------------------------------

        def _open(self, *where) -> list[dict]:
            return [i for i in world.rows("Invoice", *where) if i["status"] == "Open" and i["balance"] > 0]

        @precondition(lambda self: self.finalized)
        @rule(data=st.data(), by=days, full=st.booleans(), crash=crashes)
        @counted
        def pay(self, data, by, full, crash) -> None:
            payable = self._open()
            if not payable:
                return
            invoice = pick(data, payable)
            balance = invoice["balance"]
            if full or balance <= Decimal("5.01"):
                amount = balance
            else:  # partial, leaving more than the automatic write-off would take
                amount = Decimal(data.draw(st.integers(1, int((balance - Decimal("5.01")) * 100)))) / 100
            today = self.advance(by)
            account = self._account_of(invoice)
            if crashed(world, crash, lambda: world.pay(invoice["name"], amount, today)):
                self.check_all()
            else:
                self.money.received[account] += amount
                return
            world.pay(invoice["name"], amount, today)
            self.money.received[account] += amount

        @rule(account=st.sampled_from(sorted(ACCOUNTS)), amount=prices, by=days,
              kind=st.sampled_from(("Payment", "Prepayment")), crash=crashes)
        @counted
        def pay_on_account(self, account, amount, by, kind, crash) -> None:
            today = self.advance(by)
            if not crashed(world, crash, lambda: world.pay_on_account(account, amount, today, kind)):
                self.money.received[account] += amount
                return
            self.check_all()
            world.pay_on_account(account, amount, today, kind)
            self.money.received[account] += amount

        @precondition(lambda self: self.finalized)
        @rule(account=st.sampled_from(sorted(ACCOUNTS)), data=st.data(), by=days, crash=crashes)
        @counted
        def refund(self, account, data, by, crash) -> None:
            """Pay back (part of) the account's free credit."""
            credit = -self._free(account)
            if credit <= 0:
                return
            amount = Decimal(data.draw(st.integers(1, int(credit * 100)), label="cents")) / 100
            today = self.advance(by)
            if crashed(world, crash, lambda: world.refund(account, amount, today)):
                self.check_all()
                world.refund(account, amount, today)
            self.money.paid_out[account] += amount

        @precondition(lambda self: self.finalized)
        @rule(data=st.data(), by=days, plan=st.one_of(st.none(), st.sampled_from(PLANS)), crash=crashes)
        @counted
        def change_plan(self, data, by, plan, crash) -> None:
            """``payment-plan change`` on an Open standard invoice (money does
            not move; the installments and what SEPA collects do)."""
            candidates = [i for i in self._open() if i["type"] == "Standard"]
            if not candidates:
                return
            invoice = pick(data, candidates)
            today = self.advance(by)
            if invoice["timesexported"]:  # a direct debit collected from its plan: refused (machine finding)
                before = self._snapshot()
                with pytest.raises(EngineError, match="exported to SEPA"):
                    world.change_plan(invoice["name"], plan, today)
                assert self._snapshot() == before, "a refused plan change changed something"
                STEPS["(plan change refused)"] += 1
                return
            if crashed(world, crash, lambda: world.change_plan(invoice["name"], plan, today)):
                self.check_all()
                world.change_plan(invoice["name"], plan, today)

        @precondition(lambda self: self.finalized)
        @rule(data=st.data(), by=days, whole=st.booleans(), crash=crashes)
        @counted
        def write_off(self, data, by, whole, crash) -> None:
            candidates = self._open()
            if not candidates:
                return
            invoice = pick(data, candidates)
            amount = None if whole else Decimal(data.draw(st.integers(1, int(invoice["balance"] * 100)))) / 100
            today = self.advance(by)
            if invoice["type"] in NO_WRITE_OFF:
                before = self._snapshot()
                with pytest.raises(EngineError, match="cleared by its final invoice"):
                    world.write_off(invoice["name"], amount, today)
                assert self._snapshot() == before, "a refused write-off changed something"
                STEPS["(write-off refused)"] += 1
                return
            done = []
            if crashed(world, crash, lambda: done.append(world.write_off(invoice["name"], amount, today))):
                self.check_all()
                done.append(world.write_off(invoice["name"], amount, today))
            written_amount = done[0].amount
            assert written_amount == (invoice["balance"] if amount is None else amount)
            self.money.written_off[invoice["id"]] += written_amount

        @precondition(lambda self: self.finalized)
        @rule(data=st.data(), by=days, crash=crashes)
        @counted
        def cancel(self, data, by, crash) -> None:
            live = [i for i in world.rows("Invoice") if i["status"] in LIVE and i["type"] != "Cancelation"]
            if not live:
                return
            invoice = pick(data, live)
            today = self.advance(by)
            deducted = self._deducted_by_final(invoice)
            before = self._snapshot()
            try:
                if crashed(world, crash, lambda: world.cancel(invoice["name"], today)):
                    self.check_all()
                    world.cancel(invoice["name"], today)
            except EngineError as error:
                STEPS["(cancel refused)"] += 1
                assert deducted, f"{invoice['name']} ({invoice['type']}) refused: {error}"
                assert self._snapshot() == before, "a refused cancellation changed something"
                return
            assert not deducted, f"{invoice['name']} is deducted by a finalized final invoice, yet was cancelled"

        def _deducted_by_final(self, invoice: dict) -> bool:
            final = invoice.get("finalinvoice")
            if invoice["type"] not in ("Progress", "Deposit") or final is None:
                return False
            return any(i["id"] == final and i["status"] in LIVE for i in world.rows("Invoice"))

        def _snapshot(self) -> tuple:
            return tuple(len(world.rows(name)) for name in ("Invoice", "Balance", "BookingDetail", "Installment"))

        # -- exports ----------------------------------------------------------------------------

        @precondition(lambda self: self.finalized)
        @rule(by=days, crash=crashes)
        @counted
        def sepa_debit(self, by, crash) -> None:
            today = self.advance(by)
            self._export(lambda out: world.sepa_debit(out, today), "sepa-debit", ".xml", crash)

        @precondition(lambda self: self.finalized)
        @rule(by=days, crash=crashes)
        @counted
        def sepa_balances(self, by, crash) -> None:
            today = self.advance(by)
            free = self._free(SEPA_ACCOUNT)
            before_the_crash = ZERO

            def committed() -> None:
                # A crashed export that committed has paid (export recover published its
                # file): the model learns it before the checks that follow the recovery.
                # ``free`` is a credit (negative); each payout's balance is positive and
                # brings the sum of free balances up towards zero by what was paid.
                nonlocal before_the_crash
                before_the_crash = self._free(SEPA_ACCOUNT) - free
                self.money.paid_out[SEPA_ACCOUNT] += before_the_crash

            report = self._export(lambda out: world.sepa_balances(out, today), "sepa-balances", ".xml", crash,
                                  committed)
            paid = sum((t.amount for t in report.transactions), ZERO)
            self.money.paid_out[SEPA_ACCOUNT] += paid
            assert before_the_crash + paid == -free, \
                f"paid out {before_the_crash} + {paid} of a free credit of {-free}"

        @precondition(lambda self: self.finalized)
        @rule(by=days, crash=crashes)
        @counted
        def datev(self, by, crash) -> None:
            today = self.advance(by)
            self._export(lambda out: world.datev(out, today), "datev", ".csv", crash)

        def _export(self, work, stem: str, suffix: str, crash: int | None, committed=None):
            """Export to a new file (the audit reconciles it from now on); a
            crashed export is followed by ``export recover``, then
            ``committed()`` (what the crashed export did, if it committed, told
            to the model), the checks, and the export done again. Returns the
            report of the export that completed (the one done again after a
            crash: it finds nothing left to do when the crashed one had
            committed)."""
            out = world.next_file(stem, suffix)
            result = []
            if crashed(world, crash, lambda: result.append(work(out))):
                for published in world.recover_files():
                    self._keep(published.path)
                if out.exists():  # renamed before the crash: recover finds it intact and records it
                    self._keep(out)
                if committed is not None:
                    committed()
                self.check_all()
                out = world.next_file(stem, suffix)
                result.append(work(out))
            report = result[0]
            path = getattr(report, "file", None) if suffix == ".xml" else (report.path if report.written else None)
            if path is not None:
                self._keep(path)
            return report

        def _keep(self, path) -> None:
            files = world.files.sepa if str(path).endswith(".xml") else world.files.datev
            if path not in files:
                files.append(path)

        # -- reading ----------------------------------------------------------------------------

        def _account_of(self, invoice: dict) -> str:
            return next(a["accountnumber"] for a in world.rows("Account") if a["id"] == invoice["account"])

        def _free(self, account: str) -> Decimal:
            accounts = {a["accountnumber"]: a["id"] for a in world.rows("Account")}
            return sum((b["amount"] for b in world.rows("Balance") if b["account"] == accounts[account]
                        and b["invoice"] is None), ZERO)

        def _check_billed(self, failures: list[str]) -> None:
            """After a run: every usage is billed, except final usages whose
            project has sub usages not yet on a finalized invoice; the run's
            record failures are exactly those waiting finals."""
            invoices = {i["id"]: i for i in world.rows("Invoice")}
            billed = {u["id"]: u["on_invoice__c"] for u in world.rows("Usage__c")}
            waiting = set()
            for usage_id, usage in self.usages.items():
                if billed[usage_id] is not None:
                    continue
                assert usage.kind == "Final", f"usage {usage_id} ({usage.kind}) not billed: {failures}"
                waiting.add(usage_id)
            for usage_id in waiting:
                key = self.usages[usage_id].project
                subs = [i for i, u in self.usages.items() if u.project == key and u.kind != "Final"]
                assert any(billed[i] is None or invoices[billed[i]]["status"] == "Draft" for i in subs), (
                    f"final usage {usage_id} of {key} not billed although its sub invoices are final: {failures}")
            assert len(failures) <= len(waiting), failures

        # -- after every step ---------------------------------------------------------------------

        def check_all(self) -> None:
            report = world.audit()
            assert report.ok, "\n".join(f.render() for f in report.findings)
            self._check_money()

        @invariant()
        def audit_passes(self) -> None:
            report = world.audit()
            assert report.ok, "\n".join(f.render() for f in report.findings)

        @invariant()
        def money_model_agrees(self) -> None:
            self._check_money()

        def _check_money(self) -> None:
            invoices = {i["id"]: i for i in world.rows("Invoice")}
            accounts = {a["id"]: a["accountnumber"] for a in world.rows("Account")}
            billed = {u["id"]: u["on_invoice__c"] for u in world.rows("Usage__c")}
            closed = set()  # projects whose final invoice is finalized and live
            for usage_id, usage in self.usages.items():
                invoice = invoices.get(billed[usage_id])
                if usage.kind == "Final" and invoice is not None and invoice["status"] in LIVE:
                    closed.add(usage.project)
            owed: dict[str, Decimal] = defaultdict(lambda: ZERO)
            for usage_id, usage in self.usages.items():
                invoice = invoices.get(billed[usage_id])
                if invoice is None or invoice["status"] not in LIVE:
                    continue
                assert invoice["type"] == usage.kind, (usage_id, usage.kind, invoice["name"], invoice["type"])
                if usage.kind in ("Progress", "Deposit") and usage.project in closed:
                    continue  # the final invoice bills the whole project
                owed[usage.account] += usage.gross
            # The automatic write-offs the engine made on its own, each within its limit.
            for balance in world.rows("Balance"):
                if balance["type"] != "Write off" or balance["writeoffreason"] not in AUTO_WRITE_OFF:
                    continue
                assert 0 < -balance["amount"] <= AUTO_WRITE_OFF[balance["writeoffreason"]], balance
                if balance["id"] not in self.auto_write_offs:
                    self.auto_write_offs.add(balance["id"])
                    self.money.written_off[balance["invoice"]] -= balance["amount"]
            forgiven: dict[str, Decimal] = defaultdict(lambda: ZERO)
            for invoice_id, amount in self.money.written_off.items():
                if invoices[invoice_id]["status"] in LIVE:
                    forgiven[accounts[invoices[invoice_id]["account"]]] += amount
            books: dict[str, Decimal] = defaultdict(lambda: ZERO)
            for balance in world.rows("Balance"):
                books[accounts[balance["account"]]] += balance["amount"]
                if balance["clearingreason"] == "Final Invoice" and balance["invoice"] is not None:
                    invoice = invoices[balance["invoice"]]
                    if invoice["status"] in LIVE and invoice["finalinvoice"] is None:
                        # The unpaid rest a since cancelled final invoice cleared stays
                        # cleared (engine/booking/cancel.py): the next final invoice of
                        # the project bills it again.
                        owed[accounts[balance["account"]]] += balance["amount"]
            for account in ACCOUNTS:
                expected = (owed[account] - self.money.received[account] - forgiven[account]
                            + self.money.paid_out[account])
                assert books[account] == expected, (
                    f"account {account}: the balances say it owes {books[account]}, the history {expected} "
                    f"(billed {owed[account]}, received {self.money.received[account]}, written off "
                    f"{forgiven[account]}, paid out {self.money.paid_out[account]})")

    return LifecycleMachine


def test_whole_cycle_keeps_the_books(db_url, lifecycle_model, tmp_path):
    world = LifecycleWorld(db_url, lifecycle_model, tmp_path)
    STEPS.clear()
    try:
        run_state_machine_as_test(make_machine(world), settings=lifecycle_settings())
    finally:
        world.close()
        print(f"\n[{world.backend}] steps per rule: {dict(sorted(STEPS.items()))}")


def test_a_sepa_payout_crashed_at_any_statement_keeps_the_model_in_step(db_url, lifecycle_model, tmp_path):
    """The history the ``long`` profile drew once, replayed at every crash
    point: free credit on the SEPA customer's account, an invoice finalized,
    then the SEPA balances export dying after k statements, for every k
    until it no longer dies. Whether it died before or after its commit,
    ``export recover``, the audit and the money model must agree, and the
    export done again must pay out exactly what was left (the model once
    counted a payout that committed before the crash with its sign turned)."""
    world = LifecycleWorld(db_url, lifecycle_model, tmp_path)
    machine_class = make_machine(world)
    committed_before_the_crash = 0
    paid_by_each_completed_export: list[int] = []
    export = world.sepa_balances

    def recording(out, today):
        report = export(out, today)
        paid_by_each_completed_export.append(len(report.transactions))
        return report

    world.sepa_balances = recording  # the machine calls it through ``world`` at each step
    try:
        for k in range(1, 200):
            machine = machine_class()
            machine.fresh_database(standard=[("10001", Decimal("172.45"))], project=None)
            machine.pay_on_account(account=SEPA_ACCOUNT, amount=Decimal("36.80"), by=8, kind="Payment", crash=None)
            machine.run(by=12, crash=None, then_finalize=True)
            assert machine._free(SEPA_ACCOUNT) == Decimal("-36.80")  # the credit the export pays out
            crashes = STEPS["(crashes)"]
            machine.sepa_balances(by=7, crash=k)
            machine.check_all()
            assert machine.money.paid_out[SEPA_ACCOUNT] == Decimal("36.80")
            assert machine._free(SEPA_ACCOUNT) == ZERO
            if STEPS["(crashes)"] == crashes:
                break  # the export ran to its end without dying: every crash point was tried
            if paid_by_each_completed_export[-1] == 0:  # the crashed export had paid: nothing left to pay
                committed_before_the_crash += 1
        else:
            pytest.fail("the SEPA balances export kept dying after 200 statements")
    finally:
        world.close()
    assert k > 2, "the export should have died at several statements"
    assert committed_before_the_crash, "some crash point should fall after the export's commit"
