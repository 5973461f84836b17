"""The subscription build (engine.billing.subscription_build) on SQLite and PostgreSQL.

A test org: the sample org whose Opportunity gains the builder's controlling
fields with the suffix Bld and ON fields for the subscription (start date,
billing period, seed 004's ON_BuCode), its products ON fields for the items,
and a SubscriptionBuilder filter. Closed-won opportunities become active
subscriptions with their products as items; a reorder (ON_MasterSubscription)
adds its items to an existing subscription; re-running builds nothing; a record
that cannot be built gets its error and is built once fixed; a dry run writes
nothing; two builds at once build each record once; the built subscription is
billed with the copied BuCode on its invoice.
"""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from config.orgcopy import InsertAfter, apply_edits, copy_org, find_position, read_text
from databases import load_model
from engine.billing.subscription_build import SubscriptionBuildError, build_subscriptions
from engine.project import load_project

from contexts import context

from .helpers import Harness

D = Decimal
OPPORTUNITY = "metadata/objects/Opportunity.yaml"
LINE = "metadata/objects/OpportunityLineItem.yaml"
BUILDER_FIELDS = """\
  ON_AccountBld__c: {type: Formula, returns: Text, expression: "AccountId", label: Subscription Account}
  ON_SubscriptionBld__c: {type: Lookup, to: Subscription, relationship_name: BuiltFrom, on_delete: clear, label: Subscription}
  ON_SubscriptionBuildErrorBld__c: {type: Text, length: 255, label: Subscription Build Error}
  ON_MasterSubscriptionBld__c: {type: Text, length: 40, label: Master Subscription}
  ON_StartDateBld__c: {type: Date, label: Subscription Start}
  ON_BillingPeriodBld__c: {type: Text, length: 20, label: Subscription Billing Period}
  ON_SubscriptionKeyBld__c: {type: Text, length: 40, label: Subscription Key}
  ON_BuCodeBld__c: {type: Text, length: 4, label: BU Code}"""
LINE_FIELDS = """\
  ON_TitleBld__c: {type: Formula, returns: Text, expression: "Description", label: Item Title}
  ON_QuantityBld__c: {type: Formula, returns: Number, scale: 4, expression: "Quantity", label: Item Quantity}
  ON_UnitPriceBld__c: {type: Formula, returns: Currency, scale: 4, expression: "UnitPrice", label: Item Price}
  ON_BillingTypeBld__c: {type: Text, length: 20, label: Item Billing Type}"""
BU = "    type: Text\n    length: 4\n    label: BU Code"
FILTER = """\
  - Name: Build Subscriptions
    Target: Opportunity
    ChildRelation: OpportunityLineItems
    UseCase: SubscriptionBuilder
    TransactionalSuffix: Bld
    Condition: "StageName = 'Closed Won' AND Type IN ('New Business', 'Existing Business')"
"""
EDITS = (
    InsertAfter(OPPORTUNITY, "fields:", BUILDER_FIELDS),
    InsertAfter(LINE, "fields:", LINE_FIELDS),
    InsertAfter("metadata/objects/Subscription.yaml", "fields:", f"  ON_BuCode__c:\n{BU}"),
    InsertAfter("metadata/objects/Invoice.yaml", "fields:", f"  BuCode__c:\n{BU}"),
)


def make_build_org(dest: Path) -> Path:
    org = copy_org(dest)
    apply_edits(org, EDITS)
    path = org / "custom_settings" / "Filter.yaml"
    path.write_text(path.read_text(encoding="utf-8") + FILTER, encoding="utf-8")
    return org


@pytest.fixture(scope="module")
def build_org(tmp_path_factory) -> Path:
    return make_build_org(tmp_path_factory.mktemp("build") / "org")


@pytest.fixture(scope="module")
def build_model(build_org):
    return load_model(build_org)


@pytest.fixture
def h(db_url, build_model, build_org, prepared) -> Harness:
    return Harness(prepared(db_url, build_model), build_model, db_url, build_org)


