"""The invoice run over several worker processes and machines
(``invoice-run --workers N``, ``metabill worker --run``).

One run, one InvoiceRun record, one **work queue in the database**
(:mod:`engine.billing.workqueue`). The coordinating process (the command)
opens or joins the run record, creates a round of the run's queue with the
chunks of every filter, in Sequence order:

1. **pass 1**, ``parts`` chunks per filter: chunk *j* selects and evaluates
   the unbilled header records with ``id % parts == j``, writes the errors of
   those that cannot be billed, and hands the (group key, record id) pairs
   of the rest to the pass 2 chunk of their account (``account % parts``);
2. **pass 2**, ``parts`` chunks per filter, once every pass 1 chunk of the
   filter is done: chunk *b* bills the records of the accounts with
   ``account % parts == b`` in batches, as :meth:`FilterRun.bill` does. An
   invoice never spans accounts, and a final invoice finds its account's sub
   invoices in its own chunk's earlier batches, so the invoices are exactly
   those of a single-process run.

Recurring (subscription, usage) filters are one chunk each. The coordinator
starts ``N`` local worker processes under a
:class:`~engine.billing.supervisor.Supervisor`; each drains the queue
(:func:`drain`): reap, claim, run, finish, until nothing is left. Any other
process, on any machine that reaches the database and has the same org,
joins with :func:`join_run` (``metabill worker --run IR-000001``). The
coordinator waits for the queue to drain, showing done/total chunks, then
closes the run with its totals re-read from the database.

**A worker that dies** (SIGKILL, the OOM killer, a machine that goes away)
loses nothing: its chunk's heartbeat stops and the reaper of any other
worker re-queues it (at once when the dead process ran on the reaper's
host, else after the lease); at most ``max_attempts`` claims, then the chunk
is ``failed``, the later filters are not started and the run ends with
:class:`~engine.billing.workqueue.ChunkFailed` (exit code 4). What the dead
worker committed stays, its batch in flight was rolled back with its
connection, and the batches re-read their records, so the next owner bills
exactly the rest. (The fault point ``METABILL_FAILPOINT_KILL_WORKER``, see
:func:`_arm_failpoint`, makes a worker with half its chunk billed kill
itself with SIGKILL, once; the kill-a-worker tests use it.)

**Safety does not depend on the queue.** Two coordinators of the same run
(the same command on two machines) create a round each and meet on the same
accounts: on PostgreSQL a batch claims its accounts with advisory locks and
re-reads its records after the claim, and the ``_mb_claim`` primary key is
the backstop. On SQLite, workers take turns: every write transaction starts
with ``BEGIN IMMEDIATE``, so only pass 1 really runs in parallel there. Use
PostgreSQL to scale out.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from engine.domain.errors import EngineError
from engine.storage.context import Context
from engine.storage.schema import CLAIM

from .filterrun import FilterRun
from .plan import FilterPlan
from .recurring import recurring_runner
from .report import FilterReport, InvoiceSummary, Progress, RecordFailure, RunReport
from .run import RunRequest, check_request, filter_plans, open_run, owned_run, refresh_statistics, run_facts, \
    run_invoices
from .runrecord import find_run
from .session import RunSession
from .supervisor import Supervisor, TaskFailed
from .workqueue import (BILL, EVALUATE, FAILED, RECURRING, Chunk, ChunkFailed, ChunkResult, Clock, Heartbeat,
                        QueueNotOpen, QueueSettings, WorkQueue, close_round, create_round, open_round,
                        request_json, stages)

#: What a user does after a worker failed.
RERUN_HINT = "run the same command again: the batches committed so far stay, and it bills the rest"

#: The multiprocessing start method: a fresh interpreter per worker, no
#: inherited connections or locks (fork would copy the parent's pool).
START_METHOD = "spawn"
#: Chunks per pass and filter, per worker: more chunks would share the work
#: more evenly, but each pass 1 chunk selects the filter's records once more
#: and pass 2 chunks of few accounts write smaller batches: at 100k lines on
#: PostgreSQL, 2 per worker took 7-13 % longer than 1 (measured in the same
#: run, issue 19). A dead worker's chunk loses nothing either way (the next
#: owner bills only the rest).
CHUNKS_PER_WORKER = 1
#: The name under which the coordinator reports the queue's progress
#: (done and total chunks) to its ``progress`` callback.
QUEUE_PROGRESS = "chunks"


class WorkerError(EngineError, RuntimeError):
    """A worker process of the invoice run failed; the batches it committed
    stay, and running the same command again bills the rest."""

    code = "R207"


def run_invoices_parallel(url: str, org_dir: Path, ctx: Context, request: RunRequest, workers: int,
                          progress: Progress | None = None, *, settings: QueueSettings | None = None,
                          parts: int | None = None, local_workers: int | None = None, clock: Clock = time.time,
                          sleep: Callable[[float], None] = time.sleep) -> RunReport:
    """Run ``request`` with ``workers`` processes on the database at ``url``
    (see the module docstring). ``ctx`` must be the context of the org at
    ``org_dir``. One worker, or a dry run (one transaction that is rolled
    back), runs in this process as :func:`run_invoices` does.

    ``parts``: chunks per pass and filter (default ``workers ×``
    :data:`CHUNKS_PER_WORKER`); ``local_workers``: processes started here
    (default ``workers``; 0: only workers that join with :func:`join_run`
    drain the queue, this process waits, reaping). Raises ChunkFailed (R250)
    when a chunk failed, WorkerError (R207) when the local workers could not
    be kept running."""
    from engine.storage.db import open_engine

    settings = settings or QueueSettings()
    engine = open_engine(url)
    try:
        if workers <= 1 or request.dry_run:
            return run_invoices(engine, ctx, request, progress)
        plans = check_request(ctx, request)
        started = time.perf_counter()
        request = replace(request, today=request.today or date.today())  # one "today" for every worker
        refresh_statistics(engine, ctx, plans)
        session = RunSession(engine, False)
        with owned_run(session, ctx) as ownership:  # the coordinator owns the run for its workers
            report, run = open_run(session, ctx, request, plans)
            ownership.opened(run.run_id)
            specs = stages([(plan.name, recurring_runner(plan) is not None) for plan in plans],
                           parts or workers * CHUNKS_PER_WORKER)
            number = create_round(engine, run.run_id, request_json(request, run.invoice_date), ctx.config_hash,
                                  specs, clock)
            queue = WorkQueue(engine, run.run_id, number, settings=settings, clock=clock)
            try:
                local = workers if local_workers is None else local_workers
                if local > 0:
                    _drain_locally(queue, url, org_dir, ctx, local, len(specs), progress)
                _wait(queue, progress, sleep)
                _collect(queue, plans, report, ctx)
            finally:
                close_round(engine, run.run_id, number, clock)
            report.seconds = time.perf_counter() - started
            ownership.close(report)
        return report
    finally:
        engine.dispose()


def _drain_locally(queue: WorkQueue, url: str, org_dir: Path, ctx: Context, workers: int, chunks: int,
                   progress: Progress | None) -> None:
    """``workers`` spawned processes drain the queue; a process that dies is
    replaced (its chunk is reaped by the others or its replacement)."""
    init = (url, str(Path(org_dir).resolve()), ctx.config_hash, queue.run_id, queue.round, queue.settings)

    def tick() -> None:
        if progress is not None:
            figures = queue.progress()
            progress(QUEUE_PROGRESS, figures.done + figures.failed, figures.total)

    # Every death costs some chunk an attempt (or happens before a claim), so
    # this bound is reached only by workers that die without working.
    attempts = queue.settings.max_attempts * (chunks + workers)
    try:
        with Supervisor(workers, _init_worker, init, _task, START_METHOD, max_attempts=attempts) as pool:
            for _ in pool.run([("drain", index) for index in range(workers)], tick=tick, tick_seconds=0.5):
                pass
    except TaskFailed as error:
        raise WorkerError(f"the run's worker processes failed: {error}", hint=RERUN_HINT) from error
    tick()


def _wait(queue: WorkQueue, progress: Progress | None, sleep: Callable[[float], None]) -> None:
    """Until the queue is drained (by workers that joined from elsewhere, or
    after the local ones stopped with chunks still held by others): reap the
    chunks of dead owners, so that the live workers take them over."""
    while not queue.finished():
        queue.reap()
        if progress is not None:
            figures = queue.progress()
            progress(QUEUE_PROGRESS, figures.done + figures.failed, figures.total)
        sleep(queue.settings.poll_seconds)


def _collect(queue: WorkQueue, plans: list[FilterPlan], report: RunReport, ctx: Context) -> None:
    """The filters' reports from the chunks' figures; a filter whose chunk
    was run again is counted from the database (the dead owner's committed
    batches never reached the chunk's figures). Raises ChunkFailed when a
    chunk failed."""
    rows = queue.chunks()
    for plan in plans:
        mine = [row for row in rows if row["filter"] == plan.name]
        if not mine:
            continue
        filter_report = FilterReport(plan.name)
        for row in mine:
            if row["kind"] != BILL:
                filter_report.records_read += int(row["records"])
            filter_report.invoices += int(row["invoices"])
            filter_report.lines += int(row["lines"])
            detail = row["result"]
            filter_report.failures.extend(RecordFailure(*failure) for failure in detail.get("failures", ()))
            report.invoices.extend(_summary(item) for item in detail.get("invoices", ()))
        if any(row["attempts"] > 1 for row in mine) and recurring_runner(plan) is None:
            filter_report.invoices, filter_report.lines = _recount(queue.engine, ctx, plan, queue.run_id)
        report.filters.append(filter_report)
    failed = [row for row in rows if row["state"] == FAILED]
    if failed:
        first = failed[0]
        raise ChunkFailed(
            f"{len(failed)} chunk(s) of the run failed, the first of filter {first['filter']} "
            f"({first['kind']} {first['chunk'] + 1}/{first['parts']}): {first['error']}; "
            f"the filters after it were not run", hint=RERUN_HINT, partly_done=True)


def _recount(engine: sa.Engine, ctx: Context, plan: FilterPlan, run_id: int) -> tuple[int, int]:
    """The invoices and lines of the run that bill the filter's header
    records (by their ``_mb_claim`` rows), read from the database."""
    invoice, line = ctx.table("Invoice"), ctx.table("InvoiceLineItem")
    mine = (sa.select(CLAIM.c.invoice_id).distinct()
            .where(CLAIM.c.run_id == run_id, CLAIM.c.source_table == plan.header.obj.table_name,
                   CLAIM.c.suffix == plan.suffix)
            .where(CLAIM.c.invoice_id.in_(sa.select(invoice.c.id).where(invoice.c.invoicerun == run_id))))
    with engine.connect() as conn:
        invoices = conn.execute(sa.select(sa.func.count()).select_from(mine.subquery())).scalar_one()
        lines = conn.execute(sa.select(sa.func.count()).select_from(line).where(line.c.invoice.in_(mine))).scalar_one()
    return int(invoices), int(lines)


def _summary(item: list) -> InvoiceSummary:
    from decimal import Decimal

    id_, name, account, kind, lines, net, gross, currency = item
    return InvoiceSummary(id_, name, account, kind, lines, Decimal(net), Decimal(gross), currency)


# --- draining the queue (a local worker process, or metabill worker) ------------------------


@dataclass
class _Worker:
    """What a process needs to run the chunks of one round."""

    ctx: Context
    engine: sa.Engine
    request: RunRequest
    run: object  # RunFacts


def _worker_for(ctx: Context, engine: sa.Engine, round_row: dict) -> _Worker:
    stored = round_row["request"]

    def day(text: str | None) -> date | None:
        return date.fromisoformat(text) if text else None

    request = RunRequest(filters=tuple(stored["filters"]), period_start=day(stored["period_start"]),
                         period_end=day(stored["period_end"]), invoice_date=day(stored["invoice_date"]),
                         batch_size=int(stored["batch_size"]), today=day(stored["today"]))
    return _Worker(ctx, engine, request, run_facts(ctx, request, round_row["run_id"], day(stored["run_invoice_date"])))


def drain(worker: _Worker, queue: WorkQueue, sleep: Callable[[float], None] = time.sleep) -> int:
    """Claim and run chunks of ``queue`` until none is left to claim and none
    is running elsewhere (or the round was closed); the number run here. A
    chunk that raises is failed (its error is the answer, no retry)."""
    ran = 0
    while True:
        chunk = queue.claim()
        if chunk is None:
            if queue.finished() or not queue.is_open():
                return ran
            sleep(queue.settings.poll_seconds)
            continue
        try:
            result = _run_chunk(worker, queue, chunk)
        except Exception as error:  # noqa: BLE001 - recorded on the chunk; the run reports it
            queue.fail(chunk, f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}")
            continue
        queue.finish(chunk, result)
        ran += 1


def _run_chunk(worker: _Worker, queue: WorkQueue, chunk: Chunk) -> ChunkResult:
    ctx, request = worker.ctx, worker.request
    plan = filter_plans(ctx, (chunk.filter,))[0]
    session = RunSession(worker.engine, False)
    if chunk.kind == RECURRING:
        recurring = recurring_runner(plan)
        assert recurring is not None, f"filter {chunk.filter} is not recurring any more"
        runner = recurring(session, ctx, plan, worker.run, request.today, request.batch_size, None)  # type: ignore[arg-type]
        with Heartbeat(queue, chunk, lambda: (runner.report.records_read, runner.report.lines)):
            filter_report = runner.execute()
        return ChunkResult(filter_report.records_read, filter_report.invoices, filter_report.lines,
                           _detail(filter_report, runner.summaries))
    filter_run = FilterRun(session, ctx, plan, worker.run, request.today, request.batch_size, None)  # type: ignore[arg-type]
    if chunk.kind == EVALUATE:
        pairs: dict[int, list] = defaultdict(list)
        with Heartbeat(queue, chunk, lambda: (filter_run.report.records_read, 0)):
            with filter_run.evaluate((chunk.chunk, chunk.parts)) as keyed:
                for key, record_id in keyed:
                    pairs[key[1] % chunk.parts].append([list(key), record_id])
        report = filter_run.report
        return ChunkResult(report.records_read, 0, 0, _detail(report, ()), pairs)
    keyed = queue.pairs(chunk)
    billed = [0]

    def count(name: str, done: int, total: int) -> None:
        billed[0] = done

    filter_run.progress = count
    _arm_failpoint(filter_run)
    with Heartbeat(queue, chunk, lambda: (billed[0], filter_run.report.lines)):
        filter_run.bill(keyed)
    report = filter_run.report
    return ChunkResult(billed[0], report.invoices, report.lines, _detail(report, filter_run.summaries))


def _detail(report: FilterReport, summaries) -> dict:
    return {"failures": [[f.object_name, f.record_id, f.message] for f in report.failures],
            "invoices": [[s.id, s.name, s.account, s.type, s.lines, str(s.total_net), str(s.grand_total), s.currency]
                         for s in summaries]}


def join_run(url: str, ctx: Context, run: str | int, *, settings: QueueSettings | None = None,
             clock: Clock = time.time, sleep: Callable[[float], None] = time.sleep) -> int:
    """``metabill worker --run``: drain the open round of run ``run`` (name
    or id) in this process; the number of chunks run here. Raises
    RunNotFound (R210), QueueNotOpen (R251) when the run has no open round
    or it was started with another configuration."""
    from engine.storage.db import open_engine

    engine = open_engine(url, create=False)
    try:
        with engine.connect() as conn:
            run_id = find_run(conn, ctx, run)
            round_row = open_round(conn, run_id)
        if round_row is None:
            raise QueueNotOpen(f"invoice run {run} has no open work queue to join",
                               hint="start it with 'metabill invoice-run … --workers N', then start the workers")
        if round_row["config_hash"] != ctx.config_hash:
            raise QueueNotOpen(f"invoice run {run} was started with another configuration",
                               hint="run the worker with the org the run was started with")
        queue = WorkQueue(engine, run_id, round_row["round"], settings=settings, clock=clock)
        return drain(_worker_for(ctx, engine, round_row), queue, sleep)
    finally:
        engine.dispose()


_WORKER: dict = {}


def _init_worker(url: str, org_dir: str, config_hash: str, run_id: int, number: int,
                 settings: QueueSettings) -> None:
    """Per local worker process, once: load the org, open an engine. A
    failure is kept and raised by the task."""
    from engine.config.loader import load_org
    from engine.storage.db import open_engine

    # The parent validated the org with every check; the worker only needs
    # the same model, which the metadata's own checks already give.
    loaded = load_org(Path(org_dir))
    if not loaded.ok or loaded.model.config_hash != config_hash:
        _WORKER["error"] = f"the org at {org_dir} changed since the run started; start the run again"
        return
    ctx = Context(loaded.model)
    engine = open_engine(url)
    with engine.connect() as conn:
        round_row = open_round(conn, run_id, number)
    if round_row is None:
        _WORKER["error"] = "the run's work queue was closed"
        return
    _WORKER.update(worker=_worker_for(ctx, engine, round_row),
                   queue=WorkQueue(engine, run_id, number, settings=settings))


def _task(task: tuple) -> int:
    """The supervisor's task in a local worker: ("drain", index)."""
    if "error" in _WORKER:
        raise WorkerError(_WORKER["error"])
    return drain(_WORKER["worker"], _WORKER["queue"])


def _arm_failpoint(runner: FilterRun) -> None:
    """The fault point of the kill-a-worker tests (see the module docstring).
    With ``METABILL_FAILPOINT_KILL_WORKER`` set to a file path, the first
    worker whose pass 2 chunk is half done kills itself with SIGKILL, once
    (the marker file is created exclusively): after its batch committed, or,
    with ``METABILL_FAILPOINT_KILL_AT=transaction``, inside the next batch's
    transaction, its writes done and not committed. With
    ``METABILL_FAILPOINT_KILL_ALWAYS`` set, every worker that gets there dies
    (a chunk that can never be finished). Nothing when not set."""
    marker = os.environ.get("METABILL_FAILPOINT_KILL_WORKER")
    if not marker:
        return
    batches = [0]
    always = bool(os.environ.get("METABILL_FAILPOINT_KILL_ALWAYS"))

    def kill_once() -> None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            if not always:
                return
        os.kill(os.getpid(), signal.SIGKILL)

    if os.environ.get("METABILL_FAILPOINT_KILL_AT") == "transaction":
        write = runner.session.write

        def killing_write(work):
            def work_then_die(conn):
                result = work(conn)
                batches[0] += 1
                if batches[0] == 2:  # one batch committed, this one written and in flight
                    kill_once()
                return result
            return write(work_then_die)

        runner.session.write = killing_write  # type: ignore[method-assign]
        return
    previous = runner.progress

    def after_batch(name: str, done: int, total: int) -> None:
        if previous is not None:
            previous(name, done, total)
        if done < total:  # only in the middle of the chunk
            kill_once()

    runner.progress = after_batch


__all__ = ["run_invoices_parallel", "join_run", "drain", "WorkerError", "START_METHOD", "QUEUE_PROGRESS"]
