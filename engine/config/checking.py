"""The check protocol: how every domain's configuration checks are run.

A check is a small named function: it takes a :class:`CheckContext` and
yields diagnostics. ``config`` owns the checks of the metadata as such
(:mod:`.checks`); each domain owns the checks of the settings it interprets,
beside its code (``engine/billing/checks.py``, ``engine/booking/checks.py``
...). The composition root (:mod:`engine.project`) hands the loader the
whole list; :func:`run_checks` runs them all, every time, and turns a check
that crashes into a finding instead of hiding the others'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .diagnostics import Diagnostic, Location, make
from .model import FieldDef, ObjectDef, OrgModel
from .resolve import Resolution
from .yamlsrc import YamlDocument, locate_in_scalar


@dataclass(frozen=True)
class CheckContext:
    """What a check sees: the resolved model, which definitions were broken
    (so references to them do not cascade), the manifest, and the org's
    files as text (for positions inside a value)."""

    model: OrgModel
    resolution: Resolution
    manifest: YamlDocument | None
    _texts: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)

    def field_location(self, obj: ObjectDef, fdef: FieldDef) -> Location:
        return fdef.source or obj.source or Location("?")

    def object_location(self, obj: ObjectDef) -> Location:
        return obj.source or Location("?")

    def manifest_location(self) -> Location:
        if self.manifest is not None:
            return self.manifest.location(())
        return Location("metadata/objects")

    def within(self, base: Location | None, value: str, offset: int) -> Location:
        """The file position of character ``offset`` inside the scalar
        ``value`` found at ``base`` (an item of a comma list, a placeholder
        inside a text), or ``base`` when it cannot be placed."""
        if base is None:
            return Location("?")
        if base.line is None or offset < 0:
            return base
        source = self.source_text(base.file)
        if source is None:
            return base
        return locate_in_scalar(source, base, value, offset)

    def source_text(self, file: str) -> str | None:
        """The text of an org file (relative name), read once; None when unreadable."""
        if file not in self._texts:
            try:
                self._texts[file] = (Path(self.model.root) / file).read_text(encoding="utf-8")
            except (OSError, UnicodeError):
                self._texts[file] = None
        return self._texts[file]


#: A check: a small named function from what it sees to the diagnostics it finds.
Check = Callable[[CheckContext], Iterable[Diagnostic]]


def run_checks(model: OrgModel, resolution: Resolution, manifest: YamlDocument | None,
               checks: Sequence[Check]) -> list[Diagnostic]:
    """Run every check; a check that crashes is reported, not propagated."""
    ctx = CheckContext(model, resolution, manifest)
    out: list[Diagnostic] = []
    for check in checks:
        try:
            out.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - a bug in one check must not hide the others' findings
            out.append(
                make(
                    "E099",
                    f"internal error in check {check.__name__}: {type(exc).__name__}: {exc}",
                    Location("metabill"),
                    "please report this; the other checks ran",
                )
            )
    return out
