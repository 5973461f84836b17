"""The invoice run over several worker processes (``invoice-run --workers N``).

One run, one InvoiceRun record, N processes that share the database. The
coordinating process (the command) opens or joins the run record, then for
each filter, in Sequence order:

1. **pass 1 in parallel**: worker *i* selects and evaluates the unbilled
   header records with ``id % N == i`` and writes the errors of those that
   cannot be billed; it returns ``(group key, record id)`` of the rest;
2. **pass 2 in parallel, split by account**: the coordinator hands worker *i*
   every record whose account id ``% N == i``. An invoice never spans
   accounts (the account is part of the group key), and a final invoice
   finds its account's sub invoices in its own worker's earlier batches, so
   the invoices are exactly those of a single-process run. Each worker
   writes its batches as :meth:`FilterRun.bill` does, one transaction each.

Finally the coordinator closes the run record with the totals.

**A worker that dies** (SIGKILL, the OOM killer) loses nothing: the
processes are run by a :class:`~engine.billing.supervisor.Supervisor`,
which hands each worker one task at a time and gives the task of a worker
that died to a new one (at most ``MAX_ATTEMPTS`` starts per task). Tasks
are idempotent: what the dead worker committed stays, its batch in flight
was rolled back with its connection, and the batches re-read their
records, so the new worker bills exactly the rest and the run's result is
the one a single process gives. (The fault point
``METABILL_FAILPOINT_KILL_WORKER``, see :func:`_arm_failpoint`, makes a
worker with half its chunk billed kill itself with SIGKILL, once, between
batches or inside a batch's transaction; the kill-a-worker test uses it.)

Workers are started with the ``spawn`` context: each loads the org from its
directory (and checks that it is the configuration the coordinator loaded),
opens its own engine, and reuses both for every task.

**Safety does not depend on the split.** The same command started on several
machines splits the same way, and its workers meet the other machine's on the
same accounts: on PostgreSQL a batch claims its accounts with advisory locks
(see :meth:`FilterRun.claim_accounts`) and re-reads its records after the
claim, the ``_mb_claim`` primary key is the backstop, and both commands join
one run record (:func:`~engine.billing.runrecord.open_run_record` locks per
period and filters). On SQLite, workers take
turns: every write transaction starts with ``BEGIN IMMEDIATE``, so only
pass 1 (reading and evaluating) really runs in parallel there; the batches
are written one at a time. Use PostgreSQL to scale out.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Sequence

import sqlalchemy as sa

from engine.domain.errors import EngineError
from engine.storage.context import Context

from .build import RunFacts
from .filterrun import FilterRun
from .report import FilterReport, InvoiceSummary, Progress, RecordFailure, RunReport
from .run import (
    RunRequest,
    check_request,
    filter_plans,
    open_run,
    owned_run,
    refresh_statistics,
    run_facts,
    run_invoices,
)
from .session import RunSession
from .supervisor import Supervisor, TaskFailed
from .recurring import recurring_runner

#: What a user does after a worker failed.
RERUN_HINT = "run the same command again: the batches committed so far stay, and it bills the rest"

#: The multiprocessing start method: a fresh interpreter per worker, no
#: inherited connections or locks (fork would copy the parent's pool).
START_METHOD = "spawn"


class WorkerError(EngineError, RuntimeError):
    """A worker process of the invoice run failed; the batches it committed
    stay, and running the same command again bills the rest."""

    code = "R207"


@dataclass
class _Pass1:
    keyed: list[tuple[tuple, int]]
    records_read: int
    failures: list[RecordFailure]


@dataclass
class _Pass2:
    invoices: int = 0
    lines: int = 0
    failures: list[RecordFailure] = field(default_factory=list)
    summaries: list[InvoiceSummary] = field(default_factory=list)


def run_invoices_parallel(url: str, org_dir: Path, ctx: Context, request: RunRequest, workers: int,
                          progress: Progress | None = None) -> RunReport:
    """Run ``request`` with ``workers`` processes on the database at ``url``
    (see the module docstring). ``ctx`` must be the context of the org at
    ``org_dir``. One worker, or a dry run (one transaction that is rolled
    back), runs in this process as :func:`run_invoices` does."""
    from engine.storage.db import open_engine

    engine = open_engine(url)
    try:
        if workers <= 1 or request.dry_run:
            return run_invoices(engine, ctx, request, progress)
        plans = check_request(ctx, request)
        started = time.perf_counter()
        today = request.today or date.today()
        request = replace(request, today=today)  # one "today" for every worker
        refresh_statistics(engine, ctx, plans)
        session = RunSession(engine, False)
        with owned_run(session, ctx) as ownership:  # the coordinator owns the run for its workers
            report, run = open_run(session, ctx, request, plans)
            ownership.opened(run.run_id)
            init = (url, str(Path(org_dir).resolve()), ctx.model.config_hash, request, run.run_id, run.invoice_date)
            with Supervisor(workers, _init_worker, init, _task, START_METHOD) as pool:
                for plan in plans:
                    recurring = recurring_runner(plan)
                    if recurring is not None:  # billed here, in batches locked per account
                        runner = recurring(session, ctx, plan, run, today, request.batch_size, progress)  # type: ignore[arg-type]
                        report.filters.append(runner.execute())
                        report.invoices.extend(runner.summaries)
                        continue
                    before = _last_invoice_id(engine, ctx), len(pool.deaths)
                    filter_report = _run_filter(pool, plan.name, workers, report, progress)
                    if len(pool.deaths) > before[1]:
                        _recount(engine, ctx, run.run_id, before[0], filter_report)
                    report.filters.append(filter_report)
            report.seconds = time.perf_counter() - started
            ownership.close(report)
        return report
    finally:
        engine.dispose()


def _run_filter(pool: Supervisor, name: str, workers: int, report: RunReport,
                progress: Progress | None) -> FilterReport:
    filter_report = FilterReport(name)
    keyed: list[tuple[tuple, int]] = []
    try:
        parts = [part for _, part in pool.run([("evaluate", name, index, workers) for index in range(workers)])]
    except TaskFailed as error:
        raise WorkerError(f"a worker of filter {name} failed: {error}",
                          hint=RERUN_HINT) from error
    for part in parts:
        keyed.extend(part.keyed)
        filter_report.records_read += part.records_read
        filter_report.failures.extend(part.failures)
    keyed.sort()
    shards: list[list[tuple[tuple, int]]] = [[] for _ in range(workers)]
    for item in keyed:
        shards[item[0][1] % workers].append(item)
    done = 0
    try:
        for _, (shard, outcome) in pool.run([("bill", name, shard) for shard in shards if shard]):
            filter_report.invoices += outcome.invoices
            filter_report.lines += outcome.lines
            filter_report.failures.extend(outcome.failures)
            report.invoices.extend(outcome.summaries)
            done += shard
            if progress:
                progress(name, done, len(keyed))
    except TaskFailed as error:
        raise WorkerError(f"a worker of filter {name} failed: {error}",
                          hint=RERUN_HINT) from error
    return filter_report


def _last_invoice_id(engine, ctx: Context) -> int:
    invoice = ctx.table("Invoice")
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.coalesce(sa.func.max(invoice.c.id), 0))).scalar_one()


def _recount(engine, ctx: Context, run_id: int, last_id: int, filter_report: FilterReport) -> None:
    """After a worker died during a filter: its invoices and lines as
    committed, read from the database. The dead worker's committed batches
    never reached the coordinator's totals; the filter's invoices are those
    of the run created after the filter started (ids only grow, and the
    filters of a run follow each other). (The invoice listing of the report
    still lacks the dead worker's invoices.)"""
    invoice, line = ctx.table("Invoice"), ctx.table("InvoiceLineItem")
    mine = sa.select(invoice.c.id).where(invoice.c[ctx.obj("Invoice").field("InvoiceRun").column_name] == run_id,
                                         invoice.c.id > last_id)
    with engine.connect() as conn:
        filter_report.invoices = conn.execute(sa.select(sa.func.count()).select_from(mine.subquery())).scalar_one()
        filter_report.lines = conn.execute(
            sa.select(sa.func.count()).select_from(line).where(line.c.invoice.in_(mine))).scalar_one()


# --- inside a worker process -----------------------------------------------------------

_WORKER: dict = {}


def _init_worker(url: str, org_dir: str, config_hash: str, request: RunRequest, run_id: int,
                 invoice_date: date | None) -> None:
    """Per worker process, once: load the org, open an engine. A failure is
    kept and raised by the first task: an initializer that raises makes the
    pool start replacement workers forever."""
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
    _WORKER.update(
        ctx=ctx, engine=engine, request=request,
        run=run_facts(ctx, request, run_id, invoice_date),
    )


def _runner(name: str) -> FilterRun:
    if "error" in _WORKER:
        raise WorkerError(_WORKER["error"])
    ctx: Context = _WORKER["ctx"]
    request: RunRequest = _WORKER["request"]
    run: RunFacts = _WORKER["run"]
    plan = filter_plans(ctx, (name,))[0]
    session = RunSession(_WORKER["engine"], False)
    return FilterRun(session, ctx, plan, run, request.today, request.batch_size, None)


def _task(task: tuple) -> object:
    """A task of the supervisor: ("evaluate", filter, index, count) or ("bill", filter, keyed)."""
    if task[0] == "evaluate":
        return _evaluate(task[1:])
    return _bill(task[1:])


def _evaluate(task: tuple[str, int, int]) -> _Pass1:
    name, index, count = task
    runner = _runner(name)
    with runner.evaluate((index, count)) as keyed:
        return _Pass1(list(keyed), runner.report.records_read, list(runner.report.failures))


def _bill(task: tuple[str, Sequence[tuple[tuple, int]]]) -> tuple[int, _Pass2]:
    name, keyed = task
    runner = _runner(name)
    _arm_failpoint(runner)
    runner.bill(keyed)
    report = runner.report
    return len(keyed), _Pass2(report.invoices, report.lines, list(report.failures), list(runner.summaries))


def _arm_failpoint(runner: FilterRun) -> None:
    """The fault point of the kill-a-worker test (see the module docstring).
    With ``METABILL_FAILPOINT_KILL_WORKER`` set to a file path, the first
    worker whose chunk is half done kills itself with SIGKILL, once (the
    marker file is created exclusively): after its batch committed, or, with
    ``METABILL_FAILPOINT_KILL_AT=transaction``, inside the next batch's
    transaction, its writes done and not committed. Nothing when not set."""
    marker = os.environ.get("METABILL_FAILPOINT_KILL_WORKER")
    if not marker:
        return
    batches = [0]

    def kill_once() -> None:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
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

    def after_batch(name: str, done: int, total: int) -> None:
        if done < total:  # only in the middle of the chunk
            kill_once()

    runner.progress = after_batch


__all__ = ["run_invoices_parallel", "WorkerError", "START_METHOD"]
