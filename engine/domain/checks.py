"""validate-config's checks of rule settings (domain-spec §6.1).

Tax rules, G/L account rules, center rules and collective accounts are
decided by :func:`engine.domain.rules.decide`. These checks make sure every
criterion compares with a real context field and uses values that field can
hold, and warn where two rules can match the same context with equal
precedence, so that the winner would be chosen by name alone.
"""

from __future__ import annotations

from typing import Iterator

from engine.config import contract
from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make
from engine.config.model import FieldDef, FieldType, ObjectDef, ObjectKind

from .naming import declared_fields
from .rules import criterion_target, split_criterion


def check_criteria(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Rule criterion fields match existing context fields, and picklist
    criteria only use values the context picklist has."""
    for setting in ctx.model.objects.values():
        if setting.kind is ObjectKind.OBJECT:
            continue
        rule_setting = setting.name in contract.RULE_CONTEXTS
        for fdef in declared_fields(setting):
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


def _criteria_fields(ctx: CheckContext, setting: ObjectDef) -> list[FieldDef]:
    return [
        f
        for f in declared_fields(setting)
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
        # (engine.domain.rules.decide); only equally long lists tie.
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


CHECKS: tuple[Check, ...] = (
    check_criteria,
    check_rule_overlaps,
)
