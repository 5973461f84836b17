"""validate-config's checks of the filter use cases the invoice run interprets.

A filter's UseCase decides what is done with it: ``Generic`` (or empty)
bills source records (:mod:`engine.billing.checks` checks those; JustOn's
"empty = subscription run" is not taken over, so a filter on Subscription
without a use case gets a warning, E236),
``Subscription`` bills the items of Subscription records period by period
(:mod:`engine.billing.subscriptions`), ``Continuous`` / ``Continuous Daily``
bill usage records (:mod:`engine.billing.usage`), and ``SubscriptionBuilder``
builds subscriptions from opportunities (:mod:`engine.billing.subscription_build`);
their controlling fields and copies are checked here. The other values of
the picklist (the builder variants ``New``/``Reorder``/``Upgrade``, whose
cases ``ON_MasterSubscription`` covers, and ``AccountStatement``) are JustOn
use cases this engine does not run: they are refused here, at the file and
line of the value, instead of when a run is started.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Severity, did_you_mean, make
from engine.config.model import FieldDef, FieldType, ObjectDef, ObjectKind
from engine.domain.naming import (
    controlling_name,
    copy_incompatibility,
    kind_accepted,
    on_copy_target,
    value_kind,
)

#: The use case of a subscription run's filter.
SUBSCRIPTION_USE_CASE = "Subscription"
#: The object a subscription filter must return records of.
SUBSCRIPTION_OBJECT = "Subscription"
#: Use cases the run executes (None: the field left empty, a generic filter).
SUPPORTED_USE_CASES = (None, "Generic", SUBSCRIPTION_USE_CASE, "SubscriptionBuilder", "Continuous", "Continuous Daily")


def check_filter_use_cases(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Each filter's use case is one the run executes (E230), a filter on
    Subscription without a use case is said to be generic (E236, a warning),
    and a subscription filter returns Subscription records without the
    settings only generic filters read (E231)."""
    for record in ctx.model.setting_records("Filter"):
        use_case = record.get("UseCase")
        if use_case not in SUPPORTED_USE_CASES:
            yield make(
                "E230",
                f"filter '{record.name}': use case '{use_case}' is not supported by this engine yet "
                "(an invoice run would refuse the filter)",
                record.where("UseCase"),
                "use Generic (source records), Subscription (subscription items), Continuous (usage records) "
                "or SubscriptionBuilder (upgrades and reorders through ON_MasterSubscription)",
            )
            continue
        target = str(record.get("Target") or "")
        if use_case is None and target.lower() == SUBSCRIPTION_OBJECT.lower():
            yield make(
                "E236",
                f"filter '{record.name}' targets {SUBSCRIPTION_OBJECT} without a UseCase: this engine runs it as a "
                "generic filter (an empty use case means Generic here), not as the subscription run an empty use "
                "case means in JustOn",
                record.where("Target"),
                "set UseCase: Subscription to bill the subscriptions' items period by period, or UseCase: Generic "
                "to keep a generic filter over Subscription records (its ON_ controlling fields)",
                severity=Severity.WARNING,
            )
        if use_case != SUBSCRIPTION_USE_CASE:
            continue
        if target.lower() != SUBSCRIPTION_OBJECT.lower():
            yield make(
                "E231",
                f"filter '{record.name}': a Subscription filter must target {SUBSCRIPTION_OBJECT}, not '{target}'",
                record.where("Target"),
                f"set Target: {SUBSCRIPTION_OBJECT} (the condition then selects subscriptions)",
            )
        for name in ("ChildRelation", "TransactionalSuffix", "ParentRelationships"):
            if record.get(name):
                yield make(
                    "E231",
                    f"filter '{record.name}': {name} means nothing for a Subscription filter",
                    record.where(name),
                    f"remove {name}: a subscription run bills the Items of each subscription and "
                    "keeps what it billed itself",
                )


def controlling_fields(source: ObjectDef, suffix: str, bases: Iterable[tuple[str, bool]],
                       missing: Callable[[str], Exception]) -> dict[str, FieldDef]:
    """The controlling fields of ``source`` by base name (``ON_Account``),
    each with the filter's transactional suffix; raises ``missing(name)``
    for the first required one ``source`` lacks (validate-config names them
    all). ``bases``: (base, required). The subscription build and the usage
    run bind their filters with it."""
    found = {}
    for base, required in bases:
        fdef = source.field(controlling_name(base, suffix))
        if fdef is None and required:
            raise missing(controlling_name(base, suffix))
        if fdef is not None:
            found[base] = fdef
    return found


