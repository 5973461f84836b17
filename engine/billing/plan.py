"""What an invoice-run filter reads and writes, resolved once per run.

A :class:`FilterPlan` binds a Filter record to the metadata: the source
object(s), the controlling fields read with the filter's transactional suffix,
the ON fields copied to the invoice and its lines, and the record paths the
run must read to evaluate all of them (formulas included). validate-config
has already checked the same things (``engine.billing.checks.check_filters``);
the plan is the run's own, typed view of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable, Mapping

from engine.config.model import FieldDef, FieldType, ObjectDef, OrgModel, SettingRecord
from engine.config.resolve import IMPLICIT_FIELDS
from engine.config.values import coerce
from engine.domain.errors import EngineError, Where
from engine.domain.naming import CONTROLLING_FIELDS, controlling_name, on_copy_target
from engine.domain.values import field_paths
from engine.storage.context import Context

from .condition import Condition, parse_condition


class PlanError(EngineError, ValueError):
    """A filter cannot run with this metadata (an unknown target, missing
    controlling fields, an invalid condition); validate-config says why too."""

    code = "R202"

    def __init__(self, message: str, *, filter_name: str | None = None):
        super().__init__(message, where=Where(object="Filter", record=filter_name) if filter_name else None,
                         hint="run 'metabill validate-config' to see the problem where it is configured")


@dataclass(frozen=True)
class Level:
    """One source object of a filter and the controlling fields found on it."""

    obj: ObjectDef
    controls: Mapping[str, FieldDef]          # base name (ON_Title) -> suffixed field
    copies: tuple[tuple[FieldDef, FieldDef, str], ...]  # (source, target, "Invoice"/"InvoiceLineItem")

    def field(self, base: str) -> FieldDef | None:
        return self.controls.get(base)

    def paths(self) -> set[tuple[str, ...]]:
        """Every record path needed to evaluate the controls and copies."""
        wanted: set[tuple[str, ...]] = {("id",)}
        fields = list(self.controls.values()) + [source for source, _, _ in self.copies]
        for fdef in fields:
            wanted |= field_paths(fdef)
        return wanted


@dataclass(frozen=True)
class FilterPlan:
    record: SettingRecord
    suffix: str
    header: Level
    line: Level
    child_lookup: FieldDef | None      # the child's lookup to the header (parent-child mode)
    condition: Condition | None
    header_writeback: Mapping[str, FieldDef] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def single(self) -> bool:
        return self.child_lookup is None

    @property
    def key(self) -> tuple[str, str]:
        """Identifies the source field set: (header object, suffix)."""
        return (self.header.obj.name, self.suffix)


def _controls(obj: ObjectDef, suffix: str, bases: tuple[str, ...]) -> dict[str, FieldDef]:
    found = {}
    for base in bases:
        fdef = obj.field(controlling_name(base, suffix))
        if fdef is not None:
            found[base] = fdef
    return found


def _copies(ctx: Context, source: ObjectDef, suffix: str, targets: tuple[str, ...]) -> tuple:
    """ON data fields of ``source`` (read with ``suffix``) and where they go."""
    model = ctx.model
    controls = {b.lower() for b in CONTROLLING_FIELDS}
    pairs = []
    for fdef in source.fields:
        if fdef.name in IMPLICIT_FIELDS or not fdef.is_custom or not fdef.name.lower().startswith("on_"):
            continue
        base = fdef.name[:-3]
        if suffix and base.lower().endswith(suffix.lower()) and len(base) > len(suffix) + 3:
            base = base[: -len(suffix)]  # a field of this run's suffix
        elif _has_suffix_twin(source, fdef):
            continue  # a field of another filter's suffix
        elif suffix and source.field(f"{base}{suffix}__c") is not None:
            continue  # this run reads the suffixed twin instead (domain-spec 2.2)
        if base.lower() in controls:
            continue
        for target_name in targets:
            target_obj = model.object(target_name)
            target = on_copy_target(fdef.name, suffix, target_obj) if target_obj else None
            if target is None or target.type in (FieldType.FORMULA, FieldType.AUTONUMBER) or target.system:
                continue
            pairs.append((fdef, target, target_obj.name))
    return tuple(pairs)


def _has_suffix_twin(source: ObjectDef, fdef: FieldDef) -> bool:
    """Unsuffixed runs skip fields that are really another filter's suffixed
    controlling fields (``ON_TitleSub__c`` is not a data field ``TitleSub``):
    a field counts as suffixed when the object also has the write-back field
    ``ON_Invoice<suffix>__c`` for the same suffix."""
    stem = fdef.name[:-3]
    for base in CONTROLLING_FIELDS:
        if stem.lower().startswith(base.lower()) and len(stem) > len(base):
            suffix = stem[len(base):]
            if len(suffix) <= 5 and source.field(controlling_name("ON_Invoice", suffix)) is not None:
                return True
    return False


HEADER_BASES = (
    "ON_Account", "ON_Template", "ON_ServiceDate", "ON_Invoice", "ON_LastInvoiceRun",
    "ON_InvoiceBuildError", "ON_Type", "ON_SubInvoiceAssignmentKey", "ON_InvoiceCriterion", "ON_IsItem",
)
LINE_BASES = ("ON_Title", "ON_Quantity", "ON_UnitPrice", "ON_InvoiceCriterion")


def filter_condition(record: SettingRecord, target: ObjectDef, model: OrgModel,
                     fail: Callable[[str], Exception]) -> Condition | None:
    """The filter record's ``Condition`` parsed against ``target`` (None when
    it has none); ``fail(message)`` is raised when it does not parse. Every
    kind of run binds its filter's condition here, each with its own error."""
    text = record.get("Condition")
    if not (text and str(text).strip()):
        return None
    condition, problems = parse_condition(str(text), target, model.object)
    if problems or condition is None:
        raise fail(f"filter '{record.name}': condition: {problems[0].message if problems else 'invalid'}")
    return condition


