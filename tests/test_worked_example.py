"""The worked example of domain-spec 5.6 reproduces its twelve booking lines exactly."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "progress-final"


def run_example() -> str:
    env = {k: v for k, v in os.environ.items() if k != "METABILL_DB_URL"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.run(["bash", str(EXAMPLE / "run.sh")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_twelve_booking_lines():
    output = run_example()
    expected = (EXAMPLE / "expected-journal.csv").read_text(encoding="utf-8")
    assert output == expected
    rows = list(csv.DictReader(io.StringIO(output)))
    assert len(rows) == 12
    assert [r["Type"] for r in rows] == [
        "Interim Revenue", "Payment", "Interim Payment", "Interim Tax",
        "Interim Revenue", "Payment", "Interim Payment", "Interim Tax",
        "Revenue", "Interim Payment Clearing", "Tax", "Payment",
    ]


def test_every_account_balances_as_the_reference_says():
    rows = list(csv.DictReader(io.StringIO(run_example())))
    balance: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        amount = Decimal(row["Amount"])
        balance[row["DebitAccount"]] += amount
        balance[row["CreditAccount"]] -= amount
    assert sum(balance.values()) == 0
    assert balance["10001"] == 0  # the debtor: everything invoiced was paid
    assert balance["1593"] == 0 and balance["1718"] == 0
    assert balance["1776"] == Decimal("-570.00")  # 19 % of 3000.00, a credit
    assert balance["8400"] == Decimal("-3000.00")
    assert balance["1200"] == Decimal("3570.00")
