"""The InvoiceRun record and the run's locks on PostgreSQL.

A run of a period and a set of filters has one InvoiceRun record: running
the same period and filters again joins it (and bills only what is left), so
two runs started at the same moment, on several workers or machines, find
one record. The record is closed with the run's totals and a short log.

PostgreSQL's advisory locks serialize what must not happen twice at once:
opening the run record of a (period, filters) and billing one account.

**No run stays "Running".** Every process working on a run is its *owner*
while it works: a row of ``_mb_run_owner`` (host, pid, process start time,
heartbeat), written in the transaction that opens or joins the record and
removed in the one that closes it, and on PostgreSQL a session advisory lock
held by the process for as long as it runs (:class:`OwnerLock`). A run that
fails with an error is marked Failed on the way out. A process that is
killed leaves its row behind, and is recognizably dead (:func:`owner_alive`):
on PostgreSQL its lock is gone with its connection (or, on the same machine,
its pid no longer runs: the server drops the lock a moment after the kill); on SQLite (one machine)
its pid no longer runs, or runs another program (start time); an owner on
another machine counts as dead once its heartbeat is older than
:data:`STALE_AFTER`. The next run of the same period and filters recovers
such a run when it joins it (the log says which process had stopped), and
:func:`runs_state` / :func:`recover_dead_runs` list and recover runs for
``metabill runs``.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Sequence

import sqlalchemy as sa

from engine.domain.errors import EngineError, Where
from engine.storage.bulk import RowWriter
from engine.storage.context import Context
from engine.storage.schema import RUN_OWNER, WORK_ROUND

from .report import RunReport

#: Failures per filter written to the run record's log.
LOGGED_FAILURES = 50
#: The longest log the InvoiceRun record keeps.
LOG_LENGTH = 131072
#: An owner on another machine (SQLite on a shared disk) without a heartbeat
#: for this long is taken for dead.
STALE_AFTER = timedelta(minutes=int(os.environ.get("METABILL_RUN_STALE_MINUTES") or 60))


class RunNotFound(EngineError, LookupError):
    """No invoice run has the given name or id."""

    code = "R210"


def find_run(conn: sa.Connection, ctx: Context, name_or_id: str | int) -> int:
    """The id of the invoice run named ``name_or_id`` (``IR-000001``) or with
    that id; :class:`RunNotFound` when there is none."""
    text = str(name_or_id)
    table = ctx.table("InvoiceRun")
    condition = table.c.name == text
    if text.isdigit():
        condition = sa.or_(condition, table.c.id == int(text))
    row = conn.execute(sa.select(table.c.id).where(condition)).first()
    if row is None:
        raise RunNotFound(f"no invoice run '{text}'", where=Where(object="InvoiceRun", record=text))
    return row.id


def lock_class(kind: str) -> sa.ColumnElement[int]:
    """The first key of PostgreSQL's two-key advisory locks of ``kind``
    ("run": run records per period and filters, "account": accounts being
    billed, see :meth:`engine.billing.filterrun.FilterRun.claim_accounts`),
    for the current schema.

    Advisory locks belong to the whole database, and several metabill
    databases may live in one as schemas (tenants, the test suite's private
    schemas): without the schema in the key, a run in one schema would wait
    for, or skip, account 1 because another schema is billing its account 1.
    A hash collision between schemas costs a wait, never correctness."""
    return sa.func.hashtext(sa.func.concat(sa.func.current_schema(), f":metabill:{kind}"))


@dataclass(frozen=True)
class OpenedRun:
    """The InvoiceRun record a run writes into."""

    run_id: int
    name: str
    joined_existing: bool
    invoice_date: date | None
    #: The dead owners this join recovered the run from (descriptions).
    recovered: tuple[str, ...] = ()


def filters_key(filter_names: Sequence[str]) -> str:
    """The run record's GenericFilters: the filter names, sorted, joined by ';'."""
    return ";".join(sorted(filter_names))


