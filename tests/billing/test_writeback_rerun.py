"""Error isolation and write-back (domain-spec §3.5), idempotent re-runs
(joining the run with the same period and filters), and deleting drafts,
which releases their sources for the next run: through
``engine.billing.drafts.delete_drafts`` and through the CLI.
"""

from __future__ import annotations

from datetime import date

import pytest
from click.testing import CliRunner

from engine.billing.drafts import DraftError, delete_drafts, draft_ids
from engine.billing.run import RunError
from engine.cli.main import cli

from .helpers import (
    D, SAMPLE_FILTERS, assert_invariants, failure_list, failures, only, snapshot, writeback_state,
)
from contexts import context

JAN_APR = dict(start=date(2024, 1, 1), end=date(2024, 4, 30))


def test_errors_are_isolated_written_back_and_cleared_when_fixed(billing):
    h = billing
    ids = h.usage(
        dict(account="10001", title="good 1"),
        dict(account="10404", title="unknown account"),
        dict(account="10002", title="good 2", template="Standardrechnung (DE)"),
        dict(account="10003", title="unknown template", template="Vorlage X"),
        dict(account="10004", title="tax fails for the group", region="MARS"),
        dict(account="10004", title="same group, no own problem"),
        dict(account="10001", title="invalid type", type="Abschlag"),
        unitprice=D("10.00"),
    )
    report = h.run("Usage", "Order Invoice", **JAN_APR)
    usage, orders = {f.name: f for f in report.filters}["Usage"], {f.name: f for f in report.filters}["Order Invoice"]
    assert (orders.invoices, orders.failures) == (4, [])  # the other filter is not affected
    tax_message = ("no tax rule matches (Invoice.BusinessEntity='DE01', Invoice.Region='MARS', "
                   "Invoice.BillingCountryCode='DE')")
    assert failures(report) == {
        ids[1]: "no account with id or AccountNumber '10404'",
        ids[3]: "unknown template 'Vorlage X'",
        ids[4]: tax_message,
        ids[5]: tax_message,  # a group-level error is the error of every record of the group
        ids[6]: "ON_Type 'Abschlag' is not an invoice type the run creates",
    }
    assert (usage.records_read, usage.invoices, usage.lines) == (7, 2, 2)
    for i, record in zip(ids, h.select("Usage__c")):
        assert record["id"] == i and record["on_lastinvoicerun__c"] == report.run_id
        if i in failures(report):
            assert (record["on_invoice__c"], record["on_invoicebuilderror__c"]) == (None, failures(report)[i])
        else:
            assert record["on_invoice__c"] is not None and record["on_invoicebuilderror__c"] is None
    assert h.get("InvoiceRun", report.run_id)["errorcount"] == 5

    # fix the data and run the same period and filters again: only the fixed records are billed
    h.update("Usage__c", ids[1], on_account__c="10001")
    h.update("Usage__c", ids[3], on_template__c=None)
    h.update("Usage__c", ids[4], on_region__c=None)
    h.update("Usage__c", ids[6], on_type__c="Standard")
    again = h.run("Usage", "Order Invoice", **JAN_APR)
    assert again.joined_existing and again.run_id == report.run_id
    assert failures(again) == {}
    billed_now = {h.get("Usage__c", i)["on_invoice__c"] for i in (ids[1], ids[3], ids[4], ids[5], ids[6])}
    assert len(billed_now) == 3 and None not in billed_now  # 10001 (two records merged), 10003, 10004
    assert all(r["on_invoicebuilderror__c"] is None for r in h.select("Usage__c"))
    assert {f.name: f.invoices for f in again.filters} == {"Order Invoice": 0, "Usage": 3}
    assert_invariants(h)


def test_rerun_is_idempotent(sample):
    h = sample
    first = h.run(*SAMPLE_FILTERS)
    before = (snapshot(h), writeback_state(h), h.claims())
    # the same period and filters (in any order) join the first run and bill nothing
    second = h.run(*reversed(SAMPLE_FILTERS))
    assert second.joined_existing and second.run_id == first.run_id and second.run_name == first.run_name
    assert (second.invoice_count, second.line_count, second.invoices) == (0, 0, [])
    assert failure_list(second) == failure_list(first)
    assert len(failure_list(first)) == 3  # the final invoices still wait for their sub invoices
    assert (snapshot(h), writeback_state(h), h.claims()) == before
    assert len(h.select("InvoiceRun")) == 1
    assert h.get("InvoiceRun", first.run_id)["numinvoices"] == 7
    # another period is another run, and finds nothing left to bill
    other = h.run(*SAMPLE_FILTERS, start=date(2024, 1, 1), end=date(2024, 12, 30))
    assert not other.joined_existing and other.run_id != first.run_id and other.invoice_count == 0
    assert (snapshot(h), h.claims()) == (before[0], before[2])


def test_deleting_drafts_releases_their_sources(billing):
    h = billing
    report = h.run("Order Sub Invoice", "Order Invoice", **JAN_APR)
    original = snapshot(h)
    order = h.by_field("Order", "OrderNumber", "ORD-2024-001")
    invoice_id = order["on_invoice__c"]
    line_ids = [l["id"] for l in h.lines(invoice_id)]
    with h.engine.begin() as conn:
        assert delete_drafts(conn, context(h.model), [invoice_id]) == 1
    assert h.invoices(h.t("Invoice").c.id == invoice_id) == []
    assert h.select("InvoiceLineItem", h.t("InvoiceLineItem").c.id.in_(line_ids)) == []
    assert h.get("Order", order["id"])["on_invoice__c"] is None
    assert ("order", order["id"]) not in {(c["source_table"], c["source_id"]) for c in h.claims()}
    assert len(h.invoices()) == 3
    assert_invariants(h)

    rerun = h.run("Order Sub Invoice", "Order Invoice", **JAN_APR)  # restores the deleted draft
    assert rerun.joined_existing and rerun.invoice_count == 1
    assert snapshot(h) == original

    # a whole run's drafts, then the run again: the same invoices
    with h.engine.begin() as conn:
        assert delete_drafts(conn, context(h.model), draft_ids(conn, context(h.model), run_id=report.run_id)) == 4
    assert h.invoices() == [] and h.claims() == []
    assert all(o["on_invoice__c"] is None for o in h.select("Order"))
    assert h.run("Order Sub Invoice", "Order Invoice", **JAN_APR).invoice_count == 4
    assert snapshot(h) == original
    assert_invariants(h)


