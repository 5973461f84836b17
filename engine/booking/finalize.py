"""Finalization: draft invoices become legally binding, numbered invoices.

Drafts are finalized in batches, each batch one transaction, set-based
(domain-spec §4.2, §4.3): the batch's invoices, lines and accounts are read
with one query each, everything is decided in memory, and the writes are a
handful of bulk statements. Per invoice:

1. the invoice date is kept, or set to the finalization date;
2. the payment due date is the invoice date plus the payment-due days;
3. the final number is drawn from the invoice's counter (:mod:`engine.booking.numbering`):
   unique and gapless even with concurrent finalizations, in the drafts' id order
   (final invoices after the others: they settle sub invoices that may be among the drafts);
4. with bookkeeping on, every line gets its G/L account (while the lines are
   still editable) and the booking details are written (``invoice_bookings``;
   the booking writer checks each invoice's set: the debtor moves by exactly
   the grand total);
5. the status becomes ``Open`` (``Paid`` at a zero total) and the invoice
   balance (type ``Invoice``, the grand total) is created.

An invoice that cannot be finalized (not a draft, no lines, totals that do
not match its lines, no account for a booking) is reported and left a draft;
it draws no number, so the others stay gapless. Everything is decided before
the first write, so a failing invoice never leaves half a batch behind.

Cancellation and final invoices change other invoices too
(:func:`engine.booking.cancel.finalize_cancellation`,
:func:`engine.booking.final_invoices.settle_final_invoices`): a cancellation
is finalized in a transaction of its own, a final invoice in a batch with no
other invoice of its account (:func:`_batches`); either one failing after
writing rolls its batch back, which runs again without it. Later stages
(write-offs, cash-management entries) come from the composition root
(``engine/project.py``) as :data:`FinalizationStage` functions.

Failures are :class:`Failure` values of the report: ``(invoice id, message)``
with the runtime problem behind them (:attr:`FinalizeReport.problems`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Callable, Iterator, Sequence

import sqlalchemy as sa

from engine.billing.build import InvariantError, check_invoice
from engine.config.model import SettingRecord
from engine.domain.batching import chunks
from engine.domain.errors import EngineError, Problem
from engine.storage.bulk import RowWriter, fetch_records
from engine.storage.context import Context
from engine.storage.retry import run_in_transaction

from .accounts import AccountChoice, AccountResolver
from .cancel import finalize_cancellation
from .errors import BookingError, CancelError, FinalizeError, StageError, invoice_where
from .final_invoices import SettleError, refresh_final_invoices, settle_final_invoices
from .invoices import invoice_booking_set, line_fields
from .numbering import choose_counter, draw_numbers, range_key, render_number
from .postings import BookingSet
from .write import load_accounts, write_bookings

__all__ = ["BATCH_INVOICES", "BATCH_LINES", "Failure", "FinalizationStage", "FinalizeError", "FinalizeReport",
           "Finalized", "StageError", "choose_counter", "finalize_in_transaction", "finalize_invoices",
           "prepare_stages", "range_key", "render_number"]


@dataclass(frozen=True)
class Finalized:
    """An invoice that was finalized: its id, draft name, number, date and grand total."""

    invoice_id: int
    draft_name: str
    number: str
    date: date
    grand_total: Decimal


class Failure(tuple):
    """An invoice that stayed a draft: the pair ``(invoice id, message)`` that
    callers unpack, and :attr:`problem`, the failure as a runtime problem
    (its code, the invoice it concerns, a hint)."""

    problem: Problem

    def __new__(cls, invoice_id: object, message: str, problem: Problem) -> "Failure":
        failure = super().__new__(cls, (str(invoice_id), message))
        failure.problem = problem
        return failure

    @classmethod
    def of(cls, invoice_id: object, error: EngineError) -> "Failure":
        """The failure of the invoice ``invoice_id`` that ``error`` reports."""
        return cls(invoice_id, str(error), error.problems[0])

    def __getnewargs__(self) -> tuple:  # pickled by workers and test processes
        return (self[0], self[1], self.problem)


@dataclass
class FinalizeReport:
    """What a finalization did: the invoices finalized (committed) and those
    that stayed drafts, each with why."""

    finalized: list[Finalized] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (invoice id, message): Failure values

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Every failure as a runtime problem, in the order of ``failures``."""
        return tuple(getattr(failure, "problem", None)
                     or Problem(FinalizeError.code, failure[1], invoice_where(failure[0]))
                     for failure in self.failures)


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
    query = ctx.service(_line_group_query)
    grouped: dict[int, list[dict]] = {}
    for chunk in chunks(ids, _IN_CHUNK):
        for group in fetch_records(conn, query.params(ids=list(chunk))):
            group["_names"] = _ordered_names(group.pop("_labels"))
            grouped.setdefault(group["invoice"], []).append(group)
    return grouped


