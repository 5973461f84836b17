"""Job schedules: cron in a time zone, one run per slot (daylight-saving
changes included), and validate-config's schedule and write-off checks."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from engine.cash.jobs import JOBS, JobError, Schedule, due_slot, fire_times, next_runs, run_job, schedules, tick
from engine.project import load_project
from engine.storage.schema import JOB_SLOT

from booking.helpers import load_model, org_variant
from config.orgcopy import REPO_ROOT, Replace
from contexts import context

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTLY = Schedule("Nightly", "AssignBalancesChain", "30 2 * * *", "Europe/Berlin", True)
HALF_HOURLY = Schedule("Half-hourly", "AssignBalancesChain", "*/30 * * * *", "Europe/Berlin", True)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_the_sample_schedules_are_read():
    model = load_model(REPO_ROOT)
    by_name = {s.name: s for s in schedules(context(model))}
    assert by_name["Nightly balance assignment"] == Schedule(
        "Nightly balance assignment", "AssignBalancesChain", "0 2 * * *", "Europe/Berlin", True)
    assert "AssignBalancesChain" in JOBS


def test_fire_times_follow_the_wall_clock_of_the_time_zone():
    summer = fire_times(NIGHTLY, utc("2024-07-01T00:00"), 1)[0]
    winter = fire_times(NIGHTLY, utc("2024-12-01T00:00"), 1)[0]
    assert (summer.isoformat(), winter.isoformat()) == ("2024-07-01T02:30:00+02:00", "2024-12-01T02:30:00+01:00")


def test_the_repeated_hour_of_a_fall_back_fires_once():
    # 2024-10-27: 02:00-03:00 Berlin happens twice (CEST, then CET).
    times = [t.isoformat() for t in fire_times(NIGHTLY, utc("2024-10-26T12:00"), 3)]
    assert times == ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00", "2024-10-29T02:30:00+01:00"]
    half = [t.strftime("%H:%M%z") for t in fire_times(HALF_HOURLY, utc("2024-10-26T23:10"), 6)]
    assert half == ["01:30+0200", "02:00+0200", "02:30+0200", "03:00+0100", "03:30+0100", "04:00+0100"]


def test_the_skipped_hour_of_a_spring_forward_fires_once_at_the_next_time():
    times = [t.isoformat() for t in fire_times(NIGHTLY, utc("2024-03-30T12:00"), 2)]
    assert times == ["2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00"]


def test_due_slot_is_the_latest_fire_time():
    assert due_slot(NIGHTLY, utc("2024-12-01T01:29")).isoformat() == "2024-11-30T02:30:00+01:00"
    assert due_slot(NIGHTLY, utc("2024-12-01T01:30")).isoformat() == "2024-12-01T02:30:00+01:00"


def test_next_runs_over_all_schedules(tmp_path):
    org = org_variant(tmp_path / "org", Replace("custom_settings/JobSchedule.yaml",
                                                '    Cron: "30 2 * * *"\n    TimeZone: Europe/Berlin',
                                                '    Cron: "30 2 * * *"\n    TimeZone: UTC'))
    model = load_model(org)
    runs = [(m.isoformat(), s.name) for m, s in next_runs(context(model), utc("2024-01-10T00:00"), 3)]
    assert runs == [
        ("2024-01-10T02:00:00+01:00", "Nightly balance assignment"),   # 01:00 UTC
        ("2024-01-10T02:30:00+00:00", "Daily payment booking data"),   # 02:30 UTC
        ("2024-01-11T02:00:00+01:00", "Nightly balance assignment"),
    ]


def test_a_slot_runs_once_across_the_fall_back(engine, tmp_path):
    """A tick in each of the two 02:31 of 2024-10-27 (CEST and CET): the
    wall-clock slot 02:30 runs once; the next day's slot runs again."""
    org = org_variant(tmp_path / "org", Replace("custom_settings/JobSchedule.yaml", 'Cron: "0 2 * * *"', 'Cron: "30 2 * * *"'))
    model = load_model(org)
    from engine.storage.migrate import apply_migration

    apply_migration(engine, model)
    first = {r.schedule: r for r in tick(engine, context(model), utc("2024-10-27T00:31"))}   # 02:31 CEST
    second = {r.schedule: r for r in tick(engine, context(model), utc("2024-10-27T01:31"))}  # 02:31 CET
    third = {r.schedule: r for r in tick(engine, context(model), utc("2024-10-28T01:31"))}   # next day 02:31 CET
    name = "Nightly balance assignment"
    assert (first[name].slot, first[name].ran) == ("2024-10-27T02:30", True)
    assert (second[name].slot, second[name].ran, second[name].summary) == (
        "2024-10-27T02:30", False, "slot already executed")
    assert (third[name].slot, third[name].ran) == ("2024-10-28T02:30", True)
    assert first["Daily payment booking data"].ran is False  # not a job of this version
    with engine.connect() as conn:
        slots = conn.execute(sa.select(JOB_SLOT.c.schedule, JOB_SLOT.c.slot).order_by(JOB_SLOT.c.slot)).all()
    assert [tuple(s) for s in slots] == [(name, "2024-10-27T02:30"), (name, "2024-10-28T02:30")]


