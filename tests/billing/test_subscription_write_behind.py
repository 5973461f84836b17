"""The subscription run writing behind (SubscriptionRun._in_batches_behind) on a SQLite file.

Each batch is read and drafted in a read transaction; its headers and staged
lines are written in its write transaction, whose last statements and
commit run in a writer thread while the next batch is drafted. These tests
hold it to the serial run, whatever happens between the two halves:

- the same invoices, lines, order, claims and marks as the serial run, in
  batches of 7, over two months;
- a run elsewhere that claims a batch's periods between its reading and its
  writing: that batch is read and billed again, no period is billed twice
  and none is lost;
- a write that fails behind: the run raises, and no batch is half written
  (no header without its lines, no line without its claim);
- PostgreSQL and a dry run do not write behind.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
import sqlalchemy as sa

from databases import REPO_ROOT
from engine.billing import subscriptions as subscription_run
from engine.billing.build import InvariantError
from engine.billing.service_claims import SERVICE_CLAIM
from engine.billing.session import RunSession

from .helpers import Harness
from .test_subscription_rows import (FEB, JAN, delete_run, expected_lines, finalize_all, load_generated, snapshot,
                                     written_around)


@pytest.fixture
def org(db_url, sample_model, prepared) -> Harness:
    return Harness(prepared(db_url, sample_model, load_generated, key="subscription-rows"), sample_model, db_url,
                   REPO_ROOT)


@pytest.fixture
def sqlite_org(sqlite_url, sample_model, prepared) -> Harness:
    """The org on a SQLite file only: what is written behind there."""
    return Harness(prepared(sqlite_url, sample_model, load_generated, key="subscription-rows"), sample_model,
                   sqlite_url, REPO_ROOT)


def run(h: Harness, period, batch_size: int = 7, **options):
    return h.run("Subscriptions", start=period[0], end=period[1], today=period[0], batch_size=batch_size, **options)


def counting_writes_behind(monkeypatch) -> list[int]:
    """Count the batches written behind (one entry per write)."""
    calls: list[int] = []
    original = RunSession.write_behind

    def counted(self, front, back, writer):
        calls.append(1)
        return original(self, front, back, writer)

    monkeypatch.setattr(RunSession, "write_behind", counted)
    return calls


def test_writing_behind_writes_what_the_serial_run_writes(org, monkeypatch):
    """January and February (after finalizing January) serially and behind,
    the first one's drafts deleted in between: the same headers, lines,
    record errors, order of ids, claims and marks."""
    behind = counting_writes_behind(monkeypatch)
    for period in (JAN, FEB):
        with monkeypatch.context() as patch:
            patch.setattr(subscription_run.SubscriptionRun, "_write_behind", lambda self: False)
            serial = run(org, period)
        assert not behind
        expected, around = snapshot(org, serial.run_id), written_around(org, serial.run_id)
        delete_run(org, serial.run_id)
        report = run(org, period)
        on_sqlite = org.backend == "sqlite"
        assert (len(behind) > 10) is on_sqlite  # 120 subscriptions in batches of 7; PostgreSQL: never
        behind.clear()
        assert snapshot(org, report.run_id) == expected
        assert written_around(org, report.run_id) == around
        assert report.invoice_count == serial.invoice_count > 0 and report.line_count == serial.line_count
        finalize_all(org, report.run_id)


def lines_per_period(h: Harness) -> Counter:
    """How many lines bill each (item, period start), over every invoice."""
    return Counter((line["subscriptionitem"], line["serviceperiodstart"]) for line in h.select("InvoiceLineItem"))


def claims(h: Harness) -> set[tuple]:
    with h.engine.connect() as conn:
        return {(c.item_id, c.period_start, c.invoice_id) for c in conn.execute(sa.select(SERVICE_CLAIM))}


def test_periods_claimed_meanwhile_by_another_run_are_billed_once(sqlite_org, monkeypatch):
    """While the run drafts its third batch, another run (same filter,
    another period end, so not joined) bills every subscription. The third
    batch's write then meets the other run's claims: it is read and billed
    again (and finds nothing left to bill), as are the batches after it.
    Every period is billed exactly once, by one run or the other."""
    org = sqlite_org
    behind = counting_writes_behind(monkeypatch)
    serial_batches: list[int] = []
    original_prepare = subscription_run.SubscriptionRun._prepare
    original_batch = subscription_run.SubscriptionRun._batch
    prepared: list[int] = []
    others = []

    def prepare(self, ids):
        drafts = original_prepare(self, ids)
        prepared.append(1)
        if len(prepared) == 3 and not others:
            with monkeypatch.context() as patch:
                patch.setattr(subscription_run.SubscriptionRun, "_prepare", original_prepare)
                others.append(run(org, (JAN[0], date(2024, 1, 30)), batch_size=2000))
        return drafts

    monkeypatch.setattr(subscription_run.SubscriptionRun, "_prepare", prepare)
    monkeypatch.setattr(subscription_run.SubscriptionRun, "_batch",
                        lambda self, conn, ids, accounts: serial_batches.append(1) or original_batch(self, conn, ids,
                                                                                                       accounts))
    report = run(org, JAN)
    (other,) = others
    assert other.invoice_count > 0 and report.invoice_count > 0  # both billed some
    assert serial_batches, "the batch whose periods were claimed meanwhile is billed again, the whole way"
    assert behind and len(behind) >= 2
    per_period = lines_per_period(org)
    assert per_period and max(per_period.values()) == 1  # no period billed twice
    assert set(per_period) == {(item, start) for item, start, _ in claims(org)}  # every line claimed, and only they
    # Nothing lost: every charge due in January is billed, by one of the two runs; one invoice per subscription.
    assert set(per_period) == set(expected_lines(org, JAN[1]))
    billed_subscriptions = {i["subscription"] for i in org.select("Invoice")}
    assert len(billed_subscriptions) == report.invoice_count + other.invoice_count


def test_a_write_failing_behind_leaves_no_half_batch(sqlite_org, monkeypatch):
    """The lines' insert of the fourth batch fails in the writer thread: the
    run raises that error, the batches before it stay committed, and that
    batch leaves nothing (its headers, written before, are rolled back with
    it); no header lacks its lines and no line its claim."""
    org = sqlite_org
    original = subscription_run.write_staged
    written: list[int] = []

    def failing(conn, invoice_obj, invoice_ids, staged):
        written.append(1)
        if len(written) == 4:
            raise InvariantError("the fourth batch's lines fail")
        return original(conn, invoice_obj, invoice_ids, staged)

    monkeypatch.setattr(subscription_run, "write_staged", failing)
    with pytest.raises(InvariantError, match="fourth batch"):
        run(org, JAN)
    invoices = org.select("Invoice")
    lines = org.select("InvoiceLineItem")
    assert invoices and len(invoices) < 120
    assert {i["id"] for i in invoices} == {line["invoice"] for line in lines}  # no header without lines
    assert {(line["subscriptionitem"], line["serviceperiodstart"], line["invoice"]) for line in lines} == claims(org)
    assert len({i["subscription"] for i in invoices}) == len(invoices)


def test_a_dry_run_does_not_write_behind(org, monkeypatch):
    behind = counting_writes_behind(monkeypatch)
    report = run(org, JAN, dry_run=True)
    assert report.invoice_count > 0 and not behind
    assert not org.select("Invoice")
