"""validate-config's checks of what the invoice run interprets.

Filters (target, child relationship, transactional suffix), the controlling
fields the run reads on each source level, filter conditions, and the ON
field copies from source records to invoices and lines: everything the run
would otherwise refuse or mis-copy is reported here first, at the file and
line of the setting or field to change. The naming rules come from
:mod:`engine.domain.naming`, the same ones the run applies.
"""

from __future__ import annotations

from typing import Iterator

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make
from engine.config.model import FieldDef, FieldType, ObjectDef, ObjectKind, SettingRecord
from engine.config.yamlsrc import locate_in_scalar
from engine.domain.settings import GlobalSettings
from engine.domain.naming import (
    CONTROLLING_FIELDS,
    HEADER_OPTIONAL,
    HEADER_REQUIRED,
    LINE_OPTIONAL,
    LINE_REQUIRED,
    SINGLE_REQUIRED,
    SUFFIX_PATTERN,
    controlling_name,
    copy_incompatibility,
    declared_fields,
    kind_accepted,
    on_copy_target,
    value_kind,
)

from .condition import parse_condition
from .subscription_checks import CHECKS as USE_CASE_CHECKS
from .subscription_checks import sparse_selection


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
        if suffix and not SUFFIX_PATTERN.fullmatch(suffix):
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
            if other != suffix and (not other or SUFFIX_PATTERN.fullmatch(other)):
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
        if base == "ON_Invoice":
            yield from sparse_selection(ctx, obj, fdef, "invoice run")
        kind = value_kind(fdef)
        if not kind_accepted(kind, control.kinds):
            wanted = " or ".join(k.replace("lookup:", "a lookup to ") for k in control.kinds)
            yield make(
                "E061",
                f"controlling field {obj.name}.{name} holds {kind.replace('lookup:', 'a lookup to ')}; "
                f"the invoice run needs {wanted}",
                ctx.field_location(obj, fdef),
            )


def check_filter_conditions(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Filter conditions parse and fit their target's fields (E056-E058)."""
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
                _condition_location(ctx, base, str(text), problem.offset),
                problem.hint,
            )


def _condition_location(ctx: CheckContext, base: Location, value: str, offset: int | None) -> Location:
    """The file position of ``offset`` inside a Condition value."""
    if offset is None or base.line is None:
        return base
    source = ctx.source_text(base.file)
    if source is None:
        return base
    return locate_in_scalar(source, base, value, offset)


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
        use_case = record.get("UseCase")
        if use_case in ("SubscriptionBuilder", "Continuous", "Continuous Daily"):
            continue  # the build copies to subscriptions (subscription_checks.py); usage records copy nothing
        if use_case == "Subscription":  # subscription -> invoice, its items -> lines
            items = ctx.model.object("SubscriptionItem")
            plans[(target.key, "")] = (target, (invoice,))
            if items is not None:
                plans[(items.key, "")] = (items, (line,))
            continue
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
        for fdef in declared_fields(source):
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
                why = copy_incompatibility(fdef, dest)
                if why:
                    yield make(
                        "E090",
                        f"{source.name}.{fdef.name} would be copied to {target.name}.{dest.name}, but {why}",
                        ctx.field_location(source, fdef),
                        "change one of the two types, or rename the ON field",
                    )


def _can_bill_deposits(fdef: FieldDef) -> bool:
    """Does an ON_Type field say, in the configuration itself, that it can
    give ``Deposit``: a picklist with that value, a formula naming it, or a
    default of it? (A plain text field decides by its data; finalization
    refuses such a deposit then, with the same reason.)"""
    if fdef.formula is not None and "deposit" in fdef.formula.expression.lower():
        return True
    if "Deposit" in (fdef.values or ()):
        return True
    return str(fdef.default or "").strip() == "Deposit"


def check_deposit_bookkeeping(ctx: CheckContext) -> Iterator[Diagnostic]:
    """With bookkeeping on, deposit invoices are booked only with
    CreateBookkeepingDataForDeposit (as down payments, never as revenue;
    domain-spec §4.10, §5.1): without it a deposit invoice could not be
    booked so that its payments reconcile, and finalization refuses it. A
    filter whose ON_Type can give ``Deposit`` is reported at that field."""
    settings = GlobalSettings.of(ctx.model)
    if not settings.create_bookkeeping_data or settings.create_bookkeeping_data_for_deposit:
        return
    seen: set[tuple[str, str]] = set()
    for record in ctx.model.setting_records("Filter"):
        target = ctx.model.object(str(record.get("Target") or ""))
        if target is None or record.get("UseCase") not in (None, "Generic"):
            continue
        fdef = target.field(controlling_name("ON_Type", str(record.get("TransactionalSuffix") or "")))
        if fdef is None or (target.name, fdef.name) in seen or not _can_bill_deposits(fdef):
            continue
        seen.add((target.name, fdef.name))
        yield make(
            "E094",
            f"filter '{record.name}': {target.name}.{fdef.name} can give Deposit invoices, but with "
            "CreateBookkeepingData on they are booked only with CreateBookkeepingDataForDeposit "
            "(finalization would refuse them)",
            ctx.field_location(target, fdef),
            "set GlobalSettings.CreateBookkeepingDataForDeposit to true (deposits are then booked as down "
            "payments, like progress invoices), or let the field give another invoice type",
        )


#: The invoice run's checks, in the order their findings read best.
CHECKS: tuple[Check, ...] = (
    *USE_CASE_CHECKS,
    check_filters,
    check_filter_conditions,
    check_on_copies,
    check_deposit_bookkeeping,
)
