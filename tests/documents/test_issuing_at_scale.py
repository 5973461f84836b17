"""What makes issuing documents cheap keeps what issuing guarantees (issue 19):
environments and readers cached per command pick up a changed template in
the next command; a compiled (cached) validator still rejects an invalid
document; worker processes validate exactly as this process does, a dead
worker loses no validation, and finalization through the workers records
and blocks violations as before (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import re

import pytest

from engine.documents.einvoice import parallel
from engine.documents.einvoice.build import build_einvoice
from engine.documents.einvoice.cii import cii_xml
from engine.documents.einvoice.mapping import load_mapping
from engine.documents.einvoice.parallel import Validators
from engine.documents.einvoice.ubl import ubl_xml
from engine.documents.einvoice.validation import errors_of, validate_xml
from engine.documents.render import render_html
from engine.storage.context import Context

from booking.helpers import Books
from config.orgcopy import REPO_ROOT
from databases import load_model

from .conftest import load_ok, org_with
from .einvoice_samples import ENTITY, invoice, line
from .seed import seed_invoice
from .test_einvoice_lifecycle import _broken_org, _issue


@pytest.fixture(scope="module")
def documents():
    """A valid CII and UBL of a ten-line invoice, and the CII with its Grand
    Total raised by one euro (BR-CO-15 fails: it no longer equals the net
    total plus VAT)."""
    mapping = load_mapping(load_model(REPO_ROOT))
    record, lines, account = invoice("INV-1", [line(f"Beratung {i}", "2", "120.00", "19" if i % 2 else "7")
                                               for i in range(10)])
    doc = build_einvoice(record, lines, account, ENTITY, mapping, preceding=None)
    cii, ubl = cii_xml(doc), ubl_xml(doc)
    found = re.search(rb"<ram:GrandTotalAmount>([0-9.]+)</ram:GrandTotalAmount>", cii)
    raised = f"{float(found.group(1).decode()) + 1:.2f}".encode()  # test data only: the XML's own text, +1
    broken = cii.replace(found.group(0), b"<ram:GrandTotalAmount>" + raised + b"</ram:GrandTotalAmount>")
    assert broken != cii
    return cii, ubl, broken


def _rules(violations) -> set[str]:
    return {v.rule for v in errors_of(violations)}


def test_a_cached_validator_still_rejects_an_invalid_document(documents):
    cii, ubl, broken = documents
    assert _rules(validate_xml(cii)) == set()  # compiles and keeps the rule sets
    assert "BR-CO-15" in _rules(validate_xml(broken))
    assert _rules(validate_xml(cii)) == set() and _rules(validate_xml(ubl)) == set()
    assert "BR-CO-15" in _rules(validate_xml(broken))


def test_a_changed_template_on_disk_is_picked_up_by_the_next_command(tmp_path):
    org = org_with(tmp_path)
    first = Context(load_ok(org))
    data = seed_invoice(first.model)
    before = render_html(org, first, data).html
    assert "MARKER-19" not in before
    template = org / "templates" / "invoice.html.j2"
    template.write_text(template.read_text(encoding="utf-8") + "\n<p>MARKER-19</p>\n", encoding="utf-8")
    assert render_html(org, first, data).html == before  # one command renders with one template
    second = Context(load_ok(org))
    assert "MARKER-19" in render_html(org, second, seed_invoice(second.model)).html


@pytest.fixture
def pool_for_every_batch(monkeypatch):
    """Worker processes for any batch, however small."""
    monkeypatch.setattr(parallel, "MIN_DOCUMENTS", 1)
    monkeypatch.setattr(parallel, "CHUNK", 2)
    monkeypatch.setenv(parallel.WORKERS_ENV, "1")


def test_workers_validate_exactly_as_this_process(documents, pool_for_every_batch):
    cii, ubl, broken = documents
    batch = [cii, broken, ubl, broken, cii, ubl, broken]
    validators = Validators()
    try:
        pending = validators.submit(batch)
        pending._feeder.join()  # noqa: SLF001 - this process stays out of it: the worker validates every chunk
        got = pending.results()
    finally:
        validators.close()
    assert pending.worker_chunks == 4  # 7 documents in chunks of 2
    assert got == [validate_xml(data) for data in batch]
    assert [bool(_rules(found)) for found in got] == [False, True, False, True, False, False, True]


def test_a_dead_worker_loses_no_validation(documents, pool_for_every_batch):
    cii, ubl, broken = documents
    batch = [broken, cii, ubl, broken, broken, cii]
    validators = Validators()
    try:
        pending = validators.submit(batch)
        for worker in validators._running:  # noqa: SLF001 - the test kills the worker
            worker.process.kill()
        got = pending.results()
    finally:
        validators.close()
    assert [bool(_rules(found)) for found in got] == [True, False, False, True, True, False]
    assert got == [validate_xml(data) for data in batch]


def test_no_worker_is_started_when_they_are_turned_off(documents, monkeypatch):
    monkeypatch.setattr(parallel, "MIN_DOCUMENTS", 1)
    monkeypatch.setenv(parallel.WORKERS_ENV, "0")
    cii, _ubl, broken = documents
    validators = Validators()
    assert [bool(_rules(found)) for found in validators.submit([cii, broken]).results()] == [False, True]
    assert validators._running == []  # noqa: SLF001


@pytest.mark.parametrize("block", [False, True])
def test_finalization_through_workers_records_or_blocks_violations(db_url, prepared, tmp_path, block,
                                                                   pool_for_every_batch):
    org = _broken_org(tmp_path, block)
    model = load_model(org)
    books = Books(prepared(db_url, model, key=f"einvoice-broken-pool-{block}"), model, db_url, org)
    _issue(books)
    if block:
        assert not books.outcome.finalized and books.outcome.failures
        assert all("BR-DE-15" in str(f) for f in books.outcome.failures)
        return
    issued = [i for i in books.invoices() if i["status"] not in ("Draft", "Pre-Draft")]
    assert issued and {i["einvoicestatus"] for i in issued} == {"Invalid"}
    for record in issued:
        violations = json.loads(record["einvoiceviolations"])
        assert {(v["format"], v["rule"]) for v in violations} == {("cii", "BR-DE-15"), ("ubl", "BR-DE-15")}


def test_a_batch_abandoned_midway_leaves_the_workers_ready_for_the_next(documents, pool_for_every_batch):
    """A batch whose HTML failed is dropped while workers hold its chunks;
    the next batch's answers are its own."""
    cii, ubl, broken = documents
    validators = Validators()
    try:
        validators.submit([broken] * 6)  # abandoned: never collected
        got = validators.submit([cii, ubl, cii, ubl]).results()
    finally:
        validators.close()
    assert [bool(_rules(found)) for found in got] == [False, False, False, False]


def test_the_worker_count_is_the_setting_when_given(monkeypatch):
    for setting, expected in (("3", 3), ("0", 0), ("-2", 0), ("many", 0)):
        monkeypatch.setenv(parallel.WORKERS_ENV, setting)
        assert parallel.worker_count() == expected
    monkeypatch.delenv(parallel.WORKERS_ENV)
    assert 0 <= parallel.worker_count() <= parallel.MAX_WORKERS
