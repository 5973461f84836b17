"""Balances with their booking details, and the sums that follow them.

Every process that moves money on a customer's account (payments, refunds,
write-offs, collection) creates a Balance record through
:func:`create_balance`, inside the caller's transaction, and in the same
transaction its booking details when payment bookkeeping is on
(``CreateBookkeepingData`` and ``EnablePaymentBookingData``; domain-spec §5.4).
Booking is per money flow: a balance that is later assigned or split keeps
the booking details of the money flow it came from (§4.5).

Posting (§5.5): the booking detail of a balance moves the debtor (or the
collective account's contra account) by exactly the balance amount; the
other side is the collective account of the booking type (Payment → the
bank, Write-off → the expense account, ...). The collective account is
chosen from the balance's context (:func:`engine.booking.questions.balance_question`,
the question ``metabill explain`` asks again): business entity, payment
provider, bank account id, clearing reason, the invoice's tax code (when it
has exactly one), and the balance's custom formula field ``CollectiveAccountRule__c``
(seed 002). That criterion is declared first on Collective Accounts, so when
the formula yields a value and a collective account carries it, that account
wins over every other criterion; an empty value matches only accounts
without a custom rule.

Write-offs with *Calculate Tax* (the default) are split into the net
write-off and a tax correction per tax rate of the invoice, in proportion to
the invoice's gross amounts; without it, or for a balance without invoice,
or in gross accounting, one gross write-off booking.

The invoice balance is always Σ of its balances (the Invoice balance being
the grand total), its status ``Open`` while that is not zero and ``Paid`` at
zero (domain-spec §4.4 [doc]); ``Account.Balance`` is Σ of all balances of
the account. :func:`refresh_invoices` and :func:`refresh_accounts` recompute
both with set-based updates from the Balance table, so they are right
whatever created the balances.

:func:`apply_finalization_write_offs` is the finalization step "automatic
write-off on finalization" (§4.7): invoices whose |grand total| is at most
``FinalizationWriteOffAmount`` (in ``WriteOffCurrency``) are written off
with the reason "Invoice below threshold".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

import sqlalchemy as sa

from engine.billing.subinvoices import INTERIM_RECEIPT_TYPES, interim_receipts
from engine.config.values import BUSINESS_DATES
from engine.domain.batching import chunks
from engine.domain.errors import Where
from engine.domain.money import CENT, ZERO, allocate, net_of_gross
from engine.domain.settings import GlobalSettings
from engine.storage.bulk import RowWriter
from engine.storage.context import Context

from .accounts import AccountResolver
from .dues import refresh_installments
from .errors import BalanceError, BookingError, invoice_where
from .invoices import INTERIM_INVOICE_TYPES, common_fields, copied_fields, custom_values
from .postings import Booking, BookingSet, debit_credit_flag, sides
from .questions import balance_question, per_tax_group
from .write import load_account, write_bookings

#: Balance type -> booking detail type, for the balance types that are booked.
BOOKED_TYPES: Mapping[str, str] = {
    "Payment": "Payment",
    "Prepayment": "Prepayment",
    # Money paid before the invoice (its PP_ fields, domain-spec §2.1 5): received like a prepayment.
    "Prepaid": "Prepayment",
    "Refund": "Refund",
    "Payout": "Payout",
    "Write off": "Write-off",
    "Dunning Fee": "Dunning Fee",
}
WRITE_OFF = "Write off"
REASON_PAYMENT = "Missing amount below threshold"
REASON_FINALIZATION = "Invoice below threshold"
RULE_FINALIZATION = "FinalizationWriteOffAmount"
#: Invoice types an automatic write-off never touches: a progress (or
#: deposit) invoice's unpaid rest is cleared by its final invoice, and its
#: interim bookings assume that (domain-spec §3.8, §5.6, §4.10).
NO_WRITE_OFF_TYPES = frozenset({"Progress", "Deposit", "Cancelation"})


@dataclass(frozen=True)
class WriteOffSettings:
    """The automatic write-off settings of GlobalSettings (domain-spec §4.7)."""

    percent: Decimal | None
    cap: Decimal | None
    finalization: Decimal | None
    currency: str | None

    @classmethod
    def of(cls, ctx: Context) -> "WriteOffSettings":
        """The command's write-off settings (from ``ctx.settings``)."""
        return cls.from_settings(ctx.settings)

    @classmethod
    def from_settings(cls, settings: GlobalSettings) -> "WriteOffSettings":
        return cls(settings.write_off_threshold_percent, settings.write_off_cap_amount,
                   settings.finalization_write_off_amount, settings.write_off_currency)

    def payment_threshold(self, grand_total: Decimal, currency: str | None) -> Decimal | None:
        """The largest rest written off after a payment, or None for no
        automatic write-off. The percentage is of |grand total|; the cap
        limits it (both set: the smaller); with a write-off currency set,
        only invoices in that currency are written off automatically, and a
        cap without a matching currency means no write-off (the limit could
        not be honoured)."""
        if self.currency is not None and self.currency != currency:
            return None
        if self.cap is not None and self.currency is None:
            return None
        candidates = []
        if self.percent is not None and self.percent > 0:
            candidates.append(abs(grand_total) * self.percent / Decimal(100))
        if self.cap is not None and self.cap > 0:
            candidates.append(self.cap)
        return min(candidates) if candidates else None

    def finalization_threshold(self, currency: str | None) -> Decimal | None:
        """Absolute only, and only in the write-off currency."""
        if self.finalization is None or self.finalization <= 0:
            return None
        if self.currency is None or self.currency != currency:
            return None
        return self.finalization


