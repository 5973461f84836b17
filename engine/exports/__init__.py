"""Exports of booking data and payment orders: the booking journal CSV, the
DATEV EXTF Buchungsstapel with its accounting documents, and the SEPA files
(see README.md). :mod:`.service` holds one function per ``metabill export``
command.

Posting direction always comes from :func:`engine.booking.postings.sides`;
text cells are defused against spreadsheet formula injection by the same
function as record exports (:func:`engine.storage.csvio.cell_text`).
"""

from .accounting_documents import TransferResult, transfer_documents
from .datev import DatevParams, DatevReport, Excluded, export_datev, params_from_setting
from .errors import (
    DatevExportError,
    DatevParameterError,
    JournalExportError,
    SepaExportError,
    SepaXmlError,
    UnknownInvoiceNumber,
)
from .journal import JOURNAL_COLUMNS, JournalRow, journal_rows, write_journal_csv

__all__ = [
    "DatevExportError",
    "DatevParameterError",
    "DatevParams",
    "DatevReport",
    "Excluded",
    "JOURNAL_COLUMNS",
    "JournalExportError",
    "JournalRow",
    "SepaExportError",
    "SepaXmlError",
    "TransferResult",
    "UnknownInvoiceNumber",
    "export_datev",
    "journal_rows",
    "params_from_setting",
    "transfer_documents",
    "write_journal_csv",
]
