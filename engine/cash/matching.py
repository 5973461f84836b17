"""Payment matching: which open invoice a bank statement line pays, as one pure
function with a trace (:func:`decide`).

The rules are settings (``PaymentMatchingRule``, JustOn's "Payment Matching
Fields"): each names a compared field and the points an agreement adds.

=================  ==========================================================
Field              agrees when
=================  ==========================================================
EndToEndId         the line's end-to-end id is the invoice number (what our
                   SEPA orders carry, so a collection or a transfer ordered
                   from here comes back with it)
InvoiceNumber      the invoice number occurs in the remittance text (spaces,
                   dashes and case ignored); with a ``Pattern``, a match of
                   the pattern is a number or the end of one
Amount             the amount differs from the open amount by at most
                   ``Tolerance`` (default 0)
PayerIBAN          the payer's IBAN is the invoice's, or one the account paid
                   from before (an earlier assigned line)
MandateReference   the line's mandate reference is the invoice's
PayerName          the payer's name is the account name (case and spaces
                   ignored)
=================  ==========================================================

Invoices are candidates when they are Open, owe money (open amount > 0), are
in the line's currency and are dated on or before the booking day (JustOn:
"entry Statement Date < item Booking Date"). The line goes to the best
candidate when its score reaches ``GlobalSettings.PaymentMatchingThreshold``
(default 100) and no other candidate has as many points; otherwise it waits
for review. The import, the review list and ``metabill bank explain`` all
call :func:`decide`, so what is explained is what was decided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Iterable, Sequence

from engine.domain.money import ZERO

FIELDS = ("EndToEndId", "InvoiceNumber", "Amount", "PayerIBAN", "MandateReference", "PayerName")
#: The rules of an org without active PaymentMatchingRule records.
DEFAULT_RULES: tuple[tuple[str, str, int], ...] = (
    ("end-to-end id", "EndToEndId", 100),
    ("invoice number in the text", "InvoiceNumber", 60),
    ("amount", "Amount", 40),
    ("payer IBAN", "PayerIBAN", 30),
    ("mandate reference", "MandateReference", 30),
)
SHOWN_CANDIDATES = 5


@dataclass(frozen=True)
class Rule:
    """One matching rule: an agreement on ``field`` adds ``score`` points."""

    name: str
    field: str
    score: int
    pattern: re.Pattern | None = None
    tolerance: Decimal = ZERO


@dataclass(frozen=True)
class MatchingRules:
    rules: tuple[Rule, ...]
    threshold: Decimal

    @classmethod
    def from_records(cls, records: Iterable, threshold: Decimal) -> "MatchingRules":
        """The active records of PaymentMatchingRule (validated by
        validate-config, E260-E262), or the defaults when there are none."""
        rules = []
        for record in records:
            if record.get("Active") is False:
                continue
            pattern = str(record.get("Pattern") or "").strip()
            tolerance = record.get("Tolerance")
            rules.append(Rule(str(record.name), str(record.get("Field")), int(Decimal(str(record.get("Score") or 0))),
                              re.compile(pattern, re.IGNORECASE) if pattern else None,
                              Decimal(str(tolerance)) if tolerance not in (None, "") else ZERO))
        if not rules:
            rules = [Rule(name, fld, score) for name, fld, score in DEFAULT_RULES]
        return cls(tuple(rules), threshold)


@dataclass(frozen=True)
class LineFacts:
    """What matching compares of a statement line."""

    amount: Decimal
    currency: str
    booking_date: date
    remittance: str | None = None
    end_to_end_id: str | None = None
    payer_iban: str | None = None
    payer_name: str | None = None
    mandate_reference: str | None = None


@dataclass(frozen=True)
class Candidate:
    """An invoice that may be paid by the line."""

    invoice: str
    invoice_id: int
    account_id: int
    account_name: str | None
    open_amount: Decimal
    currency: str
    invoice_date: date | None
    status: str = "Open"
    ibans: frozenset[str] = frozenset()
    mandate_reference: str | None = None


@dataclass(frozen=True)
class Check:
    """One rule applied to one candidate."""

    rule: str
    field: str
    agreed: bool
    points: int
    detail: str


@dataclass(frozen=True)
class Scored:
    candidate: Candidate
    score: int
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Decision:
    """The outcome for one line, with everything that led to it."""

    outcome: str                          # "assign", "split" (engine.cash.splitting) or "review"
    invoice: str | None                   # the invoice to assign to (a split: the first part's)
    score: int
    threshold: Decimal
    reason: str
    ranked: tuple[Scored, ...] = ()
    excluded: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    #: A split: (invoice, amount) in order, and what stays a credit on the account.
    parts: tuple[tuple[str, Decimal], ...] = ()
    remainder: Decimal = ZERO

    @property
    def best(self) -> Scored | None:
        return self.ranked[0] if self.ranked else None

    def note(self) -> str:
        """One line for PaymentEntry.MatchNote."""
        return self.reason[:255]

    def lines(self) -> list[str]:
        """The trace as text (``metabill bank explain``)."""
        out = [f"decision: {self.outcome}" + (f" to {self.invoice}" if self.invoice else "")
               + f" (score {self.score}, threshold {self.threshold})", f"  because: {self.reason}"]
        for invoice, amount in self.parts:
            out.append(f"  part: {amount} to {invoice}")
        if self.remainder:
            out.append(f"  part: {self.remainder} stays a credit on the account")
        for scored in self.ranked[:SHOWN_CANDIDATES]:
            c = scored.candidate
            out.append(f"  candidate {c.invoice} (open {c.open_amount} {c.currency}): score {scored.score}")
            for check in scored.checks:
                mark = f"+{check.points}" if check.agreed else "  0"
                out.append(f"    {mark:>4}  {check.rule} [{check.field}]: {check.detail}")
        if len(self.ranked) > SHOWN_CANDIDATES:
            out.append(f"  ... {len(self.ranked) - SHOWN_CANDIDATES} more candidates with points")
        for invoice, why in self.excluded[:SHOWN_CANDIDATES]:
            out.append(f"  not a candidate: {invoice}: {why}")
        return out


def compact(text: str | None) -> str:
    """Upper case without spaces, dashes, dots and slashes (how references
    are compared)."""
    return re.sub(r"[\s\-./_]", "", text or "").upper()


def _check(rule: Rule, line: LineFacts, candidate: Candidate) -> Check:
    agreed, detail = False, ""
    if rule.field == "EndToEndId":
        agreed = bool(line.end_to_end_id) and compact(line.end_to_end_id) == compact(candidate.invoice)
        detail = f"line {line.end_to_end_id or '(none)'} vs invoice {candidate.invoice}"
    elif rule.field == "InvoiceNumber":
        text = compact(line.remittance)
        wanted = compact(candidate.invoice)
        if rule.pattern is not None:
            found = [compact(m.group(0)) for m in rule.pattern.finditer(line.remittance or "")]
            agreed = any(token and wanted.endswith(token) for token in found)
            detail = f"pattern found {found or 'nothing'} in the text; invoice {candidate.invoice}"
        else:
            agreed = bool(wanted) and wanted in text
            detail = f"{candidate.invoice} {'in' if agreed else 'not in'} text {(line.remittance or '(none)')[:60]!r}"
    elif rule.field == "Amount":
        difference = abs(line.amount - candidate.open_amount)
        agreed = difference <= rule.tolerance
        detail = f"{line.amount} vs open {candidate.open_amount} (difference {difference}, tolerance {rule.tolerance})"
    elif rule.field == "PayerIBAN":
        iban = compact(line.payer_iban)
        agreed = bool(iban) and iban in {compact(i) for i in candidate.ibans}
        detail = f"payer {line.payer_iban or '(none)'}; known: {', '.join(sorted(candidate.ibans)) or 'none'}"
    elif rule.field == "MandateReference":
        agreed = bool(line.mandate_reference) and line.mandate_reference == candidate.mandate_reference
        detail = f"line {line.mandate_reference or '(none)'} vs invoice {candidate.mandate_reference or '(none)'}"
    elif rule.field == "PayerName":
        agreed = bool(line.payer_name) and compact(line.payer_name) == compact(candidate.account_name)
        detail = f"payer {line.payer_name or '(none)'} vs account {candidate.account_name or '(none)'}"
    return Check(rule.name, rule.field, agreed, rule.score if agreed else 0, detail)


def excluded_reason(line: LineFacts, candidate: Candidate) -> str | None:
    """Why ``candidate`` cannot be paid by ``line`` (None: it can)."""
    if candidate.status != "Open" or candidate.open_amount <= 0:
        return f"status {candidate.status}, open amount {candidate.open_amount}: owes nothing"
    if candidate.currency != line.currency:
        return f"currency {candidate.currency}, the line is in {line.currency}"
    if candidate.invoice_date is not None and candidate.invoice_date > line.booking_date:
        return f"dated {candidate.invoice_date}, after the booking day {line.booking_date}"
    return None


def decide(line: LineFacts, candidates: Sequence[Candidate], rules: MatchingRules) -> Decision:
    """Score every candidate by every rule and decide (see the module docstring)."""
    ranked: list[Scored] = []
    excluded: list[tuple[str, str]] = []
    for candidate in candidates:
        why = excluded_reason(line, candidate)
        if why is not None:
            excluded.append((candidate.invoice, why))
            continue
        checks = tuple(_check(rule, line, candidate) for rule in rules.rules)
        score = sum(check.points for check in checks)
        if score > 0:
            ranked.append(Scored(candidate, score, checks))
    ranked.sort(key=lambda s: (-s.score, s.candidate.invoice))
    if not ranked:
        return Decision("review", None, 0, rules.threshold, "no open invoice agrees on any rule",
                        (), tuple(excluded))
    best = ranked[0]
    if best.score < rules.threshold:
        reason = f"best {best.candidate.invoice} scores {best.score}, below the threshold {rules.threshold}"
        return Decision("review", None, best.score, rules.threshold, reason, tuple(ranked), tuple(excluded))
    if len(ranked) > 1 and ranked[1].score == best.score:
        reason = (f"{best.candidate.invoice} and {ranked[1].candidate.invoice} both score {best.score}: "
                  "ambiguous")
        return Decision("review", None, best.score, rules.threshold, reason, tuple(ranked), tuple(excluded))
    agreed = ", ".join(c.field for c in best.checks if c.agreed)
    reason = f"{best.candidate.invoice} scores {best.score} ({agreed}) >= {rules.threshold}"
    return Decision("assign", best.candidate.invoice, best.score, rules.threshold, reason, tuple(ranked),
                    tuple(excluded))


class CandidateIndex:
    """The open invoices indexed by what the rules compare, so that a line is
    scored against the few invoices that can agree with it on some rule
    instead of all of them (a statement of thousands of lines against
    thousands of open invoices). Invoices that agree on nothing score 0 and
    are never chosen, so :func:`decide` on the shortlist decides the same as
    on all candidates; only its list of excluded invoices is shorter."""

    def __init__(self, candidates: Iterable[Candidate], rules: MatchingRules):
        self.rules = rules
        self.by_name: dict[str, Candidate] = {}
        self._by_amount: dict[Decimal, list[Candidate]] = {}
        self._by_iban: dict[str, list[Candidate]] = {}
        self._by_mandate: dict[str, list[Candidate]] = {}
        self._by_payer: dict[str, list[Candidate]] = {}
        self._by_account: dict[int, list[Candidate]] = {}
        self.tolerance = max((r.tolerance for r in rules.rules if r.field == "Amount"), default=ZERO)
        for candidate in candidates:
            self.add(candidate)

    def add(self, candidate: Candidate) -> None:
        """Add or replace (same invoice) a candidate."""
        self.remove(candidate.invoice)
        self.by_name[candidate.invoice] = candidate
        self._by_amount.setdefault(candidate.open_amount, []).append(candidate)
        for iban in candidate.ibans:
            self._by_iban.setdefault(compact(iban), []).append(candidate)
        if candidate.mandate_reference:
            self._by_mandate.setdefault(candidate.mandate_reference, []).append(candidate)
        if candidate.account_name:
            self._by_payer.setdefault(compact(candidate.account_name), []).append(candidate)
        self._by_account.setdefault(candidate.account_id, []).append(candidate)

    def remove(self, invoice: str) -> None:
        old = self.by_name.pop(invoice, None)
        if old is None:
            return
        for table in (self._by_amount, self._by_iban, self._by_mandate, self._by_payer, self._by_account):
            for key in [k for k, found in table.items() if old in found]:
                table[key] = [c for c in table[key] if c is not old]
                if not table[key]:
                    del table[key]

    def payer_candidates(self, line: LineFacts) -> list[Candidate]:
        """Every candidate of the accounts the payer is (known by the line's
        IBAN, else named like the payer; :func:`engine.cash.splitting.payer_accounts`
        decides the same on all candidates): what a summed split searches."""
        found = self._by_iban.get(compact(line.payer_iban), []) if line.payer_iban else []
        if not found and line.payer_name:
            found = self._by_payer.get(compact(line.payer_name), [])
        accounts = sorted({c.account_id for c in found})
        return [c for account in accounts for c in self._by_account.get(account, ())]

    def shortlist(self, line: LineFacts) -> list[Candidate]:
        """The candidates that agree with ``line`` on at least one active rule."""
        fields = {rule.field for rule in self.rules.rules}
        found: dict[str, Candidate] = {}

        def take(items: Iterable[Candidate]) -> None:
            for candidate in items:
                found.setdefault(candidate.invoice, candidate)

        names = {compact(name): candidate for name, candidate in self.by_name.items()}
        if "EndToEndId" in fields and line.end_to_end_id:
            take([c for c in [names.get(compact(line.end_to_end_id))] if c is not None])
        if "InvoiceNumber" in fields and line.remittance:
            text = compact(line.remittance)
            take(c for key, c in names.items() if key and key in text)
            for rule in self.rules.rules:
                if rule.field == "InvoiceNumber" and rule.pattern is not None:
                    tokens = [compact(m.group(0)) for m in rule.pattern.finditer(line.remittance)]
                    take(c for key, c in names.items() if any(t and key.endswith(t) for t in tokens))
        if "Amount" in fields:
            if self.tolerance == ZERO:
                take(self._by_amount.get(line.amount, ()))
            else:
                take(c for amount, items in self._by_amount.items() if abs(amount - line.amount) <= self.tolerance
                     for c in items)
        if "PayerIBAN" in fields and line.payer_iban:
            take(self._by_iban.get(compact(line.payer_iban), ()))
        if "MandateReference" in fields and line.mandate_reference:
            take(self._by_mandate.get(line.mandate_reference, ()))
        if "PayerName" in fields and line.payer_name:
            take(self._by_payer.get(compact(line.payer_name), ()))
        return sorted(found.values(), key=lambda c: c.invoice)


__all__ = ["Candidate", "CandidateIndex", "Check", "DEFAULT_RULES", "Decision", "FIELDS", "excluded_reason", "LineFacts", "MatchingRules", "Rule",
           "Scored", "compact", "decide"]
