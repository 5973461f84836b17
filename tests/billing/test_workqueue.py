"""The run's work queue (engine.billing.workqueue) on its own: claims in
stage order, SKIP LOCKED claims that never hand one chunk out twice, the
reaper driven by an injected clock (no sleeping), bounded attempts, finishing
only while owning, the pairs pass 1 hands to pass 2, and the ETA (a pure
function of the queue's figures). SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from engine.billing.runrecord import RunOwner
from engine.billing.workqueue import (
    BILL, EVALUATE, RECURRING, ChunkResult, ChunkSpec, QueueSettings, WorkQueue, close_round, create_round,
    eta_seconds, format_eta, open_round, owner_gone, progress_of, stages,
)
from engine.storage.schema import WORK_CHUNK


class Clock:
    """An injected clock: seconds since the epoch, moved by the test."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _owner(name: str, host: str = "elsewhere", pid: int = 4242) -> RunOwner:
    return RunOwner(f"token-{name}", host, pid, None)


@pytest.fixture
def engine(db_url, engine_for):
    return engine_for(db_url)


def _queue(engine, clock, owner: RunOwner, specs=None, **settings) -> WorkQueue:
    specs = specs if specs is not None else stages([("A", False), ("S", True)], 2)
    number = create_round(engine, 7, "{\"filters\": []}", "hash", specs, clock)
    return WorkQueue(engine, 7, number, owner, QueueSettings(**{"lease_seconds": 60, **settings}), clock)


def test_stages_of_a_run():
    assert stages([("A", False), ("S", True), ("B", False)], 2) == [
        ChunkSpec(0, 0, "A", EVALUATE, 2), ChunkSpec(0, 1, "A", EVALUATE, 2),
        ChunkSpec(1, 0, "A", BILL, 2), ChunkSpec(1, 1, "A", BILL, 2),
        ChunkSpec(2, 0, "S", RECURRING, 1),
        ChunkSpec(4, 0, "B", EVALUATE, 2), ChunkSpec(4, 1, "B", EVALUATE, 2),
        ChunkSpec(5, 0, "B", BILL, 2), ChunkSpec(5, 1, "B", BILL, 2),
    ]


def test_claims_follow_the_stages(engine):
    """A stage's chunks are claimable only when every earlier chunk is done;
    pass 1 hands its pairs to pass 2, which reads them sorted by key."""
    clock = Clock()
    queue = _queue(engine, clock, _owner("a"))
    first, second = queue.claim(), queue.claim()
    assert (first.stage, first.chunk, second.stage, second.chunk) == (0, 0, 0, 1)
    assert queue.claim() is None  # pass 2 waits for both pass 1 chunks
    assert not queue.finished()
    assert queue.finish(first, ChunkResult(records=3, pairs={0: [[[0, 2, "x"], 11]], 1: [[[0, 1, "x"], 10]]}))
    assert queue.claim() is None
    assert queue.finish(second, ChunkResult(records=1, pairs={0: [[[0, 0, "x"], 12], [[0, 2, "x"], 9]]}))
    bill = queue.claim()
    assert (bill.stage, bill.chunk, bill.kind, bill.attempts) == (1, 0, BILL, 1)
    assert queue.pairs(bill) == [((0, 0, "x"), 12), ((0, 2, "x"), 9), ((0, 2, "x"), 11)]
    other = queue.claim()
    assert queue.pairs(other) == [((0, 1, "x"), 10)]
    assert queue.claim() is None  # the recurring filter follows the whole of filter A
    queue.finish(bill, ChunkResult(records=3, invoices=2, lines=5))
    queue.finish(other, ChunkResult(records=1, invoices=1, lines=2))
    recurring = queue.claim()
    assert (recurring.filter, recurring.kind) == ("S", RECURRING)
    queue.finish(recurring, ChunkResult(records=4, invoices=4, lines=4))
    assert queue.claim() is None and queue.finished()
    figures = queue.progress()
    assert (figures.total, figures.done, figures.failed, figures.lines, figures.records) == (5, 5, 0, 11, 8)


def test_a_dead_owner_is_reaped_after_the_lease_and_the_chunk_is_finished_by_another(engine):
    clock = Clock()
    specs = [ChunkSpec(0, 0, "A", BILL, 1)]
    slow = _queue(engine, clock, _owner("slow"), specs)
    other = WorkQueue(engine, slow.run_id, slow.round, _owner("other"), slow.settings, clock)
    chunk = slow.claim()
    clock.now += 59
    assert other.reap() == [] and other.claim() is None  # within the lease: alive
    assert slow.heartbeat(chunk, records=1, lines=2)  # renewed at 59 s
    clock.now += 59
    assert other.claim() is None  # 59 s after the renewal: still alive
    clock.now += 2
    taken = other.claim()  # 61 s without a heartbeat: reaped and claimed again
    assert taken is not None and (taken.chunk, taken.attempts) == (0, 2)
    assert not slow.heartbeat(chunk)  # the slow owner learns it lost the chunk
    assert not slow.finish(chunk, ChunkResult(invoices=99))  # and its figures are not counted
    assert other.finish(taken, ChunkResult(invoices=1))
    with engine.connect() as conn:
        row = conn.execute(sa.select(WORK_CHUNK)).mappings().one()
    assert (row["state"], row["invoices"], row["owner_token"], row["error"]) == ("done", 1, "token-other", None)


