"""Template records: the settings a document template reads, parsed and checked.

A Template setting record names its file and carries the document's options:
locale, balance columns and types, label overrides, payment texts with
``[Placeholders]``, custom CSS. :func:`parse_template_settings` turns one into
:class:`TemplateSettings` and lists every problem with the field it concerns,
so validate-config reports them at the record's line and the renderer never
meets a setting it cannot use.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from engine.config.diagnostics import did_you_mean
from engine.config.model import OrgModel, SettingRecord

DEFAULT_BALANCE_COLUMNS = ("BalanceTitle", "Date", "Amount")
#: The balance column holding the title of the balance's type (with placeholders filled).
BALANCE_TITLE = "BalanceTitle"
DIRECT_DEBIT_METHODS = frozenset({"Direct Debit", "SEPA"})
#: A ``[Name]`` placeholder in a title, the payment terms, the header or the footer.
PLACEHOLDER = re.compile(r"\[([A-Za-z][A-Za-z0-9_]*)\]")
#: Placeholders of invoice texts that are computed, not fields.
CALCULATED_PLACEHOLDERS = frozenset({"PaymentAmount", "BankAccountMasked"})


@dataclass(frozen=True)
class SettingProblem:
    """A problem in a Template record's values (code E124-E129)."""

    code: str
    field: str
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class TemplateSettings:
    """A Template record, parsed: what the renderer and the templates use."""

    name: str
    file: str
    locale: str
    balance_columns: tuple[str, ...]
    balance_types: tuple[tuple[str, str], ...]  # (Balance.Type, title with placeholders), in order
    override_labels: Mapping[str, Mapping[str, str]]
    custom_css: str
    payment_terms: str
    header: str
    footer: str
    problems: tuple[SettingProblem, ...] = ()


def parse_template_settings(model: OrgModel, record: SettingRecord) -> TemplateSettings:
    """Parse a Template record; problems are collected, never raised, and the
    value in question falls back to its default (columns), nothing (types) or
    no overrides (labels), so a render still works."""
    from babel import Locale, UnknownLocaleError

    problems: list[SettingProblem] = []
    balance = model.object("Balance")
    columns_text = str(record.get("BalanceColumns") or ";".join(DEFAULT_BALANCE_COLUMNS))
    columns: list[str] = []
    for raw in columns_text.split(";"):
        name = raw.strip()
        if not name:
            continue
        canonical = _balance_column(balance, name)
        if canonical is None:
            candidates = [BALANCE_TITLE] + ([f.name for f in balance.fields] if balance else [])
            problems.append(SettingProblem("E124", "BalanceColumns",
                                           f"template '{record.name}': BalanceColumns names '{name}', which is "
                                           "neither BalanceTitle nor a Balance field",
                                           did_you_mean(name, candidates)))
            continue
        columns.append(canonical)
    if not columns:
        columns = list(DEFAULT_BALANCE_COLUMNS)

    types: list[tuple[str, str]] = []
    types_text = record.get("BalanceTypes")
    if types_text is not None and str(types_text).strip():
        parsed, error = _json(str(types_text))
        if error is None and not (isinstance(parsed, list) and all(
                isinstance(e, dict) and isinstance(e.get("type"), str) and isinstance(e.get("title", ""), str)
                and set(e) <= {"type", "title"} for e in parsed)):
            error = 'it must be a JSON list of {"type": ..., "title": ...} objects'
        if error is not None:
            problems.append(SettingProblem("E125", "BalanceTypes",
                                           f"template '{record.name}': BalanceTypes is not valid: {error}",
                                           'example: [{"type": "Payment", "title": "Payment"}]'))
        else:
            known = _picklist(balance, "Type")
            for entry in parsed:
                if known and entry["type"] not in known:
                    problems.append(SettingProblem("E125", "BalanceTypes",
                                                   f"template '{record.name}': BalanceTypes maps '{entry['type']}', "
                                                   "which is not a value of Balance.Type",
                                                   did_you_mean(entry["type"], sorted(known))))
                    continue
                title = entry.get("title", entry["type"])
                for placeholder in PLACEHOLDER.findall(title):
                    if not _balance_placeholder_known(balance, placeholder):
                        problems.append(SettingProblem("E127", "BalanceTypes",
                                                       f"template '{record.name}': the title of balance type "
                                                       f"'{entry['type']}' uses the unknown placeholder "
                                                       f"[{placeholder}]",
                                                       "use [RelatedInvoiceNo] or [<Balance field>]"))
                types.append((entry["type"], title))

    labels: dict[str, dict[str, str]] = {}
    labels_text = record.get("OverrideLabels")
    if labels_text is not None and str(labels_text).strip():
        parsed, error = _json(str(labels_text))
        if error is None and not (isinstance(parsed, dict) and all(
                isinstance(group, dict) and all(isinstance(v, str) for v in group.values())
                for group in parsed.values())):
            error = 'it must be a JSON object {"Object": {"Field": "Label"}}'
        if error is not None:
            problems.append(SettingProblem("E126", "OverrideLabels",
                                           f"template '{record.name}': OverrideLabels is not valid: {error}"))
        else:
            labels = {str(k): dict(v) for k, v in parsed.items()}

    locale = str(record.get("Locale") or "en_US")
    try:
        Locale.parse(locale)
    except (ValueError, UnknownLocaleError, TypeError):
        problems.append(SettingProblem("E128", "Locale", f"template '{record.name}': unknown locale '{locale}'",
                                       "use a locale such as en_US, en_GB or de_DE"))
        locale = "en_US"

    terms = str(record.get("PaymentTerms") or "")
    invoice = model.object("Invoice")
    for text_field in ("PaymentTerms", "Header", "Footer"):
        for placeholder in PLACEHOLDER.findall(str(record.get(text_field) or "")):
            if not _invoice_placeholder_known(model, invoice, placeholder):
                problems.append(SettingProblem("E127", text_field,
                                               f"template '{record.name}': {text_field} uses the unknown "
                                               f"placeholder [{placeholder}]",
                                               "use [<Invoice field>], [BusinessEntity<field>] or [PaymentAmount]"))
    return TemplateSettings(
        name=record.name,
        file=str(record.get("File") or ""),
        locale=locale,
        balance_columns=tuple(columns),
        balance_types=tuple(types),
        override_labels=MappingProxyType(labels),
        custom_css=str(record.get("CustomCss") or ""),
        payment_terms=terms,
        header=str(record.get("Header") or ""),
        footer=str(record.get("Footer") or ""),
        problems=tuple(problems),
    )


