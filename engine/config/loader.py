"""The one entry point from an org directory to a resolved model.

``load_org(path)`` runs the stages below and returns a :class:`LoadResult`:
the resolved, immutable :class:`~engine.config.model.OrgModel` and every
diagnostic found on the way. It never raises for anything the org contains;
``validate-config`` is this function, a printer and an exit code, and every
other command calls it too, so there is no second validator that could drift.

Stages (each collects diagnostics and continues):

1. discover files: ``metabill.yaml``, ``metadata/objects/*.yaml``,
   ``metadata/settings/*.yaml``, ``custom_settings/*.yaml``, ``templates/**``;
2. read each YAML file safely with positions (:mod:`.yamlsrc`);
3. validate each document against its JSON Schema (:mod:`.schema`);
4. resolve objects, fields and child relationships (:mod:`.resolve`);
5. compile and type-check formulas (:mod:`.formula`);
6. resolve setting records into typed values;
7. run the semantic checks: the metadata's own (:mod:`.checks`) and those
   the caller hands in (each domain's, composed by :mod:`engine.project`);
8. hash everything into the config hash carried by generated records.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Sequence

from .checking import Check, run_checks
from .checks import GENERIC_CHECKS
from .diagnostics import Diagnostic, Location, make, sorted_diagnostics
from .formula import FormulaCompiler
from .model import ObjectKind, OrgModel, TemplateFile
from .resolve import Definition, Resolution, resolve_objects, resolve_records
from .schema import validate_document
from .yamlsrc import YamlDocument, locate_in_scalar, read_regular_file, read_yaml

MAX_FILES_PER_FOLDER = 2000
#: Template bytes hashed per file (the documents' own checks limit templates further).
MAX_TEMPLATE_BYTES = 16 * 2**20
YAML_SUFFIXES = (".yaml", ".yml")
IGNORED_SUFFIXES = (".md", ".txt")


@dataclass(frozen=True, slots=True)
class LoadResult:
    model: OrgModel | None
    diagnostics: tuple[Diagnostic, ...]
    files_checked: int

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)

    @property
    def ok(self) -> bool:
        return self.model is not None and not self.errors


@dataclass
class _Discovered:
    manifest: YamlDocument | None
    objects: list[YamlDocument]
    settings: list[YamlDocument]
    records: list[YamlDocument]
    templates: dict[str, TemplateFile]
    files_checked: int
    extensions: dict[str, YamlDocument]


def load_org(path: str | Path, checks: Sequence[Check] = ()) -> LoadResult:
    """Load, validate and resolve the org rooted at ``path``, running the
    metadata's own checks and ``checks`` over the result (commands load
    through :func:`engine.project.load_project`, which adds every domain's)."""
    root = Path(path)
    diagnostics: list[Diagnostic] = []
    if not root.is_dir():
        diagnostics.append(make("E001", f"'{root}' is not a directory", Location(str(root))))
        return LoadResult(None, tuple(diagnostics), 0)
    found = _discover(root, diagnostics)

    # Schema validation, per document kind.
    schema_bad: set[int] = set()
    for kind, docs in (("object", found.objects), ("setting", found.settings), ("records", found.records)):
        for doc in docs:
            problems = validate_document(doc, kind)
            if problems:
                schema_bad.add(id(doc))
                diagnostics.extend(problems)
    if found.manifest is not None:
        diagnostics.extend(validate_document(found.manifest, "project"))

    definitions = [Definition(doc, ObjectKind.OBJECT) for doc in found.objects if isinstance(doc.data.get("object"), str)]
    for doc in found.settings:
        kind = doc.data.get("kind")
        if isinstance(doc.data.get("setting"), str) and kind in ("list", "hierarchy"):
            definitions.append(Definition(doc, ObjectKind(kind)))
    resolution = resolve_objects(definitions, schema_bad)
    diagnostics.extend(resolution.diagnostics)

    _compile_formulas(resolution, diagnostics)

    records, record_diagnostics = resolve_records(
        [d for d in found.records if id(d) not in schema_bad or isinstance(d.data.get("setting"), str)], resolution
    )
    diagnostics.extend(record_diagnostics)

    model = OrgModel(
        root=str(root),
        objects=MappingProxyType(dict(sorted(resolution.objects.items()))),
        records=MappingProxyType(records),
        templates=MappingProxyType(found.templates),
        config_hash=_config_hash(root, found),
        extensions=MappingProxyType(found.extensions),
    )

    diagnostics.extend(run_checks(model, resolution, found.manifest, (*GENERIC_CHECKS, *checks)))
    return LoadResult(model, tuple(sorted_diagnostics(diagnostics)), found.files_checked)


