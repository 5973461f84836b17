"""Semantic checks over a resolved org: one small named function per rule.

Each check takes a :class:`CheckContext` and yields diagnostics. They run
after resolution, all of them, every time; ``CHECKS`` is the registry, in the
order their findings are most useful to read. The stable codes they use are
listed in ``docs/diagnostics.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import contract
from .condition import parse_condition
from .diagnostics import Diagnostic, Location, did_you_mean, make
from .model import FieldDef, FieldType, ObjectDef, ObjectKind, OrgModel, SettingRecord
from .resolve import IMPLICIT_FIELDS, Resolution
from .yamlsrc import YamlDocument


@dataclass(frozen=True)
class CheckContext:
    model: OrgModel
    resolution: Resolution
    manifest: YamlDocument | None

    def field_location(self, obj: ObjectDef, fdef: FieldDef) -> Location:
        return fdef.source or obj.source or Location("?")

    def object_location(self, obj: ObjectDef) -> Location:
        return obj.source or Location("?")


Check = Callable[[CheckContext], Iterable[Diagnostic]]

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
    anchor = _manifest_location(ctx)
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


def _manifest_location(ctx: CheckContext) -> Location:
    if ctx.manifest is not None:
        return ctx.manifest.location(())
    return Location("metadata/objects")


# --- filters and controlling fields ------------------------------------------------


@dataclass(frozen=True)
class _Control:
    base: str
    kinds: tuple[str, ...]  # accepted value kinds: text, number, date, checkbox, lookup:<Object>
    writable: bool = False


CONTROLLING_FIELDS: dict[str, _Control] = {
    c.base: c
    for c in (
        _Control("ON_Account", ("text", "lookup:Account")),
        _Control("ON_Template", ("text",)),
        _Control("ON_ServiceDate", ("date",)),
        _Control("ON_Invoice", ("lookup:Invoice",), writable=True),
        _Control("ON_LastInvoiceRun", ("lookup:InvoiceRun",), writable=True),
        _Control("ON_InvoiceBuildError", ("text",), writable=True),
        _Control("ON_IsItem", ("checkbox",)),
        _Control("ON_Type", ("text",)),
        _Control("ON_SubInvoiceAssignmentKey", ("text",)),
        _Control("ON_InvoiceCriterion", ("text",)),
        _Control("ON_Title", ("text",)),
        _Control("ON_Quantity", ("number",)),
        _Control("ON_UnitPrice", ("number",)),
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


def value_kind(fdef: FieldDef) -> str:
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


def _kind_ok(kind: str, accepted: tuple[str, ...]) -> bool:
    if kind in accepted:
        return True
    return any(a.startswith("lookup:") and kind.lower() == a.lower() for a in accepted)


def check_filters(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Filter targets, child relations and the (suffixed) controlling fields
    the invoice run will read from them."""
    for record in ctx.model.setting_records("Filter"):
        target_name = record.get("Target")
        if not target_name:
            continue
        target = ctx.model.object(str(target_name))
        if target is None or target.kind is not ObjectKind.OBJECT:
            if ctx.resolution.is_broken(str(target_name)):
                continue
            yield make(
                "E040",
                f"filter '{record.name}' targets the unknown object '{target_name}'",
                record.where("Target"),
                did_you_mean(str(target_name), [o.name for o in ctx.model.data_objects]),
            )
            continue
        suffix = str(record.get("TransactionalSuffix") or "")
        if suffix and not re.fullmatch(r"[A-Za-z0-9]{1,5}", suffix):
            yield make(
                "E013",
                f"filter '{record.name}': transactional suffix '{suffix}' must be 1 to 5 letters or digits",
                record.where("TransactionalSuffix"),
            )
            continue
        child_relation = record.get("ChildRelation")
        use_case = record.get("UseCase")
        if use_case not in (None, "Generic"):
            continue  # only the generic invoice run reads controlling fields
        levels: list[tuple[ObjectDef, tuple[str, ...], tuple[str, ...], str]] = []
        if child_relation:
            rel = target.child_relationship(str(child_relation))
            if rel is None:
                yield make(
                    "E042",
                    f"filter '{record.name}': {target.name} has no child relationship '{child_relation}'",
                    record.where("ChildRelation"),
                    did_you_mean(str(child_relation), list(target.child_relationships))
                    or (
                        "child relationships of " + target.name + ": " + ", ".join(target.child_relationships)
                        if target.child_relationships
                        else f"{target.name} has no child relationships"
                    ),
                )
                continue
            child = ctx.model.object(rel.child_object)
            levels.append((target, HEADER_REQUIRED, HEADER_OPTIONAL, "header"))
            if child is not None:
                levels.append((child, LINE_REQUIRED, LINE_OPTIONAL, "line"))
        else:
            levels.append(
                (
                    target,
                    HEADER_REQUIRED + SINGLE_REQUIRED + LINE_REQUIRED,
                    HEADER_OPTIONAL + LINE_OPTIONAL,
                    "single-object",
                )
            )
        for obj, required, optional, level in levels:
            yield from _check_controls(ctx, record, obj, suffix, required, optional, level)


