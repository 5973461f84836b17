"""Scheduled invoice runs: a JobSchedule of job ``InvoiceRun`` at its slots.

An invoice run is too large for the one transaction the other jobs run in
(:mod:`engine.cash.jobs`): it commits batch by batch. So a slot is run in
three steps, and each slot still bills exactly once:

1. the slot is recorded in ``_mb_job_slot`` as pending (the primary key
   (schedule, slot) lets one tick record it);
2. the invoice run of the slot's period and filters
   (:func:`engine.billing.scheduled.scheduled_request`) runs, and its drafts
   are finalized when the schedule says so;
3. the slot is marked done with the run's name.

A tick finding the slot done does nothing. A tick finding it pending (the
scheduler died mid-slot, or was restarted) runs it again: the run of the same
period and filters is joined and bills only what is left (its claims refuse
anything billed twice), so the slot completes once. On PostgreSQL a slot
being run holds an advisory lock for the whole run: a second scheduler
ticking meanwhile skips it ("running elsewhere") instead of joining the work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import sqlalchemy as sa

from engine.billing.run import run_invoices
from engine.billing.scheduled import ParameterError, parse_parameters, scheduled_request
from engine.domain.errors import EngineError, Where
from engine.storage.context import Context
from engine.storage.db import transaction
from engine.storage.schema import JOB_SLOT

from .errors import JobError
from .jobs import Schedule, TickResult, due_slot, slot_key

JOB_NAME = "InvoiceRun"
PENDING = "pending"
#: Finalizes the drafts of a run (``engine.project.finalize_drafts``, given by the caller): the cash layer
#: cannot compose the finalization chain itself.
Finalizer = Callable[..., object]


def tick_invoice_run(engine: sa.Engine, ctx: Context, schedule: Schedule, now: datetime,
                     finalize: Finalizer | None = None) -> TickResult:
    """Run the schedule's due slot unless it is done (see the module docstring)."""
    try:
        spec = parse_parameters(schedule.parameters)
    except ParameterError as error:
        raise JobError(f"schedule '{schedule.name}': {error}",
                       where=Where(object="JobSchedule", record=schedule.name, field="Parameters")) from None
    slot = due_slot(schedule, now)
    if slot is None:
        return TickResult(schedule.name, schedule.job, None, False, "no slot due")
    key = slot_key(slot)
    with _slot_lock(engine, schedule.name, key) as mine:
        if not mine:
            return TickResult(schedule.name, schedule.job, key, False, "running elsewhere")
        state = _claim_slot(engine, schedule, key, now)
        if state != PENDING:
            return TickResult(schedule.name, schedule.job, key, False, f"slot already executed ({state})")
        request = scheduled_request(spec, slot.date())
        report = run_invoices(engine, ctx, request)
        summary = (f"{report.run_name} {request.period_start}..{request.period_end}: "
                   f"{report.invoice_count} invoice(s), {report.line_count} line(s), "
                   f"{report.failure_count} record error(s)")
        if spec.finalize and finalize is not None:
            try:
                finalized = finalize(engine, ctx, run=report.run_id, today=request.invoice_date or slot.date())
                summary += f", {len(finalized.finalized)} finalized"  # type: ignore[attr-defined]
                if finalized.failures:  # type: ignore[attr-defined]
                    summary += f", {len(finalized.failures)} not finalized"  # type: ignore[attr-defined]
            except EngineError as error:  # nothing to finalize (R003) is a run that billed nothing
                if error.code != "R003":
                    raise
        with transaction(engine) as conn:
            conn.execute(sa.update(JOB_SLOT).where(JOB_SLOT.c.schedule == schedule.name, JOB_SLOT.c.slot == key)
                         .values(run=report.run_name[:64]))
        return TickResult(schedule.name, schedule.job, key, True, summary)


def _claim_slot(engine: sa.Engine, schedule: Schedule, key: str, now: datetime) -> str:
    """Record the slot as pending; returns its state (pending, or the run that did it)."""
    for _ in range(2):
        try:
            with transaction(engine) as conn:
                row = conn.execute(sa.select(JOB_SLOT.c.run).where(JOB_SLOT.c.schedule == schedule.name,
                                                                   JOB_SLOT.c.slot == key)).first()
                if row is not None:
                    return str(row[0])
                conn.execute(sa.insert(JOB_SLOT).values(schedule=schedule.name, slot=key, job=schedule.job,
                                                        run=PENDING, started_at=now.isoformat()))
                return PENDING
        except sa.exc.IntegrityError:
            continue  # another tick recorded it first: read what it recorded
    raise JobError(f"schedule '{schedule.name}': slot {key} could not be recorded")


class _slot_lock:  # noqa: N801 - used as a context manager
    """PostgreSQL: a session advisory lock on (schedule, slot) for the whole
    slot, taken without waiting; SQLite: always granted (its writers take turns)."""

    def __init__(self, engine: sa.Engine, schedule: str, key: str):
        self.engine = engine
        self.name = f"metabill:slot:{schedule}|{key}"
        self.conn: sa.Connection | None = None

    def __enter__(self) -> bool:
        if self.engine.dialect.name != "postgresql":
            return True
        conn = self.engine.connect()
        try:
            got = conn.execute(sa.select(sa.func.pg_try_advisory_lock(
                sa.func.hashtext(sa.func.concat(sa.func.current_schema(), self.name))))).scalar_one()
            conn.commit()
        except BaseException:
            # ``__exit__`` does not run when ``__enter__`` fails: the scheduler,
            # which ticks again and again, would keep one pooled connection
            # per failed tick until the pool runs dry. Discarded, not pooled:
            # the lock may have been granted before the failure, and only
            # closing the session surely releases it.
            conn.invalidate()
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self.conn = conn
        return True

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(
                    sa.func.hashtext(sa.func.concat(sa.func.current_schema(), self.name)))))
                conn.commit()
            except BaseException:
                conn.invalidate()  # a pooled session still holding the slot's lock would block every scheduler
                raise
            finally:
                conn.close()
