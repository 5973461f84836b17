"""Who pays whom in a SEPA export, and under which terms.

* :func:`creditor_for` - the business entity's own account and creditor
  identifier, checked; bad creditor data refuses the whole export;
* :func:`setting_for` - the ExportSetting record of the export's format;
* :func:`check_iban` / :func:`check_bic` - the bank data of an invoice, an
  account or the entity, checked with schwifty (structure, check digits,
  country format, SEPA zone); they return a problem text rather than raise,
  so an order with bad data is left out and reported, not fatal;
* :func:`remittance_text` - the remittance information from the setting's
  ``[Field]`` template;
* :func:`default_entity` - the business entity that owns records naming none.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from stdnum.eu import at_02
from stdnum.exceptions import ValidationError as StdnumValidationError

from engine.config.model import SettingRecord
from engine.domain.errors import Where
from engine.storage.context import Context

from .errors import SepaExportError
from .sepa_orders import (
    DEBIT,
    NAME_LENGTH,
    REMITTANCE_LENGTH,
    SETTING_FORMATS,
    Creditor,
    SepaSetting,
)
from .bank_ids import PLACEHOLDER, check_bic, check_iban
from .sepa_xml import sepa_text
from .sepa_versions import DEFAULT_VERSION

def creditor_for(ctx: Context, entity_name: str, kind: str) -> Creditor:
    """The business entity's SEPA data for ``kind``, checked; raises
    :class:`SepaExportError` naming every problem. Credit transfers pay from
    ``CreditIBAN``/``CreditBIC`` when set, else from ``IBAN``/``BIC``; direct
    debits need the SEPA creditor identifier (checked with python-stdnum,
    ISO 7064 MOD 97-10)."""
    model = ctx.model
    where = Where(object="BusinessEntity", record=entity_name)
    record = model.setting_record("BusinessEntity", entity_name)
    if record is None:
        known = ", ".join(sorted(str(r.get("Name")) for r in model.setting_records("BusinessEntity")))
        raise SepaExportError(f"no business entity named {entity_name!r} (known: {known or 'none'})", where=where)
    problems = []
    name = sepa_text(record.get("Company"), NAME_LENGTH)
    if not name:
        problems.append("Company is empty")
    if kind == DEBIT:
        iban, problem = check_iban(record.get("IBAN"), "IBAN")
        bic, bic_problem = check_bic(record.get("BIC"), "BIC")
    else:
        use_credit = bool(str(record.get("CreditIBAN") or "").strip())
        iban_field = "CreditIBAN" if use_credit else "IBAN"
        iban, problem = check_iban(record.get(iban_field), iban_field)
        bic_field = "CreditBIC" if str(record.get("CreditBIC") or "").strip() else "BIC"
        bic, bic_problem = check_bic(record.get(bic_field), bic_field)
    problems += [p for p in (problem, bic_problem) if p]
    creditor_id = None
    if kind == DEBIT:
        raw = str(record.get("SEPACreditorId") or "").strip()
        if not raw:
            problems.append("SEPACreditorId is empty (needed for direct debits)")
        else:
            try:
                creditor_id = at_02.validate(raw)
            except StdnumValidationError as error:
                problems.append(f"SEPACreditorId {raw!r} is not a valid SEPA creditor identifier ({error})")
    if problems:
        raise SepaExportError(f"business entity {entity_name}: " + "; ".join(problems), where=where,
                              hint="correct the business entity's record (custom_settings/BusinessEntity.yaml)")
    assert iban is not None
    return Creditor(entity=entity_name, name=name, iban=iban, bic=bic, creditor_id=creditor_id)


def setting_for(ctx: Context, kind: str, name: str | None = None) -> SepaSetting:
    """The ExportSetting record ``name``, or the first active one of the
    export's format (SEPA Direct Debit, SEPA Credit); defaults named after
    the format when there is none."""
    model = ctx.model
    wanted = SETTING_FORMATS[kind]
    record: SettingRecord | None = None
    if name is not None:
        where = Where(object="ExportSetting", record=name)
        record = model.setting_record("ExportSetting", name)
        if record is None:
            raise SepaExportError(f"no ExportSetting named {name!r}", where=where)
        if record.get("Format") != wanted:
            raise SepaExportError(f"ExportSetting {name!r} has Format {record.get('Format')!r}, not {wanted!r}",
                                  where=where)
    else:
        record = next((r for r in model.setting_records("ExportSetting")
                       if r.get("Format") == wanted and r.get("Active", True)), None)
    if record is None:
        return SepaSetting(name=wanted)
    return SepaSetting(
        name=str(record.get("Name")),
        local_instrument=str(record.get("SepaLocalInstrument") or "CORE"),
        batch_booking=not bool(record.get("SepaBookingPerTransaction")),
        one_time_export=bool(record.get("OneTimeExport", True)),
        reference_text=str(record.get("PaymentReferenceText") or "[Name]"),
        create_payments=bool(record.get("CreatePayments")),
        version=str(record.get("SepaMessageVersion") or DEFAULT_VERSION),
    )


def remittance_text(template: str, record: Mapping[str, Any]) -> str:
    """The remittance text: ``[Field]`` placeholders replaced by the record's
    values (field API name, case-insensitive; unknown fields become empty)."""

    def value(match: re.Match) -> str:
        found = record.get(match.group(1).lower())
        return "" if found is None else str(found)

    return sepa_text(PLACEHOLDER.sub(value, template), REMITTANCE_LENGTH)


def default_entity(ctx: Context) -> str | None:
    """The name of the business entity marked Default: invoices and accounts
    that name no entity belong to it."""
    for record in ctx.model.setting_records("BusinessEntity"):
        if record.get("Default"):
            return str(record.get("Name"))
    return None
