"""Choosing the best-matching rule of a rule setting, with a trace of why.

Tax rules, G/L account assignment rules, center rules and collective accounts
all work the same way: each rule has *criterion* fields that are compared with
a context (the invoice, its line, a booking detail); a rule is a candidate when
every criterion it fills matches; the most specific candidate wins. This module
is that decision as one pure function, :func:`decide`, returning the winner and
the full comparison table, so the same code serves the real run, the dry run
and ``explain``.

Matching (domain-spec §6.1):

* a criterion holds one value or a comma-separated list (either value matches);
  values are trimmed and compared case-sensitively;
* an empty criterion is a wildcard and does not count towards specificity;
* a filled criterion never matches an empty context value.

Precedence: the candidate whose filled criteria form the highest bit vector in
the declared criterion order (most significant first) wins; then the one whose
matching lists are shortest (more specific); then the lowest name. When the
first two keys tie, the decision is marked ``tie`` (validate-config warns about
such rule pairs up front: W100/W101).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Callable, Iterable, Sequence

from engine.config import contract
from engine.config.model import FieldDef, ObjectDef, OrgModel, SettingRecord


@dataclass(frozen=True, slots=True)
class Criterion:
    """A criterion field of a rule setting and the context field it matches."""

    field: FieldDef
    context_object: str
    context_field: str

    @property
    def name(self) -> str:
        return self.field.name


@dataclass(frozen=True, slots=True)
class Comparison:
    criterion: str
    rule_value: str | None
    context_value: str | None
    matched: bool


@dataclass(frozen=True, slots=True)
class Candidate:
    record: SettingRecord
    matched: bool
    score: tuple[int, ...]
    list_sizes: int
    comparisons: tuple[Comparison, ...]

    @property
    def name(self) -> str:
        return self.record.name

    def why_not(self) -> str:
        failed = [c for c in self.comparisons if c.rule_value and not c.matched]
        return "; ".join(
            f"{c.criterion} is {c.rule_value!r} but the context has {c.context_value!r}" for c in failed
        ) or "excluded"


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """The outcome: the winning record (or None), every candidate in
    precedence order, the rules that did not match, and whether it was a tie."""

    setting: str
    winner: SettingRecord | None
    candidates: tuple[Candidate, ...]
    rejected: tuple[Candidate, ...]
    tie: bool

    def trace(self) -> str:
        if self.winner is None:
            return f"no {self.setting} record matched"
        best = self.candidates[0]
        matched = ", ".join(f"{c.criterion}={c.context_value!r}" for c in best.comparisons if c.rule_value)
        text = f"{self.setting} '{best.name}' matched ({matched or 'no criteria: catch-all'})"
        if len(self.candidates) > 1:
            text += "; beat " + ", ".join(f"'{c.name}'" for c in self.candidates[1:])
        if self.tie:
            text += " (tie, won by name)"
        return text


def split_criterion(value: str) -> tuple[str, ...]:
    """Rule criteria accept comma-separated lists (OR within a field)."""
    return tuple(v.strip() for v in value.split(",") if v.strip())


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


def criteria_of(model: OrgModel, setting: ObjectDef, exclude: Iterable[str] = ()) -> tuple[Criterion, ...]:
    """The criterion fields of a rule setting in declaration order: fields with
    a ``match``, and custom fields matching a same-name context field."""
    skip = {name.lower() for name in exclude}
    out = []
    for fdef in setting.fields:
        if fdef.key in skip:
            continue
        if not fdef.match and not fdef.is_custom:
            continue
        target = criterion_target(model, setting, fdef)
        if target is None:
            continue
        out.append(Criterion(fdef, target.object_name, target.name))
    return tuple(out)


def as_text(value: object) -> str | None:
    """Context values compared as text: numbers without trailing zeros noise,
    booleans as true/false, dates ISO."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return ";".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def decide(
    setting: str,
    records: Sequence[SettingRecord],
    criteria: Sequence[Criterion],
    context: Callable[[Criterion], object],
    *,
    admissible: Callable[[SettingRecord], bool] | None = None,
) -> RuleDecision:
    """Pick the best rule for ``context`` (a function giving the context value
    of a criterion). ``admissible`` pre-filters records (e.g. validity dates,
    a fixed Type)."""
    context_values = {c.field.key: as_text(context(c)) for c in criteria}
    matched: list[Candidate] = []
    rejected: list[Candidate] = []
    for record in records:
        if admissible is not None and not admissible(record):
            continue
        comparisons = []
        ok = True
        score = []
        sizes = 0
        for criterion in criteria:
            raw = record.get(criterion.field.name)
            rule_value = as_text(raw)
            ctx_value = context_values[criterion.field.key]
            if not rule_value:
                comparisons.append(Comparison(criterion.name, None, ctx_value, True))
                score.append(0)
                continue
            options = split_criterion(rule_value)
            hit = ctx_value is not None and ctx_value in options
            comparisons.append(Comparison(criterion.name, rule_value, ctx_value, hit))
            ok = ok and hit
            score.append(1)
            sizes += len(options)
        candidate = Candidate(record, ok, tuple(score), sizes, tuple(comparisons))
        (matched if ok else rejected).append(candidate)
    matched.sort(key=lambda c: (tuple(-s for s in c.score), c.list_sizes, c.name.lower()))
    tie = len(matched) > 1 and matched[0].score == matched[1].score and matched[0].list_sizes == matched[1].list_sizes
    return RuleDecision(setting, matched[0].record if matched else None, tuple(matched), tuple(rejected), tie)
