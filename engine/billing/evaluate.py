"""Evaluating source records: a header record and its line records become a
:class:`~engine.billing.build.SourceHeader` with its
:class:`~engine.billing.build.SourceLine` values, ready to be grouped and
built into invoices.

:class:`SourceEvaluator` turns a filter plan into programs once (a getter
per controlling field, a getter and coercer per ON copy), then evaluates
hundreds of thousands of records with them: the header's service date and
item flag decide whether the run bills it at all; its account, template,
invoice type, assignment key, criterion, currency and business entity
decide which invoice it goes to; its lines get title, quantity, unit price
and the ON copies. A record that cannot be billed raises :class:`Unbillable`
with the message the run writes to its ``ON_InvoiceBuildError`` field.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from typing import Sequence

import sqlalchemy as sa

from engine.config.formula import FormulaEvaluationError
from engine.config.model import FieldDef, SettingRecord
from engine.config.values import ValueProblem
from engine.storage.context import Context

from .accounts import AccountCache
from .build import KEYED_TYPES, STANDARD_TYPE, SourceHeader, SourceLine
from .plan import FilterPlan, Level, coercer, getter

#: Invoice types the run never creates (they come from cancellation, credits, dunning).
NOT_RUN_TYPES = ("Cancelation", "Credit", "Dunning")

# The order of a line without a sequence sorts after all sequenced ones; one
# shared Decimal keeps these sort keys cheap to compare.
_NO_SEQUENCE = Decimal(0)


class Unbillable(Exception):
    """A source record the run cannot bill; the message goes to its
    ``ON_InvoiceBuildError`` field. Control flow inside the run, reported as
    a :class:`~engine.billing.report.RecordFailure`, never raised to callers."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BillingDefaults:
    """What the run falls back on, from the model (``ctx.service(BillingDefaults)``):
    templates by name and the default one, the default business entity, the
    invoice types, and the default currency of Global Settings."""

    def __init__(self, ctx: Context):
        templates = ctx.model.setting_records("Template")
        self.templates = {r.name.lower(): r for r in templates}
        self.default_template = next((r for r in templates if r.get("Default")), None)
        entities = ctx.model.setting_records("BusinessEntity")
        self.default_entity = next((r.name for r in entities if r.get("Default")), None)
        self.invoice_types = ctx.obj("Invoice").field("Type").values  # type: ignore[union-attr]
        self.default_currency = ctx.settings.default_currency


def blank(value: object) -> bool:
    """None or the empty string. Not ``value == ""``: comparing a Decimal
    with a str goes through an isinstance check against numbers.Rational (an
    ABC), which costs more than the rest of evaluating a line field."""
    return value is None or (isinstance(value, str) and not value)


