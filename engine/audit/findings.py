"""What an audit finds, as data: findings, the reconciliation table, the report.

A :class:`Finding` is one difference between what the engine wrote and what
it should have written: a stable code (``A`` + three digits, catalogued in
:data:`CODES` and in ``engine/audit/README.md``), what it concerns (an
invoice, a balance, an account in a booking period, a file ...), the expected
and the actual value, and a message an accountant can act on.

:class:`AccountPeriod` is one row of the reconciliation table: the movements
of one G/L account in one booking period and currency as the journal has
them (debit, credit), what was transferred to DATEV, and everything left out
of DATEV with its reason and amount. The rows are also the trial balance.

:class:`AuditReport` holds both, plus what was checked; ``report.ok`` is true
only without findings; :meth:`AuditReport.to_dict` is the documented JSON form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable

from engine.domain.errors import Problem, Where
from engine.domain.money import CENT, ZERO

from .errors import AuditDifferences

#: Every finding code with its title (the catalogue; README.md lists it too).
CODES: dict[str, str] = {
    "A101": "A booking detail without a debit or a credit account, or posted against itself",
    "A103": "A booking detail in a booking period that cannot hold its booking date",
    "A201": "Invoice totals differ from the sums of its lines",
    "A202": "Gross is not net plus tax (on a line or on the invoice)",
    "A203": "An invoice without lines",
    "A210": "Revenue bookings differ from the invoice's net total",
    "A211": "Tax bookings differ from the invoice's tax total",
    "A212": "The invoice's bookings move its debtor by another amount than its grand total",
    "A213": "A finalized invoice without booking details",
    "A214": "A cancellation's bookings do not reverse the bookings of the invoice it cancels",
    "A220": "Invoice balance differs from the sum of its balance records",
    "A221": "Invoice status does not match its balance",
    "A222": "A finalized invoice without exactly one Invoice balance of its grand total",
    "A223": "Account balance differs from the sum of its balances",
    "A230": "A source record billed on two live invoices",
    "A231": "Billing claims and the ON_Invoice write-back disagree",
    "A232": "A billing claim names a missing, cancelled or cancellation invoice",
    "A240": "An invoice number used twice",
    "A241": "A gap in a number range",
    "A242": "An invoice number outside its number range",
    "A301": "A booked balance whose bookings do not move the debtor by its amount",
    "A302": "The interim bookings of a progress payment differ from the amount received",
    "A303": "Booking details on a balance of a type that is not booked",
    "A401": "An interim account does not net to zero for a closed project",
    "A402": "The interim tax of a closed project differs from the tax its final invoice deducts",
    "A501": "DATEV export marks and accounting document items disagree",
    "A502": "An exported booking detail differs from what was transferred to DATEV",
    "A503": "A DATEV file line matches no exported booking detail",
    "A504": "An exported booking detail is missing from the DATEV files",
    "A505": "A DATEV file cannot be read as a Buchungsstapel",
    "A506": "Journal, DATEV and left-out amounts of an account do not reconcile",
    "A510": "Times Exported differs from the invoice's export history",
    "A511": "A SEPA export collects or pays out more than is due",
    "A512": "An exported balance and its Payout reverse balance do not match",
    "A513": "A SEPA file order differs from the export history",
    "A514": "An export recorded for a SEPA file has no order in it",
    "A515": "A SEPA file cannot be read or matches no recorded export",
    "A601": "A stored invoice document differs from its recorded hash",
    "A602": "A finalized invoice no longer matches the document issued for it",
    "A603": "A finalized invoice without its issued document",
    "A604": "An issued e-invoice violates the XSD, EN 16931 or XRechnung rules",
}

#: Why a booking movement is not in DATEV (the reconciliation's columns).
LEFT_OUT_REASONS: dict[str, str] = {
    "interim": "interim bookings of progress invoices (Interim Revenue, Interim Payment, Interim Payment "
               "Clearing, Interim Tax): the DATEV connector does not take them (seed 003)",
    "currency": "amounts in another currency than the DATEV batch's: DATEV needs an exchange rate the booking "
                "details do not have",
    "not exported": "not exported (yet): no DATEV export has taken them, or the export excluded them "
                    "(its report names the reason)",
}


def text(value: object) -> str | None:
    """A value as the report shows it: amounts with two decimals, the rest as text."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return format(value.quantize(CENT) if value == value.quantize(CENT) else value, "f")
    return str(value)


