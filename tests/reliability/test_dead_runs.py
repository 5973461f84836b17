"""No run stays "Running" (issue 14): a run whose process was killed is
recognizably dead, listed as such, and recovered by the next run of the same
filters or by ``metabill runs --recover``; a run that fails with an error is
marked Failed; a run whose process is alive is never taken for dead. With
real (spawned, then killed) processes, on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.billing import filterrun as filterrun_module
from engine.billing.runrecord import ACTIVE_TOKENS, OwnerLock, RunOwner, _owner_lock_key, owners_of
from engine.billing.service import list_runs, recover_runs
from engine.storage.schema import RUN_OWNER

from billing.helpers import InjectedFault, fault_after

from . import procs
from .support import ACCOUNTS, World, check_invariants
from contexts import context

CTX = multiprocessing.get_context("spawn")
TIMEOUT = 300


@pytest.fixture
def world(db_url, reliability_model, tmp_path):
    w = World(db_url, reliability_model, tmp_path)
    w.reset()
    for n in range(4):
        for account in ACCOUNTS:
            w.add_usage(account, Decimal(1), Decimal("10.00") + n, f"u{n}")
    yield w
    w.close()


def _hanging_run(world: World, org) -> multiprocessing.Process:
    """A process whose invoice run committed a batch and now hangs."""
    barrier, queue = CTX.Barrier(1), CTX.Queue()
    process = CTX.Process(target=procs.run_and_hang_proc, args=(str(org), world.url, barrier, queue))
    process.start()
    kind, detail = queue.get(timeout=TIMEOUT)
    assert kind == "hanging", detail
    return process


def _kill(process: multiprocessing.Process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.join(timeout=TIMEOUT)


def _run_row(world: World) -> dict:
    rows = world.rows("InvoiceRun")
    assert len(rows) == 1
    return rows[0]


def test_a_killed_run_is_dead_and_the_next_run_recovers_it(world, reliability_org, reliability_model):
    process = _hanging_run(world, reliability_org)
    try:
        alive = list_runs(world.engine, context(reliability_model))
        assert [(r.status, r.state) for r in alive] == [("Running", "Running")]  # busy, not dead
        assert recover_runs(world.engine, context(reliability_model)) == []
    finally:
        _kill(process)
    [dead] = list_runs(world.engine, context(reliability_model))
    assert (dead.status, dead.state, dead.dead) == ("Running", "Dead", True)
    assert dead.owners and dead.owners[0].startswith(f"process {process.pid} on ") and "(dead)" in dead.owners[0]

    report = world.run(batch_size=3)  # the same period and filters
    assert report.joined_existing and report.run_id == dead.id
    assert len(report.recovered) == 1 and f"process {process.pid}" in report.recovered[0]
    run = _run_row(world)
    assert run["status"] == "Completed" and "recovered: process" in run["log"]
    with world.engine.connect() as conn:
        assert owners_of(conn, run["id"]) == []
    check_invariants(world)
    assert len(world.rows("Invoice")) == len(ACCOUNTS)  # the killed batch's invoices plus the rest, none twice


def test_runs_recover_marks_a_dead_run_failed(world, reliability_org, reliability_model):
    _kill(_hanging_run(world, reliability_org))
    ctx = context(reliability_model)
    [recovered] = recover_runs(world.engine, ctx)
    assert recovered.state == "Dead"
    run = _run_row(world)
    assert run["status"] == "Failed" and "recovered by 'metabill runs --recover'" in run["log"]
    assert [r.state for r in list_runs(world.engine, ctx)] == ["Failed"]
    assert recover_runs(world.engine, ctx) == []  # nothing left to recover
    report = world.run(batch_size=3)  # the same run again bills the rest
    assert report.joined_existing and _run_row(world)["status"] == "Completed"
    check_invariants(world)


def test_a_run_that_fails_with_an_error_is_marked_failed(world, reliability_model, monkeypatch):
    def broken(self):
        raise RuntimeError("the disk of the source system vanished")

    monkeypatch.setattr(filterrun_module.FilterRun, "bill", lambda self, keyed: broken(self))
    with pytest.raises(RuntimeError):
        world.run(batch_size=3)
    run = _run_row(world)
    assert run["status"] == "Failed" and "RuntimeError: the disk of the source system vanished" in run["log"]
    with world.engine.connect() as conn:
        assert owners_of(conn, run["id"]) == []
    assert [r.state for r in list_runs(world.engine, context(reliability_model))] == ["Failed"]


def test_an_owner_on_another_machine_is_dead_once_its_heartbeat_is_stale(world, reliability_model):
    if world.backend != "sqlite":
        pytest.skip("PostgreSQL decides by the owner's lock, wherever the owner runs")
    world.run(batch_size=3)
    run = _run_row(world)
    table = world.t("InvoiceRun")
    with world.engine.begin() as conn:
        conn.execute(sa.update(table).values(status="Running"))
        conn.execute(sa.insert(RUN_OWNER).values(run_id=run["id"], token="t1", host="elsewhere", pid=1,
                                                 started_at="2024-01-01T00:00:00Z",
                                                 heartbeat_at="2024-01-01T00:00:00Z"))
    [state] = list_runs(world.engine, context(reliability_model))
    assert state.state == "Dead"
    fresh = sa.update(RUN_OWNER).values(heartbeat_at=sa.func.strftime("%Y-%m-%dT%H:%M:%SZ", "now"))
    with world.engine.begin() as conn:
        conn.execute(fresh)
    [state] = list_runs(world.engine, context(reliability_model))
    assert state.state == "Running"


def test_postgres_takes_a_killed_owner_for_dead_before_the_server_drops_its_lock(world, reliability_model):
    """After a SIGKILL the server holds the killed client's advisory lock
    until it notices the closed connection; on the same machine the process
    table already says the owner is gone, so the run is Dead at once."""
    if world.backend != "postgresql":
        pytest.skip("the owner lock exists on PostgreSQL only")
    from engine.billing.runrecord import _owner_lock_key

    world.run(batch_size=3)
    run = _run_row(world)
    gone = CTX.Process(target=int)  # a process of this machine that has ended
    gone.start()
    gone.join(timeout=TIMEOUT)
    with world.engine.begin() as conn:
        conn.execute(sa.update(world.t("InvoiceRun")).values(status="Running"))
        conn.execute(sa.insert(RUN_OWNER).values(run_id=run["id"], token="t-killed", host=socket.gethostname()[:255],
                                                 pid=gone.pid, started_at="2024-01-01T00:00:00Z",
                                                 heartbeat_at="2024-01-01T00:00:00Z"))
    holder = world.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:  # the lock the server has not released yet
        holder.execute(sa.select(sa.func.pg_advisory_lock(*_owner_lock_key("t-killed"))))
        [state] = list_runs(world.engine, context(reliability_model))
        assert (state.state, state.dead) == ("Dead", True)
        with world.engine.begin() as conn:  # the same owner on another machine: only its lock can tell
            conn.execute(sa.update(RUN_OWNER).values(host="elsewhere"))
        [state] = list_runs(world.engine, context(reliability_model))
        assert (state.state, state.dead) == ("Running", False)
    finally:
        holder.execute(sa.select(sa.func.pg_advisory_unlock(*_owner_lock_key("t-killed"))))
        holder.close()
    [state] = list_runs(world.engine, context(reliability_model))
    assert state.state == "Dead"  # the server dropped the lock


def test_an_owner_lock_that_fails_gives_back_its_connection_and_its_lock(pg_schema_url, engine_for):
    """PostgreSQL: the owner's session lock lives on a connection of its own.
    When taking it fails (the server went away, a statement timeout, an
    interrupt), the connection is not left checked out and the token is no
    longer this process's: a process that retries (a worker, the job
    scheduler) must neither run out of pooled connections (the reliability
    machine's pool ran dry this way) nor keep an owner "alive" that works
    on nothing. When releasing it fails, the session is closed rather than
    pooled: another process must be able to tell this owner is gone."""
    engine, other = engine_for(pg_schema_url), engine_for(pg_schema_url)
    owner = RunOwner.this_process()
    with fault_after(engine, 0), pytest.raises(InjectedFault):
        with OwnerLock(engine, owner):
            pass  # pragma: no cover - the lock statement fails first
    assert engine.pool.checkedout() == 0  # without waiting for the garbage collector
    assert owner.token not in ACTIVE_TOKENS

    lock = OwnerLock(engine, owner).__enter__()
    assert owner.token in ACTIVE_TOKENS and engine.pool.checkedout() == 1
    with fault_after(engine, 0), pytest.raises(InjectedFault):
        lock.__exit__(None, None, None)  # the unlock fails
    assert engine.pool.checkedout() == 0 and owner.token not in ACTIVE_TOKENS
    first, second = _owner_lock_key(owner.token)
    with other.connect() as conn:  # no pooled session of ``engine`` still holds the owner's lock
        assert conn.execute(sa.select(sa.func.pg_try_advisory_lock(first, second))).scalar_one()
        conn.execute(sa.select(sa.func.pg_advisory_unlock(first, second)))
