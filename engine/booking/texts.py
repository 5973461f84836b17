"""The language of Booking Text records: ``[Placeholder]`` names.

A placeholder names a booking detail field or one of :data:`TEXT_EXTRAS`.
The booking writer fills them (:func:`engine.booking.write.render_text`);
validate-config checks them against the same two lists without loading
the database layer (:mod:`engine.booking.checks`).
"""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"\[([A-Za-z_]+)\]")
#: Booking-text placeholders beyond the booking detail's own fields, and the
#: booking detail value each stands for.
TEXT_EXTRAS = {
    "BookingTaxRate": "taxrate",
    "BookingTaxCode": "taxcode",
    "BookingType": "type",
    "BookingDate": "bookingdate",
    "BookingAccountRule": "accountrule",
    "BalanceDate": "paymentdate",
    "BalanceReference": "_reference",
}
