"""Entry points of the processes the cancellation race tests start (spawned:
a fresh interpreter each, so they live in an importable module).

Each loads the sample org, opens its own engine on the test database, waits
at the barrier so that all start together, and puts ``(kind, result)`` on
the queue: ``cancelled`` with the cancellation's number, ``refused`` with
the message of a CancelError or PaymentError, ``paid`` with the number of
payments registered, or ``error`` with a traceback (a failure of the test).
"""

from __future__ import annotations

import time
import traceback
from datetime import date
from decimal import Decimal


def _setup(url: str):
    from config.orgcopy import REPO_ROOT
    from engine.project import open_context
    from engine.storage.db import open_engine

    return open_context(REPO_ROOT), open_engine(url)


def cancel_proc(url: str, invoice: str, barrier, queue) -> None:
    from engine.booking.errors import CancelError
    from engine.project import cancel_invoice

    try:
        ctx, engine = _setup(url)
        barrier.wait(timeout=120)
        try:
            done = cancel_invoice(engine, ctx, invoice, reason="race", when=date(2024, 3, 1))
            queue.put(("cancelled", done.finalized.number))
        except CancelError as error:
            queue.put(("refused", str(error)))
        engine.dispose()
    except BaseException:  # noqa: BLE001 - reported to the test
        queue.put(("error", traceback.format_exc()))


def pay_proc(url: str, invoice: str, amounts: list[str], barrier, queue) -> None:
    from engine.cash.errors import PaymentError
    from engine.cash.service import register_payment

    try:
        ctx, engine = _setup(url)
        barrier.wait(timeout=120)
        paid, refused = 0, []
        for amount in amounts:
            try:
                register_payment(engine, ctx, invoice, Decimal(amount), date(2024, 2, 20))
                paid += 1
            except PaymentError as error:  # the invoice was cancelled meanwhile
                refused.append(str(error))
        queue.put(("paid", (paid, refused)))
        engine.dispose()
    except BaseException:  # noqa: BLE001
        queue.put(("error", traceback.format_exc()))


def cancel_and_hang_proc(url: str, invoice: str, ready, queue) -> None:
    """Cancel, but stop for good after the cancellation draft was written
    inside the transaction (the test kills the process there)."""
    from engine.booking import finalize
    from engine.project import cancel_invoice

    try:
        ctx, engine = _setup(url)

        def hang(*_args, **_kwargs):
            ready.set()
            while True:
                time.sleep(1)

        finalize._finalize_set = hang  # the finalization of the cancellation draft
        cancel_invoice(engine, ctx, invoice, reason="killed", when=date(2024, 3, 1))
        queue.put(("error", "the cancellation returned although it was meant to hang"))
    except BaseException:  # noqa: BLE001
        queue.put(("error", traceback.format_exc()))
