"""Transactional suffix (domain-spec §2.2, seed 003 use case 1): the filters
``UC1 Sub Invoice`` (suffix Sub) and ``UC1 Final Invoice`` (suffix Final) bill
the same opportunity products, each reading only its own suffixed controlling
fields and writing back only its own ON_Invoice<sfx> field.

To tell the two field sets apart, this module's org copy gives the opportunity
products a Sub title different from the Final title, suffixed cost-object ON
fields, and unsuffixed ON_Title__c / ON_UnitPrice__c decoys that no filter
may read.
"""

from __future__ import annotations

from datetime import date

import pytest

from engine.project import load_project

from config.orgcopy import InsertAfter, Replace, copy_org

from .helpers import D, assert_invariants, failures, only

OLI = "metadata/objects/OpportunityLineItem.yaml"
MARCH = dict(start=date(2024, 3, 1), end=date(2024, 3, 31))
APRIL = dict(start=date(2024, 4, 1), end=date(2024, 4, 30))
JUNE = dict(start=date(2024, 6, 1), end=date(2024, 6, 30))


@pytest.fixture(scope="module")
def suffix_org(tmp_path_factory):
    org = copy_org(tmp_path_factory.mktemp("suffix") / "org")
    Replace(
        OLI,
        '  ON_TitleSub__c:\n    type: Formula\n    returns: Text\n    expression: "Name"',
        '  ON_TitleSub__c:\n    type: Formula\n    returns: Text\n    expression: \'"Abschlag " & Name\'',
    ).apply(org)
    InsertAfter(OLI, "fields:", "\n".join((
        "  ON_CostObjectSub__c: {type: Formula, returns: Text, expression: '\"SUB-\" & LineNumber', label: CO Sub}",
        "  ON_CostObjectFinal__c: {type: Formula, returns: Text, expression: '\"FIN-\" & LineNumber', label: CO Final}",
        "  ON_Title__c: {type: Formula, returns: Text, expression: '\"decoy\"', label: Decoy title}",
        "  ON_UnitPrice__c: {type: Formula, returns: Currency, scale: 2, expression: '1', label: Decoy price}",
    ))).apply(org)
    result = load_project(org)
    assert result.ok, [str(d) for d in result.errors]
    return org, result.model


@pytest.fixture
def uc1(db_url, suffix_org, make_harness):
    org, model = suffix_org
    return make_harness(db_url, model, org)


def _oli(h):
    return {r["name"]: r for r in h.select("OpportunityLineItem")}