def _relative(root: Path, path: Path) -> str:
    """The display name of a file: relative to the org root, with bytes that
    are not UTF-8 in the file name shown as escapes (never unprintable)."""
    try:
        name = path.relative_to(root).as_posix()
    except ValueError:  # pragma: no cover - discovery only yields paths below root
        name = path.as_posix()
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _discover(root: Path, diagnostics: list[Diagnostic]) -> _Discovered:
    files_checked = 0
    manifest = None
    manifest_path = root / "metabill.yaml"
    if manifest_path.is_file():
        files_checked += 1
        manifest, problems = read_yaml(manifest_path, "metabill.yaml")
        diagnostics.extend(problems)

    def read_folder(folder: str) -> list[YamlDocument]:
        nonlocal files_checked
        base = root / folder
        if not base.is_dir():
            return []
        entries = sorted(base.iterdir())
        if len(entries) > MAX_FILES_PER_FOLDER:
            diagnostics.append(
                make(
                    "E004",
                    f"{folder}/ holds {len(entries):,} entries; the limit is {MAX_FILES_PER_FOLDER:,}",
                    Location(folder),
                    "the folder was not read; remove stray files",
                )
            )
            return []
        docs = []
        for entry in entries:
            display = _relative(root, entry)
            if entry.name.startswith("."):
                continue
            kind = _entry_kind(entry)
            if kind is not None:
                diagnostics.append(make("W014", f"'{display}' is {kind}, not a YAML file, and was ignored",
                                        Location(display)))
                continue
            if entry.suffix.lower() in IGNORED_SUFFIXES:
                continue
            if entry.suffix.lower() not in YAML_SUFFIXES:
                diagnostics.append(
                    make("W014", f"'{display}' is not a .yaml file and was ignored", Location(display))
                )
                continue
            files_checked += 1
            doc, problems = read_yaml(entry, display)
            diagnostics.extend(problems)
            if doc is not None:
                docs.append(doc)
        return docs

    objects = read_folder("metadata/objects")
    settings = read_folder("metadata/settings")
    records = read_folder("custom_settings")
    if not (root / "metadata" / "objects").is_dir():
        diagnostics.append(
            make(
                "E001",
                "no metadata/objects folder: this does not look like a metabill org",
                Location("metadata/objects"),
                "run validate-config on the folder that holds metadata/ and custom_settings/",
            )
        )
    extensions: dict[str, YamlDocument] = {}
    for name in EXTENSION_FILES:
        path = root / name
        if path.is_file() and _entry_kind(path) is None:
            files_checked += 1
            doc, problems = read_yaml(path, name)
            diagnostics.extend(problems)
            if doc is not None:
                extensions[name] = doc
    _report_unread_yaml(root, diagnostics)
    templates: dict[str, TemplateFile] = {}
    template_root = root / "templates"
    if template_root.is_dir():
        for count, entry in enumerate(sorted(template_root.rglob("*"))):
            if count >= MAX_FILES_PER_FOLDER:
                diagnostics.append(make("E004", "templates/ holds too many files", Location("templates")))
                break
            if _entry_kind(entry) is None and entry.suffix.lower() not in IGNORED_SUFFIXES:
                name = entry.relative_to(template_root).as_posix()
                templates[name.lower()] = TemplateFile(name, _relative(root, entry))
    return _Discovered(manifest, objects, settings, records, templates, files_checked, extensions)


#: Folders the loader reads itself (their stray entries are reported there),
#: or that hold no configuration.
_READ_FOLDERS = ("metadata/objects", "metadata/settings", "custom_settings", "templates")
_SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})
#: Single YAML documents the loader reads for a domain that owns their meaning
#: (the loader only parses them with locations, hashes them and hands them over
#: as ``OrgModel.extensions``; the owner checks them): the e-invoice mapping of
#: engine/documents/einvoice.
EXTENSION_FILES = ("metadata/einvoice.yaml",)
#: How much of the org tree the search for stray YAML files looks at, at most.
MAX_WALK_ENTRIES = 20_000
MAX_WALK_DEPTH = 6