def default_template_records(model: OrgModel) -> list[SettingRecord]:
    """The Template records marked Default (exactly one in a valid org)."""
    return [r for r in model.setting_records("Template") if r.get("Default")]


def select_template_record(model: OrgModel, template_name: str | None) -> SettingRecord:
    """The Template record of an invoice: the one it names, else the default
    one. Raises LookupError with a message for people."""
    if template_name:
        found = model.setting_record("Template", template_name)
        if found is None:
            raise LookupError(f"names the unknown template '{template_name}'")
        return found
    defaults = default_template_records(model)
    if len(defaults) != 1:
        raise LookupError("names no template and the org has "
                          + ("no default Template record" if not defaults else "several default Template records"))
    return defaults[0]


def _json(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as error:
        return None, f"{error.msg} at line {error.lineno} column {error.colno} of the JSON"


def _picklist(obj: Any, field_name: str) -> set[str]:
    fdef = obj.field(field_name) if obj is not None else None
    return {str(v) for v in (fdef.values if fdef is not None else ())}


def _balance_column(balance: Any, name: str) -> str | None:
    if name.lower() == BALANCE_TITLE.lower():
        return BALANCE_TITLE
    if balance is None:
        return None
    fdef = balance.field(name)
    if fdef is None and name.endswith("__c"):
        # the seed writes product fields with the Salesforce suffix (Date__c): accept it
        # for product fields, where our metadata drops the suffix.
        plain = balance.field(name[:-3])
        fdef = plain if plain is not None and not plain.is_custom else None
    return fdef.name if fdef is not None else None


def _balance_placeholder_known(balance: Any, name: str) -> bool:
    return name == "RelatedInvoiceNo" or (balance is not None and balance.field(name) is not None)


def _invoice_placeholder_known(model: OrgModel, invoice: Any, name: str) -> bool:
    if name in CALCULATED_PLACEHOLDERS:
        return True
    if invoice is not None and invoice.field(name) is not None:
        return True
    if name.startswith("BusinessEntity"):
        entity = model.object("BusinessEntity")
        rest = name[len("BusinessEntity"):]
        return rest == "Name" or (entity is not None and entity.field(rest) is not None)
    return False
