"""What every audit check shares: the run it works in, streamed queries,
merging ordered streams, and posting movements.

Checks read the database set-based: the database sums (``GROUP BY``) and the
check compares the sums. Where a check needs several sums of the same things
(an invoice's lines, balances and bookings), it streams each of them ordered
by the same key and walks them side by side (:func:`merge`), so memory stays
flat however many invoices there are.

Posting direction comes only from :func:`engine.booking.postings.sides`.
Booking details are summed per (type, account, contra account, business
partner account, sign of the amount): the details of one such group are
posted alike, so the group's sum can go through ``sides`` like one detail
(:func:`posting_columns`, :func:`movement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from itertools import groupby
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import sqlalchemy as sa

from engine.booking.postings import counter_account, sides
from engine.domain.money import ZERO
from engine.storage.context import Context

from .findings import AuditReport

#: Rows fetched per round trip while streaming (a server-side cursor on PostgreSQL).
STREAM_BATCH = 2_000
#: Invoice statuses before finalization: no number, no balance, no booking.
UNFINALIZED = ("Draft", "Pre-Draft", "Pre-Open")


@dataclass
class AuditRun:
    """One audit: the read-only connection, the runtime context, the files
    to reconcile, and the report the checks add their tables and counts to."""

    conn: sa.Connection
    ctx: Context
    report: AuditReport
    datev_files: tuple[Path, ...] = ()
    sepa_files: tuple[Path, ...] = ()

    def table(self, name: str) -> sa.Table:
        return self.ctx.table(name)


def stream(conn: sa.Connection, query: sa.Select, *, batch: int = STREAM_BATCH) -> Iterator[Mapping[str, Any]]:
    """The rows of ``query`` as mappings, fetched ``batch`` at a time, never all at once."""
    result = conn.execute(query.execution_options(yield_per=batch))
    try:
        for row in result:
            yield row._mapping
    finally:
        result.close()


def merge(key: Callable[[Mapping[str, Any]], Any], *streams: Iterable[Mapping[str, Any]]
          ) -> Iterator[tuple[Any, list[list[Mapping[str, Any]]]]]:
    """Walk streams ordered by ``key`` side by side: for every key present in
    any of them, ``(key, [rows of stream 0, rows of stream 1, ...])``. Each
    stream must be sorted by ``key`` ascending (ids: the same order in SQL
    and Python)."""
    grouped = [groupby(s, key=key) for s in streams]
    heads: list[tuple[Any, list] | None] = [None] * len(grouped)

    def advance(index: int) -> None:
        following = next(grouped[index], None)
        heads[index] = (following[0], list(following[1])) if following is not None else None

    for index in range(len(grouped)):
        advance(index)
    while True:
        present = [head[0] for head in heads if head is not None]
        if not present:
            return
        current = min(present)
        rows: list[list[Mapping[str, Any]]] = []
        for index, head in enumerate(heads):
            if head is not None and head[0] == current:
                rows.append(head[1])
                advance(index)
            else:
                rows.append([])
        yield current, rows


def sign_of(amount: sa.ColumnElement) -> sa.ColumnElement:
    """-1 for a negative amount, else 1: part of every grouping of booking
    details, because the sign decides the posting direction."""
    return sa.case((amount < 0, -1), else_=1)


def posting_columns(details: sa.Table) -> list[sa.ColumnElement]:
    """The columns booking details are grouped by before their sums go
    through ``sides``: type, accounts and the sign of the amount."""
    return [details.c.type, details.c.accountno, details.c.contraaccountno, details.c.bpaccountno,
            sign_of(details.c.amount).label("sign")]


def posting(row: Mapping[str, Any], amount: Decimal | None = None) -> dict[str, Any]:
    """A grouped row as the detail mapping ``sides`` reads."""
    return {"type": row["type"], "accountno": row["accountno"], "contraaccountno": row["contraaccountno"],
            "bpaccountno": row["bpaccountno"], "amount": row["amount"] if amount is None else amount}


def movement(row: Mapping[str, Any], account: str | None) -> Decimal:
    """How a grouped row (or one detail) moves ``account``: + debit, - credit, 0 when
    it does not touch it."""
    if not account:
        return ZERO
    amount = abs(Decimal(row["amount"] or 0))
    debit, credit = sides(posting(row))
    if debit == account and credit != account:
        return amount
    if credit == account and debit != account:
        return -amount
    return ZERO


def debtor_movement(rows: Iterable[Mapping[str, Any]]) -> Decimal:
    """How grouped rows move their business partner account (the debtor)."""
    return sum((movement(row, row["bpaccountno"]) for row in rows), ZERO)


def counter_movement(rows: Iterable[Mapping[str, Any]]) -> Decimal:
    """How grouped rows move their counter account (contra, else business
    partner account): what a balance's own bookings must move by its amount."""
    return sum((movement(row, counter_account(posting(row))) for row in rows), ZERO)


def total(rows: Sequence[Mapping[str, Any]], column: str = "amount", **where: object) -> Decimal:
    """Σ ``column`` of the rows whose values match ``where``."""
    return sum((Decimal(r[column] or 0) for r in rows if all(r.get(k) == v for k, v in where.items())), ZERO)