def payment_booking_enabled(ctx: Context) -> bool:
    """Balances get booking details: CreateBookkeepingData and EnablePaymentBookingData."""
    return ctx.settings.payment_bookings


def invoice_lines(conn: sa.Connection, ctx: Context, invoice_id: int) -> list[dict]:
    table = ctx.table("InvoiceLineItem")
    query = sa.select(table).where(table.c.invoice == invoice_id).order_by(table.c.id)
    return [dict(r) for r in conn.execute(query).mappings()]


def create_balance(conn: sa.Connection, ctx: Context, fields: Mapping[str, object], *,
                   invoice: Mapping[str, object] | None, rule: str, run: str,
                   account: Mapping[str, object] | None = None) -> dict:
    """Insert one balance (``fields`` keyed by lower-case Balance field:
    account, type, amount, date, ...) with provenance, and book it when
    payment bookkeeping is on. ``invoice`` is the invoice row it belongs or
    relates to (None for a free balance without one). Returns the row."""
    row = dict(fields)
    where = invoice_where(invoice.get("name")) if invoice is not None else Where(object="Balance")
    if row.get("amount") is None or Decimal(row["amount"]) == 0:
        raise BalanceError("a balance needs a non-zero amount", where=where)
    amount = Decimal(row["amount"])  # type: ignore[arg-type]
    if amount.quantize(CENT) != amount:
        raise BalanceError(f"a balance amount has at most two decimals, got {amount}", where=where)
    row["amount"] = amount.quantize(CENT)
    when: date = row["date"]  # type: ignore[assignment]
    if when not in BUSINESS_DATES:
        raise BalanceError(f"a balance dated {when.isoformat()} is outside the supported dates "
                           f"{BUSINESS_DATES.describe()}", where=where)
    if account is None:
        account = load_account(conn, ctx, int(row["account"]), when)  # type: ignore[arg-type]
    if invoice is not None:
        row.setdefault("currencyisocode", invoice.get("currencyisocode"))
        row.setdefault("businessentity", invoice.get("businessentity"))
    row.setdefault("currencyisocode", account.get("currencyisocode"))
    if row.get("businessentity") is None:
        row["businessentity"] = account.get("on_businessentity__c")
    row.update(confighash=ctx.config_hash, rule=rule[:80], run=run[:64])
    balance_obj = ctx.obj("Balance")
    row = {k: v for k, v in row.items() if balance_obj.field(k) is not None or k == "id"}
    RowWriter(conn, balance_obj).insert([row])
    if payment_booking_enabled(ctx) and row["type"] in BOOKED_TYPES:
        book_balance(conn, ctx, row, invoice, account, run)
    return row


