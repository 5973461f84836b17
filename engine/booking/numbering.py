"""Invoice numbers (domain-spec §4.3): the counter of an invoice, its number
range, and the numbers of a batch drawn at once.

The counter is the template's credit counter (``CreditCounter``) for a
credit, else the business entity's counter, else the template's, else
``Default``. A number range per counter and reset period (and account, with
account counters) is advanced by a batch's whole count under the write lock
of the batch's transaction (:func:`reserve`), so numbers are unique and
gapless even with concurrent finalizations, and follow the drafts' id order.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Mapping, Protocol, Sequence

from engine.config.model import SettingRecord

if TYPE_CHECKING:  # the pattern functions serve validate-config, which needs no database layer
    import sqlalchemy as sa

    from engine.storage.context import Context

from .errors import FinalizeError, invoice_where

_MASK = re.compile(r"\{(0+)\}")
_PLACEHOLDER = re.compile(r"\[(Year|Month|Day|AccountNo)\]")


class Numbering(Protocol):
    """An invoice waiting for its number: its row (updated in place), the
    counter chosen for it and its invoice date."""

    invoice: dict
    counter: SettingRecord
    when: date


def choose_counter(ctx: Context, invoice: dict) -> SettingRecord:
    """The counter for an invoice (credit counter, business entity, template, Default)."""
    model = ctx.model
    template = model.setting_record("Template", str(invoice.get("template") or ""))
    entity = model.setting_record("BusinessEntity", str(invoice.get("businessentity") or ""))
    candidates = []
    if invoice.get("class") == "Credit" and template is not None:
        candidates.append(template.get("CreditCounter"))
    if entity is not None:
        candidates.append(entity.get("Counter"))
    if template is not None:
        candidates.append(template.get("Counter"))
    candidates.append("Default")
    for name in candidates:
        if name:
            counter = model.setting_record("Counter", str(name))
            if counter is not None:
                return counter
    raise FinalizeError("no Counter record found (not even 'Default')", where=invoice_where(invoice.get("name")),
                        hint="add a Counter record named Default")


def range_key(counter: SettingRecord, when: date, account_id: int | None) -> tuple[str, dict]:
    """The number range a counter uses for an invoice date: the counter name,
    the reset period's year/month/day and, with account counters, the account."""
    reset = str(counter.get("Reset") or "NONE").upper()
    parts = {"year": None, "month": None, "day": None}
    if reset in ("YEARLY", "MONTHLY", "DAILY"):
        parts["year"] = when.year
    if reset in ("MONTHLY", "DAILY"):
        parts["month"] = when.month
    if reset == "DAILY":
        parts["day"] = when.day
    account = account_id if counter.get("UseAccountCounters") else None
    key = "|".join(str(v) for v in (counter.name, parts["year"], parts["month"], parts["day"], account))
    return key, {**parts, "account": account}


def render_number(pattern: str, value: int, when: date, account_number: str | None) -> str:
    """Fill a counter pattern: [Year] [Month] [Day] [AccountNo] and the digit
    mask {00000} (a wider number is written in full, never truncated)."""
    mask = _MASK.search(pattern)
    if mask is None:
        raise FinalizeError(f"counter pattern {pattern!r} has no digit mask like {{00000}}",
                            hint="put a digit mask like {00000} into the counter's Pattern")

    def placeholder(match: re.Match) -> str:
        name = match.group(1)
        if name == "Year":
            return f"{when.year:04d}"
        if name == "Month":
            return f"{when.month:02d}"
        if name == "Day":
            return f"{when.day:02d}"
        return account_number or ""

    head = _PLACEHOLDER.sub(placeholder, pattern[: mask.start()])
    tail = _PLACEHOLDER.sub(placeholder, pattern[mask.end():])
    return f"{head}{value:0{len(mask.group(1))}d}{tail}"


#: What DATEV takes as Belegfeld 1 (the document number every booking of an
#: invoice carries): at most 36 of these characters, not starting with + or -
#: (DATEV-Format, Buchungsstapel; engine/exports/datev.py applies the same rule).
DATEV_NUMBER_LENGTH = 36
_DATEV_NUMBER = re.compile(r"[A-Za-z0-9$&%*+\-/]*")


