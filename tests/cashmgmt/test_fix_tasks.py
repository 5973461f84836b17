"""The invoice fix tasks (seed 000, domain-spec §8.6) on a database billed
with the integration off and then switched on: "Create or Fix Entries" and
"Create Payments and Migrate Balances", their errors in
CM_IntegrationError__c, idempotency, and the ``metabill fix-invoices`` command."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from click.testing import CliRunner

from engine.cash.cm_core import ORIGIN, CashManagementError, MONEY_TYPES
from engine.cash.fixtasks import create_or_fix_entries, create_payments_and_migrate_balances
from engine.cli.main import cli

from booking.helpers import ZERO
from cash.helpers import assert_cash_invariants, pay, pay_account, write_off
from config.orgcopy import REPO_ROOT
from contexts import context

from .helpers import CMBooks, assert_entries_match, pay_cm

D = Decimal
WHEN = date(2024, 12, 1)


def run(books: CMBooks, task, names=None):
    with books.engine.begin() as conn:
        return task(conn, context(books.model), names, when=WHEN)


@pytest.fixture
def history(billed_off) -> CMBooks:
    """Billing history made with the integration off: payments (one
    overpaid), a prepayment on an account, a write-off, a cancellation with
    a payment that became free, and an invoice with a payment plan chosen
    after finalization."""
    pay(billed_off, "INV-2024-00004", "300.00", date(2024, 11, 1))
    pay(billed_off, "INV-2024-00002", "2000.00", date(2024, 11, 2))      # 450.00 free
    pay_account(billed_off, "10001", "80.00", date(2024, 11, 3), balance_type="Prepayment")
    write_off(billed_off, "INV-2024-00003", "100.00", when=date(2024, 11, 4))
    pay(billed_off, "INV-2024-00006", "500.00", date(2024, 11, 5))
    # INV-2024-00006 is a partial invoice deducted by the final invoice INV-2024-00007:
    # that one is cancelled first (issue 13: a deducted sub invoice cannot be cancelled on its own)
    billed_off.cancel("INV-2024-00007", date(2024, 11, 6), reason="Project re-planned")
    billed_off.cancel("INV-2024-00006", date(2024, 11, 6), reason="Licence returned")
    billed_off.execute("UPDATE invoice SET installmenttype = '30 days x6' WHERE name = 'INV-2024-00005'")
    assert billed_off.entries() == []
    return billed_off


def test_both_tasks_prepare_a_database_billed_with_the_integration_off(history, cm_model, cm_org):
    on = history.with_model(cm_model, cm_org)
    entries = run(on, create_or_fix_entries)
    assert not entries.errors
    assert (entries.entries_created, entries.installments_created) == (8 + 6 - 1, 6)  # two cancelled
    assert entries.reductions_created == 3          # the write-off and the two final-invoice clearings
    assert entries.entry_items_created == 0          # no CM payments yet
    assert on.entries("INV-2024-00006") == on.entries("INV-2024-00007") == []  # canceled: no entries
    assert [i["amount"] for i in on.installments("INV-2024-00005")] == [D("952.00")] * 6
    (written_off,) = on.entries("INV-2024-00003")
    assert (written_off["amount"], [r["reason"] for r in on.reductions(written_off)]) == (D("2200.00"), ["Write-Off"])

    payments = run(on, create_payments_and_migrate_balances)
    assert not payments.errors
    money = [b for b in on.balances() if b["type"] in MONEY_TYPES]
    assert money and all(b["origin"] == ORIGIN for b in money)
    assert payments.balances_migrated == 5           # 300, 1550 + 450 free, 80 prepayment, 500 freed by the cancellation
    assert len(on.payments()) == payments.payments_created == 5
    (entry,) = on.entries("INV-2024-00004")
    (item,) = on.items(entry)
    assert (item["amount"], item["businessprocess"], entry["amount"]) == (D("-300.00"), "Balance migration", D("592.50"))
    (paid,) = on.entries("INV-2024-00002")
    assert (paid["status"], paid["amount"]) == ("Settled", ZERO)
    assert_entries_match(on)
    assert any("payment JPAY-" in line for line in payments.lines)

    # a second run of each task changes nothing
    for task in (create_or_fix_entries, create_payments_and_migrate_balances):
        again = run(on, task)
        assert (again.total, again.errors, again.lines) == (0, [], [])
    # the free CM money is assigned when the next invoice of the account is finalized
    assert_entries_match(on)


def test_payments_need_entries_first_and_errors_go_to_the_invoice(history, cm_model, cm_org):
    on = history.with_model(cm_model, cm_org)
    refused = run(on, create_payments_and_migrate_balances, ["INV-2024-00004"])
    assert refused.errors == [("INV-2024-00004", "no entries: run the task create-or-fix-entries first")]
    assert on.invoice("INV-2024-00004")["cm_integrationerror__c"] == "no entries: run the task create-or-fix-entries first"
    assert on.payments() == []
    run(on, create_or_fix_entries, ["INV-2024-00004"])
    assert on.entries("INV-2024-00002") == []        # --invoice limits the task
    done = run(on, create_payments_and_migrate_balances, ["INV-2024-00004"])
    assert (done.errors, done.balances_migrated, done.entry_items_created) == ([], 1, 1)
    assert on.invoice("INV-2024-00004")["cm_integrationerror__c"] is None
    free = [b for b in on.balances() if b["invoice"] is None]
    assert free and all(b["origin"] is None for b in free)  # with --invoice, free balances wait


def test_a_bad_payment_plan_is_reported_on_the_invoice(history, cm_model, cm_org):
    history.execute("UPDATE invoice SET installmenttype = 'Nope' WHERE name = 'INV-2024-00001'")
    on = history.with_model(cm_model, cm_org)
    changes = run(on, create_or_fix_entries)
    assert changes.errors == [("INV-2024-00001", "payment plan: Invoice.InstallmentType 'Nope' names no InstallmentPlan record")]
    assert "Nope" in on.invoice("INV-2024-00001")["cm_integrationerror__c"]
    assert on.entries("INV-2024-00001") == [] and len(on.entries("INV-2024-00004")) == 1
    history.execute("UPDATE invoice SET installmenttype = NULL WHERE name = 'INV-2024-00001'")
    fixed = run(on, create_or_fix_entries)
    assert (fixed.entries_created, fixed.errors) == (1, [])
    assert on.invoice("INV-2024-00001")["cm_integrationerror__c"] is None


def test_outdated_entries_are_fixed(cm):
    from booking.test_balanced_books import bill_orders

    bill_orders(cm)
    pay_cm(cm, "INV-2024-00004", "100.00", date(2024, 11, 1))
    (entry,) = cm.entries("INV-2024-00004")
    cm.update("Entry", entry["id"], duedate=date(2030, 1, 1), title="old")
    (other,) = cm.entries("INV-2024-00001")
    cm.update("Entry", other["id"], openamount=D("1.00"))
    changes = run(cm, create_or_fix_entries)
    assert (changes.entries_updated, changes.entries_canceled, changes.entries_created) == (1, 1, 1)
    (entry,) = cm.entries("INV-2024-00004")
    assert (entry["duedate"], entry["title"], entry["amount"]) == (
        cm.invoice("INV-2024-00004")["paymentduedate"], "Invoice INV-2024-00004", D("792.50"))
    (fresh,) = cm.entries("INV-2024-00001", live=True)
    assert fresh["openamount"] == D("1249.19") and fresh["id"] != other["id"]
    assert run(cm, create_or_fix_entries).total == 0
    assert_entries_match(cm)
    assert_cash_invariants(cm)


def test_the_tasks_need_the_integration(billed_off):
    with pytest.raises(CashManagementError, match="EnableCashManagementIntegration"):
        run(billed_off, create_or_fix_entries)


def invoke(url: str, org, *args):
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--org", str(org), "--db", url],
                                                      catch_exceptions=False)
    return result.exit_code, result.output


def test_fix_invoices_command(history, cm_org):
    url = history.url
    code, out = invoke(url, cm_org, "fix-invoices", "--task", "create-or-fix-entries", "--dry-run")
    assert code == 0 and "Dry run (rolled back)" in out and "13 entr(y/ies) created" in out  # 8 + 6 - 1
    assert history.entries() == []
    code, out = invoke(url, cm_org, "fix-invoices", "--task", "create-or-fix-entries",
                       "--task", "create-payments-and-migrate-balances")
    assert code == 0, out
    assert "-- create-or-fix-entries" in out and "created entry INV-2024-00001" in out
    assert "5 balance(s) migrated" in out
    code, out = invoke(url, cm_org, "fix-invoices", "--task", "create-or-fix-entries",
                       "--task", "create-payments-and-migrate-balances")
    assert code == 0 and out.count("0 change(s), 0 error(s).") == 2, out
    code, out = invoke(url, cm_org, "entries", "list", "--invoice", "INV-2024-00004")
    assert code == 0 and "592.50" in out and "Open" in out


def test_fix_invoices_command_errors(history, cm_org):
    code, out = invoke(history.url, REPO_ROOT, "fix-invoices", "--task", "create-or-fix-entries")
    assert code == 1 and "integration is off" in out and "Traceback" not in out
    code, out = invoke(history.url, cm_org, "fix-invoices", "--task", "create-or-fix-entries", "--invoice", "NOPE-1")
    assert code == 1 and "no invoice numbered NOPE-1" in out
    # --enable-integration runs the tasks on the sample org as if the switch were on
    code, out = invoke(history.url, REPO_ROOT, "fix-invoices", "--task", "create-or-fix-entries",
                       "--enable-integration", "--invoice", "INV-2024-00004")
    assert code == 0 and "created entry INV-2024-00004" in out
    (entry,) = history.entries("INV-2024-00004")
    assert entry["confighash"] not in (None, history.model.config_hash)
