"""Counter patterns are checked before any number is drawn (issue 14).

A pattern without a digit mask fails every finalization, and one whose
numbers DATEV refuses as Belegfeld 1 (a leading ``=``, a space, ...) makes
every booking unexportable; validate-config reports both at the Counter
record's Pattern line (E092, E093). Both passed validation before.
"""

from __future__ import annotations

import pytest

from engine.booking.numbering import datev_number_problem, pattern_problems
from engine.project import load_project

from config.orgcopy import REPO_ROOT, Replace, line_of, read_text

from .helpers import org_variant

COUNTERS = "custom_settings/Counter.yaml"


def _diagnostics(tmp_path, pattern: str) -> list:
    org = org_variant(tmp_path / "org", Replace(COUNTERS, "Pattern: CR-[Year]-{00000}", f"Pattern: '{pattern}'"))
    result = load_project(org)
    line = line_of(read_text(org, COUNTERS), f"Pattern: '{pattern}'")
    return [(d.code, d.severity.value, d.location.file, d.location.line, d.message)
            for d in result.diagnostics if d.code in ("E092", "E093")], line


@pytest.mark.parametrize("pattern, fragment", [
    ("=CR-[Year]-{00000}", "'='"),
    ("+[Year]{00000}", "starts with + or -"),
    ("CR [Year] {00000}", "' '"),
    ("CR_[Year]_{00000}", "'_'"),
    ("CREDIT-NOTE-OF-THE-COMPANY-[Year]-{00000000}", "longer than 36"),
])
def test_patterns_datev_cannot_take_are_reported_at_the_record(tmp_path, pattern, fragment):
    found, line = _diagnostics(tmp_path, pattern)
    assert len(found) == 1, found
    code, severity, file, at, message = found[0]
    assert (code, severity, file, at) == ("E093", "error", COUNTERS, line)
    assert "counter 'Credit'" in message and fragment in message


def test_a_pattern_without_digit_mask_is_reported(tmp_path):
    found, line = _diagnostics(tmp_path, "CR-[Year]-0000")
    assert [(code, at) for code, _, _, at, _ in found] == [("E092", line)]
    assert "digit mask" in found[0][4]


def test_the_sample_org_and_good_patterns_pass():
    assert not [d for d in load_project(REPO_ROOT).diagnostics if d.code in ("E092", "E093")]
    for pattern in ("INV-[Year]-{00000}", "RE/[Year][Month]/{0000}", "[AccountNo]-{000000}", "{0}"):
        assert pattern_problems(pattern) == [], pattern
    assert datev_number_problem("INV-2024-00001") is None
    assert datev_number_problem("=INV-1") is not None
