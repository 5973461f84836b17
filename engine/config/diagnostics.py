"""Diagnostics: problems found in an org's configuration, as plain data.

Every check in the loader produces :class:`Diagnostic` values instead of raising.
A diagnostic carries a stable code (documented in ``docs/diagnostics.md``), a
severity, a message, an optional hint and the source location it refers to.
Rendering is kept apart from the data: :func:`render_human` gives the
compiler-style ``file:line:col: CODE severity: message`` lines editors can jump
to, :func:`render_json` the machine-readable form.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, Sequence


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Location:
    """Where a diagnostic points: a file (relative to the org root), 1-based
    line and column when known, and the logical YAML path inside the file."""

    file: str
    line: int | None = None
    column: int | None = None
    yaml_path: tuple[str | int, ...] = ()

    def render(self) -> str:
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def path_text(self) -> str:
        text = ""
        for part in self.yaml_path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    location: Location
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def sort_key(self) -> tuple:
        loc = self.location
        return (loc.file, loc.line or 0, loc.column or 0, self.code, self.message)


@dataclass(frozen=True, slots=True)
class CodeInfo:
    code: str
    severity: Severity
    title: str


def _codes(*rows: tuple[str, str]) -> dict[str, CodeInfo]:
    table = {}
    for code, title in rows:
        severity = Severity.WARNING if code.startswith("W") else Severity.ERROR
        table[code] = CodeInfo(code, severity, title)
    return table


# The catalogue of stable codes. A code never changes meaning once released;
# docs/diagnostics.md explains each one.
CODES: dict[str, CodeInfo] = _codes(
    ("E001", "file cannot be read (not UTF-8 text, binary, unreadable)"),
    ("E002", "YAML syntax error"),
    ("E003", "duplicate key in a mapping"),
    ("E004", "file exceeds a size or count limit"),
    ("E005", "YAML feature refused (anchor/alias, tag, excessive nesting or node count)"),
    ("E006", "file is empty or its top level is not a mapping"),
    ("E007", "more than one YAML document in a file"),
    ("E010", "unknown key"),
    ("E011", "required key missing"),
    ("E012", "value has the wrong type"),
    ("E013", "value not allowed (enumeration, pattern or range)"),
    ("W014", "file in the org directory ignored"),
    ("E020", "duplicate object or setting name"),
    ("E021", "duplicate field name"),
    ("E022", "duplicate setting record name"),
    ("E023", "duplicate child relationship name"),
    ("E030", "namespace rule: customer-added fields and objects must end in __c"),
    ("E031", "invalid API name"),
    ("E040", "unknown object"),
    ("E041", "unknown field"),
    ("E042", "unknown child relationship"),
    ("E043", "reference points to an object of the wrong kind"),
    ("E050", "formula syntax error"),
    ("E051", "formula refers to an unknown field or function"),
    ("E052", "formula type error"),
    ("E053", "formula cycle"),
    ("E054", "formula exceeds a size or complexity limit"),
    ("E056", "filter condition syntax error or limit exceeded"),
    ("E057", "filter condition refers to an unknown field or relationship"),
    ("E058", "filter condition type error"),
    ("E060", "controlling field missing for a filter"),
    ("E061", "controlling field has the wrong type"),
    ("E062", "write-back controlling field must not be a formula"),
    ("E070", "setting record value does not fit its field"),
    ("E071", "picklist value not defined"),
    ("E072", "records for an unknown setting"),
    ("E073", "required setting value missing"),
    ("E074", "hierarchy setting has more than one default row"),
    ("E075", "setting record refers to an unknown record of another setting"),
    ("E080", "product object or field missing or changed"),
    ("E081", "reserved picklist value removed"),
    ("E090", "ON field cannot be copied: target field type incompatible"),
    ("E091", "same-name custom field has a different type along the booking chain"),
    ("E092", "counter pattern has no digit mask"),
    ("E093", "counter pattern gives invoice numbers DATEV cannot take as Belegfeld 1"),
    ("E094", "deposit invoices possible without CreateBookkeepingDataForDeposit while bookkeeping is on"),
    ("E110", "template file missing or outside the templates folder"),
    ("E120", "template syntax error"),
    ("E121", "template fails on the sample invoice (undefined name or attribute, wrong type)"),
    ("E122", "template refused by the sandbox (unsafe attribute, method call, path or limit)"),
    ("E123", "template file cannot be loaded (included file missing, not UTF-8, too large)"),
    ("E124", "Template BalanceColumns names an unknown Balance field"),
    ("E125", "Template BalanceTypes is not a valid type/title mapping"),
    ("E126", "Template OverrideLabels is not valid JSON of labels"),
    ("E127", "unknown placeholder in a Template text"),
    ("E128", "Template locale unknown"),
    ("E129", "not exactly one default Template record"),
    ("E130", "automatic write-off settings inconsistent"),
    ("E131", "job schedule cron expression invalid"),
    ("E132", "job schedule cron expression never fires"),
    ("E133", "job schedule time zone unknown"),
    ("E150", "cash-management integration on without the Invoice field CM_IntegrationError__c"),
    ("E260", "payment matching rule Score not a whole number from 1 to 1000"),
    ("E261", "payment matching rule Pattern invalid, matching nothing, or on a rule that does not use it"),
    ("E262", "payment matching rule Tolerance negative or on a rule that does not use it"),
    ("E263", "payment matching threshold not positive or out of reach of the active rules"),
    ("E264", "direct debit lead time (PaymentLeadDays) outside 0-10 TARGET2 business days"),
    ("E265", "return fees charged (ChargeReturnFees) without a Dunning Fee collective account for them"),
    ("E200", "e-invoice mapping file unreadable or not laid out as sections"),
    ("E201", "e-invoice mapping names an unknown business term, or one the engine computes"),
    ("E202", "e-invoice mapping names an unknown object or field"),
    ("E203", "e-invoice mapping: field type does not fit the business term"),
    ("E204", "e-invoice mapping: required business term not mapped"),
    ("E205", "invoice type or payment method without an e-invoice code"),
    ("E206", "e-invoice code table entry invalid (document type, payment means, unit, scheme, exemption)"),
    ("E207", "tax rule VAT category unknown, without exemption reason, or contradicting its rate"),
    ("E208", "business entity lacks a value a required e-invoice term reads"),
    ("E230", "filter use case not supported by the engine yet"),
    ("E231", "subscription filter set up wrongly (target, or settings only generic filters read)"),
    ("E232", "subscription build filter without its child relationship or controlling fields"),
    ("E233", "ON field cannot be copied to the subscription or item field of its name"),
    ("E234", "usage (Continuous) filter without its controlling fields"),
    ("E235", "scheduled invoice run with Parameters that cannot be read or name no runnable filter"),
    ("E236", "filter without UseCase on Subscription runs as a generic filter, not as a subscription run"),
    ("E160", "tax rules of one type tie (overlapping validity, equal precedence)"),
    ("E161", "tax rule validity period is empty (StartDate after EndDate)"),
    ("E162", "rule names a tax code or tax rule that no tax rule has"),
    ("E163", "setting record names an unknown business entity"),
    ("E164", "placeholder in a booking or remittance text names no field"),
    ("E165", "booking text for a booking type that does not exist"),
    ("E166", "IBAN of a business entity invalid (check digits, country format, outside the SEPA zone)"),
    ("E167", "BIC of a business entity invalid"),
    ("E168", "SEPA creditor identifier of a business entity invalid"),
    ("E169", "currency code is not ISO 4217"),
    ("E170", "text can never be exported unchanged (control characters, characters outside the export's set)"),
    ("E171", "installment plan Period or Rates invalid"),
    ("E172", "DATEV export parameters missing or invalid"),
    ("E173", "account number DATEV cannot take"),
    ("E174", "cost center DATEV cannot take"),
    ("E175", "bookkeeping on without a collective account of a type it books"),
    ("E099", "internal error in a check (a bug: please report it)"),
    ("W100", "G/L account assignment rules overlap"),
    ("W101", "collective accounts overlap"),
    ("W102", "center rules overlap"),
    ("W063", "a sparse lookup that a run selects its records by (an empty value)"),
)


def make(
    code: str,
    message: str,
    location: Location,
    hint: str | None = None,
    severity: Severity | None = None,
) -> Diagnostic:
    """Build a diagnostic whose severity defaults to the code's catalogue entry."""
    info = CODES[code]
    return Diagnostic(code, severity or info.severity, message, location, hint)


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A "did you mean X?" hint for a misspelt name, or None when nothing is close."""
    pool = list(candidates)
    lowered = {c.lower(): c for c in pool}
    if name.lower() in lowered and lowered[name.lower()] != name:
        return f"did you mean {lowered[name.lower()]}?"
    matches = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    if not matches:
        matches = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
        matches = [lowered[m] for m in matches]
    return f"did you mean {matches[0]}?" if matches else None


@dataclass
class DiagnosticSink:
    """Collects diagnostics while the loader runs; never raises."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, code: str, message: str, location: Location, hint: str | None = None) -> None:
        self.items.append(make(code, message, location, hint))

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.items.extend(diagnostics)

    @property
    def has_errors(self) -> bool:
        return any(d.is_error for d in self.items)


