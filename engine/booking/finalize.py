"""Finalization: draft invoices become legally binding, numbered invoices.

Drafts are finalized in batches, each batch one transaction, set-based
(domain-spec §4.2, §4.3): the batch's invoices, lines and accounts are read
with one query each, everything is decided in memory, and the writes are a
handful of bulk statements. Per invoice:

1. the invoice date is kept, or set to the finalization date;
2. the payment due date is the invoice date plus the payment-due days;
3. the final number is drawn from the invoice's counter: the counter of the
   template for credits (``CreditCounter``) when the invoice is a credit, else
   the business entity's counter, else the template's, else ``Default``. A
   number range per counter and reset period (and account, with account
   counters) is advanced by the whole batch's count under the write lock of
   the batch's transaction, so numbers are unique and gapless even with
   concurrent finalizations, and follow the drafts' id order;
4. with bookkeeping on, every line gets its G/L account (while the lines are
   still editable) and the booking details are written (``invoice_bookings``);
5. the status becomes ``Open`` (``Paid`` at a zero total) and the invoice
   balance (type ``Invoice``, the grand total) is created.

An invoice that cannot be finalized (not a draft, no lines, totals that do
not match its lines, no account for a booking) is reported and left a draft;
it draws no number, so the others stay gapless. Everything is decided before
the first write, so a failing invoice never leaves half a batch behind.

Cancellation and final invoices, which change other invoices too, are
finalized one per transaction, in their id order among the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable, Iterator, Sequence

import sqlalchemy as sa

from engine.billing.build import InvariantError, check_invoice
from engine.config.model import SettingRecord
from engine.domain.batching import chunks
from engine.storage.bulk import RowWriter, fetch_records
from engine.storage.retry import run_in_transaction

from .accounts import AccountChoice, AccountResolver
from .invoices import Booking, BookingError, invoice_bookings, line_fields
from .write import load_accounts, write_bookings
from engine.storage.context import Context

_MASK = re.compile(r"\{(0+)\}")
_PLACEHOLDER = re.compile(r"\[(Year|Month|Day|AccountNo)\]")


class FinalizeError(ValueError):
    """An invoice cannot be finalized (message for the user)."""


@dataclass(frozen=True)
class Finalized:
    invoice_id: int
    draft_name: str
    number: str
    date: date
    grand_total: Decimal


@dataclass
class FinalizeReport:
    finalized: list[Finalized] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (invoice name, message)


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
    raise FinalizeError("no Counter record found (not even 'Default')")


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
        raise FinalizeError(f"counter pattern {pattern!r} has no digit mask like {{00000}}")

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


def _reserve(conn: sa.Connection, ctx: Context, counter: SettingRecord, when: date, account_id: int | None,
             count: int, last_invoice_id: int) -> int:
    """Advance the number range of (counter, period, account) by ``count``
    and return the first value reserved. The UPDATE takes the row lock
    (PostgreSQL) inside the batch's transaction (SQLite: ``BEGIN IMMEDIATE``),
    so two finalizations never draw the same value."""
    model = ctx.model
    obj = model.require("NumberRange")
    table = ctx.metadata.tables[obj.table_name]
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


def _draw_numbers(conn: sa.Connection, ctx: Context, pending: list["_Pending"], accounts: dict[int, dict]) -> None:
    """Number every pending invoice: one reservation per number range, values
    handed out in id order; sets name/status/dates on the invoice dicts."""
    model = ctx.model
    by_range: dict[str, list[_Pending]] = {}
    for item in pending:
        key = range_key(item.counter, item.when, item.invoice["account"])[0]
        by_range.setdefault(key, []).append(item)
    table = ctx.metadata.tables[model.require("NumberRange").table_name]
    last_names = []
    for key, items in by_range.items():
        first = items[0]
        value = _reserve(conn, ctx, first.counter, first.when, first.invoice["account"], len(items),
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


#: Line fields whose values a booking detail takes, or that decide it: lines
#: alike in all of them (and in the G/L criteria and copied custom fields)
#: book identically, so the database sums them before Python sees them.
_GROUP_FIELDS = ("taxcode", "taxrate", "appliedtaxrule", "center", "costobject", "billingpractice", "subinvoice",
                 "isdeduction")
_SUMMED = ("postotalnet", "postotaltax", "postotalgross")
_NAME_SEPARATOR = "\x1e"  # between the names of a group's lines; never in a line name


def _line_groups(conn: sa.Connection, ctx: Context, ids: Sequence[int]) -> dict[int, list[dict]]:
    """The given invoices' lines, summed in SQL per invoice and alike lines.

    Each group is a line-shaped dict (the grouping fields, the summed
    amounts) plus ``_names`` (its lines' names in line order), ``_count`` and
    ``_unbalanced`` (how many of its lines break gross == net + tax). Groups
    come in the order of their first line. Booking treats a group like one
    line, which gives the same booking details as the lines one by one: they
    aggregate by these very fields (``invoice_bookings``).
    """
    model = ctx.model
    line_table = ctx.metadata.tables[model.require("InvoiceLineItem").table_name]
    c = line_table.c
    keys = sorted(set(_GROUP_FIELDS) | (line_fields(ctx, AccountResolver.for_model(ctx))
                                        - set(_SUMMED) - {"id", "name", "invoice", "sequence", "glaccount",
                                                          "glaccount2", "glaccountrule"}))
    group_by = [c.invoice, *(c[key] for key in keys)]
    label = (sa.cast(sa.func.coalesce(c.sequence, 0), sa.String) + "|" + sa.cast(c.id, sa.String) + "|"
             + sa.func.coalesce(c.name, sa.cast(c.id, sa.String)))
    unbalanced = sa.case((c.postotalgross != c.postotalnet + c.postotaltax, 1), else_=0)
    columns = [
        *group_by,
        *(sa.type_coerce(sa.func.sum(c[key]), c[key].type).label(key) for key in _SUMMED),
        sa.func.count().label("_count"),
        sa.func.sum(unbalanced).label("_unbalanced"),
        sa.func.min(c.sequence).label("_first_sequence"),
        sa.func.min(c.id).label("_first_id"),
        sa.func.aggregate_strings(label, _NAME_SEPARATOR).label("_labels"),
    ]
    grouped: dict[int, list[dict]] = {}
    for chunk in chunks(ids, _IN_CHUNK):
        query = (sa.select(*columns).where(c.invoice.in_(chunk)).group_by(*group_by)
                 .order_by(c.invoice, sa.func.min(c.sequence), sa.func.min(c.id)))
        for group in fetch_records(conn, query):
            group["_names"] = _ordered_names(group.pop("_labels"))
            grouped.setdefault(group["invoice"], []).append(group)
    return grouped


def _ordered_names(labels: str) -> list[str]:
    """``sequence|id|name`` labels (aggregated in no particular order) -> the
    names in line order."""
    parts = [label.split("|", 2) for label in labels.split(_NAME_SEPARATOR)]
    parts.sort(key=lambda part: (int(part[0]), int(part[1])))
    return [part[2] for part in parts]


def _lines_of(conn: sa.Connection, ctx: Context, ids: Sequence[int]) -> dict[int, list[dict]]:
    """The lines of the given invoices, one by one, per invoice in line order."""
    model = ctx.model
    line_table = ctx.metadata.tables[model.require("InvoiceLineItem").table_name]
    grouped: dict[int, list[dict]] = {}
    for chunk in chunks(ids, _IN_CHUNK):
        query = (sa.select(line_table).where(line_table.c.invoice.in_(chunk))
                 .order_by(line_table.c.invoice, line_table.c.sequence, line_table.c.id))
        for line in fetch_records(conn, query):
            grouped.setdefault(line["invoice"], []).append(line)
    return grouped


def _accounts(conn: sa.Connection, ctx: Context, ids: set[int], today: date, book: bool) -> dict[int, dict]:
    """The invoices' accounts: the account number (number patterns), and with
    bookkeeping the evaluated formula fields (debtor, VAT id) too."""
    model = ctx.model
    if book:
        return load_accounts(conn, ctx, ids, today)
    table = ctx.metadata.tables[model.require("Account").table_name]
    found: dict[int, dict] = {}
    for chunk in chunks(sorted(ids), _IN_CHUNK):
        for row in conn.execute(sa.select(table.c.id, table.c.accountnumber).where(table.c.id.in_(chunk))):
            found[row.id] = {"id": row.id, "accountnumber": row.accountnumber}
    return found


def _sub_types(conn: sa.Connection, ctx: Context, lines_of: dict[int, list[dict]]) -> dict[int, str]:
    """Types of the sub invoices that deduction lines refer to."""
    model = ctx.model
    sub_ids = sorted({int(line["subinvoice"]) for lines in lines_of.values() for line in lines if line.get("subinvoice")})
    if not sub_ids:
        return {}
    invoice_table = ctx.metadata.tables[model.require("Invoice").table_name]
    found: dict[int, str] = {}
    for chunk in chunks(sub_ids, _IN_CHUNK):
        found.update(conn.execute(sa.select(invoice_table.c.id, invoice_table.c.type)
                                  .where(invoice_table.c.id.in_(chunk))).all())
    return found


def _assign_gl_accounts(resolver: AccountResolver, invoice: dict, lines: list[dict]) -> list[AccountChoice]:
    """Each line's G/L accounts and the rule that chose them (§4.2 d), kept
    on the line dicts; the choices are returned for the revenue bookings,
    which use the same decision."""
    choices = resolver.gl_accounts(invoice, lines)
    for line, choice in zip(lines, choices):
        winner = choice.decision.winner if choice.decision else None
        line["glaccount"] = choice.account
        line["glaccount2"] = winner.get("GLAccount2") if winner else None
        line["glaccountrule"] = choice.rule
    return choices


def _write_gl_accounts(conn: sa.Connection, ctx: Context, pending: list["_Pending"]) -> None:
    """Store the lines' G/L accounts, set-based: one UPDATE per distinct
    assignment and chunk of invoices whose lines all share it (the common
    case), else one per line group, matching its G/L criterion fields.
    Written before the invoices leave Draft: finalized lines are immutable."""
    model = ctx.model
    line_table = ctx.metadata.tables[model.require("InvoiceLineItem").table_name]
    criteria = sorted(AccountResolver.for_model(ctx).line_fields())
    whole_invoices: dict[tuple, list[int]] = {}
    for item in pending:
        values = {(group["glaccount"], group["glaccount2"], group["glaccountrule"]) for group in item.lines}
        if len(values) == 1:
            whole_invoices.setdefault(values.pop(), []).append(item.invoice["id"])
            continue
        for group in item.lines:
            condition = sa.and_(line_table.c.invoice == item.invoice["id"],
                                *(line_table.c[key].is_not_distinct_from(group[key]) for key in criteria))
            conn.execute(sa.update(line_table).where(condition).values(
                glaccount=group["glaccount"], glaccount2=group["glaccount2"], glaccountrule=group["glaccountrule"]))
    for (gl, gl2, rule), invoice_ids in whole_invoices.items():
        for chunk in chunks(invoice_ids, _IN_CHUNK):
            conn.execute(sa.update(line_table).where(line_table.c.invoice.in_(chunk))
                         .values(glaccount=gl, glaccount2=gl2, glaccountrule=rule))


def _open_invoices(conn: sa.Connection, ctx: Context, pending: list["_Pending"], now: datetime) -> None:
    model = ctx.model
    invoice_table = ctx.metadata.tables[model.require("Invoice").table_name]
    conn.execute(
        sa.update(invoice_table).where(invoice_table.c.id == sa.bindparam("invoice_id"))
        .values(name=sa.bindparam("name"), status=sa.bindparam("status"), date=sa.bindparam("date"),
                paymentduedate=sa.bindparam("paymentduedate"), balance=sa.bindparam("balance"),
                lastmodifieddate=now),
        [
            {"invoice_id": item.invoice["id"], "name": item.invoice["name"], "status": item.invoice["status"],
             "date": item.when, "paymentduedate": item.invoice["paymentduedate"], "balance": item.invoice["balance"]}
            for item in pending
        ],
    )


def _bookings(ctx: Context, resolver: AccountResolver, item: "_Pending", account: dict,
              sub_types: dict[int, str], gl_choices: list[AccountChoice]) -> list[Booking]:
    """The invoice's booking details, decided before anything is written
    (``invoiceno`` is filled in once the number is drawn)."""
    invoice = item.invoice
    provisional = {**invoice, "date": item.when}
    provenance = {"run": str(invoice.get("invoicerun") or ""), "confighash": ctx.config_hash}
    try:
        return invoice_bookings(ctx, resolver, provisional, item.lines, account, sub_types, provenance,
                                gl_choices=gl_choices)
    except BookingError as error:
        raise FinalizeError(str(error)) from None


# Invoices per batch, and lines per batch: together they bound the memory a
# batch holds (its lines, as dicts) and the length of one transaction.
BATCH_INVOICES = 1000
BATCH_LINES = 20_000
_IN_CHUNK = 900  # ids per IN (...) list: below every backend's parameter limit


class StageError(FinalizeError):
    """A finalization stage cannot handle one invoice: the batch is rolled
    back and finalized again without it (it stays a draft)."""

    def __init__(self, invoice_id: int, message: str):
        super().__init__(message)
        self.invoice_id = invoice_id


#: A later stage of finalization, supplied by a higher layer (write-offs,
#: cash-management entries): called once per batch, inside the batch's
#: transaction, after the invoices were numbered, opened and booked, with the
#: finalized invoice rows (dicts keyed by lower-case field, as written). It
#: raises :class:`StageError` for an invoice it cannot handle.
FinalizationStage = Callable[[sa.Connection, Context, list[dict]], None]


def finalize_invoices(engine: sa.Engine, ctx: Context, invoice_ids: Sequence[int], *,
                      today: date | None = None, stages: Sequence[FinalizationStage] = ()) -> FinalizeReport:
    """Finalize the given drafts in id order, in batches (one transaction
    each), running ``stages`` in each batch after the bookings."""
    report = FinalizeReport()
    today = today or date.today()
    with engine.connect() as conn:
        shapes = _shapes(conn, ctx, sorted(set(invoice_ids)))
    for batch in _batches(shapes):
        while batch:
            try:
                # One transaction per batch, run again from the start when PostgreSQL aborts it for a lost race.
                # REPEATABLE READ turns a concurrent finalization of the same drafts (or a concurrent draw from
                # the same number range) into such an abort instead of a second number; SQLite serializes anyway.
                outcome = run_in_transaction(engine, lambda conn: _finalize_set(conn, ctx, batch, today, stages),
                                             isolation_level="REPEATABLE READ")
            except _SoloFailure as failure:  # raised inside a batch of one: its writes are rolled back
                outcome = FinalizeReport(failures=[(str(batch[0]), str(failure))])
            except StageError as failure:  # rolled back: again without the invoice the stage refused
                report.failures.append((str(failure.invoice_id), str(failure)))
                batch = [i for i in batch if i != failure.invoice_id]
                continue
            # Only a committed batch reaches the report.
            report.finalized.extend(outcome.finalized)
            report.failures.extend(outcome.failures)
            break
    report.failures.sort(key=lambda failure: int(failure[0]) if failure[0].isdigit() else 0)
    return report


@dataclass(frozen=True)
class _Shape:
    invoice_id: int
    type: str | None
    line_count: int


def _shapes(conn: sa.Connection, ctx: Context, ids: list[int]) -> list[_Shape]:
    """Each requested id with its invoice type and line count (unknown ids
    too: the batch reports them)."""
    model = ctx.model
    tables = ctx.metadata.tables
    invoice_table = tables[model.require("Invoice").table_name]
    line_table = tables[model.require("InvoiceLineItem").table_name]
    types: dict[int, str | None] = {}
    counts: dict[int, int] = {}
    for chunk in chunks(ids, _IN_CHUNK):
        types.update(conn.execute(sa.select(invoice_table.c.id, invoice_table.c.type)
                                  .where(invoice_table.c.id.in_(chunk))).all())
        counts.update(conn.execute(sa.select(line_table.c.invoice, sa.func.count())
                                   .where(line_table.c.invoice.in_(chunk)).group_by(line_table.c.invoice)).all())
    return [_Shape(i, types.get(i), counts.get(i, 0)) for i in ids]


def _batches(shapes: list[_Shape]) -> Iterator[list[int]]:
    """Consecutive ids grouped into batches; a cancellation or final invoice
    is a batch of its own, so a failure there rolls back only itself."""
    batch: list[int] = []
    lines = 0
    for shape in shapes:
        if shape.type in _SOLO_TYPES:
            if batch:
                yield batch
                batch, lines = [], 0
            yield [shape.invoice_id]
            continue
        if batch and (len(batch) >= BATCH_INVOICES or lines + shape.line_count > BATCH_LINES):
            yield batch
            batch, lines = [], 0
        batch.append(shape.invoice_id)
        lines += shape.line_count
    if batch:
        yield batch


_SOLO_TYPES = ("Cancelation", "Final")


class _SoloFailure(Exception):
    """A solo invoice failed after writing: its transaction must roll back."""




@dataclass
class _Pending:
    """An invoice that passed every check and waits for its number."""

    invoice: dict
    lines: list[dict]  # its line groups (see _line_groups)
    when: date
    counter: SettingRecord
    bookings: list = field(default_factory=list)
    draft_name: str = ""


def _finalize_set(conn: sa.Connection, ctx: Context, ids: list[int], today: date,
                  stages: Sequence[FinalizationStage] = ()) -> FinalizeReport:
    model = ctx.model
    outcome = FinalizeReport()
    tables = ctx.metadata.tables
    invoice_table = tables[model.require("Invoice").table_name]
    settings = model.hierarchy_default("GlobalSettings")
    book = bool(settings is not None and settings.get("CreateBookkeepingData"))

    invoices = {row["id"]: dict(row) for row in conn.execute(
        sa.select(invoice_table).where(invoice_table.c.id.in_(ids))).mappings()}
    lines_of = _line_groups(conn, ctx, ids)
    accounts = _accounts(conn, ctx, {inv["account"] for inv in invoices.values() if inv.get("account")}, today, book)
    sub_types = _sub_types(conn, ctx, lines_of) if book else {}
    resolver = AccountResolver.for_model(ctx) if book else None
    counters: dict[tuple, SettingRecord] = {}

    pending: list[_Pending] = []
    for invoice_id in ids:
        invoice = invoices.get(invoice_id)
        lines = lines_of.get(invoice_id, [])
        try:
            if invoice is None:
                raise FinalizeError(f"no invoice with id {invoice_id}")
            if invoice["status"] != "Draft":
                raise FinalizeError(f"{invoice['name']} is {invoice['status']}, not a draft")
            if not lines:
                raise FinalizeError(f"{invoice['name']} has no lines")
            try:
                # Drafts are editable: re-check them before they become binding.
                check_invoice(invoice, lines)
                unbalanced = sum(int(group["_unbalanced"] or 0) for group in lines)
                if unbalanced:
                    raise InvariantError(f"{unbalanced} line(s) where gross != net + tax")
            except InvariantError as error:
                raise FinalizeError(f"{invoice['name']}: {error}") from None
            counter_key = (invoice.get("template"), invoice.get("businessentity"), invoice.get("class"))
            counter = counters.get(counter_key)
            if counter is None:
                counter = counters[counter_key] = choose_counter(ctx, invoice)
            item = _Pending(invoice, lines, invoice.get("date") or today, counter, draft_name=invoice["name"])
            if book:
                gl_choices = _assign_gl_accounts(resolver, invoice, lines)
                if invoice.get("type") != "Cancelation":
                    item.bookings = _bookings(ctx, resolver, item, accounts.get(invoice["account"], {}), sub_types,
                                              gl_choices)
        except FinalizeError as error:
            outcome.failures.append((str(invoice_id), str(error)))
            continue
        pending.append(item)
    if not pending:
        return outcome

    _draw_numbers(conn, ctx, pending, accounts)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if book:
        _write_gl_accounts(conn, ctx, pending)
    _open_invoices(conn, ctx, pending, now)
    RowWriter(conn, model.require("Balance")).insert([
        {
            "account": item.invoice["account"], "invoice": item.invoice["id"], "type": "Invoice",
            "amount": item.invoice["grandtotal"], "date": item.when,
            "currencyisocode": item.invoice.get("currencyisocode"), "confighash": ctx.config_hash,
        }
        for item in pending
    ])
    bookings = []
    for item in pending:
        invoice = item.invoice
        if invoice.get("type") == "Cancelation":
            from .cancel import CancelError, finalize_cancellation

            try:
                finalize_cancellation(conn, ctx, invoice, item.when, book)
            except CancelError as error:
                raise _SoloFailure(str(error)) from None
        elif invoice.get("type") == "Final":
            try:
                _settle_sub_invoices(conn, ctx, invoice, item.when)
            except FinalizeError as error:
                raise _SoloFailure(str(error)) from None
        for booking in item.bookings:
            booking.fields["invoiceno"] = invoice["name"]
        bookings.extend(item.bookings)
    if bookings:
        write_bookings(conn, ctx, bookings)
    for stage in stages:
        stage(conn, ctx, [item.invoice for item in pending])
    outcome.finalized.extend(
        Finalized(item.invoice["id"], item.draft_name, item.invoice["name"], item.when, item.invoice["grandtotal"])
        for item in pending
    )
    return outcome


def _settle_sub_invoices(conn: sa.Connection, ctx: Context, invoice: dict, when: date) -> None:
    """Link the deducted sub invoices to the final invoice, and clear what is
    still unpaid on its progress invoices: a Clearing balance (reason Final
    Invoice) settles the sub invoice, and its interim revenue is reversed by
    the same amount (domain-spec §3.8 step 5, §5.6)."""
    model = ctx.model
    tables = ctx.metadata.tables
    invoice_table = tables[model.require("Invoice").table_name]
    line_table = tables[model.require("InvoiceLineItem").table_name]
    sub_ids = sorted({
        int(r.subinvoice) for r in conn.execute(
            sa.select(line_table.c.subinvoice).where(line_table.c.invoice == invoice["id"]).where(line_table.c.subinvoice.is_not(None))
        )
    })
    key = invoice.get("subinvoiceassignmentkey")
    if key:
        # Progress invoices with nothing received have no deduction line but belong to the project too.
        sub_ids = sorted(set(sub_ids) | {
            r.id for r in conn.execute(
                sa.select(invoice_table.c.id)
                .where(invoice_table.c.subinvoiceassignmentkey == key)
                .where(invoice_table.c.account == invoice["account"])
                .where(invoice_table.c.type.in_(("Partial", "Progress")))
                .where(invoice_table.c.status.in_(("Open", "Paid")))
                .where(invoice_table.c.finalinvoice.is_(None))
            )
        })
    if not sub_ids:
        return
    conn.execute(sa.update(invoice_table).where(invoice_table.c.id.in_(sub_ids)).values(finalinvoice=invoice["id"]))
    settings = model.hierarchy_default("GlobalSettings")
    book = bool(settings is not None and settings.get("CreateBookkeepingData"))
    for sub in conn.execute(sa.select(invoice_table).where(invoice_table.c.id.in_(sub_ids))).mappings().all():
        open_amount = sub["balance"] or Decimal("0.00")
        if sub["type"] != "Progress" or open_amount <= 0:
            continue
        RowWriter(conn, model.require("Balance")).insert([{
            "account": sub["account"], "invoice": sub["id"], "relatedinvoice": invoice["id"], "type": "Clearing",
            "clearingreason": "Final Invoice", "amount": -open_amount, "date": when,
            "currencyisocode": sub.get("currencyisocode"), "confighash": ctx.config_hash,
        }])
        conn.execute(sa.update(invoice_table).where(invoice_table.c.id == sub["id"])
                     .values(balance=Decimal("0.00"), status="Paid", paymentdate=when))
        if book:
            _reverse_interim_revenue(conn, ctx, dict(sub), open_amount, when, invoice)


def _reverse_interim_revenue(conn: sa.Connection, ctx: Context, sub: dict, amount: Decimal, when: date,
                             final: dict) -> None:
    from engine.booking.accounts import AccountResolver
    from engine.booking.invoices import (
        Booking,
        BookingError,
        _collective,
        _common_fields,
        copied_fields,
        custom_values,
    )
    from engine.booking.postings import check_postings, debit_credit_flag
    from engine.booking.write import load_account, write_bookings

    account = load_account(conn, ctx, sub["account"], when)
    debtor = sub.get("debtorno__c") or account.get("on_debtorno__c")
    lines = _lines_of(conn, ctx, [sub["id"]]).get(sub["id"], [])
    taxed = next((line for line in lines if line.get("taxcode")), {})
    tax_code = taxed.get("taxcode")
    context = {"taxcode": tax_code, "businessentity": sub.get("businessentity"), "region": sub.get("region")}
    try:
        choice = _collective(AccountResolver(ctx), "Interim Revenue", context, sub)
    except BookingError as error:
        raise FinalizeError(str(error)) from None
    fields = {
        **_common_fields(sub, account, str(debtor), {"run": "", "confighash": ctx.config_hash}),
        "type": "Interim Revenue", "amount": -amount, "accountno": choice.account, "contraaccountno": choice.contra,
        "accountrule": choice.rule, "taxcode": tax_code, "taxrate": taxed.get("taxrate"),
        "appliedtaxrule": taxed.get("appliedtaxrule"), "isgross": True, "bookingdate": when,
        "invoicelineitems": f"cleared by final invoice {final.get('name')}",
        **dict(custom_values(copied_fields(ctx), sub, None)),
    }
    fields["debitcredit"] = debit_credit_flag(fields)
    check_postings([fields])
    write_bookings(conn, ctx, [Booking(fields, choice)])
