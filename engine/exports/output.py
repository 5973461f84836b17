"""The files the exports write: complete or absent, and never overwritten.

Every export file is staged with :func:`engine.storage.files.staged_file`:
written to ``<name>.part``, synced before the transaction that records the
export commits, and given its name after the commit. A DATEV or SEPA file
that already exists is never replaced, since it may be the only copy of
orders or bookings already marked exported; the booking journal only reads,
so its file may be replaced. A ``.part`` file left by another export means
that export may still be running (a part file whose writer died is taken
over, see :mod:`engine.storage.files`).

**Nothing lost between the commit and the rename.** An export that marks
what it exported (DATEV) records the file as an *export batch* in the same
transaction (:func:`record_batch`: its path, size, SHA-256 and content,
compressed) and publishes the file after the commit (:func:`publish_batch`).
A process that dies in between leaves a batch without its file; the next
export (or :func:`publish_pending_batches`, ``metabill export recover``)
writes the file again from the batch, so no kill point loses an exported
detail or exports one twice. A file found under the batch's name with other
content is never overwritten: the batch is published beside it
(``<name>.batch-<id>``) and reported.
"""

from __future__ import annotations

import hashlib
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from engine.domain.errors import EngineError, Where
from engine.storage.files import StagedFile, staged_file
from engine.storage.ids import reserve_ids
from engine.storage.retry import run_in_transaction
from engine.storage.schema import EXPORT_BATCH


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


# ---------------------------------------------------------------------------
# Export batches: the file of a committed export, until it is published


@dataclass(frozen=True)
class PublishedBatch:
    """A batch whose file was (re)written by :func:`publish_pending_batches`:
    where it is now, and why (``recreated``: the file was missing;
    ``beside``: another file had its name)."""

    batch_id: int
    destination: str
    path: Path
    details: int
    how: str


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_batch(conn: sa.Connection, destination: str, path: Path, content: bytes, details: int) -> int:
    """Record the file ``path`` with ``content`` as an export batch of
    ``details`` records, in the export's own transaction; returns its id."""
    EXPORT_BATCH.create(conn, checkfirst=True)
    (batch_id,) = reserve_ids(conn, EXPORT_BATCH.name, 1)
    conn.execute(sa.insert(EXPORT_BATCH).values(
        id=batch_id, destination=destination, path=str(Path(path).resolve()),
        sha256=hashlib.sha256(content).hexdigest(), size=len(content), content=zlib.compress(content, 6),
        details=details, created_at=_now(), published_at=None))
    return batch_id


def mark_published(engine: sa.Engine, batch_id: int, path: Path | None = None) -> None:
    """The batch's file exists under its name (or under ``path``)."""
    values: dict = {"published_at": _now()}
    if path is not None:
        values["path"] = str(path)
    run_in_transaction(engine, lambda conn: conn.execute(
        sa.update(EXPORT_BATCH).where(EXPORT_BATCH.c.id == batch_id).values(**values)))


def publish_batch(engine: sa.Engine, staged: StagedFile, batch_id: int) -> None:
    """After the commit: give the staged file its name, then record that it
    has it. A failure before the record is repaired by the next
    :func:`publish_pending_batches` (the file is found with its content)."""
    staged.publish()
    mark_published(engine, batch_id)


def _file_digest(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def pending_batches(conn: sa.Connection, destination: str | None = None) -> list[dict]:
    """Export batches whose file was not published yet, oldest first."""
    if not sa.inspect(conn).has_table(EXPORT_BATCH.name):
        return []
    query = sa.select(EXPORT_BATCH.c.id, EXPORT_BATCH.c.destination, EXPORT_BATCH.c.path, EXPORT_BATCH.c.sha256,
                      EXPORT_BATCH.c.details).where(EXPORT_BATCH.c.published_at.is_(None)).order_by(EXPORT_BATCH.c.id)
    if destination is not None:
        query = query.where(EXPORT_BATCH.c.destination == destination)
    return [dict(row._mapping) for row in conn.execute(query)]


def publish_pending_batches(engine: sa.Engine, destination: str | None = None) -> list[PublishedBatch]:
    """Publish the files of every committed export whose file never got its
    name (the process died after the commit): found intact under its name,
    it is only recorded; missing, it is written again from the batch; when
    another file has its name, it goes beside it. Returns what was written."""
    with engine.connect() as conn:
        pending = pending_batches(conn, destination)
    out = []
    for batch in pending:
        path = Path(batch["path"])
        if _file_digest(path) == batch["sha256"]:
            mark_published(engine, batch["id"])
            continue
        with engine.connect() as conn:
            stored = conn.execute(sa.select(EXPORT_BATCH.c.content).where(EXPORT_BATCH.c.id == batch["id"])).scalar_one()
        content = zlib.decompress(stored)
        if hashlib.sha256(content).hexdigest() != batch["sha256"]:  # pragma: no cover - the database's own damage
            raise RuntimeError(f"export batch {batch['id']} does not match its recorded hash")
        how = "recreated"
        if path.exists():
            path, how = path.with_name(f"{path.name}.batch-{batch['id']}"), "beside"
            if _file_digest(path) == batch["sha256"]:
                mark_published(engine, batch["id"], path)
                continue
        with staged_file(path) as staged:
            staged.handle.write(content)
            staged.publish()
        mark_published(engine, batch["id"], path)
        out.append(PublishedBatch(batch["id"], batch["destination"], path, int(batch["details"]), how))
    return out
