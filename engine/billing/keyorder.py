"""Pass 1's ``(group key, record id)`` pairs, given back in key order
without holding them all in memory.

A run bills its records in group-key order (an invoice's records must meet
in one batch). Up to :data:`KEYS_IN_MEMORY` pairs are sorted in memory, as
before; a larger filter spills them to a scratch SQLite file in a private
temporary directory, where SQLite sorts them and pass 2 reads them back one
page at a time. So the memory a run needs does not grow with the number of
records it bills (issue 19: about 120 bytes per line were held until the
end, 1 GB at 7M lines).

The order is exactly Python's tuple order: a group key holds only ints and
strs (:meth:`engine.billing.build.SourceHeader.group_key`), SQLite compares
integers numerically and text with memcmp on UTF-8, which is code point
order, like Python's str comparison. The scratch file is the run's own (it
is not the engine's database and never holds business data beyond record
ids and group keys); it is deleted when the run's filter is done.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Iterator

#: Pairs kept and sorted in memory before they go to the scratch file
#: (about 200 bytes each, so at most about 40 MB).
KEYS_IN_MEMORY = 200_000
#: Pairs read back from the scratch file per query.
PAGE = 5_000


class SortedKeys:
    """A multiset of ``(group key, record id)`` iterated in sorted order;
    see the module docstring. Add everything first, then iterate (once or
    more); :meth:`close` removes the scratch file."""

    def __init__(self, limit: int | None = None):
        self.limit = limit or KEYS_IN_MEMORY
        self._memory: list[tuple[tuple, int]] = []
        self._dir: str | None = None
        self._db: sqlite3.Connection | None = None
        self._width = 0
        self._count = 0
        self._sorted = False

    def __len__(self) -> int:
        return self._count

    def add(self, key: tuple, record_id: int) -> None:
        self._memory.append((key, record_id))
        self._count += 1
        self._sorted = False
        if len(self._memory) >= self.limit:
            self._spill()

    def __iter__(self) -> Iterator[tuple[tuple, int]]:
        if self._db is None:
            if not self._sorted:
                self._memory.sort()
                self._sorted = True
            yield from self._memory
            return
        self._spill()
        yield from self._read_sorted()

    def close(self) -> None:
        self._memory = []
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "SortedKeys":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the scratch file ---------------------------------------------------------

    def _spill(self) -> None:
        if not self._memory:
            return
        if self._db is None:
            self._width = len(self._memory[0][0])
            self._dir = tempfile.mkdtemp(prefix="metabill-keys-")
            # No journal, no fsync: the file dies with the run.
            self._db = sqlite3.connect(Path(self._dir) / "keys.db", isolation_level=None)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            columns = ", ".join(f"k{i}" for i in range(self._width))
            self._db.execute(f"CREATE TABLE keys ({columns}, record_id INTEGER)")
        width = self._width
        rows = []
        for key, record_id in self._memory:
            if len(key) != width or not all(type(part) in (int, str) for part in key):
                raise TypeError(f"a group key must be {width} ints and strs, not {key!r}")
            rows.append((*key, record_id))
        marks = ", ".join("?" for _ in range(width + 1))
        self._db.execute("BEGIN")
        self._db.executemany(f"INSERT INTO keys VALUES ({marks})", rows)
        self._db.execute("COMMIT")
        self._memory = []

    def _read_sorted(self) -> Iterator[tuple[tuple, int]]:
        """Keyset pagination over an index of the whole key: each page is one
        short query, so nothing of SQLite's stays open between pages."""
        assert self._db is not None
        db, width = self._db, self._width
        order = ", ".join([f"k{i}" for i in range(width)] + ["record_id"])
        db.execute(f"CREATE INDEX IF NOT EXISTS keys_order ON keys ({order})")
        page = db.execute(f"SELECT * FROM keys ORDER BY {order} LIMIT ?", (PAGE,)).fetchall()
        while page:
            for row in page:
                yield tuple(row[:width]), row[width]
            if len(page) < PAGE:
                return
            last = page[-1]
            page = db.execute(f"SELECT * FROM keys WHERE ({order}) > ({', '.join('?' * (width + 1))}) "
                              f"ORDER BY {order} LIMIT ?", (*last, PAGE)).fetchall()
