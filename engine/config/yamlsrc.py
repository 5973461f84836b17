"""Safe YAML reading that keeps every value's source position.

PyYAML's own loaders build Python objects and forget where they came from; its
YAML 1.1 resolver also retypes scalars (``NO`` becomes False, ``12.30`` a float,
``0755`` an octal int, ``2024-01-31`` a date). Administrators must see their
values as written, so this module builds documents itself from the libyaml
event stream:

* only plain mappings, sequences and scalars; explicit tags, anchors and aliases
  are refused (an alias is how a "billion laughs" bomb multiplies), so a
  document's size is bounded by its text;
* plain scalars resolve narrowly: ``true``/``false``, ``null``/``~``/empty and
  canonical decimal integers; everything else, including ``12.30``, ``0755``,
  ``NO`` and dates, stays the exact string written, for the schema to convert;
* duplicate keys are errors that name the first occurrence;
* limits on bytes, nesting depth and node count are checked while reading.

The result is a :class:`YamlDocument`: the data plus a map from YAML path to
``(line, column)`` for values and for keys. :func:`locate_in_scalar` goes one
step further, from an offset inside a scalar value to its line and column in
the file, so a problem inside a formula or a filter condition points at the
character, not at the start of the value.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .diagnostics import Diagnostic, Location, make

try:  # libyaml is much faster; the pure-Python parser is the fallback.
    from yaml.cyaml import CParser as _Parser
except ImportError:  # pragma: no cover - depends on the PyYAML build
    from yaml.parser import Parser as _PyParser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, _PyParser):  # type: ignore[no-redef]
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            _PyParser.__init__(self)


@dataclass(frozen=True, slots=True)
class Limits:
    max_file_bytes: int = 1024 * 1024
    max_depth: int = 40
    max_nodes: int = 200_000
    max_scalar_chars: int = 100_000


DEFAULT_LIMITS = Limits()

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")

Path_ = tuple  # a YAML path: keys (str) and sequence indexes (int)


@dataclass(slots=True)
class YamlDocument:
    """A parsed file: data plus where each value and key was written."""

    file: str
    data: object = None
    value_marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    text: str | None = None

    def location(self, path: tuple = (), *, key: bool = False) -> Location:
        """Location of the value (or key) at ``path``; falls back to the nearest
        enclosing node that has a mark."""
        probe = tuple(path)
        if key and probe in self.key_marks:
            line, col = self.key_marks[probe]
            return Location(self.file, line, col, probe)
        while True:
            if probe in self.value_marks:
                line, col = self.value_marks[probe]
                return Location(self.file, line, col, tuple(path))
            if not probe:
                return Location(self.file, 1, 1, tuple(path))
            probe = probe[:-1]


@dataclass(frozen=True, slots=True)
class _Discarded:
    """Stands in for the key of a duplicate entry whose value is dropped."""

    serial: int


class _Refused(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def _resolve_plain(text: str) -> object:
    if _NULL.match(text):
        return None
    if _TRUE.match(text):
        return True
    if _FALSE.match(text):
        return False
    if _INT.match(text) and len(text) <= 19:
        return int(text)
    return text


def read_yaml(path: Path, display_name: str, limits: Limits = DEFAULT_LIMITS) -> tuple[YamlDocument | None, list[Diagnostic]]:
    """Read one YAML file. Returns the document (None when unusable) and its
    diagnostics; never raises for anything the file contains."""
    loc = Location(display_name)
    try:
        raw = read_regular_file(path, limits.max_file_bytes)
    except NotARegularFile as exc:
        return None, [make("E001", f"cannot read file: {exc}", loc, "only regular files belong in an org")]
    except FileTooLarge as exc:
        return None, [
            make(
                "E004",
                f"file is {exc.size:,} bytes; the limit is {limits.max_file_bytes:,} bytes",
                loc,
                "split the definitions over several files",
            )
        ]
    except OSError as exc:
        return None, [make("E001", f"cannot read file: {exc.strerror or exc}", loc)]
    return parse_yaml_bytes(raw, display_name, limits)


class NotARegularFile(OSError):
    """A path names a FIFO, device, socket or folder instead of a file."""


class FileTooLarge(OSError):
    def __init__(self, size: int):
        super().__init__(f"{size} bytes")
        self.size = size


def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes``.

    Opened without blocking and checked on the open descriptor (no race with
    a file swapped in between): a FIFO would otherwise block the reader
    forever, and a device such as ``/dev/zero`` never ends. Raises
    :class:`NotARegularFile`, :class:`FileTooLarge` or another ``OSError``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    descriptor = os.open(path, flags)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"not a regular file ({_file_kind(info.st_mode)})")
        if info.st_size > max_bytes:
            raise FileTooLarge(info.st_size)
        chunks = []
        remaining = max_bytes + 1
        while remaining > 0:
            chunk = os.read(descriptor, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:  # grew while being read
            raise FileTooLarge(len(data))
        return data
    finally:
        os.close(descriptor)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a file"


def parse_yaml_bytes(raw: bytes, display_name: str, limits: Limits = DEFAULT_LIMITS) -> tuple[YamlDocument | None, list[Diagnostic]]:
    loc = Location(display_name)
    if len(raw) > limits.max_file_bytes:
        return None, [make("E004", f"file is {len(raw):,} bytes; the limit is {limits.max_file_bytes:,} bytes", loc)]
    if b"\x00" in raw:
        return None, [make("E001", "file contains NUL bytes: it is binary, not YAML text", loc)]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        # Columns count characters everywhere, so decode what precedes the bad byte.
        column = len(raw[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        return None, [
            make(
                "E001",
                f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                Location(display_name, line, column),
                "save the file as UTF-8",
            )
        ]
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        return None, [make("E006", "file is empty", Location(display_name, 1, 1))]
    builder = _Builder(display_name, limits)
    try:
        builder.run(text)
    except _Refused as refused:
        return None, [refused.diagnostic]
    except yaml.YAMLError as exc:
        # libyaml scans flow collections ahead of the events we count, so its
        # own depth limit can fire before ours. Excessive nesting gets one code
        # whichever layer notices it first: decided from the text, not from
        # the library's message.
        too_deep = _flow_depth_exceeded(text, limits.max_depth)
        if too_deep is not None:
            line, col = too_deep
            return None, [make("E005", f"nesting deeper than {limits.max_depth} levels",
                               Location(display_name, line, col))]
        return None, [_syntax_error(exc, text, display_name)]
    doc = builder.document
    doc.text = text
    if builder.diagnostics:
        return doc if isinstance(doc.data, dict) else None, builder.diagnostics
    if not isinstance(doc.data, dict):
        kind = "empty" if doc.data is None else type(doc.data).__name__
        return None, [
            make("E006", f"the top level must be a mapping of keys to values, not {kind}", doc.location(()))
        ]
    return doc, []


_FLOW_TOKENS = re.compile(r"[\[\]{}\n#\"']")


def _flow_depth_exceeded(text: str, max_depth: int) -> tuple[int, int] | None:
    """(line, column) where flow brackets nest deeper than ``max_depth``, or
    None. Only consulted for a file the parser already rejected, so the rough
    treatment of quotes (a quote opens a scalar only after a separator)
    can at worst change the code of an error, never invent one."""
    depth = 0
    line, line_start = 1, 0
    position = 0
    length = len(text)
    while position < length:
        match = _FLOW_TOKENS.search(text, position)
        if match is None:
            return None
        char, at = match.group(), match.start()
        position = at + 1
        if char == "\n":
            line, line_start = line + 1, position
        elif char == "#":
            if at == line_start or text[at - 1] in " \t":
                end = text.find("\n", at)
                position = length if end < 0 else end
        elif char in "\"'":
            if at == line_start or text[at - 1] in " \t[{,:":
                end = text.find(char, position)
                while char == '"' and end > 0 and text[end - 1] == "\\":
                    end = text.find(char, end + 1)
                if end < 0:
                    return None
                line += text.count("\n", position, end)
                newline = text.rfind("\n", position, end)
                if newline >= 0:
                    line_start = newline + 1
                position = end + 1
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return line, at - line_start + 1
        else:
            depth = max(0, depth - 1)
    return None


def _syntax_error(exc: yaml.YAMLError, text: str, display_name: str) -> Diagnostic:
    """E002 at the parser's mark (or the reader's byte position)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        return make("E002", f"YAML syntax error: {problem}", Location(display_name, line, col))
    # reader errors (control characters) and the like
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "mark", None)
    position = getattr(exc, "position", None)
    if mark is not None:
        where = Location(display_name, mark.line + 1, mark.column + 1)
    elif isinstance(position, int):
        line = text.count("\n", 0, position) + 1
        where = Location(display_name, line, position - (text.rfind("\n", 0, position) + 1) + 1)
    else:
        where = Location(display_name, 1, 1)
    reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
    return make("E002", f"YAML syntax error: {reason}", where)


