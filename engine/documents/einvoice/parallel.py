"""Validating many e-invoices at once: the same full validation, on more cores.

Finalization validates every e-invoice it issues in full (XSD, EN 16931 and
XRechnung rules, :func:`.validation.validate_xml`); the Schematron rules cost
milliseconds per document, most of issuing a document. Saxon keeps the GIL
while it runs, so threads would not overlap it with anything: a batch's
documents go to worker processes instead, in chunks handed out from the front
by a feeder thread (which only waits on pipes), while this process renders
the batch's HTML; then this process validates chunks from the back until the
two meet (:meth:`PendingValidation.results`).

What a worker returns is :func:`~.validation.validate_xml` of the very
bytes that are stored, so the result is the same as in this process; a
worker that dies or a pool that cannot start costs time, never a
validation: the chunks concerned are validated here. Small batches (below
:data:`MIN_DOCUMENTS`) are validated here directly, and no worker is ever
started for them.

Workers: ``METABILL_VALIDATION_WORKERS`` (0 turns them off), else the CPUs
this process may use that are idle (by the load average) less its own, at
most :data:`MAX_WORKERS`, decided once per command, when it first issues
e-invoices. Each worker
compiles the rule sets once (about a second) and holds them (about 150 MB)
until the command's context is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
import weakref
from multiprocessing.connection import wait
from typing import Any, Sequence

from .validation import Violation, compile_rules, validate_xml

#: Environment variable: the number of validation worker processes.
WORKERS_ENV = "METABILL_VALIDATION_WORKERS"
#: At most this many workers by default.
MAX_WORKERS = 4
#: Fewer documents than this are validated in this process.
MIN_DOCUMENTS = 64
#: Documents per chunk handed to a worker: small enough that this process
#: and the workers finish together, large enough that round trips do not matter.
CHUNK = 8


def worker_count() -> int:
    """How many validation workers a command may start (see the module docstring)."""
    configured = os.environ.get(WORKERS_ENV, "").strip()
    if configured:
        try:
            return max(int(configured), 0)
        except ValueError:
            return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        # CPUs nobody uses now, less the one this process needs: on a busy
        # machine a worker only competes with it (measured: no gain at a
        # load of 4-6 on two CPUs, and the cost of compiling the rules again).
        spare = int(cpus - os.getloadavg()[0] - 1 + 0.5)
    except OSError:
        spare = cpus - 1
    return max(min(cpus - 1, spare, MAX_WORKERS), 0)


def validate_all(documents: Sequence[bytes]) -> list[list[Violation]]:
    """Every document validated in this process, in order (a worker's task)."""
    return [validate_xml(data) for data in documents]


def _serve(conn) -> None:
    """A worker: compile the rule sets, then validate chunks until told to stop."""
    compile_rules()
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        try:
            conn.send(("ok", validate_all(chunk)))
        except Exception:  # noqa: BLE001 - the caller validates the chunk itself and sees the error
            conn.send(("error", traceback.format_exc()))


class PendingValidation:
    """A batch's validation under way: chunks from the front go to the
    workers (a feeder thread), :meth:`results` takes chunks from the back."""

    def __init__(self, documents: Sequence[bytes], workers: list["_Worker"] | None = None):
        self._documents = documents
        self._bounds = [(start, min(start + CHUNK, len(documents))) for start in range(0, len(documents), CHUNK)]
        self._done: dict[int, list[list[Violation]]] = {}
        self._lock = threading.Lock()
        self._front, self._back = 0, len(self._bounds)
        self._feeder: threading.Thread | None = None
        #: Chunks a worker validated (the rest were validated here).
        self.worker_chunks = 0
        if workers:
            self._feeder = threading.Thread(target=self._feed, args=(workers,), daemon=True,
                                            name="einvoice-validation-feeder")
            self._feeder.start()

    def _take_front(self) -> int | None:
        with self._lock:
            if self._front >= self._back:
                return None
            self._front += 1
            return self._front - 1

    def _take_back(self) -> int | None:
        with self._lock:
            if self._back <= self._front:
                return None
            self._back -= 1
            return self._back

    def _feed(self, workers: list["_Worker"]) -> None:
        busy: dict[Any, tuple[_Worker, int]] = {}  # pipe -> (worker, chunk)
        idle = [w for w in workers if w.alive()]
        while True:
            while idle:
                index = self._take_front()
                if index is None:
                    break
                worker = idle.pop()
                start, end = self._bounds[index]
                if worker.send(list(self._documents[start:end])):
                    busy[worker.conn] = (worker, index)
                else:
                    worker.dead = True  # the chunk stays without a result: validated here
            if not busy:
                return
            sentinels = {worker.process.sentinel: conn for conn, (worker, _) in busy.items()}
            for ready in wait([*busy, *sentinels]):
                conn = sentinels.get(ready, ready)
                if conn not in busy:
                    continue
                worker, index = busy.pop(conn)
                answer = worker.receive()
                if answer is None:  # died with the chunk: it is validated here
                    worker.dead = True
                    continue
                if answer[0] == "ok":
                    self._done[index] = answer[1]
                    self.worker_chunks += 1
                idle.append(worker)

    def cancel(self) -> None:
        """Hand out no more chunks (the batch will not be issued) and wait
        for the chunks the workers hold, so their pipes are empty for the
        next batch."""
        with self._lock:
            self._back = self._front
        if self._feeder is not None:
            self._feeder.join()

    def results(self) -> list[list[Violation]]:
        """The violations of every document, in the order given: chunks no
        worker took are validated here, from the back; so is a chunk whose
        worker died or failed (never skipped)."""
        while (index := self._take_back()) is not None:
            start, end = self._bounds[index]
            self._done[index] = validate_all(self._documents[start:end])
        if self._feeder is not None:
            self._feeder.join()
        out: list[list[Violation]] = []
        for index, (start, end) in enumerate(self._bounds):
            found = self._done.get(index)
            out.extend(found if found is not None else validate_all(self._documents[start:end]))
        return out


class _Worker:
    """One validation process and its pipe."""

    def __init__(self, context):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,), daemon=True, name="einvoice-validator")
        self.process.start()
        child.close()
        self.dead = False

    def alive(self) -> bool:
        return not self.dead and self.process.is_alive()

    def send(self, chunk: list[bytes]) -> bool:
        try:
            self.conn.send(chunk)
            return True
        except (OSError, ValueError):
            return False

    def receive(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


class Validators:
    """The validation workers of one command (``ctx.service(Validators)``),
    started on the first batch large enough to need them, stopped when the
    command's context is gone (or by :meth:`close`)."""

    def __init__(self, ctx: object = None, *, workers: int | None = None):
        self.workers = worker_count() if workers is None else workers
        self._running: list[_Worker] = []
        self._stopper = weakref.finalize(self, _stop_all, self._running)
        self._last: PendingValidation | None = None

    def submit(self, documents: Sequence[bytes]) -> PendingValidation:
        """Start validating ``documents``; the caller collects the results
        with :meth:`PendingValidation.results` after doing other work."""
        if self._last is not None:  # a batch abandoned by an error: its chunks must be off the pipes
            self._last.cancel()
            self._last = None
        if self.workers <= 0 or len(documents) < MIN_DOCUMENTS:
            return PendingValidation(documents)
        self._last = PendingValidation(documents, self._started())
        return self._last

    def _started(self) -> list[_Worker]:
        for worker in [w for w in self._running if not w.alive()]:  # died since the last batch
            worker.stop()
            self._running.remove(worker)
        context = multiprocessing.get_context("spawn")  # a fork would copy connections and Saxon's runtime
        while len(self._running) < self.workers:
            try:
                self._running.append(_Worker(context))
            except OSError:  # no process can be started: this process validates alone
                break
        return list(self._running)

    def close(self) -> None:
        """Stop the workers."""
        if self._last is not None:
            self._last.cancel()
            self._last = None
        self._stopper()


__all__ = ["CHUNK", "MIN_DOCUMENTS", "PendingValidation", "Validators", "WORKERS_ENV", "validate_all",
           "worker_count"]
