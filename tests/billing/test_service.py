"""The billing commands' service functions (engine.billing.service) and the
run's failures as data: codes, the record or filter they concern."""

from __future__ import annotations

from datetime import date

import pytest

from engine.billing.drafts import DraftError
from engine.billing.run import RunError
from engine.billing.service import RunNotFound, delete_drafts_of, find_drafts, find_run
from engine.domain.errors import EngineError, Where

from contexts import context

from .helpers import D, only

JAN_APR = dict(start=date(2024, 1, 1), end=date(2024, 4, 30))


def test_find_run_by_name_or_id(billing_sqlite):
    h = billing_sqlite
    report = h.run("Order Invoice", **JAN_APR)
    ctx = context(h.model)
    with h.engine.connect() as conn:
        assert find_run(conn, ctx, report.run_name) == report.run_id
        assert find_run(conn, ctx, str(report.run_id)) == report.run_id
        assert find_run(conn, ctx, report.run_id) == report.run_id
        with pytest.raises(RunNotFound, match="no invoice run 'IR-999999'") as refused:
            find_run(conn, ctx, "IR-999999")
    problem = only(refused.value.problems)
    assert (problem.code, problem.where) == ("R210", Where(object="InvoiceRun", record="IR-999999"))


def test_find_drafts_of_a_run_and_by_name(billing_sqlite):
    h = billing_sqlite
    report = h.run("Order Invoice", **JAN_APR)
    ctx = context(h.model)
    ids = sorted(i.id for i in report.invoices)
    assert find_drafts(h.engine, ctx, run=report.run_name) == ids
    assert find_drafts(h.engine, ctx, names=[report.invoices[0].name]) == [report.invoices[0].id]
    with pytest.raises(RunNotFound):
        find_drafts(h.engine, ctx, run="IR-999999")


def test_delete_drafts_of_is_all_or_nothing(billing_sqlite):
    h = billing_sqlite
    report = h.run("Order Invoice", **JAN_APR)
    ctx = context(h.model)
    names = [i.name for i in report.invoices]
    with pytest.raises(DraftError, match="some of the named invoices are not drafts or do not exist; nothing was "
                                         "deleted") as refused:
        delete_drafts_of(h.engine, ctx, names=[names[0], "DRAFT-999999"])
    assert refused.value.code == "R211"
    assert len(h.invoices()) == len(names)
    assert delete_drafts_of(h.engine, ctx, names=[names[0]]) == 1
    assert delete_drafts_of(h.engine, ctx, run=report.run_name) == len(names) - 1
    assert h.invoices() == [] and h.claims() == []


def test_record_failures_are_problems_with_their_record(billing_sqlite):
    h = billing_sqlite
    bad, good = h.usage(dict(account="10009", title="unknown account"), dict(account="10001", title="fine"),
                        unitprice=D("1.00"))
    report = h.run("Usage")
    failure = only(f for fr in report.filters for f in fr.failures)
    assert failure.record_id == bad
    problem = only(report.problems)
    assert problem == failure.problem
    assert (problem.code, problem.message) == ("R204", failure.message)
    assert problem.where == Where(object="Usage__c", record=str(bad))
    assert h.get("Usage__c", good)["on_invoice__c"] is not None


def test_run_errors_carry_their_code_and_filter(billing_sqlite):
    with pytest.raises(RunError) as refused:
        billing_sqlite.run("Rechnungen")
    error = refused.value
    assert isinstance(error, EngineError) and isinstance(error, ValueError)
    assert (error.code, error.where) == ("R201", Where(object="Filter", record="Rechnungen"))
