"""Scheduled jobs: JobSchedule setting records, their fire times, and runs.

A JobSchedule record names a job (a batch chain such as
``AssignBalancesChain``), a five-field cron expression and a time zone; the
expression is read in that zone's wall-clock time (croniter), so "0 2 * * *"
in Europe/Berlin runs at 02:00 Berlin time in winter and in summer.

Slots. A schedule's *slot* is the wall-clock minute it fires at, in its own
zone (``2024-10-27T02:30``). :func:`tick` (the scheduler's heartbeat, run
every few minutes by the system's cron or a timer) runs, for every active
schedule, the latest slot at or before "now" unless that slot was executed
already: the slot is recorded in ``_mb_job_slot`` in the same transaction as
the job's work, and the table's primary key (schedule, slot) refuses a
second record. So:

* in the repeated hour of a daylight-saving fall-back, 02:30 happens twice
  by the clock but is one slot: the job runs once;
* in the skipped hour of a spring-forward, a 02:30 schedule fires at the
  next existing time (03:00, croniter's behaviour), once;
* two schedulers ticking at the same moment cannot both run a slot;
* a slot missed while no tick ran is run once by the next tick; older
  missed slots are not replayed (the jobs catch up by themselves: the
  assignment job assigns whatever is free).

:func:`run_job` runs a job now, outside any schedule (``metabill jobs run``).
Each run is one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import croniter

from engine.domain.errors import Where
from engine.storage.context import Context
from engine.storage.db import ensure_table
from engine.storage.retry import run_in_transaction
from engine.storage.schema import JOB_SLOT

from .assignment import JOB_NAME as ASSIGN_BALANCES, assign_balances
from .errors import JobError


@dataclass(frozen=True)
class Schedule:
    """A JobSchedule setting record: which job, when (cron in a time zone)."""

    name: str
    job: str
    cron: str
    time_zone: str
    active: bool
    parameters: str = ""  # JSON, read by jobs that take parameters (InvoiceRun)

    @property
    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise JobError(f"schedule '{self.name}': unknown time zone {self.time_zone!r}",
                           where=Where(object="JobSchedule", record=self.name, field="TimeZone")) from None


def _assign(conn: sa.Connection, ctx: Context, today: date, run: str) -> str:
    report = assign_balances(conn, ctx, today, run=run)
    return (f"{report.assigned} balance(s) assigned, {report.split} split, {report.amount} in total, "
            f"{len(report.invoices)} invoice(s)")


#: The jobs this version can run: name -> function(conn, ctx, today, run id) -> summary.
JOBS: dict[str, Callable[[sa.Connection, Context, date, str], str]] = {ASSIGN_BALANCES: _assign}


def schedules(ctx: Context) -> list[Schedule]:
    """The org's job schedules, in the order of the setting records."""
    out = []
    for record in ctx.model.setting_records("JobSchedule"):
        out.append(Schedule(record.name, str(record.get("Job") or ""), str(record.get("Cron") or "").strip(),
                            str(record.get("TimeZone") or "UTC"), bool(record.get("Active", True)),
                            str(record.get("Parameters") or "")))
    return out


def slot_key(moment: datetime) -> str:
    """The wall-clock minute of a fire time in its own zone."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def fire_times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after`` (aware, in the
    schedule's zone), one per slot: the repeated wall-clock times of a
    fall-back are dropped, as they will not run."""
    zone = schedule.zone
    iterator = croniter(schedule.cron, after.astimezone(zone))
    out: list[datetime] = []
    seen: set[str] = set()
    while len(out) < count:
        moment = iterator.get_next(datetime)
        key = slot_key(moment)
        if key in seen:
            continue
        seen.add(key)
        out.append(moment)
    return out


def due_slot(schedule: Schedule, now: datetime) -> datetime | None:
    """The latest fire time at or before ``now`` (None when it never fired)."""
    local = now.astimezone(schedule.zone) + timedelta(seconds=1)
    try:
        return croniter(schedule.cron, local).get_prev(datetime)
    except Exception:  # noqa: BLE001 - croniter raises several kinds; validate-config reports them
        return None