def sorted_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    unique = {}
    for d in diagnostics:
        unique.setdefault((d.code, d.location, d.message), d)
    return sorted(unique.values(), key=Diagnostic.sort_key)


def summary_line(diagnostics: Sequence[Diagnostic], files_checked: int) -> str:
    errors = sum(1 for d in diagnostics if d.is_error)
    warnings = len(diagnostics) - errors
    if not diagnostics:
        return f"{files_checked} files checked: no problems found."
    return (
        f"{files_checked} files checked: {errors} error{'s' if errors != 1 else ''}, "
        f"{warnings} warning{'s' if warnings != 1 else ''}."
    )


def render_human(diagnostic: Diagnostic) -> str:
    """One diagnostic as ``path:line:col: CODE severity: message`` (+ indented hint)."""
    text = f"{diagnostic.location.render()}: {diagnostic.code} {diagnostic.severity.value}: {diagnostic.message}"
    if diagnostic.hint:
        text += f"\n    hint: {diagnostic.hint}"
    return text


def to_json_dict(diagnostic: Diagnostic) -> dict:
    loc = diagnostic.location
    return {
        "file": loc.file,
        "line": loc.line,
        "column": loc.column,
        "yaml_path": list(loc.yaml_path),
        "code": diagnostic.code,
        "severity": diagnostic.severity.value,
        "message": diagnostic.message,
        "hint": diagnostic.hint,
    }


def render_json(diagnostics: Sequence[Diagnostic], files_checked: int) -> str:
    errors = sum(1 for d in diagnostics if d.is_error)
    return json.dumps(
        {
            "files_checked": files_checked,
            "errors": errors,
            "warnings": len(diagnostics) - errors,
            "diagnostics": [to_json_dict(d) for d in diagnostics],
        },
        indent=2,
        ensure_ascii=False,
    )
