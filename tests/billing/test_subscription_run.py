"""Recurring billing: the subscription run on SQLite and PostgreSQL.

The sample org's Subscriptions filter over the sample subscriptions of
examples/subscriptions/ (see its README): two consecutive months billed with
exact cents (calendar proration at the start, a one-time fee, a yearly item
in advance, a monthly item in arrears upgraded mid-month, a canceled
subscription caught up to its end), re-runs that bill nothing, finalization
advancing NextServicePeriodStart, cancellation and deleted drafts releasing
periods that the next run bills again, a dry run, a run combining a
subscription and a generic filter, record errors, and two runs at once.
"""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from databases import REPO_ROOT, migrate_and_load
from engine.billing.drafts import delete_drafts
from engine.billing.service_claims import SERVICE_CLAIM
from engine.project import cancel_invoice, finalize
from engine.storage.records import load_records

from contexts import context

from .helpers import Harness

D = Decimal
EXAMPLES = REPO_ROOT / "examples" / "subscriptions"
JAN = (date(2024, 1, 1), date(2024, 1, 31))
FEB = (date(2024, 2, 1), date(2024, 2, 29))
MAR = (date(2024, 3, 1), date(2024, 3, 31))


def load_subscriptions(engine, model) -> None:
    """The usual preparation plus the sample subscriptions."""
    migrate_and_load(engine, model)
    for path in sorted(EXAMPLES.glob("[0-9]*_*.csv")):
        report = load_records(engine, context(model), path.stem.split("_", 1)[1], path)
        assert report.ok, report.render()


@pytest.fixture
def subs(db_url, sample_model, prepared) -> Harness:
    return Harness(prepared(db_url, sample_model, load_subscriptions, key="subscriptions"), sample_model, db_url,
                   REPO_ROOT)


def run(h: Harness, period, *filters: str, **options):
    return h.run(*(filters or ("Subscriptions",)), start=period[0], end=period[1], **options)


def billed(h: Harness, *where) -> list[tuple]:
    """(subscription key, item key, period start, period end, quantity, unit price, net) of every line."""
    inv, line = h.t("Invoice"), h.t("InvoiceLineItem")
    sub, item = h.t("Subscription"), h.t("SubscriptionItem")
    query = (sa.select(sub.c.subscriptionkey, item.c.itemkey, line.c.serviceperiodstart, line.c.serviceperiodend,
                       line.c.quantity, line.c.unitprice, line.c.postotalnet)
             .select_from(line.join(inv, inv.c.id == line.c.invoice)
                          .join(item, item.c.id == line.c.subscriptionitem)
                          .join(sub, sub.c.id == item.c.subscription))
             .where(*where).order_by(sub.c.subscriptionkey, item.c.itemkey, line.c.serviceperiodstart, line.c.id))
    with h.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def nsps(h: Harness) -> dict[str, date | None]:
    return {row["itemkey"]: row["nextserviceperiodstart"] for row in h.select("SubscriptionItem")}


JANUARY = [
    ("SUBK-001", "SUBK-001-1", date(2024, 1, 15), date(2024, 1, 31), D("5"), D("26.87"), D("134.35")),
    ("SUBK-001", "SUBK-001-2", date(2024, 1, 15), date(2024, 1, 15), D("1"), D("250"), D("250.00")),
    ("SUBK-002", "SUBK-002-1", date(2024, 1, 1), date(2024, 12, 31), D("1"), D("1200"), D("1200.00")),
    ("SUBK-003", "SUBK-003-1", date(2024, 1, 1), date(2024, 1, 31), D("1"), D("99"), D("99.00")),
    ("SUBK-004", "SUBK-004-1", date(2023, 11, 1), date(2023, 11, 30), D("1"), D("80"), D("80.00")),
    ("SUBK-004", "SUBK-004-1", date(2023, 12, 1), date(2023, 12, 31), D("1"), D("80"), D("80.00")),
    ("SUBK-004", "SUBK-004-1", date(2024, 1, 1), date(2024, 1, 31), D("1"), D("80"), D("80.00")),
]
FEBRUARY = [
    ("SUBK-001", "SUBK-001-1", date(2024, 2, 1), date(2024, 2, 29), D("5"), D("49"), D("245.00")),
    # upgraded on 16 February: 15/29 of 99.00 + 14/29 of 149.00 (in arrears, so billed at the end of February)
    ("SUBK-003", "SUBK-003-1", date(2024, 2, 1), date(2024, 2, 29), D("1"), D("123.14"), D("123.14")),
    ("SUBK-004", "SUBK-004-1", date(2024, 2, 1), date(2024, 2, 29), D("1"), D("80"), D("80.00")),
]


