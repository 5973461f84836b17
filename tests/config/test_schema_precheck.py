"""The schema pre-check (``engine.config.schemacheck``) never passes a document
``jsonschema`` rejects, and passes the documents the loader usually sees.

Its contract is one-sided: ``precheck(kind)(data)`` True must imply no
``jsonschema`` error (``validate_document`` then returns nothing without
asking ``jsonschema``); False only costs the full validation, whose
diagnostics are unchanged. Held here on every document of the sample org,
on every document of the broken-configuration corpus (all cases in one org)
and on seeded mutations of all of them: removed keys, unknown keys, values
of another JSON type, integral floats, booleans for integers, blank and
overlong texts, texts breaking a pattern, keys that are not texts.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

import engine.config.loader as loader
from engine.config import schema
from engine.config.schemacheck import Unsupported, compile_check
from engine.project import load_project

from .orgcopy import REPO_ROOT, apply_edits, copy_org
from .test_broken_configs import CASES


def _documents(org: Path) -> list[tuple[str, object]]:
    """(kind, data) of every document ``load_project`` validates in ``org``."""
    seen: list[tuple[str, object]] = []
    real = loader.validate_document

    def recording(doc, kind):
        seen.append((kind, copy.deepcopy(doc.data)))
        return real(doc, kind)

    loader.validate_document = recording
    try:
        load_project(org)
    finally:
        loader.validate_document = real
    return seen


@pytest.fixture(scope="module")
def sample_documents() -> list[tuple[str, object]]:
    return _documents(REPO_ROOT)


@pytest.fixture(scope="module")
def broken_documents(tmp_path_factory) -> list[tuple[str, object]]:
    org = copy_org(tmp_path_factory.mktemp("broken") / "org")
    for case in CASES:
        apply_edits(org, case.edits)
    return _documents(org)


def _valid(kind: str, data: object) -> bool:
    return not any(True for _ in schema.validator(kind).iter_errors(data))


def _assert_sound(kind: str, data: object) -> bool:
    """The contract on one document; returns the pre-check's answer."""
    passed = schema.precheck(kind)(data)
    if passed:
        assert _valid(kind, data), (kind, data)
    return passed


def test_every_kind_compiles():
    for kind in schema.SCHEMA_FILES:
        assert schema.precheck(kind) is not None, kind


def test_sample_org_passes_the_precheck(sample_documents):
    """The fast path is the common one: every shipped document passes."""
    kinds = {kind for kind, _ in sample_documents}
    assert {"object", "setting", "records", "project"} <= kinds
    for kind, data in sample_documents:
        assert _valid(kind, data)
        assert schema.precheck(kind)(data), (kind, data)


def test_broken_corpus_is_never_passed_wrongly(broken_documents):
    answers = [_assert_sound(kind, data) for kind, data in broken_documents]
    assert not all(answers), "the corpus holds documents the schema rejects"


_ODD_VALUES = (None, True, False, 0, 1, -1, 1.0, 2.5, 10**6, "", "x", " ", "Text", "1", "a" * 300, "9abc",
               "ab-cd", [], ["x"], [1], [None], {}, {"x": 1}, {"type": "Text"})


def _mutations(data: object, rng: random.Random, count: int):
    """``count`` single changes of ``data``, somewhere in its tree."""
    paths: list[tuple] = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, path + (index,))

    walk(data, ())
    for _ in range(count):
        mutated = copy.deepcopy(data)
        path = rng.choice(paths)
        parent, node = None, mutated
        for part in path:
            parent, node = node, node[part]
        action = rng.randrange(6)
        if action == 0 and parent is not None:
            del parent[path[-1]]  # a key or an item removed
        elif action == 1 and isinstance(node, dict):
            node[rng.choice(["unknown", "Bad-Name", "1abc", "x" * 70, 7, ("t",)])] = rng.choice(_ODD_VALUES)
        elif action == 2 and isinstance(node, dict) and node:
            key = rng.choice(list(node))
            node[key] = rng.choice(_ODD_VALUES)
        elif action == 3 and isinstance(node, list):
            node.append(rng.choice(_ODD_VALUES))
        elif action == 4 and parent is not None:
            parent[path[-1]] = rng.choice(_ODD_VALUES)
        elif action == 5 and isinstance(node, dict) and node:
            key = rng.choice(list(node))
            value = node.pop(key)
            node[rng.choice([key.upper() if isinstance(key, str) else key, 3, "Name", "type"])] = value
        else:
            mutated = rng.choice(_ODD_VALUES) if not path else mutated
        yield mutated


def test_mutations_are_never_passed_wrongly(sample_documents, broken_documents):
    rng = random.Random(19)
    passed = failed = 0
    for kind, data in sample_documents + broken_documents:
        for mutated in _mutations(data, rng, 40):
            if _assert_sound(kind, mutated):
                passed += 1
            else:
                failed += 1
    assert passed > 100 and failed > 100  # both answers were exercised


def test_validate_document_reports_as_jsonschema_does(broken_documents):
    """The diagnostics of a rejected document come from the full validation, unchanged."""
    from engine.config.yamlsrc import YamlDocument

    for kind, data in broken_documents:
        doc = YamlDocument("x.yaml", data)
        full = [d for error in schema.validator(kind).iter_errors(data) for d in schema._map_error(doc, error)]
        assert schema.validate_document(doc, kind) == full


@pytest.mark.parametrize("bad", [
    {"type": "object", "patternProperties": {"^a": {}}},
    {"type": "number"},
    {"not": {"type": "string"}},
    {"oneOf": [{"type": "string"}, {"maxLength": 3}]},
    {"if": {"type": "string"}, "then": {"minLength": 2}},
    {"enum": [1.5]},
    {"const": True},
    {"uniqueItems": True},
    {"$ref": "missing.schema.json"},
])
def test_what_it_cannot_decide_exactly_is_refused(bad):
    uri = "https://example.invalid/x.schema.json"
    with pytest.raises(Unsupported):
        compile_check({uri: bad}, uri)


def test_narrow_readings_fall_back():
    """Where jsonschema's reading is wider than a plain type test, the
    pre-check answers False (the full validation decides)."""
    uri = "https://example.invalid/x.schema.json"
    check = compile_check({uri: {"type": "integer", "maximum": 5}}, uri)
    assert check(3) and not check(3.0) and not check(True) and not check(6)
    const = compile_check({uri: {"const": 1}}, uri)
    assert const(1) and not const(True) and not const(1.0)
    keys = compile_check({uri: {"type": "object", "propertyNames": {"pattern": "^a"}}}, uri)
    assert keys({"ab": 1}) and not keys({1: 1}) and not keys({"b": 1})
