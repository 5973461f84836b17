"""The work queue of a parallel invoice run, in the database (issue 19).

A parallel run is cut into **chunks**, one row each in ``_mb_work_chunk``
(``engine.storage.schema``), grouped in a **round**: one invocation of
``invoice-run --workers N`` creates a round (``_mb_work_round`` keeps what a
worker needs to join it: the request and the configuration's hash) and the
chunks of every filter, and any process on any machine that can reach the
database may drain it (``metabill worker --run``). A chunk is one of

* ``evaluate``: pass 1 of a filter over the records with ``id % parts ==
  chunk``; it hands its (group key, id) pairs to the pass 2 chunks of its
  filter through ``_mb_work_keys``, in the transaction that marks it done;
* ``bill``: pass 2 of a filter for the accounts with ``account % parts ==
  chunk`` (an invoice never spans accounts, so the invoices are those of a
  single process);
* ``recurring``: a subscription or usage filter, whole.

**Stages** order the chunks: filter *k* has stage ``2k`` (pass 1, or the
recurring chunk) and ``2k + 1`` (pass 2). A chunk can be claimed only when
every chunk of the round's earlier stages is done, so the filters follow
each other as in a single process, and pass 2 starts with every pair known.

**Claims** lock the chosen row with ``SELECT … FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so concurrent claimers never wait for each other nor take one
chunk twice; on SQLite the claim runs inside ``BEGIN IMMEDIATE`` (one writer
at a time anyway). The claim records the owner (token, host, pid, process
start time), counts the attempt and sets the heartbeat; the owner renews the
heartbeat while it works (:class:`Heartbeat`).

**The reaper** (:meth:`WorkQueue.reap`), run by every worker before it
claims, re-queues a claimed chunk whose owner is gone: its heartbeat is older
than the lease, or its process on this very host no longer runs. After
``max_attempts`` claims the chunk is ``failed`` instead; its stage never
completes, so the rest of the round drains, the later stages are not started,
and the run reports the failed chunk (:class:`ChunkFailed`, exit code 4:
what was committed stays, the same command bills the rest).

Re-running a chunk is safe because billing is exactly-once in the database
already (batches that re-read and skip billed records, ``_mb_claim``,
per-account advisory locks): the queue only needs at-least-once delivery.
Finishing is conditional on still owning the chunk, so the work of an owner
that was reaped while merely slow is not counted twice.

Time is injected (``clock``: seconds since the epoch, ``time.time`` by
default), never slept on in tests.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Iterable, Mapping, Sequence

import sqlalchemy as sa

from engine.domain.errors import EngineError
from engine.storage.retry import run_in_transaction
from engine.storage.schema import WORK_CHUNK, WORK_KEYS, WORK_ROUND

from .runrecord import RunOwner, lock_class, process_runs

Clock = Callable[[], float]
_INT4 = 2**31 - 1

QUEUED, CLAIMED, DONE, FAILED = "queued", "claimed", "done", "failed"
EVALUATE, BILL, RECURRING = "evaluate", "bill", "recurring"

#: Seconds without a heartbeat after which a chunk's owner counts as gone.
DEFAULT_LEASE = float(os.environ.get("METABILL_QUEUE_LEASE_SECONDS") or 120)
#: Claims of one chunk before it is failed instead of re-queued.
DEFAULT_MAX_ATTEMPTS = int(os.environ.get("METABILL_QUEUE_MAX_ATTEMPTS") or 3)


class ChunkFailed(EngineError, RuntimeError):
    """A chunk of a parallel run failed: it raised, or its worker stopped on
    it as many times as a chunk may be tried. What was committed stays; the
    later filters were not started; running the same command again bills the
    rest."""

    code = "R250"


class QueueNotOpen(EngineError, LookupError):
    """A worker cannot join the invoice run: it has no open work queue, or it
    was started with another configuration."""

    code = "R251"


@dataclass(frozen=True)
class QueueSettings:
    """The queue's timing and retry bounds (see the module docstring)."""

    lease_seconds: float = DEFAULT_LEASE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    #: How often an owner renews its heartbeat: well inside the lease.
    heartbeat_seconds: float | None = None
    #: How long an idle worker waits before looking again.
    poll_seconds: float = 0.2
    #: Reap the chunk of an owner on this host as soon as its process is gone
    #: (else only the lease decides, as for owners on other hosts).
    check_local_processes: bool = True

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat_seconds if self.heartbeat_seconds is not None else max(0.05, self.lease_seconds / 4)


