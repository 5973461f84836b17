"""Account determination: which G/L account a booking detail posts to, and why.

Two pure decisions, each returning the account *and* the rule decision that
produced it (domain-spec §6), so the same code serves finalization, dry runs
and ``metabill explain``:

* :func:`gl_account` — an invoice line's revenue account from Assignment Rules
  - G/L Account; no matching rule means the caller falls back to the
  collective account of type Revenue;
* :func:`collective_account` — the account of a booking detail of a given type
  (Tax, Interim Revenue, Payment, ...) from Collective Accounts; the rule's
  Type must equal the booking detail's type.

Criteria, matching and precedence are those of :mod:`engine.domain.rules`;
which values a decision compares (the account question) is built by
:mod:`engine.booking.questions`. A command shares one resolver:
``ctx.service(AccountResolver)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from engine.config.model import SettingRecord
from engine.domain.errors import Where
from engine.domain.rules import RuleDecision, criteria_of, decide
from engine.storage.context import Context

from .errors import BookingError, invoice_where


@dataclass(frozen=True)
class AccountChoice:
    account: str | None
    contra: str | None
    bp_account: str | None
    rule: str | None
    decision: RuleDecision | None

    def explain(self) -> str:
        return self.decision.trace() if self.decision is not None else "no rule consulted"


class AccountResolver:
    """The two decisions with their setup done once per command: a service of
    the context (``ctx.service(AccountResolver)``), its decisions memoized."""

    def __init__(self, ctx: Context):
        model = ctx.model
        gl = model.object("GlAccountRule")
        collective = model.object("CollectiveAccount")
        self.gl_rules = model.setting_records("GlAccountRule")
        self.gl_criteria = criteria_of(model, gl) if gl is not None else ()
        self.collective_records = model.setting_records("CollectiveAccount")
        self.collective_criteria = criteria_of(model, collective, exclude=("Type",)) if collective is not None else ()
        self._gl_cache: dict[tuple, AccountChoice] = {}
        self._collective_cache: dict[tuple, AccountChoice] = {}
        self._collective_keys = tuple(c.context_field.lower() for c in self.collective_criteria)
        # (from the line?, field key) per criterion, in criterion order
        self._gl_sources = tuple(
            (c.context_object.lower() == "invoicelineitem", c.context_field.lower()) for c in self.gl_criteria
        )

    def line_fields(self) -> frozenset[str]:
        """The line fields G/L decisions read."""
        return frozenset(key for from_line, key in self._gl_sources if from_line)

    def gl_accounts(self, invoice: Mapping[str, object], lines: Sequence[Mapping[str, object]]) -> list[AccountChoice]:
        """:meth:`gl_account` for every line of one invoice; the invoice's
        criterion values are read once, not per line."""
        invoice_values = {key: invoice.get(key) for from_line, key in self._gl_sources if not from_line}
        line_keys = tuple(key for from_line, key in self._gl_sources if from_line)
        choices: list[AccountChoice] = []
        last_values: tuple | None = None
        choice: AccountChoice | None = None
        for line in lines:
            line_values = tuple([line.get(key) for key in line_keys])
            if choice is None or line_values != last_values:  # runs of alike lines are the common case
                current = dict(zip(line_keys, line_values))
                choice = self._gl_by_values(tuple([
                    current[key] if from_line else invoice_values[key] for from_line, key in self._gl_sources
                ]))
                last_values = line_values
            choices.append(choice)
        return choices

    def gl_account(self, invoice: Mapping[str, object], line: Mapping[str, object]) -> AccountChoice:
        values = tuple([line.get(key) if from_line else invoice.get(key) for from_line, key in self._gl_sources])
        return self._gl_by_values(values)

    def _gl_by_values(self, values: tuple) -> AccountChoice:
        # Decisions are pure functions of the criterion values: memoized, since
        # an invoice run's lines share a handful of contexts.
        return _memoized(self._gl_cache, values, lambda: self._decide_gl(values))

    def _decide_gl(self, values: tuple) -> AccountChoice:
        by_criterion = dict(zip((c.field.key for c in self.gl_criteria), values))
        decision = decide("GlAccountRule", self.gl_rules, self.gl_criteria, lambda c: by_criterion[c.field.key])
        winner = decision.winner
        if winner is None:
            return AccountChoice(None, None, None, None, decision)
        return AccountChoice(winner.get("GLAccount"), None, None, winner.name, decision)

    def collective_account(self, booking_type: str, context_values: Mapping[str, object]) -> AccountChoice:
        """``context_values`` holds booking-detail (and balance) values keyed
        by lower-case field name: taxcode, businessentity, region, ..."""
        values = (booking_type, *[context_values.get(key) for key in self._collective_keys])
        return _memoized(self._collective_cache, values,
                         lambda: self._decide_collective(booking_type, context_values))

    def required_collective(self, booking_type: str, question: Mapping[str, object],
                            subject: Mapping[str, object], where: Where | None = None) -> AccountChoice:
        """:meth:`collective_account`, or :class:`BookingError` when no
        collective account of the type matches: a posting to nowhere is worse
        than no posting. ``subject`` is the invoice (or what stands for it)
        the message names."""
        choice = self.collective_account(booking_type, question)
        if choice.account is None:
            described = ", ".join(f"{k}={v!r}" for k, v in question.items() if v)
            raise BookingError(
                f"invoice {subject.get('name')}: no collective account of type {booking_type} matches ({described})",
                where=where or invoice_where(subject.get("name")),
                hint=f"add a Collective Accounts record of type {booking_type} that matches",
            )
        return choice

    def _decide_collective(self, booking_type: str, context_values: Mapping[str, object]) -> AccountChoice:
        def context(criterion):
            return context_values.get(criterion.context_field.lower())

        decision = decide(
            "CollectiveAccount",
            self.collective_records,
            self.collective_criteria,
            context,
            admissible=lambda record: record.get("Type") == booking_type,
        )
        winner: SettingRecord | None = decision.winner
        if winner is None:
            return AccountChoice(None, None, None, None, decision)
        return AccountChoice(
            winner.get("Account"), winner.get("Account2"), winner.get("BpAccount"), winner.name, decision
        )


_CACHE_LIMIT = 10_000


def _memoized(cache: dict, key: tuple, decide_now: Callable[[], AccountChoice]) -> AccountChoice:
    """A decision from ``cache`` or made now and remembered. Decisions are
    pure functions of their criterion values, and an invoice run's lines
    share a handful of them; an unhashable value is simply not cached."""
    try:
        found = cache.get(key)
    except TypeError:
        return decide_now()
    if found is None:
        found = decide_now()
        if len(cache) < _CACHE_LIMIT:
            cache[key] = found
    return found
