"""The three use cases of seed 003 end to end on the sample org and data
(data/README.md), on SQLite and PostgreSQL.

Finalization and payment registration come in later issues. Until then a test
stands in for them: ``Harness.set_open`` sets the sub invoices' status to Open
(as finalization would) and ``Harness.pay`` inserts a Payment balance (as a
registered payment would). A final invoice is refused while one of its sub
invoices is still a draft.
"""

from __future__ import annotations

from datetime import date

from engine.billing.drafts import delete_drafts

from .helpers import D, assert_invariants, failures, only
from contexts import context


def month(year: int, m: int) -> dict:
    ends = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
    return dict(start=date(year, m, 1), end=date(year, m, ends.get(m, 31)))


def _view(lines):
    """(title, net, tax, gross, is deduction, sub invoice) per line."""
    return [(l["title"], l["postotalnet"], l["postotaltax"], l["postotalgross"], l["isdeduction"], l["subinvoice"])
            for l in lines]


def _totals(invoice):
    return invoice["totalnet"], invoice["totaltax"], invoice["grandtotal"]


# --- use case 1: progress invoices from opportunity products, final from the opportunity ---------


def test_uc1_progress_invoices_then_final_invoice_disclosed(sample):
    h = sample
    march = h.run("UC1 Sub Invoice", **month(2024, 3))
    april = h.run("UC1 Sub Invoice", **month(2024, 4))
    assert march.run_id != april.run_id
    p1, p2 = (h.get("Invoice", only(r.invoices).id) for r in (march, april))
    for sub, title in ((p1, "Milestone 1"), (p2, "Milestone 2")):
        assert (sub["type"], sub["status"], sub["subinvoiceassignmentkey"]) == ("Progress", "Draft", "OPP-2024-001")
        assert _totals(sub) == (D("1000.00"), D("190.00"), D("1190.00"))
        assert _view(h.lines(sub["id"])) == [(title, D("1000.00"), D("190.00"), D("1190.00"), False, None)]

    refused = h.run("UC1 Final Invoice", **month(2024, 6))
    message = only(failures(refused).values())
    assert message == (f"sub invoice(s) {p1['name']}, {p2['name']} of assignment key 'OPP-2024-001' are still "
                       "drafts: finalize them before the final invoice is built")
    assert refused.invoice_count == 0

    h.set_open(p1["id"], p2["id"])
    h.pay(p1["id"], D("1190.00"), date(2024, 3, 28))
    h.pay(p2["id"], D("1190.00"), date(2024, 4, 29))
    report = h.run("UC1 Final Invoice", **month(2024, 6))
    final = h.get("Invoice", only(report.invoices).id)
    assert (final["type"], final["class"], final["subinvoiceassignmentkey"], final["template"]) == (
        "Final", "Invoice", "OPP-2024-001", "Standardrechnung (DE)")
    lines = h.lines(final["id"])
    assert _view(lines) == [
        ("Milestone 1", D("1000.00"), D("190.00"), D("1190.00"), False, None),
        ("Milestone 2", D("1000.00"), D("190.00"), D("1190.00"), False, None),
        ("Milestone 3", D("1000.00"), D("190.00"), D("1190.00"), False, None),
        # equal titles: the progress positions are disclosed under their own title
        ("Milestone 1", D("-1000.00"), D("-190.00"), D("-1190.00"), True, p1["id"]),
        ("Milestone 2", D("-1000.00"), D("-190.00"), D("-1190.00"), True, p2["id"]),
    ]
    deduction = lines[3]
    assert (deduction["quantity"], deduction["unitprice"], deduction["taxcode"], deduction["sourceobject"],
            deduction["sourcerecordid"]) == (D("1"), D("-1000"), "DE_19", "Invoice", str(p1["id"]))
    # the worked example of domain-spec §3.8: 3000 - 2000 = 1000 net, 190 tax, 1190 gross
    assert _totals(final) == (D("1000.00"), D("190.00"), D("1190.00"))
    opportunity = h.by_field("Opportunity", "OpportunityNumber", "OPP-2024-001")
    assert (opportunity["on_invoicefinal__c"], opportunity["on_invoicebuilderrorfinal__c"]) == (final["id"], None)
    assert_invariants(h)