def opportunity(h: Harness, number: str, lines: list[tuple[str, str, str]], **fields) -> int:
    values = {"name": number, "opportunitynumber": number, "accountid": h.account_id("10001"),
              "stagename": "Closed Won", "closedate": date(2024, 1, 10), "type": "New Business",
              "on_startdatebld__c": date(2024, 2, 1), "on_billingperiodbld__c": "Month", **fields}
    (opp_id,) = h.insert("Opportunity", [values])
    h.insert("OpportunityLineItem", [
        {"name": f"{number}-{i}", "linenumber": f"{number}-{i}", "opportunityid": opp_id, "quantity": D(quantity),
         "unitprice": D(price), "description": title, "on_billingtypebld__c": "Recurring"}
        for i, (title, quantity, price) in enumerate(lines, start=1)])
    return opp_id


def build(h: Harness, **options):
    return build_subscriptions(h.engine, context(h.model), "Build Subscriptions", today=date(2024, 1, 31), **options)


def subscriptions(h: Harness) -> list[tuple]:
    sub, item = h.t("Subscription"), h.t("SubscriptionItem")
    with h.engine.connect() as conn:
        rows = conn.execute(sa.select(sub.c.subscriptionkey, sub.c.status, sub.c.startdate, sub.c.billingperiod,
                                      sub.c.on_bucode__c, item.c.title, item.c.quantity, item.c.unitprice)
                            .select_from(item.join(sub, sub.c.id == item.c.subscription))
                            .order_by(sub.c.id, item.c.id)).all()
    return [tuple(v.normalize() if isinstance(v, Decimal) else v for v in row) for row in rows]


def test_closed_won_opportunities_become_subscriptions_once(h):
    first = opportunity(h, "OPP-S-1", [("Cloud seats", "3", "20.00"), ("Backup", "1", "15.50")],
                        on_subscriptionkeybld__c="SK-1", on_bucodebld__c="9")
    lost = opportunity(h, "OPP-S-2", [("Never", "1", "1.00")], stagename="Closed Lost")
    reorder = opportunity(h, "OPP-S-3", [("More seats", "2", "20.00")], type="Existing Business",
                          on_mastersubscriptionbld__c="SK-1")
    report = build(h)
    assert (report.records_read, report.subscriptions, report.extended, report.items, report.failures) == \
        (2, 1, 1, 3, [])
    assert subscriptions(h) == [
        ("SK-1", "Active", date(2024, 2, 1), "Month", "9", "Cloud seats", D("3"), D("20")),
        ("SK-1", "Active", date(2024, 2, 1), "Month", "9", "Backup", D("1"), D("15.5")),
        ("SK-1", "Active", date(2024, 2, 1), "Month", "9", "More seats", D("2"), D("20")),
    ]
    built = h.by_field("Subscription", "SubscriptionKey", "SK-1")["id"]
    assert h.get("Opportunity", first)["on_subscriptionbld__c"] == built
    assert h.get("Opportunity", reorder)["on_subscriptionbld__c"] == built
    assert h.get("Opportunity", lost)["on_subscriptionbld__c"] is None
    again = build(h)
    assert (again.records_read, again.subscriptions, again.items) == (0, 0, 0)
    assert len(subscriptions(h)) == 3

    # the built subscription is billed, with the BuCode copied on to its invoice
    report = h.run("Subscriptions", start=date(2024, 2, 1), end=date(2024, 2, 29))
    (invoice,) = h.invoices(h.t("Invoice").c.id.in_([i.id for i in report.invoices]))
    assert (invoice["subscription"], invoice["bucode__c"], invoice["totalnet"]) == (built, "9", D("115.50"))


