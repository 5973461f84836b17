"""The files the exports write: complete or absent, and never overwritten.

Every export file is staged with :func:`engine.storage.files.staged_file`:
written to ``<name>.part``, synced before the transaction that records the
export commits, and given its name after the commit. A DATEV or SEPA file
that already exists is never replaced, since it may be the only copy of
orders or bookings already marked exported; the booking journal only reads,
so its file may be replaced. A ``.part`` file left by another export means
that export may still be running.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from engine.domain.errors import EngineError, Where
from engine.storage.files import StagedFile, staged_file


def refuse_existing(out: Path, error: type[EngineError]) -> None:
    """Raise ``error`` when ``out`` exists: an exported file is never overwritten."""
    if out.exists():
        raise error(f"{out} exists; an exported file is never overwritten (choose another --out)",
                    where=Where(file=str(out)))


@contextmanager
def output_file(out: Path, *, error: type[EngineError], dry_run: bool = False, overwrite: bool = False,
                binary: bool = True) -> Iterator[StagedFile]:
    """``out`` staged for writing (the caller syncs and publishes it); in a
    dry run, staged in memory. Raises ``error`` when ``out`` exists (unless
    ``overwrite``) or another writer's part file is in the way."""
    out = Path(out)
    if not overwrite:
        refuse_existing(out, error)
    with ExitStack() as stack:
        try:
            staged = stack.enter_context(staged_file(out, binary=binary, dry_run=dry_run))
        except FileExistsError:
            part = out.with_name(out.name + ".part")
            raise error(f"{part} exists: another export may be running; remove it if not",
                        where=Where(file=str(part))) from None
        yield staged