@dataclass(frozen=True)
class ChunkSpec:
    """A chunk to enqueue."""

    stage: int
    chunk: int
    filter: str
    kind: str
    parts: int


@dataclass(frozen=True)
class Chunk:
    """A chunk this process claimed."""

    run_id: int
    round: int
    stage: int
    chunk: int
    filter: str
    kind: str
    parts: int
    attempts: int
    token: str


@dataclass
class ChunkResult:
    """What a chunk did, stored with it when it is done."""

    records: int = 0
    invoices: int = 0
    lines: int = 0
    #: JSON-able detail (record failures, invoice summaries).
    detail: dict = field(default_factory=dict)
    #: evaluate chunks: the (group key, id) pairs per pass 2 bucket.
    pairs: Mapping[int, list] | None = None


@dataclass(frozen=True)
class QueueProgress:
    """A round's figures, for progress displays and ``metabill runs``."""

    total: int
    done: int
    failed: int
    claimed: int
    lines: int
    records: int
    elapsed_seconds: float
    #: :func:`eta_seconds` of the figures above.
    eta_seconds: float | None


def eta_seconds(done: int, total: int, elapsed_seconds: float) -> float | None:
    """The time left, assuming the chunks left take as long on average as the
    ones done: ``elapsed × (total − done) / done``. None before the first
    chunk is done (nothing to estimate from); 0 when all are done. Chunks of
    different stages differ in cost, so this is a rough estimate that
    sharpens as the round advances."""
    if total <= 0 or done >= total:
        return 0.0
    if done <= 0 or elapsed_seconds < 0:
        return None
    return elapsed_seconds * (total - done) / done


def format_eta(seconds: float | None) -> str:
    """``1:02:03``, ``4:05``, or ``?`` when unknown."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _ms(clock: Clock) -> int:
    return int(clock() * 1000)


# --- rounds -----------------------------------------------------------------------------


def request_json(request, invoice_date: date | None) -> str:
    """The request of a round as stored (``RunRequest`` and the run's invoice date)."""
    def day(value: date | None) -> str | None:
        return value.isoformat() if value else None

    return json.dumps({"filters": list(request.filters), "period_start": day(request.period_start),
                       "period_end": day(request.period_end), "invoice_date": day(request.invoice_date),
                       "run_invoice_date": day(invoice_date), "batch_size": request.batch_size,
                       "today": day(request.today)})


def create_round(engine: sa.Engine, run_id: int, request: str, config_hash: str, specs: Sequence[ChunkSpec],
                 clock: Clock = time.time) -> int:
    """A new round of the run with ``specs`` queued; its number."""
    def work(conn: sa.Connection) -> int:
        for table in (WORK_ROUND, WORK_CHUNK, WORK_KEYS):  # a database migrated before the queue existed
            table.create(conn, checkfirst=True)
        if conn.dialect.name == "postgresql":  # two coordinators of one run draw distinct round numbers
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_class("workround"),
                                                                 sa.cast(run_id % _INT4, sa.Integer))))
        latest = conn.execute(sa.select(sa.func.max(WORK_ROUND.c.round))
                              .where(WORK_ROUND.c.run_id == run_id)).scalar_one()
        number = int(latest or 0) + 1
        now = _ms(clock)
        conn.execute(sa.insert(WORK_ROUND).values(run_id=run_id, round=number, request=request,
                                                  config_hash=config_hash, state="open", created_at=now))
        if specs:
            conn.execute(sa.insert(WORK_CHUNK), [
                dict(run_id=run_id, round=number, stage=s.stage, chunk=s.chunk, filter=s.filter, kind=s.kind,
                     parts=s.parts, state=QUEUED, attempts=0, records=0, invoices=0, lines=0) for s in specs])
        return number

    return run_in_transaction(engine, work)


def close_round(engine: sa.Engine, run_id: int, number: int, clock: Clock = time.time) -> None:
    """Mark the round closed (no worker joins it any more) and drop what only
    the run needed: the pairs and the chunks' failure and invoice listings
    (the chunks' states and figures stay, for ``metabill runs``)."""
    def work(conn: sa.Connection) -> None:
        conn.execute(sa.update(WORK_ROUND).where(WORK_ROUND.c.run_id == run_id, WORK_ROUND.c.round == number)
                     .values(state="closed", closed_at=_ms(clock)))
        conn.execute(sa.update(WORK_CHUNK).where(WORK_CHUNK.c.run_id == run_id, WORK_CHUNK.c.round == number)
                     .values(result=None))
        conn.execute(sa.delete(WORK_KEYS).where(WORK_KEYS.c.run_id == run_id, WORK_KEYS.c.round == number))

    run_in_transaction(engine, work)


