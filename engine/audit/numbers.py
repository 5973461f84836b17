"""Invoice numbers: unique, and gapless per number range.

Numbers are drawn in the finalizing transaction (``engine.booking.numbering``):
a finalization that fails rolls its numbers back, so a committed number range
``StartCount + 1 .. Counter`` is used by exactly one finalized invoice per
value. A gap is therefore explained by nothing (A241), a number outside its
range (beyond the counter, in no range, or not shaped like its counter's
pattern) is A242, and a number used twice is A240.

Which range an invoice belongs to is decided as at its finalization: its
counter (``choose_counter``) and the reset period of its invoice date
(``range_key``), with the org's current Counter records. The value is read
back from the number through the counter's pattern.
"""

from __future__ import annotations

import re
from typing import Iterator

import sqlalchemy as sa

from engine.booking.errors import FinalizeError
from engine.booking.numbering import choose_counter, range_key

from .base import UNFINALIZED, AuditRun, stream
from .findings import Finding, finding

_MASK = re.compile(r"\{(0+)\}")
_PLACEHOLDERS = {"[Year]": r"\d{4}", "[Month]": r"\d{2}", "[Day]": r"\d{2}", "[AccountNo]": r".*?"}
#: Missing values listed in one finding (the count is always complete).
SHOWN = 10


def pattern_regex(pattern: str) -> re.Pattern | None:
    """A regex reading the counter value out of numbers of ``pattern``
    (None for a pattern without a digit mask)."""
    mask = _MASK.search(pattern)
    if mask is None:
        return None

    def literal(part: str) -> str:
        out = re.escape(part)
        for placeholder, regex in _PLACEHOLDERS.items():
            out = out.replace(re.escape(placeholder), regex)
        return out

    width = len(mask.group(1))
    return re.compile(f"{literal(pattern[:mask.start()])}(\\d{{{width},}}){literal(pattern[mask.end():])}")


def check_numbers(run: AuditRun) -> Iterator[Finding]:
    """A240, A241, A242."""
    ctx = run.ctx
    invoices = run.table("Invoice")
    ranges = run.table("NumberRange")
    finalized = invoices.c.status.not_in(UNFINALIZED)
    twice = (sa.select(invoices.c.name, sa.func.count().label("n")).where(finalized)
             .group_by(invoices.c.name).having(sa.func.count() > 1).order_by(invoices.c.name))
    for row in stream(run.conn, twice):
        yield finding("A240", "invoice", row["name"], f"the number is used by {row['n']} finalized invoices",
                      expected=1, actual=row["n"])

    used: dict[str, set[int]] = {}
    regexes: dict[str, re.Pattern | None] = {}
    counters: dict[tuple, object] = {}
    query = (sa.select(invoices.c.id, invoices.c.name, invoices.c.date, invoices.c.account, invoices.c.template,
                       invoices.c.businessentity, invoices.c["class"])
             .where(finalized).order_by(invoices.c.id))
    for row in stream(run.conn, query):
        run.report.count("invoice numbers")
        invoice = dict(row)
        memo = (invoice["template"], invoice["businessentity"], invoice["class"])
        if memo not in counters:
            try:
                counters[memo] = choose_counter(ctx, invoice)
            except FinalizeError as error:
                counters[memo] = error
        counter = counters[memo]
        if isinstance(counter, FinalizeError):
            yield finding("A242", "invoice", invoice["name"], f"no counter applies to it any more: {counter}")
            continue
        pattern = str(counter.get("Pattern") or "{00000}")  # type: ignore[attr-defined]
        if pattern not in regexes:
            regexes[pattern] = pattern_regex(pattern)
        regex = regexes[pattern]
        match = regex.fullmatch(invoice["name"] or "") if regex is not None and invoice["date"] else None
        if match is None:
            yield finding("A242", "invoice", invoice["name"],
                          f"the number does not fit the pattern {pattern!r} of its counter "
                          f"{counter.name}")  # type: ignore[attr-defined]
            continue
        key = range_key(counter, invoice["date"], invoice["account"])[0]  # type: ignore[arg-type]
        values = used.setdefault(key, set())
        value = int(match.group(1))
        if value in values:
            continue  # the same number twice is A240; a number range value twice with another text is too
        values.add(value)

    for row in stream(run.conn, sa.select(ranges.c.rangekey, ranges.c.countername, ranges.c.counter)
                      .order_by(ranges.c.rangekey)):
        run.report.count("number ranges")
        key = row["rangekey"]
        record = ctx.model.setting_record("Counter", str(row["countername"]))
        start = int(record.get("StartCount") or 0) if record is not None else 0
        last = int(row["counter"] or 0)
        values = used.pop(key, set())
        missing = [v for v in range(start + 1, last + 1) if v not in values]
        beyond = sorted(v for v in values if v > last or v <= start)
        if missing:
            shown = ", ".join(map(str, missing[:SHOWN])) + (" ..." if len(missing) > SHOWN else "")
            yield finding("A241", "number range", key,
                          f"{len(missing)} value(s) between {start + 1} and {last} were drawn but no finalized "
                          f"invoice carries them: {shown}", expected=last - start, actual=last - start - len(missing),
                          hint="numbers are drawn in the finalizing transaction: a gap means a finalized invoice "
                               "was deleted or renumbered")
        if beyond:
            yield finding("A242", "number range", key,
                          f"{len(beyond)} invoice number(s) outside the range {start + 1}..{last}: "
                          + ", ".join(map(str, beyond[:SHOWN])), expected=last, actual=beyond[-1])
    for key, values in sorted(used.items()):
        yield finding("A242", "number range", key, f"{len(values)} invoice number(s) in a number range that does "
                      "not exist", expected=0, actual=len(values))
