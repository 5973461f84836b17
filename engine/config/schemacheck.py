"""A fast yes/no pre-check of a document against a JSON Schema of ``schemas/``.

Why: loading the configuration validates every YAML document (about 60 in
the sample org) with ``jsonschema``, whose generic walk costs about as much
as reading and resolving the documents together, although almost every
document is valid. :func:`compile_check` turns a schema into a tree of small
Python closures that answer one question, "does this document certainly
pass?", several times faster; :func:`engine.config.schema.validate_document`
asks it first and runs ``jsonschema`` (and its error mapping) only when the
answer is no, so every diagnostic is produced exactly as before.

The contract is one-sided: a ``True`` must imply that ``jsonschema`` finds
no error; a ``False`` only costs the full validation. So wherever the exact
semantics of ``jsonschema`` would need care (an integral float for
``integer``, ``True`` against ``const: 1``, a key that is not text, a
keyword this module does not know), the check answers ``False``.
``compile_check`` refuses (:class:`Unsupported`) a schema with a keyword
outside the small set below, and the caller then always validates fully.
``tests/config/test_schema_precheck.py`` holds the contract on every shipped
document, on the broken test configurations and on mutations of both.
"""

from __future__ import annotations

import numbers
import re
from typing import Callable, Mapping

Check = Callable[[object], bool]

#: Keywords without effect on validity (annotations and the schema's own bookkeeping).
_IGNORED = frozenset({"$schema", "$id", "$defs", "title", "description", "$comment"})


class Unsupported(Exception):
    """The schema uses a keyword (or a form of one) the pre-check does not implement."""


def _is_type(name: str) -> Check:
    """The instance is of JSON type ``name``, in the narrowest reading: an
    integer is an ``int`` that is not a ``bool`` (``jsonschema`` also takes
    an integral float; here that goes to the full validation)."""
    if name == "string":
        return lambda x: isinstance(x, str)
    if name == "integer":
        return lambda x: isinstance(x, int) and not isinstance(x, bool)
    if name == "boolean":
        return lambda x: isinstance(x, bool)
    if name == "object":
        return lambda x: isinstance(x, dict)
    if name == "array":
        return lambda x: isinstance(x, list)
    if name == "null":
        return lambda x: x is None
    raise Unsupported(f"type {name!r}")


def _bound(holds: Check) -> Check:
    """A numeric bound: it applies to what ``jsonschema`` calls a number (a
    ``numbers.Number`` that is not a ``bool``); it is checked here for plain
    ints and floats, and anything else of that kind goes to the full validation."""

    def check(x: object) -> bool:
        if isinstance(x, bool) or not isinstance(x, numbers.Number):
            return True
        return type(x) in (int, float) and holds(x)

    return check


def _scalar_set(values: list, keyword: str) -> frozenset:
    """``enum``/``const`` values the check compares by ``==`` safely: texts,
    and integers that are not booleans (the instance must have the same
    Python type, see :func:`_member`)."""
    for value in values:
        if not (isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))):
            raise Unsupported(f"{keyword} value {value!r}")
    return frozenset((type(value), value) for value in values)


def _member(allowed: frozenset) -> Check:
    def check(x: object) -> bool:
        # (type, value): 1 is not True and "1" is not 1, whatever ``==`` says.
        return type(x) in (str, int) and (type(x), x) in allowed

    return check


