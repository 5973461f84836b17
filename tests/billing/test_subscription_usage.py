"""Usage billing (engine.billing.usage) on SQLite and PostgreSQL.

A test org: the sample org with a usage object (UsageRecord__c, the
transaction builder's controlling fields) and a Continuous filter, over the
sample subscriptions (examples/subscriptions/: SUBK-003 has a Usage item with
OrderNo ORD-TRACK-10004 at 0.05). Usage is matched by ON_OrderNo, aggregated
per item, criterion and price into lines, billed exactly once (re-runs,
deleted drafts and cancellations release and re-bill), unmatched records get
their error, and one run bills subscriptions and usage together.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from config.orgcopy import AddFile, apply_edits, copy_org
from databases import load_model
from engine.billing.drafts import delete_drafts
from engine.project import cancel_invoice, finalize, load_project

from contexts import context

from .helpers import Harness
from .test_subscription_run import load_subscriptions

D = Decimal
USAGE_OBJECT = """\
version: 1
object: UsageRecord__c
label: Usage Record
plural_label: Usage Records
name_field: {type: AutoNumber, format: "UR-{00000}", label: Usage Record Number}
fields:
  ON_OrderNo__c: {type: Text, length: 80, label: Order Number}
  ON_Quantity__c: {type: Number, precision: 16, scale: 4, label: Quantity}
  ON_ServiceDate__c: {type: Date, label: Service Date}
  ON_Criterion__c: {type: Text, length: 80, label: Criterion}
  ON_UnitPrice__c: {type: Currency, precision: 18, scale: 4, label: Unit Price}
  ON_Invoice__c: {type: Lookup, to: Invoice, relationship_name: BilledUsage, on_delete: clear, label: Invoice}
  ON_LastInvoiceRun__c: {type: Lookup, to: InvoiceRun, relationship_name: UsageRuns, on_delete: clear, label: Run}
  ON_InvoiceBuildError__c: {type: Text, length: 255, label: Invoice Build Error}
"""
FILTER = """\
  - Name: Usage Billing
    Target: UsageRecord__c
    UseCase: Continuous
    Sequence: 60