def normalized(rows):
    return [tuple(v.normalize() if isinstance(v, Decimal) else v for v in row) for row in rows]


def test_two_consecutive_months_bill_each_period_once(subs):
    report = run(subs, JAN)
    assert (report.filters[0].invoices, report.filters[0].lines, report.filters[0].failures) == (4, 7, [])
    assert normalized(billed(subs)) == normalized(JANUARY)
    invoices = subs.invoices()
    assert {i["subscription"] for i in invoices} == {r["id"] for r in subs.select("Subscription")}
    # the usage item (SUBK-003-2) is left to usage billing
    assert not any(row[1] == "SUBK-003-2" for row in billed(subs))

    again = run(subs, JAN)
    assert again.joined_existing and again.filters[0].invoices == 0 and len(billed(subs)) == 7

    february = run(subs, FEB)
    assert february.filters[0].invoices == 3
    assert normalized(billed(subs)) == normalized(sorted(JANUARY + FEBRUARY))
    # canceled on 10 January with a month's notice: the service ends with February
    march = run(subs, MAR)
    assert "SUBK-004" not in {row[0] for row in billed(subs, subs.t("Invoice").c.invoicerun == march.run_id)}


def test_finalization_advances_and_cancellation_sets_back_the_next_service_period(subs):
    january = run(subs, JAN)
    ctx = context(subs.model)
    outcome = finalize(subs.engine, ctx, [i.id for i in january.invoices], today=date(2024, 1, 31))
    assert not outcome.failures
    assert nsps(subs) == {
        "SUBK-001-1": date(2024, 2, 1), "SUBK-001-2": date(2024, 1, 16), "SUBK-002-1": date(2025, 1, 1),
        "SUBK-003-1": date(2024, 2, 1), "SUBK-003-2": None, "SUBK-004-1": date(2024, 2, 1),
    }
    watch = next(i for i in subs.invoices() if i["grandtotal"] == D("240.00"))
    cancel_invoice(subs.engine, ctx, watch["name"], reason="wrong plan", when=date(2024, 2, 2))
    assert nsps(subs)["SUBK-004-1"] == date(2023, 11, 1)
    # the next run bills the cancelled periods again, and February
    february = run(subs, FEB)
    rebilled = billed(subs, subs.t("Invoice").c.invoicerun == february.run_id)
    assert [(r[1], r[2]) for r in rebilled if r[0] == "SUBK-004"] == [
        ("SUBK-004-1", date(2023, 11, 1)), ("SUBK-004-1", date(2023, 12, 1)), ("SUBK-004-1", date(2024, 1, 1)),
        ("SUBK-004-1", date(2024, 2, 1))]
    assert run(subs, FEB).filters[0].lines == 0


def test_deleted_drafts_release_their_periods(subs):
    january = run(subs, JAN)
    first = january.invoices[0].id
    with subs.engine.begin() as conn:
        assert delete_drafts(conn, context(subs.model), [first]) == 1
    rerun = run(subs, JAN)
    assert rerun.filters[0].invoices == 1
    assert normalized(billed(subs)) == normalized(JANUARY)
    with subs.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(SERVICE_CLAIM)).scalar_one() == 7


def test_a_dry_run_writes_nothing(subs):
    before = subs.dump_all_tables()
    report = run(subs, JAN, dry_run=True)
    assert report.filters[0].invoices == 4 and report.filters[0].lines == 7
    after = subs.dump_all_tables()
    after.pop("_mb_service_claim", None)
    before.pop("_mb_service_claim", None)
    assert after == before


def test_one_run_combines_subscription_and_generic_filters(subs):
    report = run(subs, (date(2024, 1, 1), date(2024, 12, 31)), "Order Invoice", "Subscriptions")
    by_filter = {f.name: f for f in report.filters}
    assert by_filter["Order Invoice"].invoices > 0 and by_filter["Subscriptions"].invoices == 4
    assert len({i.id for i in report.invoices}) == by_filter["Order Invoice"].invoices + 4
    # a year of monthly service on calendar months from 15 January: the prorated first month and eleven more
    lines = [r for r in billed(subs) if r[1] == "SUBK-001-1"]
    assert len(lines) == 12 and sum(r[6] for r in lines) == D("134.35") + 11 * D("245.00")


