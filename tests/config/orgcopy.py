"""Helpers shared by the config and CLI tests: copy the sample org into a
temporary directory, edit it by exact text, and find where a text sits.

Positions are never hard-coded for files the repository ships: tests compute
them from the (edited) file text with :func:`find_position`, so the tests keep
working when the sample org is reformatted.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ORG_PARTS = ("metabill.yaml", "metadata", "custom_settings", "templates")


def copy_org(dest: Path, *, with_data: bool = False) -> Path:
    """Copy the sample org (manifest, metadata, settings, templates and, on
    request, data/) into ``dest``; returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ORG_PARTS + (("data",) if with_data else ()):
        source = REPO_ROOT / part
        if source.is_dir():
            shutil.copytree(source, dest / part)
        else:
            shutil.copy2(source, dest / part)
    return dest


def read_text(org: Path, rel: str) -> str:
    return (org / rel).read_text(encoding="utf-8")


def find_position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the ``occurrence``-th ``needle`` in ``text``.
    Columns count characters, as the YAML reader does."""
    start = -1
    for _ in range(occurrence):
        start = text.find(needle, start + 1)
        if start < 0:
            raise AssertionError(f"{needle!r} occurs fewer than {occurrence} time(s)")
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    return line, column


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    return find_position(text, needle, occurrence)[0]


# --- edits ----------------------------------------------------------------------


@dataclass(frozen=True)
class AddFile:
    """Create a new file (text is written as UTF-8; bytes as they are)."""

    path: str
    content: str | bytes

    def apply(self, org: Path) -> None:
        target = org / self.path
        assert not target.exists(), f"{self.path} already exists: case files must not collide"
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(self.content, bytes):
            target.write_bytes(self.content)
        else:
            target.write_text(self.content, encoding="utf-8")


@dataclass(frozen=True)
class Replace:
    """Replace the one exact occurrence of ``old`` in a file by ``new``."""

    path: str
    old: str
    new: str

    def apply(self, org: Path) -> None:
        text = read_text(org, self.path)
        count = text.count(self.old)
        assert count == 1, f"{self.old!r} occurs {count} times in {self.path}, expected exactly once"
        (org / self.path).write_text(text.replace(self.old, self.new), encoding="utf-8")


@dataclass(frozen=True)
class InsertAfter:
    """Insert ``text`` (whole lines) after the first line equal to ``anchor``."""

    path: str
    anchor: str
    text: str

    def apply(self, org: Path) -> None:
        lines = read_text(org, self.path).splitlines(keepends=True)
        for index, line in enumerate(lines):
            if line.rstrip("\r\n") == self.anchor:
                insert = self.text if self.text.endswith("\n") else self.text + "\n"
                lines.insert(index + 1, insert)
                (org / self.path).write_text("".join(lines), encoding="utf-8")
                return
        raise AssertionError(f"no line {self.anchor!r} in {self.path}")


@dataclass(frozen=True)
class DeleteFile:
    path: str

    def apply(self, org: Path) -> None:
        (org / self.path).unlink()


Edit = AddFile | Replace | InsertAfter | DeleteFile


def apply_edits(org: Path, edits) -> set[str]:
    """Apply edits in order; returns the set of files they touched."""
    touched = set()
    for edit in edits:
        edit.apply(org)
        touched.add(edit.path)
    return touched


def add_invoice_field(org: Path, line: str = "  BuCode__c: {type: Text, length: 20, label: BU code}") -> None:
    """Insert a field definition right after the ``fields:`` line of Invoice.yaml."""
    InsertAfter("metadata/objects/Invoice.yaml", "fields:", line).apply(org)