def _line_group_query(ctx: Context) -> sa.Select:
    """The query of :func:`_line_groups`, for the invoice ids bound to
    ``ids``: built once per command (``ctx.service``), as every batch runs it."""
    c = ctx.table("InvoiceLineItem").c
    keys = sorted(set(_GROUP_FIELDS) | (line_fields(ctx, ctx.service(AccountResolver))
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
    return (sa.select(*columns).where(c.invoice.in_(sa.bindparam("ids", expanding=True))).group_by(*group_by)
            .order_by(c.invoice, sa.func.min(c.sequence), sa.func.min(c.id)))


def _ordered_names(labels: str) -> list[str]:
    """``sequence|id|name`` labels (aggregated in no particular order) -> the
    names in line order."""
    parts = [label.split("|", 2) for label in labels.split(_NAME_SEPARATOR)]
    parts.sort(key=lambda part: (int(part[0]), int(part[1])))
    return [part[2] for part in parts]


def _accounts(conn: sa.Connection, ctx: Context, ids: set[int], today: date, book: bool) -> dict[int, dict]:
    """The invoices' accounts: the account number (number patterns), and with
    bookkeeping the evaluated formula fields (debtor, VAT id) too."""
    if book:
        return load_accounts(conn, ctx, ids, today)
    table = ctx.table("Account")
    found: dict[int, dict] = {}
    for chunk in chunks(sorted(ids), _IN_CHUNK):
        for row in conn.execute(sa.select(table.c.id, table.c.accountnumber).where(table.c.id.in_(chunk))):
            found[row.id] = {"id": row.id, "accountnumber": row.accountnumber}
    return found


def _sub_types(conn: sa.Connection, ctx: Context, lines_of: dict[int, list[dict]]) -> dict[int, str]:
    """Types of the sub invoices that deduction lines refer to."""
    sub_ids = sorted({int(line["subinvoice"]) for lines in lines_of.values() for line in lines if line.get("subinvoice")})
    if not sub_ids:
        return {}
    invoice_table = ctx.table("Invoice")
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
    case), else one statement executed for every line group (executemany),
    matching its G/L criterion fields.
    Written before the invoices leave Draft: finalized lines are immutable."""
    line_table = ctx.table("InvoiceLineItem")
    criteria = sorted(ctx.service(AccountResolver).line_fields())
    whole_invoices: dict[tuple, list[int]] = {}
    per_group: list[dict] = []
    for item in pending:
        values = {(group["glaccount"], group["glaccount2"], group["glaccountrule"]) for group in item.lines}
        if len(values) == 1:
            whole_invoices.setdefault(values.pop(), []).append(item.invoice["id"])
            continue
        per_group.extend({"_invoice": item.invoice["id"], "_gl": group["glaccount"], "_gl2": group["glaccount2"],
                          "_rule": group["glaccountrule"], **{f"_c_{key}": group[key] for key in criteria}}
                         for group in item.lines)
    if per_group:
        condition = sa.and_(line_table.c.invoice == sa.bindparam("_invoice"),
                            *(line_table.c[key].is_not_distinct_from(sa.bindparam(f"_c_{key}",
                                                                                  type_=line_table.c[key].type))
                              for key in criteria))
        conn.execute(sa.update(line_table).where(condition).values(
            glaccount=sa.bindparam("_gl"), glaccount2=sa.bindparam("_gl2"), glaccountrule=sa.bindparam("_rule")),
            per_group)
    for (gl, gl2, rule), invoice_ids in whole_invoices.items():
        for chunk in chunks(invoice_ids, _IN_CHUNK):
            conn.execute(sa.update(line_table).where(line_table.c.invoice.in_(chunk))
                         .values(glaccount=gl, glaccount2=gl2, glaccountrule=rule))


def _open_invoices(conn: sa.Connection, ctx: Context, pending: list["_Pending"], now: datetime) -> None:
    invoice_table = ctx.table("Invoice")
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
              sub_types: dict[int, str], gl_choices: list[AccountChoice]) -> BookingSet:
    """The invoice's booking details, decided before anything is written
    (``invoiceno`` is filled in once the number is drawn)."""
    invoice = item.invoice
    provisional = {**invoice, "date": item.when}
    provenance = {"run": str(invoice.get("invoicerun") or ""), "confighash": ctx.config_hash}
    try:
        return invoice_booking_set(ctx, resolver, provisional, item.lines, account, sub_types, provenance,
                                   gl_choices=gl_choices)
    except BookingError as error:
        raise FinalizeError(str(error), where=error.where, hint=error.hint) from None


# Invoices per batch, and lines per batch: together they bound the memory a
# batch holds (its lines, as dicts) and the length of one transaction.
BATCH_INVOICES = 1000
BATCH_LINES = 20_000
_IN_CHUNK = 900  # ids per IN (...) list: below every backend's parameter limit


#: A later stage of finalization, supplied by a higher layer (write-offs,
#: cash-management entries): called once per batch, inside the batch's
#: transaction, after the invoices were numbered, opened and booked, with the
#: finalized invoice rows (dicts keyed by lower-case field, as written). It
#: raises :class:`StageError` for an invoice it cannot handle.
FinalizationStage = Callable[[sa.Connection, Context, list[dict]], None]


def prepare_stages(ctx: Context, stages: Sequence[FinalizationStage]) -> None:
    """Let each stage do, before any transaction, the work that needs no
    database: a stage may carry a ``prepare(ctx)`` attribute (the documents
    stage compiles the e-invoice rule sets there, seconds of CPU that would
    otherwise be spent holding the first batch's write lock, which on
    SQLite keeps every other writer waiting)."""
    for stage in stages:
        prepare = getattr(stage, "prepare", None)
        if prepare is not None:
            prepare(ctx)


def finalize_invoices(engine: sa.Engine, ctx: Context, invoice_ids: Sequence[int], *,
                      today: date | None = None, stages: Sequence[FinalizationStage] = ()) -> FinalizeReport:
    """Finalize the given drafts in id order, final invoices last, in
    batches (one transaction each), running ``stages`` in each batch after
    the bookings."""
    report = FinalizeReport()
    today = today or date.today()
    with engine.connect() as conn:
        shapes = _shapes(conn, ctx, sorted(set(invoice_ids)))
    # Final invoices after the others: a final invoice settles its project's
    # sub invoices and refuses a draft one, which may be among these drafts
    # (a sub invoice billed after the final invoice's draft was made).
    shapes.sort(key=lambda shape: shape.type == "Final")
    if shapes:
        prepare_stages(ctx, stages)
    for batch in _batches(shapes):
        while batch:
            try:
                # One transaction per batch, run again from the start when PostgreSQL aborts it for a lost race.
                # REPEATABLE READ turns a concurrent finalization of the same drafts (or a concurrent draw from
                # the same number range) into such an abort instead of a second number; SQLite serializes anyway.
                outcome = run_in_transaction(engine, lambda conn: _finalize_set(conn, ctx, batch, today, stages),
                                             isolation_level="REPEATABLE READ")
            except _SoloFailure as failure:  # rolled back: again without the invoice that could not be completed
                report.failures.append(Failure.of(failure.invoice_id, failure.error))
                batch = [i for i in batch if i != failure.invoice_id]
                continue
            except StageError as failure:  # rolled back: again without the invoice the stage refused
                report.failures.append(Failure.of(failure.invoice_id, failure))
                batch = [i for i in batch if i != failure.invoice_id]
                continue
            # Only a committed batch reaches the report.
            report.finalized.extend(outcome.finalized)
            report.failures.extend(outcome.failures)
            break
    report.failures.sort(key=lambda failure: int(failure[0]) if failure[0].isdigit() else 0)
    return report


def finalize_in_transaction(conn: sa.Connection, ctx: Context, invoice_ids: Sequence[int], *, today: date,
                            stages: Sequence[FinalizationStage] = ()) -> FinalizeReport:
    """Finalize the given drafts inside the caller's transaction, as one
    batch (for a command that must finalize together with its other changes,
    such as ``metabill cancel``). Invoices that fail before anything is
    written are reported; a failure after writing (a cancellation or final
    invoice that cannot be completed, a stage refusing an invoice) raises
    :class:`FinalizeError`, and the caller must roll its transaction back."""
    try:
        return _finalize_set(conn, ctx, sorted(set(invoice_ids)), today, stages)
    except _SoloFailure as failure:
        raise failure.error from None


@dataclass(frozen=True)
class _Shape:
    invoice_id: int
    type: str | None
    line_count: int
    account: int | None = None


def _shapes(conn: sa.Connection, ctx: Context, ids: list[int]) -> list[_Shape]:
    """Each requested id with its invoice type, account and line count
    (unknown ids too: the batch reports them)."""
    invoice_table = ctx.table("Invoice")
    line_table = ctx.table("InvoiceLineItem")
    heads: dict[int, tuple[str | None, int | None]] = {}
    counts: dict[int, int] = {}
    for chunk in chunks(ids, _IN_CHUNK):
        heads.update((row.id, (row.type, row.account)) for row in conn.execute(
            sa.select(invoice_table.c.id, invoice_table.c.type, invoice_table.c.account)
            .where(invoice_table.c.id.in_(chunk))))
        counts.update(conn.execute(sa.select(line_table.c.invoice, sa.func.count())
                                   .where(line_table.c.invoice.in_(chunk)).group_by(line_table.c.invoice)).all())
    shapes = []
    for i in ids:
        kind, account = heads.get(i, (None, None))
        shapes.append(_Shape(i, kind, counts.get(i, 0), account))
    return shapes


def _batches(shapes: list[_Shape]) -> Iterator[list[int]]:
    """Consecutive ids grouped into batches (at most :data:`BATCH_INVOICES`
    invoices and :data:`BATCH_LINES` lines each).

    A cancellation is a batch of its own (it rewrites the invoice it
    cancels). A final invoice changes the sub invoices of its project, all
    of its own account, and is decided from them as they stand when its batch
    begins: so it shares a batch only with invoices of *other* accounts
    (the batch is cut before a final invoice whose account is already in it,
    and before an invoice of the account of a final invoice in it). It then
    sees exactly what it would see in a transaction of its own, and a
    failure after writing rolls back its batch, which runs again without it.
    Batching them matters: a realistic run makes thousands of final invoices,
    and a transaction per invoice cost most of finalization's bookkeeping time."""
    batch: list[int] = []
    lines = 0
    accounts: set[int | None] = set()  # accounts of the batch's invoices
    exclusive: set[int | None] = set()  # accounts of the batch's final invoices

    def full(shape: _Shape) -> bool:
        if len(batch) >= BATCH_INVOICES or lines + shape.line_count > BATCH_LINES:
            return True
        if shape.account in exclusive:
            return True
        return shape.type in _ACCOUNT_EXCLUSIVE_TYPES and shape.account in accounts

    for shape in shapes:
        if shape.type in _SOLO_TYPES:
            if batch:
                yield batch
                batch, lines, accounts, exclusive = [], 0, set(), set()
            yield [shape.invoice_id]
            continue
        if batch and full(shape):
            yield batch
            batch, lines, accounts, exclusive = [], 0, set(), set()
        batch.append(shape.invoice_id)
        lines += shape.line_count
        accounts.add(shape.account)
        if shape.type in _ACCOUNT_EXCLUSIVE_TYPES:
            exclusive.add(shape.account)
    if batch:
        yield batch


_SOLO_TYPES = ("Cancelation",)
_ACCOUNT_EXCLUSIVE_TYPES = ("Final",)


class _SoloFailure(Exception):
    """A cancellation or final invoice failed after writing: its batch's
    transaction must roll back (and runs again without it)."""

    def __init__(self, invoice_id: int, error: EngineError):
        super().__init__(str(error))
        self.invoice_id = invoice_id
        self.error = error


@dataclass
class _Pending:
    """An invoice that passed every check and waits for its number."""

    invoice: dict
    lines: list[dict]  # its line groups (see _line_groups)
    when: date
    counter: SettingRecord
    bookings: BookingSet = BookingSet(())
    draft_name: str = ""


def _refresh_final_invoices(conn: sa.Connection, ctx: Context, ids: list[int], invoices: dict[int, dict],
                            outcome: FinalizeReport) -> tuple[list[int], bool]:
    """Final invoice drafts deduct what their sub invoices received up to
    now (domain-spec §3.8 step 5): their deductions are rebuilt, all of the
    batch's at once, before anything is decided. Returns the ids still to
    finalize (a final invoice whose project still has a draft sub invoice is
    reported and dropped) and whether any invoice changed."""
    changed, failures = refresh_final_invoices(conn, ctx, [invoices[i] for i in ids if i in invoices])
    for invoice_id, error in failures.items():
        outcome.failures.append(Failure.of(invoice_id, error))
    return [i for i in ids if i not in failures], bool(changed)


def _complete_cancellations_and_finals(conn: sa.Connection, ctx: Context, pending: list[_Pending],
                                       book: bool) -> None:
    """Cancellations rewrite the invoice they cancel, final invoices settle
    their sub invoices; in the order of ``pending``, final invoices in runs
    settled together (:func:`settle_final_invoices`, one set of statements
    for the run instead of one per invoice). A run is cut before a
    cancellation and before a final invoice of an account already in it, so
    each final invoice sees the others' changes exactly as one at a time."""
    finals: list[tuple[dict, date]] = []

    def settle() -> None:
        try:
            settle_final_invoices(conn, ctx, finals)
        except SettleError as error:
            raise _SoloFailure(error.final_id, error.error) from None
        finals.clear()

    for item in pending:
        invoice = item.invoice
        if invoice.get("type") == "Cancelation":
            settle()
            try:
                finalize_cancellation(conn, ctx, invoice, item.when, book)
            except CancelError as error:
                raise _SoloFailure(invoice["id"], error) from None
        elif invoice.get("type") == "Final":
            if any(final["account"] == invoice["account"] for final, _ in finals):
                settle()
            finals.append((invoice, item.when))
    settle()


def _finalize_set(conn: sa.Connection, ctx: Context, ids: list[int], today: date,
                  stages: Sequence[FinalizationStage] = ()) -> FinalizeReport:
    outcome = FinalizeReport()
    invoice_table = ctx.table("Invoice")
    book = ctx.settings.create_bookkeeping_data

    invoices = {row["id"]: dict(row) for row in conn.execute(
        sa.select(invoice_table).where(invoice_table.c.id.in_(ids))).mappings()}
    ids, refreshed = _refresh_final_invoices(conn, ctx, ids, invoices, outcome)
    if refreshed:  # deductions rebuilt: read the invoices' new totals
        invoices = {row["id"]: dict(row) for row in conn.execute(
            sa.select(invoice_table).where(invoice_table.c.id.in_(ids))).mappings()}
    lines_of = _line_groups(conn, ctx, ids)
    accounts = _accounts(conn, ctx, {inv["account"] for inv in invoices.values() if inv.get("account")}, today, book)
    sub_types = _sub_types(conn, ctx, lines_of) if book else {}
    resolver = ctx.service(AccountResolver) if book else None
    counters: dict[tuple, SettingRecord] = {}

    pending: list[_Pending] = []
    for invoice_id in ids:
        invoice = invoices.get(invoice_id)
        lines = lines_of.get(invoice_id, [])
        try:
            if invoice is None:
                raise FinalizeError(f"no invoice with id {invoice_id}", where=invoice_where(invoice_id))
            where = invoice_where(invoice["name"])
            if invoice["status"] != "Draft":
                raise FinalizeError(f"{invoice['name']} is {invoice['status']}, not a draft", where=where)
            if not lines:
                raise FinalizeError(f"{invoice['name']} has no lines", where=where)
            try:
                # Drafts are editable: re-check them before they become binding.
                check_invoice(invoice, lines)
                unbalanced = sum(int(group["_unbalanced"] or 0) for group in lines)
                if unbalanced:
                    raise InvariantError(f"{unbalanced} line(s) where gross != net + tax")
            except InvariantError as error:
                raise FinalizeError(f"{invoice['name']}: {error}", where=where,
                                    hint="a draft changed since its run: delete it and run again") from None
            if book and invoice.get("type") == "Deposit" and not ctx.settings.create_bookkeeping_data_for_deposit:
                raise FinalizeError(
                    f"{invoice['name']} is a deposit invoice: with bookkeeping on, deposits are booked only with "
                    "GlobalSettings.CreateBookkeepingDataForDeposit (as down payments, not revenue)", where=where,
                    hint="turn on CreateBookkeepingDataForDeposit, or bill the deposit as an invoice of another type")
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
            outcome.failures.append(Failure.of(invoice_id, error))
            continue
        pending.append(item)
    if not pending:
        return outcome

    draw_numbers(conn, ctx, pending, accounts)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    if book:
        _write_gl_accounts(conn, ctx, pending)
    _open_invoices(conn, ctx, pending, now)
    RowWriter(conn, ctx.obj("Balance")).insert([
        {
            "account": item.invoice["account"], "invoice": item.invoice["id"], "type": "Invoice",
            "amount": item.invoice["grandtotal"], "date": item.when,
            "currencyisocode": item.invoice.get("currencyisocode"), "confighash": ctx.config_hash,
        }
        for item in pending
    ])
    _complete_cancellations_and_finals(conn, ctx, pending, book)
    booking_sets: list[BookingSet] = []
    for item in pending:
        for booking in item.bookings.bookings:
            booking.fields["invoiceno"] = item.invoice["name"]
        booking_sets.append(item.bookings)
    write_bookings(conn, ctx, booking_sets)
    for stage in stages:
        stage(conn, ctx, [item.invoice for item in pending])
    outcome.finalized.extend(
        Finalized(item.invoice["id"], item.draft_name, item.invoice["name"], item.when, item.invoice["grandtotal"])
        for item in pending
    )
    return outcome