def executed_slots(conn: sa.Connection) -> dict[str, str]:
    """schedule name -> the latest executed slot (empty without the table)."""
    if not sa.inspect(conn).has_table(JOB_SLOT.name):
        return {}
    rows = conn.execute(sa.select(JOB_SLOT.c.schedule, sa.func.max(JOB_SLOT.c.slot)).group_by(JOB_SLOT.c.schedule))
    return {r[0]: r[1] for r in rows}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class JobRun(NamedTuple):
    """A job run now: its run id and what it did."""

    run: str
    summary: str


def run_job(engine: sa.Engine, ctx: Context, job: str, *, today: date | None = None,
            now: datetime | None = None) -> JobRun:
    """Run ``job`` now in one transaction; returns (run id, summary)."""
    function = JOBS.get(job)
    if function is None:
        raise JobError(f"unknown job {job!r}; this version runs: {', '.join(sorted(JOBS))}")
    now = now or _now()
    run = f"{job}@{now:%Y%m%dT%H%M%S}"
    # Retried as a whole when PostgreSQL aborts it for a lost race (the job locks what it changes).
    summary = run_in_transaction(engine, lambda conn: function(conn, ctx, today or now.date(), run))
    return JobRun(run, summary)


@dataclass(frozen=True)
class TickResult:
    """What a tick did with one schedule: ran its slot, or why not."""

    schedule: str
    job: str
    slot: str | None
    ran: bool
    summary: str


def tick(engine: sa.Engine, ctx: Context, now: datetime | None = None, finalize=None) -> list[TickResult]:
    """Run every active schedule's due slot that has not run yet (see the
    module docstring). Each slot: one transaction holding its record and
    the job's work; a scheduled invoice run commits batch by batch instead
    (:mod:`engine.cash.scheduled_runs`, which ``finalize`` serves)."""
    from .scheduled_runs import JOB_NAME as INVOICE_RUN, tick_invoice_run

    now = now or _now()
    ensure_table(engine, JOB_SLOT)
    results = []
    for schedule in schedules(ctx):
        if not schedule.active:
            continue
        if schedule.job == INVOICE_RUN:
            results.append(tick_invoice_run(engine, ctx, schedule, now, finalize))
            continue
        function = JOBS.get(schedule.job)
        if function is None:
            results.append(TickResult(schedule.name, schedule.job, None, False, "job not available in this version"))
            continue
        slot = due_slot(schedule, now)
        if slot is None:
            results.append(TickResult(schedule.name, schedule.job, None, False, "no slot due"))
            continue
        key = slot_key(slot)
        run = f"{schedule.job}@{key}"[:64]

        def run_slot(conn: sa.Connection, schedule=schedule, key=key, run=run, slot=slot, function=function):
            taken = conn.execute(sa.select(JOB_SLOT.c.run).where(
                JOB_SLOT.c.schedule == schedule.name, JOB_SLOT.c.slot == key)).first()
            if taken is not None:
                return None
            conn.execute(sa.insert(JOB_SLOT).values(schedule=schedule.name, slot=key, job=schedule.job, run=run,
                                                    started_at=now.isoformat()))
            return function(conn, ctx, slot.date(), run)

        try:
            # A concurrent tick that claimed the slot first makes the insert fail (unique key): the
            # transaction is run again, finds the slot taken and does nothing.
            summary = run_in_transaction(engine, run_slot)
        except sa.exc.IntegrityError:
            summary = None
        if summary is None:
            results.append(TickResult(schedule.name, schedule.job, key, False, "slot already executed"))
            continue
        results.append(TickResult(schedule.name, schedule.job, key, True, summary))
    return results


def next_runs(ctx: Context, after: datetime, count: int) -> list[tuple[datetime, Schedule]]:
    """The next ``count`` fire times over all active schedules, in time order."""
    merged: list[tuple[datetime, Schedule]] = []
    for schedule in schedules(ctx):
        if not schedule.active:
            continue
        try:
            times = fire_times(schedule, after, count)
        except JobError:
            raise
        except Exception as error:  # noqa: BLE001
            raise JobError(f"schedule '{schedule.name}': {error}",
                           where=Where(object="JobSchedule", record=schedule.name, field="Cron")) from None
        merged.extend((moment, schedule) for moment in times)
    merged.sort(key=lambda item: (item[0].astimezone(timezone.utc), item[1].name))
    return merged[:count]
