"""A worker of ``invoice-run --workers`` killed with SIGKILL in the middle of
its chunk loses nothing (issue 19, item 4).

Real processes: the run's workers are spawned; the fault point
``METABILL_FAILPOINT_KILL_WORKER`` makes the first worker that commits a
pass 2 batch kill itself with SIGKILL, once, with its chunk (its share of
the accounts) half billed: between two batches, or inside a batch's
transaction. The supervisor gives the chunk to a new worker,
and the run must end Completed with exactly the invoices a single process
makes of the same data. On PostgreSQL (the backend that scales out) and on
SQLite.
"""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from engine.billing import supervisor as supervisor_module

from .support import ACCOUNTS, World, check_invariants
from contexts import context


@pytest.fixture
def world(db_url, reliability_model, tmp_path):
    w = World(db_url, reliability_model, tmp_path)
    w.reset()
    yield w
    w.close()


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


def _request(batch_size: int):
    from datetime import date

    from engine.billing.run import RunRequest

    return RunRequest(filters=("Usage",), period_start=date(2024, 1, 1), period_end=date(2024, 12, 31),
                      batch_size=batch_size, today=date(2024, 12, 31))


@pytest.mark.parametrize("kill_at", ["commit", "transaction"])
def test_a_worker_killed_mid_chunk_loses_nothing(world, reliability_org, reliability_model, tmp_path,
                                                 monkeypatch, kill_at):
    """``commit``: the worker dies right after a committed batch;
    ``transaction``: inside the next batch's transaction, its invoices
    written and not committed (the database rolls them back)."""
    from engine.billing.run import run_invoices
    from engine.billing.workers import run_invoices_parallel

    _usages(world)
    single = run_invoices(world.engine, context(reliability_model), _request(batch_size=2))
    expected = _invoices(world)
    assert single.invoice_count == len(ACCOUNTS) and single.failure_count == 0

    world.reset()
    _usages(world)
    marker = tmp_path / "killed"
    monkeypatch.setenv("METABILL_FAILPOINT_KILL_WORKER", str(marker))
    monkeypatch.setenv("METABILL_FAILPOINT_KILL_AT", kill_at)
    deaths: list = []
    original_close = supervisor_module.Supervisor.close

    def close(self):  # keep what the supervisor saw
        deaths.extend(self.deaths)
        original_close(self)

    monkeypatch.setattr(supervisor_module.Supervisor, "close", close)
    # batch_size=1: every account is a batch of its own, so the worker that
    # holds two accounts dies with one billed and one to go.
    report = run_invoices_parallel(world.url, Path(reliability_org), context(reliability_model), _request(1), 2)

    assert marker.exists(), "the fault point never fired: no worker was killed"
    assert len(deaths) == 1 and deaths[0][1] == -signal.SIGKILL  # one worker, killed by the kernel
    assert _invoices(world) == expected
    assert (report.invoice_count, report.line_count) == (single.invoice_count, single.line_count)
    check_invariants(world)
    runs = world.rows("InvoiceRun")
    assert len(runs) == 1 and runs[0]["status"] == "Completed" and runs[0]["numinvoices"] == len(ACCOUNTS)


def _die(task):
    """A supervisor task whose worker is killed by the kernel every time."""
    os.kill(os.getpid(), signal.SIGKILL)


def _double(task):
    return task * 2


def _nothing():
    pass


def test_a_task_whose_worker_always_dies_ends_after_max_attempts():
    """Bounded retries: the supervisor starts a task at most MAX_ATTEMPTS
    times, then fails instead of running for ever."""
    with supervisor_module.Supervisor(2, _nothing, (), _die) as pool:
        with pytest.raises(supervisor_module.TaskFailed, match="died 3 times"):
            list(pool.run([1]))
        assert [code for _, code in pool.deaths] == [-signal.SIGKILL] * supervisor_module.MAX_ATTEMPTS


def test_the_supervisor_runs_every_task_once():
    with supervisor_module.Supervisor(2, _nothing, (), _double) as pool:
        assert sorted(result for _, result in pool.run(range(7))) == [0, 2, 4, 6, 8, 10, 12]
        assert pool.deaths == []
