"""The run's memory bounds change nothing but memory (issue 19, item 3).

Pass 1 keeps at most ``EVALUATED_KEPT`` evaluated headers for pass 2, the
account cache is emptied beyond ``ACCOUNTS_KEPT``, and the group keys spill
to a scratch file beyond ``KEYS_IN_MEMORY`` (:mod:`engine.billing.keyorder`).
With every bound set to almost nothing, a run must bill exactly what it
bills with the defaults, in the same order, with the same record errors.
The peak memory itself is measured by ``bench.invoice_run`` (a benchmark,
not a test: it depends on the machine).
"""

from __future__ import annotations

import os
import random
import re
from datetime import date

import pytest

from engine.billing import filterrun, keyorder
from engine.billing.keyorder import SortedKeys
from engine.billing.service import delete_drafts_of

from contexts import context

from .helpers import failure_list, snapshot

GENERIC = ("UC1 Sub Invoice", "UC1 Final Invoice", "Order Sub Invoice", "Order Invoice")
TEXTS = ["", "a", "B", "b", "ä", "Ä", "z", "é", "€", "😀", "\U0010fffd", "Default Invoice (EN)", "Standardrechnung (DE)"]


@pytest.mark.parametrize("limit", [1, 3, 7, 1000])
def test_sorted_keys_give_pythons_order_in_memory_and_spilled(limit):
    rng = random.Random(limit)
    pairs = [((rng.randint(0, 1), rng.randint(-5, 2**40), rng.choice(TEXTS), rng.choice(TEXTS) + rng.choice(TEXTS)),
              rng.randint(1, 50)) for _ in range(400)]
    with SortedKeys(limit) as keys:
        for key, record_id in pairs:
            keys.add(key, record_id)
        assert len(keys) == len(pairs)
        assert list(keys) == sorted(pairs)
        assert list(keys) == sorted(pairs)  # iterable again


def test_sorted_keys_remove_their_scratch_file():
    keys = SortedKeys(2)
    for n in range(5):
        keys.add((n, "x"), n)
    assert list(keys) == [((n, "x"), n) for n in range(5)]
    scratch = keys._dir
    assert scratch is not None
    keys.close()
    assert not os.path.exists(scratch)


def _order(h) -> list[tuple]:
    """The invoices in id order, each as the sorted source records of its
    lines: equal when the run built the same invoices in the same order."""
    lines: dict[int, list[str]] = {}
    for line in h.select("InvoiceLineItem"):
        lines.setdefault(line["invoice"], []).append(f"{line['sourceobject']}:{line['sourcerecordid']}")
    return [tuple(sorted(lines[i["id"]])) for i in sorted(h.invoices(), key=lambda i: i["id"])]


def _failures(report) -> list[tuple]:
    """The run's record errors, draft names (ids) left out."""
    return [(*f[:3], re.sub(r"DRAFT-\d+", "DRAFT-n", f[3])) for f in failure_list(report)]


def _run(h, batch_size: int):
    return h.run(*GENERIC, batch_size=batch_size, invoice_date=date(2024, 12, 31), today=date(2024, 12, 31))


def test_a_run_with_tiny_memory_bounds_bills_exactly_the_same(sample, monkeypatch):
    reference = _run(sample, batch_size=2)
    expected = (snapshot(sample), _order(sample), _failures(reference))
    assert reference.invoice_count > 3 and len(expected[1]) == reference.invoice_count
    delete_drafts_of(sample.engine, context(sample.model), run=reference.run_id)
    assert sample.invoices() == []

    monkeypatch.setattr(filterrun, "EVALUATED_KEPT", 1)
    monkeypatch.setattr(filterrun, "ACCOUNTS_KEPT", 0)
    monkeypatch.setattr(keyorder, "KEYS_IN_MEMORY", 2)
    spilled = []
    original = SortedKeys._spill

    def spill(self):
        spilled.append(len(self._memory))
        original(self)

    monkeypatch.setattr(SortedKeys, "_spill", spill)
    bounded = _run(sample, batch_size=2)
    assert any(spilled), "the keys never went to the scratch file"
    assert (snapshot(sample), _order(sample), _failures(bounded)) == expected
    assert (bounded.invoice_count, bounded.line_count) == (reference.invoice_count, reference.line_count)


def test_the_invoice_listing_is_bounded_and_the_counts_are_not(sample, monkeypatch):
    monkeypatch.setattr(filterrun, "LISTED_INVOICES", 1)
    report = _run(sample, batch_size=2)
    assert report.invoice_count == len(sample.invoices()) > len(GENERIC)
    assert 0 < len(report.invoices) <= len(GENERIC)  # at most one per filter
    assert report.line_count == len(sample.select("InvoiceLineItem"))