def test_only_drafts_can_be_deleted(billing_sqlite):
    h = billing_sqlite
    report = h.run("Order Invoice", **JAN_APR)
    open_id, draft_id = report.invoices[0].id, report.invoices[1].id
    h.set_open(open_id)
    with pytest.raises(DraftError, match="only drafts can be deleted"):
        with h.engine.begin() as conn:
            delete_drafts(conn, context(h.model), [draft_id, open_id])
    with pytest.raises(DraftError, match="no invoice with id 999999"):
        with h.engine.begin() as conn:
            delete_drafts(conn, context(h.model), [999999])
    assert len(h.invoices()) == 4  # nothing was deleted


def _cli(*args: str):
    runner = CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "200"})
    return runner.invoke(cli, list(args), catch_exceptions=False)


def test_cli_invoice_run_and_delete_drafts(sample):
    h = sample
    common = ("--org", str(h.org_dir), "--db", h.url)
    period = ("--filter", "Order Invoice", "--period-start", "2024-01-01", "--period-end", "2024-04-30")

    result = _cli("invoice-run", *period, *common)
    assert result.exit_code == 0, result.output
    assert "Invoice run IR-000001" in result.output
    assert "4 invoice(s), 6 line(s), 0 record error(s)" in result.output
    original = snapshot(h)
    name = h.get("Invoice", h.by_field("Order", "OrderNumber", "ORD-2024-003")["on_invoice__c"])["name"]

    result = _cli("delete-drafts", "--invoice", name, *common)
    assert result.exit_code == 0, result.output
    assert "Deleted 1 draft invoice(s)" in result.output
    assert h.by_field("Order", "OrderNumber", "ORD-2024-003")["on_invoice__c"] is None

    result = _cli("invoice-run", *period, *common)
    assert result.exit_code == 0, result.output
    assert "(joined the existing run)" in result.output
    assert "1 invoice(s), 1 line(s), 0 record error(s)" in result.output
    assert snapshot(h) == original

    result = _cli("delete-drafts", "--run", "IR-000001", *common)
    assert result.exit_code == 0, result.output
    assert "Deleted 4 draft invoice(s)" in result.output
    assert h.invoices() == [] and h.claims() == []

    dry = _cli("invoice-run", *period, "--dry-run", *common)
    assert dry.exit_code == 0, dry.output
    assert "Dry run (nothing was written)" in dry.output and "Alpenblick Hotel GmbH" in dry.output
    assert h.invoices() == []

    assert _cli("invoice-run", *period, *common).exit_code == 0
    assert snapshot(h) == original

    h.set_open(only(i["id"] for i in h.invoices() if i["currencyisocode"] == "CHF"))
    chf = only(i["name"] for i in h.invoices() if i["currencyisocode"] == "CHF")
    refused = _cli("delete-drafts", "--invoice", chf, *common)
    assert refused.exit_code == 1
    assert "some of the named invoices are not drafts or do not exist; nothing was deleted" in refused.output
    assert len(h.invoices()) == 4


def test_joined_run_keeps_its_invoice_date(billing_sqlite):
    """Re-running restores deleted drafts with the run's original
    configuration, the invoice date included (domain-spec §3.1)."""
    h = billing_sqlite
    first = h.run("Order Invoice", **JAN_APR, invoice_date=date(2024, 5, 2))
    assert {i["date"] for i in h.invoices()} == {date(2024, 5, 2)}
    assert h.get("InvoiceRun", first.run_id)["invoicedate"] == date(2024, 5, 2)
    with h.engine.begin() as conn:
        delete_drafts(conn, context(h.model), [first.invoices[0].id])
    again = h.run("Order Invoice", **JAN_APR)  # no invoice date given this time
    assert again.joined_existing and again.invoice_count == 1
    assert {i["date"] for i in h.invoices()} == {date(2024, 5, 2)}
    # without an invoice date the date is left to finalization
    other = h.run("Order Sub Invoice", start=date(2024, 5, 1), end=date(2024, 5, 31))
    assert h.get("Invoice", only(other.invoices).id)["date"] is None


def test_invalid_requests_are_refused_before_anything_is_written(billing_sqlite):
    h = billing_sqlite
    before = h.dump_all_tables()
    with pytest.raises(RunError, match="the period ends before it starts"):
        h.run("Usage", start=date(2024, 2, 1), end=date(2024, 1, 31))
    with pytest.raises(RunError, match=r"unknown filter 'Rechnungen' \(filters: UC1 Sub Invoice, "):
        h.run("Rechnungen")
    with pytest.raises(RunError, match="name at least one filter"):
        h.run()
    assert h.dump_all_tables() == before
    result = _cli("invoice-run", "--filter", "Rechnungen", "--period-start", "2024-01-01", "--period-end",
                  "2024-01-31", "--org", str(h.org_dir), "--db", h.url)
    assert result.exit_code == 1 and "unknown filter 'Rechnungen'" in result.output