def datev_number_problem(number: str) -> str | None:
    """Why an invoice number cannot be DATEV's Belegfeld 1, or None."""
    if len(number) > DATEV_NUMBER_LENGTH:
        return f"longer than {DATEV_NUMBER_LENGTH} characters"
    if number[:1] in ("+", "-"):
        return "starts with + or -"
    bad = sorted({c for c in number if not _DATEV_NUMBER.fullmatch(c)})
    if bad:
        return "contains " + ", ".join(repr(c) for c in bad) + " (only A-Z a-z 0-9 $ & % * + - /)"
    return None


def pattern_problems(pattern: str) -> list[str]:
    """What is wrong with a counter pattern before any number is drawn (the
    checks validate-config runs at the Counter record): no digit mask, or
    numbers that DATEV cannot take as Belegfeld 1, shown on a sample number
    (a 31 December date, account number 10001, the mask full of nines so the
    widest number is seen)."""
    mask = _MASK.search(pattern)
    if mask is None:
        return ["has no digit mask like {00000}: the counter's value has nowhere to go"]
    widest = 10 ** len(mask.group(1)) - 1
    sample = render_number(pattern, widest, date(2024, 12, 31), "10001")
    problem = datev_number_problem(sample)
    return [f"gives numbers like {sample!r} that DATEV cannot take as Belegfeld 1: {problem}"] if problem else []


def reserve(conn: sa.Connection, ctx: Context, counter: SettingRecord, when: date, account_id: int | None,
            count: int, last_invoice_id: int) -> int:
    """Advance the number range of (counter, period, account) by ``count``
    and return the first value reserved. The UPDATE takes the row lock
    (PostgreSQL) inside the batch's transaction (SQLite: ``BEGIN IMMEDIATE``),
    so two finalizations never draw the same value."""
    import sqlalchemy as sa

    from engine.storage.bulk import RowWriter

    obj = ctx.obj("NumberRange")
    table = ctx.table("NumberRange")
    key, parts = range_key(counter, when, account_id)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    bumped = conn.execute(
        sa.update(table)
        .where(table.c.rangekey == key)
        .values(counter=table.c.counter + count, targetid=str(last_invoice_id), timestamp=now, lastmodifieddate=now)
        .returning(table.c.counter)
    ).scalar_one_or_none()
    if bumped is not None:
        return int(bumped) - count + 1
    first = int(counter.get("StartCount") or 0) + 1
    RowWriter(conn, obj).insert(
        [
            {
                "name": key[:80],
                "countername": counter.name,
                "rangekey": key,
                "account": parts["account"],
                "counter": Decimal(first + count - 1),
                "year": Decimal(parts["year"]) if parts["year"] else None,
                "month": Decimal(parts["month"]) if parts["month"] else None,
                "day": Decimal(parts["day"]) if parts["day"] else None,
                "targetid": str(last_invoice_id),
                "timestamp": now,
            }
        ]
    )
    return first


def draw_numbers(conn: sa.Connection, ctx: Context, pending: Sequence[Numbering],
                 accounts: Mapping[int, Mapping[str, object]]) -> None:
    """Number every pending invoice: one reservation per number range, values
    handed out in id order; sets name/status/dates on the invoice dicts."""
    import sqlalchemy as sa

    by_range: dict[str, list[Numbering]] = {}
    for item in pending:
        key = range_key(item.counter, item.when, item.invoice["account"])[0]
        by_range.setdefault(key, []).append(item)
    table = ctx.table("NumberRange")
    last_names = []
    for key, items in by_range.items():
        first = items[0]
        value = reserve(conn, ctx, first.counter, first.when, first.invoice["account"], len(items),
                        items[-1].invoice["id"])
        pattern = str(first.counter.get("Pattern") or "{00000}")
        for offset, item in enumerate(items):
            invoice = item.invoice
            account_number = accounts.get(invoice["account"], {}).get("accountnumber")
            number = render_number(pattern, value + offset, item.when, account_number)
            grand_total = invoice.get("grandtotal") or Decimal("0.00")
            invoice.update(
                name=number, status="Open" if grand_total != 0 else "Paid", date=item.when,
                paymentduedate=item.when + timedelta(days=int(invoice.get("paymentdue") or 0)),
                balance=grand_total, grandtotal=grand_total,
            )
        last_names.append({"key": key, "last": items[-1].invoice["name"]})
    conn.execute(sa.update(table).where(table.c.rangekey == sa.bindparam("key"))
                 .values(lastgeneratedname=sa.bindparam("last")), last_names)
