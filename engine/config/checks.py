"""The checks of the metadata itself: API names and the namespace rule, the
product contract, references between setting records.

Each domain owns the checks of the settings it interprets, beside its code
(``engine/billing/checks.py`` ...); the protocol they share is
:mod:`.checking`. The stable codes are listed in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import re
from typing import Iterator

from . import contract
from .checking import Check, CheckContext
from .diagnostics import Diagnostic, did_you_mean, make
from .model import FieldDef, ObjectDef, ObjectKind
from .resolve import IMPLICIT_FIELDS

_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__c)?$")


def _declared_fields(obj: ObjectDef) -> Iterator[FieldDef]:
    return (f for f in obj.fields if f.name not in IMPLICIT_FIELDS)


# --- names ------------------------------------------------------------------


def check_names(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Namespace rule: product names are plain, customer additions end in __c."""
    for obj in ctx.model.objects.values():
        product_fields = contract.product_fields(obj.name)
        if not _API_NAME.match(obj.name):
            yield make(
                "E031",
                f"'{obj.name}' is not a valid API name: use letters and digits separated by single underscores, "
                "optionally ending in __c",
                ctx.object_location(obj),
            )
        elif product_fields is None and not obj.is_custom:
            yield make(
                "E030",
                f"'{obj.name}' is not a product object, so its name must end in __c",
                ctx.object_location(obj),
                f"rename it to {obj.name}__c; its fields must end in __c too",
            )
            continue  # one finding for the object instead of one per field
        for fdef in _declared_fields(obj):
            where = ctx.field_location(obj, fdef)
            if not _API_NAME.match(fdef.name):
                yield make(
                    "E031",
                    f"'{fdef.name}' on {obj.name} is not a valid API name: use letters and digits separated by "
                    "single underscores, optionally ending in __c",
                    where,
                )
                continue
            if fdef.is_custom:
                continue
            if fdef.name.lower().startswith("on_"):
                yield make(
                    "E030",
                    f"ON field '{fdef.name}' on {obj.name} is a customer field and must end in __c",
                    where,
                    f"rename it to {fdef.name}__c",
                )
            elif obj.is_custom or product_fields is None:
                yield make(
                    "E030",
                    f"field '{fdef.name}' on the custom object {obj.name} must end in __c",
                    where,
                    f"rename it to {fdef.name}__c",
                )
            elif fdef.name.lower() not in product_fields:
                yield make(
                    "E030",
                    f"'{fdef.name}' is not a product field of {obj.name}; fields you add must end in __c",
                    where,
                    did_you_mean(fdef.name, [product_fields[k].name for k in product_fields]) or f"rename it to {fdef.name}__c",
                )


def check_product_contract(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The product objects and fields the engine's code relies on exist with
    the expected types, and reserved picklist values are still there."""
    anchor = ctx.manifest_location()
    for object_name, fields in contract.PRODUCT.items():
        obj = ctx.model.object(object_name)
        if obj is None:
            if ctx.resolution.is_broken(object_name):
                continue
            yield make(
                "E080",
                f"the product object '{object_name}' is missing",
                anchor,
                f"restore metadata/{'objects' if contract.is_object(object_name) else 'settings'}/{object_name}.yaml",
            )
            continue
        expected_kind = contract.kind_of(object_name)
        if obj.kind is not expected_kind:
            yield make(
                "E080",
                f"'{object_name}' must be a {expected_kind.value if expected_kind is not ObjectKind.OBJECT else 'data object'}",
                ctx.object_location(obj),
            )
            continue
        for spec in fields.values():
            fdef = obj.field(spec.name)
            if fdef is None:
                if not ctx.resolution.is_broken(object_name, spec.name):
                    yield make(
                        "E080",
                        f"the product field {object_name}.{spec.name} ({spec.describe()}) is missing",
                        ctx.object_location(obj),
                    )
                continue
            problem = spec.mismatch(fdef)
            if problem:
                yield make("E080", f"product field {object_name}.{spec.name}: {problem}", ctx.field_location(obj, fdef))
    for (object_name, field_name), reserved in contract.RESERVED_PICKLIST_VALUES.items():
        obj = ctx.model.object(object_name)
        fdef = obj.field(field_name) if obj else None
        if fdef is None:
            continue
        for value in reserved:
            if value not in fdef.values:
                yield make(
                    "E081",
                    f"the picklist {object_name}.{field_name} must keep the value '{value}': "
                    "the engine uses it for automatic write-offs",
                    ctx.field_location(obj, fdef),
                    "you may add values and edit others, but not remove or rename this one",
                )


# --- references between setting records ---------------------------------------------


def check_setting_references(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Setting fields that name records of other settings point to existing records."""
    for setting_name, field_name, target_setting in contract.SETTING_REFERENCES:
        names = {r.name.lower() for r in ctx.model.setting_records(target_setting)}
        for record in ctx.model.setting_records(setting_name):
            value = record.get(field_name)
            if value and str(value).lower() not in names:
                yield make(
                    "E075",
                    f"{setting_name} '{record.name}': {field_name} names the unknown {target_setting} '{value}'",
                    record.where(field_name),
                    did_you_mean(str(value), [r.name for r in ctx.model.setting_records(target_setting)]),
                )


#: The checks of the metadata itself (the domains add theirs: engine.project).
GENERIC_CHECKS: tuple[Check, ...] = (
    check_names,
    check_product_contract,
    check_setting_references,
)