def plan_filter(ctx: Context, record: SettingRecord) -> FilterPlan:
    """Resolve a Filter record; raise PlanError when it cannot run."""
    model = ctx.model
    target = model.object(str(record.get("Target") or ""))
    if target is None or target.is_setting:
        raise PlanError(f"filter '{record.name}': unknown target object '{record.get('Target')}'",
                        filter_name=record.name)
    use_case = record.get("UseCase")
    if use_case not in (None, "Generic"):
        raise PlanError(f"filter '{record.name}' has use case '{use_case}'; the invoice run handles Generic filters",
                        filter_name=record.name)
    suffix = str(record.get("TransactionalSuffix") or "")
    relation_name = record.get("ChildRelation")
    condition = filter_condition(record, target, model, lambda message: PlanError(message, filter_name=record.name))
    if relation_name:
        relation = target.child_relationship(str(relation_name))
        if relation is None:
            raise PlanError(f"filter '{record.name}': {target.name} has no child relationship '{relation_name}'",
                            filter_name=record.name)
        child = model.require(relation.child_object)
        header = Level(target, _controls(target, suffix, HEADER_BASES), _copies(ctx, target, suffix, ("Invoice",)))
        line = Level(child, _controls(child, suffix, LINE_BASES), _copies(ctx, child, suffix, ("InvoiceLineItem",)))
        lookup = child.field(relation.field_name)
    else:
        header = Level(
            target,
            _controls(target, suffix, HEADER_BASES + LINE_BASES),
            _copies(ctx, target, suffix, ("Invoice", "InvoiceLineItem")),
        )
        line = header
        lookup = None
    required = ["ON_Account", "ON_ServiceDate", "ON_Invoice", "ON_LastInvoiceRun", "ON_InvoiceBuildError"]
    if lookup is None:
        required.append("ON_IsItem")
    missing = [controlling_name(b, suffix) for b in required if header.field(b) is None]
    missing += [controlling_name(b, suffix) for b in ("ON_Title", "ON_UnitPrice") if line.field(b) is None]
    if missing:
        raise PlanError(f"filter '{record.name}': missing controlling fields {', '.join(missing)}",
                        filter_name=record.name)
    for base in ("ON_Invoice", "ON_LastInvoiceRun", "ON_InvoiceBuildError"):
        if header.field(base).type is FieldType.FORMULA:  # type: ignore[union-attr]
            raise PlanError(f"filter '{record.name}': {header.field(base).name} must not be a formula",  # type: ignore[union-attr]
                            filter_name=record.name)
    writeback = {b: header.field(b) for b in ("ON_Invoice", "ON_LastInvoiceRun", "ON_InvoiceBuildError")}
    return FilterPlan(record, suffix, header, line, lookup, condition, writeback)  # type: ignore[arg-type]


# --- fast value access ----------------------------------------------------------------
#
# The run reads the same few fields of hundreds of thousands of records. These
# helpers turn a field into a getter once: a stored field is a dict lookup, a
# formula that is nothing but a field path is a nested lookup (no evaluation),
# anything else evaluates the compiled formula. A coercer writes a value into
# a target field, skipping the general conversion when the value already fits.

