"""DATEV export: an EXTF "Buchungsstapel" file plus accounting documents.

:func:`export_datev` writes the booking details of one fiscal year that are not
yet exported (all of them with ``force=True``) as a DATEV-Format
Buchungsstapel (header version 700, format category 21, format version 13),
and in the same database transaction

* creates the accounting documents (:mod:`.accounting_documents`): one
  AccountingDocument per invoice and one AccountingDocumentItem per exported
  booking detail, with the default mapping of domain-spec §7.5 plus every
  custom field (``__c``) that exists with the same name and type on the
  BookingDetail and the document or item (seed 004, e.g. ``BuCode__c``);
* marks the exported details ``Exported = true``,
  ``ExportDestination = 'DATEV'``.

The caller owns the transaction: when anything fails, nothing is marked and
no document exists, so the file must be discarded too.
:func:`engine.exports.service.export_datev_file` stages the file, syncs it
before the commit and gives it its name after the commit.

Some details cannot go to DATEV; they are left unexported and listed in the
report (:class:`Excluded`) with the reason:

* interim bookings of progress invoices (Interim Revenue, Interim Payment,
  Interim Payment Clearing, Interim Tax): not compatible with the DATEV
  connector (seed 003);
* amounts in another currency than the batch's (DATEV needs an exchange
  rate and an amount in the base currency, which booking details lack);
* accounts that are not DATEV account numbers (digits only, at most
  Sachkontenlänge + 1 digits), an invoice number that DATEV does not take as
  Belegfeld 1, a BU-Schlüssel that is not 1-4 digits, a zero amount, or a
  custom field value too long for the accounting document field it is copied
  to.

File format (DATEV developer portal, "DATEV-Format", header and
Buchungsstapel pages): fields separated by ``;``, lines ending CR LF, text
fields in double quotes (quotes doubled, no control characters), numbers with
a decimal comma and without thousands separators, Belegdatum as ``DDMM``
(the year comes from the header's date range, which is why one file never
spans two fiscal years), encoding Windows-1252 ("ANSI"), the encoding DATEV
imports; characters it cannot hold become ``?``. All 125 columns of format
version 13 are present; only those this engine has data for are filled.
Text cells are defused against spreadsheet formula injection like every CSV
of the engine (a leading ``'``).

Posting direction: ``Konto`` is the detail's AccountNo, ``Gegenkonto`` its
counter account (contra account, else business partner account) and the
Soll/Haben-Kennzeichen says on which side Konto is posted, taken from
:func:`engine.booking.postings.sides`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, BinaryIO, Mapping

import sqlalchemy as sa

from engine.booking.postings import counter_account, sides
from engine.config.model import SettingRecord
from engine.domain.batching import chunks
from engine.domain.errors import Problem, Where
from engine.domain.money import CENT
from engine.storage.bulk import update_by_id
from engine.storage.context import Context
from engine.storage.csvio import cell_text

from .accounting_documents import DocumentTransfer
from .datev_rules import (DEFAULT_DESCRIPTION, ENCODING, KOST_LENGTH, SETTING_FIELDS, DatevParams, account_problem,
                          as_date)
from .errors import DatevDetailsLeftOut, DatevExportError, DatevParameterError
from .journal import detail_query, stream_details

#: Booking detail types whose details never go to DATEV (seed 003).
INTERIM_TYPES = frozenset({"Interim Revenue", "Interim Payment", "Interim Payment Clearing", "Interim Tax"})
#: ``ExportDestination`` of details exported by this module.
DESTINATION = "DATEV"
#: The encoding DATEV imports ("ANSI", Windows code page 1252).
LINE_END = "\r\n"

HEADER_VERSION = 700
FORMAT_CATEGORY = 21
FORMAT_NAME = "Buchungsstapel"
FORMAT_VERSION = 13
#: Header field 8 "Herkunft": two characters naming the exporting application.
ORIGIN = "MB"
EXPORTED_BY = "metabill"

#: Column headings of a Buchungsstapel, format version 13 (125 columns), as in
#: DATEV's sample file.
COLUMNS: tuple[str, ...] = tuple(
    [
        "Umsatz (ohne Soll/Haben-Kz)", "Soll/Haben-Kennzeichen", "WKZ Umsatz", "Kurs", "Basis-Umsatz",
        "WKZ Basis-Umsatz", "Konto", "Gegenkonto (ohne BU-Schlüssel)", "BU-Schlüssel", "Belegdatum",
        "Belegfeld 1", "Belegfeld 2", "Skonto", "Buchungstext", "Postensperre", "Diverse Adressnummer",
        "Geschäftspartnerbank", "Sachverhalt", "Zinssperre", "Beleglink",
    ]
    + [f"Beleginfo - {part} {n}" for n in range(1, 9) for part in ("Art", "Inhalt")]
    + [
        "KOST1 - Kostenstelle", "KOST2 - Kostenstelle", "Kost-Menge", "EU-Land u. UStID (Bestimmung)",
        "EU-Steuersatz (Bestimmung)", "Abw. Versteuerungsart", "Sachverhalt L+L", "Funktionsergänzung L+L",
        "BU 49 Hauptfunktionstyp", "BU 49 Hauptfunktionsnummer", "BU 49 Funktionsergänzung",
    ]
    + [heading for n in range(1, 21) for heading in (f"Zusatzinformation - Art {n}", f"Zusatzinformation- Inhalt {n}")]
    + [
        "Stück", "Gewicht", "Zahlweise", "Forderungsart", "Veranlagungsjahr", "Zugeordnete Fälligkeit",
        "Skontotyp", "Auftragsnummer", "Buchungstyp", "USt-Schlüssel (Anzahlungen)", "EU-Land (Anzahlungen)",
        "Sachverhalt L+L (Anzahlungen)", "EU-Steuersatz (Anzahlungen)", "Erlöskonto (Anzahlungen)",
        "Herkunft-Kz", "Buchungs GUID", "KOST-Datum", "SEPA-Mandatsreferenz", "Skontosperre",
        "Gesellschaftername", "Beteiligtennummer", "Identifikationsnummer", "Zeichnernummer",
        "Postensperre bis", "Bezeichnung SoBil-Sachverhalt", "Kennzeichen SoBil-Buchung", "Festschreibung",
        "Leistungsdatum", "Datum Zuord. Steuerperiode", "Fälligkeit", "Generalumkehr (GU)", "Steuersatz",
        "Land", "Abrechnungsreferenz", "BVV-Position", "EU-Land u. UStID (Ursprung)",
        "EU-Steuersatz (Ursprung)", "Abw. Skontokonto",
    ]
)
assert len(COLUMNS) == 125, len(COLUMNS)
_AT = {heading: index for index, heading in enumerate(COLUMNS)}

#: The BookingDetail field holding the DATEV BU-Schlüssel (seed 004).
BU_FIELD = "BuCode__c"

BUCHUNGSTEXT_LENGTH = 60
BELEGFELD_LENGTH = 36
MARK_BATCH = 1_000
SPOOL_BYTES = 8 * 2**20

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BELEGFELD = re.compile(r"[A-Za-z0-9$&%*+\-/]*")
_BU_CODE = re.compile(r"[0-9]{1,4}")
_AMOUNT = re.compile(r"[0-9]{1,10},[0-9]{2}")


# ---------------------------------------------------------------------------
# Parameters


def params_from_setting(ctx: Context, setting_name: str | None = None, **overrides: object) -> DatevParams:
    """The DATEV parameters: keyword ``overrides`` (None = not given) win over
    the ExportSetting record's fields named in :data:`SETTING_FIELDS` (read
    only when the org declares them). ``setting_name`` picks the record;
    without it, the first active record holding a DATEV consultant number.
    Raises :class:`DatevParameterError` naming what is missing."""
    model = ctx.model
    record = None
    if setting_name is not None:
        record = model.setting_record("ExportSetting", setting_name)
        if record is None:
            raise DatevParameterError(f"no ExportSetting record named {setting_name!r}",
                                      where=Where(object="ExportSetting", record=setting_name))
    else:
        for candidate in model.setting_records("ExportSetting"):
            if candidate.get("Active", True) and _setting_value(candidate, "consultant") is not None:
                record = candidate
                break
    values: dict[str, Any] = {}
    for key in SETTING_FIELDS:
        value = overrides.get(key)
        if value is None and record is not None:
            value = _setting_value(record, key)
        if value is not None:
            values[key] = value
    for key in ("description", "date_from", "date_to", "currency"):
        if overrides.get(key) is not None:
            values[key] = overrides[key]
    missing = [key for key in ("consultant", "client", "fiscal_year_start", "account_length") if key not in values]
    if missing:
        names = ", ".join(f"{key.replace('_', ' ')} (ExportSetting.{SETTING_FIELDS[key]})" for key in missing)
        raise DatevParameterError(
            f"missing DATEV parameter(s): {names}",
            where=Where(object="ExportSetting", record=record.name) if record is not None else None,
            hint="set them on the ExportSetting record or give them as options (metabill export datev --help)",
        )
    try:
        params = DatevParams(
            consultant=int(values["consultant"]),
            client=int(values["client"]),
            fiscal_year_start=as_date(values["fiscal_year_start"]),
            account_length=int(values["account_length"]),
            description=str(values.get("description") or DEFAULT_DESCRIPTION),
            chart_of_accounts=str(values["chart_of_accounts"]) if values.get("chart_of_accounts") else None,
            date_from=as_date(values["date_from"]) if values.get("date_from") else None,
            date_to=as_date(values["date_to"]) if values.get("date_to") else None,
            currency=str(values.get("currency") or "EUR"),
        )
    except (TypeError, ValueError) as error:
        raise DatevParameterError(f"invalid DATEV parameter: {error}") from None
    params.validate()
    return params


def _setting_value(record: SettingRecord, key: str) -> object:
    """A DATEV parameter from an ExportSetting record: the product field
    (``DatevClientNumber``) or a customer field of that name (``DatevClientNumber__c``)."""
    name = SETTING_FIELDS[key]
    value = record.get(name)
    return value if value is not None else record.get(name + "__c")


# ---------------------------------------------------------------------------
# Reports


@dataclass(frozen=True)
class Excluded:
    """A booking detail that was not exported, and why."""

    detail_id: int
    name: str | None
    type: str
    invoice_no: str | None
    booking_date: date | None
    amount: Decimal
    reason: str
    #: Why, as a kind: ``by design`` (interim bookings, another currency:
    #: DATEV does not take them, the audit lists them as left out) or
    #: ``data`` (a value DATEV refuses: to be corrected, the export is partial).
    kind: str = "data"

    @property
    def by_design(self) -> bool:
        return self.kind == "by design"


@dataclass
class DatevReport:
    """What an export did: the booking dates of the file, the details exported,
    skipped as already exported and excluded (with reasons), and the
    accounting documents and items created."""

    created: datetime
    forced: bool
    date_from: date
    date_to: date
    exported: int = 0
    already_exported: int = 0
    documents: int = 0
    items: int = 0
    excluded: list[Excluded] = field(default_factory=list)

    def failure_error(self) -> DatevDetailsLeftOut | None:
        """The error the command ends with when details were left out for a
        value DATEV refuses (exit code 4: the rest was exported); details left
        out by design (interim bookings, other currencies) are no failure:
        ``metabill audit`` lists them with their amounts."""
        refused = [item for item in self.excluded if not item.by_design]
        if not refused:
            return None
        return DatevDetailsLeftOut(
            f"{len(refused)} booking detail(s) left out of the DATEV file for values DATEV refuses",
            problems=[Problem(DatevDetailsLeftOut.code, item.reason,
                              Where(object="BookingDetail", record=item.name or str(item.detail_id)))
                      for item in refused],
            partly_done=True)


# ---------------------------------------------------------------------------
# Cells and lines


def _text(value: object, limit: int | None = None) -> str:
    """A DATEV text field: control characters as spaces, defused against
    formula injection, cut to ``limit``, quoted with quotes doubled."""
    text = "" if value is None else _CONTROL.sub(" ", str(value))
    text = cell_text(text) if text else ""
    if limit is not None:
        text = text[:limit]
    return '"' + text.replace('"', '""') + '"'


def _amount(value: Decimal) -> str:
    return format(abs(value).quantize(CENT), "f").replace(".", ",")


def header_line(params: DatevParams, created: datetime, date_from: date, date_to: date) -> str:
    """Line 1 of the file: the 31 header fields of header version 700."""
    stamp = created.strftime("%Y%m%d%H%M%S") + f"{created.microsecond // 1000:03d}"
    fields = [
        _text("EXTF"),  # 1 Kennzeichen (EXTF = written by a third-party application)
        str(HEADER_VERSION),  # 2 Versionsnummer
        str(FORMAT_CATEGORY),  # 3 Formatkategorie (21 = Buchungsstapel)
        _text(FORMAT_NAME),  # 4 Formatname
        str(FORMAT_VERSION),  # 5 Formatversion
        stamp,  # 6 Erzeugt am
        "",  # 7 Importiert (DATEV fills it)
        _text(ORIGIN),  # 8 Herkunft
        _text(EXPORTED_BY),  # 9 Exportiert von
        _text(""),  # 10 Importiert von
        str(params.consultant),  # 11 Beraternummer
        str(params.client),  # 12 Mandantennummer
        params.fiscal_year_start.strftime("%Y%m%d"),  # 13 WJ-Beginn
        str(params.account_length),  # 14 Sachkontenlänge
        date_from.strftime("%Y%m%d"),  # 15 Datum vom
        date_to.strftime("%Y%m%d"),  # 16 Datum bis
        _text(params.description, 30),  # 17 Bezeichnung
        _text(""),  # 18 Diktatkürzel
        "1",  # 19 Buchungstyp (1 = Finanzbuchführung)
        "0",  # 20 Rechnungslegungszweck (0 = unabhängig)
        "0",  # 21 Festschreibung (0 = not locked: the tax adviser reviews, then locks)
        _text(params.currency),  # 22 WKZ
        "",  # 23 reserviert
        _text(""),  # 24 Derivatskennzeichen
        "",  # 25 reserviert
        "",  # 26 reserviert
        _text(params.chart_of_accounts or ""),  # 27 Sachkontenrahmen
        "",  # 28 ID der Branchenlösung
        "",  # 29 reserviert
        _text(""),  # 30 reserviert
        _text(""),  # 31 Anwendungsinformation
    ]
    return ";".join(fields)


def columns_line() -> str:
    """Line 2: the column headings."""
    return ";".join(COLUMNS)


def _left_out_by_design(detail: Mapping[str, Any], params: DatevParams) -> bool:
    """Interim bookings and other currencies: DATEV does not take them at all."""
    return (str(detail.get("type")) in INTERIM_TYPES
            or (detail.get("currencyisocode") or params.currency) != params.currency)


def _exclusion(detail: Mapping[str, Any], params: DatevParams, bu_key: str | None) -> str | None:
    """Why ``detail`` cannot go into the Buchungsstapel, or None."""
    booking_type = str(detail.get("type"))
    if booking_type in INTERIM_TYPES:
        return f"{booking_type} is an interim booking of a progress invoice, which DATEV does not take (seed 003)"
    currency = detail.get("currencyisocode") or params.currency
    if currency != params.currency:
        return (
            f"amount in {currency}: DATEV needs an exchange rate (Kurs) and the amount in {params.currency} "
            f"(Basis-Umsatz), which the booking detail does not have"
        )
    amount = Decimal(detail.get("amount") or 0)
    if amount == 0:
        return "zero amount"
    if not _AMOUNT.fullmatch(_amount(amount)):
        return f"amount {amount} has more than 10 integer digits"
    for label, value in (("Konto (AccountNo)", detail.get("accountno")),
                         ("Gegenkonto (contra/business partner account)", counter_account(detail))):
        problem = account_problem(label, value, params.account_length)
        if problem:
            return problem
    debit, credit = sides(detail)
    if debit == credit:
        return f"Konto and Gegenkonto are both {debit}"
    invoice_no = cell_text(str(detail.get("invoiceno") or ""))
    if not _BELEGFELD.fullmatch(invoice_no) or len(invoice_no) > BELEGFELD_LENGTH:
        return (
            f"invoice number {detail.get('invoiceno')!r} cannot be Belegfeld 1 "
            f"(at most {BELEGFELD_LENGTH} of A-Z a-z 0-9 $ & % * + - /, no leading + or -)"
        )
    if bu_key is not None:
        code = detail.get(bu_key)
        if code not in (None, "") and not _BU_CODE.fullmatch(str(code)):
            return f"BU-Schlüssel {code!r} is not 1 to 4 digits"
    center = detail.get("center")
    if center and len(str(center)) > KOST_LENGTH:
        return f"center {center!r} is longer than {KOST_LENGTH} characters (KOST1)"
    return None


def detail_line(detail: Mapping[str, Any], bu_key: str | None) -> str:
    """One data line (125 fields) for a detail that passed :func:`_exclusion`."""
    cells = [""] * len(COLUMNS)
    debit, _ = sides(detail)
    account = detail.get("accountno")
    booking_date: date = detail["bookingdate"]
    text = detail.get("bookingtext") or f"{detail.get('type')} {detail.get('invoiceno') or ''}".strip()

    def put(heading: str, value: str) -> None:
        cells[_AT[heading]] = value

    put("Umsatz (ohne Soll/Haben-Kz)", _amount(Decimal(detail["amount"])))
    put("Soll/Haben-Kennzeichen", _text("S" if debit == account else "H"))
    put("WKZ Umsatz", _text(detail.get("currencyisocode") or ""))
    put("Konto", str(account))
    put("Gegenkonto (ohne BU-Schlüssel)", str(counter_account(detail)))
    put("BU-Schlüssel", _text(detail.get(bu_key) if bu_key else None))
    put("Belegdatum", booking_date.strftime("%d%m"))
    put("Belegfeld 1", _text(detail.get("invoiceno")))
    put("Buchungstext", _text(text, BUCHUNGSTEXT_LENGTH))
    if detail.get("center"):
        put("KOST1 - Kostenstelle", _text(detail.get("center"), KOST_LENGTH))
    delivery = detail.get("deliverydate")
    if isinstance(delivery, date):
        put("Leistungsdatum", delivery.strftime("%d%m%Y"))
    return ";".join(cells)


def _encode(line: str) -> bytes:
    return (line + LINE_END).encode(ENCODING, errors="replace")


# ---------------------------------------------------------------------------
# The export


def export_datev(
    conn: sa.Connection,
    ctx: Context,
    out: BinaryIO,
    params: DatevParams,
    *,
    force: bool = False,
    created: datetime | None = None,
) -> DatevReport:
    """Write the Buchungsstapel of ``params``' fiscal year (or date range) to
    the binary stream ``out`` and, in ``conn``'s transaction, create the
    accounting documents and mark the exported details. Details already
    exported are skipped unless ``force``. ``created`` is the "Erzeugt am"
    timestamp (local wall-clock time; default now), injected for
    reproducible files. Returns the report, including the excluded details."""
    params.validate()
    created = created or datetime.now()
    transferred_at = (created if created.tzinfo else created.astimezone()).astimezone(timezone.utc)
    first = max(params.fiscal_year_start, params.date_from or params.fiscal_year_start)
    last = min(params.fiscal_year_end, params.date_to or params.fiscal_year_end)
    detail_obj = ctx.obj("BookingDetail")
    bu_field = detail_obj.field(BU_FIELD)
    bu_key = bu_field.key if bu_field is not None and bu_field.is_stored else None

    item_table = ctx.table("AccountingDocumentItem")
    table, query = detail_query(conn, ctx, only_unexported=not force)
    has_item = sa.exists().where(item_table.c.bookingdetail == table.c.id).label("_has_item")
    query = query.add_columns(has_item).where(table.c.bookingdate >= first, table.c.bookingdate <= last)

    report = DatevReport(created=created, forced=force, date_from=first, date_to=last)
    if not force:
        report.already_exported = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(
                table.c.exported == sa.true(), table.c.bookingdate >= first, table.c.bookingdate <= last
            )
        ).scalar_one()

    transfer = DocumentTransfer(conn, ctx, transferred_at=transferred_at)
    exported_ids: list[int] = []
    seen_first: date | None = None
    seen_last: date | None = None
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
        for detail in stream_details(conn, query):
            already_transferred = bool(detail.pop("_has_item"))
            reason = _exclusion(detail, params, bu_key)
            if reason is None and not already_transferred:
                reason = transfer.problem(detail)
            if reason is not None:
                report.excluded.append(Excluded(
                    detail_id=int(detail["id"]),
                    name=detail.get("name"),
                    type=str(detail.get("type")),
                    invoice_no=detail.get("invoiceno"),
                    booking_date=detail.get("bookingdate"),
                    amount=Decimal(detail.get("amount") or 0),
                    reason=reason,
                    kind="by design" if _left_out_by_design(detail, params) else "data",
                ))
                continue
            body.write(_encode(detail_line(detail, bu_key)))
            if not already_transferred:
                transfer.add(detail)
            exported_ids.append(int(detail["id"]))
            when: date = detail["bookingdate"]
            seen_first = when if seen_first is None or when < seen_first else seen_first
            seen_last = when if seen_last is None or when > seen_last else seen_last
        transfer.flush()
        for chunk in chunks(exported_ids, MARK_BATCH):
            update_by_id(conn, detail_obj, ["Exported", "ExportDestination"],
                         [(ident, (True, DESTINATION)) for ident in chunk], timestamp=transferred_at)
        report.exported = len(exported_ids)
        report.documents = transfer.documents
        report.items = transfer.items
        if params.date_from is None and seen_first is not None:
            report.date_from = seen_first
        if params.date_to is None and seen_last is not None:
            report.date_to = seen_last
        out.write(_encode(header_line(params, created, report.date_from, report.date_to)))
        out.write(_encode(columns_line()))
        body.seek(0)
        shutil.copyfileobj(body, out)
    return report


__all__ = [
    "COLUMNS", "INTERIM_TYPES", "DatevExportError", "DatevParameterError", "DatevParams", "DatevReport", "Excluded",
    "columns_line", "detail_line", "export_datev", "header_line", "params_from_setting",
]
