"""Entry points of the worker processes the work-queue tests start (spawned:
a fresh interpreter each, so they live in an importable module).

:func:`worker_proc` is ``metabill worker --run`` as a library call: it loads
the org, joins the run's open round and drains it, optionally with the
kill-a-worker fault point armed and with a clock ahead of real time (so the
heartbeats of earlier owners look older than the lease: time injected, not
slept).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

from contexts import context


def worker_proc(org_dir: str, url: str, run_name: str, marker: str | None, clock_ahead: float, queue) -> None:
    from engine.billing.workers import join_run
    from engine.billing.workqueue import QueueSettings
    from engine.project import load_project

    try:
        if marker:
            os.environ["METABILL_FAILPOINT_KILL_WORKER"] = marker
        model = load_project(Path(org_dir)).model
        # The lease alone decides (not the process table): the test moves this
        # worker's clock ahead to reap the chunk of a dead one.
        settings = QueueSettings(lease_seconds=60, poll_seconds=0.05, check_local_processes=False)
        ran = join_run(url, context(model), run_name, settings=settings, clock=lambda: time.time() + clock_ahead)
        queue.put(("ran", ran))
    except BaseException:  # noqa: BLE001 - reported to the test
        queue.put(("error", traceback.format_exc()))
