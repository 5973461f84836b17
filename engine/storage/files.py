"""Files the engine writes: complete or absent, never half-written.

Exports and documents are written through :func:`staged_file`: the content
goes to ``<name>.part`` in the target folder (created exclusively, so two
writers never share it), is flushed and fsynced by :meth:`StagedFile.sync`,
and receives its real name only by :meth:`StagedFile.publish`, an atomic
rename followed by an fsync of the folder. Anything that goes wrong before
the publish removes the part file. With ``dry_run`` nothing touches the disk:
the content goes to memory and is dropped, the file half of the engine's one
dry-run mechanism (:func:`engine.storage.db.unit_of_work` is the other half).

A caller whose file depends on a database transaction syncs the staged file
inside the transaction and publishes it after the commit (and records what
it needs to publish it again, should the process die in between: see
:mod:`engine.exports.output`).

The writer holds an exclusive ``flock`` on its part file while it stages.
A part file left by a writer that was killed (its lock went with it) is
therefore recognized as stale and taken over by the next writer of that
name, while one whose writer is still at work is refused
(``FileExistsError``). Failures to write (a full disk: ``ENOSPC``) surface as
``OSError`` and remove the part file; the target is never touched.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


class StagedFile:
    """An output file being written: ``handle`` to write to, then
    :meth:`sync` and :meth:`publish`."""

    def __init__(self, path: Path, handle: IO, part: Path | None):
        self.path = path
        self.handle = handle
        self.part = part
        self.published = False

    @property
    def dry_run(self) -> bool:
        return self.part is None

    def sync(self) -> None:
        """Flush and fsync the content (before the commit that depends on it)."""
        self.handle.flush()
        if self.part is not None:
            os.fsync(self.handle.fileno())

    def publish(self) -> None:
        """Give the file its name: atomic rename, then fsync of the folder so
        the rename survives a crash. A dry run publishes nothing."""
        if self.part is None or self.published:
            return
        self.sync()
        # Renamed while still open, so the lock on it is held until the part
        # name is gone: no other writer can take the file over in between.
        os.replace(self.part, self.path)
        self.published = True
        self.handle.close()
        sync_folder(self.path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename or a new file in it survives a crash."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on folders
        pass
    finally:
        os.close(descriptor)


@contextmanager
def staged_file(path: Path, *, binary: bool = True, encoding: str = "utf-8", newline: str | None = "",
                dry_run: bool = False) -> Iterator[StagedFile]:
    """Stage ``path`` for writing (see the module docstring). The caller
    publishes it; leaving the block without publishing removes the part file.
    ``FileExistsError`` when the part file exists (another writer)."""
    path = Path(path)
    if dry_run:
        sink: IO = io.BytesIO() if binary else io.StringIO()
        yield StagedFile(path, sink, None)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    descriptor = _claim_part(part)
    try:
        handle: IO = os.fdopen(descriptor, "wb") if binary else \
            open(descriptor, "w", encoding=encoding, newline=newline, closefd=True)
    except BaseException:
        os.close(descriptor)
        part.unlink(missing_ok=True)
        raise
    staged = StagedFile(path, handle, part)
    try:
        yield staged
    finally:
        if not staged.published:
            part.unlink(missing_ok=True)  # before the handle (and its lock) goes: no one takes it over meanwhile
        if not handle.closed:
            handle.close()


def _claim_part(part: Path) -> int:
    """An open, exclusively locked descriptor of the new, empty ``part``
    file. A part file that exists is taken over when no writer holds its lock
    (its writer died); ``FileExistsError`` when one does."""
    try:
        descriptor = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        descriptor = os.open(part, os.O_WRONLY)
        if not _try_lock(descriptor):
            os.close(descriptor)
            raise
        os.ftruncate(descriptor, 0)  # a dead writer's leftovers
        return descriptor
    if not _try_lock(descriptor):  # pragma: no cover - a brand-new file nobody else holds
        os.close(descriptor)
        raise FileExistsError(str(part))
    return descriptor


def _try_lock(descriptor: int) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): part files are never taken over
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def write_file(path: Path, content: bytes, *, dry_run: bool = False) -> None:
    """Write ``content`` to ``path`` complete or not at all (replacing it)."""
    with staged_file(path, dry_run=dry_run) as staged:
        staged.handle.write(content)
        staged.publish()