"""
JAN = (date(2024, 1, 1), date(2024, 1, 31))
FEB = (date(2024, 2, 1), date(2024, 2, 29))
TRACKING = "ORD-TRACK-10004"


def make_usage_org(dest: Path) -> Path:
    org = copy_org(dest)
    apply_edits(org, (AddFile("metadata/objects/UsageRecord__c.yaml", USAGE_OBJECT),))
    path = org / "custom_settings" / "Filter.yaml"
    path.write_text(path.read_text(encoding="utf-8") + FILTER, encoding="utf-8")
    return org


@pytest.fixture(scope="module")
def usage_org(tmp_path_factory) -> Path:
    return make_usage_org(tmp_path_factory.mktemp("usage") / "org")


@pytest.fixture(scope="module")
def usage_model(usage_org):
    return load_model(usage_org)


@pytest.fixture
def h(db_url, usage_model, usage_org, prepared) -> Harness:
    return Harness(prepared(db_url, usage_model, load_subscriptions, key="usage"), usage_model, db_url, usage_org)


def usage(h: Harness, *rows: tuple) -> list[int]:
    """(order number, quantity, day, criterion[, unit price]) each."""
    return h.insert("UsageRecord__c", [
        {"on_orderno__c": row[0], "on_quantity__c": D(row[1]), "on_servicedate__c": row[2],
         "on_criterion__c": row[3], "on_unitprice__c": D(row[4]) if len(row) > 4 else None} for row in rows])


def lines_of(h: Harness, run_id: int) -> list[tuple]:
    inv, line = h.t("Invoice"), h.t("InvoiceLineItem")
    with h.engine.connect() as conn:
        rows = conn.execute(sa.select(line.c.title, line.c.quantity, line.c.unitprice, line.c.postotalnet,
                                      line.c.serviceperiodstart, line.c.serviceperiodend, line.c.transactioncriterion)
                            .select_from(line.join(inv, inv.c.id == line.c.invoice))
                            .where(inv.c.invoicerun == run_id, line.c.transactioncriterion.is_not(None)
                                   | line.c.sourceobject.in_(["UsageRecord__c"]))
                            .order_by(line.c.title, line.c.unitprice)).all()
    return [tuple(v.normalize() if isinstance(v, Decimal) else v for v in row) for row in rows]


def billed_to(h: Harness, ids: list[int]) -> list[int | None]:
    return [h.get("UsageRecord__c", i)["on_invoice__c"] for i in ids]


def test_usage_is_aggregated_per_item_and_criterion_and_billed_once(h):
    ids = usage(h, (TRACKING, "100", date(2024, 1, 3), "DE"), (TRACKING, "40", date(2024, 1, 20), "DE"),
                (TRACKING, "10", date(2024, 1, 21), "EU"), (TRACKING, "5", date(2024, 1, 22), "EU", "0.10"),
                (TRACKING, "7", date(2024, 2, 2), "DE"))
    report = h.run("Usage Billing", start=JAN[0], end=JAN[1])
    f = report.filters[0]
    assert (f.records_read, f.invoices, f.lines, f.failures) == (4, 1, 3, [])
    assert lines_of(h, report.run_id) == [
        ("Sendungsverfolgung (Transaktionen): DE", D("140"), D("0.05"), D("7.00"), date(2024, 1, 3), date(2024, 1, 20), "DE"),
        ("Sendungsverfolgung (Transaktionen): EU", D("10"), D("0.05"), D("0.50"), date(2024, 1, 21), date(2024, 1, 21), "EU"),
        ("Sendungsverfolgung (Transaktionen): EU", D("5"), D("0.1"), D("0.50"), date(2024, 1, 22), date(2024, 1, 22), "EU"),
    ]
    (invoice,) = report.invoices
    assert billed_to(h, ids) == [invoice.id] * 4 + [None]
    assert h.get("Invoice", invoice.id)["subscription"] == h.by_field("Subscription", "SubscriptionKey", "SUBK-003")["id"]
    assert len([c for c in h.claims() if c["source_table"] == "usagerecord__c"]) == 4
    assert h.run("Usage Billing", start=JAN[0], end=JAN[1]).filters[0].lines == 0
    february = h.run("Usage Billing", start=FEB[0], end=FEB[1])
    assert february.filters[0].lines == 1 and billed_to(h, ids)[4] == february.invoices[0].id


def test_unmatched_usage_gets_its_error_and_the_rest_is_billed(h):
    good, bad = usage(h, (TRACKING, "1", date(2024, 1, 5), None), ("NO-SUCH-ORDER", "1", date(2024, 1, 5), None))
    report = h.run("Usage Billing", start=JAN[0], end=JAN[1])
    assert [(f.record_id, f.message) for f in report.filters[0].failures] == [
        (bad, "no subscription item of type Usage or Transactional with OrderNo 'NO-SUCH-ORDER'")]
    stored = h.get("UsageRecord__c", bad)
    assert stored["on_invoicebuilderror__c"].startswith("no subscription item") and stored["on_invoice__c"] is None
    assert h.get("UsageRecord__c", good)["on_invoice__c"] is not None


def test_deleted_drafts_and_cancellations_release_usage(h):
    ids = usage(h, (TRACKING, "10", date(2024, 1, 5), None))
    first = h.run("Usage Billing", start=JAN[0], end=JAN[1])
    with h.engine.begin() as conn:
        delete_drafts(conn, context(h.model), [first.invoices[0].id])
    assert billed_to(h, ids) == [None]
    second = h.run("Usage Billing", start=JAN[0], end=JAN[1])
    assert second.filters[0].lines == 1
    ctx = context(h.model)
    done = finalize(h.engine, ctx, [second.invoices[0].id], today=date(2024, 1, 31))
    cancel_invoice(h.engine, ctx, done.finalized[0].number, reason="wrong", when=date(2024, 2, 1))
    assert billed_to(h, ids) == [None]
    third = h.run("Usage Billing", start=JAN[0], end=JAN[1])
    assert third.filters[0].lines == 1 and billed_to(h, ids) == [third.invoices[0].id]


def test_one_run_bills_subscriptions_and_usage(h):
    usage(h, (TRACKING, "20", date(2024, 1, 5), None))
    report = h.run("Subscriptions", "Usage Billing", start=JAN[0], end=JAN[1])
    by_filter = {f.name: (f.invoices, f.lines) for f in report.filters}
    assert by_filter == {"Subscriptions": (4, 7), "Usage Billing": (1, 1)}


def test_validate_config_names_missing_usage_fields(tmp_path):
    org = make_usage_org(tmp_path / "org")
    path = org / "metadata" / "objects" / "UsageRecord__c.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "  ON_OrderNo__c: {type: Text, length: 80, label: Order Number}\n", "").replace(
        "ON_Invoice__c: {type: Lookup, to: Invoice, relationship_name: BilledUsage, on_delete: clear, label: Invoice}",
        "ON_Invoice__c: {type: Text, length: 20, label: Invoice}"), encoding="utf-8")
    result = load_project(org)
    found = sorted(d.message for d in result.diagnostics if d.code == "E234")
    assert not result.ok and len(found) == 2
    assert "has no ON_OrderNo__c" in found[0] and "ON_Invoice__c must be lookup:Invoice" in found[1]


def test_validate_config_warns_of_a_sparse_usage_selector(tmp_path):
    org = make_usage_org(tmp_path / "org")
    path = org / "metadata" / "objects" / "UsageRecord__c.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "relationship_name: BilledUsage, on_delete: clear,", "relationship_name: BilledUsage, on_delete: clear, sparse: true,"),
        encoding="utf-8")
    result = load_project(org)
    found = [d for d in result.diagnostics if d.code == "W063"]
    assert result.ok and len(found) == 1  # a warning: the run still works, by reading the table
    assert "UsageRecord__c.ON_Invoice__c is sparse, but the usage run" in found[0].message
