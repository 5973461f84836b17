"""The rules of DATEV's Buchungsstapel that need no database: the header
parameters and their limits, account numbers, the code page, the setting
fields. validate-config checks settings with them (``exports/checks.py``) and
the export applies the same ones (``datev.py``), so the two cannot drift; this
module imports nothing heavy, so validate-config stays fast."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .errors import DatevParameterError

ENCODING = "cp1252"
DEFAULT_DESCRIPTION = "metabill Buchungsstapel"
KOST_LENGTH = 36
_ACCOUNT = re.compile(r"[0-9]{1,9}")
_CHART = re.compile(r"[0-9]{2}")

#: ExportSetting fields read for the DATEV parameters, when the org declares
#: them: as product fields (these names) or as customer fields (with ``__c``).
SETTING_FIELDS = {
    "consultant": "DatevConsultantNumber",
    "client": "DatevClientNumber",
    "fiscal_year_start": "DatevFiscalYearStart",
    "account_length": "DatevAccountLength",
    "chart_of_accounts": "DatevChartOfAccounts",
}

@dataclass(frozen=True)
class DatevParams:
    """What the header of a Buchungsstapel needs.

    ``date_from``/``date_to`` narrow the export to a range inside the fiscal
    year (DATEV recommends one file per booking period); without them the
    whole fiscal year is exported and the header's Datum vom/bis span the
    exported booking dates."""

    consultant: int
    client: int
    fiscal_year_start: date
    account_length: int
    description: str = DEFAULT_DESCRIPTION
    chart_of_accounts: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    currency: str = "EUR"

    @property
    def fiscal_year_end(self) -> date:
        start = self.fiscal_year_start
        try:
            following = start.replace(year=start.year + 1)
        except ValueError:  # 29 February
            following = start.replace(year=start.year + 1, day=28) + timedelta(days=1)
        return following - timedelta(days=1)

    def problems(self) -> list[str]:
        found = []
        if not 1001 <= self.consultant <= 9_999_999:
            found.append(f"consultant number (Beraternummer) {self.consultant} is not within 1001..9999999")
        if not 1 <= self.client <= 99_999:
            found.append(f"client number (Mandantennummer) {self.client} is not within 1..99999")
        if not 4 <= self.account_length <= 8:
            found.append(f"account length (Sachkontenlänge) {self.account_length} is not within 4..8")
        if len(self.description) > 30:
            found.append(f"description {self.description!r} is longer than 30 characters")
        if self.chart_of_accounts and not _CHART.fullmatch(self.chart_of_accounts):
            found.append(f"chart of accounts {self.chart_of_accounts!r} is not two digits (03 = SKR 03)")
        if not re.fullmatch(r"[A-Z]{3}", self.currency or ""):
            found.append(f"currency {self.currency!r} is not an ISO code")
        first, last = self.fiscal_year_start, self.fiscal_year_end
        for label, value in (("start date", self.date_from), ("end date", self.date_to)):
            if value is not None and not first <= value <= last:
                found.append(f"{label} {value} is outside the fiscal year {first}..{last}")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            found.append(f"start date {self.date_from} is after end date {self.date_to}")
        return found

    def validate(self) -> None:
        problems = self.problems()
        if problems:
            raise DatevParameterError("; ".join(problems))


def as_date(value: object) -> date:
    """A date from a setting value (date, datetime or ISO text)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def account_problem(label: str, value: object, length: int) -> str | None:
    """Why ``value`` is not a DATEV account number of ``length`` digits (+1), or None."""
    if value is None or value == "":
        return f"{label} is empty"
    text = str(value)
    if not _ACCOUNT.fullmatch(text) or len(text) > length + 1:
        return (
            f"{label} {text!r} is not a DATEV account number "
            f"(digits only, at most {length + 1} with Sachkontenlänge {length})"
        )
    return None