class _Builder:
    """Builds plain Python data from parser events, recording marks."""

    def __init__(self, file: str, limits: Limits):
        self.file = file
        self.limits = limits
        self.document = YamlDocument(file)
        self.nodes = 0
        self.discarded = 0
        self.diagnostics: list[Diagnostic] = []

    def _refuse(self, code: str, message: str, mark, hint: str | None = None):
        where = Location(self.file, mark.line + 1, mark.column + 1) if mark else Location(self.file)
        raise _Refused(make(code, message, where, hint))

    def run(self, text: str) -> None:
        parser = _Parser(text)
        try:
            events = iter(parser.get_event, None)
            documents = 0
            # Stack of frames: [container, path, pending_key, key_mark, seen_keys]
            stack: list[list] = []
            for event in events:
                if isinstance(event, yaml.StreamEndEvent):
                    break
                if isinstance(event, yaml.StreamStartEvent | yaml.DocumentEndEvent):
                    continue
                if isinstance(event, yaml.DocumentStartEvent):
                    documents += 1
                    if documents > 1:
                        self._refuse(
                            "E007",
                            "a file holds exactly one YAML document; found a second '---'",
                            event.start_mark,
                            "put each object or setting in a file of its own",
                        )
                    continue
                if isinstance(event, yaml.AliasEvent):
                    self._refuse(
                        "E005",
                        f"aliases (*{event.anchor}) are not supported",
                        event.start_mark,
                        "write the values out; anchors and aliases are refused to keep documents bounded",
                    )
                anchor = getattr(event, "anchor", None)
                if anchor is not None:
                    self._refuse(
                        "E005",
                        f"anchors (&{anchor}) are not supported",
                        event.start_mark,
                        "write the values out; anchors and aliases are refused to keep documents bounded",
                    )
                tag = getattr(event, "tag", None)
                if isinstance(event, yaml.ScalarEvent):
                    if tag not in (None, "!", "tag:yaml.org,2002:str"):
                        self._refuse("E005", f"explicit YAML tags ({tag}) are not supported", event.start_mark)
                    value = self._scalar(event)
                    self._add(stack, value, event.start_mark, event.end_mark)
                elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                    if tag not in (None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"):
                        self._refuse("E005", f"explicit YAML tags ({tag}) are not supported", event.start_mark)
                    if len(stack) >= self.limits.max_depth:
                        self._refuse(
                            "E005",
                            f"nesting deeper than {self.limits.max_depth} levels",
                            event.start_mark,
                        )
                    container: dict | list = {} if isinstance(event, yaml.MappingStartEvent) else []
                    path = self._add(stack, container, event.start_mark, event.end_mark)
                    stack.append([container, path, None, None, {}])
                elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                    stack.pop()
        finally:
            dispose = getattr(parser, "dispose", None)
            if dispose:
                dispose()

    def _scalar(self, event) -> object:
        if len(event.value) > self.limits.max_scalar_chars:
            self._refuse(
                "E004",
                f"a value of {len(event.value):,} characters exceeds the limit of {self.limits.max_scalar_chars:,}",
                event.start_mark,
            )
        plain = event.implicit[0] and event.style in (None, "")
        return _resolve_plain(event.value) if plain else event.value

    def _add(self, stack: list[list], value: object, mark, end_mark) -> tuple:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            self._refuse("E004", f"more than {self.limits.max_nodes:,} YAML nodes in one file", mark)
        position = (mark.line + 1, mark.column + 1)
        if not stack:
            self.document.data = value
            self.document.value_marks[()] = position
            return ()
        frame = stack[-1]
        container, path = frame[0], frame[1]
        if isinstance(container, list):
            child = path + (len(container),)
            container.append(value)
            self.document.value_marks[child] = position
            return child
        if frame[2] is None and frame[3] is None:
            # This node is a key.
            if isinstance(value, dict | list):
                self._refuse("E005", "complex (mapping or sequence) keys are not supported", mark)
            key = "" if value is None else str(value) if not isinstance(value, str) else value
            if isinstance(value, bool):
                key = "true" if value else "false"
            seen = frame[4]
            if key in seen:
                # Report and keep the first value; the duplicate's value is
                # parsed (so later problems are still found) but discarded.
                self.diagnostics.append(
                    make(
                        "E003",
                        f"duplicate key '{key}' (first defined at line {seen[key]})",
                        Location(self.file, position[0], position[1], path + (key,)),
                        "remove or rename one of the two entries",
                    )
                )
                self.discarded += 1
                key = _Discarded(self.discarded)
            else:
                seen[key] = position[0]
            frame[2] = key
            frame[3] = position
            return path
        key = frame[2]
        child = path + (key,)
        if isinstance(key, _Discarded):
            frame[2] = None
            frame[3] = None
            return child
        container[key] = value
        self.document.key_marks[child] = frame[3]
        self.document.value_marks[child] = position
        frame[2] = None
        frame[3] = None
        return child


def locate_in_scalar(text: str, base: Location, value: str, offset: int) -> Location:
    """Map a character offset inside a scalar's value to a line and column of
    the file, for plain, single- and double-quoted and block scalars.

    ``text`` is the file and ``base`` the location of the value (from
    :meth:`YamlDocument.location`); ``value``, the value as parsed, is not
    needed (the walk reads the file text itself). When the offset cannot be
    placed, ``base`` is returned. The loader uses it for formulas, the
    billing checks for filter conditions."""
    lines = text.splitlines()
    line_index = (base.line or 1) - 1
    column = (base.column or 1) - 1
    if line_index >= len(lines):
        return base
    first = lines[line_index]
    indicator = first[column:column + 1]
    if indicator in ("|", ">"):
        # Block scalar: content starts on the next non-empty line; each value
        # character is a file character, and each line break (kept by |,
        # folded into a space by >) stands for one character of the value.
        row = line_index + 1
        while row < len(lines) and not lines[row].strip():
            row += 1
        if row >= len(lines):
            return base
        indent = len(lines[row]) - len(lines[row].lstrip())
        remaining = offset
        while row < len(lines):
            content = lines[row][indent:]
            if remaining <= len(content):
                return Location(base.file, row + 1, indent + remaining + 1, base.yaml_path)
            remaining -= len(content) + 1
            row += 1
        return base
    if indicator in ("'", '"'):
        # Walk the quoted text: an escape is several file characters for one
        # value character (\n: 2, \xNN: 4, \uNNNN: 6, \UNNNNNNNN: 10; '' in
        # single quotes: 2).
        position = column + 1
        widths = {"x": 4, "u": 6, "U": 10}
        for _ in range(offset):
            if position >= len(first):
                return base
            if indicator == '"' and first[position] == "\\":
                position += widths.get(first[position + 1:position + 2], 2)
            elif indicator == "'" and first[position:position + 2] == "''":
                position += 2
            else:
                position += 1
        return Location(base.file, base.line, position + 1, base.yaml_path)
    # Plain scalar: each continuation line is folded into one space.
    remaining = offset
    row, start = line_index, column
    while row < len(lines):
        content = lines[row][start:].rstrip()
        if remaining <= len(content):
            return Location(base.file, row + 1, start + remaining + 1, base.yaml_path)
        remaining -= len(content) + 1
        row += 1
        if row < len(lines):
            start = len(lines[row]) - len(lines[row].lstrip())
    return base
