"""Which column a header of a data file names.

A record file (CSV header row, JSON object keys) names the columns it fills
by API name, in any case: ``Id``, a stored field (``AccountNumber``), or a
lookup by another object's external id or unique field
(``Account.AccountNumber``). :func:`classify_header` decides what a header
means, or why it cannot be loaded, from the model alone; the loader
(:mod:`.loading`) reports the reason against the header's row.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.diagnostics import did_you_mean
from engine.config.model import FieldDef, FieldType, ObjectDef, OrgModel

from . import schema as s

#: Columns the engine sets itself on every write.
ENGINE_SET = (s.CREATED, s.MODIFIED)

ID_COLUMN = "id"
FIELD_COLUMN = "field"
LOOKUP_COLUMN = "ref"


@dataclass(frozen=True, slots=True)
class LoadColumn:
    """What one header of a data file fills: the record id, a stored field,
    or a lookup field resolved through ``target``'s key field ``target_field``."""

    header: str
    kind: str  # ID_COLUMN | FIELD_COLUMN | LOOKUP_COLUMN
    field: FieldDef | None = None
    target: ObjectDef | None = None
    target_field: FieldDef | None = None

    @property
    def column(self) -> str:
        return s.ID if self.kind == ID_COLUMN else self.field.column_name


def loadable_names(obj: ObjectDef) -> list[str]:
    """The API names a file may use for ``obj`` (for "did you mean" hints)."""
    names = ["Id"]
    for f in obj.fields:
        if f.is_stored and f.type is not FieldType.AUTONUMBER and f.column_name not in ENGINE_SET and f.column_name != s.ID:
            names.append(f.name)
    return names


def classify_header(obj: ObjectDef, model: OrgModel, header: str) -> LoadColumn | str:
    """The column ``header`` names in a file of ``obj`` records, or the
    problem with it (a message for the user)."""
    name = header.strip()
    if not name:
        return "empty column name"
    if name.lower() == "id":
        return LoadColumn(header, ID_COLUMN)
    if name.lower() in ENGINE_SET:
        spelled = obj.field(name).name if obj.field(name) else {"createddate": "CreatedDate"}.get(name.lower(), "LastModifiedDate")
        return f"{spelled} is set by the engine and cannot be loaded"
    if "." in name:
        return _classify_lookup(obj, model, header, name)
    field = obj.field(name)
    if field is None:
        hint = did_you_mean(name, loadable_names(obj))
        return f"{obj.name} has no field {name!r}" + (f"; {hint}" if hint else "")
    if not field.is_stored:
        return f"{obj.name}.{field.name} is a formula field; its value is computed, not loaded"
    if field.type is FieldType.AUTONUMBER:
        return f"{obj.name}.{field.name} is an AutoNumber field; its values are assigned automatically"
    if field.type is FieldType.ID:
        return f"{obj.name}.{field.name} cannot be loaded"
    return LoadColumn(header, FIELD_COLUMN, field)


def _classify_lookup(obj: ObjectDef, model: OrgModel, header: str, name: str) -> LoadColumn | str:
    """``Lookup.KeyField``: a lookup of ``obj`` filled by a key of its target."""
    left, right = name.split(".", 1)
    ref = obj.field(left) or obj.relationship(left)
    if ref is None or not ref.type.is_reference:
        return f"{left!r} is not a lookup field of {obj.name}"
    target = model.object(ref.reference_to or "")
    if target is None or target.is_setting:
        return f"{obj.name}.{ref.name} does not point at a data object"
    key = target.field(right)
    if key is None:
        hint = did_you_mean(right, [f.name for f in target.fields if f.unique or f.external_id])
        return f"{target.name} has no field {right!r}" + (f"; {hint}" if hint else "")
    if not (key.unique or key.external_id) or not key.is_stored:
        return f"{target.name}.{key.name} is not an external id or unique field, so it cannot identify a record"
    return LoadColumn(header, LOOKUP_COLUMN, ref, target, key)