class _Compiler:
    def __init__(self, registry: Mapping[str, dict]):
        self.registry = registry
        #: (base id, reference) -> check; filled lazily so that references may recurse.
        self.refs: dict[tuple[str, str], Check] = {}

    def schema(self, schema: object, base: str) -> Check:
        if schema is True:
            return lambda x: True
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        base = schema.get("$id", base)
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword in _IGNORED:
                continue
            builder = getattr(self, "k_" + keyword.lstrip("$"), None)
            if builder is None or keyword in ("then", "else"):
                if keyword in ("then", "else") and "if" in schema:
                    continue  # compiled with ``if``
                raise Unsupported(f"keyword {keyword!r}")
            checks.append(builder(value, schema, base))
        if not checks:
            return lambda x: True
        if len(checks) == 1:
            return checks[0]
        first, *rest = checks
        return lambda x: first(x) and all(check(x) for check in rest)

    # -- keywords (each returns the check of its own rule) ---------------------------

    def k_type(self, value, schema, base) -> Check:
        names = [value] if isinstance(value, str) else list(value)
        tests = [_is_type(name) for name in names]
        return lambda x: any(test(x) for test in tests)

    def k_enum(self, value, schema, base) -> Check:
        return _member(_scalar_set(list(value), "enum"))

    def k_const(self, value, schema, base) -> Check:
        return _member(_scalar_set([value], "const"))

    def k_minLength(self, value, schema, base) -> Check:
        return lambda x: not isinstance(x, str) or len(x) >= value

    def k_maxLength(self, value, schema, base) -> Check:
        return lambda x: not isinstance(x, str) or len(x) <= value

    def k_pattern(self, value, schema, base) -> Check:
        search = re.compile(value).search  # jsonschema: re.search, unanchored
        return lambda x: not isinstance(x, str) or search(x) is not None

    def k_minimum(self, value, schema, base) -> Check:
        return _bound(lambda x: x >= value)

    def k_maximum(self, value, schema, base) -> Check:
        return _bound(lambda x: x <= value)

    def k_minItems(self, value, schema, base) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= value

    def k_maxItems(self, value, schema, base) -> Check:
        return lambda x: not isinstance(x, list) or len(x) <= value

    def k_maxProperties(self, value, schema, base) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) <= value

    def k_required(self, value, schema, base) -> Check:
        keys = tuple(value)
        return lambda x: not isinstance(x, dict) or all(key in x for key in keys)

    def k_items(self, value, schema, base) -> Check:
        if "prefixItems" in schema:
            raise Unsupported("items with prefixItems")
        item = self.schema(value, base)
        return lambda x: not isinstance(x, list) or all(item(element) for element in x)

    def k_properties(self, value, schema, base) -> Check:
        if "patternProperties" in schema:
            raise Unsupported("properties with patternProperties")
        named = {key: self.schema(sub, base) for key, sub in value.items()}
        return lambda x: not isinstance(x, dict) or all(named[key](x[key]) for key in named if key in x)

    def k_additionalProperties(self, value, schema, base) -> Check:
        if "patternProperties" in schema:
            raise Unsupported("additionalProperties with patternProperties")
        known = frozenset(schema.get("properties", {}))
        if value is False:
            # Every key must be a text among the named properties.
            return lambda x: not isinstance(x, dict) or all(type(key) is str and key in known for key in x)
        extra = self.schema(value, base)
        return lambda x: not isinstance(x, dict) or all(
            type(key) is str and (key in known or extra(item)) for key, item in x.items())

    def k_propertyNames(self, value, schema, base) -> Check:
        name = self.schema(value, base)
        return lambda x: not isinstance(x, dict) or all(type(key) is str and name(key) for key in x)

    def k_allOf(self, value, schema, base) -> Check:
        parts = [self.schema(sub, base) for sub in value]
        return lambda x: all(part(x) for part in parts)

    def k_anyOf(self, value, schema, base) -> Check:
        parts = [self.schema(sub, base) for sub in value]
        return lambda x: any(part(x) for part in parts)

    def k_oneOf(self, value, schema, base) -> Check:
        parts = [self.schema(sub, base) for sub in value]
        # Exactly one: a part that says False only "maybe fails", so a single
        # True is not proof that the others fail. Only the shape used by our
        # schemas is taken: parts that are mutually exclusive by ``required``
        # and ``not required`` (see _exclusive); anything else goes to jsonschema.
        if not _exclusive(value):
            raise Unsupported("oneOf of parts not exclusive by their required keys")
        return lambda x: sum(1 for part in parts if part(x)) == 1

    def k_not(self, value, schema, base) -> Check:
        # "not S" needs a proof that S fails, which a one-sided check cannot
        # give; only "not required [keys]" is exact (the keys' absence).
        if set(value) != {"required"}:
            raise Unsupported("not of anything but required")
        keys = tuple(value["required"])
        return lambda x: not isinstance(x, dict) or not all(key in x for key in keys)

    def k_if(self, value, schema, base) -> Check:
        # The condition decides which branch applies, so it must be exact:
        # only "properties: {k: {enum|const}}, required: [k]" is taken.
        condition = _exact_condition(value)
        then = self.schema(schema.get("then", True), base)
        otherwise = self.schema(schema.get("else", True), base)
        return lambda x: then(x) if condition(x) else otherwise(x)

    def k_ref(self, value, schema, base) -> Check:
        key = (base, value)
        if key not in self.refs:
            self.refs[key] = lambda x: False  # filled below; never called before
            target, target_base = self._resolve(value, base)
            compiled: list[Check] = []
            self.refs[key] = lambda x: compiled[0](x)
            compiled.append(self.schema(target, target_base))
        return self.refs[key]

    def _resolve(self, reference: str, base: str) -> tuple[object, str]:
        document, _, pointer = reference.partition("#")
        if document:
            uri = base.rsplit("/", 1)[0] + "/" + document if "://" not in document else document
        else:
            uri = base
        if uri not in self.registry:
            raise Unsupported(f"reference {reference!r}")
        target: object = self.registry[uri]
        for part in [p for p in pointer.split("/") if p]:
            if not isinstance(target, dict) or part not in target:
                raise Unsupported(f"reference {reference!r}")
            target = target[part]
        return target, uri


def _exclusive(parts: list) -> bool:
    """Whether ``oneOf`` parts exclude each other by construction: each is
    ``{"required": [a], "not": {"required": [b]}}`` and the pairs are
    (a, b), (b, a)."""
    shapes = []
    for part in parts:
        if not (isinstance(part, dict) and set(part) == {"required", "not"} and isinstance(part["not"], dict)
                and set(part["not"]) == {"required"}):
            return False
        shapes.append((tuple(part["required"]), tuple(part["not"]["required"])))
    return len(shapes) == 2 and shapes[0] == shapes[1][::-1] and all(len(a) == 1 for pair in shapes for a in pair)


def _exact_condition(schema: object) -> Check:
    """An ``if`` schema the check can decide exactly both ways: a required
    key whose value is one of some texts."""
    if not (isinstance(schema, dict) and set(schema) == {"properties", "required"}):
        raise Unsupported("if of another shape")
    properties, required = schema["properties"], schema["required"]
    if len(properties) != 1 or list(properties) != list(required):
        raise Unsupported("if of another shape")
    (key, rule), = properties.items()
    if set(rule) == {"enum"}:
        options = list(rule["enum"])
    elif set(rule) == {"const"}:
        options = [rule["const"]]
    else:
        raise Unsupported("if of another shape")
    if not all(isinstance(option, str) for option in options):
        raise Unsupported("if over values other than texts")
    allowed = frozenset(options)
    # jsonschema: a non-object instance passes ``if`` (properties and
    # required apply to objects only), so the ``then`` branch applies.
    return lambda x: not isinstance(x, dict) or (key in x and type(x[key]) is str and x[key] in allowed)


def compile_check(registry: Mapping[str, dict], uri: str) -> Check:
    """The pre-check of the schema ``registry[uri]`` (``registry``: every
    schema by its ``$id``); :class:`Unsupported` when the schema uses what
    the pre-check does not implement exactly."""
    return _Compiler(registry).schema(registry[uri], uri)
