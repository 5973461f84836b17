"""validate-config's checks of what the exports interpret.

An export that fails, or leaves bookings and orders out, because of a
setting is reported here first, at the value to change:

* the bank data of every business entity (IBAN and BIC with schwifty, the
  SEPA creditor identifier with python-stdnum: the functions the SEPA export
  applies), E166-E168;
* the DATEV parameters an ExportSetting record gives (the rules of
  :meth:`engine.exports.datev.DatevParams.problems`), E172;
* account numbers of G/L rules and collective accounts, and centers of
  center rules, that DATEV refuses (the export would leave every booking
  with them out), E173/E174;
* texts that cannot reach the file unchanged: a leading formula character
  (defused with a quote), characters outside DATEV's code page (written as
  ``?``), E170 (control characters are refused in every setting text, E070);
* ``[Placeholders]`` of the SEPA remittance text that name no field, E164.

The exporters pull in the database layer and the XML and bank libraries,
so each check imports what it uses when it runs.
"""

from __future__ import annotations

from typing import Iterator

from engine.config.checking import Check, CheckContext
from engine.config.diagnostics import Diagnostic, Location, did_you_mean, make
from engine.config.model import SettingRecord

_SEPA_FORMATS = ("SEPA Direct Debit", "SEPA Credit")


def _active(record: SettingRecord) -> bool:
    return bool(record.get("Active", True))


def _active_formats(ctx: CheckContext) -> set[str]:
    return {str(r.get("Format")) for r in ctx.model.setting_records("ExportSetting") if _active(r)}