def test_uc1_progress_deduction_follows_the_payments_received(sample_sqlite):
    """A progress invoice is deducted with what was received (net of its tax
    rate), capped at its total; an unpaid one is not deducted."""
    h = sample_sqlite
    p1, p2 = (only(h.run("UC1 Sub Invoice", **month(2024, m)).invoices).id for m in (3, 4))
    h.set_open(p1, p2)
    h.pay(p1, D("1000.00"), date(2024, 3, 28))
    h.pay(p1, D("1000.00"), date(2024, 4, 2))   # overpaid: 2000.00 received, deducted 1190.00
    h.pay(p2, D("595.00"), date(2024, 4, 29))   # half paid
    final = h.get("Invoice", only(h.run("UC1 Final Invoice", **month(2024, 6)).invoices).id)
    assert _view(h.lines(final["id"]))[3:] == [
        ("Milestone 1", D("-1000.00"), D("-190.00"), D("-1190.00"), True, p1),
        ("Milestone 2", D("-500.00"), D("-95.00"), D("-595.00"), True, p2),
    ]
    assert _totals(final) == (D("1500.00"), D("285.00"), D("1785.00"))

    # without any payment received nothing is deducted: delete the final
    # draft (releasing the opportunity), take the payments back, bill again
    with h.engine.begin() as conn:
        assert delete_drafts(conn, context(h.model), [final["id"]]) == 1
        conn.execute(h.t("Balance").delete())
    rebuilt = only(h.run("UC1 Final Invoice", **month(2024, 6)).invoices)
    assert [l["isdeduction"] for l in h.lines(rebuilt.id)] == [False, False, False]
    assert (rebuilt.total_net, rebuilt.grand_total) == (D("3000.00"), D("3570.00"))


# --- use case 2: partial invoices from partial deliveries, positions disclosed -------------------


def test_uc2_partial_invoices_then_final_invoice_disclosed(sample):
    h = sample
    may = h.run("Order Sub Invoice", **month(2024, 5))
    a = h.get("Invoice", only(may.invoices).id)
    assert (a["type"], a["subinvoiceassignmentkey"], a["accountname"]) == ("Partial", "ORD-2024-101", "Muster GmbH")
    assert _view(h.lines(a["id"])) == [("Förderband-Modul", D("4800.00"), D("912.00"), D("5712.00"), False, None)]

    # June: the second delivery is billed, and the final invoice in the same run is refused
    june = h.run("Order Sub Invoice", "Order Invoice", **month(2024, 6))
    sub_report, order_report = june.filters
    assert (sub_report.name, sub_report.invoices, order_report.name, order_report.invoices) == (
        "Order Sub Invoice", 1, "Order Invoice", 0)
    b = h.get("Invoice", only(june.invoices).id)
    assert _view(h.lines(b["id"])) == [
        ("Montage und Inbetriebnahme", D("1000.00"), D("190.00"), D("1190.00"), False, None)]  # 0.5 x 2000.00
    order = h.by_field("Order", "OrderNumber", "ORD-2024-101")
    message = failures(june)[order["id"]]
    assert f"sub invoice(s) {a['name']}, {b['name']} of assignment key 'ORD-2024-101' are still drafts" in message
    record = h.get("Order", order["id"])
    assert (record["on_invoice__c"], record["on_lastinvoicerun__c"], record["on_invoicebuilderror__c"]) == (
        None, june.run_id, message)

    # one sub invoice finalized is not enough
    h.set_open(a["id"])
    still = h.run("Order Sub Invoice", "Order Invoice", **month(2024, 6))
    assert still.joined_existing and still.invoice_count == 0
    assert f"sub invoice(s) {b['name']} of" in failures(still)[order["id"]]

    h.set_open(b["id"])  # partial invoices are deducted in full, paid or not
    done = h.run("Order Sub Invoice", "Order Invoice", **month(2024, 6))
    assert done.joined_existing and done.run_id == june.run_id
    final = h.get("Invoice", only(done.invoices).id)
    assert (final["type"], final["subinvoiceassignmentkey"], final["purchaseorderno__c"]) == (
        "Final", "ORD-2024-101", "PO-4711")
    lines = h.lines(final["id"])
    assert _view(lines) == [
        ("Förderband-Modul", D("8000.00"), D("1520.00"), D("9520.00"), False, None),
        ("Montage und Inbetriebnahme", D("2000.00"), D("380.00"), D("2380.00"), False, None),
        ("Förderband-Modul", D("-4800.00"), D("-912.00"), D("-5712.00"), True, a["id"]),
        ("Montage und Inbetriebnahme", D("-1000.00"), D("-190.00"), D("-1190.00"), True, b["id"]),
    ]
    assert [l["costobject"] for l in lines[:2]] == ["P-2024-017", "P-2024-017"]
    assert _totals(final) == (D("4200.00"), D("798.00"), D("4998.00"))
    record = h.get("Order", order["id"])
    assert (record["on_invoice__c"], record["on_invoicebuilderror__c"]) == (final["id"], None)
    assert_invariants(h)


