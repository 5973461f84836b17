"""Entry points of the processes the concurrency tests start (spawned: a
fresh interpreter each, so they must live in an importable module).

Each process loads the org, opens its own engine, waits at the barrier so
that all start the operation at the same moment, and puts ``(name, result
or error text)`` on the queue.
"""

from __future__ import annotations

import traceback
from datetime import date
from decimal import Decimal
from pathlib import Path
from contexts import context


def _setup(org_dir: str, url: str):
    from engine.project import load_project
    from engine.storage.db import open_engine

    model = load_project(Path(org_dir)).model
    return model, open_engine(url)


def run_invoices_proc(org_dir: str, url: str, batch_size: int, barrier, queue) -> None:
    from engine.billing.run import RunRequest, run_invoices

    try:
        model, engine = _setup(org_dir, url)
        request = RunRequest(filters=("Usage",), period_start=date(2024, 1, 1), period_end=date(2024, 12, 31),
                             batch_size=batch_size, today=date(2024, 12, 31))
        barrier.wait(timeout=120)
        report = run_invoices(engine, context(model), request)
        queue.put(("run", (report.run_id, report.invoice_count, report.line_count)))
        engine.dispose()
    except BaseException:  # noqa: BLE001 - reported to the test
        queue.put(("error", traceback.format_exc()))


def run_and_hang_proc(org_dir: str, url: str, barrier, queue) -> None:
    """An invoice run that stops after its first committed batch and hangs
    there (the test then kills the process, or lets it live)."""
    import time

    from engine.billing import session as session_module
    from engine.billing.run import RunRequest, run_invoices

    try:
        model, engine = _setup(org_dir, url)
        original = session_module.RunSession.write
        writes = [0]

        def write(self, work):
            result = original(self, work)
            writes[0] += 1
            if writes[0] == 2:  # the run record is open, one batch is committed
                queue.put(("hanging", writes[0]))
                time.sleep(3600)
            return result

        session_module.RunSession.write = write
        request = RunRequest(filters=("Usage",), period_start=date(2024, 1, 1), period_end=date(2024, 12, 31),
                             batch_size=2, today=date(2024, 12, 31))
        barrier.wait(timeout=120)
        run_invoices(engine, context(model), request)
    except BaseException:  # noqa: BLE001
        queue.put(("error", traceback.format_exc()))


def run_workers_proc(org_dir: str, url: str, workers: int, barrier, queue) -> None:
    from engine.billing.run import RunRequest
    from engine.billing.workers import run_invoices_parallel
    from engine.project import load_project

    try:
        model = load_project(Path(org_dir)).model
        request = RunRequest(filters=("Usage",), period_start=date(2024, 1, 1), period_end=date(2024, 12, 31),
                             batch_size=3, today=date(2024, 12, 31))
        barrier.wait(timeout=120)
        report = run_invoices_parallel(url, Path(org_dir), context(model), request, workers)
        queue.put(("run", (report.run_id, report.invoice_count, report.line_count)))
    except BaseException:  # noqa: BLE001
        queue.put(("error", traceback.format_exc()))


def finalize_proc(org_dir: str, url: str, ids: list[int], barrier, queue) -> None:
    from engine.booking.finalize import finalize_invoices

    try:
        model, engine = _setup(org_dir, url)
        barrier.wait(timeout=120)
        report = finalize_invoices(engine, context(model), ids, today=date(2024, 12, 31))
        queue.put(("finalized", ([(f.invoice_id, f.number) for f in report.finalized], report.failures)))
        engine.dispose()
    except BaseException:  # noqa: BLE001
        queue.put(("error", traceback.format_exc()))


def pay_proc(org_dir: str, url: str, invoice_name: str, amounts: list[str], barrier, queue) -> None:
    from engine.cash.payments import register_payment
    from engine.storage.retry import run_in_transaction

    try:
        model, engine = _setup(org_dir, url)
        barrier.wait(timeout=120)
        for amount in amounts:
            run_in_transaction(engine, lambda conn: register_payment(conn, context(model), invoice_name, Decimal(amount),
                                                                     date(2024, 12, 31)))
        queue.put(("paid", len(amounts)))
        engine.dispose()
    except BaseException:  # noqa: BLE001
        queue.put(("error", traceback.format_exc()))