def _sign_for_counter(booking_type: str, part: Decimal) -> Decimal:
    """The booking amount that moves the counter account (debtor or contra)
    by ``part``: a positive amount debits the counter for some types and
    credits it for others (postings.sides)."""
    debit, _ = sides({"type": booking_type, "accountno": "A", "bpaccountno": "C", "amount": Decimal("1.00")})
    return part if debit == "C" else -part


def balance_bookings(ctx: Context, resolver: AccountResolver, balance: Mapping[str, object],
                     invoice: Mapping[str, object] | None, lines: Sequence[Mapping[str, object]],
                     account: Mapping[str, object], run: str,
                     received_before: Mapping[tuple, tuple[Decimal, Decimal]] | None = None) -> list[Booking]:
    """The booking details of one balance (pure): see the module docstring.
    The collective accounts are asked with
    :func:`engine.booking.questions.balance_question`. ``received_before``:
    on a progress or deposit invoice, what its earlier payments booked per
    tax group (gross received, interim tax), see :func:`_interim_bookings`."""
    booking_type = BOOKED_TYPES[str(balance["type"])]
    subject = invoice or {"name": f"balance {balance.get('name')}", "account": balance.get("account")}
    where = invoice_where(invoice.get("name")) if invoice is not None else Where(object="Balance",
                                                                                 record=str(balance.get("name")))
    debtor = (invoice or {}).get("debtorno__c") or account.get("on_debtorno__c")
    when: date = balance["date"]  # type: ignore[assignment]
    amount = Decimal(balance["amount"])  # type: ignore[arg-type]
    source = invoice or {"account": balance.get("account"), "accountname": account.get("name"),
                         "currencyisocode": balance.get("currencyisocode"), "date": when}
    base = common_fields(source, account, str(debtor or ""), {"run": run, "confighash": ctx.config_hash})
    base.update(bookingdate=when, originalbookingdate=when, paymentdate=when, balance=balance["id"],
                businessentity=balance.get("businessentity"), paymentprovider=balance.get("paymentprovider"),
                bankaccountid=balance.get("bankaccountid"), clearingreason=balance.get("clearingreason"),
                currencyisocode=balance.get("currencyisocode"), _reference=balance.get("reference"))
    if invoice is not None:
        base.update(dict(custom_values(copied_fields(ctx), invoice, None)))
    question = balance_question(ctx, balance, invoice, lines)
    details: list[Booking] = []

    def add(kind: str, part: Decimal, asked: Mapping[str, object], **extra) -> None:
        choice = resolver.required_collective(kind, asked, subject, where)
        partner = choice.bp_account or debtor
        if not partner:
            raise BalanceError(
                f"{subject.get('name')}: no debtor account to book the {balance['type']} balance against "
                "(Account.ON_DebtorNo__c, or a BpAccount on the collective account)", where=where)
        fields = {**base, "type": kind, "amount": _sign_for_counter(kind, part), "accountno": choice.account,
                  "contraaccountno": choice.contra, "accountrule": choice.rule, "bpaccountno": partner, **extra}
        details.append(Booking(fields, choice))

    try:
        split_tax = (booking_type == "Write-off" and invoice is not None and balance.get("calculatetax", True)
                     and not ctx.settings.accounting_in_gross_values)
        groups = _tax_groups(lines) if split_tax else {}
        if groups and any(rate for (_, rate, _) in groups):
            keys = sorted(groups, key=lambda k: (str(k[0]), k[1]))
            parts = allocate(abs(amount), [abs(groups[k]) for k in keys])
            sign = Decimal(1) if amount > 0 else Decimal(-1)
            for (code, rate, applied), part in zip(keys, parts):
                if part == 0:
                    continue
                net = net_of_gross(part, rate)
                asked = per_tax_group(question, code, applied)
                add(booking_type, sign * net, asked, taxcode=code, taxrate=rate, appliedtaxrule=applied, isgross=False)
                if part - net != 0:
                    add("Tax", sign * (part - net), asked, taxcode=code, taxrate=rate, appliedtaxrule=applied,
                        isgross=False)
        else:
            add(booking_type, amount, question, isgross=booking_type == "Write-off")
        if booking_type == "Payment" and invoice is not None and invoice.get("type") in INTERIM_INVOICE_TYPES:
            details.extend(_interim_bookings(resolver, base, question, invoice, lines, -amount, received_before or {}))
    except BookingError as error:
        raise BalanceError(str(error), where=error.where, hint=error.hint) from None
    for booking in details:
        booking.fields["debitcredit"] = debit_credit_flag(booking.fields)
        booking.fields["invoicelineitems"] = None
    return details