def test_a_record_that_cannot_be_built_is_reported_and_built_once_fixed(h):
    broken = opportunity(h, "OPP-S-4", [("Seats", "1", "10.00")], on_startdatebld__c=None)
    unknown_master = opportunity(h, "OPP-S-5", [("Seats", "1", "10.00")], on_mastersubscriptionbld__c="NOPE")
    fine = opportunity(h, "OPP-S-6", [("Seats", "1", "10.00")])
    report = build(h)
    assert sorted((f.record_id, f.message) for f in report.failures) == sorted([
        (broken, "no StartDate for the subscription (give it ON_StartDate__c)"),
        (unknown_master, "no master subscription with id or SubscriptionKey 'NOPE'"),
    ])
    assert report.subscriptions == 1 and report.failure_error().code == "R223"
    assert report.failure_error().exit_code == 4
    assert h.get("Opportunity", broken)["on_subscriptionbuilderrorbld__c"].startswith("no StartDate")
    assert h.get("Opportunity", fine)["on_subscriptionbld__c"] is not None
    h.update("Opportunity", broken, on_startdatebld__c=date(2024, 3, 1))
    again = build(h)
    assert (again.subscriptions, [f.record_id for f in again.failures]) == (1, [unknown_master])
    stored = h.get("Opportunity", broken)
    assert stored["on_subscriptionbld__c"] is not None and stored["on_subscriptionbuilderrorbld__c"] is None


def test_a_dry_run_builds_nothing(h):
    opportunity(h, "OPP-S-7", [("Seats", "1", "10.00")])
    before = h.dump_all_tables()
    report = build(h, dry_run=True)
    assert report.subscriptions == 1 and report.items == 1
    assert h.dump_all_tables() == before


def test_two_builds_at_once_build_each_record_once(h):
    for n in range(6):
        opportunity(h, f"OPP-C-{n}", [("Seats", "1", "10.00"), ("Support", "1", "5.00")])
    results: list[object] = []

    def work():
        try:
            results.append(build(h))
        except Exception as error:  # noqa: BLE001 - reported below
            results.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.subscriptions for r in results) == 6  # type: ignore[union-attr]
    assert len(h.select("Subscription")) == 6 and len(h.select("SubscriptionItem")) == 12


def test_unknown_or_wrong_filters_are_refused(h):
    ctx = context(h.model)
    with pytest.raises(SubscriptionBuildError) as raised:
        build_subscriptions(h.engine, ctx, "Order Invoice")
    assert raised.value.code == "R222" and "not a SubscriptionBuilder filter" in str(raised.value)


def test_validate_config_names_missing_controlling_fields(tmp_path):
    org = make_build_org(tmp_path / "org")
    text = read_text(org, OPPORTUNITY)
    (org / OPPORTUNITY).write_text(text.replace(
        "  ON_SubscriptionBuildErrorBld__c: {type: Text, length: 255, label: Subscription Build Error}\n", "")
        .replace('ON_SubscriptionBld__c: {type: Lookup, to: Subscription, relationship_name: BuiltFrom, '
                 'on_delete: clear, label: Subscription}',
                 'ON_SubscriptionBld__c: {type: Formula, returns: Text, expression: "Name", label: Subscription}'),
        encoding="utf-8")
    result = load_project(org)
    found = sorted(d.message for d in result.diagnostics if d.code == "E232")
    assert len(found) == 2 and not result.ok
    assert "has no ON_SubscriptionBuildErrorBld__c" in found[0]
    assert "ON_SubscriptionBld__c must be lookup:Subscription and stored" in found[1]
    line, _ = find_position(read_text(org, OPPORTUNITY), "ON_SubscriptionBld__c")
    assert any(d.location.line == line for d in result.diagnostics if d.code == "E232")


def test_validate_config_warns_of_a_sparse_build_selector(tmp_path):
    org = make_build_org(tmp_path / "org")
    text = read_text(org, OPPORTUNITY)
    (org / OPPORTUNITY).write_text(text.replace(
        "ON_SubscriptionBld__c: {type: Lookup, to: Subscription, relationship_name: BuiltFrom, on_delete: clear,",
        "ON_SubscriptionBld__c: {type: Lookup, to: Subscription, relationship_name: BuiltFrom, on_delete: clear, "
        "sparse: true,"), encoding="utf-8")
    result = load_project(org)
    found = [d for d in result.diagnostics if d.code == "W063"]
    assert result.ok and len(found) == 1
    assert "ON_SubscriptionBld__c is sparse, but the subscription build" in found[0].message