def open_run_record(conn: sa.Connection, ctx: Context, period_start: date, period_end: date,
                    invoice_date: date | None, filter_names: Sequence[str],
                    owner: "RunOwner | None" = None) -> OpenedRun:
    """Find the run with the same period and filters (and join it, marked
    Running again) or create one. With ``owner``, the process is recorded as
    an owner of the run, and a join first recovers the run from owners that
    died (their rows go, the log names them)."""
    table = ctx.table("InvoiceRun")
    key = filters_key(filter_names)
    if conn.dialect.name == "postgresql":
        # Two runs of the same period and filters started at the same moment
        # (several machines, several workers) must find one run record, not
        # create one each: the check-then-insert below runs under a lock per
        # (period, filters), held until this transaction commits. SQLite's
        # BEGIN IMMEDIATE already serializes it.
        lock_key = f"{period_start}|{period_end}|{key}"
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_class("run"), sa.func.hashtext(lock_key))))
    row = conn.execute(
        sa.select(table.c.id, table.c.name, table.c.invoicedate)
        .where(table.c.periodstartdate == period_start)
        .where(table.c.periodenddate == period_end)
        .where(table.c.genericfilters == key)
        .order_by(table.c.id)
        .limit(1)
    ).first()
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if row is not None:
        recovered: tuple[str, ...] = ()
        values = dict(status="Running", startedat=now, lastmodifieddate=now)
        if owner is not None:
            recovered = tuple(describe_owner(o) for o in _remove_dead_owners(conn, row.id))
            if recovered:
                log = conn.execute(sa.select(table.c.log).where(table.c.id == row.id)).scalar_one() or ""
                note = f"{_stamp(now)} recovered: " + "; ".join(recovered)
                values["log"] = (log + "\n" + note if log else note)[-LOG_LENGTH:]
            add_owner(conn, row.id, owner)
        conn.execute(sa.update(table).where(table.c.id == row.id).values(**values))
        return OpenedRun(row.id, row.name, True, row.invoicedate, recovered)
    record = {
        "periodstartdate": period_start,
        "periodenddate": period_end,
        "invoicedate": invoice_date,
        "genericfilters": key,
        "status": "Running",
        "startedat": now,
        "confighash": ctx.config_hash,
    }
    RowWriter(conn, ctx.obj("InvoiceRun")).insert([record])
    if owner is not None:
        add_owner(conn, record["id"], owner)
    return OpenedRun(record["id"], record["name"], False, invoice_date)


def close_run_record(conn: sa.Connection, ctx: Context, run_id: int, report: RunReport,
                     owner: "RunOwner | None" = None) -> None:
    """Mark the run Completed with its totals (counted from the invoices the
    run record holds, earlier joined runs included), its errors and a log.
    With ``owner``, the process stops owning the run; while another process
    still works on it, it stays Running (that process completes it)."""
    table = ctx.table("InvoiceRun")
    status = "Completed"
    if owner is not None:
        remove_owner(conn, run_id, owner)
        if any(owner_alive(conn, other) for other in owners_of(conn, run_id)):
            status = "Running"
        else:
            _remove_dead_owners(conn, run_id)
    invoice = ctx.table("Invoice")
    counts = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((invoice.c.grandtotal >= 0, 1), else_=0)),
        ).where(invoice.c.invoicerun == run_id)
    ).first()
    total = int(counts[0] or 0)
    positive = int(counts[1] or 0)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    conn.execute(
        sa.update(table)
        .where(table.c.id == run_id)
        .values(
            status=status,
            finishedat=now,
            lastmodifieddate=now,
            numinvoices=Decimal(total),
            numpositiveinvoices=Decimal(positive),
            numnegativeinvoices=Decimal(total - positive),
            errorcount=Decimal(report.failure_count),
            duration=Decimal(str(round(report.seconds, 2))),
            log=run_log(report)[:LOG_LENGTH],
        )
    )


def run_log(report: RunReport) -> str:
    """The run record's log: a line per filter, then its first failures."""
    lines = [f"recovered: {note}" for note in getattr(report, "recovered", ())]
    lines += [
        f"{f.name}: {f.records_read} read, {f.invoices} invoices, {f.lines} lines, {len(f.failures)} errors"
        for f in report.filters
    ]
    for f in report.filters:
        for failure in f.failures[:LOGGED_FAILURES]:
            lines.append(f"  {failure.object_name} {failure.record_id}: {failure.message}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Owners: which processes work on a run, and whether they still live


@dataclass(frozen=True)
class RunOwner:
    """A process working on a run: a random token, the host, the pid and the
    process's start time (tells a reused pid apart)."""

    token: str
    host: str
    pid: int
    process_started: str | None

    @classmethod
    def this_process(cls) -> "RunOwner":
        pid = os.getpid()
        return cls(uuid.uuid4().hex, socket.gethostname()[:255], pid, process_start_time(pid))


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux
    ``/proc/<pid>/stat`` field 22); None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> str:
    return _stamp(datetime.now(timezone.utc))


def _owner_lock_key(token: str) -> tuple[sa.ColumnElement[int], sa.ColumnElement[int]]:
    return lock_class("runowner"), sa.func.hashtext(token)


def add_owner(conn: sa.Connection, run_id: int, owner: RunOwner) -> None:
    """Record ``owner`` as working on the run (inside the opening transaction)."""
    RUN_OWNER.create(conn, checkfirst=True)
    now = _now()
    conn.execute(sa.insert(RUN_OWNER).values(run_id=run_id, token=owner.token, host=owner.host, pid=owner.pid,
                                             process_started=owner.process_started, started_at=now,
                                             heartbeat_at=now))


