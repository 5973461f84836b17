"""Diagnostics as data: codes, hints, sorting and the human and JSON renderings."""

from __future__ import annotations

import json
import re

import pytest

from engine.config.diagnostics import (
    CODES,
    Diagnostic,
    DiagnosticSink,
    Location,
    Severity,
    did_you_mean,
    make,
    render_human,
    render_json,
    sorted_diagnostics,
    summary_line,
    to_json_dict,
)
from engine.project import load_project

from .orgcopy import REPO_ROOT, AddFile, copy_org

JSON_KEYS = {"file", "line", "column", "yaml_path", "code", "severity", "message", "hint"}


# --- did_you_mean ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("lenght", ["length", "label", "type"], "did you mean length?"),
        ("account", ["Account", "Invoice"], "did you mean Account?"),  # differs only in case
        ("ACCOUNTNUMBR", ["AccountNumber", "Name"], "did you mean AccountNumber?"),  # case and typo
        ("Generics", ["Generic", "Continuous", "New"], "did you mean Generic?"),
        ("OrderItem", ["OrderItems", "PartialDeliveries"], "did you mean OrderItems?"),
        ("Zebra", ["Account", "Invoice"], None),
        ("Anything", [], None),
    ],
)
def test_did_you_mean(name, candidates, expected):
    assert did_you_mean(name, candidates) == expected


def test_did_you_mean_accepts_any_iterable():
    assert did_you_mean("Invoce", (n for n in ["Invoice", "Balance"])) == "did you mean Invoice?"


# --- building --------------------------------------------------------------------------------


def test_make_takes_the_severity_from_the_catalogue():
    error = make("E040", "unknown object", Location("a.yaml", 1, 2))
    warning = make("W100", "overlap", Location("b.yaml", 3, 4), "add a criterion")
    assert error.severity is Severity.ERROR and error.is_error
    assert warning.severity is Severity.WARNING and not warning.is_error
    assert warning.hint == "add a criterion"
    assert make("W100", "x", Location("b.yaml"), severity=Severity.ERROR).is_error


def test_make_refuses_unknown_codes():
    with pytest.raises(KeyError):
        make("E999", "no such code", Location("a.yaml"))


def test_codes_match_the_documentation():
    """Every code in docs/diagnostics.md is in the catalogue and vice versa;
    E codes are errors and W codes warnings."""
    documented = set(re.findall(r"^\| ([EW]\d{3}) \|", (REPO_ROOT / "docs/diagnostics.md").read_text(), re.M))
    assert documented == set(CODES)
    for code, info in CODES.items():
        assert info.code == code
        assert info.severity is (Severity.ERROR if code.startswith("E") else Severity.WARNING)


def test_sink_collects_and_knows_about_errors():
    sink = DiagnosticSink()
    assert not sink.has_errors
    sink.add("W014", "ignored", Location("x.txt"))
    assert not sink.has_errors
    sink.extend([make("E002", "bad", Location("y.yaml", 1, 1))])
    assert sink.has_errors
    assert [d.code for d in sink.items] == ["W014", "E002"]


# --- locations and sorting ------------------------------------------------------------------------


def test_location_render():
    assert Location("a.yaml", 3, 7).render() == "a.yaml:3:7"
    assert Location("a.yaml").render() == "a.yaml"
    assert Location("a.yaml", 3).render() == "a.yaml:3:1"


def test_location_path_text():
    assert Location("a", yaml_path=("records", 2, "Name")).path_text() == "records[2].Name"
    assert Location("a", yaml_path=()).path_text() == ""


def test_sorted_diagnostics_orders_and_deduplicates():
    b2 = make("E040", "m", Location("b.yaml", 2, 1))
    a9 = make("E041", "m", Location("a.yaml", 9, 1))
    a3c5 = make("E010", "m", Location("a.yaml", 3, 5))
    a3c2 = make("E013", "m", Location("a.yaml", 3, 2))
    whole = make("E001", "m", Location("a.yaml"))
    result = sorted_diagnostics([b2, a9, a3c5, a3c2, whole, b2, make("E040", "m", Location("b.yaml", 2, 1))])
    assert result == [whole, a3c2, a3c5, a9, b2]


# --- rendering -----------------------------------------------------------------------------


