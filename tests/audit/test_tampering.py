"""The audit fails, naming the difference, on a database changed behind the
engine's back (the full demo, on SQLite and PostgreSQL).

Each test audits the untampered database first, changes it with
:func:`tamper` and audits again: the findings the change adds must be exactly
the ones expected (code and subject), and none may disappear. Comparing with
the first audit keeps these tests about the audit, whatever the demo data
holds.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import sqlalchemy as sa

from engine.storage.bulk import RowWriter
from engine.storage.schema import CLAIM

from .conftest import FullDemo, run_audit, tamper

D = Decimal


def added(demo: FullDemo, *changes, **files) -> set[tuple[str, str]]:
    """(code, subject) of the findings ``changes`` add to the audit."""
    before = {(f.code, f.subject, f.message) for f in run_audit(demo, **files).findings}
    tamper(demo, *changes)
    after = {(f.code, f.subject, f.message) for f in run_audit(demo, **files).findings}
    assert before <= after, f"findings disappeared: {before - after}"
    return {(code, subject) for code, subject, _ in after - before}


def invoice_id(demo: FullDemo, name: str) -> int:
    return demo.rows("Invoice", demo.table("Invoice").c.name == name)[0]["id"]


def detail(demo: FullDemo, invoice: str, booking_type: str, account: str | None = None) -> dict:
    table = demo.table("BookingDetail")
    rows = demo.rows("BookingDetail", table.c.invoiceno == invoice, table.c.type == booking_type,
                     table.c.balance.is_(None))
    return [r for r in rows if account is None or r["accountno"] == account][0]


def update(demo: FullDemo, object_name: str, ident: int, **values) -> sa.Update:
    table = demo.table(object_name)
    return sa.update(table).where(table.c.id == ident).values(**values)


def insert(demo: FullDemo, object_name: str, **values):
    """A change inserting one record through the engine's row writer (ids, names)."""
    return lambda conn: RowWriter(conn, demo.model.require(object_name)).insert([values])


# --- bookings ---------------------------------------------------------------------------------


def test_a_tampered_booking_amount(full_demo):
    revenue = detail(full_demo, "CR-2025-00001", "Revenue")
    assert not revenue["exported"]
    assert added(full_demo, update(full_demo, "BookingDetail", revenue["id"], amount=D("-151.00"))) == {
        ("A210", "CR-2025-00001"), ("A212", "CR-2025-00001")}


def test_an_exported_detail_edited_after_its_export(full_demo):
    revenue = detail(full_demo, "INV-2024-00005", "Revenue", "8400")
    assert revenue["exported"] and revenue["amount"] == D("960.00")
    change = update(full_demo, "BookingDetail", revenue["id"], amount=D("961.00"))
    files = {"datev_files": [full_demo.datev]}
    found = added(full_demo, change, **files)
    assert found == {
        ("A210", "INV-2024-00005"), ("A212", "INV-2024-00005"),
        ("A502", revenue["name"]),
        ("A506", "8400 DE01-2024-09"), ("A506", "10001 DE01-2024-09"),
        ("A503", str(full_demo.datev)), ("A504", revenue["name"]),
    }


def test_a_payment_booking_changed(full_demo):
    table = full_demo.table("BookingDetail")
    balance = full_demo.rows("Balance", full_demo.table("Balance").c.invoice == invoice_id(full_demo, "INV-2024-00006"),
                             full_demo.table("Balance").c.type == "Payment")[0]
    payment = full_demo.rows("BookingDetail", table.c.balance == balance["id"])[0]
    assert payment["exported"]
    found = added(full_demo, update(full_demo, "BookingDetail", payment["id"], amount=D("510.00")))
    assert found == {("A301", balance["name"]), ("A502", payment["name"]),
                     ("A506", "1200 DE01-2024-10"), ("A506", "10002 DE01-2024-10")}


def test_a_posting_without_an_account(full_demo):
    tax = detail(full_demo, "CR-2025-00001", "Tax")
    assert added(full_demo, update(full_demo, "BookingDetail", tax["id"], accountno=None)) == {
        ("A101", "DE01-2025-01")}


def test_an_invoice_without_its_bookings(full_demo):
    table = full_demo.table("BookingDetail")
    gone = sa.delete(table).where(table.c.invoiceno == "CR-2025-00001", table.c.balance.is_(None))
    assert added(full_demo, gone) == {("A213", "CR-2025-00001")}


