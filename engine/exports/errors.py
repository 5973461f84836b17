"""The failures of the exports (R500-R599).

Each is an :class:`~engine.domain.errors.EngineError` with a stable code and
keeps ``ValueError`` (or ``LookupError``) as a second base, as callers have
caught them as such. An export that raises one has changed nothing: its
transaction is rolled back and its file never receives its name.

The modules that raise them re-export them (``engine.exports.datev.DatevExportError``,
``engine.exports.sepa.SepaExportError``, ``engine.exports.sepa_xml.SepaXmlError``),
so callers import them from there.
"""

from __future__ import annotations

from engine.domain.errors import EngineError


class DatevExportError(EngineError, ValueError):
    """The DATEV export cannot be made; nothing was written or marked exported.

    Also raised when a booking detail's custom value does not fit the
    accounting document field it is copied to, and when the output file exists.
    """

    code = "R500"


class DatevDetailsLeftOut(EngineError):
    """Some booking details were left out of the DATEV file because DATEV
    refuses one of their values (account number, amount, BU key, center,
    invoice number); the others were exported. Correct them (a reversal and a
    new booking) and export again."""

    code = "R502"


class SepaOrdersLeftOut(EngineError):
    """Some invoices or balances were left out of the SEPA file because of
    their SEPA data (IBAN, BIC, mandate); the others were exported. The reason
    is on each invoice's SEPA Validation Error."""

    code = "R512"


class DatevParameterError(DatevExportError):
    """DATEV parameters are missing or invalid (consultant, client, fiscal year start, account length, dates)."""

    code = "R501"


class SepaExportError(EngineError, ValueError):
    """The SEPA export cannot be made at all; nothing was written or changed.

    Bad creditor data of the business entity, an unknown export setting, a
    collection or execution date before the export date, or an output file
    that exists. Invoices with bad SEPA data do not raise this: they are left
    out of the file and reported.
    """

    code = "R510"


class SepaXmlError(EngineError, ValueError):
    """An XML document is refused: not well-formed, declaring a DOCTYPE, not valid against its ISO 20022 XSD, or
    carrying an identifier the SEPA rules forbid (a leading or trailing ``/``, ``//``)."""

    code = "R511"


class UnknownInvoiceNumber(EngineError, LookupError):
    """An invoice number given to the booking journal export names no invoice."""

    code = "R520"


class JournalExportError(EngineError, ValueError):
    """The booking journal file cannot be written: the part file of another export is in the way."""

    code = "R521"
