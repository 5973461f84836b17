"""Scheduled invoice runs: what a JobSchedule of job ``InvoiceRun`` bills.

The schedule's ``Parameters`` (JSON) say which filters, over which period
relative to the slot the schedule fires in, with which invoice date, and
whether the drafts are finalized right away (domain-spec §3.1, scheduled
run parameters):

    {"Filters": ["Subscriptions"], "Interval": "1m", "Alignment": "previous",
     "InvoiceDate": "end", "Finalize": true}

* ``Interval``: ``Nm`` (months, the default ``1m``), ``Nw`` (weeks, starting
  on ``StartOfWeek``, 1 = Monday) or ``Nd`` (days); month intervals of N
  months are aligned to the calendar year (``3m``: quarters), week and day
  intervals end with the slot's day;
* ``Alignment``: ``previous`` (default: the interval before the one holding
  the slot's day; on 2 March with ``1m``, February), ``current`` or ``next``;
* ``InvoiceDate``: empty (set at finalization) or ``start``/``end`` of the
  period with an optional ``+N``/``-N`` days (``end-5``);
* ``Finalize``: finalize the run's drafts after the run.

:func:`scheduled_request` is pure; the scheduler (``engine.cash.jobs``)
decides when a slot runs, and the run itself is the ordinary invoice run:
a slot run again (a scheduler restarted mid-slot) joins the run of the same
period and filters and bills only what is left.
"""

from __future__ import annotations

import calendar
import json
import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .run import RunRequest


_INTERVAL = re.compile(r"^\s*(\d{1,3})\s*([mwd])\s*$")
_INVOICE_DATE = re.compile(r"^\s*(start|end)\s*(?:([+-])\s*(\d{1,3}))?\s*$")
ALIGNMENTS = ("previous", "current", "next")


class ParameterError(ValueError):
    """The Parameters of a scheduled invoice run cannot be read (the message says why)."""


@dataclass(frozen=True)
class ScheduledRun:
    filters: tuple[str, ...]
    count: int = 1
    unit: str = "m"
    alignment: str = "previous"
    invoice_date: tuple[str, int] | None = None  # ("start"|"end", days)
    finalize: bool = False
    start_of_week: int = 1  # 1 = Monday ... 7 = Sunday


def parse_parameters(text: object) -> ScheduledRun:
    """The parameters of a scheduled invoice run; :class:`ParameterError` says what is wrong."""
    try:
        data = json.loads(str(text or ""))
    except json.JSONDecodeError as error:
        raise ParameterError(f"Parameters are not JSON ({error.msg} at position {error.pos})") from None
    if not isinstance(data, dict):
        raise ParameterError("Parameters must be a JSON object")
    known = {"Filters", "Interval", "Alignment", "InvoiceDate", "Finalize", "StartOfWeek"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    filters = data.get("Filters")
    if isinstance(filters, str):
        filters = [filters]
    if not filters or not isinstance(filters, list) or not all(isinstance(f, str) and f.strip() for f in filters):
        raise ParameterError('"Filters" must name at least one filter, e.g. ["Subscriptions"]')
    match = _INTERVAL.match(str(data.get("Interval", "1m")))
    if match is None or int(match.group(1)) < 1:
        raise ParameterError(f'"Interval" must be like 1m, 3m, 2w or 7d, not {data.get("Interval")!r}')
    alignment = str(data.get("Alignment", "previous")).lower()
    if alignment not in ALIGNMENTS:
        raise ParameterError(f'"Alignment" must be one of {", ".join(ALIGNMENTS)}, not {data.get("Alignment")!r}')
    invoice_date = None
    if data.get("InvoiceDate") not in (None, ""):
        found = _INVOICE_DATE.match(str(data["InvoiceDate"]))
        if found is None:
            raise ParameterError(f'"InvoiceDate" must be like start, end, end-5 or start+3, not {data["InvoiceDate"]!r}')
        days = int(found.group(3) or 0) * (-1 if found.group(2) == "-" else 1)
        invoice_date = (found.group(1), days)
    finalize = data.get("Finalize", False)
    if not isinstance(finalize, bool):
        raise ParameterError('"Finalize" must be true or false')
    week = data.get("StartOfWeek", 1)
    if not isinstance(week, int) or isinstance(week, bool) or not 1 <= week <= 7:
        raise ParameterError('"StartOfWeek" must be 1 (Monday) to 7 (Sunday)')
    return ScheduledRun(tuple(f.strip() for f in filters), int(match.group(1)), match.group(2), alignment,
                        invoice_date, finalize, week)


def scheduled_period(spec: ScheduledRun, day: date) -> tuple[date, date]:
    """The period a slot on ``day`` bills (see the module docstring)."""
    shift = ALIGNMENTS.index(spec.alignment) - 1  # previous -1, current 0, next +1
    if spec.unit == "m":
        index = day.year * 12 + day.month - 1
        first = (index // spec.count) * spec.count + shift * spec.count
        start = date(first // 12, first % 12 + 1, 1)
        last = first + spec.count - 1
        end = date(last // 12, last % 12 + 1, calendar.monthrange(last // 12, last % 12 + 1)[1])
        return start, end
    length = spec.count * (7 if spec.unit == "w" else 1)
    if spec.unit == "w":  # the N weeks ending with the week holding the day
        week_start = day - timedelta(days=(day.isoweekday() - spec.start_of_week) % 7)
        start = week_start - timedelta(days=(spec.count - 1) * 7)
    else:  # the N days ending with the day
        start = day - timedelta(days=length - 1)
    start += timedelta(days=shift * length)
    return start, start + timedelta(days=length - 1)


def scheduled_request(spec: ScheduledRun, day: date) -> RunRequest:
    """The invoice run of a slot on ``day`` (relative dates evaluated against that day)."""
    # Imported here: validate-config parses schedules and must not pay for the run's imports.
    from .run import RunRequest  # noqa: PLC0415

    start, end = scheduled_period(spec, day)
    invoice_date = None
    if spec.invoice_date is not None:
        anchor, days = spec.invoice_date
        invoice_date = (start if anchor == "start" else end) + timedelta(days=days)
    return RunRequest(filters=spec.filters, period_start=start, period_end=end, invoice_date=invoice_date, today=day)
