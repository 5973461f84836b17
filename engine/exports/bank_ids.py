"""Bank identifiers as SEPA needs them, without the database layer: IBAN and
BIC checked with schwifty, and the remittance template's placeholders. The
SEPA export and validate-config's checks of business entities use the same
functions (``sepa_parties.py``, ``checks.py``)."""

from __future__ import annotations

import re

from schwifty import BIC, IBAN

#: A ``[FieldName]`` placeholder of the remittance template.
PLACEHOLDER = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)\]")


def check_iban(value: object, label: str) -> tuple[str | None, str | None]:
    """``(compact IBAN, None)`` or ``(None, problem)``, checked with schwifty:
    structure, check digits, country format, SEPA zone."""
    text = str(value or "").strip()
    if not text:
        return None, f"{label} is empty"
    try:
        iban = IBAN(text)
    except ValueError as error:
        return None, f"{label} {text!r} is not a valid IBAN ({error})"
    if not iban.in_sepa_zone:
        return None, f"{label} {text!r} is not an IBAN of the SEPA zone"
    return str(iban.compact), None


def check_bic(value: object, label: str) -> tuple[str | None, str | None]:
    """``(BIC or None when empty, None)`` or ``(None, problem)`` (schwifty)."""
    text = str(value or "").strip()
    if not text:
        return None, None
    try:
        return str(BIC(text).compact), None
    except ValueError as error:
        return None, f"{label} {text!r} is not a valid BIC ({error})"
