"""The naming conventions of source records: controlling fields and ON copies.

An invoice run reads *controlling fields* (``ON_Account``, ``ON_Title`` ...)
from its source records, with the filter's transactional suffix before the
``__c`` (``ON_AccountSub__c``), and copies every other ``ON_`` field to the
invoice or line field of the same name, else of the name without ``ON_``
(domain-spec §3.2). These rules are shared by the run that applies them and
by the checks that tell an administrator, before any run, where they break.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from engine.config.model import FieldDef, FieldType, ObjectDef
from engine.config.resolve import IMPLICIT_FIELDS

#: A transactional suffix: up to five letters or digits.
SUFFIX_PATTERN = re.compile(r"[A-Za-z0-9]{1,5}")


@dataclass(frozen=True)
class ControlSpec:
    """A controlling field: its base name, the value kinds it accepts
    (text, number, date, checkbox, lookup:<Object>), and whether the run
    writes it back to the source record."""

    base: str
    kinds: tuple[str, ...]
    writable: bool = False


CONTROLLING_FIELDS: dict[str, ControlSpec] = {
    c.base: c
    for c in (
        ControlSpec("ON_Account", ("text", "lookup:Account")),
        ControlSpec("ON_Template", ("text",)),
        ControlSpec("ON_ServiceDate", ("date",)),
        ControlSpec("ON_Invoice", ("lookup:Invoice",), writable=True),
        ControlSpec("ON_LastInvoiceRun", ("lookup:InvoiceRun",), writable=True),
        ControlSpec("ON_InvoiceBuildError", ("text",), writable=True),
        ControlSpec("ON_IsItem", ("checkbox",)),
        ControlSpec("ON_Type", ("text",)),
        ControlSpec("ON_SubInvoiceAssignmentKey", ("text",)),
        ControlSpec("ON_InvoiceCriterion", ("text",)),
        ControlSpec("ON_Title", ("text",)),
        ControlSpec("ON_Quantity", ("number",)),
        ControlSpec("ON_UnitPrice", ("number",)),
    )
}
HEADER_REQUIRED = ("ON_Account", "ON_ServiceDate", "ON_Invoice", "ON_LastInvoiceRun", "ON_InvoiceBuildError")
LINE_REQUIRED = ("ON_Title", "ON_UnitPrice")
SINGLE_REQUIRED = ("ON_IsItem",)
HEADER_OPTIONAL = ("ON_Template", "ON_Type", "ON_SubInvoiceAssignmentKey", "ON_InvoiceCriterion")
LINE_OPTIONAL = ("ON_Quantity", "ON_InvoiceCriterion")


def controlling_name(base: str, suffix: str) -> str:
    """``ON_Account`` + ``Sub`` -> ``ON_AccountSub__c`` (the suffix precedes __c)."""
    return f"{base}{suffix}__c"


def declared_fields(obj: ObjectDef) -> Iterator[FieldDef]:
    """The fields written in the object's YAML (not the implicit Id, Name ...)."""
    return (f for f in obj.fields if f.name not in IMPLICIT_FIELDS)


def value_kind(fdef: FieldDef) -> str:
    """The kind of value a field holds, as controlling fields and copies
    compare them: text, number, date, checkbox, multipicklist or lookup:<Object>."""
    vt = fdef.value_type
    if vt.is_reference:
        return f"lookup:{fdef.reference_to}"
    if vt.is_numeric:
        return "number"
    if vt in (FieldType.DATE, FieldType.DATETIME):
        return "date"
    if vt is FieldType.CHECKBOX:
        return "checkbox"
    if vt is FieldType.MULTIPICKLIST:
        return "multipicklist"
    return "text"


def kind_accepted(kind: str, accepted: tuple[str, ...]) -> bool:
    """Whether a value kind is one a controlling field accepts (lookups by
    target name, case-insensitively)."""
    if kind in accepted:
        return True
    return any(a.startswith("lookup:") and kind.lower() == a.lower() for a in accepted)


def copy_incompatibility(source: FieldDef, target: FieldDef) -> str | None:
    """None when values of ``source`` can be written to ``target``, else why not."""
    if target.type in (FieldType.FORMULA, FieldType.AUTONUMBER, FieldType.ID) or target.system:
        what = "a formula" if target.type is FieldType.FORMULA else "maintained by the engine"
        return f"{target.object_name}.{target.name} is {what}"
    s, t = value_kind(source), value_kind(target)
    if t == "text":
        return None
    if s == t:
        return None
    if t.startswith("lookup:") and s == "text":
        return None  # an id or external id written as text is resolved when copied
    return f"{source.object_name}.{source.name} holds {s} but {target.object_name}.{target.name} holds {t}"


def on_copy_target(source_name: str, suffix: str, target: ObjectDef) -> FieldDef | None:
    """The field an ON field is copied to: the same name, else the name
    without the ON_ prefix (both without the filter's suffix)."""
    base = source_name[:-3] if source_name.lower().endswith("__c") else source_name
    if suffix and base.lower().endswith(suffix.lower()):
        base = base[: -len(suffix)]
    same = target.field(base + "__c")
    if same is not None:
        return same
    plain = base[3:]
    return target.field(plain + "__c") or target.field(plain)
