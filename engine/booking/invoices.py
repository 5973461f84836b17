"""Booking details of a finalized invoice (domain-spec §5.3, §5.6, §5.8).

:func:`invoice_bookings` is pure: the invoice, its lines and the account in,
booking details (dicts keyed by lower-case BookingDetail field) out, each with
the rule that chose its account. Lines are aggregated into one booking detail
per (type, account, tax code and rate, center, cost object, billing practice,
gross flag, copied custom fields); tax is booked per tax code and rate.

By invoice type:

* standard, partial and final main lines: ``Revenue`` on the line's G/L
  account (G/L rules; else the collective account of type Revenue), plus
  ``Tax`` on the collective account of type Tax;
* progress and deposit invoices (:data:`INTERIM_INVOICE_TYPES`): ``Interim
  Revenue`` with the gross amount and no tax booking, since tax arises when
  the payment is received;
* deduction lines of a final invoice: for a Partial sub invoice they post to
  revenue like any line (so revenue nets to the not-yet-billed part); for a
  Progress or Deposit invoice they are ``Interim Payment Clearing`` with the
  deducted net amount.

The debtor (business partner account) is the invoice's ``DebtorNo__c``, else
the account's ``ON_DebtorNo__c``. An invoice whose bookings would lack an
account is not finalized: a posting to nowhere is worse than no posting.
The collective accounts are asked with :func:`engine.booking.questions.line_question`,
the question ``metabill explain`` asks again. :func:`invoice_booking_set` hands
the details to the booking writer, which checks them (the debtor moves by
exactly the grand total) before it writes them.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Mapping, Sequence

from engine.config.model import FieldType
from engine.domain.money import ZERO
from engine.storage.context import Context

from .accounts import AccountChoice, AccountResolver
from .errors import BookingError, invoice_where
from .postings import Booking, BookingSet, debit_credit_flag
from .questions import line_question

#: Invoices whose amount is a down payment, not revenue (domain-spec §5.6, §4.10):
#: booked gross as Interim Revenue when finalized, tax arising on each payment
#: (Interim Payment, Interim Tax), deducted by the final invoice through
#: Interim Payment Clearing. Deposit invoices only with CreateBookkeepingDataForDeposit.
INTERIM_INVOICE_TYPES = ("Progress", "Deposit")

__all__ = ["INTERIM_INVOICE_TYPES", "Booking", "BookingError", "booking_date", "common_fields", "copied_fields", "custom_values", "debtor_of",
           "find_copied_fields", "invoice_booking_set", "invoice_bookings", "line_fields"]


def copied_fields(ctx: Context) -> tuple[tuple[str, str], ...]:
    """Custom fields carried to booking details: (source object, field key) for
    every ``__c`` field that exists with the same name and type on Invoice or
    InvoiceLineItem and on BookingDetail (seed 004). Line values win.
    Found once per command (a service of the context)."""
    return ctx.service(find_copied_fields)


def find_copied_fields(ctx: Context) -> tuple[tuple[str, str], ...]:
    """:func:`copied_fields`, found in the model (use that: it is memoized)."""
    model = ctx.model
    detail = model.object("BookingDetail")
    if detail is None:
        return ()
    out = []
    for source_name in ("InvoiceLineItem", "Invoice"):
        source = model.object(source_name)
        if source is None:
            continue
        for fdef in source.fields:
            target = detail.field(fdef.name)
            if (
                fdef.is_custom
                and not fdef.name.lower().startswith("on_")
                and target is not None
                and target.value_type == fdef.value_type
                and target.type is not FieldType.FORMULA
            ):
                out.append((source_name, fdef.key))
    return tuple(out)


def custom_values(copies: Sequence[tuple[str, str]], invoice: Mapping[str, object],
                  line: Mapping[str, object] | None) -> tuple[tuple[str, object], ...]:
    """The copied custom field values of a booking: the line's value where the
    line has the field and a value, else the invoice's (seed 004, §5.8)."""
    values: dict[str, object] = {}
    for source, key in copies:
        if source == "InvoiceLineItem" and line is not None and line.get(key) not in (None, ""):
            values[key] = line.get(key)
    for source, key in copies:
        if source == "Invoice" and values.get(key) in (None, ""):
            values[key] = invoice.get(key)
    return tuple(sorted(values.items()))