def check_bank_data(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Every business entity's IBAN, BIC and SEPA creditor identifier, when
    given, passes the checks of the SEPA export; the values an active SEPA
    export needs are given."""
    records = ctx.model.setting_records("BusinessEntity")
    if not records:
        return
    from stdnum.eu import at_02  # noqa: PLC0415 - imported when validating only
    from stdnum.exceptions import ValidationError  # noqa: PLC0415

    from .bank_ids import check_bic, check_iban  # noqa: PLC0415

    formats = _active_formats(ctx)
    for record in records:
        for name in ("IBAN", "CreditIBAN"):
            value = record.get(name)
            if value in (None, ""):
                if name == "IBAN" and formats & set(_SEPA_FORMATS) and not record.get("CreditIBAN"):
                    yield make("E166", f"business entity '{record.name}' has no IBAN, which the active SEPA "
                               "exports need", record.source or Location("?"),
                               "add IBAN (and BIC) to the record")
                continue
            _, problem = check_iban(value, name)
            if problem:
                yield make("E166", f"business entity '{record.name}': {problem}", record.where(name) or Location("?"),
                           "copy the IBAN from a bank statement; the check digits catch typing errors")
        for name in ("BIC", "CreditBIC"):
            _, problem = check_bic(record.get(name), name)
            if problem:
                yield make("E167", f"business entity '{record.name}': {problem}", record.where(name) or Location("?"),
                           "8 or 11 characters: bank, country, location (and branch) code")
        creditor = str(record.get("SEPACreditorId") or "").strip()
        if not creditor:
            if "SEPA Direct Debit" in formats:
                yield make("E168", f"business entity '{record.name}' has no SEPACreditorId, which the active SEPA "
                           "direct debit export needs", record.source or Location("?"),
                           "the creditor identifier is issued by the central bank (in Germany: the Bundesbank)")
            continue
        try:
            at_02.validate(creditor)
        except ValidationError as error:
            yield make("E168", f"business entity '{record.name}': SEPACreditorId {creditor!r} is not a valid SEPA "
                       f"creditor identifier ({error})", record.where("SEPACreditorId") or Location("?"),
                       "e.g. DE98ZZZ09999999999: country, check digits, business code, national identifier")


#: A DATEV parameter problem text -> the ExportSetting field it concerns.
_DATEV_FIELDS = (("consultant", "DatevConsultantNumber"), ("client", "DatevClientNumber"),
                 ("account length", "DatevAccountLength"), ("chart of accounts", "DatevChartOfAccounts"),
                 ("fiscal year", "DatevFiscalYearStart"))


def _datev_records(ctx: CheckContext) -> list[SettingRecord]:
    """ExportSetting records that configure DATEV (any DATEV field given)."""
    from .datev_rules import SETTING_FIELDS  # noqa: PLC0415

    out = []
    for record in ctx.model.setting_records("ExportSetting"):
        if any(record.get(name) not in (None, "") or record.get(name + "__c") not in (None, "")
               for name in SETTING_FIELDS.values()):
            out.append(record)
    return out


def _datev_params(record: SettingRecord):
    """(DatevParams or None, [(field, problem)]) of one ExportSetting record.
    Parameters it does not give may come as options of ``metabill export
    datev``: only the ones it gives are judged (a value that does not fit its
    field at all is E070 already)."""
    from datetime import date  # noqa: PLC0415

    from .datev_rules import SETTING_FIELDS, DatevParams, as_date  # noqa: PLC0415

    def value(key: str, default: object = None) -> object:
        name = SETTING_FIELDS[key]
        found = record.get(name)
        found = found if found is not None else record.get(name + "__c")
        return default if found in (None, "") else found

    try:
        params = DatevParams(consultant=int(str(value("consultant", 1001))), client=int(str(value("client", 1))),
                             fiscal_year_start=as_date(value("fiscal_year_start", date(2000, 1, 1))),
                             account_length=int(str(value("account_length", 4))),
                             chart_of_accounts=str(value("chart_of_accounts")) if value("chart_of_accounts") else None)
    except (TypeError, ValueError) as error:
        return None, [("DatevConsultantNumber", f"a DATEV parameter is not a number or date ({error})")]
    problems = []
    for problem in params.problems():
        field_name = next((name for key, name in _DATEV_FIELDS if problem.startswith(key)), "DatevConsultantNumber")
        problems.append((field_name, problem))
    given = value("account_length") is not None
    return (params if given else None), problems


def check_datev(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The DATEV parameters each ExportSetting record gives are valid
    (E172; missing ones may be given as options of the export); with an active one, the account numbers of G/L
    rules and collective accounts fit its account length (E173) and center
    rules' centers fit KOST1 (E174), else DATEV leaves their bookings out."""
    from .datev_rules import KOST_LENGTH, account_problem  # noqa: PLC0415

    length = None
    for record in _datev_records(ctx):
        params, problems = _datev_params(record)
        for field_name, problem in problems:
            yield make("E172", f"ExportSetting '{record.name}': {problem}",
                       record.where(field_name) or Location("?"),
                       "see the DATEV format description (Buchungsstapel header)")
        if params is not None and 4 <= params.account_length <= 8 and _active(record) and length is None:
            length = params.account_length  # other parameters wrong: the accounts are still checked
    if length is not None:
        for setting, fields in (("GlAccountRule", ("GLAccount", "GLAccount2")),
                                ("CollectiveAccount", ("Account", "Account2", "BpAccount"))):
            for record in ctx.model.setting_records(setting):
                for name in fields:
                    value = record.get(name)
                    problem = account_problem(name, value, length) if value not in (None, "") else None
                    if problem:
                        yield make("E173", f"{setting} '{record.name}': {problem}; DATEV leaves its bookings out",
                                   record.where(name) or Location("?"),
                                   f"use the account number of your chart of accounts ({length} digits)")
    for record in ctx.model.setting_records("CenterRule"):
        center = str(record.get("Center") or "")
        if len(center) > KOST_LENGTH:
            yield make("E174", f"CenterRule '{record.name}': center {center[:40]!r}... is longer than {KOST_LENGTH} "
                       "characters (DATEV KOST1)", record.where("Center") or Location("?"))


def _text_problem(text: str, encoding: str | None) -> tuple[int, str] | None:
    """(offset, why) of the first character of ``text`` an export cannot
    carry unchanged, or None."""
    from engine.storage.csvio import FORMULA_TRIGGERS  # noqa: PLC0415

    # Control characters never get this far: setting texts refuse them (E070).
    for offset, char in enumerate(text if encoding is not None else ()):
        try:
            char.encode(encoding)
        except UnicodeEncodeError:
            return offset, f"{char!r}, which the DATEV code page ({encoding}) cannot hold (written as '?')"
    if text.startswith(FORMULA_TRIGGERS):
        return 0, f"a leading {text[0]!r}, which the export quotes (') so that no spreadsheet runs it as a formula"
    return None


def check_exported_texts(ctx: CheckContext) -> Iterator[Diagnostic]:
    """Booking texts (DATEV Buchungstext), the remittance texts and the
    company names of the SEPA exports reach their files unchanged (E170)."""
    from .datev_rules import ENCODING  # noqa: PLC0415

    sources = [("BookingText", "Text", ENCODING if _datev_records(ctx) else None),
               ("ExportSetting", "PaymentReferenceText", None), ("BusinessEntity", "Company", None)]
    for setting, field_name, encoding in sources:
        for record in ctx.model.setting_records(setting):
            value = record.get(field_name)
            if value in (None, ""):
                continue
            text = str(value)
            found = _text_problem(text, encoding)
            if found is None:
                continue
            offset, why = found
            yield make("E170", f"{setting} '{record.name}': {field_name} contains {why}",
                       ctx.within(record.where(field_name), text, offset),
                       "remove the character, or write it out in plain letters")


def check_remittance_placeholders(ctx: CheckContext) -> Iterator[Diagnostic]:
    """The ``[Placeholders]`` of a SEPA export's PaymentReferenceText name
    fields of the invoice (and, for credit transfers, of the balance paid
    out): an unknown one is silently left empty in every payment (E164)."""
    from .bank_ids import PLACEHOLDER  # noqa: PLC0415

    invoice, balance = ctx.model.object("Invoice"), ctx.model.object("Balance")
    if invoice is None:
        return
    for record in ctx.model.setting_records("ExportSetting"):
        text = record.get("PaymentReferenceText")
        if not text or record.get("Format") not in _SEPA_FORMATS:
            continue
        objects = [invoice] + ([balance] if balance is not None and record.get("Format") == "SEPA Credit" else [])
        names = {f.name.lower(): f.name for obj in objects for f in obj.fields}
        for match in PLACEHOLDER.finditer(str(text)):
            if match.group(1).lower() in names:
                continue
            yield make("E164", f"ExportSetting '{record.name}': the placeholder [{match.group(1)}] names no field of "
                       + " or ".join(o.name for o in objects) + ", so it would be left empty",
                       ctx.within(record.where("PaymentReferenceText"), str(text), match.start()),
                       did_you_mean(match.group(1), names.values()) or "use [<Invoice field>], e.g. [Name]")


CHECKS: tuple[Check, ...] = (
    check_bank_data,
    check_datev,
    check_exported_texts,
    check_remittance_placeholders,
)