def test_a_subscription_that_cannot_be_billed_is_reported_and_the_others_billed(subs):
    broken = subs.by_field("Subscription", "SubscriptionKey", "SUBK-002")
    subs.update("Subscription", broken["id"], template="No Such Template")
    report = run(subs, JAN)
    assert [(f.record_id, f.message) for f in report.filters[0].failures] == [(broken["id"], "no template named 'No Such Template'")]
    assert report.filters[0].invoices == 3
    stored = subs.get("Subscription", broken["id"])
    assert stored["invoicebuilderror"] == "no template named 'No Such Template'"
    subs.update("Subscription", broken["id"], template=None)
    assert run(subs, JAN).filters[0].invoices == 1
    assert subs.get("Subscription", broken["id"])["invoicebuilderror"] is None


def test_two_runs_at_once_bill_each_period_once(subs):
    results: list[object] = []

    def work():
        try:
            results.append(run(subs, JAN))
        except Exception as error:  # noqa: BLE001 - reported below
            results.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.filters[0].lines for r in results) == 7  # type: ignore[union-attr]
    assert normalized(billed(subs)) == normalized(JANUARY)


def test_explain_names_the_item_the_period_and_the_proration(subs):
    from engine.billing.subscription_explain import explain_service_periods

    run(subs, JAN)
    run(subs, FEB)
    ctx = context(subs.model)
    names = {row[0]: row[1] for row in _invoice_names(subs)}
    january = explain_service_periods(subs.engine, ctx, names[("SUBK-001", date(2024, 1, 15))])
    assert not january.finalized
    text = "\n".join(january.lines)
    assert "(SUBK-001-1, Recurring)" in text and "service period 2024-01-15..2024-01-31" in text
    assert "2024-01-15..2024-01-31: 17/31 month(s) at 49.0000 -> 26.87" in text
    assert "one-time on 2024-01-15: per unit 250.0000" in text
    upgrade = "\n".join(explain_service_periods(subs.engine, ctx, names[("SUBK-003", date(2024, 2, 1))]).lines)
    assert "15/29 month(s) at 99.0000 -> 51.21" in upgrade and "14/29 month(s) at 149.0000 -> 71.93" in upgrade
    # the item changed since: the explanation says what today's terms give
    item = subs.by_field("SubscriptionItem", "ItemKey", "SUBK-003-1")
    subs.update("SubscriptionItem", item["id"], newunitprice=D("199.00"))
    changed = "\n".join(explain_service_periods(subs.engine, ctx, names[("SUBK-003", date(2024, 2, 1))]).lines)
    assert "note: today's terms give 147.28 per unit; the line keeps 123.14" in changed


def _invoice_names(h: Harness):
    inv, line, item, sub = h.t("Invoice"), h.t("InvoiceLineItem"), h.t("SubscriptionItem"), h.t("Subscription")
    query = (sa.select(sub.c.subscriptionkey, line.c.serviceperiodstart, inv.c.name)
             .select_from(line.join(inv, inv.c.id == line.c.invoice).join(item, item.c.id == line.c.subscriptionitem)
                          .join(sub, sub.c.id == item.c.subscription)))
    with h.engine.connect() as conn:
        return [((r[0], r[1]), r[2]) for r in conn.execute(query)]


def test_a_later_month_finalized_first_never_skips_a_deleted_draft(subs):
    """Found by the recurring-month state machine: February finalized while
    January is still a draft must not carry NextServicePeriodStart past
    January; once January's draft is deleted, the next run bills it again."""
    ctx = context(subs.model)
    january = run(subs, JAN)
    february = run(subs, FEB)
    assert not finalize(subs.engine, ctx, [i.id for i in february.invoices], today=date(2024, 2, 29)).failures
    assert nsps(subs)["SUBK-001-1"] is None or nsps(subs)["SUBK-001-1"] <= date(2024, 1, 15)
    with subs.engine.begin() as conn:
        delete_drafts(conn, ctx, [i.id for i in january.invoices])
    again = run(subs, FEB)
    rebilled = billed(subs, subs.t("Invoice").c.id.in_([i.id for i in again.invoices]))
    assert normalized(rebilled) == normalized(JANUARY)  # January again, February not twice
    assert not finalize(subs.engine, ctx, [i.id for i in again.invoices], today=date(2024, 2, 29)).failures
    assert nsps(subs)["SUBK-001-1"] == date(2024, 3, 1) and nsps(subs)["SUBK-002-1"] == date(2025, 1, 1)