def _tax_groups(lines: Sequence[Mapping[str, object]]) -> dict[tuple, Decimal]:
    groups: dict[tuple, Decimal] = {}
    for line in lines:
        key = (line.get("taxcode"), Decimal(line.get("taxrate") or 0), line.get("appliedtaxrule"))
        groups[key] = groups.get(key, ZERO) + Decimal(line.get("postotalgross") or 0)
    return {k: v for k, v in groups.items() if v != 0}


def _interim_bookings(resolver: AccountResolver, base: Mapping[str, object], question: Mapping[str, object],
                      invoice: Mapping[str, object], lines: Sequence[Mapping[str, object]],
                      received: Decimal, before: Mapping[tuple, tuple[Decimal, Decimal]]) -> list[Booking]:
    """A payment on a progress invoice also books the received down payment
    (Interim Payment, net) and the tax that arises on receipt (Interim Tax),
    per tax rate in proportion to the invoice's gross amounts (§5.6).

    The tax is rounded on what the group received in all, not per payment:
    this payment's tax is the tax of everything received so far less the
    tax ``before`` booked (gross received, interim tax per group). So the
    interim tax of many small payments is the tax of their sum, which is
    what the final invoice deducts (rounding each payment left cents in the
    interim accounts of a closed project, audit A401/A402)."""
    out: list[Booking] = []
    groups = _tax_groups(lines)
    keys = sorted(groups, key=lambda k: (str(k[0]), k[1]))
    for (code, rate, rule), part in zip(keys, allocate(received, [groups[k] for k in keys])):
        gross_before, tax_before = before.get((code, rate, rule), (ZERO, ZERO))
        total = gross_before + part
        net = part - ((total - net_of_gross(total, rate)) - tax_before)
        asked = per_tax_group(question, code, rule)
        for booking_type, value in (("Interim Payment", net), ("Interim Tax", part - net)):
            if value == 0:
                continue
            interim = resolver.required_collective(booking_type, asked, invoice)
            out.append(Booking({**base, "type": booking_type, "amount": value, "accountno": interim.account,
                                "contraaccountno": interim.contra, "accountrule": interim.rule, "taxcode": code,
                                "taxrate": rate, "appliedtaxrule": rule, "isgross": False}, interim))
    return out


def interim_received(conn: sa.Connection, ctx: Context, invoice_id: int) -> dict[tuple, tuple[Decimal, Decimal]]:
    """What the payments of a progress or deposit invoice booked so far per
    (tax code, rate, rule): (gross received = Interim Payment + Interim Tax,
    Interim Tax)."""
    gross, tax = interim_receipts(conn, ctx, [invoice_id]).get(invoice_id, ({}, {}))
    return {key: (amount, tax.get(key, ZERO)) for key, amount in gross.items()}


