"""JSON Schema validation of YAML documents, with errors mapped to file:line:col.

The schemas in ``schemas/`` describe each kind of file "as written". They are
strict (``additionalProperties: false``); the only open mapping is the record
values of a custom setting, whose keys are field names checked semantically
against the setting's metadata.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

import jsonschema
from referencing import Registry, Resource

from .diagnostics import Diagnostic, did_you_mean, make
from .schemacheck import Check, Unsupported, compile_check
from .yamlsrc import YamlDocument

SCHEMA_FILES = ("field", "object", "setting", "records", "project")


@lru_cache(maxsize=None)
def _registry() -> Registry:
    resources_ = []
    for name in SCHEMA_FILES:
        text = resources.files("engine.config").joinpath(f"schemas/{name}.schema.json").read_text("utf-8")
        schema = json.loads(text)
        resources_.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources_)


@lru_cache(maxsize=None)
def validator(kind: str) -> jsonschema.protocols.Validator:
    """A compiled validator for one kind of file (object, setting, records, project)."""
    registry = _registry()
    schema = registry[f"https://metabill.dev/schemas/{kind}.schema.json"].contents
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the text {shown!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "nothing",
}


def _expected(types: object) -> str:
    if isinstance(types, str):
        types = [types]
    return " or ".join(_TYPE_WORDS.get(t, t) for t in types)  # type: ignore[union-attr]


def _where(path: tuple) -> str:
    return "/".join(str(p) for p in path) or "top level"


@lru_cache(maxsize=None)
def precheck(kind: str) -> Check | None:
    """The fast pre-check of one kind of file (:mod:`engine.config.schemacheck`),
    or None when its schema uses what the pre-check does not implement."""
    registry = {uri: resource.contents for uri, resource in _registry().items()}
    try:
        return compile_check(registry, f"https://metabill.dev/schemas/{kind}.schema.json")
    except Unsupported:
        return None


def validate_document(doc: YamlDocument, kind: str) -> list[Diagnostic]:
    """Every schema violation of ``doc`` as a diagnostic pointing at the value.

    A document the pre-check passes has none (its contract); only the others
    go through ``jsonschema``, which finds and describes them."""
    check = precheck(kind)
    if check is not None and check(doc.data):
        return []
    out: list[Diagnostic] = []
    for error in validator(kind).iter_errors(doc.data):
        out.extend(_map_error(doc, error))
    return out


def _map_error(doc: YamlDocument, error: jsonschema.ValidationError) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    keyword = error.validator
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        diagnostics = []
        for key in instance:
            if key in allowed:
                continue
            hint = did_you_mean(key, allowed)
            if hint is None and allowed:
                hint = "allowed keys: " + ", ".join(sorted(allowed))
            diagnostics.append(
                make("E010", f"unknown key '{key}' in {_where(path)}", doc.location(path + (key,), key=True), hint)
            )
        return diagnostics
    if keyword == "propertyNames" or "propertyNames" in error.relative_schema_path:
        # jsonschema reports a bad key as a 'pattern' error on the key itself,
        # with the path of the mapping that holds it.
        bad = error.instance
        return [
            make(
                "E031",
                f"'{bad}' is not a valid API name (letters, digits and _; starting with a letter; at most 60 characters)",
                doc.location(path + (bad,), key=True),
            )
        ]
    if keyword == "required":
        missing = [k for k in error.validator_value if isinstance(instance, dict) and k not in instance]
        return [
            make(
                "E011",
                f"required key '{key}' is missing in {_where(path)}" + _type_context(instance),
                doc.location(path),
            )
            for key in missing
        ]
    if keyword == "type":
        return [
            make(
                "E012",
                f"{_where(path)}: expected {_expected(error.validator_value)}, got {_describe(instance)}",
                doc.location(path),
                "quote the value to keep it as text" if error.validator_value == "string" else None,
            )
        ]
    if keyword in ("enum", "const"):
        options = error.validator_value if keyword == "enum" else [error.validator_value]
        hint = did_you_mean(str(instance), [str(o) for o in options]) if isinstance(instance, str) else None
        return [
            make(
                "E013",
                f"{_where(path)}: {_describe(instance)} is not one of: {', '.join(str(o) for o in options)}",
                doc.location(path),
                hint,
            )
        ]
    if keyword == "oneOf" and path == () and isinstance(instance, dict):
        both = "values" in instance and "records" in instance
        return [
            make(
                "E011" if not both else "E013",
                "give either 'values' (the default row of a hierarchy setting) or 'records' (a list setting)"
                + (", not both" if both else ""),
                doc.location(path),
            )
        ]
    if keyword in ("anyOf", "oneOf"):
        return [
            make(
                "E012",
                f"{_where(path)}: expected a single value or a list of values, got {_describe(instance)}",
                doc.location(path),
            )
        ]
    if keyword == "pattern":
        return [
            make(
                "E013",
                f"{_where(path)}: {_describe(instance)} does not have the required form ({error.validator_value})",
                doc.location(path),
            )
        ]
    if keyword in ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "maxProperties"):
        return [make("E013", f"{_where(path)}: {error.message}", doc.location(path))]
    return [make("E013", f"{_where(path)}: {error.message}", doc.location(path))]


def _type_context(instance: object) -> str:
    if isinstance(instance, dict) and isinstance(instance.get("type"), str):
        return f" (needed by {instance['type']} fields)"
    return ""