class SourceEvaluator:
    """Evaluates the source records of one filter plan; see the module docstring."""

    def __init__(self, ctx: Context, plan: FilterPlan, accounts: AccountCache, period: tuple[date, date],
                 today: date):
        self.ctx = ctx
        self.plan = plan
        self.accounts = accounts
        self.period_start, self.period_end = period
        self.today = today
        self.defaults = ctx.service(BillingDefaults)
        self.line_obj = ctx.obj("InvoiceLineItem")
        self.header_controls, self.header_copies = self._programs(plan.header)
        if plan.single:
            self.line_controls, self.line_copies = self.header_controls, self.header_copies
        else:
            self.line_controls, self.line_copies = self._programs(plan.line)
        self._line_steps = self._line_program()

    # -- programs, built once ---------------------------------------------------

    def _programs(self, level: Level) -> tuple[dict, dict]:
        """Getters of the level's controlling fields, and its ON copies as
        (source, target, getter, coercer) per target object."""
        controls = {base: (fdef, getter(self.ctx, fdef)) for base, fdef in level.controls.items()}
        copies: dict[str, list] = defaultdict(list)
        for source, target, target_object in level.copies:
            copies[target_object].append((source, target, getter(self.ctx, source), coercer(target)))
        return controls, copies

    def _line_program(self) -> list[tuple]:
        """The steps that turn a line record into InvoiceLineItem fields:
        first the level's ON copies, then the controlling fields Title,
        Quantity and UnitPrice (which win over a copy of the same target).
        Each step is (target key, getter, coercer, is a reference target,
        errors caught, error message prefix)."""
        steps: list[tuple] = []
        copy_errors = (FormulaEvaluationError, ValueProblem, ValueError)
        for source, target, get, fit in self.line_copies.get("InvoiceLineItem", ()):
            prefix = f"{source.name} -> InvoiceLineItem.{target.name}"
            steps.append((target.key, get, fit, target.type.is_reference, copy_errors, prefix))
        for base, key in (("ON_Title", "title"), ("ON_Quantity", "quantity"), ("ON_UnitPrice", "unitprice")):
            found = self.line_controls.get(base)
            if found is None:
                continue
            fdef, get = found
            fit = coercer(self.line_obj.field(key))  # type: ignore[arg-type]
            steps.append((key, get, fit, False, (FormulaEvaluationError, ValueProblem), fdef.name))
        return steps

    def reference_targets(self) -> list[tuple[FieldDef, str]]:
        """(target field, "Invoice" or "InvoiceLineItem") of every ON copy
        into a lookup: the references a draft must have checked."""
        return [
            (target, name)
            for name, copies in (("Invoice", self.header_copies.get("Invoice", ())),
                                 ("InvoiceLineItem", self.line_copies.get("InvoiceLineItem", ())))
            for _, target, _, _ in copies
            if target.type.is_reference and target.reference_to
        ]

    # -- values -----------------------------------------------------------------

    def value(self, level: Level, base: str, record: dict) -> object:
        """The record's controlling field ``base`` (``ON_Account``) of ``level``."""
        controls = self.header_controls if level is self.plan.header else self.line_controls
        found = controls.get(base)
        if found is None:
            return None
        fdef, get = found
        try:
            return get(record, self.today)
        except FormulaEvaluationError as error:
            raise Unbillable(f"{fdef.name}: {error}") from None

    def raw_account(self, record: dict) -> object:
        """The record's ON_Account value for :meth:`AccountCache.prefetch`;
        None when it cannot be evaluated (:meth:`header` reports that)."""
        try:
            return self.value(self.plan.header, "ON_Account", record)
        except Unbillable:
            return None

    def header(self, conn: sa.Connection, record: dict, raw_account: object = None) -> SourceHeader | None:
        """The evaluated header record without lines; None when the run leaves
        it alone (service date outside the period, not an item).
        ``raw_account`` is the record's :meth:`raw_account` when the caller
        has it already (pass 1 evaluates it for the prefetch): evaluating is
        pure, so it is not evaluated twice; None evaluates it here (and
        reports why it is empty or fails)."""
        plan, level = self.plan, self.plan.header
        service_date = self.value(level, "ON_ServiceDate", record)
        if isinstance(service_date, datetime):
            service_date = service_date.date()
        if service_date is not None and not (self.period_start <= service_date <= self.period_end):
            return None
        if plan.single and not self.value(level, "ON_IsItem", record):
            return None
        if raw_account is None:
            raw_account = self.value(level, "ON_Account", record)
        account_id = self.accounts.resolve(conn, raw_account)
        if account_id is None:
            if raw_account in (None, ""):
                raise Unbillable(f"{level.field('ON_Account').name} is empty")  # type: ignore[union-attr]
            raise Unbillable(f"no account with id or {self.accounts.external_field} '{raw_account}'")
        template = self._template(self.value(level, "ON_Template", record))
        invoice_type = str(self.value(level, "ON_Type", record) or "").strip() or STANDARD_TYPE
        if invoice_type not in self.defaults.invoice_types or invoice_type in NOT_RUN_TYPES:
            raise Unbillable(f"ON_Type '{invoice_type}' is not an invoice type the run creates")
        key = self.value(level, "ON_SubInvoiceAssignmentKey", record)
        key = str(key).strip() if key not in (None, "") else None
        if invoice_type in KEYED_TYPES and not key:
            raise Unbillable(f"a {invoice_type} invoice needs ON_SubInvoiceAssignmentKey")
        criterion = self.value(level, "ON_InvoiceCriterion", record)
        invoice_fields = self._copies(level, record, "Invoice")
        account = self.accounts.record(account_id)
        currency = str(
            invoice_fields.get("currencyisocode") or record.get("currencyisocode") or account.get("currencyisocode")
            or self.defaults.default_currency
        )
        entity = (invoice_fields.get("businessentity") or self.accounts.copies(account_id).get("businessentity")
                  or self.defaults.default_entity)
        return SourceHeader(
            object_name=level.obj.name,
            record_id=record["id"],
            account_id=account_id,
            template=template,
            invoice_type=invoice_type,
            assignment_key=key,
            criterion=str(criterion) if criterion not in (None, "") else None,
            currency=currency,
            business_entity=entity,
            invoice_fields=invoice_fields,
        )

    def add_lines(self, source: SourceHeader, record: dict, children: Sequence[dict]) -> None:
        """The header's lines: its child records, or the record itself in single-object mode."""
        line_records = [record] if self.plan.single else children
        source.lines.extend(map(self.line, line_records))

    def _template(self, name: object) -> SettingRecord:
        defaults = self.defaults
        if name in (None, ""):
            if defaults.default_template is None:
                raise Unbillable("no template given and no template is marked Default")
            return defaults.default_template
        found = defaults.templates.get(str(name).strip().lower())
        if found is None:
            raise Unbillable(f"unknown template '{name}'")
        return found

    def _copies(self, level: Level, record: dict, target_object: str) -> dict:
        copies = self.header_copies if level is self.plan.header else self.line_copies
        out = {}
        for source, target, get, fit in copies.get(target_object, ()):
            try:
                value = get(record, self.today)
                if blank(value):
                    continue
                if target.type.is_reference and isinstance(value, str):
                    value = int(value) if value.strip().isdigit() else value
                out[target.key] = fit(value)
            except (FormulaEvaluationError, ValueProblem, ValueError) as error:
                raise Unbillable(f"{source.name} -> {target_object}.{target.name}: {error}") from None
        return out

    def line(self, record: dict) -> SourceLine:
        """One line record as a SourceLine; runs the steps of
        :meth:`_line_program` (the same checks and messages as the header's
        copies and controlling fields, without their per-call lookups)."""
        level = self.plan.line
        today = self.today
        fields: dict = {}
        for key, get, fit, reference, errors, prefix in self._line_steps:
            try:
                value = get(record, today)
                if value is None or (isinstance(value, str) and not value):  # blank(), inlined
                    continue
                if reference and isinstance(value, str):
                    value = int(value) if value.strip().isdigit() else value
                fields[key] = fit(value)
            except errors as error:
                raise Unbillable(f"{prefix}: {error}") from None
        if not fields.get("title"):
            raise Unbillable(f"{level.field('ON_Title').name} is empty")  # type: ignore[union-attr]
        if fields.get("unitprice") is None:
            raise Unbillable(f"{level.field('ON_UnitPrice').name} is empty")  # type: ignore[union-attr]
        sequence = fields.get("sequence")
        record_id = record["id"]
        order = (0, sequence, record_id) if sequence is not None else (1, _NO_SEQUENCE, record_id)
        criterion = None
        if not self.plan.single and "ON_InvoiceCriterion" in self.line_controls:
            value = self.value(level, "ON_InvoiceCriterion", record)
            criterion = None if blank(value) else str(value)
        return SourceLine(level.obj.name, record_id, order, fields, criterion)


def split_by_line_criterion(source: SourceHeader) -> list[SourceHeader]:
    """A header whose lines carry different invoice criteria (a line-level
    ON_InvoiceCriterion) becomes one source per criterion: only lines with the
    same criterion go into one invoice (domain-spec 2.3)."""
    criteria = sorted({line.criterion for line in source.lines if line.criterion is not None})
    if not criteria:
        return [source]
    parts = []
    for criterion in [None, *criteria]:
        lines = [line for line in source.lines if line.criterion == criterion]
        if not lines:
            continue
        combined = "/".join(c for c in (source.criterion, criterion) if c) or None
        parts.append(replace(source, lines=lines, criterion=combined))
    return parts
