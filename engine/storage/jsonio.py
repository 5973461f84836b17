"""JSON record files in: a list of objects, read strictly and within limits.

A JSON file is parsed whole (unlike CSV, which :mod:`.csvio` streams), so its
size is capped before parsing. Numbers are read as exact ``Decimal`` (never a
binary float), ``NaN`` and ``Infinity`` are refused, and every problem is
reported as a :class:`~engine.storage.csvio.RecordError` instead of raised.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

from .csvio import RecordError


def json_records(
    path: Path,
    display: str,
    report: Callable[[RecordError], None],
    *,
    max_bytes: int,
    max_rows: int,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(position, object)`` per item of the file's JSON list, 1-based.
    Problems with the file as a whole end the reading; an item that is not an
    object is reported and skipped."""
    if path.stat().st_size > max_bytes:
        report(RecordError(display, None, None, f"the file exceeds {max_bytes:,} bytes; split it or use CSV"))
        return
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        report(RecordError(display, None, None, f"the file is not UTF-8 text (line {line})"))
        return
    try:
        items = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        report(RecordError(display, None, None, f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}"))
        return
    except ValueError as exc:
        report(RecordError(display, None, None, f"invalid JSON: {exc}"))
        return
    except RecursionError:
        report(RecordError(display, None, None, "invalid JSON: nested too deeply"))
        return
    if not isinstance(items, list):
        report(RecordError(display, None, None, f"expected a JSON list of objects, got {json_kind(items)}"))
        return
    if len(items) > max_rows:
        report(RecordError(display, None, None, f"more than {max_rows:,} records; split the file"))
        return
    for index, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            report(RecordError(display, index, None, f"expected an object, got {json_kind(item)}"))
            continue
        yield index, item


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def json_kind(value: Any) -> str:
    """What a JSON value is, for messages ("an object", "a number" ...)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
