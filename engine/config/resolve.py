"""From documents "as written" to resolved objects and setting records.

The schema has already checked the shape of each document. This module turns
object and setting definitions into :class:`~engine.config.model.ObjectDef`
values, applies type defaults, links lookups into child relationships, and
turns setting records into typed :class:`~engine.config.model.SettingRecord`
values. Every problem becomes a diagnostic; a definition that cannot be
resolved is left out and remembered as *broken*, so that references to it do
not produce a cascade of follow-up errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType

from .diagnostics import Diagnostic, Location, did_you_mean, make
from .model import (
    ChildRelationship,
    FieldDef,
    FieldType,
    FormulaDef,
    ObjectDef,
    ObjectKind,
    SettingRecord,
)
from .values import ValueProblem, check_setting_text, coerce
from .yamlsrc import YamlDocument

# Which definition keys make sense for which field type. The schema accepts
# the union; this table reports the rest with a message that names the type.
_TYPE_KEYS: dict[FieldType, frozenset[str]] = {
    FieldType.TEXT: frozenset({"length"}),
    FieldType.LONGTEXT: frozenset({"length"}),
    FieldType.EMAIL: frozenset({"length"}),
    FieldType.URL: frozenset({"length"}),
    FieldType.NUMBER: frozenset({"precision", "scale"}),
    FieldType.CURRENCY: frozenset({"precision", "scale"}),
    FieldType.PERCENT: frozenset({"precision", "scale"}),
    FieldType.CHECKBOX: frozenset(),
    FieldType.DATE: frozenset(),
    FieldType.DATETIME: frozenset(),
    FieldType.PICKLIST: frozenset({"values", "restricted"}),
    FieldType.MULTIPICKLIST: frozenset({"values", "restricted"}),
    FieldType.LOOKUP: frozenset({"to", "relationship_name", "on_delete", "sparse"}),
    FieldType.MASTERDETAIL: frozenset({"to", "relationship_name"}),
    FieldType.FORMULA: frozenset({"returns", "expression", "blanks", "scale"}),
    FieldType.AUTONUMBER: frozenset({"format"}),
}
_COMMON_KEYS = frozenset(
    {"type", "label", "description", "help", "required", "unique", "external_id", "system", "default", "match", "meta"}
)
_DEFAULT_SHAPE = {
    FieldType.TEXT: {"length": 255},
    FieldType.LONGTEXT: {"length": 32768},
    FieldType.EMAIL: {"length": 255},
    FieldType.URL: {"length": 255},
    FieldType.NUMBER: {"precision": 18, "scale": 0},
    FieldType.CURRENCY: {"precision": 16, "scale": 2},
    FieldType.PERCENT: {"precision": 7, "scale": 3},
}
_MAX_LENGTH = {FieldType.TEXT: 255, FieldType.EMAIL: 255, FieldType.URL: 255}

# Implicit fields every object has; declaring them is an error.
IMPLICIT_FIELDS = ("Id", "Name", "CreatedDate", "LastModifiedDate")


@dataclass
class Definition:
    """An object or setting definition document with its kind."""

    doc: YamlDocument
    kind: ObjectKind

    @property
    def name(self) -> str:
        key = "object" if self.kind is ObjectKind.OBJECT else "setting"
        return str(self.doc.data.get(key))

    @property
    def name_path(self) -> tuple:
        return ("object",) if self.kind is ObjectKind.OBJECT else ("setting",)


@dataclass
class Resolution:
    objects: dict[str, ObjectDef] = field(default_factory=dict)
    broken_objects: set[str] = field(default_factory=set)
    broken_fields: set[tuple[str, str]] = field(default_factory=set)
    definitions: dict[str, Definition] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def is_broken(self, object_name: str, field_name: str | None = None) -> bool:
        if object_name.lower() in self.broken_objects:
            return True
        return field_name is not None and (object_name.lower(), field_name.lower()) in self.broken_fields


def resolve_objects(definitions: list[Definition], schema_bad: set[int]) -> Resolution:
    """Resolve object and setting definitions. ``schema_bad`` holds the id() of
    documents that failed schema validation: they are resolved best-effort."""
    res = Resolution()
    for definition in definitions:
        name = definition.name
        key = name.lower()
        if key in res.definitions:
            first = res.definitions[key]
            res.diagnostics.append(
                make(
                    "E020",
                    f"'{name}' is defined twice (first in {first.doc.file})",
                    definition.doc.location(definition.name_path),
                    "object and setting names are unique, ignoring case",
                )
            )
            continue
        res.definitions[key] = definition
        obj = _resolve_one(definition, res)
        if obj is None:
            res.broken_objects.add(key)
        else:
            res.objects[key] = obj
    _link_relationships(res)
    return res


def _length(raw: object, default: int) -> int:
    """A text length as written, when it is a plausible one (the schema
    reports anything else at its line), else ``default``."""
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 < raw <= 1_000_000:
        return raw
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 7 and int(raw) > 0:
        return int(raw)
    return default


def _resolve_one(definition: Definition, res: Resolution) -> ObjectDef | None:
    doc = definition.doc
    data = doc.data
    name = definition.name
    location = doc.location(definition.name_path)
    fields: list[FieldDef] = []
    seen: dict[str, str] = {}

    fields.append(FieldDef("Id", name, FieldType.ID, "Record ID", system=True, source=location))
    if definition.kind is ObjectKind.OBJECT:
        nf = data.get("name_field")
        if not isinstance(nf, dict):
            nf = {}  # the schema reports what it is instead
        nf_type = FieldType.AUTONUMBER if nf.get("type") == "AutoNumber" else FieldType.TEXT
        if nf_type is FieldType.AUTONUMBER and not nf.get("format"):
            res.diagnostics.append(
                make("E011", "an AutoNumber name field needs a 'format' such as \"INV-{000000}\"", doc.location(("name_field",)))
            )
        fields.append(
            FieldDef(
                "Name",
                name,
                nf_type,
                str(nf.get("label") or f"{data.get('label', name)} Name"),
                length=_length(nf.get("length"), 80) if nf_type is FieldType.TEXT else 80,
                autonumber_format=nf.get("format") if nf_type is FieldType.AUTONUMBER else None,
                system=nf_type is FieldType.AUTONUMBER,
                source=doc.location(("name_field",)) if "name_field" in data else location,
            )
        )
        fields.append(FieldDef("CreatedDate", name, FieldType.DATETIME, "Created Date", system=True, source=location))
        fields.append(
            FieldDef("LastModifiedDate", name, FieldType.DATETIME, "Last Modified Date", system=True, source=location)
        )
    else:
        fields.append(FieldDef("Name", name, FieldType.TEXT, "Name", length=255, required=True, source=location))
    for implicit in fields:
        seen[implicit.name.lower()] = implicit.name

    raw_fields = data.get("fields")
    if not isinstance(raw_fields, dict):
        raw_fields = {}
    for field_name, spec in raw_fields.items():
        path = ("fields", field_name)
        if not isinstance(spec, dict):
            res.broken_fields.add((name.lower(), field_name.lower()))
            continue
        lowered = field_name.lower()
        if lowered in seen:
            implicit = seen[lowered] in IMPLICIT_FIELDS
            res.diagnostics.append(
                make(
                    "E021",
                    f"field '{field_name}' of {name} is "
                    + (f"implicit ({seen[lowered]}) and must not be declared" if implicit else f"already defined as '{seen[lowered]}'"),
                    doc.location(path, key=True),
                    "API names are unique, ignoring case" if not implicit else None,
                )
            )
            continue
        seen[lowered] = field_name
        resolved = _resolve_field(name, field_name, spec, doc, path, res)
        if resolved is None:
            res.broken_fields.add((name.lower(), lowered))
        else:
            fields.append(resolved)
    return ObjectDef(
        name=name,
        label=str(data.get("label") or name),
        kind=definition.kind,
        fields=tuple(fields),
        plural_label=str(data.get("plural_label") or data.get("label") or name),
        description=str(data.get("description") or ""),
        source=location,
    )


#: Field keys whose value is a text: a document the schema refused may hold
#: anything there, and such a field is left unresolved.
_TEXT_KEYS = ("type", "to", "relationship_name", "on_delete", "format", "match", "returns", "expression", "blanks")


def _resolve_field(
    object_name: str, field_name: str, spec: dict, doc: YamlDocument, path: tuple, res: Resolution
) -> FieldDef | None:
    type_text = spec.get("type")
    if not isinstance(type_text, str) or any(
        key in spec and spec[key] is not None and not isinstance(spec[key], str) for key in _TEXT_KEYS
    ):
        return None  # a document the schema refused, resolved best-effort: the schema reported it
    for key in ("length", "precision", "scale"):
        if key in spec and (not isinstance(spec[key], int) or isinstance(spec[key], bool)
                            or not 0 <= spec[key] <= 1_000_000):
            return None
    try:
        ftype = FieldType(type_text)
        if ftype is FieldType.FORMULA and isinstance(spec.get("returns"), str):
            FieldType(spec["returns"])
    except ValueError:
        return None  # the schema reported it
    ok = True
    allowed = _COMMON_KEYS | _TYPE_KEYS.get(ftype, frozenset())
    known = _COMMON_KEYS.union(*_TYPE_KEYS.values())
    for key in spec:
        if key in known and key not in allowed:  # unknown keys are the schema's to report
            res.diagnostics.append(
                make(
                    "E010",
                    f"'{key}' does not apply to {ftype.value} fields ({object_name}.{field_name})",
                    doc.location(path + (key,), key=True),
                )
            )
            ok = False
    shape = dict(_DEFAULT_SHAPE.get(ftype, {}))
    for key in ("length", "precision", "scale"):
        if key in spec and isinstance(spec[key], int):
            shape[key] = spec[key]
    if ftype in _MAX_LENGTH and shape.get("length", 0) > _MAX_LENGTH[ftype]:
        res.diagnostics.append(
            make(
                "E013",
                f"{ftype.value} fields hold at most {_MAX_LENGTH[ftype]} characters; use LongText for {object_name}.{field_name}",
                doc.location(path + ("length",)),
            )
        )
        ok = False
    if ftype.is_numeric and shape.get("scale", 0) > shape.get("precision", 18):
        res.diagnostics.append(
            make(
                "E013",
                f"scale {shape['scale']} exceeds precision {shape['precision']} ({object_name}.{field_name})",
                doc.location(path + ("scale",)),
            )
        )
        ok = False
    values: tuple[str, ...] = ()
    if ftype in (FieldType.PICKLIST, FieldType.MULTIPICKLIST):
        raw_values = spec.get("values") or []
        if not isinstance(raw_values, list):
            raw_values = []  # the schema reported it
        seen_values: set[str] = set()
        for index, value in enumerate(raw_values):
            if not isinstance(value, str):
                continue
            if value.lower() in seen_values:
                res.diagnostics.append(
                    make("E013", f"picklist value '{value}' is listed twice", doc.location(path + ("values", index)))
                )
                continue
            if ftype is FieldType.MULTIPICKLIST and ";" in value:
                res.diagnostics.append(
                    make("E013", f"multi-select value '{value}' must not contain ';'", doc.location(path + ("values", index)))
                )
                continue
            seen_values.add(value.lower())
            values += (value,)
    formula = None
    if ftype is FieldType.FORMULA:
        returns = spec.get("returns")
        expression = spec.get("expression")
        if isinstance(returns, str) and isinstance(expression, str):
            returns_type = FieldType(returns)
            formula = FormulaDef(returns_type, expression, blanks_as_zero=spec.get("blanks") == "zero")
            if returns_type.is_numeric:
                shape.setdefault("precision", 18)
                shape.setdefault("scale", 2 if returns_type is not FieldType.NUMBER else shape.get("scale", 0))
        else:
            ok = False
    if ftype is FieldType.MASTERDETAIL and spec.get("on_delete"):
        ok = False
    definition = FieldDef(
        name=field_name,
        object_name=object_name,
        type=ftype,
        label=str(spec.get("label") or field_name),
        description=str(spec.get("description") or ""),
        required=bool(spec.get("required", ftype is FieldType.MASTERDETAIL)),
        unique=bool(spec.get("unique", False)),
        external_id=bool(spec.get("external_id", False)),
        length=shape.get("length"),
        precision=shape.get("precision"),
        scale=shape.get("scale"),
        values=values,
        restricted=bool(spec.get("restricted", True)),
        reference_to=spec.get("to") if ftype.is_reference else None,
        relationship_name=spec.get("relationship_name"),
        on_delete=("cascade" if ftype is FieldType.MASTERDETAIL else spec.get("on_delete", "clear"))
        if ftype.is_reference
        else None,
        sparse=bool(spec.get("sparse", False)) if ftype is FieldType.LOOKUP else False,
        formula=formula,
        autonumber_format=spec.get("format") if ftype is FieldType.AUTONUMBER else None,
        match=spec.get("match"),
        system=bool(spec.get("system", False)),
        source=doc.location(path, key=True),
    )
    if (definition.unique or definition.external_id) and ftype in (
        FieldType.FORMULA,
        FieldType.LONGTEXT,
        FieldType.CHECKBOX,
        FieldType.MULTIPICKLIST,
    ):
        res.diagnostics.append(
            make(
                "E013",
                f"{ftype.value} fields cannot be unique or external ids ({object_name}.{field_name})",
                doc.location(path),
            )
        )
        ok = False
    if "default" in spec and spec["default"] is not None:
        if ftype in (FieldType.FORMULA, FieldType.AUTONUMBER) or ftype.is_reference:
            res.diagnostics.append(
                make("E010", f"{ftype.value} fields take no default ({object_name}.{field_name})", doc.location(path + ("default",), key=True))
            )
            ok = False
        else:
            try:
                definition = replace(definition, default=coerce(definition, spec["default"]))
            except ValueProblem as problem:
                res.diagnostics.append(
                    make("E013", f"default of {object_name}.{field_name}: {problem}", doc.location(path + ("default",)))
                )
                ok = False
    return definition if ok else None


def _default_relationship_name(child: str) -> str:
    if child.lower().endswith("__c"):
        base = child[:-3]
        return (base[:-1] + "ies" if base.endswith("y") else base + "s") + "__r"
    return child[:-1] + "ies" if child.endswith("y") else child + "s"


def _link_relationships(res: Resolution) -> None:
    """Check lookup targets and attach child relationships to their parents."""
    children: dict[str, dict[str, ChildRelationship]] = {}
    first_seen: dict[tuple[str, str], Location | None] = {}
    for obj in list(res.objects.values()):
        for fdef in obj.fields:
            if not fdef.type.is_reference or fdef.reference_to is None:
                continue
            target_key = fdef.reference_to.lower()
            target = res.objects.get(target_key)
            location = _field_key_location(res, obj, fdef, "to")
            if target is None:
                if target_key in res.broken_objects:
                    continue
                candidates = [o.name for o in res.objects.values() if o.kind is ObjectKind.OBJECT]
                res.diagnostics.append(
                    make(
                        "E040",
                        f"{obj.name}.{fdef.name} refers to the unknown object '{fdef.reference_to}'",
                        location,
                        did_you_mean(fdef.reference_to, candidates),
                    )
                )
                res.broken_fields.add((obj.key, fdef.key))
                continue
            if target.kind is not ObjectKind.OBJECT:
                res.diagnostics.append(
                    make(
                        "E043",
                        f"{obj.name}.{fdef.name} refers to the setting '{target.name}'; lookups point to data objects",
                        location,
                        "store the setting record's Name in a Text field instead",
                    )
                )
                res.broken_fields.add((obj.key, fdef.key))
                continue
            if obj.kind is not ObjectKind.OBJECT:
                continue  # setting fields may refer to objects but create no relationship
            rel_name = fdef.relationship_name or _default_relationship_name(obj.name)
            bucket = children.setdefault(target.key, {})
            if rel_name.lower() in {k.lower() for k in bucket}:
                res.diagnostics.append(
                    make(
                        "E023",
                        f"child relationship '{rel_name}' of {target.name} is already used by "
                        f"{bucket[next(k for k in bucket if k.lower() == rel_name.lower())].child_object}",
                        _field_key_location(res, obj, fdef, "relationship_name"),
                        "give this lookup a distinct relationship_name",
                    )
                )
                continue
            first_seen[(target.key, rel_name.lower())] = fdef.source
            bucket[rel_name] = ChildRelationship(rel_name, obj.name, fdef.name, fdef.type is FieldType.MASTERDETAIL)
    for key, bucket in children.items():
        obj = res.objects[key]
        res.objects[key] = replace(obj, child_relationships=MappingProxyType(dict(sorted(bucket.items()))))


def _field_key_location(res: Resolution, obj: ObjectDef, fdef: FieldDef, key: str) -> Location:
    definition = res.definitions.get(obj.key)
    if definition is None:
        return fdef.source or Location("?")
    path = ("fields", fdef.name, key)
    if path in definition.doc.value_marks:
        return definition.doc.location(path)
    return fdef.source or definition.doc.location(("fields", fdef.name))


# ---------------------------------------------------------------------------
# Setting records


def resolve_records(
    documents: list[YamlDocument], res: Resolution
) -> tuple[dict[str, tuple[SettingRecord, ...]], list[Diagnostic]]:
    """Turn custom_settings documents into typed records, keyed by setting."""
    diagnostics: list[Diagnostic] = []
    collected: dict[str, list[SettingRecord]] = {}
    names_seen: dict[tuple[str, str], Location] = {}
    hierarchy_files: dict[str, str] = {}
    for doc in documents:
        data = doc.data
        setting_name = data.get("setting")
        if not isinstance(setting_name, str):
            continue
        setting = res.objects.get(setting_name.lower())
        if setting is None or setting.kind is ObjectKind.OBJECT:
            if setting_name.lower() in res.broken_objects:
                continue
            settings = [o.name for o in res.objects.values() if o.kind is not ObjectKind.OBJECT]
            message = (
                f"'{setting_name}' is a data object, not a custom setting; load its records with 'metabill load'"
                if setting is not None
                else f"records for the unknown setting '{setting_name}'"
            )
            hint = (
                "custom_settings/ holds records of settings only"
                if setting is not None
                else did_you_mean(setting_name, settings)
            )
            diagnostics.append(make("E072", message, doc.location(("setting",)), hint))
            continue
        bucket = collected.setdefault(setting.key, [])
        if setting.kind is ObjectKind.HIERARCHY_SETTING:
            if "records" in data:
                diagnostics.append(
                    make(
                        "E013",
                        f"{setting.name} is a hierarchy setting: give its default row under 'values:', not 'records:'",
                        doc.location(("records",), key=True),
                    )
                )
                continue
            if setting.key in hierarchy_files:
                diagnostics.append(
                    make(
                        "E074",
                        f"{setting.name} already has its default row in {hierarchy_files[setting.key]}",
                        doc.location(("setting",)),
                    )
                )
                continue
            hierarchy_files[setting.key] = doc.file
            values = data.get("values")
            if isinstance(values, dict):
                record = _typed_record(setting, "Default", values, doc, ("values",), diagnostics)
                bucket.append(record)
            continue
        if "values" in data:
            diagnostics.append(
                make(
                    "E013",
                    f"{setting.name} is a list setting: give its rows under 'records:', not 'values:'",
                    doc.location(("values",), key=True),
                )
            )
            continue
        rows = data.get("records")
        if not isinstance(rows, list):
            continue
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                continue
            name = row.get("Name")
            if name is None:
                continue
            name = str(name)
            key = (setting.key, name.lower())
            if key in names_seen:
                first = names_seen[key]
                diagnostics.append(
                    make(
                        "E022",
                        f"{setting.name} record '{name}' is defined twice (first at {first.render()})",
                        doc.location(("records", index, "Name")),
                        "record names are unique per setting, ignoring case",
                    )
                )
                continue
            names_seen[key] = doc.location(("records", index, "Name"))
            bucket.append(_typed_record(setting, name, row, doc, ("records", index), diagnostics))
    records = {key: tuple(rows) for key, rows in collected.items()}
    return records, diagnostics


def _typed_record(
    setting: ObjectDef, name: str, row: dict, doc: YamlDocument, path: tuple, diagnostics: list[Diagnostic]
) -> SettingRecord:
    values: dict[str, object] = {}
    sources: dict[str, Location] = {}
    field_names = [f.name for f in setting.fields if f.type is not FieldType.ID]
    for key, raw in row.items():
        fdef = setting.field(key)
        where = doc.location(path + (key,))
        if fdef is None or fdef.type is FieldType.ID:
            diagnostics.append(
                make(
                    "E041",
                    f"{setting.name} has no field '{key}'",
                    doc.location(path + (key,), key=True),
                    did_you_mean(key, field_names) or "add the field to the setting's metadata first",
                )
            )
            continue
        if fdef.type is FieldType.FORMULA:
            diagnostics.append(make("E070", f"{setting.name}.{fdef.name} is a formula and takes no value", where))
            continue
        if isinstance(raw, list) and fdef.type is not FieldType.MULTIPICKLIST:
            diagnostics.append(
                make("E070", f"{setting.name}.{fdef.name} takes a single value, not a list", where)
            )
            continue
        try:
            value = coerce(fdef, raw)
            if isinstance(value, str):
                check_setting_text(value, multiline=fdef.type is FieldType.LONGTEXT)
            values[fdef.key] = value
        except ValueProblem as problem:
            code = "E071" if fdef.type in (FieldType.PICKLIST, FieldType.MULTIPICKLIST) else "E070"
            hint = None
            if code == "E071" and isinstance(raw, str):
                hint = did_you_mean(raw, fdef.values) or ("values: " + ", ".join(fdef.values[:12]))
            diagnostics.append(make(code, f"{setting.name}.{fdef.name}: {problem}", where, hint))
            continue
        sources[fdef.key] = where
    values["name"] = name
    for fdef in setting.fields:
        if fdef.key not in values or values[fdef.key] is None:
            if fdef.default is not None:
                values[fdef.key] = fdef.default
            elif fdef.type is FieldType.CHECKBOX:
                values[fdef.key] = False
            elif fdef.required and fdef.type is not FieldType.ID:
                diagnostics.append(
                    make(
                        "E073",
                        f"{setting.name} record '{name}' needs a value for the required field {fdef.name}",
                        doc.location(path),
                    )
                )
    return SettingRecord(
        setting=setting.name,
        name=name,
        values=MappingProxyType(values),
        source=doc.location(path),
        value_sources=MappingProxyType(sources),
    )
