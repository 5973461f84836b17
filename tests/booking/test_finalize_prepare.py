"""A stage's ``prepare`` runs once, before the first batch's transaction
(:func:`engine.booking.finalize.prepare_stages`, issue 19): the documents
stage compiles the e-invoice rule sets there instead of while it holds the
write lock. Nothing to finalize prepares nothing."""

from __future__ import annotations

from datetime import date

import pytest

from engine.booking.finalize import finalize_invoices
from engine.documents.finalization import issue_documents

from config.orgcopy import REPO_ROOT
from contexts import context
from databases import load_model

from billing.helpers import make_test_org

from .test_numbering_and_immutability import NO_TAX_7, drafts, usage


@pytest.fixture(scope="module")
def org_without_tax7(tmp_path_factory):
    """The numbering tests' org: the billing test org with its Usage__c source."""
    org = make_test_org(tmp_path_factory.mktemp("prepare") / "org")
    NO_TAX_7.apply(org)
    return org, load_model(org)


def _recording_stage(events: list):
    def stage(conn, ctx, invoices):
        events.append(("batch", conn.in_transaction(), len(invoices)))

    def prepare(ctx):
        events.append(("prepare",))

    stage.prepare = prepare
    return stage


def test_prepare_runs_once_before_any_batch(org_without_tax7, db_url, make_books):
    org, model = org_without_tax7
    books = make_books(db_url, model, org)
    usage(books, 5, reduced=set())
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    ids = drafts(books)
    events: list = []
    report = finalize_invoices(books.engine, context(model), ids, today=date(2024, 5, 2),
                               stages=(_recording_stage(events),))
    assert len(report.finalized) == len(ids) == 5
    assert events[0] == ("prepare",) and events.count(("prepare",)) == 1
    assert [e for e in events[1:] if e[0] == "batch"] == events[1:] and all(e[1] for e in events[1:])

    events.clear()
    finalize_invoices(books.engine, context(model), [], today=date(2024, 5, 2), stages=(_recording_stage(events),))
    assert events == []


def test_the_documents_stage_compiles_the_rule_sets_in_prepare(monkeypatch):
    import engine.documents.finalization as finalization

    compiled: list[bool] = []
    monkeypatch.setattr(finalization, "compile_rules", lambda: compiled.append(True))
    issue_documents.prepare(context(load_model(REPO_ROOT)))
    assert compiled == [True]