def remove_owner(conn: sa.Connection, run_id: int, owner: RunOwner) -> None:
    if sa.inspect(conn).has_table(RUN_OWNER.name):
        conn.execute(sa.delete(RUN_OWNER).where(RUN_OWNER.c.run_id == run_id, RUN_OWNER.c.token == owner.token))


def touch_owner(conn: sa.Connection, owner: RunOwner) -> None:
    """The owner's heartbeat (each committed batch of the run carries one)."""
    conn.execute(sa.update(RUN_OWNER).where(RUN_OWNER.c.token == owner.token).values(heartbeat_at=_now()))


def owners_of(conn: sa.Connection, run_id: int) -> list[dict]:
    if not sa.inspect(conn).has_table(RUN_OWNER.name):
        return []
    rows = conn.execute(sa.select(RUN_OWNER).where(RUN_OWNER.c.run_id == run_id).order_by(RUN_OWNER.c.started_at))
    return [dict(r._mapping) for r in rows]


def owner_alive(conn: sa.Connection, owner: dict, *, now: datetime | None = None) -> bool:
    """Whether the process of an owner row still works on its run (see the
    module docstring): PostgreSQL asks for its lock, SQLite looks at the
    process on this machine, or at the heartbeat of one on another."""
    same_host = owner["host"] == socket.gethostname()[:255]
    if conn.dialect.name == "postgresql":
        first, second = _owner_lock_key(owner["token"])
        free = conn.execute(sa.select(sa.func.pg_try_advisory_lock(first, second))).scalar_one()
        if free:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(first, second)))
            return False
        # The server notices a killed client's closed connection only some
        # moments later and holds its lock until then; on this machine the
        # process table already knows.
        return not (same_host and int(owner["pid"]) != os.getpid()
                    and not process_runs(int(owner["pid"]), owner.get("process_started")))
    if same_host:
        if int(owner["pid"]) == os.getpid() and owner.get("process_started") == process_start_time(os.getpid()):
            return owner["token"] in ACTIVE_TOKENS  # this process: does it still work on that run?
        return process_runs(int(owner["pid"]), owner.get("process_started"))
    beat = datetime.strptime(owner["heartbeat_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    return (now or datetime.now(timezone.utc)) - beat < STALE_AFTER


def process_runs(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` of this host runs, and is the one that started
    at ``started`` (not another that reuses the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists (another user's process)
    if started is not None:
        current = process_start_time(pid)
        if current is not None and current != started:
            return False  # the pid was reused by another process
    return True


def describe_owner(owner: dict) -> str:
    return (f"process {owner['pid']} on {owner['host']} (started {owner['started_at']}, "
            f"last heartbeat {owner['heartbeat_at']}) had stopped")


def _remove_dead_owners(conn: sa.Connection, run_id: int) -> list[dict]:
    """Remove the run's owner rows whose processes are dead; return them."""
    dead = [o for o in owners_of(conn, run_id) if not owner_alive(conn, o)]
    for owner in dead:
        conn.execute(sa.delete(RUN_OWNER).where(RUN_OWNER.c.run_id == run_id, RUN_OWNER.c.token == owner["token"]))
    return dead


#: The owner tokens this process works under right now (an owner row of this
#: very process is dead once its run stopped here, even though the pid lives).
ACTIVE_TOKENS: set[str] = set()


class OwnerLock:
    """PostgreSQL: a session advisory lock held by this process while it owns
    a run, on a connection of its own (in autocommit, so no transaction stays
    open). The server releases it when the process or its connection dies:
    that is how another process tells a dead owner from a busy one. On
    SQLite the pid tells it, and within this process :data:`ACTIVE_TOKENS`."""

    def __init__(self, engine: sa.Engine, owner: RunOwner):
        self.engine = engine
        self.owner = owner
        self._conn: sa.Connection | None = None

    def __enter__(self) -> "OwnerLock":
        ACTIVE_TOKENS.add(self.owner.token)
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                first, second = _owner_lock_key(self.owner.token)
                conn.execute(sa.select(sa.func.pg_advisory_lock(first, second)))
            except BaseException:
                # No owner: ``__exit__`` will not run, so the token and the
                # connection are given back here. A process that retries (a
                # worker, the job scheduler) would otherwise hold one pooled
                # connection per failure until the pool runs dry, and keep an
                # owner "alive" that works on nothing. The connection is
                # discarded, not pooled: whether the server granted the lock
                # before the failure is unknown, and only closing the session
                # surely releases it.
                ACTIVE_TOKENS.discard(self.owner.token)
                conn.invalidate()
                conn.close()
                raise
            self._conn = conn
        return self

    def __exit__(self, *exc) -> None:
        ACTIVE_TOKENS.discard(self.owner.token)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                first, second = _owner_lock_key(self.owner.token)
                conn.execute(sa.select(sa.func.pg_advisory_unlock(first, second)))
            except BaseException:
                # A pooled session that still held the lock would keep this
                # owner looking alive to every other process: close it instead.
                conn.invalidate()
                raise
            finally:
                conn.close()


def fail_run_record(conn: sa.Connection, ctx: Context, run_id: int, owner: RunOwner | None, reason: str) -> None:
    """Mark the run Failed after an error stopped this process (unless another
    owner still works on it), with the reason in its log; the batches
    committed so far stay, and running the same command again bills the rest."""
    table = ctx.table("InvoiceRun")
    if owner is not None:
        remove_owner(conn, run_id, owner)
        if any(owner_alive(conn, other) for other in owners_of(conn, run_id)):
            return
    now = datetime.now(timezone.utc).replace(microsecond=0)
    log = conn.execute(sa.select(table.c.log).where(table.c.id == run_id)).scalar_one_or_none() or ""
    note = f"{_stamp(now)} failed: {reason}"
    conn.execute(sa.update(table).where(table.c.id == run_id).values(
        status="Failed", finishedat=now, lastmodifieddate=now, log=(log + "\n" + note if log else note)[-LOG_LENGTH:]))


# ---------------------------------------------------------------------------
# metabill runs: which runs there are, and recovering the dead ones


@dataclass(frozen=True)
class RunState:
    """One invoice run as ``metabill runs`` shows it. ``state`` is the status,
    except that a Running run none of whose owners is alive is ``Dead``."""

    id: int
    name: str
    status: str
    state: str
    period_start: date | None
    period_end: date | None
    filters: str
    started_at: datetime | None
    finished_at: datetime | None
    invoices: int
    errors: int
    owners: tuple[str, ...] = field(default=())
    #: The run's newest work-queue round (a parallel run): done/total chunks,
    #: lines, ETA (``engine.billing.workqueue.QueueProgress``); None without one.
    queue: object | None = None

    @property
    def dead(self) -> bool:
        return self.state == "Dead"


def runs_state(conn: sa.Connection, ctx: Context, *, names: Sequence[str] = (), limit: int | None = None
               ) -> list[RunState]:
    """The invoice runs (newest first, or those named), each with its owners
    and whether a Running one is alive."""
    table = ctx.table("InvoiceRun")
    query = sa.select(table).order_by(table.c.id.desc())
    if names:
        ids = [find_run(conn, ctx, name) for name in names]
        query = query.where(table.c.id.in_(ids))
    if limit is not None:
        query = query.limit(limit)
    from .workqueue import progress_of  # the queue builds on this module

    out = []
    for row in conn.execute(query).mappings():
        owners = owners_of(conn, row["id"])
        alive = [o for o in owners if owner_alive(conn, o)]
        state = row["status"] or ""
        if state == "Running" and not alive:
            state = "Dead"
        shown = tuple(f"process {o['pid']} on {o['host']}, heartbeat {o['heartbeat_at']}"
                      + ("" if o in alive else " (dead)") for o in owners)
        out.append(RunState(row["id"], row["name"], row["status"] or "", state, row["periodstartdate"],
                            row["periodenddate"], row["genericfilters"] or "", row["startedat"], row["finishedat"],
                            int(row["numinvoices"] or 0), int(row["errorcount"] or 0), shown,
                            progress_of(conn, row["id"])))
    return out


def recover_dead_runs(conn: sa.Connection, ctx: Context, *, names: Sequence[str] = ()) -> list[RunState]:
    """Mark every Running run without a live owner (of ``names``, or all)
    Failed, with its dead owners in the log; returns them as they were. The
    committed batches stay; the same run again bills the rest."""
    dead = [run for run in runs_state(conn, ctx, names=names) if run.dead]
    for run in dead:
        gone = _remove_dead_owners(conn, run.id)
        reason = "; ".join(describe_owner(o) for o in gone) or "no process was working on it"
        fail_run_record(conn, ctx, run.id, None, f"recovered by 'metabill runs --recover': {reason}")
        if sa.inspect(conn).has_table(WORK_ROUND.name):  # its queue closes: no worker joins it any more
            conn.execute(sa.update(WORK_ROUND).where(WORK_ROUND.c.run_id == run.id, WORK_ROUND.c.state == "open")
                         .values(state="closed"))
    return dead