def sparse_selection(ctx: CheckContext, obj: ObjectDef, fdef: FieldDef, run: str) -> Iterator[Diagnostic]:
    """W063 when ``fdef``, the controlling field whose empty value selects
    the records ``run`` still has to do, is a sparse lookup: its partial
    index holds only the records that set it, so that selection reads the
    whole table (correct, but slow on a long history)."""
    if fdef.sparse:
        yield make("W063", f"{obj.name}.{fdef.name} is sparse, but the {run} selects the records it leaves empty: "
                   "its partial index cannot serve that search", ctx.field_location(obj, fdef),
                   f"remove 'sparse: true' from {obj.name}.{fdef.name}")


#: The builder's controlling fields: (base, accepted kinds, written back, required).
BUILDER_CONTROLS = (
    ("ON_Account", ("text", "lookup:Account"), False, True),
    ("ON_Subscription", ("lookup:Subscription",), True, True),
    ("ON_SubscriptionBuildError", ("text",), True, True),
    ("ON_MasterSubscription", ("text", "number", "lookup:Subscription"), False, False),
)


def check_subscription_builders(ctx: CheckContext) -> Iterator[Diagnostic]:
    """A SubscriptionBuilder filter names a child relationship, its target has
    the controlling fields the build reads and writes (E232), and its ON
    fields are copied to subscription and item fields that can hold them (E233)."""
    for record in ctx.model.setting_records("Filter"):
        if record.get("UseCase") != "SubscriptionBuilder":
            continue
        target = ctx.model.object(str(record.get("Target") or ""))
        if target is None or target.kind is not ObjectKind.OBJECT:
            continue  # check_filters reports the target
        suffix = str(record.get("TransactionalSuffix") or "")
        relation = target.child_relationship(str(record.get("ChildRelation") or ""))
        if relation is None:
            yield make("E232", f"filter '{record.name}': a SubscriptionBuilder filter needs the child relationship "
                       f"whose records become items; {target.name} has no '{record.get('ChildRelation') or ''}'",
                       record.where("ChildRelation") or record.where("Target"),
                       "child relationships of " + target.name + ": " + (", ".join(target.child_relationships) or "none"))
            continue
        for base, kinds, written, required in BUILDER_CONTROLS:
            name = controlling_name(base, suffix)
            fdef = target.field(name)
            if fdef is None:
                if required:
                    yield make("E232", f"filter '{record.name}': {target.name} has no {name}, which the "
                               "subscription build " + ("writes" if written else "reads"),
                               ctx.object_location(target),
                               f"add {name} ({' or '.join(kinds)}) to metadata/objects/{target.name}.yaml")
                continue
            kind = value_kind(fdef)
            if not kind_accepted(kind, kinds) or (written and fdef.type is FieldType.FORMULA):
                yield make("E232", f"filter '{record.name}': {target.name}.{name} must be "
                           + (" or ".join(kinds)) + (" and stored (the build writes it)" if written else "")
                           + f", is {fdef.type.value}", ctx.field_location(target, fdef))
            if base == "ON_Subscription":
                yield from sparse_selection(ctx, target, fdef, "subscription build")
        child = ctx.model.object(relation.child_object)
        pairs = [(target, ctx.model.object("Subscription"))]
        if child is not None:
            pairs.append((child, ctx.model.object("SubscriptionItem")))
        controls = {controlling_name(base, suffix).lower() for base, *_ in BUILDER_CONTROLS}
        for source, dest_obj in pairs:
            if dest_obj is None:
                continue
            for fdef in source.fields:
                lowered = fdef.name.lower()
                if not lowered.startswith("on_") or not fdef.is_custom or lowered in controls:
                    continue
                if suffix and not lowered[:-3].endswith(suffix.lower()):
                    continue
                dest = on_copy_target(fdef.name, suffix, dest_obj)
                why = copy_incompatibility(fdef, dest) if dest is not None else None
                if why:
                    yield make("E233", f"filter '{record.name}': {source.name}.{fdef.name} cannot be copied to "
                               f"{dest_obj.name}.{dest.name}: {why}", ctx.field_location(source, fdef))  # type: ignore[union-attr]