# --- use case 3: progress invoices from partial deliveries, positions hidden ---------------------


def test_uc3_progress_invoices_then_final_invoice_hidden(sample):
    h = sample
    c, d = (h.get("Invoice", only(h.run("Order Sub Invoice", **month(2024, m)).invoices).id) for m in (7, 8))
    assert [(s["type"], s["accountname"], _totals(s)) for s in (c, d)] == [
        ("Progress", "Nordlicht Logistik GmbH", (D("3600.00"), D("684.00"), D("4284.00"))),
        ("Progress", "Nordlicht Logistik GmbH", (D("4800.00"), D("912.00"), D("5712.00"))),
    ]
    h.set_open(c["id"], d["id"])
    h.pay(c["id"], D("4284.00"), date(2024, 7, 31))
    h.pay(d["id"], D("5712.00"), date(2024, 8, 30))
    report = h.run("Order Invoice", **month(2024, 9))
    final = h.get("Invoice", only(report.invoices).id)
    assert _view(h.lines(final["id"])) == [
        ("Lagerverwaltungssystem Einführung gesamt", D("12000.00"), D("2280.00"), D("14280.00"), False, None),
        # titles differ from the order product's: hidden, one line per progress invoice
        (f"Progress invoice {c['name']}", D("-3600.00"), D("-684.00"), D("-4284.00"), True, c["id"]),
        (f"Progress invoice {d['name']}", D("-4800.00"), D("-912.00"), D("-5712.00"), True, d["id"]),
    ]
    assert _totals(final) == (D("3600.00"), D("684.00"), D("4284.00"))
    assert (final["paymentmethod"], final["accountname"]) == ("Direct Debit", "Nordlicht Logistik GmbH")
    assert_invariants(h)


def test_uc2_a_delivery_billed_after_the_final_draft_is_finalized_before_it(sample):
    """A third delivery billed while the final invoice is still a draft: its
    partial invoice and the final invoice, finalized together, come out in
    that order (the final invoice refuses a draft sub invoice, so it goes
    last), and the final invoice then deducts all three deliveries."""
    from engine.project import finalize

    h = sample

    def muster(report):  # the invoice of order ORD-2024-101 (Muster GmbH) the run made
        return only([i for i in report.invoices if i.account == "Muster GmbH"]).id

    a = muster(h.run("Order Sub Invoice", **month(2024, 5)))
    b = muster(h.run("Order Sub Invoice", **month(2024, 6)))
    assert not finalize(h.engine, context(h.model), [a, b], today=date(2024, 6, 30)).failures
    final = muster(h.run("Order Invoice", **month(2024, 6)))
    second = h.by_field("Partial_Delivery__c", "DeliveryNumber__c", "PD-101-2")
    third = {k: v for k, v in second.items() if k not in ("id", "name", "on_invoice__c", "on_lastinvoicerun__c",
                                                          "on_invoicebuilderror__c", "createddate", "lastmodifieddate")}
    h.insert("Partial_Delivery__c", [{**third, "deliverynumber__c": "PD-101-3", "deliverydate__c": date(2024, 7, 10),
                                      "on_title__c": "Nachlieferung"}])
    late = muster(h.run("Order Sub Invoice", **month(2024, 7)))
    assert final < late  # in id order the final invoice would come first, and be refused
    report = finalize(h.engine, context(h.model), [final, late], today=date(2024, 7, 31))
    assert not report.failures
    numbers = {f.invoice_id: f.number for f in report.finalized}
    assert list(numbers) == [late, final] and numbers[late] < numbers[final]
    deducted = {line["subinvoice"] for line in h.lines(final) if line["isdeduction"]}
    assert deducted == {a, b, late}
    assert_invariants(h)