def open_round(conn: sa.Connection, run_id: int, number: int | None = None) -> dict | None:
    """The run's round ``number`` (default: its newest) while it is open
    (``run_id``, ``round``, ``request`` as a dict, ``config_hash``), or None."""
    if not sa.inspect(conn).has_table(WORK_ROUND.name):
        return None
    query = sa.select(WORK_ROUND).where(WORK_ROUND.c.run_id == run_id, WORK_ROUND.c.state == "open")
    if number is not None:
        query = query.where(WORK_ROUND.c.round == number)
    row = conn.execute(query.order_by(WORK_ROUND.c.round.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["request"] = json.loads(out["request"])
    return out


def progress_of(conn: sa.Connection, run_id: int, number: int | None = None,
                clock: Clock = time.time) -> QueueProgress | None:
    """The figures of the run's round ``number`` (default: the newest), or
    None when the run never had one."""
    if not sa.inspect(conn).has_table(WORK_ROUND.name):
        return None
    if number is None:
        number = conn.execute(sa.select(sa.func.max(WORK_ROUND.c.round))
                              .where(WORK_ROUND.c.run_id == run_id)).scalar_one()
        if number is None:
            return None
    created, closed = conn.execute(sa.select(WORK_ROUND.c.created_at, WORK_ROUND.c.closed_at).where(
        WORK_ROUND.c.run_id == run_id, WORK_ROUND.c.round == number)).one()
    c = WORK_CHUNK.c
    read = sa.case((c.kind != BILL, c.records), else_=0)  # records read: pass 1 and recurring chunks
    counts = {state: (n, lines, records) for state, n, lines, records in conn.execute(
        sa.select(c.state, sa.func.count(), sa.func.coalesce(sa.func.sum(c.lines), 0),
                  sa.func.coalesce(sa.func.sum(read), 0))
        .where(c.run_id == run_id, c.round == number).group_by(c.state))}
    end = closed if closed is not None else _ms(clock)
    total = sum(n for n, _, _ in counts.values())
    done, failed = counts.get(DONE, (0, 0, 0))[0], counts.get(FAILED, (0, 0, 0))[0]
    elapsed = max(0.0, (end - created) / 1000)
    return QueueProgress(
        total=total, done=done, failed=failed, claimed=counts.get(CLAIMED, (0, 0, 0))[0],
        lines=int(sum(lines for _, lines, _ in counts.values())),
        records=int(sum(records for _, _, records in counts.values())),
        elapsed_seconds=elapsed,
        # A failed chunk ends its stage: it counts as settled, not as work to come.
        eta_seconds=eta_seconds(done + failed, total, elapsed))


# --- one process's view of a round -----------------------------------------------------------


class WorkQueue:
    """The chunks of round ``number`` of run ``run_id``, as one process
    (``owner``) claims, renews and finishes them; see the module docstring."""

    def __init__(self, engine: sa.Engine, run_id: int, number: int, owner: RunOwner | None = None,
                 settings: QueueSettings | None = None, clock: Clock = time.time):
        self.engine = engine
        self.run_id = run_id
        self.round = number
        self.owner = owner or RunOwner.this_process()
        self.settings = settings or QueueSettings()
        self.clock = clock
        c = WORK_CHUNK.c
        self._mine = sa.and_(c.run_id == run_id, c.round == number)

    # -- the reaper ---------------------------------------------------------------------

    def reap(self) -> list[tuple[int, int, str]]:
        """Re-queue (or, past ``max_attempts``, fail) the claimed chunks
        whose owner is gone; returns ``(stage, chunk, new state)`` of each."""
        return run_in_transaction(self.engine, self._reap)

    def _reap(self, conn: sa.Connection) -> list[tuple[int, int, str]]:
        c = WORK_CHUNK.c
        query = sa.select(c.stage, c.chunk, c.attempts, c.owner_host, c.owner_pid, c.owner_started,
                          c.heartbeat_at).where(self._mine, c.state == CLAIMED)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # a chunk being renewed right now is alive
        now = _ms(self.clock)
        out = []
        for row in conn.execute(query).all():
            if not owner_gone(row.owner_host, row.owner_pid, row.owner_started, row.heartbeat_at, now,
                              self.settings.lease_seconds, self.settings.check_local_processes):
                continue
            who = f"process {row.owner_pid} on {row.owner_host}"
            if row.attempts >= self.settings.max_attempts:
                state, error = FAILED, f"its worker stopped {row.attempts} times (last: {who})"
            else:
                state, error = QUEUED, f"re-queued after its worker ({who}) stopped"
            conn.execute(sa.update(WORK_CHUNK).where(self._mine, c.stage == row.stage, c.chunk == row.chunk,
                                                     c.state == CLAIMED)
                         .values(state=state, error=error, owner_token=None, finished_at=now if state == FAILED
                                 else None))
            out.append((row.stage, row.chunk, state))
        return out

    # -- claims -------------------------------------------------------------------------

    def claim(self) -> Chunk | None:
        """Reap (see :meth:`reap`), then claim the next claimable chunk for
        this process, in one transaction; the chunk, or None."""
        def work(conn: sa.Connection) -> Chunk | None:
            self._reap(conn)
            return self._claim(conn)

        return run_in_transaction(self.engine, work)

    def _claim(self, conn: sa.Connection) -> Chunk | None:
        c = WORK_CHUNK.c
        inner = WORK_CHUNK.alias("earlier")
        lowest = (sa.select(sa.func.min(inner.c.stage))
                  .where(inner.c.run_id == self.run_id, inner.c.round == self.round,
                         inner.c.state.in_((QUEUED, CLAIMED, FAILED)))
                  .scalar_subquery())
        query = (sa.select(c.stage, c.chunk, c.filter, c.kind, c.parts, c.attempts)
                 .where(self._mine, c.state == QUEUED, c.stage == lowest)
                 .order_by(c.stage, c.chunk).limit(1))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WORK_CHUNK)
        row = conn.execute(query).first()
        if row is None:
            return None
        now = _ms(self.clock)
        owner = self.owner
        conn.execute(sa.update(WORK_CHUNK).where(self._mine, c.stage == row.stage, c.chunk == row.chunk)
                     .values(state=CLAIMED, attempts=row.attempts + 1, owner_token=owner.token,
                             owner_host=owner.host, owner_pid=owner.pid, owner_started=owner.process_started,
                             claimed_at=now, heartbeat_at=now))
        return Chunk(self.run_id, self.round, row.stage, row.chunk, row.filter, row.kind, row.parts,
                     row.attempts + 1, owner.token)

    def heartbeat(self, chunk: Chunk, records: int | None = None, lines: int | None = None) -> bool:
        """Renew the chunk's heartbeat (and its live figures); False when this
        process no longer owns it (it was reaped)."""
        values: dict = {"heartbeat_at": _ms(self.clock)}
        if records is not None:
            values["records"] = records
        if lines is not None:
            values["lines"] = lines

        def work(conn: sa.Connection) -> bool:
            return conn.execute(sa.update(WORK_CHUNK).where(*self._owned(chunk)).values(**values)).rowcount == 1

        return run_in_transaction(self.engine, work)

    def _owned(self, chunk: Chunk) -> tuple:
        c = WORK_CHUNK.c
        return (self._mine, c.stage == chunk.stage, c.chunk == chunk.chunk, c.state == CLAIMED,
                c.owner_token == chunk.token)

    def finish(self, chunk: Chunk, result: ChunkResult) -> bool:
        """Mark the chunk done with its figures (and hand its pairs to pass 2),
        in one transaction; False, and nothing written, when this process no
        longer owns it."""
        def work(conn: sa.Connection) -> bool:
            done = conn.execute(sa.update(WORK_CHUNK).where(*self._owned(chunk)).values(
                state=DONE, finished_at=_ms(self.clock), heartbeat_at=_ms(self.clock), records=result.records,
                invoices=result.invoices, lines=result.lines, result=json.dumps(result.detail), error=None))
            if done.rowcount != 1:
                return False
            if result.pairs:
                conn.execute(sa.insert(WORK_KEYS), [
                    dict(run_id=self.run_id, round=self.round, stage=chunk.stage + 1, bucket=bucket,
                         source_chunk=chunk.chunk, pairs=json.dumps(pairs))
                    for bucket, pairs in sorted(result.pairs.items()) if pairs])
            return True

        return run_in_transaction(self.engine, work)

    def fail(self, chunk: Chunk, error: str) -> None:
        """The chunk raised: failed at once (its error is the answer)."""
        def work(conn: sa.Connection) -> None:
            conn.execute(sa.update(WORK_CHUNK).where(*self._owned(chunk)).values(
                state=FAILED, finished_at=_ms(self.clock), error=error[:4000]))

        run_in_transaction(self.engine, work)

    def pairs(self, chunk: Chunk) -> list[tuple[tuple, int]]:
        """A pass 2 chunk's (group key, id) pairs, sorted by key."""
        k = WORK_KEYS.c
        with self.engine.connect() as conn:
            texts = conn.execute(sa.select(k.pairs).where(
                k.run_id == self.run_id, k.round == self.round, k.stage == chunk.stage,
                k.bucket == chunk.chunk)).scalars().all()
        out = [(tuple(key), int(record_id)) for text in texts for key, record_id in json.loads(text)]
        out.sort()
        return out

    # -- the round as a whole -----------------------------------------------------------

    def finished(self) -> bool:
        """Nothing claimed and nothing claimable left: every chunk done, or the
        round stopped at a failed chunk."""
        c = WORK_CHUNK.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(c.stage, c.state).where(self._mine, c.state != DONE)).all()
        if not rows:
            return True
        lowest = min(stage for stage, _ in rows)
        return not any(state == CLAIMED or (state == QUEUED and stage == lowest) for stage, state in rows)

    def is_open(self) -> bool:
        with self.engine.connect() as conn:
            state = conn.execute(sa.select(WORK_ROUND.c.state).where(
                WORK_ROUND.c.run_id == self.run_id, WORK_ROUND.c.round == self.round)).scalar_one_or_none()
        return state == "open"

    def chunks(self) -> list[dict]:
        """Every chunk of the round as stored (``result`` decoded)."""
        c = WORK_CHUNK.c
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.select(WORK_CHUNK).where(self._mine)
                                                  .order_by(c.stage, c.chunk)).mappings()]
        for row in rows:
            row["result"] = json.loads(row["result"]) if row["result"] else {}
        return rows

    def progress(self) -> QueueProgress:
        with self.engine.connect() as conn:
            figures = progress_of(conn, self.run_id, self.round, self.clock)
        assert figures is not None
        return figures