def book_balance(conn: sa.Connection, ctx: Context, balance: Mapping[str, object],
                 invoice: Mapping[str, object] | None, account: Mapping[str, object], run: str) -> list[dict]:
    """Book one balance: details built and written; the writer checks them
    (debits == credits, and the counter account moves by the balance amount
    when the balance's own bookings share one)."""
    lines = invoice_lines(conn, ctx, int(invoice["id"])) if invoice is not None else []  # type: ignore[arg-type]
    before = (interim_received(conn, ctx, int(invoice["id"]))  # type: ignore[arg-type]
              if invoice is not None and invoice.get("type") in INTERIM_INVOICE_TYPES else {})
    bookings = balance_bookings(ctx, ctx.service(AccountResolver), balance, invoice, lines, account, run, before)
    # The interim bookings (the down payment and tax of a payment on a
    # progress invoice, §5.6) do not move the balance's counter account.
    own = tuple(b for b in bookings if b.fields["type"] not in INTERIM_RECEIPT_TYPES)
    interim = tuple(b for b in bookings if b.fields["type"] in INTERIM_RECEIPT_TYPES)
    counter = {str(b.fields.get("contraaccountno") or b.fields.get("bpaccountno")) for b in own}
    if len(counter) == 1:
        own_set = BookingSet(own, debtor=counter.pop(), receivable=Decimal(balance["amount"]))  # type: ignore[arg-type]
    else:
        own_set = BookingSet(own)
    # The interim bookings come last (balance_bookings), so the details keep their order.
    return write_bookings(conn, ctx, [own_set, BookingSet(interim)])


# --- sums ---------------------------------------------------------------------------------


def refresh_invoices(conn: sa.Connection, ctx: Context, invoice_ids: Iterable[int]) -> None:
    """Invoice.Balance = Σ its balances; Status Open/Paid and PaymentDate
    follow (finalized invoices in Open or Paid only: Canceled, Settled and
    Closed invoices keep their status); the open amounts of their
    installments and NextPaymentDue follow too (:mod:`engine.booking.dues`)."""
    ids = sorted({int(i) for i in invoice_ids if i is not None})
    if not ids:
        return
    invoices = ctx.table("Invoice")
    balances = ctx.table("Balance")
    total = (sa.select(sa.func.coalesce(sa.func.sum(balances.c.amount), sa.literal(ZERO, balances.c.amount.type)))
             .where(balances.c.invoice == invoices.c.id).scalar_subquery())
    last = sa.select(sa.func.max(balances.c.date)).where(balances.c.invoice == invoices.c.id).scalar_subquery()
    for chunk in chunks(ids):
        scope = sa.and_(invoices.c.id.in_(chunk), invoices.c.status.in_(("Open", "Paid")))
        conn.execute(sa.update(invoices).where(scope).values(balance=total))
        zero = invoices.c.balance == sa.literal(ZERO, invoices.c.balance.type)
        conn.execute(sa.update(invoices).where(scope).values(
            status=sa.case((zero, "Paid"), else_="Open"),
            paymentdate=sa.case((zero, last), else_=None),
        ))
    refresh_installments(conn, ctx, ids)


def refresh_accounts(conn: sa.Connection, ctx: Context, account_ids: Iterable[int]) -> None:
    """Account.Balance = Σ of all balances of the account (when the org's
    Account has a stored Balance field)."""
    ids = sorted({int(i) for i in account_ids if i is not None})
    field = ctx.obj("Account").field("Balance")
    if not ids or field is None or not field.is_stored:
        return
    accounts = ctx.table("Account")
    balances = ctx.table("Balance")
    total = (sa.select(sa.func.coalesce(sa.func.sum(balances.c.amount), sa.literal(ZERO, balances.c.amount.type)))
             .where(balances.c.account == accounts.c.id).scalar_subquery())
    for chunk in chunks(ids):
        conn.execute(sa.update(accounts).where(accounts.c.id.in_(chunk)).values({field.column_name: total}))