@dataclass(frozen=True)
class Finding:
    """One difference. ``concerns`` is the kind of thing (``invoice``,
    ``balance``, ``account``, ``period``, ``file``, ``number range``,
    ``source record``, ``project``, ``booking detail``, ``export``),
    ``subject`` names it (an invoice number, ``1776 DE01-2024-09``, a path).
    ``check`` is the audit check that found it (filled in by the runner)."""

    code: str
    concerns: str
    subject: str
    message: str
    expected: str | None = None
    actual: str | None = None
    hint: str | None = None
    check: str = ""

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown audit finding code {self.code!r}")

    @property
    def title(self) -> str:
        return CODES[self.code]

    def render(self) -> str:
        """``invoice INV-2024-00001: message (expected 1.00, actual 2.00) [A212]``."""
        values = ""
        if self.expected is not None or self.actual is not None:
            values = f" (expected {self.expected}, actual {self.actual})"
        return f"{self.concerns} {self.subject}: {self.message}{values} [{self.code}]"

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "title": self.title, "check": self.check, "concerns": self.concerns,
                "subject": self.subject, "message": self.message, "expected": self.expected,
                "actual": self.actual, "hint": self.hint}

    def problem(self) -> Problem:
        """The finding as a runtime problem (code = the finding's code)."""
        return Problem(self.code, self.message if self.expected is None and self.actual is None
                       else f"{self.message} (expected {self.expected}, actual {self.actual})",
                       Where(object=self.concerns, record=self.subject), self.hint)


def finding(code: str, concerns: str, subject: object, message: str, *, expected: object = None,
            actual: object = None, hint: str | None = None) -> Finding:
    """A :class:`Finding` with its values shown as text."""
    return Finding(code, concerns, str(subject), message, text(expected), text(actual), hint)


@dataclass
class AccountPeriod:
    """One G/L account in one booking period and currency: the journal's
    debit and credit, the net movement transferred to DATEV (accounting
    document items), and the net movement left out of DATEV per reason
    (:data:`LEFT_OUT_REASONS`). Net = debit - credit. ``difference`` is
    journal net - DATEV - left out: zero when they reconcile."""

    period: str
    account: str
    currency: str
    debit: Decimal = ZERO
    credit: Decimal = ZERO
    datev: Decimal = ZERO
    left_out: dict[str, Decimal] = field(default_factory=dict)

    @property
    def net(self) -> Decimal:
        return self.debit - self.credit

    @property
    def difference(self) -> Decimal:
        return self.net - self.datev - sum(self.left_out.values(), ZERO)

    def to_dict(self) -> dict[str, object]:
        return {"period": self.period, "account": self.account, "currency": self.currency,
                "debit": text(self.debit), "credit": text(self.credit), "net": text(self.net),
                "datev": text(self.datev),
                "left_out": {reason: text(self.left_out.get(reason, ZERO)) for reason in LEFT_OUT_REASONS},
                "difference": text(self.difference)}


@dataclass
class LeftOut:
    """Everything left out of DATEV for one reason: how many booking details
    and their amount (Σ |amount|), per currency."""

    reason: str
    currency: str
    details: int = 0
    amount: Decimal = ZERO

    def to_dict(self) -> dict[str, object]:
        return {"reason": self.reason, "description": LEFT_OUT_REASONS[self.reason], "currency": self.currency,
                "details": self.details, "amount": text(self.amount)}


