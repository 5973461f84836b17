"""A worker of a parallel invoice run killed with SIGKILL in the middle of
its chunk loses nothing (issue 19): the run's work queue
(``engine.billing.workqueue``) re-queues the chunk and another worker
finishes it.

Real processes. The fault point ``METABILL_FAILPOINT_KILL_WORKER`` makes the
first worker with a pass 2 chunk half billed kill itself with SIGKILL, once:
between two batches, or inside a batch's transaction. The run must end
Completed with exactly the invoices, lines, totals and billing claims a
single process makes of the same data. A chunk that kills every worker that
takes it ends ``failed`` after the bounded attempts, and the run says so
(exit code 4) instead of hanging.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.billing import supervisor as supervisor_module

from .support import ACCOUNTS, World, check_invariants
from contexts import context


def _usages(world: World) -> None:
    for n in range(8):
        for account in ACCOUNTS:
            world.add_usage(account, Decimal(1 + n % 3), Decimal("10.50") + n, f"{account} u{n}")


def _invoices(world: World) -> list[tuple]:
    """The run's invoices without ids or names: account, totals, and each
    line's title and amounts, sorted."""
    accounts = {a["id"]: a["accountnumber"] for a in world.rows("Account")}
    lines: dict[int, list[tuple]] = {}
    for line in world.rows("InvoiceLineItem"):
        lines.setdefault(line["invoice"], []).append(
            (line["title"], line["quantity"], line["unitprice"], line["postotalnet"], line["postotalgross"]))
    return sorted(
        (accounts[i["account"]], i["status"], i["totalnet"], i["grandtotal"], tuple(sorted(lines[i["id"]])))
        for i in world.rows("Invoice")
    )


def _claims(world: World) -> list[tuple]:
    """The billing claims as (source record's title, account of its invoice)."""
    from engine.storage.schema import CLAIM

    accounts = {a["id"]: a["accountnumber"] for a in world.rows("Account")}
    invoice_account = {i["id"]: accounts[i["account"]] for i in world.rows("Invoice")}
    titles = {u["id"]: u["on_title__c"] for u in world.rows("Usage__c")}
    with world.engine.connect() as conn:
        rows = conn.execute(sa.select(CLAIM.c.source_id, CLAIM.c.invoice_id)).all()
    return sorted((str(titles[source]), invoice_account[invoice]) for source, invoice in rows)


def _request(batch_size: int):
    from datetime import date

    from engine.billing.run import RunRequest

    return RunRequest(filters=("Usage",), period_start=date(2024, 1, 1), period_end=date(2024, 12, 31),
                      batch_size=batch_size, today=date(2024, 12, 31))


def _single_run(world: World, reliability_model) -> tuple[list, list, object]:
    """The same data billed by one process: what every parallel run must equal."""
    from engine.billing.run import run_invoices

    _usages(world)
    single = run_invoices(world.engine, context(reliability_model), _request(batch_size=2))
    assert single.invoice_count == len(ACCOUNTS) and single.failure_count == 0
    expected = (_invoices(world), _claims(world), single)
    world.reset()
    _usages(world)
    return expected


def _chunks(world: World) -> list[dict]:
    from engine.storage.schema import WORK_CHUNK

    with world.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(WORK_CHUNK).order_by(WORK_CHUNK.c.stage)).mappings()]


