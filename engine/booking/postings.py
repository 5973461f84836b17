"""Posting direction of booking details and the booking invariants.

A booking detail is one posting: ``Amount`` moves from the debit account to
the credit account. Which of ``AccountNo`` and its counter account (the
contra account if set, else the business partner account) is debited depends
on the type (domain-spec §5.5); a negative amount swaps the sides. Every
journal, export and invariant check goes through :func:`sides`, so there is
one definition of direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:
    from .accounts import AccountChoice

# Types whose AccountNo is credited by a positive amount (the counter account is debited).
_CREDIT_ACCOUNT_NO = frozenset(
    {"Revenue", "Tax", "Deferred", "Interim Revenue", "Dunning Fee", "Dunning Income", "Refund", "Payout",
     "Interim Payment", "Interim Tax", "Unbilled Revenue", "Contra Account", "Clearing"}
)
# Types whose AccountNo is debited by a positive amount.
_DEBIT_ACCOUNT_NO = frozenset(
    {"Payment", "Prepayment", "Write-off", "IVA", "Interim Payment Clearing", "Provider Fee"}
)


class BookingInvariantError(AssertionError):
    """Bookings that do not balance: a bug, never written."""


@dataclass(frozen=True)
class Booking:
    """A booking detail to write (fields keyed by lower-case BookingDetail
    field), and the decision that chose its account (None for a reversal,
    which keeps the accounts of the booking it reverses)."""

    fields: dict
    choice: AccountChoice | None


@dataclass(frozen=True)
class BookingSet:
    """The booking details of one business event (an invoice, a balance, a
    reversal), as the booking writer takes them: it checks every set with
    :func:`check_postings` before it writes anything. ``debtor`` and
    ``receivable`` state what the event must do to its counter account (the
    debtor moves by exactly the invoice total or the balance amount)."""

    bookings: Sequence[Booking]
    debtor: str | None = None
    receivable: Decimal | None = None

    def check(self) -> None:
        """:func:`check_postings` of this set (raises BookingInvariantError)."""
        check_postings([booking.fields for booking in self.bookings], debtor=self.debtor,
                       receivable=self.receivable)


def counter_account(detail: Mapping[str, object]) -> str | None:
    return detail.get("contraaccountno") or detail.get("bpaccountno")  # type: ignore[return-value]


def sides(detail: Mapping[str, object]) -> tuple[str | None, str | None]:
    """(debit account, credit account) of a booking detail."""
    booking_type = str(detail.get("type"))
    account = detail.get("accountno")
    counter = counter_account(detail)
    if booking_type in _DEBIT_ACCOUNT_NO:
        debit, credit = account, counter
    elif booking_type in _CREDIT_ACCOUNT_NO:
        debit, credit = counter, account
    else:  # pragma: no cover - every picklist value is in one of the sets
        raise ValueError(f"no posting direction for booking type {booking_type!r}")
    amount = Decimal(detail.get("amount") or 0)
    if amount < 0:
        debit, credit = credit, debit
    return debit, credit  # type: ignore[return-value]


def debit_credit_flag(detail: Mapping[str, object]) -> str:
    """``Debit`` when AccountNo is the debited account, else ``Credit``."""
    debit, _ = sides(detail)
    return "Debit" if debit == detail.get("accountno") else "Credit"


def account_movements(details: Iterable[Mapping[str, object]]) -> dict[str, Decimal]:
    """Net movement per account (debit positive, credit negative)."""
    totals: dict[str, Decimal] = {}
    for detail in details:
        amount = abs(Decimal(detail.get("amount") or 0))
        debit, credit = sides(detail)
        totals[str(debit)] = totals.get(str(debit), Decimal(0)) + amount
        totals[str(credit)] = totals.get(str(credit), Decimal(0)) - amount
    return totals


def check_postings(details: Iterable[Mapping[str, object]], *, debtor: str | None = None,
                   receivable: Decimal | None = None) -> None:
    """The invariants of a set of booking details, checked before they are
    written (never optional):

    * every posting has a debit and a credit account, and they differ;
    * every amount has two decimals;
    * Σ debit == Σ credit over all accounts (double entry);
    * when ``debtor`` and ``receivable`` are given (an invoice's bookings):
      the debtor account moves by exactly the invoice's grand total.
    """
    details = list(details)
    for detail in details:
        debit, credit = sides(detail)
        if not debit or not credit:
            raise BookingInvariantError(f"{detail.get('type')} booking without {'debit' if not debit else 'credit'} account")
        if debit == credit:
            raise BookingInvariantError(f"{detail.get('type')} booking posts {debit} against itself")
        amount = Decimal(detail.get("amount") or 0)
        if amount.as_tuple().exponent != -2:
            raise BookingInvariantError(f"booking amount {amount} does not have two decimals")
    movements = account_movements(details)
    if sum(movements.values(), Decimal(0)) != 0:
        raise BookingInvariantError(f"debits and credits differ by {sum(movements.values(), Decimal(0))}")
    if debtor is not None and receivable is not None:
        moved = movements.get(debtor, Decimal(0))
        if moved != receivable:
            raise BookingInvariantError(f"debtor {debtor} moves by {moved}, the invoice total is {receivable}")
