"""Cancellation races, with real processes (issue 14, "Races").

* Simultaneous cancellations of one invoice make exactly one cancellation
  and leave no stray cancellation draft.
* A cancellation racing payments of the same invoice completes (it is run
  again after a serialization failure); every payment either lands before
  the cancellation (and becomes free credit) or is refused cleanly after it.
* A cancellation killed after its draft was written leaves nothing: the
  retry succeeds.

On PostgreSQL the processes really overlap (row locks, REPEATABLE READ,
retries); on SQLite they take turns (BEGIN IMMEDIATE). Before the fix the
draft was committed on its own: the loser of a race left a stray draft, and
a killed cancellation left a draft that refused the retry.
"""

from __future__ import annotations

import multiprocessing
from datetime import date

from . import lifecycle_procs as procs
from .helpers import ZERO, Books, D, assert_books_balance

CTX = multiprocessing.get_context("spawn")
TIMEOUT = 300


def _race(target, argsets: list[tuple]) -> list[tuple]:
    barrier = CTX.Barrier(len(argsets))
    queue = CTX.Queue()
    processes = [CTX.Process(target=target, args=(*args, barrier, queue)) for args in argsets]
    for process in processes:
        process.start()
    results = [queue.get(timeout=TIMEOUT) for _ in processes]
    for process in processes:
        process.join(timeout=TIMEOUT)
    errors = [text for kind, text in results if kind == "error"]
    assert not errors, errors[0]
    return results


def _invoice(books: Books) -> str:
    step = books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 1, 31), today=date(2024, 1, 31))
    assert step.numbers and not step.finalized.failures
    return step.numbers[0]


def _cancellations(books: Books, original: str) -> list[dict]:
    original_id = books.invoice(original)["id"]
    return [i for i in books.invoices(books.t("Invoice").c.relatedinvoice == original_id)
            if i["type"] == "Cancelation"]


def test_simultaneous_cancellations_make_one_cancellation(books):
    name = _invoice(books)
    results = _race(procs.cancel_proc, [(books.url, name)] * 3)
    kinds = sorted(kind for kind, _ in results)
    assert kinds == ["cancelled", "refused", "refused"], results
    assert all("is Canceled" in text for kind, text in results if kind == "refused"), results
    cancellations = _cancellations(books, name)
    assert [c["status"] for c in cancellations] == ["Settled"]  # no stray draft
    assert not books.invoices(books.t("Invoice").c.status == "Draft")
    assert books.invoice(name)["status"] == "Canceled"
    assert_books_balance(books)


def test_a_cancellation_racing_payments_completes(books):
    name = _invoice(books)
    grand_total = books.invoice(name)["grandtotal"]
    part = (grand_total / 4).quantize(D("0.01"))
    results = _race_mixed(books, name, part)
    outcome = dict(results)
    assert outcome["cancelled"].startswith("CR-"), results
    paid, refused = outcome["paid"]
    assert paid + len(refused) == 3
    assert all("Canceled" in message for message in refused), refused
    assert [c["status"] for c in _cancellations(books, name)] == ["Settled"]
    # the payments that landed became free credit of the account when the invoice was cancelled
    payments = [b for b in books.balances(books.t("Balance").c.type == "Payment")]
    assert len(payments) == paid and all(b["invoice"] is None for b in payments)
    assert books.free_balances("10001") == -part * paid
    assert_books_balance(books)


def _race_mixed(books: Books, name: str, part) -> list[tuple]:
    barrier = CTX.Barrier(2)
    queue = CTX.Queue()
    processes = [CTX.Process(target=procs.cancel_proc, args=(books.url, name, barrier, queue)),
                 CTX.Process(target=procs.pay_proc, args=(books.url, name, [str(part)] * 3, barrier, queue))]
    for process in processes:
        process.start()
    results = [queue.get(timeout=TIMEOUT) for _ in processes]
    for process in processes:
        process.join(timeout=TIMEOUT)
    errors = [text for kind, text in results if kind == "error"]
    assert not errors, errors[0]
    return results


def test_a_killed_cancellation_leaves_nothing_behind(books):
    from engine.project import cancel_invoice, open_context

    name = _invoice(books)
    ready = CTX.Event()
    queue = CTX.Queue()
    process = CTX.Process(target=procs.cancel_and_hang_proc, args=(books.url, name, ready, queue))
    process.start()
    try:
        assert ready.wait(timeout=TIMEOUT), queue.get(timeout=5) if not queue.empty() else "never got there"
    finally:
        process.kill()
        process.join(timeout=TIMEOUT)
    assert not books.invoices(books.t("Invoice").c.status == "Draft")  # the draft died with its transaction
    done = cancel_invoice(books.engine, open_context(books.org_dir), name, when=date(2024, 3, 1))
    assert done.finalized is not None and done.finalized.number.startswith("CR-")
    assert [c["status"] for c in _cancellations(books, name)] == ["Settled"]
    assert books.invoice(name)["balance"] == ZERO
    assert_books_balance(books)