@dataclass
class FileSummary:
    """A DATEV or SEPA file given to the audit: lines or orders read, how many
    matched what the database recorded, and their total amount."""

    path: str
    kind: str
    entries: int = 0
    matched: int = 0
    amount: Decimal = ZERO

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "kind": self.kind, "entries": self.entries, "matched": self.matched,
                "amount": text(self.amount)}


@dataclass
class AuditReport:
    """The findings, the reconciliation table (= trial balance), what was left
    out of DATEV, the files read, and what was checked (counts per kind).
    ``skipped`` names checks that could not run, with the reason."""

    findings: list[Finding] = field(default_factory=list)
    accounts: dict[tuple[str, str, str], AccountPeriod] = field(default_factory=dict)
    left_out: dict[tuple[str, str], LeftOut] = field(default_factory=dict)
    files: list[FileSummary] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def count(self, kind: str, number: int = 1) -> None:
        """Add ``number`` to what was checked of ``kind``."""
        self.checked[kind] = self.checked.get(kind, 0) + number

    def account(self, period: str, account: str, currency: str) -> AccountPeriod:
        key = (period, account, currency)
        row = self.accounts.get(key)
        if row is None:
            row = self.accounts[key] = AccountPeriod(period, account, currency)
        return row

    def codes(self) -> dict[str, int]:
        """How many findings per code."""
        found: dict[str, int] = {}
        for item in self.findings:
            found[item.code] = found.get(item.code, 0) + 1
        return dict(sorted(found.items()))

    def rows(self) -> list[AccountPeriod]:
        """The reconciliation table in order: period, account, currency."""
        return [self.accounts[key] for key in sorted(self.accounts)]

    def summary(self) -> dict[str, object]:
        return {"ok": self.ok, "findings": len(self.findings), "by_code": self.codes(),
                "checked": dict(sorted(self.checked.items())), "checks": list(self.checks),
                "skipped": dict(sorted(self.skipped.items()))}

    def summary_lines(self) -> list[str]:
        """A short text summary (what ``metabill audit`` prints last)."""
        checked = ", ".join(f"{number} {kind}" for kind, number in sorted(self.checked.items()))
        lines = [f"Checked {checked}." if checked else "Nothing to check."]
        for item in sorted(self.left_out.values(), key=lambda i: (i.reason, i.currency)):
            lines.append(f"Left out of DATEV ({item.reason}): {item.details} booking detail(s), "
                         f"{text(item.amount)} {item.currency}.")
        for name, reason in sorted(self.skipped.items()):
            lines.append(f"Not checked ({name}): {reason}.")
        if self.ok:
            lines.append("The books reconcile: no differences.")
        else:
            by_code = ", ".join(f"{code} x{number}" for code, number in self.codes().items())
            lines.append(f"{len(self.findings)} difference(s): {by_code}.")
        return lines

    def to_dict(self) -> dict[str, object]:
        """The JSON form (shape documented in engine/audit/README.md)."""
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "findings": [item.to_dict() for item in self.findings],
            "reconciliation": [row.to_dict() for row in self.rows()],
            "left_out": [item.to_dict() for item in sorted(self.left_out.values(),
                                                           key=lambda i: (i.reason, i.currency))],
            "files": [item.to_dict() for item in self.files],
        }

    def failure_error(self) -> AuditDifferences | None:
        """The error ``metabill audit`` ends with (exit 1): None when the books
        reconcile, else one problem per finding."""
        if self.ok:
            return None
        return AuditDifferences(f"the audit found {len(self.findings)} difference(s)",
                                problems=tuple(item.problem() for item in self.findings))

    def sort(self) -> None:
        """Findings in a stable order: code, subject, message."""
        self.findings.sort(key=lambda f: (f.code, f.concerns, f.subject, f.message))


def extend(report: AuditReport, check: str, found: Iterable[Finding]) -> None:
    """Add the findings of ``check`` to ``report``, tagged with its name."""
    for item in found:
        report.findings.append(Finding(item.code, item.concerns, item.subject, item.message, item.expected,
                                       item.actual, item.hint, check))