@pytest.mark.parametrize("kill_at", ["commit", "transaction"])
def test_a_local_worker_killed_mid_chunk_loses_nothing(world, reliability_org, reliability_model, tmp_path,
                                                       monkeypatch, kill_at):
    """``invoice-run --workers 2``: one of its worker processes dies with
    its pass 2 chunk half billed (``commit``: right after a committed batch;
    ``transaction``: inside the next batch's transaction, its invoices
    written and not committed). The chunk is re-queued and billed by a
    worker; the result is a single process's."""
    from engine.billing.workers import run_invoices_parallel
    from engine.billing.workqueue import QueueSettings

    expected_invoices, expected_claims, single = _single_run(world, reliability_model)
    marker = tmp_path / "killed"
    monkeypatch.setenv("METABILL_FAILPOINT_KILL_WORKER", str(marker))
    monkeypatch.setenv("METABILL_FAILPOINT_KILL_AT", kill_at)
    deaths: list = []
    original_close = supervisor_module.Supervisor.close

    def close(self):  # keep what the supervisor saw
        deaths.extend(self.deaths)
        original_close(self)

    monkeypatch.setattr(supervisor_module.Supervisor, "close", close)
    # parts=1, batch_size=1: one pass 2 chunk holds every account, each a
    # batch of its own, so the worker dies with one account billed.
    report = run_invoices_parallel(world.url, Path(reliability_org), context(reliability_model), _request(1), 2,
                                   parts=1, settings=QueueSettings(lease_seconds=600, poll_seconds=0.05))

    assert marker.exists(), "the fault point never fired: no worker was killed"
    assert len(deaths) == 1 and deaths[0][1] == -signal.SIGKILL  # one worker, killed by the kernel
    assert _invoices(world) == expected_invoices
    assert _claims(world) == expected_claims
    assert (report.invoice_count, report.line_count) == (single.invoice_count, single.line_count)
    check_invariants(world)
    runs = world.rows("InvoiceRun")
    assert len(runs) == 1 and runs[0]["status"] == "Completed" and runs[0]["numinvoices"] == len(ACCOUNTS)
    bill = [c for c in _chunks(world) if c["kind"] == "bill"]
    assert [(c["state"], c["attempts"]) for c in bill] == [("done", 2)]  # reaped once, finished by another


def _start(target, args):
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, results))
    process.start()
    return process, results


def test_a_joined_worker_killed_mid_chunk_is_reaped_and_another_finishes(world, reliability_org, reliability_model,
                                                                         tmp_path):
    """Workers on "other machines": the coordinator starts no worker of its
    own (``local_workers=0``) and waits; a worker joined with ``metabill
    worker --run`` (the library call, a real process) dies with SIGKILL
    half-way through its pass 2 chunk; a second worker, whose clock is an
    hour ahead (the first one's heartbeat is older than the lease), reaps the
    chunk and finishes it. Same result as a single process."""
    from engine.billing.workers import run_invoices_parallel
    from engine.billing.workqueue import QueueSettings, open_round

    from . import queue_procs

    expected_invoices, expected_claims, single = _single_run(world, reliability_model)
    outcome: dict = {}

    def coordinate() -> None:
        try:
            outcome["report"] = run_invoices_parallel(
                world.url, Path(reliability_org), context(reliability_model), _request(1), 2, parts=1,
                local_workers=0,
                # The coordinator reaps by the lease only (an hour): the second
                # worker's clock decides when the dead worker's chunk is reaped.
                settings=QueueSettings(lease_seconds=3600, poll_seconds=0.05, check_local_processes=False))
        except BaseException as error:  # noqa: BLE001 - checked below
            outcome["error"] = error

    coordinator = threading.Thread(target=coordinate)
    coordinator.start()
    run_name = _wait_for_round(world, open_round)
    marker = str(tmp_path / "killed")
    first, first_results = _start(queue_procs.worker_proc, (str(reliability_org), world.url, run_name, marker, 0.0))
    first.join(timeout=300)
    assert first.exitcode == -signal.SIGKILL, "the joined worker was not killed by the fault point"
    assert os.path.exists(marker)
    held = [c for c in _chunks(world) if c["state"] == "claimed"]
    assert [(c["kind"], c["owner_pid"]) for c in held] == [("bill", first.pid)]  # its chunk, still claimed

    second, second_results = _start(queue_procs.worker_proc,
                                    (str(reliability_org), world.url, run_name, None, 7200.0))
    kind, value = second_results.get(timeout=300)
    second.join(timeout=60)
    assert kind == "ran", value
    coordinator.join(timeout=300)
    assert not coordinator.is_alive() and "error" not in outcome, outcome.get("error")

    report = outcome["report"]
    assert _invoices(world) == expected_invoices
    assert _claims(world) == expected_claims
    assert (report.invoice_count, report.line_count) == (single.invoice_count, single.line_count)
    check_invariants(world)
    runs = world.rows("InvoiceRun")
    assert len(runs) == 1 and runs[0]["status"] == "Completed"
    bill = [c for c in _chunks(world) if c["kind"] == "bill"]
    assert [(c["state"], c["attempts"], c["owner_pid"]) for c in bill] == [("done", 2, second.pid)]


