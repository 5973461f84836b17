"""Registering a payment on an invoice, with its balance and bookings.

This is the first slice of payment handling (the balances issue builds the
rest: overpayment policy, write-offs, assignment, imports): a payment of P on
an open invoice becomes a ``Payment`` balance of -P on it, the invoice balance
and status follow (``Paid`` at zero), and when bookkeeping is on the payment
is booked (domain-spec §5.4, §5.6):

* ``Payment``: the collective account of type Payment (the bank) against the
  debtor;
* on a progress invoice additionally ``Interim Payment`` (received down
  payment, net) and ``Interim Tax`` (the tax that arises on receipt), each
  against the contra account of its collective account, split per tax rate in
  proportion to the invoice's gross amounts.

Collective-account criteria of a payment booking see the invoice's tax code
(when it has exactly one): seed 003 configures the bank account with tax code
DE_19, and the payment of a DE_19 invoice must find it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.billing.money import allocate, net_of_gross
from engine.config.model import OrgModel
from engine.storage.bulk import RowWriter
from engine.storage.schema import build_metadata


class PaymentError(ValueError):
    """The payment cannot be registered (message for the user)."""


@dataclass(frozen=True)
class Registered:
    invoice_name: str
    amount: Decimal
    balance_id: int
    invoice_balance: Decimal
    status: str


def register_payment(conn: sa.Connection, model: OrgModel, invoice_name: str, amount: Decimal, when: date,
                     *, reference: str | None = None) -> Registered:
    """Register ``amount`` (> 0) received on the invoice named ``invoice_name``
    inside the caller's transaction."""
    if amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise PaymentError(f"a payment amount must be positive with at most two decimals, got {amount}")
    tables = build_metadata(model).tables
    invoice_table = tables[model.require("Invoice").table_name]
    row = conn.execute(sa.select(invoice_table).where(invoice_table.c.name == invoice_name)).mappings().first()
    if row is None:
        raise PaymentError(f"no invoice {invoice_name}")
    invoice = dict(row)
    if invoice["status"] not in ("Open", "Paid"):
        raise PaymentError(f"{invoice_name} is {invoice['status']}: payments go to finalized invoices")
    open_amount = invoice["balance"] or Decimal("0.00")
    if amount > open_amount:
        raise PaymentError(
            f"{amount} exceeds the open amount {open_amount} of {invoice_name} "
            "(overpayments are handled by the balance features, not yet available)"
        )
    balance = {
        "account": invoice["account"], "invoice": invoice["id"], "type": "Payment", "amount": -amount, "date": when,
        "reference": reference, "currencyisocode": invoice.get("currencyisocode"), "confighash": model.config_hash,
    }
    RowWriter(conn, model.require("Balance")).insert([balance])
    remaining = open_amount - amount
    status = "Paid" if remaining == 0 else "Open"
    conn.execute(
        sa.update(invoice_table).where(invoice_table.c.id == invoice["id"])
        .values(balance=remaining, status=status, paymentdate=when if remaining == 0 else None)
    )
    settings = model.hierarchy_default("GlobalSettings")
    if settings is not None and settings.get("CreateBookkeepingData") and settings.get("EnablePaymentBookingData"):
        _book_payment(conn, model, invoice, balance, amount, when, reference)
    return Registered(invoice_name, amount, balance["id"], remaining, status)


def _book_payment(conn, model: OrgModel, invoice: dict, balance: dict, amount: Decimal, when: date,
                  reference: str | None) -> None:
    from engine.booking.accounts import AccountResolver
    from engine.booking.invoices import Booking, BookingError, _collective, _common_fields, copied_fields, custom_values
    from engine.booking.postings import check_postings, debit_credit_flag
    from engine.booking.write import load_account, write_bookings

    tables = build_metadata(model).tables
    line_table = tables[model.require("InvoiceLineItem").table_name]
    lines = [dict(r) for r in conn.execute(sa.select(line_table).where(line_table.c.invoice == invoice["id"])).mappings()]
    codes = {line.get("taxcode") for line in lines if line.get("taxcode")}
    account = load_account(conn, model, invoice["account"], when)
    debtor = invoice.get("debtorno__c") or account.get("on_debtorno__c")
    if not debtor:
        raise PaymentError(f"invoice {invoice['name']}: no debtor account to book the payment against")
    resolver = AccountResolver(model)
    base = _common_fields(invoice, account, str(debtor), {"run": "", "confighash": model.config_hash})
    base.update(bookingdate=when, originalbookingdate=when, paymentdate=when, balance=balance["id"], _reference=reference)
    base.update(dict(custom_values(copied_fields(model), invoice, None)))
    context = {"taxcode": next(iter(codes)) if len(codes) == 1 else None,
               "businessentity": invoice.get("businessentity"), "region": invoice.get("region")}
    details: list[Booking] = []
    try:
        choice = _collective(resolver, "Payment", context, invoice)
        details.append(Booking({**base, "type": "Payment", "amount": amount, "accountno": choice.account,
                                "contraaccountno": choice.contra, "accountrule": choice.rule,
                                "bpaccountno": choice.bp_account or debtor}, choice))
        if invoice.get("type") == "Progress":
            by_rate: dict[tuple, Decimal] = {}
            for line in lines:
                key = (line.get("taxcode"), Decimal(line.get("taxrate") or 0), line.get("appliedtaxrule"))
                by_rate[key] = by_rate.get(key, Decimal("0.00")) + Decimal(line["postotalgross"])
            keys = sorted(by_rate, key=lambda k: (str(k[0]), k[1]))
            for (code, rate, rule), part in zip(keys, allocate(amount, [by_rate[k] for k in keys])):
                net = net_of_gross(part, rate)
                rate_context = {**context, "taxcode": code, "appliedtaxrule": rule}
                for booking_type, value in (("Interim Payment", net), ("Interim Tax", part - net)):
                    if value == 0:
                        continue
                    interim = _collective(resolver, booking_type, rate_context, invoice)
                    details.append(Booking({**base, "type": booking_type, "amount": value,
                                            "accountno": interim.account, "contraaccountno": interim.contra,
                                            "accountrule": interim.rule, "taxcode": code, "taxrate": rate,
                                            "appliedtaxrule": rule, "isgross": False}, interim))
    except BookingError as error:
        raise PaymentError(str(error)) from None
    for booking in details:
        booking.fields["debitcredit"] = debit_credit_flag(booking.fields)
        booking.fields["invoicelineitems"] = None
    check_postings([b.fields for b in details])
    write_bookings(conn, model, details)
