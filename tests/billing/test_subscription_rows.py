"""The subscription run's row path (engine.billing.subscription_lines) on SQLite and PostgreSQL.

A generated org of the benchmark's kind (bench.subscription_run.fill: five
items each, yearly-priced items billed monthly, subscriptions starting
mid-month, price changes inside a month, a template that does not exist)
billed two months:

- every line is the charge the pure decision (``item_decision``) gives for
  its item: period, quantity, unit price, net; every header's totals are
  its lines' sums; the subscriptions naming the missing template carry its
  record error and nothing else fails;
- the row path writes exactly what the dict path (``build_invoice`` and the
  row writer, taken when the row path does not apply) writes for the same
  subscriptions: every header and line value but ids, names, the run and
  timestamps.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from bench.subscription_run import FAILING_SHARE, fill
from databases import migrate_and_load
from engine.billing import build, subscription_lines
from engine.billing import subscriptions as subscription_run
from engine.billing.service_claims import SERVICE_CLAIM
from engine.billing.drafts import delete_drafts
from engine.billing.subscription_terms import item_decision
from engine.domain.money import round_money
from engine.project import finalize

from contexts import context

from .helpers import Harness

SUBSCRIPTIONS = 120
JAN = (date(2024, 1, 1), date(2024, 1, 31))
FEB = (date(2024, 2, 1), date(2024, 2, 29))
#: Values that differ between two runs writing the same invoices.
VOLATILE = {"id", "name", "invoice", "invoicerun", "createddate", "lastmodifieddate", "confighash"}


def load_generated(engine, model) -> None:
    migrate_and_load(engine, model)
    fill(engine, model, SUBSCRIPTIONS, seed=7)


@pytest.fixture
def org(db_url, sample_model, prepared) -> Harness:
    from databases import REPO_ROOT

    return Harness(prepared(db_url, sample_model, load_generated, key="subscription-rows"), sample_model, db_url,
                   REPO_ROOT)


def run(h: Harness, period, batch_size: int = 2000):
    return h.run("Subscriptions", start=period[0], end=period[1], today=period[0], batch_size=batch_size)


def expected_lines(h: Harness, run_end: date) -> dict[tuple[int, date], tuple]:
    """(item, period start) -> (period end, quantity, unit price, net) of every
    charge due by ``run_end``, from the pure decision on the stored records."""
    subscriptions = {s["id"]: s for s in h.select("Subscription")}
    out = {}
    for item in h.select("SubscriptionItem"):
        subscription = subscriptions[item["subscription"]]
        if subscription["template"] is not None:
            continue  # the failing ones
        decision = item_decision(subscription, item, run_end, explain=False)
        for charge in decision.charges:
            out[(item["id"], charge.start)] = (charge.end, item["quantity"], charge.amount,
                                               round_money(item["quantity"] * charge.amount))
    return out


def written_lines(h: Harness, run_id: int) -> dict[tuple[int, date], tuple]:
    invoices = {i["id"] for i in h.select("Invoice", h.t("Invoice").c.invoicerun == run_id)}
    return {(line["subscriptionitem"], line["serviceperiodstart"]):
            (line["serviceperiodend"], line["quantity"], line["unitprice"], line["postotalnet"])
            for line in h.select("InvoiceLineItem") if line["invoice"] in invoices}


def snapshot(h: Harness, run_id: int) -> tuple[list, list, list]:
    """Headers, lines and record errors of a run, without what differs between two runs."""
    inv, line = h.t("Invoice"), h.t("InvoiceLineItem")
    headers = {i["id"]: i for i in h.select("Invoice", inv.c.invoicerun == run_id)}
    lines = [row for row in h.select("InvoiceLineItem", line.c.invoice.in_(list(headers)))]

    def stable(record: dict) -> tuple:
        return tuple(sorted((k, v) for k, v in record.items() if k not in VOLATILE))

    head_rows = sorted((h_["subscription"], stable(h_)) for h_ in headers.values())
    line_rows = sorted((headers[r["invoice"]]["subscription"], r["sequence"], stable(r)) for r in lines)
    errors = sorted((s["id"], s["invoicebuilderror"]) for s in h.select("Subscription")
                    if s["invoicebuilderror"] is not None)
    return head_rows, line_rows, errors


def written_around(h: Harness, run_id: int) -> tuple[list, list, list, list]:
    """What else a run writes, without ids: the order of its invoices and
    lines by id (subscription, position), its claims (item, period,
    subscription of the invoice) and the subscriptions it marked (id, error)."""
    inv, line = h.t("Invoice"), h.t("InvoiceLineItem")
    headers = {i["id"]: i for i in h.select("Invoice", inv.c.invoicerun == run_id)}
    lines = sorted(h.select("InvoiceLineItem", line.c.invoice.in_(list(headers))), key=lambda r: r["id"])
    order = [headers[i]["subscription"] for i in sorted(headers)]
    line_order = [(headers[r["invoice"]]["subscription"], r["sequence"]) for r in lines]
    with h.engine.connect() as conn:
        claims = sorted((c.item_id, c.period_start, c.period_end, headers[c.invoice_id]["subscription"])
                        for c in conn.execute(sa.select(SERVICE_CLAIM).where(SERVICE_CLAIM.c.invoice_id.in_(list(headers)))))
    marked = sorted((s["id"], s["invoicebuilderror"]) for s in h.select("Subscription")
                    if s["lastinvoicerun"] == run_id)
    return order, line_order, claims, marked


def test_lines_are_the_pure_decision_and_errors_are_the_failing_template(org):
    report = run(org, JAN)
    failing = [n for n in range(SUBSCRIPTIONS) if n % FAILING_SHARE == 7]
    assert report.failure_count == len(failing) > 0
    assert report.invoice_count == SUBSCRIPTIONS - len(failing)
    assert written_lines(org, report.run_id) == expected_lines(org, JAN[1])
    lines = org.select("InvoiceLineItem")
    assert any(line["description"] for line in lines)  # prorated or split periods were billed
    assert {line["unitprice"] for line in lines} - {item["unitprice"] for item in org.select("SubscriptionItem")}
    for header in org.select("Invoice"):
        mine = [line for line in lines if line["invoice"] == header["id"]]
        assert header["totalnet"] == sum((line["postotalnet"] for line in mine), Decimal(0))
        assert header["grandtotal"] == header["totalnet"] + header["totaltax"]
        assert [line["sequence"] for line in mine] == sorted(line["sequence"] for line in mine)
    errors = [s["invoicebuilderror"] for s in org.select("Subscription") if s["invoicebuilderror"]]
    assert errors == ["no template named 'No Such Template'"] * len(failing)


def test_the_row_path_writes_what_the_dict_path_writes(org, monkeypatch):
    """January by both paths (the first one's drafts deleted in between, so
    the second bills the same periods), then February by both after
    finalizing January."""
    compare_paths(org, monkeypatch)


def compare_paths(org: Harness, monkeypatch, batch_size: int = 2000) -> None:
    """January, then February after finalizing January, by the dict path
    and by the row path (the first one's drafts deleted in between, so the
    second bills the same periods): the same invoices, lines, record errors,
    order of ids, claims and marks on the subscriptions."""
    for period in (JAN, FEB):
        by_dicts = run_by(org, monkeypatch, rows=False, period=period, batch_size=batch_size)
        dicts, around = snapshot(org, by_dicts.run_id), written_around(org, by_dicts.run_id)
        delete_run(org, by_dicts.run_id)
        by_rows = run_by(org, monkeypatch, rows=True, period=period, batch_size=batch_size)
        assert snapshot(org, by_rows.run_id) == dicts
        assert written_around(org, by_rows.run_id) == around
        assert by_rows.invoice_count == by_dicts.invoice_count > 0 and dicts[1] and around[2]
        finalize_all(org, by_rows.run_id)


def test_the_row_path_in_small_batches_and_with_gross_invoices(org, monkeypatch):
    """Batches of 7 (line templates made and converted in one batch are
    written again by later ones) and every third subscription's invoice
    gross (its lines built by ``build_invoice`` inside the row path): still
    what the dict path writes."""
    def gross_every_third(original):
        def header(run, sources, account, account_copies):
            made = original(run, sources, account, account_copies)
            if sources[0].record_id % 3 == 0:
                made["grossinvoice"] = True
            return made
        return header

    monkeypatch.setattr(build, "draft_header", gross_every_third(build.draft_header))
    monkeypatch.setattr(subscription_lines, "draft_header", gross_every_third(subscription_lines.draft_header))
    compare_paths(org, monkeypatch, batch_size=7)
    assert any(i["grossinvoice"] for i in org.select("Invoice")) and not all(i["grossinvoice"]
                                                                            for i in org.select("Invoice"))


def delete_run(h: Harness, run_id: int) -> None:
    ids = [i["id"] for i in h.select("Invoice", h.t("Invoice").c.invoicerun == run_id)]
    with h.engine.begin() as conn:
        delete_drafts(conn, context(h.model), ids)


def run_by(h: Harness, monkeypatch, rows: bool, period=JAN, built_by: set[str] | None = None, batch_size: int = 2000):
    """Run ``period`` by the row path or the dict path; asserts which one
    built the drafts (``built_by``, default the path asked for)."""
    built: list[str] = []
    with monkeypatch.context() as patch:
        if not rows:
            patch.setattr(subscription_run, "rows_apply", lambda run, copies: False)
        for path, method in (("rows", "_row_draft"), ("dicts", "_draft")):
            original = getattr(subscription_run.SubscriptionRun, method)
            patch.setattr(subscription_run.SubscriptionRun, method,
                          lambda self, *a, _o=original, _p=path: built.append(_p) or _o(self, *a))
        report = run(h, period, batch_size)
    assert set(built) == (built_by or {"rows" if rows else "dicts"})
    return report


def finalize_all(h: Harness, run_id: int) -> None:
    """Finalize a run's drafts (which advances NextServicePeriodStart)."""
    ids = [i["id"] for i in h.select("Invoice", h.t("Invoice").c.invoicerun == run_id)]
    assert not finalize(h.engine, context(h.model), ids, today=JAN[1]).failures


