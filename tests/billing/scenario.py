"""A year of billing on the test org, in two phases, shared by the crash,
dry-run and batch-size tests.

Phase 1: the sample data plus a set of Usage__c records (merging groups,
invoice criteria, a credit, a reduced tax rate, a sub invoice, records that
fail, records that are skipped), billed with every filter over 2024. The
final invoices are refused: their sub invoices are still drafts.

Phase 2: the sub invoices are made Open and the progress invoices paid
(stand-ins for finalization and payment, later issues), a final Usage__c
record joins the project "PX", and the same run is repeated: it joins the
first run and builds the four final invoices with their deduction lines.
"""

from __future__ import annotations

from datetime import date

from engine.billing.run import RunReport

from .helpers import D, SAMPLE_FILTERS, Harness

FILTERS = SAMPLE_FILTERS + ("Usage",)

USAGE_ROWS = [
    dict(account="10001", title="Support März", quantity=D("3.5"), unitprice=D("95.00"), servicedate=date(2024, 3, 10)),
    dict(account="10001", title="Support April", quantity=D("2"), unitprice=D("95.00"), servicedate=date(2024, 4, 8)),
    dict(account="10002", title="Hosting", unitprice=D("49.90"), invoicecriterion="Hosting"),
    dict(account="10002", title="Domain", quantity=D("3"), unitprice=D("12.3333"), invoicecriterion="Domain"),
    dict(account="10003", title="Gutschrift", quantity=D("1"), unitprice=D("-200.00")),
    dict(account="10004", title="Kulanz", unitprice=D("-15.00")),
    dict(account="10004", title="Fachbuch", unitprice=D("39.90"), producttaxclass="Reduced"),
    dict(account="10009", title="unknown account", unitprice=D("1.00")),
    dict(account="10001", title="Anzahlung Projekt X", type="Progress", subinvoiceassignmentkey="PX",
         unitprice=D("500.00")),
    dict(account="10001", title="not an item", isitem=False, unitprice=D("1.00")),
    dict(account="10001", title="next year", servicedate=date(2025, 1, 5), unitprice=D("1.00")),
    dict(account="10002", title="bad type", type="Gutschrift", unitprice=D("1.00")),
]
FINAL_PX = dict(account="10001", title="Projekt X gesamt", type="Final", subinvoiceassignmentkey="PX",
                unitprice=D("2000.00"))


def phase1_data(h: Harness) -> None:
    h.usage(*USAGE_ROWS)


def run(h: Harness, **options) -> RunReport:
    return h.run(*FILTERS, **options)


def phase2_data(h: Harness) -> None:
    """Stand-ins for finalization and payment of every sub invoice."""
    subs = [i for i in h.invoices() if i["type"] in ("Partial", "Progress")]
    assert len(subs) == 4, [(i["type"], i["subinvoiceassignmentkey"]) for i in subs]
    h.set_open(*(i["id"] for i in subs))
    for invoice in subs:
        if invoice["type"] == "Progress":
            h.pay(invoice["id"], invoice["grandtotal"], date(2024, 10, 1))
    h.usage(FINAL_PX)