def test_a_detail_in_a_period_that_cannot_hold_it(full_demo):
    tax = detail(full_demo, "INV-2024-00005", "Tax", "1771")
    periods = full_demo.table("BookingPeriod")
    march = full_demo.rows("BookingPeriod", periods.c.name == "DE01-2024-03")[0]["id"]
    assert added(full_demo, update(full_demo, "BookingDetail", tax["id"], bookingperiod=march)) == {
        ("A103", "DE01-2024-03")}


def test_a_cancellation_that_does_not_reverse(full_demo):
    reversal = detail(full_demo, "CR-2024-00001", "Tax")
    assert reversal["reversalof"] is not None
    found = added(full_demo, update(full_demo, "BookingDetail", reversal["id"], amount=D("-142.00")))
    assert ("A214", "CR-2024-00001") in found and found <= {
        ("A214", "CR-2024-00001"), ("A502", reversal["name"]), ("A506", "1776 DE01-2024-10"),
        ("A506", "10004 DE01-2024-10")}


def test_an_interim_residue_in_a_closed_project(full_demo):
    sub = invoice_id(full_demo, "INV-2024-00001")
    periods = full_demo.table("BookingPeriod")
    march = full_demo.rows("BookingPeriod", periods.c.name == "DE01-2024-03")[0]["id"]
    extra = insert(full_demo, "BookingDetail", bookingperiod=march, type="Interim Payment", amount=D("100.00"),
                   accountno="1718", contraaccountno="1593", bpaccountno="10001", invoice=sub,
                   invoiceno="INV-2024-00001", bookingdate=date(2024, 3, 28), currencyisocode="EUR",
                   businessentity="DE01", exported=False)
    assert added(full_demo, extra) == {("A401", "INV-2024-00011")}


def test_a_progress_payment_with_wrong_interim_bookings(full_demo):
    table = full_demo.table("BookingDetail")
    interim = full_demo.rows("BookingDetail", table.c.invoiceno == "INV-2024-00001", table.c.type == "Interim Payment")[0]
    balance = full_demo.rows("Balance", full_demo.table("Balance").c.id == interim["balance"])[0]
    found = added(full_demo, update(full_demo, "BookingDetail", interim["id"], amount=D("900.00")))
    assert found == {("A302", balance["name"]), ("A401", "INV-2024-00011")}


# --- invoices and balances ------------------------------------------------------------------------


def test_a_deleted_balance(full_demo):
    balances = full_demo.table("Balance")
    payment = full_demo.rows("Balance", balances.c.invoice == invoice_id(full_demo, "INV-2024-00006"),
                             balances.c.type == "Payment")[0]
    found = added(full_demo, sa.delete(balances).where(balances.c.id == payment["id"]))
    # The balance's booking detail stays (it is immutable) and now belongs to the invoice alone.
    assert found == {("A220", "INV-2024-00006"), ("A223", "Alpenblick Hotel GmbH"), ("A212", "INV-2024-00006")}


def test_a_changed_invoice_total(full_demo):
    ident = invoice_id(full_demo, "INV-2024-00006")
    found = added(full_demo, update(full_demo, "Invoice", ident, totalnet=D("1600.00"), grandtotal=D("1600.00")))
    assert found == {("A201", "INV-2024-00006"), ("A210", "INV-2024-00006"), ("A212", "INV-2024-00006"),
                     ("A222", "INV-2024-00006"), ("A602", "INV-2024-00006")}


def test_an_extra_line_billing_a_record_again(full_demo):
    extra = insert(full_demo, "InvoiceLineItem", invoice=invoice_id(full_demo, "INV-2024-00006"), title="Extra",
                   quantity=D("1"), unitprice=D("10.00"), postotalnet=D("10.00"), postotaltax=D("0.00"),
                   postotalgross=D("10.00"), sourceobject="OrderItem", sourcerecordid="1")
    assert added(full_demo, extra) == {("A201", "INV-2024-00006"), ("A230", "OrderItem 1"),
                                       ("A602", "INV-2024-00006")}


def test_a_status_that_does_not_follow_the_balance(full_demo):
    ident = invoice_id(full_demo, "INV-2024-00006")
    assert added(full_demo, update(full_demo, "Invoice", ident, status="Paid")) == {("A221", "INV-2024-00006")}


# --- numbers and claims ------------------------------------------------------------------------


def test_a_duplicate_number(full_demo):
    ident = invoice_id(full_demo, "INV-2024-00007")
    assert added(full_demo, update(full_demo, "Invoice", ident, name="INV-2024-00006")) == {
        ("A240", "INV-2024-00006"), ("A241", "Default|2024|None|None|None"), ("A602", "INV-2024-00006")}


