"""Exports of booking data: the booking journal CSV and the DATEV EXTF
Buchungsstapel with its accounting documents (see README.md).

Posting direction always comes from :func:`engine.booking.postings.sides`;
text cells are defused against spreadsheet formula injection by the same
function as record exports (:mod:`engine.storage.records`).
"""

from .datev import (
    DatevExportError,
    DatevParameterError,
    DatevParams,
    DatevReport,
    Excluded,
    TransferResult,
    export_datev,
    params_from_setting,
    transfer_documents,
)
from .journal import JOURNAL_COLUMNS, JournalRow, journal_rows, write_journal_csv

__all__ = [
    "DatevExportError",
    "DatevParameterError",
    "DatevParams",
    "DatevReport",
    "Excluded",
    "JOURNAL_COLUMNS",
    "JournalRow",
    "TransferResult",
    "export_datev",
    "journal_rows",
    "params_from_setting",
    "transfer_documents",
    "write_journal_csv",
]
