"""The data a template sees: the document context of one invoice.

:func:`document_context` turns an invoice, its lines, balances, account and
business entity (a :class:`DocumentInput`) into plain values with labels and
formatted amounts; :func:`document_environment` is the sandbox for it (the
template's locale, the invoice's currency), and :func:`render_document`
renders a template record's file with both. The real renderer
(:mod:`.render`) and the sample invoices of validate-config (:mod:`.sample`)
both go through here. Everything here takes the model, not a runtime
context: validate-config runs it before any database exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from engine.config.model import FieldType, OrgModel
from engine.domain.money import ZERO

from .formatting import Formatter, as_decimal, round_money
from .labels import build_labels
from .sandbox import (
    MAX_OUTPUT_CHARS,
    MAX_SECONDS,
    InvoiceSandbox,
    TemplateRefused,
    make_environment,
    render_template,
    template_path_problem,
)
from .template_records import BALANCE_TITLE, DIRECT_DEBIT_METHODS, PLACEHOLDER, TemplateSettings


@dataclass
class DocumentInput:
    """One invoice's data as plain dicts keyed by field API name (``Name``,
    ``GrandTotal``, ``Title__c``): what the documents package reads from the
    database and the sample invoice provides for validate-config.

    ``balances`` are the Balance records whose Invoice is this invoice (each
    with ``RelatedInvoiceNo``, the related invoice's number); ``sub_invoices``
    the invoices deducted on a final invoice."""

    invoice: dict[str, Any]
    lines: list[dict[str, Any]]
    balances: list[dict[str, Any]] = field(default_factory=list)
    account: dict[str, Any] = field(default_factory=dict)
    business_entity: dict[str, Any] = field(default_factory=dict)
    sub_invoices: list[dict[str, Any]] = field(default_factory=list)


def invoice_currency(invoice: Mapping[str, Any]) -> str:
    """The currency an invoice's amounts are printed in (EUR when it names none)."""
    return str(invoice.get("CurrencyIsoCode") or "EUR")


def fill_placeholders(text: str, resolve: Callable[[str], str | None]) -> str:
    """Replace ``[Name]`` by ``resolve(Name)``; unknown names stay as written."""

    def one(match: re.Match) -> str:
        found = resolve(match.group(1))
        return match.group(0) if found is None else found

    return PLACEHOLDER.sub(one, text)


def setting_values(model: OrgModel, setting: str, name: str | None = None) -> dict[str, Any]:
    """A setting record as templates see it, a dict by field API name with
    every field present: the record named ``name``, else the one marked
    Default; every value None (and no ``Name``) when there is neither."""
    obj = model.object(setting)
    values: dict[str, Any] = {f.name: None for f in obj.fields} if obj is not None else {}
    record = model.setting_record(setting, name) if name else None
    if record is None:
        record = next((r for r in model.setting_records(setting) if r.get("Default")), None)
    if record is not None and obj is not None:
        values.update({f.name: record.get(f.name) for f in obj.fields})
        values["Name"] = record.name
    return values


def _cents(value: Any) -> Decimal:
    """An amount rounded to cents for sums; empty counts as zero."""
    return round_money(value) or ZERO


def balance_rows(model: OrgModel, settings: TemplateSettings, balances: Iterable[Mapping[str, Any]],
                 fmt: Formatter) -> list[dict[str, Any]]:
    """The printed balance rows (seed 002, domain-spec §9.2): balances of
    a listed type (not the invoice's own ``Invoice`` balance, not drafts),
    ordered by date and name, titled by the mapping with placeholders
    resolved, one cell per BalanceColumns entry."""
    balance = model.object("Balance")
    titles = dict(settings.balance_types)
    rows = []
    shown = [b for b in balances if b.get("Type") != "Invoice" and not b.get("Draft") and b.get("Type") in titles]
    shown.sort(key=lambda b: (b.get("Date") or date.min, str(b.get("Name") or ""), b.get("Id") or 0))
    for record in shown:
        def resolve(name: str, record: Mapping[str, Any] = record) -> str | None:
            if name == "RelatedInvoiceNo":
                return str(record.get("RelatedInvoiceNo") or "")
            fdef = balance.field(name) if balance is not None else None
            return fmt.value(fdef, record.get(fdef.name)) if fdef is not None else None

        title = fill_placeholders(titles[record["Type"]], resolve)
        cells = []
        for column in settings.balance_columns:
            if column == BALANCE_TITLE:
                cells.append({"name": column, "text": title, "numeric": False})
            else:
                fdef = balance.field(column) if balance is not None else None
                cells.append({"name": column, "text": fmt.value(fdef, record.get(column)),
                              "numeric": fdef is not None and (fdef.value_type.is_numeric
                                                                  or fdef.value_type is FieldType.DATE)})
        rows.append({**record, "title": title, "cells": cells})
    return rows


def payment_amount(invoice: Mapping[str, Any], balances: Iterable[Mapping[str, Any]]) -> Decimal:
    """Grand total plus every balance on the invoice except its own Invoice
    balance and drafts: hidden types reduce the amount too (domain-spec §9.2)."""
    total = _cents(invoice.get("GrandTotal"))
    for record in balances:
        if record.get("Type") == "Invoice" or record.get("Draft"):
            continue
        total += _cents(record.get("Amount"))
    return total


def document_context(model: OrgModel, settings: TemplateSettings, data: DocumentInput) -> dict[str, Any]:
    """Everything a template sees: ``invoice`` (all fields, ``lines``,
    ``positions`` (lines without deductions), ``deductions``, ``tax_rates``,
    ``balance_rows``, ``payment_amount``, ``sub_invoices``, ``is_final``,
    ``is_direct_debit``), ``account``, ``business_entity``, ``template``,
    ``labels``, ``texts`` (payment terms and SEPA text with placeholders
    filled) and ``locale``/``lang``."""
    currency = invoice_currency(data.invoice)
    fmt = Formatter(settings.locale, currency)
    invoice_obj = model.object("Invoice")
    entity_obj = model.object("BusinessEntity")
    lines = sorted(data.lines, key=lambda l: (l.get("IsDeduction") or False, l.get("Sequence") or 0, l.get("Id") or 0))
    positions = [dict(l) for l in lines if not l.get("IsDeduction")]
    deductions = [dict(l) for l in lines if l.get("IsDeduction")]
    rates: dict[Decimal, dict[str, Decimal]] = {}
    for line in lines:
        rate = as_decimal(line.get("TaxRate")) or Decimal("0")
        rate = rate.normalize() if rate else Decimal("0")
        bucket = rates.setdefault(rate, {"rate": rate, "net": ZERO, "tax": ZERO})
        bucket["net"] += _cents(line.get("PosTotalNet"))
        bucket["tax"] += _cents(line.get("PosTotalTax"))
    amount = payment_amount(data.invoice, data.balances)
    is_direct_debit = str(data.invoice.get("PaymentMethod") or "") in DIRECT_DEBIT_METHODS
    iban = str(data.invoice.get("BankAccount") or "")
    masked = (iban[:4] + " **** " + iban[-4:]) if len(iban) > 8 else iban

    def resolve(name: str) -> str | None:
        if name == "PaymentAmount":
            return fmt.currency_amount(amount, currency)
        if name == "BankAccountMasked":
            return masked
        fdef = invoice_obj.field(name) if invoice_obj is not None else None
        if fdef is not None:
            return fmt.value(fdef, data.invoice.get(fdef.name))
        if name.startswith("BusinessEntity"):
            rest = name[len("BusinessEntity"):]
            efield = entity_obj.field(rest) if entity_obj is not None else None
            if efield is not None:
                return fmt.value(efield, data.business_entity.get(efield.name))
            if rest == "Name":
                return str(data.business_entity.get("Name") or "")
        return None

    labels = build_labels(model, settings)
    invoice = dict(data.invoice)
    invoice.update({
        "lines": [dict(l) for l in lines],
        "positions": positions,
        "deductions": deductions,
        "tax_rates": [rates[k] for k in sorted(rates)],
        "balance_rows": balance_rows(model, settings, data.balances, fmt),
        "payment_amount": amount,
        "sub_invoices": [dict(s) for s in data.sub_invoices],
        "is_final": invoice.get("Type") == "Final",
        "is_credit": invoice.get("Class") == "Credit",
        "is_cancellation": invoice.get("Type") == "Cancelation",
        "is_direct_debit": is_direct_debit,
        "is_partial": invoice.get("Type") == "Partial",
        "is_progress": invoice.get("Type") == "Progress",
        "is_deposit": invoice.get("Type") == "Deposit",
        "vat_categories": sorted({str(l.get("VATCategoryCode")) for l in lines if l.get("VATCategoryCode")}),
        "related_invoice_no": data.invoice.get("RelatedInvoiceNo"),
        "related_invoice_date": data.invoice.get("RelatedInvoiceDate"),
        "positions_net": sum((_cents(l.get("PosTotalNet")) for l in positions), ZERO),
        "deductions_net": sum((_cents(l.get("PosTotalNet")) for l in deductions), ZERO),
    })
    template = {
        "Name": settings.name,
        "File": settings.file,
        "Locale": settings.locale,
        "balance_columns": [{"name": c, "label": labels["Balance"].get(c, c)} for c in settings.balance_columns],
        "custom_css": settings.custom_css,
        "header": fill_placeholders(settings.header, resolve),
        "footer": fill_placeholders(settings.footer, resolve),
    }
    # Payment terms and the direct-debit notice only when something is to be paid.
    texts = {
        "payment_terms": fill_placeholders(settings.payment_terms, resolve) if amount > 0 else "",
        "sepa_mandate": fill_placeholders(labels["Calculated"].get("SepaMandateText", ""), resolve)
        if is_direct_debit and amount > 0 else "",
    }
    return {
        "invoice": invoice,
        "account": dict(data.account),
        "business_entity": dict(data.business_entity),
        "template": template,
        "labels": labels,
        "texts": texts,
        "locale": settings.locale,
        "lang": settings.locale.split("_")[0].lower(),
        "currency": currency,
    }


def document_environment(org_root: Path | str, settings: TemplateSettings, data: DocumentInput, *,
                         max_output: int = MAX_OUTPUT_CHARS) -> InvoiceSandbox:
    """The sandbox one invoice's document renders in: the org's templates,
    formatting in the template's locale and the invoice's currency."""
    return make_environment(org_root, locale=settings.locale, currency=invoice_currency(data.invoice),
                            max_output=max_output)


def render_document(org_root: Path | str, model: OrgModel, settings: TemplateSettings, data: DocumentInput,
                    *, max_output: int = MAX_OUTPUT_CHARS, seconds: float = MAX_SECONDS) -> str:
    """Render one invoice's HTML with its Template settings (raises the
    template error; :func:`~engine.documents.sandbox.describe_error` locates it)."""
    problem = template_path_problem(settings.file)
    if problem:
        raise TemplateRefused(f"template '{settings.name}': {problem}")
    env = document_environment(org_root, settings, data, max_output=max_output)
    return render_template(env, settings.file, document_context(model, settings, data), seconds=seconds)
