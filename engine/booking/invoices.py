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
* progress invoices: ``Interim Revenue`` with the gross amount and no tax
  booking, since tax arises when the payment is received;
* deduction lines of a final invoice: for a Partial sub invoice they post to
  revenue like any line (so revenue nets to the not-yet-billed part); for a
  Progress sub invoice they are ``Interim Payment Clearing`` with the deducted
  net amount.

The debtor (business partner account) is the invoice's ``DebtorNo__c``, else
the account's ``ON_DebtorNo__c``. An invoice whose bookings would lack an
account is not finalized: a posting to nowhere is worse than no posting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Mapping, Sequence

from engine.domain.money import ZERO
from engine.config.model import FieldType, OrgModel

from .accounts import AccountChoice, AccountResolver
from .postings import check_postings, debit_credit_flag
from engine.storage.context import Context


class BookingError(ValueError):
    """No account for a booking, or no debtor: the invoice cannot be booked."""


@dataclass(frozen=True)
class Booking:
    """A booking detail to write, and the decision that chose its account."""

    fields: dict
    choice: AccountChoice | None


_COPIED: dict[int, tuple[OrgModel, tuple[tuple[str, str], ...]]] = {}


def copied_fields(ctx: Context) -> tuple[tuple[str, str], ...]:
    """Custom fields carried to booking details: (source object, field key) for
    every ``__c`` field that exists with the same name and type on Invoice or
    InvoiceLineItem and on BookingDetail (seed 004). Line values win.
    Memoized per (immutable) model."""
    model = ctx.model
    known = _COPIED.get(id(model))
    if known is not None and known[0] is model:
        return known[1]
    if len(_COPIED) >= 8:
        _COPIED.clear()
    found = _copied_fields(ctx)
    _COPIED[id(model)] = (model, found)
    return found


def _copied_fields(ctx: Context) -> tuple[tuple[str, str], ...]:
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
    them in SQL): ``_names`` then lists their names."""
    debtor = invoice.get("debtorno__c") or account.get("on_debtorno__c")
    if not debtor:
        raise BookingError(
            f"invoice {invoice.get('name')}: no debtor account (Invoice.DebtorNo__c or Account.ON_DebtorNo__c)"
        )
    copies = copied_fields(ctx)
    base = _common_fields(invoice, account, str(debtor), provenance)
    groups: dict[tuple, dict] = {}
    choices: dict[tuple, AccountChoice] = {}
    tax_groups: dict[tuple, dict] = {}
    progress = invoice.get("type") == "Progress"
    entity, region = invoice.get("businessentity"), invoice.get("region")

    def context_of(line: Mapping[str, object]) -> dict:
        # Built only when a collective account is consulted (memoized there).
        return {
            "taxcode": line.get("taxcode"),
            "appliedtaxrule": line.get("appliedtaxrule"),
            "businessentity": entity,
            "region": region,
            "billingpractice": line.get("billingpractice"),
        }

    for index, line in enumerate(lines):
        custom = custom_values(copies, invoice, line) if copies else ()
        rate = Decimal(line.get("taxrate") or 0)
        tax_code = line.get("taxcode")
        sub_type = sub_types.get(int(line["subinvoice"])) if line.get("isdeduction") and line.get("subinvoice") else None
        if progress:
            booking_type, amount, gross = "Interim Revenue", Decimal(line["postotalgross"]), True
            choice = _collective(resolver, booking_type, context_of(line), invoice)
        elif sub_type == "Progress":
            booking_type, amount, gross = "Interim Payment Clearing", -Decimal(line["postotalnet"]), False
            choice = _collective(resolver, booking_type, context_of(line), invoice)
        else:
            booking_type, amount, gross = "Revenue", Decimal(line["postotalnet"]), False
            choice = gl_choices[index] if gl_choices is not None else resolver.gl_account(invoice, line)
            if choice.account is None:
                choice = _collective(resolver, "Revenue", context_of(line), invoice)
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
                tax_choice = _collective(resolver, "Tax", context_of(line), invoice)
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
    check_postings([b.fields for b in bookings], debtor=str(debtor), receivable=Decimal(invoice["grandtotal"]))
    return bookings


def _names(line: Mapping[str, object]) -> list[str]:
    """The names of the lines a line stands for: itself, or, for a group of
    alike lines summed by the caller, its ``_names``."""
    names = line.get("_names")
    if names is not None:
        return names  # type: ignore[return-value]
    return [str(line.get("name") or line.get("id"))]


def _collective(resolver: AccountResolver, booking_type: str, context: Mapping[str, object],
                invoice: Mapping[str, object]) -> AccountChoice:
    choice = resolver.collective_account(booking_type, context)
    if choice.account is None:
        described = ", ".join(f"{k}={v!r}" for k, v in context.items() if v)
        raise BookingError(
            f"invoice {invoice.get('name')}: no collective account of type {booking_type} matches ({described})"
        )
    return choice


def _common_fields(invoice: Mapping[str, object], account: Mapping[str, object], debtor: str,
                   provenance: Mapping[str, object]) -> dict:
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
        "vatid": account.get("on_vatnumber__c") or account.get("taxnumber"),
        "currencyisocode": invoice.get("currencyisocode"),
        "exported": False,
        **provenance,
    }


def _finish(detail: dict) -> dict:
    detail["invoicelineitems"] = ", ".join(detail.pop("_lines"))[:1024]
    detail["debitcredit"] = debit_credit_flag(detail)
    return detail