def _suffixes_present(obj: ObjectDef, base: str, suffix: str) -> list[str]:
    """Other suffixes for which ``obj`` has the controlling field ``base``."""
    prefix = base.lower()
    found = []
    for fdef in obj.fields:
        key = fdef.name.lower()
        if key.startswith(prefix) and key.endswith("__c"):
            other = fdef.name[len(base):-3]
            if other != suffix and re.fullmatch(r"[A-Za-z0-9]{0,5}", other):
                found.append(other or "(none)")
    return sorted(found)


def _check_controls(
    ctx: CheckContext,
    record: SettingRecord,
    obj: ObjectDef,
    suffix: str,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    level: str,
) -> Iterator[Diagnostic]:
    where = record.where("Target")
    names = [f.name for f in obj.fields]
    missing: list[str] = []
    present: list[tuple[str, str, FieldDef]] = []
    for base in dict.fromkeys(required + optional):
        name = controlling_name(base, suffix)
        fdef = obj.field(name)
        if fdef is None:
            if base in required and not ctx.resolution.is_broken(obj.name, name):
                missing.append(base)
        else:
            present.append((base, name, fdef))
    if len(missing) > 2:
        # Many missing fields usually mean a wrong or missing suffix: say it once.
        wanted = ", ".join(controlling_name(b, suffix) for b in missing)
        other = _suffixes_present(obj, missing[0], suffix)
        yield make(
            "E060",
            f"filter '{record.name}' ({level} level) needs the controlling fields {wanted} on {obj.name}",
            where,
            (f"{obj.name} has them with the suffix {' or '.join(repr(s) for s in other)}: "
             f"is TransactionalSuffix '{suffix}' right?") if other else
            f"add them to metadata/objects/{obj.name}.yaml",
        )
    else:
        for base in missing:
            name = controlling_name(base, suffix)
            hint = None
            if suffix and obj.field(controlling_name(base, "")):
                hint = f"{controlling_name(base, '')} exists, but this filter reads the suffix '{suffix}': add {name}"
            hint = hint or did_you_mean(name, names)
            yield make(
                "E060",
                f"filter '{record.name}' ({level} level) needs the controlling field {obj.name}.{name}",
                where,
                hint or f"add {name} to metadata/objects/{obj.name}.yaml",
            )
    for base, name, fdef in present:
        control = CONTROLLING_FIELDS[base]
        if control.writable and fdef.type is FieldType.FORMULA:
            yield make(
                "E062",
                f"{obj.name}.{name} is written back by the invoice run and cannot be a formula",
                ctx.field_location(obj, fdef),
            )
            continue
        kind = value_kind(fdef)
        if not _kind_ok(kind, control.kinds):
            wanted = " or ".join(k.replace("lookup:", "a lookup to ") for k in control.kinds)
            yield make(
                "E061",
                f"controlling field {obj.name}.{name} holds {kind.replace('lookup:', 'a lookup to ')}; "
                f"the invoice run needs {wanted}",
                ctx.field_location(obj, fdef),
            )


