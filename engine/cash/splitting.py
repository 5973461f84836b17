"""One bank payment across several invoices: the split decision, one pure
function with its trace (:func:`settle_decision`), taken by the import, its
dry run, the review list and ``metabill bank explain`` alike.

A customer often pays several invoices with one transfer. Two cases are
recognised, both only among the candidates matching may choose from
(Open, owing, in the line's currency, dated on or before the booking day):

* **named**: the remittance text names two or more open invoices (spaces,
  dashes and case ignored, as the ``InvoiceNumber`` rule compares). The
  money goes to them in the order their numbers appear in the text, each at
  most its open amount;
* **summed**: nothing or one invoice is named, the single-invoice decision
  (:func:`.matching.decide`) would send the line to review, the payer is
  one account (its IBAN is one the account is known by, else its name is
  the account name), and exactly one set of two or more of that account's
  open invoices adds up to the amount. Several such sets are ambiguous and
  go to review: a split is never guessed. The search looks at no more than
  :data:`MAX_SUMMED` invoices of the payer (the sets of a larger account are
  too many to be sure of uniqueness; those lines go to review).

What a named split leaves over (the payer paid more than the named
invoices owe) is the **remainder**: it stays a credit on the payer's account
(a free Payment balance), which the balance assignment job or a refund
settles later; the trace says so.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from itertools import combinations
from typing import Sequence

from engine.domain.money import ZERO

from .matching import Candidate, Decision, LineFacts, MatchingRules, compact, decide, excluded_reason

#: The most open invoices of one payer the summed split searches.
MAX_SUMMED = 12


def named_invoices(line: LineFacts, candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates whose number occurs in the remittance text, in the
    order of their first occurrence (a number that is the start of a longer
    named number, INV-1 in INV-12, does not count when the longer one is a
    candidate too)."""
    text = compact(line.remittance)
    if not text:
        return []
    keys = {compact(c.invoice): c for c in candidates}
    named = {key: text.find(key) for key in keys if key and key in text}
    found = [(position, keys[key]) for key, position in named.items()
             if not any(other != key and other.startswith(key) for other in named)]
    return [c for _, c in sorted(found, key=lambda item: (item[0], item[1].invoice))]


def payer_accounts(line: LineFacts, candidates: Sequence[Candidate]) -> set[int]:
    """The accounts the payer is: those known by the line's IBAN, else those
    whose name is the payer's name."""
    iban = compact(line.payer_iban)
    by_iban = {c.account_id for c in candidates if iban and iban in {compact(i) for i in c.ibans}}
    if by_iban:
        return by_iban
    name = compact(line.payer_name)
    return {c.account_id for c in candidates if name and compact(c.account_name) == name}


def _split(line: LineFacts, parts: list[tuple[Candidate, Decimal]], remainder: Decimal, how: str,
           base: Decision) -> Decision:
    listed = ", ".join(f"{c.invoice} {amount}" for c, amount in parts)
    reason = f"{how}: split over {len(parts)} invoices ({listed})"
    if remainder:
        reason += f"; {remainder} left as a credit on the account"
    return replace(base, outcome="split", invoice=parts[0][0].invoice, reason=reason,
                   parts=tuple((c.invoice, amount) for c, amount in parts), remainder=remainder)


def settle_decision(line: LineFacts, candidates: Sequence[Candidate], rules: MatchingRules) -> Decision:
    """What happens to a received line: a split over several invoices (see
    the module docstring), else the single-invoice decision of
    :func:`.matching.decide` (assign or review). The trace of the
    single-invoice decision is kept in either case."""
    base = decide(line, candidates, rules)
    eligible = [c for c in candidates if excluded_reason(line, c) is None]
    named = named_invoices(line, eligible)
    if len(named) >= 2:
        rest, parts = line.amount, []
        for candidate in named:
            if rest <= ZERO:
                break
            amount = min(rest, candidate.open_amount)
            parts.append((candidate, amount))
            rest -= amount
        if len(parts) >= 2:
            return _split(line, parts, rest, f"the text names {len(named)} open invoices", base)
        return base  # the amount covers the first named invoice only: the single decision says
    if base.outcome == "assign":
        return base
    accounts = payer_accounts(line, candidates)  # as CandidateIndex.payer_candidates finds them
    if len(accounts) != 1:
        return base
    account = accounts.pop()
    own = sorted((c for c in eligible if c.account_id == account), key=lambda c: (c.invoice_date or line.booking_date,
                                                                                   c.invoice))
    if len(own) < 2 or len(own) > MAX_SUMMED:
        return base
    found = [combo for size in range(2, len(own) + 1) for combo in combinations(own, size)
             if sum((c.open_amount for c in combo), ZERO) == line.amount]
    if len(found) == 1:
        return _split(line, [(c, c.open_amount) for c in found[0]], ZERO,
                      f"the amount is the sum of {len(found[0])} open invoices of the payer", base)
    if len(found) > 1:
        sets = "; ".join("+".join(c.invoice for c in combo) for combo in found[:3])
        return replace(base, reason=f"{base.reason}; {len(found)} sets of the payer's invoices add up to "
                                    f"{line.amount} ({sets}): ambiguous")
    return base


__all__ = ["MAX_SUMMED", "named_invoices", "payer_accounts", "settle_decision"]
