"""Cutting id lists into statement-sized chunks.

Every ``WHERE id IN (...)`` over a run's or a batch's ids goes through
:func:`chunks`, so no statement exceeds the bind-parameter limits of SQLite
(32,766) or PostgreSQL (65,535) however large the run is.
"""

from __future__ import annotations

from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")

#: Ids per ``IN (...)`` list: far below either database's limit, large
#: enough that a statement's overhead is paid rarely.
DEFAULT_CHUNK = 500


def chunks(items: Sequence[T], size: int = DEFAULT_CHUNK) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start:start + size]
