"""Worker processes that may die: tasks handed out one at a time, and the
task of a worker that died handed to a fresh worker.

``multiprocessing.Pool`` loses the task of a worker killed by the kernel
(SIGKILL, the OOM killer): the pool starts a replacement process, but the
result never arrives and ``map`` waits forever, while the run stays
"Running". :class:`Supervisor` instead gives each worker its own pipe and
one task at a time, so it always knows which task a worker holds; it waits
on the workers' pipes and on their process sentinels together
(``multiprocessing.connection.wait``), so a death is noticed at once, not
by a timeout. The dead worker's task goes to a new worker, at most
:data:`MAX_ATTEMPTS` times in all (``max_attempts``); a task that raises is
not retried (the error is the answer).

The parallel invoice run gives each local worker one task, "drain the
run's work queue" (:mod:`engine.billing.workers`); a worker that dies is
replaced by a fresh one that drains on, and the chunk the dead one held is
re-queued by the queue's reaper (:mod:`engine.billing.workqueue`), which
also bounds the attempts per chunk. The supervisor only keeps the local
processes running (``max_attempts`` bounds the deaths it accepts per task)
and lets the caller show progress while it waits (``tick``).
"""

from __future__ import annotations

import multiprocessing
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator

#: Times a task is started in all before a run gives up on it (a task whose
#: worker dies every time, e.g. killed for its memory, fails the run).
MAX_ATTEMPTS = 3


class TaskFailed(Exception):
    """A task raised in its worker (``detail`` is the traceback text), or its
    worker died :data:`MAX_ATTEMPTS` times."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def _serve(conn, init: Callable[..., None], init_args: tuple, handler: Callable[[Any], Any]) -> None:
    """A worker process: set up once, then answer tasks until told to stop."""
    init(*init_args)
    while True:
        task = conn.recv()
        if task is None:
            return
        try:
            result = ("ok", handler(task))
        except BaseException as error:  # noqa: BLE001 - sent to the supervisor, which raises it
            result = ("error", f"{type(error).__name__}: {error}", traceback.format_exc())
        conn.send(result)


class Supervisor:
    """``workers`` spawned processes that run ``handler(task)`` after
    ``init(*init_args)``; see the module docstring. Use as a context
    manager; :meth:`run` hands out tasks and yields ``(task, result)`` as
    results arrive."""

    def __init__(self, workers: int, init: Callable[..., None], init_args: tuple, handler: Callable[[Any], Any],
                 start_method: str = "spawn", max_attempts: int = MAX_ATTEMPTS):
        self.size = max(1, workers)
        self.max_attempts = max(1, max_attempts)
        self.init, self.init_args, self.handler = init, init_args, handler
        self.context = multiprocessing.get_context(start_method)
        self._workers: list[tuple[Any, Any]] = []  # (process, parent end of its pipe)
        #: Processes that died, for the report (pid, exit code).
        self.deaths: list[tuple[int, int | None]] = []

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> tuple[Any, Any]:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(child, self.init, self.init_args, self.handler),
                                       daemon=True)
        process.start()
        child.close()
        worker = (process, parent)
        self._workers.append(worker)
        return worker

    def _retire(self, worker: tuple[Any, Any]) -> None:
        process, conn = worker
        self._workers.remove(worker)
        conn.close()
        process.join(timeout=5)
        if process.is_alive():  # its pipe broke but it lives on: it cannot be trusted with a task
            process.kill()
            process.join()

    def run(self, tasks: Iterable[Any], tick: Callable[[], None] | None = None,
            tick_seconds: float = 1.0) -> Iterator[tuple[Any, Any]]:
        """Run every task once (again on a new worker when its worker died);
        yields ``(task, result)`` in the order they finish. Raises
        :class:`TaskFailed` for the first task that raised or ran out of
        attempts; the other workers are stopped (see :meth:`close`).
        ``tick`` is called about every ``tick_seconds`` while tasks run (a
        progress display); it does not decide anything."""
        pending = [(task, 1) for task in tasks]
        pending.reverse()  # pop() from the end hands them out in order
        busy: dict[Any, tuple[Any, Any, int]] = {}  # conn -> (worker, task, attempt)
        idle = list(self._workers)
        while pending or busy:
            while pending and (idle or len(self._workers) < self.size):
                worker = idle.pop() if idle else self._start()
                task, attempt = pending.pop()
                worker[1].send(task)
                busy[worker[1]] = (worker, task, attempt)
            by_sentinel = {worker[0].sentinel: conn for conn, (worker, _, _) in busy.items()}
            ready_list = wait([*busy, *by_sentinel], timeout=tick_seconds if tick is not None else None)
            if tick is not None:
                tick()
            for ready in ready_list:
                conn = by_sentinel.get(ready, ready)
                if conn not in busy:
                    continue  # handled through its other handle in this round
                worker, task, attempt = busy[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):  # the worker died with the task
                    del busy[conn]
                    self._retire(worker)  # reaped: its exit code is known
                    self.deaths.append((worker[0].pid, worker[0].exitcode))
                    if attempt >= self.max_attempts:
                        raise TaskFailed(f"a worker died {attempt} times running the same task "
                                         f"(last exit code {worker[0].exitcode})") from None
                    pending.append((task, attempt + 1))
                    continue
                del busy[conn]
                idle.append(worker)
                if message[0] == "error":
                    raise TaskFailed(message[1], message[2])
                yield task, message[1]

    def close(self) -> None:
        """Stop every worker: the idle ones are told to, the others (still
        running a task after a failure elsewhere) are terminated."""
        for process, conn in list(self._workers):
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for worker in list(self._workers):
            process, conn = worker
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            conn.close()
        self._workers.clear()
