"""The account question: which values an account decision compares.

A collective account is chosen by comparing its criteria (tax code, tax
rule, business entity, region, billing practice, payment provider, bank
account id, clearing reason, the custom rule) with the values of the booking
it is for. Those values are assembled here, once per kind of booking, and
every caller asks with them: finalization, the final invoice's clearing of
interim revenue, balance bookings and ``metabill explain``. So explain,
asking again from the stored records, asks exactly what was asked when the
booking was made.

A question is a dict keyed by lower-case BookingDetail (or Balance) field;
:meth:`engine.booking.accounts.AccountResolver.collective_account` reads the
keys its criteria need. G/L account decisions read the invoice and the line
themselves (:meth:`~engine.booking.accounts.AccountResolver.gl_account`).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Mapping, Sequence

from engine.domain.values import read_value
from engine.storage.context import Context

#: The Balance field whose value is the custom rule of collective accounts (seed 002).
CUSTOM_RULE_FIELD = "CollectiveAccountRule__c"


def line_question(invoice: Mapping[str, object], line: Mapping[str, object]) -> dict:
    """The question of an invoice's own bookings (revenue without a G/L rule,
    tax, interim revenue, interim payment clearing): the line's tax code, tax
    rule and billing practice, the invoice's business entity and region.

    The final invoice's clearing of a progress invoice's interim revenue asks
    it too, with the progress invoice and its :func:`clearing_line`, so the
    reversal posts to the account the interim revenue was booked on."""
    return {
        "taxcode": line.get("taxcode"),
        "appliedtaxrule": line.get("appliedtaxrule"),
        "businessentity": invoice.get("businessentity"),
        "region": invoice.get("region"),
        "billingpractice": line.get("billingpractice"),
    }


def clearing_line(lines: Sequence[Mapping[str, object]],
                  group: Mapping[str, object] | None = None) -> Mapping[str, object]:
    """The line (in line order) whose values the clearing of a progress
    invoice's unpaid interim revenue is asked with: the first line of the
    tax group ``group`` (its ``taxcode``, ``taxrate``, ``appliedtaxrule``;
    the clearing is booked per tax group), else the first with a tax code."""
    if group is not None:
        wanted = (group.get("taxcode"), Decimal(group.get("taxrate") or 0), group.get("appliedtaxrule"))
        for line in lines:
            if (line.get("taxcode"), Decimal(line.get("taxrate") or 0), line.get("appliedtaxrule")) == wanted:
                return line
    return next((line for line in lines if line.get("taxcode")), {})


def single_tax_code(lines: Sequence[Mapping[str, object]]) -> object:
    """The invoice's tax code when all its taxed lines share one, else None."""
    codes = {line.get("taxcode") for line in lines if line.get("taxcode")}
    return next(iter(codes)) if len(codes) == 1 else None


def rule_value(ctx: Context, balance: Mapping[str, object], when: date) -> object:
    """The balance's ``CollectiveAccountRule__c`` (a formula or a stored
    field), or None when the org has no such field or it yields nothing."""
    fdef = ctx.obj("Balance").field(CUSTOM_RULE_FIELD)
    if fdef is None:
        return None
    try:
        value = read_value(fdef, balance, when)
    except ValueError:
        return None
    return value if value not in ("",) else None


def balance_question(ctx: Context, balance: Mapping[str, object], invoice: Mapping[str, object] | None,
                     lines: Sequence[Mapping[str, object]]) -> dict:
    """The question of a balance's bookings (payment, write-off, refund, ...):
    the balance's business entity, payment provider, bank account id,
    clearing reason and custom rule, the invoice's region and its tax code
    when it has exactly one (``lines`` are the invoice's lines)."""
    return {
        "taxcode": single_tax_code(lines),
        "businessentity": balance.get("businessentity"),
        "region": (invoice or {}).get("region"),
        "paymentprovider": balance.get("paymentprovider"),
        "bankaccountid": balance.get("bankaccountid"),
        "clearingreason": balance.get("clearingreason"),
        "collectiveaccountrule__c": rule_value(ctx, balance, balance["date"]),  # type: ignore[arg-type]
    }


def per_tax_group(question: Mapping[str, object], tax_code: object, tax_rule: object) -> dict:
    """A balance question for the part of a booking that is split per tax
    rate of the invoice (a write-off with tax correction, the interim
    bookings of a payment on a progress invoice): that group's tax code and
    tax rule instead of the invoice's."""
    return {**question, "taxcode": tax_code, "appliedtaxrule": tax_rule}
