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
inside the transaction and publishes it after the commit.
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
        self.handle.close()
        os.replace(self.part, self.path)
        self.published = True
        _sync_folder(self.path.parent)


def _sync_folder(folder: Path) -> None:
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
    handle: IO = open(part, "xb") if binary else open(part, "x", encoding=encoding, newline=newline)
    staged = StagedFile(path, handle, part)
    try:
        yield staged
    finally:
        if not handle.closed:
            handle.close()
        if not staged.published:
            part.unlink(missing_ok=True)


def write_file(path: Path, content: bytes, *, dry_run: bool = False) -> None:
    """Write ``content`` to ``path`` complete or not at all (replacing it)."""
    with staged_file(path, dry_run=dry_run) as staged:
        staged.handle.write(content)
        staged.publish()
