"""Balances against their booking details.

Booking is per money flow (domain-spec §4.5): a balance is booked once, when
it is created; assigning it to an invoice or splitting it books nothing, and
the split parts name their original in ``SplitFrom``. So the unit to check is
the money flow: the original balance and its split parts together.

With payment bookkeeping on (``CreateBookkeepingData`` and
``EnablePaymentBookingData``), a money flow of a booked type (``BOOKED_TYPES``
of ``engine.booking.balances``: Payment, Prepayment, Refund, Payout, Write
off, Dunning Fee) that is not a draft must move its counter account (the
debtor, or the collective account's contra account) by exactly its amount
(A301: also when it has no booking at all). The down payment and tax booked
for a payment on a progress invoice (Interim Payment, Interim Tax) must add
up to the amount received (A302). A money flow of a type that is never
booked must have no booking details (A303).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.booking.balances import BOOKED_TYPES
from engine.domain.money import ZERO

from .base import AuditRun, counter_movement, merge, posting_columns, stream, total
from .findings import Finding, finding

#: The booking types of a payment on a progress invoice that do not move its counter account (§5.6).
INTERIM_OF_PAYMENT = ("Interim Payment", "Interim Tax")

Rows = Sequence[Mapping[str, Any]]


def _streams(run: AuditRun):
    balances = run.table("Balance")
    details = run.table("BookingDetail")
    root = sa.func.coalesce(balances.c.splitfrom, balances.c.id)
    draft = sa.func.coalesce(balances.c.draft, sa.false())
    keys = [root.label("root"), balances.c.type, draft.label("draft")]
    yield stream(run.conn, sa.select(
        *keys, sa.func.sum(balances.c.amount).label("amount"), sa.func.count().label("n"),
        sa.func.min(balances.c.name).label("name"), sa.func.min(balances.c.currencyisocode).label("currency"),
    ).group_by(*keys).order_by(root))
    droot = sa.func.coalesce(balances.c.splitfrom, balances.c.id, details.c.balance)
    keys = [droot.label("root"), *posting_columns(details)]
    yield stream(run.conn, sa.select(
        *keys, sa.func.sum(details.c.amount).label("amount"), sa.func.count().label("n"),
    ).select_from(details.outerjoin(balances, balances.c.id == details.c.balance))
        .where(details.c.balance.is_not(None)).group_by(*keys).order_by(droot))


def check_balances(run: AuditRun) -> Iterator[Finding]:
    """A301, A302, A303 per money flow."""
    booked = run.ctx.settings.payment_bookings
    for root, (flow, bookings) in merge(lambda r: r["root"], *_streams(run)):
        run.report.count("balances", sum(int(r["n"]) for r in flow))
        yield from judge_flow(root, flow, bookings, booked=booked)


def judge_flow(root: int, flow: Rows, bookings: Rows, *, booked: bool) -> Iterator[Finding]:
    """The findings of one money flow (pure): ``flow`` its balance sums per
    type, ``bookings`` its booking detail sums per posting."""
    name = min((str(r["name"]) for r in flow if r["name"]), default=f"id {root}")
    types = sorted({str(r["type"]) for r in flow})
    amount = total(flow)
    own = [r for r in bookings if r["type"] not in INTERIM_OF_PAYMENT]
    interim = [r for r in bookings if r["type"] in INTERIM_OF_PAYMENT]
    if not flow:
        yield finding("A303", "balance", name, f"{sum(int(r['n']) for r in bookings)} booking detail(s) of a "
                      "balance that does not exist")
        return
    to_book = booked and any(t in BOOKED_TYPES for t in types) and not any(r["draft"] for r in flow)
    if to_book:
        moved = counter_movement(own)
        if moved != amount:
            currency = flow[0]["currency"] or ""
            yield finding("A301", "balance", name,
                          f"the {'/'.join(types)} balance{'s' if len(flow) > 1 else ''} of {amount} {currency} "
                          + ("has no booking details" if not own else "move the debtor by another amount"),
                          expected=amount, actual=moved,
                          hint="every money flow of a booked type is booked when it is created (§5.4)")
    elif own and not any(t in BOOKED_TYPES for t in types):
        yield finding("A303", "balance", name, f"a {'/'.join(types)} balance is never booked, but it has "
                      f"{sum(int(r['n']) for r in own)} booking detail(s)", expected=ZERO, actual=total(own))
    if interim:
        received = -amount
        booked_interim = sum((Decimal(r["amount"]) for r in interim), ZERO)
        if booked_interim != received:
            yield finding("A302", "balance", name, "the interim payment and interim tax of a payment on a "
                          "progress invoice differ from the amount received", expected=received,
                          actual=booked_interim)