_BARE_PATH = re.compile(r"\s*[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*\s*")
# TEXT() of a text or picklist field returns the field's text unchanged.
_TEXT_OF_PATH = re.compile(r"\s*TEXT\s*\(\s*[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*\s*\)\s*", re.IGNORECASE)
_SAME_KIND = {
    FieldType.TEXT: (FieldType.TEXT, FieldType.LONGTEXT, FieldType.EMAIL, FieldType.URL, FieldType.AUTONUMBER,
                     FieldType.PICKLIST),
    FieldType.NUMBER: (FieldType.NUMBER, FieldType.CURRENCY),
    FieldType.CURRENCY: (FieldType.NUMBER, FieldType.CURRENCY),
    FieldType.DATE: (FieldType.DATE,),
    FieldType.CHECKBOX: (FieldType.CHECKBOX,),
}


def _plain_get(key: str) -> Callable[[dict, date], object]:
    def get(record: dict, _today: date) -> object:
        value = record.get(key)
        return value.get("id") if isinstance(value, dict) else value

    return get


def _path_get(path: tuple[str, ...]) -> Callable[[dict, date], object]:
    if len(path) == 1:
        return _plain_get(path[0])
    head, last = path[:-1], path[-1]

    def get(record: dict, _today: date) -> object:
        current = record
        for step in head:
            current = current.get(step)
            if current is None:
                return None
        value = current.get(last)
        return value.get("id") if isinstance(value, dict) else value

    return get


def getter(ctx: Context, fdef: FieldDef) -> Callable[[dict, date], object]:
    """A function (record, today) -> value of ``fdef``, formulas included.
    Formula results are rounded half-up to the formula field's scale, as a
    formula field's declared decimal places say."""
    if fdef.formula is None:
        return _plain_get(fdef.key)
    compiled = fdef.formula.compiled
    if compiled is None:
        raise PlanError(f"formula {fdef.object_name}.{fdef.name} did not compile")
    target = bare_path_field(ctx, fdef)
    if target is not None:
        path = next(iter(compiled.references))
        return _path_get(path)
    quantum = Decimal(1).scaleb(-fdef.scale) if fdef.scale is not None and fdef.formula.returns.is_numeric else None
    evaluate = compiled.evaluate

    def get(record: dict, today: date) -> object:
        value = evaluate(record, today=today)
        if quantum is not None and isinstance(value, Decimal):
            value = value.quantize(quantum, rounding=ROUND_HALF_UP)
        return value

    return get


def bare_path_field(ctx: Context, fdef: FieldDef) -> FieldDef | None:
    """The field a formula merely reads (``Quantity``, ``Product.ProductGroup``,
    ``TEXT(Product.TaxClass)`` of a text or picklist field) when reading it
    directly gives the same value as evaluating the formula."""
    model = ctx.model
    formula = fdef.formula
    compiled = formula.compiled if formula else None
    if formula is None or compiled is None:
        return None
    bare = _BARE_PATH.fullmatch(formula.expression) is not None
    text_of = formula.returns is FieldType.TEXT and _TEXT_OF_PATH.fullmatch(formula.expression) is not None
    if not (bare or text_of):
        return None
    if len(compiled.references) != 1 or formula.blanks_as_zero:
        return None
    path = next(iter(compiled.references))
    obj = model.object(fdef.object_name)
    for step in path[:-1]:
        lookup = obj.relationship(step) if obj else None
        obj = model.object(lookup.reference_to) if lookup and lookup.reference_to else None
    target = obj.field(path[-1]) if obj else None
    if target is None or target.formula is not None:
        return None
    if target.type not in _SAME_KIND.get(formula.returns, ()):
        return None
    if target.type.is_numeric and fdef.scale is not None and (target.scale or 0) > fdef.scale:
        return None  # the formula would round; evaluate it
    return target


def coercer(target: FieldDef) -> Callable[[object], object]:
    """A function writing a value into ``target``: the general
    :func:`engine.config.values.coerce`, with fast paths for values that
    already fit (a Decimal within scale and precision, a short enough str)."""
    kind = target.type
    if kind.is_numeric:
        scale = target.scale or 0
        bound = Decimal(10) ** ((target.precision or 18) - scale)
        # Values read from a column of the same scale carry exactly this
        # exponent; same_quantum() tells so without building as_tuple().
        quantum = Decimal(1).scaleb(-scale)

        def number(value: object) -> object:
            if type(value) is Decimal:
                if value.same_quantum(quantum):
                    if -bound < value < bound:
                        return value
                else:
                    exponent = value.as_tuple().exponent
                    if isinstance(exponent, int) and -scale <= exponent <= 0 and -bound < value < bound:
                        return value
            return coerce(target, value)

        return number
    if kind in (FieldType.TEXT, FieldType.LONGTEXT):
        length = target.length or 255

        def text(value: object) -> object:
            if type(value) is str and 0 < len(value) <= length:
                return value
            return coerce(target, value)

        return text
    return lambda value: coerce(target, value)