def test_a_missed_slot_runs_once_at_the_next_tick(engine):
    model = load_model(REPO_ROOT)
    from engine.storage.migrate import apply_migration

    apply_migration(engine, model)
    name = "Nightly balance assignment"
    results = [{r.schedule: r for r in tick(engine, context(model), utc(t))}[name] for t in
               ("2024-12-05T09:00", "2024-12-05T10:00", "2024-12-06T00:59", "2024-12-06T01:00")]
    assert [(r.slot, r.ran) for r in results] == [
        ("2024-12-05T02:00", True), ("2024-12-05T02:00", False), ("2024-12-05T02:00", False),
        ("2024-12-06T02:00", True)]


def test_run_job_refuses_unknown_jobs(engine):
    with pytest.raises(JobError, match="unknown job 'Nope'"):
        run_job(engine, context(load_model(REPO_ROOT)), "Nope")


# --- validate-config -----------------------------------------------------------------------


def codes(org) -> list[tuple[str, str]]:
    return [(d.code, d.message) for d in load_project(org).diagnostics if d.code.startswith("E13")]


@pytest.mark.parametrize("cron, code, text", [
    ("0 0 30 2 *", "E132", "never fires"),
    ("0 0 31 4 *", "E132", "never fires"),
    ("61 * * * *", "E131", "not a valid five-field cron expression"),
    ("0 2 * *", "E131", "not a valid five-field cron expression"),
    ("0 0 0 2 * *", "E131", "not a valid five-field cron expression"),
])
def test_validate_config_reports_bad_cron_expressions(tmp_path, cron, code, text):
    org = org_variant(tmp_path / "org", Replace("custom_settings/JobSchedule.yaml", 'Cron: "0 2 * * *"', f'Cron: "{cron}"'))
    found = codes(org)
    assert len(found) == 1 and found[0][0] == code and text in found[0][1], found
    assert "Nightly balance assignment" in found[0][1]


def test_validate_config_accepts_a_rare_but_real_date(tmp_path):
    org = org_variant(tmp_path / "org", Replace("custom_settings/JobSchedule.yaml", 'Cron: "0 2 * * *"', 'Cron: "0 0 29 2 *"'))
    assert codes(org) == []


def test_validate_config_reports_an_unknown_time_zone(tmp_path):
    org = org_variant(tmp_path / "org", Replace("custom_settings/JobSchedule.yaml", "    TimeZone: Europe/Berlin\n    Active: true\n  - Name: Daily",
                                                "    TimeZone: Europe/Berlim\n    Active: true\n  - Name: Daily"))
    found = codes(org)
    assert [c for c, _ in found] == ["E133"] and "Europe/Berlim" in found[0][1]


@pytest.mark.parametrize("old, new, text", [
    ("  WriteOffCurrency: EUR\n", "", "WriteOffCapAmount is an absolute amount and needs WriteOffCurrency"),
    ('WriteOffThresholdPercent: "1.00"', 'WriteOffThresholdPercent: "-1.00"', "WriteOffThresholdPercent is negative"),
    ('WriteOffThresholdPercent: "1.00"', 'WriteOffThresholdPercent: "101"', "WriteOffThresholdPercent is over 100"),
])
def test_validate_config_reports_unworkable_write_off_settings(tmp_path, old, new, text):
    org = org_variant(tmp_path / "org", Replace("custom_settings/GlobalSettings.yaml", old, new))
    found = codes(org)
    assert found and all(c == "E130" for c, _ in found) and any(text in m for _, m in found), found


def test_validate_config_keeps_the_reserved_write_off_reasons(tmp_path):
    """Removing a reason the automatic write-off writes is refused (E081,
    the reserved-picklist check of the product contract)."""
    org = org_variant(tmp_path / "org", Replace("metadata/objects/Balance.yaml",
                                                "values: [Missing amount below threshold, Invoice below threshold, ",
                                                "values: [Missing amount below threshold, "))
    result = load_project(org)
    assert not result.ok
    assert any(d.code == "E081" and "'Invoice below threshold'" in d.message for d in result.diagnostics)
