"""The invoice date of a subscription's invoice, and what a month's run reads.

Domain-spec §4.2 (b): the invoice date is the run's invoice date, else the
subscription's preferred invoice date, else the day of finalization. The
engine keeps the preferred date as a day of the month (``PreferredInvoiceDay``,
docs/decisions.md): that day in the month of the run's period end, the
month's last day when the month is shorter. Also here: a month's run reads
only the subscriptions with an item that may be due (a yearly item billed in
advance and finalized is not read again until its next year).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from engine.billing.periods import PeriodError, preferred_invoice_date
from engine.project import finalize

from contexts import context

from .test_subscription_run import FEB, JAN, MAR, run, subs  # noqa: F401 - the fixture

D = Decimal


@pytest.mark.parametrize(("day", "run_end", "expected"), [
    (15, date(2024, 1, 31), date(2024, 1, 15)),
    (31, date(2024, 1, 31), date(2024, 1, 31)),
    (31, date(2024, 2, 29), date(2024, 2, 29)),   # leap year: the 29th
    (30, date(2023, 2, 28), date(2023, 2, 28)),   # common year: the 28th
    (29, date(2023, 2, 10), date(2023, 2, 28)),   # the month of the run's end, whatever its day
    (31, date(2024, 4, 30), date(2024, 4, 30)),   # a 30-day month
    (1, date(2024, 12, 31), date(2024, 12, 1)),
    (D("28"), date(2024, 2, 29), date(2024, 2, 28)),  # as stored: a Decimal
])
def test_the_preferred_day_in_the_month_of_the_run_end(day, run_end, expected):
    assert preferred_invoice_date(day, run_end) == expected


@pytest.mark.parametrize("day", [0, 32, -1, D("1.5"), "x"])
def test_a_preferred_day_that_is_no_day_of_a_month_is_refused(day):
    with pytest.raises(PeriodError, match="PreferredInvoiceDay"):
        preferred_invoice_date(day, date(2024, 1, 31))


def _dates(h, report) -> dict[str, date | None]:
    """Subscription key -> invoice date of the run's invoices."""
    keys = {row["id"]: row["subscriptionkey"] for row in h.select("Subscription")}
    return {keys[i["subscription"]]: i["date"] for i in h.invoices(h.t("Invoice").c.invoicerun == report.run_id)}


def test_the_run_dates_invoices_on_the_preferred_day_unless_it_has_an_invoice_date(subs):
    first = subs.by_field("Subscription", "SubscriptionKey", "SUBK-001")
    third = subs.by_field("Subscription", "SubscriptionKey", "SUBK-003")
    subs.update("Subscription", first["id"], preferredinvoiceday=D(31))
    subs.update("Subscription", third["id"], preferredinvoiceday=D(15))

    january = run(subs, JAN)
    assert _dates(subs, january) == {"SUBK-001": date(2024, 1, 31), "SUBK-002": None, "SUBK-003": date(2024, 1, 15),
                                     "SUBK-004": None}
    february = run(subs, FEB)
    assert _dates(subs, february) == {"SUBK-001": date(2024, 2, 29), "SUBK-003": date(2024, 2, 15), "SUBK-004": None}
    # the run's own invoice date comes first
    march = run(subs, MAR, invoice_date=date(2024, 4, 2))
    assert set(_dates(subs, march).values()) == {date(2024, 4, 2)}

    # finalization keeps the date (and the payment due date follows it); an
    # invoice without one is dated on the day of finalization
    ctx = context(subs.model)
    outcome = finalize(subs.engine, ctx, [i.id for i in february.invoices], today=date(2024, 3, 5))
    assert not outcome.failures
    finalized = _dates(subs, february)
    assert finalized == {"SUBK-001": date(2024, 2, 29), "SUBK-003": date(2024, 2, 15), "SUBK-004": date(2024, 3, 5)}
    invoice = next(i for i in subs.invoices() if i["subscription"] == first["id"] and i["date"] == date(2024, 2, 29))
    assert invoice["paymentduedate"] == date(2024, 3, 14)  # 14 days of SUBK-001's PaymentDue


def test_a_preferred_day_out_of_range_is_a_record_error_of_its_subscription(subs):
    broken = subs.by_field("Subscription", "SubscriptionKey", "SUBK-002")
    subs.update("Subscription", broken["id"], preferredinvoiceday=D(32))
    report = run(subs, JAN)
    failures = report.filters[0].failures
    assert [f.record_id for f in failures] == [broken["id"]] and "PreferredInvoiceDay" in failures[0].message
    assert report.filters[0].invoices == 3
    assert "PreferredInvoiceDay" in subs.get("Subscription", broken["id"])["invoicebuilderror"]


def test_a_month_reads_only_subscriptions_with_an_item_that_may_be_due(subs):
    january = run(subs, JAN)
    assert january.filters[0].records_read == 4
    ctx = context(subs.model)
    assert not finalize(subs.engine, ctx, [i.id for i in january.invoices], today=date(2024, 1, 31)).failures
    # SUBK-002's yearly item is billed to the end of 2024 and finalized: not read in February
    february = run(subs, FEB)
    assert (february.filters[0].records_read, february.filters[0].invoices) == (3, 3)
    # ...and read again in the run whose period reaches its next year
    next_year = run(subs, (date(2025, 1, 1), date(2025, 1, 31)))
    keys = {row["id"]: row["subscriptionkey"] for row in subs.select("Subscription")}
    billed_subs = {keys[i["subscription"]] for i in subs.invoices(subs.t("Invoice").c.invoicerun == next_year.run_id)}
    assert "SUBK-002" in billed_subs


def test_claims_are_read_from_the_next_service_period_on(subs):
    """The run reads an item's claims from its NextServicePeriodStart on: the
    finalized months before it are neither read nor touched, the drafts'
    claims after it are live until the drafts are deleted, then released."""
    from engine.billing.drafts import delete_drafts
    from engine.billing.service_claims import SERVICE_CLAIM, delete_claims, read_claims

    ctx = context(subs.model)
    january = run(subs, JAN)
    assert not finalize(subs.engine, ctx, [i.id for i in january.invoices], today=date(2024, 1, 31)).failures
    february = run(subs, FEB)
    monthly = subs.by_field("SubscriptionItem", "ItemKey", "SUBK-001-1")
    assert monthly["nextserviceperiodstart"] == date(2024, 2, 1)
    with subs.engine.begin() as conn:
        assert read_claims(conn, ctx, [monthly["id"]]) == ({(monthly["id"], date(2024, 2, 1))}, [])
        delete_drafts(conn, ctx, [i.id for i in february.invoices])
    with subs.engine.begin() as conn:
        live, stale = read_claims(conn, ctx, [monthly["id"]])
        assert live == set() and [claim["p"] for claim in stale] == [date(2024, 2, 1)]
        delete_claims(conn, stale)  # as the run's batch write does
        kept = conn.execute(SERVICE_CLAIM.select().where(SERVICE_CLAIM.c.item_id == monthly["id"])).all()
    assert [(row.period_start, row.period_end) for row in kept] == [(date(2024, 1, 15), date(2024, 1, 31))]
    again = run(subs, FEB)  # the released February is billed again, January not
    assert again.filters[0].invoices == 3
