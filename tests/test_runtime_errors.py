"""The runtime error catalogue: every EngineError subclass has a stable,
unique R-code and a title, and docs/runtime-errors.md lists them all."""

from __future__ import annotations

import re

from scripts import runtime_errors


def test_every_error_has_a_unique_code_and_a_title():
    classes = runtime_errors.error_classes()
    codes: dict[str, str] = {}
    for cls in classes:
        assert re.fullmatch(r"R\d{3}", cls.code), f"{cls.__qualname__}: code {cls.code!r} is not R + 3 digits"
        assert cls.code not in codes, f"{cls.__qualname__} and {codes[cls.code]} share {cls.code}"
        codes[cls.code] = cls.__qualname__
        assert runtime_errors.title(cls), f"{cls.__qualname__} has no docstring to title it"


def test_the_catalogue_document_is_current():
    doc = runtime_errors.DOC.read_text(encoding="utf-8")
    assert runtime_errors.table() in doc, "docs/runtime-errors.md is out of date: python -m scripts.runtime_errors --write"