#: The line fields :func:`invoice_bookings` reads (besides copied custom
#: fields and G/L criteria; see :func:`line_fields`).
_BOOKING_LINE_FIELDS = frozenset({
    "id", "name", "invoice", "sequence", "postotalnet", "postotaltax", "postotalgross", "taxcode", "taxrate",
    "appliedtaxrule", "center", "costobject", "billingpractice", "subinvoice", "isdeduction",
    "glaccount", "glaccount2", "glaccountrule",
})


def line_fields(ctx: Context, resolver: AccountResolver) -> frozenset[str]:
    """Every line field that booking an invoice reads: lets finalization read
    just these columns of a run's lines."""
    copied = {key for source, key in copied_fields(ctx) if source == "InvoiceLineItem"}
    return _BOOKING_LINE_FIELDS | resolver.line_fields() | copied


def booking_date(invoice: Mapping[str, object]) -> date:
    return invoice.get("on_bookingdate__c") or invoice["date"]  # type: ignore[return-value]


def debtor_of(invoice: Mapping[str, object], account: Mapping[str, object]) -> str | None:
    """The invoice's debtor (business partner account): ``Invoice.DebtorNo__c``,
    else the account's ``ON_DebtorNo__c``."""
    return invoice.get("debtorno__c") or account.get("on_debtorno__c")  # type: ignore[return-value]


def invoice_booking_set(ctx: Context, resolver: AccountResolver, invoice: Mapping[str, object],
                        lines: Sequence[Mapping[str, object]], account: Mapping[str, object],
                        sub_types: Mapping[int, str], provenance: Mapping[str, object], *,
                        gl_choices: Sequence[AccountChoice] | None = None) -> BookingSet:
    """:func:`invoice_bookings` as the set the booking writer takes: the
    debtor must move by exactly the invoice's grand total."""
    bookings = invoice_bookings(ctx, resolver, invoice, lines, account, sub_types, provenance, gl_choices=gl_choices)
    return BookingSet(tuple(bookings), debtor=str(debtor_of(invoice, account)),
                      receivable=Decimal(invoice["grandtotal"]))  # type: ignore[arg-type]