def test_a_number_outside_its_range(full_demo):
    ident = invoice_id(full_demo, "INV-2024-00007")
    assert added(full_demo, update(full_demo, "Invoice", ident, name="INV-2024-00099")) == {
        ("A241", "Default|2024|None|None|None"), ("A242", "Default|2024|None|None|None"), ("A602", "INV-2024-00099")}


def test_claims_and_write_back_disagree(full_demo):
    orders = full_demo.table("Order")
    found = added(full_demo, sa.update(orders).where(orders.c.id == 1).values(on_invoice__c=None))
    assert found == {("A231", "order 1")}


def test_a_claim_on_a_cancelled_invoice(full_demo):
    canceled = invoice_id(full_demo, "INV-2024-00008")
    claim = (sa.update(CLAIM).where(CLAIM.c.source_table == "order", CLAIM.c.source_id == 1)
             .values(invoice_id=canceled))
    assert added(full_demo, claim) == {("A232", "order 1"), ("A231", "order 1")}


# --- exports ---------------------------------------------------------------------------------------


def test_export_marks_and_items_disagree(full_demo):
    tax = detail(full_demo, "INV-2024-00005", "Tax", "1771")
    assert tax["exported"]
    found = added(full_demo, update(full_demo, "BookingDetail", tax["id"], exported=False))
    assert found == {("A501", tax["name"]), ("A506", "1771 DE01-2024-09"), ("A506", "10001 DE01-2024-09")}


def test_a_deleted_export_history_record(full_demo):
    history = full_demo.table("InvoiceExportHistory")
    ident = invoice_id(full_demo, "INV-2024-00010")
    gone = sa.delete(history).where(history.c.invoice == ident)
    debit_file = full_demo.files / "sepa-debit.xml"
    assert added(full_demo, gone, sepa_files=[debit_file]) == {("A510", "INV-2024-00010"), ("A515", str(debit_file))}


def test_an_export_history_collecting_too_much(full_demo):
    history = full_demo.table("InvoiceExportHistory")
    ident = invoice_id(full_demo, "INV-2024-00010")
    raised = sa.update(history).where(history.c.invoice == ident).values(amount=D("15000.00"))
    debit_file = str(full_demo.files / "sepa-debit.xml")
    assert added(full_demo, raised, sepa_files=[debit_file]) == {
        ("A511", "INV-2024-00010"), ("A513", debit_file), ("A514", debit_file)}


def test_an_exported_balance_without_its_payout(full_demo):
    balances = full_demo.table("Balance")
    payout = full_demo.rows("Balance", balances.c.type == "Payout")[0]
    gone = sa.delete(balances).where(balances.c.id == payout["id"])
    found = added(full_demo, gone, sepa_files=[full_demo.files / "sepa-balances.xml"])
    exported = full_demo.rows("Balance", balances.c.name == payout["reference"])[0]
    assert ("A512", exported["name"]) in found and ("A223", "Nordlicht Logistik GmbH") in found
    assert ("A515", str(full_demo.files / "sepa-balances.xml")) in found


# --- issued documents -------------------------------------------------------------------------------


def test_an_issued_invoice_changed_where_no_guard_reaches(full_demo):
    ident = invoice_id(full_demo, "INV-2024-00006")
    assert added(full_demo, update(full_demo, "Invoice", ident, billingcity="Anderswo")) == {
        ("A602", "INV-2024-00006")}


def test_a_stored_document_altered(full_demo):
    parts = full_demo.table("InvoiceDocument")
    ident = invoice_id(full_demo, "INV-2024-00006")
    changed = sa.update(parts).where(parts.c.invoice == ident).values(content="<html>paid in full</html>")
    assert added(full_demo, changed) == {("A601", "INV-2024-00006")}


def test_a_stored_document_deleted(full_demo):
    parts = full_demo.table("InvoiceDocument")
    ident = invoice_id(full_demo, "INV-2024-00006")
    assert added(full_demo, sa.delete(parts).where(parts.c.invoice == ident)) == {("A603", "INV-2024-00006")}


def test_a_payout_larger_than_its_balance(full_demo):
    """A pay-out may be less than its balance's credit (other free balances
    had taken part of it), never more."""
    balances = full_demo.table("Balance")
    payout = full_demo.rows("Balance", balances.c.type == "Payout")[0]
    exported = full_demo.rows("Balance", balances.c.name == payout["reference"])[0]
    raised = sa.update(balances).where(balances.c.id == payout["id"]).values(amount=-exported["amount"] + D("0.01"))
    assert ("A512", exported["name"]) in added(full_demo, raised)