def test_render_human_with_and_without_hint():
    with_hint = make("E030", "ON field 'ON_Region' on Order is a customer field and must end in __c",
                     Location("metadata/objects/Order.yaml", 41, 5), "rename it to ON_Region__c")
    assert render_human(with_hint) == (
        "metadata/objects/Order.yaml:41:5: E030 error: ON field 'ON_Region' on Order is a customer field "
        "and must end in __c\n    hint: rename it to ON_Region__c"
    )
    without = make("W014", "'x.txt' is not a .yaml file and was ignored", Location("metadata/objects/x.txt"))
    assert render_human(without) == "metadata/objects/x.txt: W014 warning: 'x.txt' is not a .yaml file and was ignored"


@pytest.mark.parametrize(
    ("errors", "warnings", "expected"),
    [
        (0, 0, "14 files checked: no problems found."),
        (1, 0, "14 files checked: 1 error, 0 warnings."),
        (2, 1, "14 files checked: 2 errors, 1 warning."),
        (0, 3, "14 files checked: 0 errors, 3 warnings."),
    ],
)
def test_summary_line(errors, warnings, expected):
    diagnostics = [make("E002", "e", Location("a", 1, 1))] * errors + [make("W100", "w", Location("a", 2, 1))] * warnings
    assert summary_line(diagnostics, 14) == expected


def test_to_json_dict():
    diagnostic = make("E041", "Filter has no field 'Targt'", Location("custom_settings/F.yaml", 5, 5, ("records", 0, "Targt")),
                      "did you mean Target?")
    assert to_json_dict(diagnostic) == {
        "file": "custom_settings/F.yaml",
        "line": 5,
        "column": 5,
        "yaml_path": ["records", 0, "Targt"],
        "code": "E041",
        "severity": "error",
        "message": "Filter has no field 'Targt'",
        "hint": "did you mean Target?",
    }


def test_render_json_round_trips():
    diagnostics = [
        make("E001", "file is not valid UTF-8 (byte 0xe9)", Location("metadata/objects/Ü.yaml", 3, 11), "save the file as UTF-8"),
        make("E004", "too big", Location("metadata/objects/big.yaml")),
        make("W100", "rules overlap", Location("custom_settings/G.yaml", 7, 5, ("records", 1))),
    ]
    text = render_json(diagnostics, 51)
    assert "Ü" in text  # not escaped
    data = json.loads(text)
    assert set(data) == {"files_checked", "errors", "warnings", "diagnostics"}
    assert (data["files_checked"], data["errors"], data["warnings"]) == (51, 2, 1)
    assert [set(d) for d in data["diagnostics"]] == [JSON_KEYS] * 3
    assert data["diagnostics"][0]["file"] == "metadata/objects/Ü.yaml"
    assert data["diagnostics"][1]["line"] is None and data["diagnostics"][1]["column"] is None
    assert data["diagnostics"][1]["hint"] is None
    assert data["diagnostics"][2] == {
        "file": "custom_settings/G.yaml", "line": 7, "column": 5, "yaml_path": ["records", 1],
        "code": "W100", "severity": "warning", "message": "rules overlap", "hint": None,
    }


def test_render_json_of_nothing():
    assert json.loads(render_json([], 3)) == {"files_checked": 3, "errors": 0, "warnings": 0, "diagnostics": []}


def test_json_of_a_real_run_matches_the_diagnostics(tmp_path):
    org = copy_org(tmp_path / "org")
    AddFile("metadata/objects/Json_Case__c.yaml",
            "version: 1\nobject: Json_Case__c\nlabel: J\nfields:\n  Code__c: {type: Txt}\n  Plain: {type: Text}\n").apply(org)
    result = load_project(org)
    data = json.loads(render_json(list(result.diagnostics), result.files_checked))
    assert data["files_checked"] == result.files_checked
    assert data["errors"] == len(result.errors) >= 2
    assert data["warnings"] == 0
    assert [(d["code"], d["line"], d["column"]) for d in data["diagnostics"]] == [
        (d.code, d.location.line, d.location.column) for d in result.diagnostics
    ]
    codes = {(d["code"], d["line"], d["column"], d["hint"]) for d in data["diagnostics"]}
    assert ("E013", 5, 19, "did you mean Text?") in codes
    assert ("E030", 6, 3, "rename it to Plain__c") in codes
    assert all(isinstance(d, Diagnostic) for d in result.diagnostics)