def _report_unread_yaml(root: Path, diagnostics: list[Diagnostic]) -> None:
    """W014 for every YAML file in the org tree the loader does not read (a
    setting in ``custom_setting/``, an object one folder too deep): it would
    otherwise be ignored without a word. Hidden folders, virtual
    environments, Python packages (their data files belong to the code) and
    nested orgs (a folder with its own metabill.yaml or metadata/objects) are
    not searched; the walk is bounded."""
    import os  # noqa: PLC0415 - only the walk needs it

    seen = 0
    pending: list[tuple[Path, int]] = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > MAX_WALK_ENTRIES:
                return
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            relative = path.relative_to(root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if (relative in _READ_FOLDERS or entry.name in _SKIPPED_FOLDERS or entry.name.endswith(".egg-info")
                        or depth + 1 > MAX_WALK_DEPTH or (path / "pyvenv.cfg").exists()
                        or (path / "__init__.py").exists()
                        or (path / "metabill.yaml").exists() or (path / "metadata" / "objects").is_dir()):
                    continue
                pending.append((path, depth + 1))
            elif path.suffix.lower() in YAML_SUFFIXES and relative not in ("metabill.yaml", *EXTENSION_FILES):
                display = _relative(root, path)
                diagnostics.append(make(
                    "W014", f"'{display}' is not read: only metabill.yaml and the YAML files directly in "
                    "metadata/objects/, metadata/settings/ and custom_settings/ are", Location(display),
                    _unread_hint(path.parent.relative_to(root).as_posix())))


def _unread_hint(folder: str) -> str:
    """Where the file probably belongs, judged from the folder it is in."""
    close = difflib.get_close_matches(folder.lower(), [f for f in _READ_FOLDERS[:3]], n=1, cutoff=0.6)
    if close:
        return f"move it to {close[0]}/ (is '{folder}' a misspelling?)"
    return "move it into metadata/objects/, metadata/settings/ or custom_settings/, or delete it"


def _entry_kind(entry: Path) -> str | None:
    """None for a regular file (not a link); else what the entry is. Decided
    from ``lstat`` alone: nothing is opened, so a FIFO or a device in the org
    never blocks or floods the loader."""
    try:
        mode = entry.lstat().st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _compile_formulas(res: Resolution, diagnostics: list[Diagnostic]) -> None:
    """Compile every formula field; store the compiled form in the model."""
    compiler = FormulaCompiler(lambda name: res.objects.get(name.lower()))
    for key, obj in list(res.objects.items()):
        changed = False
        new_fields = []
        for fdef in obj.fields:
            if fdef.formula is None:
                new_fields.append(fdef)
                continue
            compiled, problems = compiler.compile(obj, fdef)
            for problem in problems:
                diagnostics.append(
                    make(problem.code, f"{obj.name}.{fdef.name}: {problem.message}",
                         _formula_location(res, obj.name, fdef.name, problem.offset), problem.hint)
                )
            if compiled is None:
                res.broken_fields.add((obj.key, fdef.key))
            new_fields.append(replace(fdef, formula=replace(fdef.formula, compiled=compiled)))
            changed = True
        if changed:
            res.objects[key] = replace(obj, fields=tuple(new_fields))


def _formula_location(res: Resolution, object_name: str, field_name: str, offset: int | None) -> Location:
    definition = res.definitions.get(object_name.lower())
    if definition is None:
        return Location("?")
    doc = definition.doc
    path = ("fields", field_name, "expression")
    base = doc.location(path)
    if offset is None or base.line is None or doc.text is None:
        return base
    return locate_in_scalar(doc.text, base, doc.data["fields"][field_name]["expression"], offset)


def _config_hash(root: Path, found: _Discovered) -> str:
    """sha256 over every document's data (canonical JSON) and template bytes,
    in path order: two orgs with the same hash configure identical behaviour."""
    digest = hashlib.sha256()
    docs = (([found.manifest] if found.manifest else []) + found.objects + found.settings + found.records
            + list(found.extensions.values()))
    for doc in sorted(docs, key=lambda d: d.file):
        digest.update(doc.file.encode())
        digest.update(json.dumps(doc.data, sort_keys=True, default=str).encode())
    for template in sorted(found.templates.values(), key=lambda t: t.path):
        digest.update(template.path.encode())
        try:
            digest.update(read_regular_file(root / template.path, MAX_TEMPLATE_BYTES))
        except OSError:
            pass
    return digest.hexdigest()

