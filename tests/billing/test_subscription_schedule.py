"""Scheduled invoice runs: the period rules (pure) and the scheduler's slots
on SQLite and PostgreSQL (each slot bills once, also when a scheduler died
mid-slot or two tick at once), and validate-config's E235."""

from __future__ import annotations

import threading
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from config.orgcopy import Replace, apply_edits, copy_org
from databases import load_model
from engine.billing.run import RunRequest, run_invoices
from engine.billing.scheduled import ParameterError, parse_parameters, scheduled_period, scheduled_request
from engine.cash.jobs import tick
from engine.cash.scheduled_runs import _slot_lock
from engine.project import finalize_drafts, load_project
from engine.storage.schema import JOB_SLOT

from contexts import context

from .helpers import Harness, InjectedFault, fault_after
from .test_subscription_run import load_subscriptions

SCHEDULES = "custom_settings/JobSchedule.yaml"
FEB_1 = datetime(2024, 2, 1, 2, 5, tzinfo=timezone.utc)  # 03:05 in Berlin
MAR_1 = datetime(2024, 3, 1, 2, 5, tzinfo=timezone.utc)


@pytest.mark.parametrize(("parameters", "day", "period", "invoice_date"), [
    ('{"Filters": ["S"]}', date(2024, 3, 2), (date(2024, 2, 1), date(2024, 2, 29)), None),
    ('{"Filters": "S", "Alignment": "current", "InvoiceDate": "end"}', date(2024, 3, 2),
     (date(2024, 3, 1), date(2024, 3, 31)), date(2024, 3, 31)),
    ('{"Filters": ["S"], "Interval": "3m", "InvoiceDate": "start+2"}', date(2024, 4, 1),
     (date(2024, 1, 1), date(2024, 3, 31)), date(2024, 1, 3)),
    ('{"Filters": ["S"], "Interval": "1m", "Alignment": "next"}', date(2024, 12, 20),
     (date(2025, 1, 1), date(2025, 1, 31)), None),
    ('{"Filters": ["S"], "Interval": "1w"}', date(2024, 3, 2), (date(2024, 2, 19), date(2024, 2, 25)), None),
    ('{"Filters": ["S"], "Interval": "2w", "StartOfWeek": 7, "Alignment": "current"}', date(2024, 3, 2),
     (date(2024, 2, 18), date(2024, 3, 2)), None),
    ('{"Filters": ["S"], "Interval": "7d", "InvoiceDate": "end-5"}', date(2024, 3, 2),
     (date(2024, 2, 18), date(2024, 2, 24)), date(2024, 2, 19)),
])
def test_periods_of_scheduled_runs(parameters, day, period, invoice_date):
    spec = parse_parameters(parameters)
    assert scheduled_period(spec, day) == period
    request = scheduled_request(spec, day)
    assert (request.period_start, request.period_end, request.invoice_date, request.today) == \
        (*period, invoice_date, day)


@pytest.mark.parametrize(("parameters", "message"), [
    ("not json", "not JSON"),
    ("[1]", "JSON object"),
    ('{"Filters": []}', "at least one filter"),
    ('{"Filters": ["S"], "Interval": "1y"}', '"Interval"'),
    ('{"Filters": ["S"], "Alignment": "last"}', '"Alignment"'),
    ('{"Filters": ["S"], "InvoiceDate": "middle"}', '"InvoiceDate"'),
    ('{"Filters": ["S"], "Finalize": "yes"}', '"Finalize"'),
    ('{"Filters": ["S"], "Period": "x"}', "unknown parameter(s) Period"),
])
def test_bad_parameters_are_named(parameters, message):
    with pytest.raises(ParameterError) as raised:
        parse_parameters(parameters)
    assert message in str(raised.value)


def make_schedule_org(dest: Path) -> Path:
    org = copy_org(dest)
    apply_edits(org, (Replace(SCHEDULES, "    Active: false\n    Parameters: '{\"Filters\"",
                              "    Active: true\n    Parameters: '{\"Filters\""),))
    return org


@pytest.fixture(scope="module")
def schedule_org(tmp_path_factory) -> Path:
    return make_schedule_org(tmp_path_factory.mktemp("schedule") / "org")


@pytest.fixture(scope="module")
def schedule_model(schedule_org):
    return load_model(schedule_org)


@pytest.fixture
def h(db_url, schedule_model, schedule_org, prepared) -> Harness:
    return Harness(prepared(db_url, schedule_model, load_subscriptions, key="schedule"), schedule_model, db_url,
                   schedule_org)


def subscription_ticks(h: Harness, now: datetime):
    results = tick(h.engine, context(h.model), now, finalize=finalize_drafts)
    return [r for r in results if r.schedule == "Monthly subscription run"]


def slots(h: Harness) -> dict[str, str]:
    with h.engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(
            sa.select(JOB_SLOT.c.slot, JOB_SLOT.c.run).where(JOB_SLOT.c.schedule == "Monthly subscription run"))}