def _wait_for_round(world: World, open_round) -> str:
    """The name of the run once the coordinator opened its round (polled:
    the coordinator runs in a thread; the deadline only ends a broken test)."""
    table = world.t("InvoiceRun")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with world.engine.connect() as conn:
            row = conn.execute(sa.select(table.c.id, table.c.name)).first()
            if row is not None and open_round(conn, row.id) is not None:
                return row.name
        time.sleep(0.05)
    raise AssertionError("the coordinator never opened its work queue")


def test_a_chunk_that_always_kills_its_worker_fails_the_run(world, reliability_org, reliability_model, tmp_path,
                                                            monkeypatch):
    """Bounded retries: every worker that takes the pass 2 chunk dies; after
    ``max_attempts`` claims the chunk is failed, the run ends with R250
    (exit code 4: the batches committed stay), is marked Failed, and does
    not hang."""
    from engine.billing.workers import run_invoices_parallel
    from engine.billing.workqueue import ChunkFailed, QueueSettings

    _usages(world)
    monkeypatch.setenv("METABILL_FAILPOINT_KILL_WORKER", str(tmp_path / "killed"))
    monkeypatch.setenv("METABILL_FAILPOINT_KILL_ALWAYS", "1")
    with pytest.raises(ChunkFailed) as raised:
        run_invoices_parallel(world.url, Path(reliability_org), context(reliability_model), _request(1), 2, parts=1,
                              settings=QueueSettings(lease_seconds=600, max_attempts=2, poll_seconds=0.05))
    assert raised.value.code == "R250" and raised.value.exit_code == 4
    bill = [c for c in _chunks(world) if c["kind"] == "bill"]
    assert [(c["state"], c["attempts"]) for c in bill] == [("failed", 2)]
    runs = world.rows("InvoiceRun")
    assert len(runs) == 1 and runs[0]["status"] == "Failed"
    # The first attempt committed one account's batch before it died (kept,
    # billed once); the second re-read that batch, found it billed, and died.
    assert len(world.rows("Invoice")) == 1
    check_invariants(world)


def _die(task):
    """A supervisor task whose worker is killed by the kernel every time."""
    os.kill(os.getpid(), signal.SIGKILL)


def _double(task):
    return task * 2


def _nothing():
    pass


def test_a_task_whose_worker_always_dies_ends_after_max_attempts():
    """Bounded retries of the supervisor: a task is started at most
    ``max_attempts`` times, then the supervisor fails instead of running for ever."""
    with supervisor_module.Supervisor(2, _nothing, (), _die) as pool:
        with pytest.raises(supervisor_module.TaskFailed, match="died 3 times"):
            list(pool.run([1]))
        assert [code for _, code in pool.deaths] == [-signal.SIGKILL] * supervisor_module.MAX_ATTEMPTS
    with supervisor_module.Supervisor(1, _nothing, (), _die, max_attempts=2) as pool:
        with pytest.raises(supervisor_module.TaskFailed, match="died 2 times"):
            list(pool.run([1]))


def test_the_supervisor_runs_every_task_once():
    ticks: list[int] = []
    with supervisor_module.Supervisor(2, _nothing, (), _double) as pool:
        results = sorted(result for _, result in pool.run(range(7), tick=lambda: ticks.append(1), tick_seconds=0.01))
        assert results == [0, 2, 4, 6, 8, 10, 12]
        assert pool.deaths == []
    assert ticks  # the progress hook was called while the tasks ran