def free_credits(conn: sa.Connection, ctx: Context, account_ids: Iterable[int], currency: str) -> dict[int, Decimal]:
    """What each account may be paid back in ``currency``: -Σ of its free
    (no invoice), not draft balances in that currency, when that is a
    credit; else zero. A balance without currency counts in ``currency``.

    The one definition every process that pays credit back uses (refunds,
    the refund proposals, the SEPA balance export): free debits count (a
    refund or pay-out already made, a fee the customer owes), so the same
    credit is never paid twice; a draft balance is still being built and
    pays nothing back yet; another currency's credit is not this one's."""
    balance = ctx.table("Balance")
    account_ids = sorted({int(i) for i in account_ids})
    found: dict[int, Decimal] = {}
    for chunk in chunks(account_ids):
        rows = conn.execute(
            sa.select(balance.c.account, sa.func.sum(balance.c.amount))
            .where(balance.c.account.in_(chunk), balance.c.invoice.is_(None), balance.c.draft.is_not(sa.true()),
                   sa.func.coalesce(balance.c.currencyisocode, currency) == currency)
            .group_by(balance.c.account))
        for account_id, total in rows:
            found[int(account_id)] = max(-Decimal(total or 0), ZERO)
    return {account_id: found.get(account_id, ZERO) for account_id in account_ids}


# --- write-offs -----------------------------------------------------------------------------


def write_off(conn: sa.Connection, ctx: Context, invoice: Mapping[str, object], amount: Decimal, when: date, *,
              reason: str, rule: str, run: str, calculate_tax: bool = True) -> dict:
    """A Write off balance of ``-amount`` on the invoice (amount > 0 reduces
    a receivable; amount < 0 writes off a credit), booked; the caller
    refreshes the sums."""
    reasons = ctx.obj("Balance").field("WriteOffReason")
    if reasons is not None and reasons.values and reason not in reasons.values:
        raise BalanceError(f"write-off reason {reason!r} is not one of: {', '.join(reasons.values)}",
                           where=invoice_where(invoice.get("name")))
    return create_balance(conn, ctx, {
        "account": invoice["account"], "invoice": invoice["id"], "type": WRITE_OFF, "amount": -amount,
        "date": when, "writeoffreason": reason, "calculatetax": calculate_tax,
    }, invoice=invoice, rule=rule, run=run)


def apply_finalization_write_offs(conn: sa.Connection, ctx: Context, invoices: list[dict],
                                  when: date | None = None) -> int:
    """The finalization step "automatic write-off" (domain-spec §4.7), in
    the finalization's transaction: each just-finalized invoice (rows with
    lower-case keys, status and balance set, its Invoice balance written)
    whose |grand total| is at most FinalizationWriteOffAmount (absolute,
    in WriteOffCurrency) is written off entirely with the reason "Invoice
    below threshold" and becomes Paid (the dicts are updated too). The
    write-off is dated ``when``, by default the invoice's date. Progress and
    cancellation invoices are left alone. Also refreshes Account.Balance of
    all given invoices' accounts. Returns the number of invoices written
    off. Its signature fits ``finalize.FinalizationStage`` as it is."""
    settings = WriteOffSettings.of(ctx)
    written: list[int] = []
    for invoice in invoices:
        if invoice.get("type") in NO_WRITE_OFF_TYPES or invoice.get("status") != "Open":
            continue
        threshold = settings.finalization_threshold(invoice.get("currencyisocode"))  # type: ignore[arg-type]
        grand_total = Decimal(invoice.get("grandtotal") or 0)
        if threshold is None or grand_total == 0 or abs(grand_total) > threshold:
            continue
        open_amount = Decimal(invoice.get("balance") if invoice.get("balance") is not None else grand_total)
        if open_amount == 0:
            continue
        day = when or invoice.get("date") or date.today()
        write_off(conn, ctx, invoice, open_amount, day, reason=REASON_FINALIZATION,  # type: ignore[arg-type]
                  rule=RULE_FINALIZATION, run=f"finalize:{invoice.get('name')}")
        written.append(int(invoice["id"]))
    refresh_invoices(conn, ctx, written)
    refresh_accounts(conn, ctx, [i["account"] for i in invoices])
    for invoice in invoices:
        if int(invoice["id"]) in written:
            invoice.update(balance=ZERO, status="Paid", paymentdate=when or invoice.get("date"))
    return len(written)