def test_sub_and_final_filters_use_only_their_own_fields(uc1):
    h = uc1
    opp = h.by_field("Opportunity", "OpportunityNumber", "OPP-2024-001")

    # Sub, March: Milestone 1 only (Milestone 2 is dated April, Milestone 3 is no sub item)
    march = h.run("UC1 Sub Invoice", **MARCH)
    assert march.filters[0].records_read == 1
    p1 = h.get("Invoice", only(march.invoices).id)
    assert (p1["type"], p1["subinvoiceassignmentkey"]) == ("Progress", "OPP-2024-001")
    line = only(h.lines(p1["id"]))
    assert (line["title"], line["quantity"], line["unitprice"], line["costobject"]) == (
        "Abschlag Milestone 1", D("1"), D("1000"), "SUB-OPP-2024-001-01")
    olis = _oli(h)
    assert olis["Milestone 1"]["on_invoicesub__c"] == p1["id"]
    assert olis["Milestone 1"]["on_lastinvoicerunsub__c"] == march.run_id
    assert olis["Milestone 2"]["on_invoicesub__c"] is None and olis["Milestone 3"]["on_invoicesub__c"] is None
    assert [(c["source_table"], c["suffix"]) for c in h.claims()] == [("opportunitylineitem", "Sub")]
    untouched = h.get("Opportunity", opp["id"])
    assert (untouched["on_invoicefinal__c"], untouched["on_lastinvoicerunfinal__c"]) == (None, None)

    # Final, March: the opportunity's own service date (June) is outside
    assert h.run("UC1 Final Invoice", **MARCH).filters[0].records_read == 0
    # Sub, June: nothing (Milestone 3 has no ON_TypeSub__c, so ON_IsItemSub__c is false)
    assert h.run("UC1 Sub Invoice", **JUNE).filters[0].records_read == 0

    # Final, June, while P1 is a draft: refused, written back to the Final fields only
    refused = h.run("UC1 Final Invoice", **JUNE)
    message = only(failures(refused).values())
    assert "still drafts" in message and p1["name"] in message
    record = h.get("Opportunity", opp["id"])
    assert (record["on_invoicefinal__c"], record["on_lastinvoicerunfinal__c"]) == (None, refused.run_id)
    assert record["on_invoicebuilderrorfinal__c"] == message
    assert _oli(h)["Milestone 1"]["on_lastinvoicerunsub__c"] == march.run_id

    # P1 finalized and paid (stand-ins), Final again: built, Sub fields untouched
    h.set_open(p1["id"])
    h.pay(p1["id"], D("1190.00"), date(2024, 4, 2))
    final_run = h.run("UC1 Final Invoice", **JUNE)
    assert final_run.joined_existing and final_run.run_id == refused.run_id
    final = h.get("Invoice", only(final_run.invoices).id)
    lines = h.lines(final["id"])
    assert [(l["title"], l["postotalnet"], l["costobject"], l["isdeduction"], l["subinvoice"]) for l in lines] == [
        ("Milestone 1", D("1000.00"), "FIN-OPP-2024-001-01", False, None),
        ("Milestone 2", D("1000.00"), "FIN-OPP-2024-001-02", False, None),
        ("Milestone 3", D("1000.00"), "FIN-OPP-2024-001-03", False, None),
        # sub title "Abschlag Milestone 1" matches no final title: hidden, named after the sub invoice
        (f"Progress invoice {p1['name']}", D("-1000.00"), None, True, p1["id"]),
    ]
    assert (final["totalnet"], final["totaltax"], final["grandtotal"]) == (D("2000.00"), D("380.00"), D("2380.00"))
    record = h.get("Opportunity", opp["id"])
    assert (record["on_invoicefinal__c"], record["on_invoicebuilderrorfinal__c"]) == (final["id"], None)
    olis = _oli(h)
    assert [olis[n]["on_invoicesub__c"] for n in ("Milestone 1", "Milestone 2", "Milestone 3")] == [
        p1["id"], None, None]

    # the final invoice does not block the Sub filter: Milestone 2 is still billed in April
    april = h.run("UC1 Sub Invoice", **APRIL)
    p2 = h.get("Invoice", only(april.invoices).id)
    assert [l["title"] for l in h.lines(p2["id"])] == ["Abschlag Milestone 2"]
    assert _oli(h)["Milestone 2"]["on_invoicesub__c"] == p2["id"]
    assert sorted((c["source_table"], c["suffix"]) for c in h.claims()) == [
        ("opportunity", "Final"), ("opportunitylineitem", "Sub"), ("opportunitylineitem", "Sub")]
    assert_invariants(h)


def test_final_first_then_sub(uc1):
    """Billing with Final first leaves every Sub field alone."""
    h = uc1
    final_run = h.run("UC1 Final Invoice", **JUNE)
    final = h.get("Invoice", only(final_run.invoices).id)
    assert [l["title"] for l in h.lines(final["id"])] == ["Milestone 1", "Milestone 2", "Milestone 3"]
    assert (final["totalnet"], final["grandtotal"]) == (D("3000.00"), D("3570.00"))
    assert all(r["on_invoicesub__c"] is None and r["on_lastinvoicerunsub__c"] is None for r in _oli(h).values())
    march = h.run("UC1 Sub Invoice", **MARCH)
    assert [l["title"] for l in h.lines(only(march.invoices).id)] == ["Abschlag Milestone 1"]
    assert_invariants(h)


def test_unsuffixed_data_on_field_is_copied_by_suffixed_runs(sample_sqlite):
    h = sample_sqlite
    report = h.run("UC1 Sub Invoice", **MARCH)
    assert only(h.lines(only(report.invoices).id))["productgroup"] == "Services"