def owner_gone(host: str | None, pid: int | None, started: str | None, heartbeat_ms: int | None, now_ms: int,
               lease_seconds: float, check_local_processes: bool = True) -> bool:
    """Whether a chunk's owner stopped working on it: its heartbeat is older
    than the lease, or it ran on this host and its process is gone (or the
    pid now belongs to another process). A pure decision but for the process
    table of this host."""
    if heartbeat_ms is None or now_ms - heartbeat_ms > lease_seconds * 1000:
        return True
    if check_local_processes and host == socket.gethostname()[:255] and pid is not None:
        return not process_runs(int(pid), started)
    return False


class Heartbeat:
    """A thread that renews a claimed chunk's heartbeat every
    ``settings.heartbeat_every`` seconds while the chunk runs, with the live
    figures ``figures()`` returns (records, lines). Stops with the block."""

    def __init__(self, queue: WorkQueue, chunk: Chunk, figures: Callable[[], tuple[int, int]]):
        self.queue, self.chunk, self.figures = queue, chunk, figures
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="metabill-heartbeat", daemon=True)
        #: False once the chunk was found reaped (its result will be discarded).
        self.owned = True

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.queue.settings.heartbeat_every):
            try:
                records, lines = self.figures()
                self.owned = self.queue.heartbeat(self.chunk, records, lines)
            except Exception:  # noqa: BLE001 - a missed beat is retried; the lease covers several
                continue
            if not self.owned:
                return


def stages(filters: Iterable[tuple[str, bool]], parts: int) -> list[ChunkSpec]:
    """The chunks of a round: per filter (name, recurring?) in run order,
    ``parts`` pass 1 and ``parts`` pass 2 chunks, or one recurring chunk."""
    specs: list[ChunkSpec] = []
    for index, (name, recurring) in enumerate(filters):
        if recurring:
            specs.append(ChunkSpec(2 * index, 0, name, RECURRING, 1))
            continue
        specs.extend(ChunkSpec(2 * index, j, name, EVALUATE, parts) for j in range(parts))
        specs.extend(ChunkSpec(2 * index + 1, j, name, BILL, parts) for j in range(parts))
    return specs


__all__ = [
    "BILL", "EVALUATE", "RECURRING", "QUEUED", "CLAIMED", "DONE", "FAILED",
    "Chunk", "ChunkFailed", "ChunkResult", "ChunkSpec", "Heartbeat", "QueueNotOpen", "QueueProgress",
    "QueueSettings", "WorkQueue", "close_round", "create_round", "eta_seconds", "format_eta", "open_round",
    "owner_gone", "progress_of", "request_json", "stages",
]
