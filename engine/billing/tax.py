"""Tax determination for an invoice line (domain-spec §3.6).

One pure function: the Tax Rules setting, the invoice header and the line in,
a :class:`TaxDecision` out: code, rate, VAT category, the rule's name (stored
on the line as AppliedTaxRule) and the rule decision for tracing. An explicit
tax rate on the line (copied from ``ON_TaxRate`` of the source) bypasses the
rules.

Rules are grouped by ``Type``; within a group the most specific matching rule
wins (see :mod:`engine.domain.rules`). A rule is valid when the line's
service-period start (else the invoice date) lies within its StartDate and
EndDate (both optional). A line gets one tax: the first Type, in name order,
that has a matching rule. No matching rule, or a tie between two equally
specific rules, is an error for the source record: billing with a guessed tax
rate would be worse than not billing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Callable, Mapping

from engine.domain.errors import EngineError, Where
from engine.domain.rules import RuleDecision, criteria_of, decide
from engine.storage.context import Context


class TaxError(EngineError, ValueError):
    """No tax rule, or no unique one, decides the tax of an invoice line.

    The run reports it for the line's source records (see
    :class:`~engine.billing.build.BuildError`): billing with a guessed rate
    would be worse than not billing them.
    """

    code = "R206"


@dataclass(frozen=True, slots=True)
class TaxDecision:
    code: str | None
    rate: Decimal
    rule: str | None
    category: str | None
    decision: RuleDecision | None


class TaxResolver:
    """:func:`determine_tax` with its setup done once and its decisions
    memoized per distinct context (a run sees few distinct contexts: region,
    product class, date...). Decisions are pure, so the cache cannot go stale
    within one loaded model: one resolver serves a whole command
    (``ctx.service(TaxResolver)``)."""

    def __init__(self, ctx: Context):
        setting = ctx.model.object("TaxRule")
        self.configured = setting is not None
        self.records = ctx.model.setting_records("TaxRule")
        self.criteria = criteria_of(ctx.model, setting) if setting is not None else ()
        self.types = sorted({str(r.get("Type") or "") for r in self.records})
        self._cache: dict[tuple, TaxDecision | TaxError] = {}
        # The context fields the cache key is made of, split by where they are
        # read (the line or the invoice header), resolved once: the key is
        # built for every line of a run.
        self._line_fields = tuple(
            c.context_field.lower() for c in self.criteria if c.context_object.lower() == "invoicelineitem"
        )
        self._header_fields = tuple(
            c.context_field.lower() for c in self.criteria if c.context_object.lower() != "invoicelineitem"
        )

    def __call__(self, header: Mapping[str, object], line: Mapping[str, object], when: date | None) -> TaxDecision:
        return self.for_header(header)(line, when)

    def for_header(self, header: Mapping[str, object]) -> Callable[[Mapping[str, object], date | None], TaxDecision]:
        """``(line, when) -> decision`` for the lines of one invoice header:
        the header's part of the cache key is read once. Use it only while
        the header does not change (the builder taxes all lines of an invoice
        with the header complete)."""
        header_key = tuple(map(header.get, self._header_fields))
        line_fields, cache = self._line_fields, self._cache

        def decide(line: Mapping[str, object], when: date | None) -> TaxDecision:
            explicit_rate = line.get("taxrate")
            if explicit_rate is not None:
                return TaxDecision(line.get("taxcode"), Decimal(explicit_rate), None, line.get("vatcategorycode"), None)
            key = (line.get("taxcode"), when, tuple(map(line.get, line_fields)), header_key)
            found = cache.get(key)
            if found is None:
                try:
                    found = self._decide(header, line, when)
                except TaxError as error:
                    found = error
                cache[key] = found
            if isinstance(found, TaxError):
                # a fresh error each time: re-raising the cached one would grow
                # its traceback by the frames of every untaxable line
                raise TaxError(found.message, where=found.where, hint=found.hint)
            return found

        return decide

    def _decide(self, header: Mapping[str, object], line: Mapping[str, object], when: date | None) -> TaxDecision:
        if not self.configured or not self.records:
            raise TaxError("no tax rules are configured and the line has no explicit tax rate")
        criteria, records = self.criteria, self.records
        explicit_code = line.get("taxcode")

        def context(criterion):
            source = line if criterion.context_object.lower() == "invoicelineitem" else header
            return source.get(criterion.context_field.lower())

        def valid(record) -> bool:
            if explicit_code and record.get("TaxCode") != explicit_code:
                return False
            start, end = record.get("StartDate"), record.get("EndDate")
            if when is None:
                return start is None and end is None
            return (start is None or start <= when) and (end is None or when <= end)

        for tax_type in self.types:
            decision = decide(
                "TaxRule",
                records,
                criteria,
                context,
                admissible=lambda r, t=tax_type: str(r.get("Type") or "") == t and valid(r),
            )
            if decision.winner is None:
                continue
            if decision.tie:
                names = " and ".join(f"'{c.name}'" for c in decision.candidates[:2])
                raise TaxError(f"ambiguous tax rules {names} match equally well",
                               where=Where(object="TaxRule", record=decision.candidates[0].name),
                               hint="make one of the rules more specific, or their validity periods disjoint")
            rule = decision.winner
            rate = rule.get("TaxRate")
            if rate is None:
                raise TaxError(f"tax rule '{rule.name}' has no TaxRate", where=Where(object="TaxRule", record=rule.name))
            return TaxDecision(rule.get("TaxCode"), Decimal(rate), rule.name, rule.get("VATCategoryCode"), decision)
        context_text = ", ".join(
            f"{c.context_object}.{c.context_field}={context(c)!r}" for c in criteria if context(c) is not None
        )
        raise TaxError(f"no tax rule matches ({context_text or 'empty context'})")


def determine_tax(ctx: Context, header: Mapping[str, object], line: Mapping[str, object], when: date | None) -> TaxDecision:
    """One decision without a cache (for explain and tests)."""
    return TaxResolver(ctx)(header, line, when)