def check_filter_conditions(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Filter conditions parse and fit their target's fields (E056-E058)."""
    texts: dict[str, str | None] = {}
    for record in ctx.model.setting_records("Filter"):
        text = record.get("Condition")
        target_name = record.get("Target")
        if not text or not target_name:
            continue
        target = ctx.model.object(str(target_name))
        if target is None or target.kind is not ObjectKind.OBJECT:
            continue  # check_filters reports the target
        _, problems = parse_condition(str(text), target, ctx.model.object)
        base = record.where("Condition") or Location("?")
        for problem in problems:
            yield make(
                problem.code,
                f"filter '{record.name}': {problem.message}",
                _condition_location(ctx, base, str(text), problem.offset, texts),
                problem.hint,
            )


def _condition_location(
    ctx: CheckContext, base: Location, value: str, offset: int | None, texts: dict[str, str | None]
) -> Location:
    """The file position of ``offset`` inside a Condition value."""
    if offset is None or base.line is None:
        return base
    if base.file not in texts:
        try:
            texts[base.file] = (Path(ctx.model.root) / base.file).read_text(encoding="utf-8")
        except (OSError, UnicodeError):
            texts[base.file] = None
    source = texts[base.file]
    if source is None:
        return base
    from .loader import _locate_in_scalar  # late: the loader imports the checks

    return _locate_in_scalar(source, base, value, offset)


# --- ON field copies and same-name copies ---------------------------------------


def _compatible(source: FieldDef, target: FieldDef) -> str | None:
    """None when values of ``source`` can be written to ``target``, else why not."""
    if target.type in (FieldType.FORMULA, FieldType.AUTONUMBER, FieldType.ID) or target.system:
        return f"{target.object_name}.{target.name} is {'a formula' if target.type is FieldType.FORMULA else 'maintained by the engine'}"
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


def check_on_copies(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Data ON fields of invoice-run sources copy to type-compatible fields."""
    invoice = ctx.model.object("Invoice")
    line = ctx.model.object("InvoiceLineItem")
    if invoice is None or line is None:
        return
    plans: dict[tuple[str, str], tuple[ObjectDef, tuple[ObjectDef, ...]]] = {}
    account = ctx.model.object("Account")
    if account is not None:
        plans[(account.key, "")] = (account, (invoice,))
    for record in ctx.model.setting_records("Filter"):
        target = ctx.model.object(str(record.get("Target") or ""))
        if target is None or target.kind is not ObjectKind.OBJECT:
            continue
        suffix = str(record.get("TransactionalSuffix") or "")
        relation = record.get("ChildRelation")
        if relation:
            plans[(target.key, suffix)] = (target, (invoice,))
            rel = target.child_relationship(str(relation))
            child = ctx.model.object(rel.child_object) if rel else None
            if child is not None:
                plans[(child.key, suffix)] = (child, (line,))
        else:
            plans[(target.key, suffix)] = (target, (invoice, line))
    controls = {b.lower() for b in CONTROLLING_FIELDS}
    for (_, suffix), (source, targets) in sorted(plans.items()):
        for fdef in _declared_fields(source):
            if not fdef.name.lower().startswith("on_") or not fdef.is_custom:
                continue
            base = fdef.name[:-3]
            if suffix:
                if not base.lower().endswith(suffix.lower()):
                    continue
                base = base[: -len(suffix)]
            if base.lower() in controls:
                continue
            for target in targets:
                dest = on_copy_target(fdef.name, suffix, target)
                if dest is None:
                    continue
                why = _compatible(fdef, dest)
                if why:
                    yield make(
                        "E090",
                        f"{source.name}.{fdef.name} would be copied to {target.name}.{dest.name}, but {why}",
                        ctx.field_location(source, fdef),
                        "change one of the two types, or rename the ON field",
                    )


def check_booking_chain(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Same-name custom fields along Invoice/InvoiceLineItem -> BookingDetail ->
    AccountingDocument/AccountingDocumentItem must share one data type."""
    for source_name, target_name in contract.BOOKING_COPY_CHAIN:
        source = ctx.model.object(source_name)
        target = ctx.model.object(target_name)
        if source is None or target is None:
            continue
        for fdef in _declared_fields(source):
            if not fdef.is_custom or fdef.name.lower().startswith("on_"):
                continue
            dest = target.field(fdef.name)
            if dest is None:
                continue
            if dest.value_type != fdef.value_type or (
                dest.value_type.is_reference and dest.reference_to != fdef.reference_to
            ):
                yield make(
                    "E091",
                    f"{source.name}.{fdef.name} ({fdef.value_type.value}) and {target.name}.{dest.name} "
                    f"({dest.value_type.value}) share a name but not a type, so the value cannot be carried over",
                    ctx.field_location(target, dest),
                    f"declare both as {fdef.value_type.value}",
                )


# --- settings ---------------------------------------------------------------------


def check_templates(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every Template record names a file inside templates/ (the path rule of
    templating.template_path_problem, which the renderer applies too)."""
    from .templating import template_path_problem

    for record in ctx.model.setting_records("Template"):
        name = record.get("File")
        if not name:
            continue
        text = str(name)
        if template_path_problem(text):
            yield make(
                "E110",
                f"template '{record.name}': file name '{text}' must be a relative path inside templates/",
                record.where("File"),
            )
            continue
        if text.lower() not in ctx.model.templates:
            yield make(
                "E110",
                f"template '{record.name}': templates/{text} does not exist",
                record.where("File"),
                did_you_mean(text, [t.name for t in ctx.model.templates.values()]),
            )


_TEMPLATE_ERROR_CODES = {"syntax": "E120", "undefined": "E121", "runtime": "E121", "refused": "E122", "load": "E123"}
_TEMPLATE_ERROR_TEXT = {
    "syntax": "template syntax error",
    "undefined": "template error on the sample invoice",
    "runtime": "template error on the sample invoice",
    "refused": "template refused by the sandbox",
    "load": "template cannot be loaded",
}


def check_template_documents(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Template records parse (balance columns and types, labels, locale,
    placeholders), exactly one is the default, and every template file renders
    the built-in sample invoices in the sandbox; template errors point at the
    template's file:line (engine/config/templating.py)."""
    from .templating import check_template_record, template_path_problem

    records = ctx.model.setting_records("Template")
    defaults = [r for r in records if r.get("Default")]
    if records and len(defaults) != 1:
        where = (defaults[1] if len(defaults) > 1 else records[0])
        yield make(
            "E129",
            "no Template record is marked Default" if not defaults else
            f"{len(defaults)} Template records are marked Default: "
            + ", ".join(f"'{r.name}'" for r in defaults),
            where.where("Default") or where.source or Location("custom_settings"),
            "invoices without a template use the default one: mark exactly one record Default",
        )
    root = Path(ctx.model.root)
    for record in records:
        name = record.get("File")
        if not name or template_path_problem(str(name)) or str(name).lower() not in ctx.model.templates:
            continue  # check_templates reports it (E110)
        settings, errors = check_template_record(root, ctx.model, record)
        for problem in settings.problems:
            yield make(problem.code, problem.message, record.where(problem.field) or Location("custom_settings"),
                       problem.hint)
        for error in errors:
            yield make(
                _TEMPLATE_ERROR_CODES[error.kind],
                f"{_TEMPLATE_ERROR_TEXT[error.kind]}: {error.message}",
                Location(error.file or f"templates/{name}", error.line),
                f"found rendering the sample invoice with Template '{record.name}'",
            )


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


def criterion_target(model: OrgModel, setting: ObjectDef, fdef: FieldDef) -> FieldDef | None:
    """The context field a rule criterion is compared with: the declared
    ``match``, else a field of the same name on the rule's context objects."""
    if fdef.match:
        object_name, _, field_name = fdef.match.partition(".")
        obj = model.object(object_name)
        return obj.field(field_name) if obj else None
    for object_name in contract.RULE_CONTEXTS.get(setting.name, ()):
        obj = model.object(object_name)
        found = obj.field(fdef.name) if obj else None
        if found is not None:
            return found
    return None


def check_criteria(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Rule criterion fields match existing context fields, and picklist
    criteria only use values the context picklist has."""
    for setting in ctx.model.objects.values():
        if setting.kind is ObjectKind.OBJECT:
            continue
        rule_setting = setting.name in contract.RULE_CONTEXTS
        for fdef in _declared_fields(setting):
            if fdef.match:
                object_name, _, field_name = fdef.match.partition(".")
                obj = ctx.model.object(object_name)
                if obj is None:
                    yield make(
                        "E040",
                        f"{setting.name}.{fdef.name} matches the unknown object '{object_name}'",
                        ctx.field_location(setting, fdef),
                        did_you_mean(object_name, [o.name for o in ctx.model.data_objects]),
                    )
                    continue
                if obj.field(field_name) is None:
                    if not ctx.resolution.is_broken(obj.name, field_name):
                        yield make(
                            "E041",
                            f"{setting.name}.{fdef.name} matches the unknown field {obj.name}.{field_name}",
                            ctx.field_location(setting, fdef),
                            did_you_mean(field_name, [f.name for f in obj.fields]),
                        )
                    continue
            elif rule_setting and fdef.is_custom:
                if criterion_target(ctx.model, setting, fdef) is None:
                    contexts = " or ".join(contract.RULE_CONTEXTS[setting.name])
                    yield make(
                        "E041",
                        f"criterion {setting.name}.{fdef.name} matches no field of the same name on {contexts}",
                        ctx.field_location(setting, fdef),
                        f"add {fdef.name} to {contexts.split(' or ')[0]}, or declare 'match: Object.Field'",
                    )
                continue
            else:
                continue
            target = criterion_target(ctx.model, setting, fdef)
            if target is None or target.type not in (FieldType.PICKLIST, FieldType.MULTIPICKLIST):
                continue
            for record in ctx.model.setting_records(setting.name):
                value = record.get(fdef.name)
                if not value:
                    continue
                for item in split_criterion(str(value)):
                    if target.values and item not in target.values:
                        yield make(
                            "E071",
                            f"{setting.name} '{record.name}': {fdef.name} value '{item}' is not a value of "
                            f"{target.object_name}.{target.name}",
                            record.where(fdef.name),
                            did_you_mean(item, target.values),
                        )


def split_criterion(value: str) -> tuple[str, ...]:
    """Rule criteria accept comma-separated lists (OR within a field)."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _criteria_fields(ctx: CheckContext, setting: ObjectDef) -> list[FieldDef]:
    return [
        f
        for f in _declared_fields(setting)
        if f.match or (f.is_custom and criterion_target(ctx.model, setting, f) is not None)
    ]


def _overlaps(ctx: CheckContext, setting_name: str, code: str, same: tuple[str, ...]) -> Iterator[Diagnostic]:
    setting = ctx.model.object(setting_name)
    if setting is None:
        return
    criteria = [f for f in _criteria_fields(ctx, setting) if f.name not in same]
    records = ctx.model.setting_records(setting_name)
    signature = []
    for record in records:
        sets = {}
        for fdef in criteria:
            value = record.get(fdef.name)
            if value:
                sets[fdef.key] = frozenset(split_criterion(str(value)))
        fixed = tuple(str(record.get(n) or "").lower() for n in same)
        signature.append((record, fixed, sets))
    # Only rules with the same fixed values and the same set criteria can tie;
    # within such a group, candidates must share a value of the first criterion.
    # Indexing by that value keeps the check near-linear for large rule tables.
    groups: dict[tuple, list[int]] = {}
    for index, (_, fixed, sets) in enumerate(signature):
        keys = tuple(sorted(sets))
        if keys:
            for value in sets[keys[0]]:
                groups.setdefault((fixed, keys, value), []).append(index)
        else:
            groups.setdefault((fixed, keys, None), []).append(index)
    pairs: set[tuple[int, int]] = set()
    for members in groups.values():
        for i, first in enumerate(members):
            for second in members[i + 1:]:
                pairs.add((first, second))
    for i, j in sorted(pairs):
        (a, _, sets_a), (b, _, sets_b) = signature[i], signature[j]
        if not all(sets_a[k] & sets_b[k] for k in sets_a):
            continue
        shared = ", ".join(f"{k}={sorted(sets_a[k] & sets_b[k])}" for k in sorted(sets_a)) or "no criteria"
        # Shorter criterion lists are more specific and win without a tie
        # (engine.billing.rules.decide); only equally long lists tie.
        if sum(len(v) for v in sets_a.values()) != sum(len(v) for v in sets_b.values()):
            continue
        winner = min(a, b, key=lambda r: r.name.lower())
        how = "by name"
        yield make(
            code,
            f"{setting_name} '{a.name}' and '{b.name}' can both match the same context with equal "
            f"precedence ({shared}); '{winner.name}' would win {how}",
            b.source or Location("?"),
            "add a criterion that tells them apart, or remove one",
        )


def check_rule_overlaps(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Warn about G/L rules and collective accounts that tie."""
    yield from _overlaps(ctx, "GlAccountRule", "W100", ())
    yield from _overlaps(ctx, "CollectiveAccount", "W101", ("Type",))


# --- balances and jobs ------------------------------------------------------------


def check_write_off_settings(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The automatic write-off settings of GlobalSettings can work: absolute
    amounts need the write-off currency, nothing is negative, a percentage
    is at most 100."""
    from decimal import Decimal

    settings = ctx.model.hierarchy_default("GlobalSettings")
    if settings is None:
        return
    currency = str(settings.get("WriteOffCurrency") or "").strip()
    for name in ("WriteOffThresholdPercent", "WriteOffCapAmount", "FinalizationWriteOffAmount"):
        value = settings.get(name)
        if value in (None, ""):
            continue
        where = settings.where(name) or Location("?")
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            continue
        if number < 0:
            yield make("E130", f"GlobalSettings.{name} is negative ({value})", where)
        elif name == "WriteOffThresholdPercent" and number > 100:
            yield make("E130", f"GlobalSettings.{name} is over 100 ({value})", where)
        elif name != "WriteOffThresholdPercent" and not currency:
            yield make("E130", f"GlobalSettings.{name} is an absolute amount and needs WriteOffCurrency", where,
                       "set WriteOffCurrency to the ISO code of the amount, e.g. EUR")


def check_job_schedules(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every JobSchedule has a five-field cron expression that fires, in a
    known time zone."""
    from datetime import datetime
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from croniter import CroniterBadDateError, croniter

    for record in ctx.model.setting_records("JobSchedule"):
        cron = str(record.get("Cron") or "").strip()
        zone_name = str(record.get("TimeZone") or "UTC")
        try:
            ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            yield make("E133", f"job schedule '{record.name}': unknown time zone '{zone_name}'",
                       record.where("TimeZone") or Location("?"),
                       did_you_mean(zone_name, ("UTC", "Europe/Berlin", "Europe/Vienna", "Europe/Zurich")))
        if not cron:
            continue  # a missing required value is E073
        where = record.where("Cron") or Location("?")
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            yield make("E131", f"job schedule '{record.name}': '{cron}' is not a valid five-field cron expression",
                       where, "minute hour day-of-month month day-of-week, e.g. 0 2 * * *")
            continue
        try:
            croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            yield make("E132", f"job schedule '{record.name}': '{cron}' never fires", where,
                       "check day-of-month against the month (e.g. there is no 30 February)")


def check_cash_management(ctx: CheckContext) -> Iterator[Diagnostic]:
    """With the cash-management integration on, the invoice fix tasks need
    the Invoice field CM_IntegrationError__c to report problems (seed 000)."""
    settings = ctx.model.hierarchy_default("GlobalSettings")
    if settings is None or not settings.get("EnableCashManagementIntegration"):
        return
    invoice = ctx.model.object("Invoice")
    if invoice is None or invoice.field("CM_IntegrationError__c") is not None:
        return
    yield make("E150", "GlobalSettings.EnableCashManagementIntegration is on, but Invoice has no field "
               "CM_IntegrationError__c for the errors of the invoice fix tasks",
               settings.where("EnableCashManagementIntegration") or Location("?"),
               "add CM_IntegrationError__c (Text, length 255) to metadata/objects/Invoice.yaml")


CHECKS: tuple[Check, ...] = (
    check_names,
    check_product_contract,
    check_filters,
    check_filter_conditions,
    check_on_copies,
    check_booking_chain,
    check_templates,
    check_template_documents,
    check_setting_references,
    check_criteria,
    check_rule_overlaps,
    check_write_off_settings,
    check_job_schedules,
    check_cash_management,
)


def run_checks(model: OrgModel, resolution: Resolution, manifest: YamlDocument | None) -> list[Diagnostic]:
    """Run every check; a check that crashes is reported, not propagated."""
    ctx = CheckContext(model, resolution, manifest)
    out: list[Diagnostic] = []
    for check in CHECKS:
        try:
            out.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - a bug in one check must not hide the others' findings
            out.append(
                make(
                    "E099",
                    f"internal error in check {check.__name__}: {type(exc).__name__}: {exc}",
                    Location("metabill"),
                    "please report this; the other checks ran",
                )
            )
    return out
