"""validate-config's checks of rule settings (domain-spec §6.1).

Tax rules, G/L account rules, center rules and collective accounts are
decided by :func:`engine.domain.rules.decide`. These checks make sure every
criterion compares with a real context field and uses values that field can
hold, and warn where two rules can match the same context with equal
precedence, so that the winner would be chosen by name alone.
"""

from __future__ import annotations

from datetime import date
from typing import Callable, Iterator

from engine.config import contract
from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make
from engine.config.model import FieldDef, FieldType, ObjectDef, ObjectKind, SettingRecord

from .naming import declared_fields
from .rules import criterion_target, split_criterion
from .settings import GlobalSettings


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


def _overlaps(ctx: CheckContext, setting_name: str, code: str, same: tuple[str, ...],
              together: Callable[[SettingRecord, SettingRecord], bool] | None = None,
              why: str = "") -> Iterator[Diagnostic]:
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
        if together is not None and not together(a, b):
            continue
        shared = ", ".join(f"{k}={sorted(sets_a[k] & sets_b[k])}" for k in sorted(sets_a)) or "no criteria"
        # Shorter criterion lists are more specific and win without a tie
        # (engine.domain.rules.decide); only equally long lists tie.
        if sum(len(v) for v in sets_a.values()) != sum(len(v) for v in sets_b.values()):
            continue
        winner = min(a, b, key=lambda r: r.name.lower())
        outcome = why or f"'{winner.name}' would win by name"
        yield make(
            code,
            f"{setting_name} '{a.name}' and '{b.name}' can both match the same context with equal "
            f"precedence ({shared}); {outcome}",
            b.source or Location("?"),
            "add a criterion that tells them apart, or remove one",
        )


def check_rule_overlaps(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Warn about G/L rules, collective accounts and center rules that tie."""
    yield from _overlaps(ctx, "GlAccountRule", "W100", ())
    yield from _overlaps(ctx, "CollectiveAccount", "W101", ("Type",))
    yield from _overlaps(ctx, "CenterRule", "W102", ())


def _validity(record: SettingRecord) -> tuple[date, date]:
    start, end = record.get("StartDate"), record.get("EndDate")
    return (start if isinstance(start, date) else date.min, end if isinstance(end, date) else date.max)


def _periods_overlap(a: SettingRecord, b: SettingRecord) -> bool:
    (start_a, end_a), (start_b, end_b) = _validity(a), _validity(b)
    return start_a <= end_b and start_b <= end_a


def check_tax_rules(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Tax rules of one Type whose validity periods overlap must not tie:
    the run refuses every line both match (R206), so the tie is an error
    (E160). A rule valid from after its end date matches nothing (E161)."""
    for record in ctx.model.setting_records("TaxRule"):
        start, end = record.get("StartDate"), record.get("EndDate")
        if isinstance(start, date) and isinstance(end, date) and start > end:
            yield make("E161", f"TaxRule '{record.name}': StartDate {start} is after EndDate {end}, so the rule "
                       "never applies", record.where("EndDate") or Location("?"),
                       "swap the dates, or remove EndDate")
    yield from _overlaps(ctx, "TaxRule", "E160", ("Type",), _periods_overlap,
                         "the invoice run refuses every line both match")


def _record_names(ctx: CheckContext, setting: str, field_name: str | None = None) -> dict[str, str]:
    """Lower-case value -> value of ``field_name`` (the record name when None)
    over the records of ``setting``."""
    out = {}
    for record in ctx.model.setting_records(setting):
        value = record.name if field_name is None else record.get(field_name)
        if value not in (None, ""):
            out.setdefault(str(value).strip().lower(), str(value).strip())
    return out


#: Context fields whose values are names of setting records: the field (lower
#: case) -> (what it names, the setting, the field of that setting, None for the name).
_REFERENCED = {
    "businessentity": ("business entity", "BusinessEntity", None),
    "taxcode": ("tax code", "TaxRule", "TaxCode"),
    "appliedtaxrule": ("tax rule", "TaxRule", None),
}


def check_rule_references(ctx: CheckContext) -> Iterator[Diagnostic]:
    """A rule criterion compared with a business entity, a tax code or an
    applied tax rule names one that exists: a rule restricted to a business
    entity no record defines, or to a tax code no tax rule gives, never
    matches, and its lines silently fall to another rule (E162, E163).
    Values compare case-sensitively at run time, so a value differing only
    in case is reported too."""
    for setting_name in contract.RULE_CONTEXTS:
        setting = ctx.model.object(setting_name)
        if setting is None:
            continue
        for fdef in declared_fields(setting):
            if not fdef.match:
                continue
            referenced = _REFERENCED.get(fdef.match.partition(".")[2].lower())
            if referenced is None:
                continue
            what, target_setting, target_field = referenced
            if target_setting == setting_name or not ctx.model.setting_records(target_setting):
                continue  # no such records at all: values come from the data (explicit tax codes)
            known = _record_names(ctx, target_setting, target_field)
            code = "E163" if target_setting == "BusinessEntity" else "E162"
            for record in ctx.model.setting_records(setting_name):
                raw = record.get(fdef.name)
                if raw in (None, ""):
                    continue
                text = str(raw)
                position = 0
                for item in text.split(","):
                    value = item.strip()
                    offset = position + (len(item) - len(item.lstrip()))
                    position += len(item) + 1
                    if not value or value in known.values():
                        continue
                    close = known.get(value.lower())
                    yield make(
                        code,
                        f"{setting_name} '{record.name}': {fdef.name} names the {what} '{value}', which no "
                        f"{target_setting} record {'has' if target_field else 'is called'}"
                        + (" (values compare case-sensitively)" if close else ""),
                        ctx.within(record.where(fdef.name), text, offset),
                        f"did you mean {close}?" if close else
                        (did_you_mean(value, known.values()) or
                         f"known: {', '.join(sorted(known.values())) or 'none'}"),
                    )


def _iso_currencies() -> frozenset[str]:
    from babel.numbers import list_currencies  # imported when validating only: babel is slow to import

    return frozenset(list_currencies())


def check_currencies(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Currency codes of Global Settings are ISO 4217 codes (E169): invoices
    carry the default currency into every export, which refuses others."""
    row = GlobalSettings.of(ctx.model).record
    if row is None:
        return
    codes = None
    for name in ("DefaultCurrency", "WriteOffCurrency"):
        value = row.get(name)
        if value in (None, ""):
            continue
        codes = codes or _iso_currencies()
        if str(value) not in codes:
            close = str(value).strip().upper()
            yield make("E169", f"GlobalSettings.{name} '{value}' is not an ISO 4217 currency code",
                       row.where(name) or Location("?"),
                       f"did you mean {close}?" if close in codes else "use a three-letter code such as EUR")


def check_account_external_id(ctx: CheckContext) -> Iterator[Diagnostic]:
    """GlobalSettings.AccountExternalIdField names a field of Account: loads
    and payment imports find accounts by it (E041 otherwise)."""
    settings = GlobalSettings.of(ctx.model)
    account = ctx.model.object("Account")
    row = settings.record
    if row is None or account is None or row.get("AccountExternalIdField") in (None, ""):
        return
    name = settings.account_external_id_field
    if account.field(name) is None:
        yield make("E041", f"GlobalSettings.AccountExternalIdField names '{name}', which is no field of Account",
                   row.where("AccountExternalIdField") or Location("?"),
                   did_you_mean(name, [f.name for f in account.fields]))


CHECKS: tuple[Check, ...] = (
    check_criteria,
    check_rule_overlaps,
    check_tax_rules,
    check_rule_references,
    check_currencies,
    check_account_external_id,
)