def test_attempts_are_bounded(engine):
    """After ``max_attempts`` claims whose owners died, the chunk is failed;
    the round is finished (nothing claimable, nothing claimed) and later
    stages are never started."""
    clock = Clock()
    specs = [ChunkSpec(0, 0, "A", BILL, 1), ChunkSpec(1, 0, "B", BILL, 1)]
    queue = _queue(engine, clock, _owner("a"), specs, max_attempts=2)
    for attempt in (1, 2):
        chunk = queue.claim()
        assert (chunk.stage, chunk.attempts) == (0, attempt)
        clock.now += 61  # the owner died: no heartbeat
    assert queue.reap() == [(0, 0, "failed")]
    assert queue.claim() is None and queue.finished()
    states = {row["stage"]: (row["state"], row["attempts"]) for row in queue.chunks()}
    assert states == {0: ("failed", 2), 1: ("queued", 0)}
    assert "stopped 2 times" in queue.chunks()[0]["error"]
    figures = queue.progress()
    assert (figures.done, figures.failed, figures.total) == (0, 1, 2)


def test_a_chunk_that_raises_fails_at_once(engine):
    clock = Clock()
    queue = _queue(engine, clock, _owner("a"), [ChunkSpec(0, 0, "A", BILL, 1), ChunkSpec(0, 1, "A", BILL, 1)])
    chunk = queue.claim()
    queue.fail(chunk, "ValueError: broken")
    assert not queue.finished()  # the other chunk of the stage is still to do
    queue.finish(queue.claim(), ChunkResult())
    assert queue.finished()
    assert [row["state"] for row in queue.chunks()] == ["failed", "done"]


def test_an_owner_on_this_host_whose_process_is_gone_is_dead_at_once(engine):
    import socket

    here = socket.gethostname()[:255]
    assert owner_gone(here, 2**22 + 12345, None, 1000, 1000, 60)  # no such pid
    assert not owner_gone("elsewhere", 2**22 + 12345, None, 1000, 1000, 60)  # another host: the lease decides
    assert owner_gone("elsewhere", 1, None, 1000, 1000 + 60_001, 60)
    assert not owner_gone("elsewhere", 1, None, 1000, 1000 + 60_000, 60)
    assert owner_gone("elsewhere", 1, None, None, 0, 60)  # never beat
    assert not owner_gone(here, 2**22 + 12345, None, 1000, 1000, 60, check_local_processes=False)  # lease only


@pytest.mark.postgres
def test_concurrent_claims_skip_locked_chunks(pg_schema_url, engine_for):
    """PostgreSQL (SQLite claims one writer at a time): two claimers at once
    (threads, an own transaction each) get different chunks: the first holds
    its row locked, the second skips it instead of waiting for it."""
    engine = engine_for(pg_schema_url)
    clock = Clock()
    queue = _queue(engine, clock, _owner("a"), [ChunkSpec(0, j, "A", BILL, 3) for j in range(3)])
    locked, release = threading.Event(), threading.Event()
    held: dict = {}

    def hold_first() -> None:
        with engine.connect() as conn, conn.begin():
            held["chunk"] = queue._claim(conn)  # claimed, not yet committed: its row stays locked
            locked.set()
            release.wait(60)

    holder = threading.Thread(target=hold_first)
    holder.start()
    assert locked.wait(60)
    other = WorkQueue(engine, queue.run_id, queue.round, _owner("b"), queue.settings, clock)
    second = other.claim()  # does not wait for the locked row
    release.set()
    holder.join(60)
    assert (held["chunk"].chunk, second.chunk) == (0, 1)


def test_rounds(engine):
    clock = Clock()
    queue = _queue(engine, clock, _owner("a"), [ChunkSpec(0, 0, "A", BILL, 1)])
    with engine.connect() as conn:
        assert open_round(conn, 7)["round"] == 1 and open_round(conn, 8) is None
    clock.now += 10
    queue.finish(queue.claim(), ChunkResult(lines=3))
    clock.now += 5
    close_round(engine, 7, 1, clock)
    clock.now += 100
    with engine.connect() as conn:
        assert open_round(conn, 7) is None
        figures = progress_of(conn, 7, clock=clock)
    assert (figures.done, figures.total, figures.lines, figures.elapsed_seconds) == (1, 1, 3, 15.0)
    assert not queue.is_open()
    second = create_round(engine, 7, "{}", "hash", [], clock)
    assert second == 2


@pytest.mark.parametrize("done, total, elapsed, expected", [
    (0, 10, 30.0, None),      # nothing done: no estimate
    (5, 10, 30.0, 30.0),      # half done in 30 s: 30 s to go
    (1, 4, 10.0, 30.0),
    (10, 10, 99.0, 0.0),      # all done
    (0, 0, 0.0, 0.0),         # nothing to do
])
def test_eta(done, total, elapsed, expected):
    assert eta_seconds(done, total, elapsed) == expected


def test_format_eta():
    assert [format_eta(s) for s in (None, 0.0, 59.6, 125.0, 3723.0)] == ["?", "0:00", "1:00", "2:05", "1:02:03"]
