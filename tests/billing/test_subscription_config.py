"""validate-config and subscription filters: the use cases the engine does not
run are refused at the file and line of the value (E230), a Subscription filter
must target Subscription and not set what only generic filters read (E231), and
the run refuses what validate-config would (R220)."""

from __future__ import annotations

from datetime import date

import pytest

from config.orgcopy import copy_org, find_position, read_text
from engine.billing.run import RunRequest, check_request
from engine.billing.subscriptions import SubscriptionRunError
from engine.config.diagnostics import CODES
from engine.project import load_project

from contexts import context
from databases import REPO_ROOT

FILTERS = "custom_settings/Filter.yaml"


def _with_filter(tmp_path, text: str):
    org = copy_org(tmp_path / "org")
    path = org / FILTERS
    path.write_text(read_text(org, FILTERS) + text, encoding="utf-8")
    return org, load_project(org)


@pytest.mark.parametrize("use_case", ["New", "Reorder",
                                      "Upgrade", "AccountStatement"])
def test_use_cases_not_run_yet_are_refused_at_their_line(tmp_path, use_case):
    org, result = _with_filter(tmp_path, f"  - Name: Later\n    Target: Opportunity\n    UseCase: {use_case}\n")
    found = [d for d in result.diagnostics if d.code == "E230"]
    assert len(found) == 1 and not result.ok
    line, column = find_position(read_text(org, FILTERS), f"UseCase: {use_case}")
    assert (found[0].location.file, found[0].location.line) == (FILTERS, line)
    assert f"use case '{use_case}'" in found[0].message


def test_a_subscription_filter_targets_subscriptions_only(tmp_path):
    org, result = _with_filter(tmp_path, "  - Name: Wrong\n    Target: Order\n    UseCase: Subscription\n"
                                         "    TransactionalSuffix: Sub\n")
    found = sorted((d.location.line, d.message) for d in result.diagnostics if d.code == "E231")
    text = read_text(org, FILTERS)
    assert [line for line, _ in found] == [find_position(text, "Target: Order", 2)[0],
                                           find_position(text, "TransactionalSuffix: Sub", 2)[0]]
    assert "must target Subscription, not 'Order'" in found[0][1]


def test_the_sample_org_with_its_subscription_filter_is_valid(sample_model):
    record = sample_model.setting_record("Filter", "Subscriptions")
    assert record is not None and record.get("UseCase") == "Subscription"
    assert load_project(REPO_ROOT).ok
    assert {"E230", "E231"} <= set(CODES)
    documented = (REPO_ROOT / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    assert "| E230 |" in documented and "| E231 |" in documented


def test_the_run_refuses_what_validate_config_refuses(sample_model):
    """A model that was not validated (validate-config would say E231) still cannot bill wrongly."""
    import dataclasses

    ctx = context(sample_model)
    record = sample_model.setting_record("Filter", "Subscriptions")
    wrong = dataclasses.replace(record, values={**record.values, "target": "Order"})
    from engine.billing.subscriptions import plan_subscriptions

    with pytest.raises(SubscriptionRunError) as raised:
        plan_subscriptions(ctx, wrong)
    assert raised.value.code == "R220"
    plans = check_request(ctx, RunRequest(("Subscriptions",), date(2024, 1, 1), date(2024, 1, 31)))
    assert [p.name for p in plans] == ["Subscriptions"]


@pytest.mark.parametrize("use_case_line", ["", "    UseCase:\n"])
def test_a_filter_on_subscription_without_use_case_is_said_to_be_generic(tmp_path, use_case_line):
    """JustOn runs a filter with an empty use case as the subscription run;
    here empty means Generic (as for every other filter), so a filter on
    Subscription without one gets a warning at its Target, naming both fixes."""
    org, result = _with_filter(tmp_path, f"  - Name: Monthly\n    Target: Subscription\n{use_case_line}")
    found = [d for d in result.diagnostics if d.code == "E236"]
    assert len(found) == 1 and found[0].severity.value == "warning"
    line, _ = find_position(read_text(org, FILTERS), "Target: Subscription", 2)
    assert (found[0].location.file, found[0].location.line) == (FILTERS, line)
    assert "'Monthly'" in found[0].message and "UseCase: Subscription" in (found[0].hint or "")


@pytest.mark.parametrize(("target", "use_case"), [("Subscription", "Subscription"), ("Subscription", "Generic"),
                                                   ("Order", None)])
def test_no_warning_when_the_use_case_is_said_or_the_target_is_another(tmp_path, target, use_case):
    text = f"  - Name: Other\n    Target: {target}\n" + (f"    UseCase: {use_case}\n" if use_case else "")
    _, result = _with_filter(tmp_path, text)
    assert not [d for d in result.diagnostics if d.code == "E236"]
