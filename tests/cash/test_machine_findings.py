"""What the lifecycle state machine (tests/reliability/test_lifecycle_machine.py)
found in cash, each as the smallest history that shows it (SQLite and
PostgreSQL).

1. ``payment-plan change`` on an invoice that a SEPA direct debit had
   already collected from deleted the collected installments (and with them
   which debit collected what) and made new ones that no debit had
   collected: the next direct debit collected the same money again, and
   ``metabill audit`` reported the earlier debit as collecting more than its
   installments (A511). Now the change is refused, naming the debits, and
   nothing changes (engine/cash/cm_plans.py).
"""

from __future__ import annotations

from datetime import date, datetime

import pytest

from engine.audit import audit
from engine.cash.errors import CashManagementError
from engine.cash.service import change_payment_plan
from engine.exports.service import export_sepa_debit

from contexts import context

from .test_lifecycle_finalization import ChainBooks, _finalize, chain  # noqa: F401 - chain is a fixture


def _a511(books: ChainBooks) -> list[str]:
    return [f.render() for f in audit(books.engine, context(books.model)).findings if f.code == "A511"]


def test_a_plan_change_after_a_direct_debit_is_refused(chain: ChainBooks, tmp_path):
    draft = chain.drafts()["10004"]
    chain.update(draft["id"], installmenttype="30 days x6")
    [number] = _finalize(chain, draft["id"])
    invoice = chain.invoice(number)
    plan = chain.installments(invoice["id"])
    report = export_sepa_debit(chain.engine, context(chain.model), tmp_path / "debit.xml", business_entity="DE01",
                               created=datetime.combine(plan[0]["date"], datetime.min.time()))
    assert [t.amount for t in report.transactions] == [plan[0]["amount"]]
    assert _a511(chain) == []
    with pytest.raises(CashManagementError, match="direct debit") as refused:
        change_payment_plan(chain.engine, context(chain.model), number, "Monthly x12", when=date(2024, 10, 20))
    assert refused.value.hint
    # nothing changed: the same plan, the same installments with their collection marks
    assert chain.invoice(number)["installmenttype"] == "30 days x6"
    after = chain.installments(invoice["id"])
    assert [(i["id"], i["amount"]) for i in after] == [(i["id"], i["amount"]) for i in plan]
    assert (after[0]["exportdate"], after[0]["exportfile"]) == (plan[0]["date"], "debit.xml")
    assert _a511(chain) == []  # before the fix: A511, the debit collects 238.00 … of installments amounting to 0.00


def test_a_plan_change_before_any_direct_debit_still_works(chain: ChainBooks):
    draft = chain.drafts()["10004"]
    chain.update(draft["id"], installmenttype="30 days x6")
    [number] = _finalize(chain, draft["id"])
    change_payment_plan(chain.engine, context(chain.model), number, "Monthly x12", when=date(2024, 10, 1))
    invoice = chain.invoice(number)
    assert invoice["installmenttype"] == "Monthly x12" and len(chain.installments(invoice["id"])) == 12