def test_each_slot_bills_its_month_once_and_finalizes_it(h):
    (first,) = subscription_ticks(h, FEB_1)
    assert first.ran and first.slot == "2024-02-01T03:00"
    assert "2024-01-01..2024-01-31: 4 invoice(s), 7 line(s), 0 record error(s), 4 finalized" in first.summary
    invoices = h.invoices()
    assert {i["status"] for i in invoices} == {"Open"} and {i["date"] for i in invoices} == {date(2024, 1, 31)}
    (again,) = subscription_ticks(h, FEB_1)
    assert not again.ran and "slot already executed" in again.summary
    (march,) = subscription_ticks(h, MAR_1)
    assert march.ran and "2024-02-01..2024-02-29: 3 invoice(s)" in march.summary
    assert len(h.invoices()) == 7
    assert set(slots(h)) == {"2024-02-01T03:00", "2024-03-01T03:00"}
    assert all(not run.startswith("pending") for run in slots(h).values())


def test_a_scheduler_that_died_mid_slot_is_completed_once(h):
    """The slot was recorded and the run billed part of the month before the
    scheduler died: the next tick joins the run and bills only the rest."""
    ctx = context(h.model)
    with h.engine.begin() as conn:
        JOB_SLOT.create(conn, checkfirst=True)
        conn.execute(sa.insert(JOB_SLOT).values(schedule="Monthly subscription run", slot="2024-02-01T03:00",
                                                job="InvoiceRun", run="pending", started_at=FEB_1.isoformat()))
    partial = run_invoices(h.engine, ctx, RunRequest(("Subscriptions",), date(2024, 1, 1), date(2024, 1, 31),
                                                     date(2024, 1, 31), today=date(2024, 2, 1)))
    sub = h.t("Invoice")
    with h.engine.begin() as conn:  # as if the last batch had not been committed
        last = max(i.id for i in partial.invoices)
        conn.execute(sa.delete(h.t("InvoiceLineItem")).where(h.t("InvoiceLineItem").c.invoice == last))
        conn.execute(sa.text("DELETE FROM _mb_service_claim WHERE invoice_id = :i"), {"i": last})
        conn.execute(sa.delete(sub).where(sub.c.id == last))
    (resumed,) = subscription_ticks(h, FEB_1)
    assert resumed.ran and "1 invoice(s)" in resumed.summary
    assert len(h.invoices()) == 4 and slots(h) == {"2024-02-01T03:00": partial.run_name}


def test_two_schedulers_ticking_at_once_bill_the_slot_once(h):
    results: list[object] = []

    def work():
        try:
            results.extend(subscription_ticks(h, FEB_1))
        except Exception as error:  # noqa: BLE001 - reported below
            results.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(h.invoices()) == 4
    lines = h.select("InvoiceLineItem")
    assert len(lines) == 7
    if h.backend == "postgresql":  # the slot lock lets one of them run it
        assert sorted(r.ran for r in results) == [False, True]  # type: ignore[union-attr]


def test_validate_config_reads_the_parameters(tmp_path):
    org = make_schedule_org(tmp_path / "org")
    apply_edits(org, (Replace(SCHEDULES, '"Filters": ["Subscriptions"], "Interval": "1m"',
                              '"Filters": ["Subscription"], "Interval": "1x"'),))
    result = load_project(org)
    assert [d.message for d in result.diagnostics if d.code == "E235"] == [
        "job schedule 'Monthly subscription run': \"Interval\" must be like 1m, 3m, 2w or 7d, not '1x'"]
    apply_edits(org, (Replace(SCHEDULES, '"Interval": "1x"', '"Interval": "1m"'),))
    result = load_project(org)
    found = [d for d in result.diagnostics if d.code == "E235"]
    assert [d.message for d in found] == ["job schedule 'Monthly subscription run': unknown filter 'Subscription'"]
    assert found[0].hint == "did you mean Subscriptions?" and found[0].location.file == SCHEDULES


def test_a_slot_lock_that_fails_gives_back_its_connection_and_its_lock(pg_schema_url, engine_for):
    """PostgreSQL: the scheduler ticks again and again; a tick whose slot
    lock cannot be taken (the server went away, an interrupt) must not keep
    a pooled connection (the pool would run dry after 15 such ticks), and a
    tick whose release fails must close its session rather than pool it
    (a pooled session still holding the slot's lock would keep every other
    scheduler off that slot for the life of this process)."""
    engine, other = engine_for(pg_schema_url), engine_for(pg_schema_url)
    with fault_after(engine, 0), pytest.raises(InjectedFault):
        with _slot_lock(engine, "Monthly subscription run", "2024-02"):
            pass  # pragma: no cover - the lock statement fails first
    assert engine.pool.checkedout() == 0  # without waiting for the garbage collector

    lock = _slot_lock(engine, "Monthly subscription run", "2024-02")
    assert lock.__enter__() is True and engine.pool.checkedout() == 1
    with _slot_lock(other, "Monthly subscription run", "2024-02") as mine:
        assert not mine  # held by the first
    with fault_after(engine, 0), pytest.raises(InjectedFault):
        lock.__exit__(None, None, None)  # the release fails
    assert engine.pool.checkedout() == 0
    with _slot_lock(other, "Monthly subscription run", "2024-02") as mine:
        assert mine  # no pooled session of ``engine`` holds it any more
