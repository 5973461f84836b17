"""Exports of booking data and payment orders: the booking journal CSV, the
DATEV EXTF Buchungsstapel with its accounting documents, and the SEPA files
(see README.md). :mod:`.service` holds one function per ``metabill export``
command.

Posting direction always comes from :func:`engine.booking.postings.sides`;
text cells are defused against spreadsheet formula injection by the same
function as record exports (:func:`engine.storage.csvio.cell_text`).
"""

#: Each public name and the submodule defining it (imported when first used).
_LAZY = {
    "TransferResult": ".accounting_documents",
    "transfer_documents": ".accounting_documents",
    "DatevParams": ".datev",
    "DatevReport": ".datev",
    "Excluded": ".datev",
    "export_datev": ".datev",
    "params_from_setting": ".datev",
    "DatevExportError": ".errors",
    "DatevParameterError": ".errors",
    "JournalExportError": ".errors",
    "SepaExportError": ".errors",
    "SepaXmlError": ".errors",
    "UnknownInvoiceNumber": ".errors",
    "JOURNAL_COLUMNS": ".journal",
    "JournalRow": ".journal",
    "journal_rows": ".journal",
    "write_journal_csv": ".journal",
}

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


def __getattr__(name: str):
    """Names of the submodules, imported on first use: importing the
    package (which every ``engine.exports.x`` import does) stays cheap, so
    validate-config does not pay for the database layer it never uses."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value
