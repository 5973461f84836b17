"""The cash-management commands: payment-plan change, entries list/settle,
partial-credit; user errors end with a message, never a traceback."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from click.testing import CliRunner

from engine.cli.main import cli

from booking.helpers import ORDERS
from booking.test_balanced_books import bill_orders

from .helpers import assert_entries_match


@pytest.fixture
def billed(cm):
    bill_orders(cm)
    return cm


def invoke(books, *args):
    result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--org", str(books.org_dir), "--db", books.url],
                                                      catch_exceptions=False)
    return result.exit_code, result.output


def test_payment_plan_change_command(billed):
    code, out = invoke(billed, "payment-plan", "change", "INV-2024-00002", "Monthly x12", "--date", "2024-11-05")
    assert code == 0, out
    assert "INV-2024-00002: plan Monthly x12: 12 installment(s), 1 entr(y/ies) canceled, 12 created" in out
    code, out = invoke(billed, "entries", "list", "--invoice", "INV-2024-00002")
    assert code == 0 and out.count("Installment INV-2024-00002/") == 12
    code, out = invoke(billed, "entries", "list", "--invoice", "INV-2024-00002", "--all")
    assert "Canceled" in out
    code, out = invoke(billed, "payment-plan", "change", "INV-2024-00002", "Fortnightly")
    assert code == 1 and "names no InstallmentPlan record" in out and "Traceback" not in out
    assert_entries_match(billed)


def test_settle_and_partial_credit_commands(billed):
    step = billed.bill(ORDERS, date(2025, 1, 1), date(2025, 1, 31), date(2025, 1, 15))
    (credit,) = step.numbers
    code, out = invoke(billed, "entries", "settle", "INV-2024-00004", credit, "--amount", "100.00", "--date", "2025-01-20")
    assert code == 0 and f"Settled 100.00 of INV-2024-00004 against {credit}." in out
    code, out = invoke(billed, "entries", "settle", "INV-2024-00004", credit, "--amount", "999.00")
    assert code == 1 and "exceeds" in out
    code, out = invoke(billed, "partial-credit", "INV-2024-00002", "--line", "ILI-0000004", "--reason", "Returned",
                       "--date", "2024-11-10")
    assert code == 0 and "Credited INV-2024-00002 with" in out and "-350.00" in out
    assert billed.entries("INV-2024-00002")[0]["amount"] == Decimal("1200.00")
    code, out = invoke(billed, "partial-credit", "INV-2024-00002", "--line", "NOPE")
    assert code == 1 and "has no line(s) NOPE" in out
    assert_entries_match(billed)