#: The usage run's controlling fields: (base, accepted kinds, written back, required).
USAGE_CONTROLS = (
    ("ON_OrderNo", ("text",), False, True),
    ("ON_Quantity", ("number",), False, True),
    ("ON_ServiceDate", ("date",), False, True),
    ("ON_Invoice", ("lookup:Invoice",), True, True),
    ("ON_InvoiceBuildError", ("text",), True, True),
    ("ON_LastInvoiceRun", ("lookup:InvoiceRun",), True, False),
    ("ON_Criterion", ("text",), False, False),
    ("ON_UnitPrice", ("number",), False, False),
)


def check_usage_filters(ctx: CheckContext) -> Iterator[Diagnostic]:
    """A Continuous filter's target has the controlling fields the usage run
    reads and writes, with the filter's suffix and the right types (E234)."""
    for record in ctx.model.setting_records("Filter"):
        if record.get("UseCase") not in ("Continuous", "Continuous Daily"):
            continue
        target = ctx.model.object(str(record.get("Target") or ""))
        if target is None or target.kind is not ObjectKind.OBJECT:
            continue  # check_filters reports the target
        suffix = str(record.get("TransactionalSuffix") or "")
        for base, kinds, written, required in USAGE_CONTROLS:
            name = controlling_name(base, suffix)
            fdef = target.field(name)
            if fdef is None:
                if required:
                    yield make("E234", f"filter '{record.name}': {target.name} has no {name}, which the usage run "
                               + ("writes" if written else "reads"), ctx.object_location(target),
                               f"add {name} ({' or '.join(kinds)}) to metadata/objects/{target.name}.yaml")
                continue
            if not kind_accepted(value_kind(fdef), kinds) or (written and fdef.type is FieldType.FORMULA):
                yield make("E234", f"filter '{record.name}': {target.name}.{name} must be " + " or ".join(kinds)
                           + (" and stored (the run writes it)" if written else "") + f", is {fdef.type.value}",
                           ctx.field_location(target, fdef))
            if base == "ON_Invoice":
                yield from sparse_selection(ctx, target, fdef, "usage run")
        if record.get("ChildRelation"):
            yield make("E234", f"filter '{record.name}': a Continuous filter bills single records; "
                       "ChildRelation means nothing here", record.where("ChildRelation"))


#: Use cases an invoice run (and so a scheduled one) runs.
RUN_USE_CASES = (None, "Generic", SUBSCRIPTION_USE_CASE, "Continuous", "Continuous Daily")


def check_scheduled_runs(ctx: CheckContext) -> Iterator[Diagnostic]:
    """A JobSchedule of job InvoiceRun has Parameters a scheduled run can
    read, naming filters an invoice run runs (E235)."""
    from .scheduled import ParameterError, parse_parameters

    for record in ctx.model.setting_records("JobSchedule"):
        if record.get("Job") != "InvoiceRun":
            continue
        where = record.where("Parameters") or record.where("Job")
        try:
            spec = parse_parameters(record.get("Parameters"))
        except ParameterError as error:
            yield make("E235", f"job schedule '{record.name}': {error}", where,
                       'e.g. Parameters: \'{"Filters": ["Subscriptions"], "Interval": "1m", "Alignment": "previous", '
                       '"InvoiceDate": "end", "Finalize": true}\'')
            continue
        known = {r.name: r for r in ctx.model.setting_records("Filter")}
        for name in spec.filters:
            filter_record = known.get(name)
            if filter_record is None:
                yield make("E235", f"job schedule '{record.name}': unknown filter '{name}'", where,
                           did_you_mean(name, list(known)))
            elif filter_record.get("UseCase") not in RUN_USE_CASES:
                yield make("E235", f"job schedule '{record.name}': filter '{name}' of use case "
                           f"'{filter_record.get('UseCase')}' is not run by an invoice run", where)


CHECKS: tuple[Check, ...] = (check_filter_use_cases, check_subscription_builders, check_usage_filters,
                             check_scheduled_runs)