def invoice_bookings(
    ctx: Context,
    resolver: AccountResolver,
    invoice: Mapping[str, object],
    lines: Sequence[Mapping[str, object]],
    account: Mapping[str, object],
    sub_types: Mapping[int, str],
    provenance: Mapping[str, object],
    *,
    gl_choices: Sequence[AccountChoice] | None = None,
) -> list[Booking]:
    """``gl_choices``, when given, are the lines' G/L decisions already made
    (by finalization's line assignment), one per line in order. A "line" may
    stand for several alike lines that the caller summed (finalization sums
    them in SQL): ``_names`` then lists their names.

    Pure: nothing is checked or written here; the booking writer checks the
    set (:func:`invoice_booking_set`) before it writes it."""
    debtor = debtor_of(invoice, account)
    if not debtor:
        raise BookingError(
            f"invoice {invoice.get('name')}: no debtor account (Invoice.DebtorNo__c or Account.ON_DebtorNo__c)",
            where=invoice_where(invoice.get("name")),
            hint="set Invoice.DebtorNo__c or the account's ON_DebtorNo__c",
        )
    copies = copied_fields(ctx)
    base = common_fields(invoice, account, str(debtor), provenance)
    groups: dict[tuple, dict] = {}
    choices: dict[tuple, AccountChoice] = {}
    tax_groups: dict[tuple, dict] = {}
    progress = invoice.get("type") in INTERIM_INVOICE_TYPES

    def collective(booking_type: str, line: Mapping[str, object]) -> AccountChoice:
        # The question is built only when a collective account is consulted (memoized there).
        return resolver.required_collective(booking_type, line_question(invoice, line), invoice)

    for index, line in enumerate(lines):
        custom = custom_values(copies, invoice, line) if copies else ()
        rate = Decimal(line.get("taxrate") or 0)
        tax_code = line.get("taxcode")
        sub_type = sub_types.get(int(line["subinvoice"])) if line.get("isdeduction") and line.get("subinvoice") else None
        if progress:
            booking_type, amount, gross = "Interim Revenue", Decimal(line["postotalgross"]), True
            choice = collective(booking_type, line)
        elif sub_type in INTERIM_INVOICE_TYPES:
            booking_type, amount, gross = "Interim Payment Clearing", -Decimal(line["postotalnet"]), False
            choice = collective(booking_type, line)
        else:
            booking_type, amount, gross = "Revenue", Decimal(line["postotalnet"]), False
            choice = gl_choices[index] if gl_choices is not None else resolver.gl_account(invoice, line)
            if choice.account is None:
                choice = collective("Revenue", line)
        key = (
            booking_type, choice.account, choice.contra, tax_code, rate, line.get("center"), line.get("costobject"),
            line.get("billingpractice"), gross, custom,
        )
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                **base,
                "type": booking_type,
                "amount": ZERO,
                "accountno": choice.account,
                "contraaccountno": choice.contra,
                "accountrule": choice.rule,
                "taxcode": tax_code,
                "taxrate": rate,
                "appliedtaxrule": line.get("appliedtaxrule"),
                "center": line.get("center"),
                "costobject": line.get("costobject"),
                "billingpractice": line.get("billingpractice"),
                "isgross": gross,
                "_lines": [],
                **dict(custom),
            }
            choices[key] = choice
        group["amount"] += amount
        group["_lines"].extend(_names(line))
        if not progress and Decimal(line.get("postotaltax") or 0) != 0:
            tax_key = (tax_code, rate, line.get("appliedtaxrule"), custom)
            tax = tax_groups.get(tax_key)
            if tax is None:
                tax_choice = collective("Tax", line)
                tax = tax_groups[tax_key] = {
                    **base,
                    "type": "Tax",
                    "amount": ZERO,
                    "accountno": tax_choice.account,
                    "contraaccountno": tax_choice.contra,
                    "accountrule": tax_choice.rule,
                    "taxcode": tax_code,
                    "taxrate": rate,
                    "appliedtaxrule": line.get("appliedtaxrule"),
                    "isgross": False,
                    "_lines": [],
                    "_choice": tax_choice,
                    **dict(custom),
                }
            tax["amount"] += Decimal(line["postotaltax"])
            tax["_lines"].extend(_names(line))
    bookings = []
    for key, group in groups.items():
        if group["amount"] != 0:
            bookings.append(Booking(_finish(group), choices[key]))
    for tax in tax_groups.values():
        choice = tax.pop("_choice")
        if tax["amount"] != 0:
            bookings.append(Booking(_finish(tax), choice))
    return bookings


def _names(line: Mapping[str, object]) -> list[str]:
    """The names of the lines a line stands for: itself, or, for a group of
    alike lines summed by the caller, its ``_names``."""
    names = line.get("_names")
    if names is not None:
        return names  # type: ignore[return-value]
    return [str(line.get("name") or line.get("id"))]


def common_fields(invoice: Mapping[str, object], account: Mapping[str, object], debtor: str,
                  provenance: Mapping[str, object]) -> dict:
    """The fields every booking detail of an invoice (or of a balance on it)
    takes from the invoice and its account, with provenance."""
    return {
        "bookingdate": booking_date(invoice),
        "originalbookingdate": booking_date(invoice),
        "businessentity": invoice.get("businessentity"),
        "account": invoice.get("account"),
        "accountname": invoice.get("accountname"),
        "invoice": invoice.get("id"),
        "invoiceno": invoice.get("name"),
        "bpaccountno": debtor,
        "billingcity": invoice.get("billingcity"),
        "iban": invoice.get("bankaccount"),
        "bic": invoice.get("bankcode"),
        "bankaccountowner": invoice.get("bankaccountowner"),
        "region": invoice.get("region"),
        "subscription": invoice.get("subscription"),
        "vatid": account.get("on_vatnumber__c") or account.get("taxnumber"),
        "currencyisocode": invoice.get("currencyisocode"),
        "exported": False,
        **provenance,
    }


def _finish(detail: dict) -> dict:
    detail["invoicelineitems"] = ", ".join(detail.pop("_lines"))[:1024]
    detail["debitcredit"] = debit_credit_flag(detail)
    return detail