@pytest.mark.parametrize("neighbour, batch_size", [(0, 2000), (60, 7)])
def test_a_line_too_large_for_its_column_fails_its_subscription_alike(org, monkeypatch, neighbour, batch_size):
    """A net beyond InvoiceLineItem.PosTotalNet: the row path's write is
    rolled back and the batch goes by dicts, which name the value on the
    subscription; the others are billed as by the dict path alone. In
    batches of 7 the subscription sits in a middle batch (its account is
    a middle one): the templates earlier batches staged stay staged, the
    ones the rolled-back batch staged are staged again by later batches
    (a template missing from the table would fail the line insert's count)."""
    template = org.select("Subscription")[neighbour]
    big = {k: v for k, v in template.items() if k not in VOLATILE | {"subscriptionkey", "invoicebuilderror"}}
    (big_id,) = org.insert("Subscription", [{**big, "subscriptionkey": "B-HUGE"}])
    org.insert("SubscriptionItem", [{"subscription": big_id, "title": "Too much", "billingtype": "Recurring",
                                     "quantity": Decimal("1000000"), "unitprice": Decimal("10000000000"),
                                     "priceperiod": "Month"}])
    by_dicts = run_by(org, monkeypatch, rows=False, batch_size=batch_size)
    dicts = snapshot(org, by_dicts.run_id)
    delete_run(org, by_dicts.run_id)
    by_rows = run_by(org, monkeypatch, rows=True, built_by={"rows", "dicts"}, batch_size=batch_size)  # falls back
    assert snapshot(org, by_rows.run_id) == dicts
    errors = dict(dicts[2])
    assert errors[big_id] and len(errors) == 1 + len([n for n in range(SUBSCRIPTIONS) if n % FAILING_SHARE == 7])


def test_line_rows_are_in_the_row_writers_column_order(org):
    """The row path builds lines in ``record_keys`` order and writes them by ``RowWriter.keys``: one order."""
    from engine.storage.bulk import RowWriter, record_keys

    with org.engine.connect() as conn:
        for name in ("InvoiceLineItem", "Invoice", "SubscriptionItem"):
            obj = org.model.require(name)
            assert RowWriter(conn, obj).keys == record_keys(obj)

