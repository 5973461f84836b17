"""Every account balances in every scenario.

Each scenario is built through the engine (sample data, filters run month by
month, finalization, payments, cancellations); the books are then read back
in full and checked with :func:`assert_books_balance` plus the
scenario's own figures (domain-spec §5.5, §5.6, §3.8, §4.8).

Expected figures of the scenario "P2 partly paid" (not in the reference,
derived from the rules of build.py / finalize.py / payments.py): P2 receives
595.00 of 1190.00. The payment books Payment 595.00, Interim Payment
round(595 / 1.19) = 500.00 and Interim Tax 95.00. The final invoice deducts
what was received: P1 1000.00 net and P2 500.00 net (tax 190.00 + 95.00), so
F = 3000.00 - 1500.00 = 1500.00 net, 285.00 tax, 1785.00 gross; the unpaid
595.00 of P2 is cleared (Clearing -595.00, reason Final Invoice) and its
interim revenue reversed by -595.00. Then 1593 and 1718 are 0 and 1776 is
190.00 + 95.00 + 285.00 = 570.00.
"""

from __future__ import annotations

from datetime import date

from .helpers import ORDERS, UC1_FINAL, UC1_SUB, ZERO, Books, D, assert_books_balance

# --- scenario builders ------------------------------------------------------------------


def progress_project(b: Books, p2_paid: str | None = "1190.00") -> None:
    """The worked example up to the final invoice: P1 paid in full, P2 paid
    ``p2_paid`` (None: unpaid), F finalized on 2024-06-10."""
    assert b.bill_month(UC1_SUB, 2024, 3, date(2024, 3, 15)).numbers == ["INV-2024-00001"]
    b.pay("INV-2024-00001", "1190.00", date(2024, 3, 28))
    assert b.bill_month(UC1_SUB, 2024, 4, date(2024, 4, 15)).numbers == ["INV-2024-00002"]
    if p2_paid:
        b.pay("INV-2024-00002", p2_paid, date(2024, 4, 30))
    step = b.bill_month(UC1_FINAL, 2024, 6, date(2024, 6, 10))
    assert step.numbers == ["INV-2024-00003"], (step.run_failures, step.finalized.failures)


def bill_orders(b: Books, last_month: int = 9) -> dict[str, str]:
    """The order filters month by month over 2024 (a month is run again when
    its final invoice waited for a sub invoice of the same month). Returns
    order / delivery key -> invoice number."""
    for number in range(1, last_month + 1):
        step = b.bill_month(ORDERS, 2024, number)
        assert not step.finalized.failures
        if any("still drafts" in m for m in step.run_failures):
            again = b.bill_month(ORDERS, 2024, number)
            assert not again.finalized.failures and not again.run_failures
    names = {i["id"]: i["name"] for i in b.invoices()}
    out = {o["ordernumber"]: names.get(o["on_invoice__c"]) for o in b.select("Order")}
    out.update({p["deliverynumber__c"]: names.get(p["on_invoice__c"]) for p in b.select("Partial_Delivery__c")})
    return out


def order_item(b: Books, number: str, *, account: str = "10001", price: str, quantity: str = "1",
               title: str = "Kulanz", product: str = "SRV-CONSULT", effective: date = date(2024, 12, 10)) -> None:
    """An extra activated order with one order product."""
    order_id = b.insert("Order", [{
        "name": f"Order {number}", "ordernumber": number, "accountid": b.account_id(account),
        "effectivedate": effective, "status": "Activated", "type": "Standard", "currencyisocode": "EUR",
    }])[0]
    product_id = b.select("Product", b.t("Product").c.productcode == product)[0]["id"]
    b.insert("OrderItem", [{
        "orderid": order_id, "productid": product_id, "orderitemnumber": f"{number}-1",
        "quantity": D(quantity), "unitprice": D(price), "on_title__c": title,
    }])


def details_for(b: Books, *names: str) -> list[dict]:
    return [d for d in b.details() if d["invoiceno"] in names]


# --- progress invoices and the final invoice (UC1, worked example) -----------------------


WORKED_EXAMPLE = [
    # invoice, type, AccountNo, contra, amount, debit, credit, AccountRule
    ("INV-2024-00001", "Interim Revenue", "1593", None, "1190.00", "10001", "1593", "Interim Revenue"),
    ("INV-2024-00001", "Payment", "1200", None, "1190.00", "1200", "10001", "Bank"),
    ("INV-2024-00001", "Interim Payment", "1718", "1593", "1000.00", "1593", "1718", "Interim Payment 19%"),
    ("INV-2024-00001", "Interim Tax", "1776", "1593", "190.00", "1593", "1776", "Interim Tax 19%"),
    ("INV-2024-00002", "Interim Revenue", "1593", None, "1190.00", "10001", "1593", "Interim Revenue"),
    ("INV-2024-00002", "Payment", "1200", None, "1190.00", "1200", "10001", "Bank"),
    ("INV-2024-00002", "Interim Payment", "1718", "1593", "1000.00", "1593", "1718", "Interim Payment 19%"),
    ("INV-2024-00002", "Interim Tax", "1776", "1593", "190.00", "1593", "1776", "Interim Tax 19%"),
    ("INV-2024-00003", "Revenue", "8400", None, "3000.00", "10001", "8400", "Revenue 19%"),
    ("INV-2024-00003", "Interim Payment Clearing", "1718", None, "2000.00", "1718", "10001",
     "Interim Payment Clearing 19%"),
    ("INV-2024-00003", "Tax", "1776", None, "190.00", "10001", "1776", "Tax 19%"),
    ("INV-2024-00003", "Payment", "1200", None, "1190.00", "1200", "10001", "Bank"),
]


def _rows(b: Books) -> list[tuple]:
    from engine.booking.postings import sides

    return [(d["invoiceno"], d["type"], d["accountno"], d["contraaccountno"], str(d["amount"]), *sides(d),
             d["accountrule"]) for d in b.details()]


def test_worked_example_paid_in_full(books):
    progress_project(books)
    books.pay("INV-2024-00003", "1190.00", date(2024, 6, 20))
    assert _rows(books) == [tuple(row) for row in WORKED_EXAMPLE]
    movements = assert_books_balance(books)
    # 10001, 1593 and 1718 are zero; 1776 = 19 % of 3000.00; the bank holds all cash.
    assert movements == {"1200": D("3570.00"), "1776": D("-570.00"), "8400": D("-3000.00")}
    assert {i["name"]: i["status"] for i in books.invoices()} == {
        "INV-2024-00001": "Paid", "INV-2024-00002": "Paid", "INV-2024-00003": "Paid"}
    final = books.invoice("INV-2024-00003")
    assert (final["totalnet"], final["totaltax"], final["grandtotal"]) == (D("1000.00"), D("190.00"), D("1190.00"))
    assert {i["finalinvoice"] for i in books.invoices() if i["type"] == "Progress"} == {final["id"]}


def test_p2_unpaid_when_the_final_invoice_is_finalized(books):
    """The reference's variant: F deducts only P1, P2's rest is cleared and its
    interim revenue reversed."""
    progress_project(books, p2_paid=None)
    final = books.invoice("INV-2024-00003")
    assert (final["totalnet"], final["totaltax"], final["grandtotal"]) == (D("2000.00"), D("380.00"), D("2380.00"))
    deductions = [(l["title"], l["postotalnet"], l["postotaltax"]) for l in books.lines("INV-2024-00003") if l["isdeduction"]]
    assert deductions == [("Milestone 1", D("-1000.00"), D("-190.00"))]

    p2 = books.invoice("INV-2024-00002")
    assert (p2["status"], p2["balance"], p2["finalinvoice"]) == ("Paid", ZERO, final["id"])
    clearing = [b for b in books.balances(books.t("Balance").c.invoice == p2["id"]) if b["type"] == "Clearing"]
    assert [(b["amount"], b["clearingreason"], b["relatedinvoice"]) for b in clearing] == [
        (D("-1190.00"), "Final Invoice", final["id"])]

    assert books.postings("INV-2024-00002") == [
        ("Interim Revenue", "1593", None, D("1190.00"), "DE_19"),
        ("Interim Revenue", "1593", None, D("-1190.00"), "DE_19"),  # Dr 1593 / Cr 10001
    ]
    assert books.postings("INV-2024-00003") == [
        ("Revenue", "8400", None, D("3000.00"), "DE_19"),
        ("Interim Payment Clearing", "1718", None, D("1000.00"), "DE_19"),
        ("Tax", "1776", None, D("380.00"), "DE_19"),
    ]
    movements = assert_books_balance(books)
    assert movements == {"10001": D("2380.00"), "1200": D("1190.00"), "1776": D("-570.00"), "8400": D("-3000.00")}
    assert books.open_receivables("10001") == D("2380.00")

    books.pay("INV-2024-00003", "2380.00", date(2024, 6, 30))
    movements = assert_books_balance(books)
    assert movements == {"1200": D("3570.00"), "1776": D("-570.00"), "8400": D("-3000.00")}


def test_interim_revenue_reversal_carries_the_tax_of_the_reversed_booking(books_sqlite):
    books = books_sqlite
    progress_project(books, p2_paid=None)
    original, reversal = books.details_of("INV-2024-00002")
    assert [(d["taxcode"], d["taxrate"], d["appliedtaxrule"]) for d in (original, reversal)] == [
        ("DE_19", D("19.000"), "DE_19"), ("DE_19", D("19.000"), "DE_19")]


def test_p2_partly_paid_when_the_final_invoice_is_finalized(books):
    progress_project(books, p2_paid="595.00")
    final = books.invoice("INV-2024-00003")
    assert (final["totalnet"], final["totaltax"], final["grandtotal"]) == (D("1500.00"), D("285.00"), D("1785.00"))
    deductions = [(l["title"], l["postotalnet"], l["postotaltax"], l["postotalgross"])
                  for l in books.lines("INV-2024-00003") if l["isdeduction"]]
    assert deductions == [("Milestone 1", D("-1000.00"), D("-190.00"), D("-1190.00")),
                          ("Milestone 2", D("-500.00"), D("-95.00"), D("-595.00"))]
    assert books.postings("INV-2024-00002") == [
        ("Interim Revenue", "1593", None, D("1190.00"), "DE_19"),
        ("Payment", "1200", None, D("595.00"), None),
        ("Interim Payment", "1718", "1593", D("500.00"), "DE_19"),
        ("Interim Tax", "1776", "1593", D("95.00"), "DE_19"),
        ("Interim Revenue", "1593", None, D("-595.00"), "DE_19"),
    ]
    assert books.postings("INV-2024-00003") == [
        ("Revenue", "8400", None, D("3000.00"), "DE_19"),
        ("Interim Payment Clearing", "1718", None, D("1500.00"), "DE_19"),
        ("Tax", "1776", None, D("285.00"), "DE_19"),
    ]
    p2 = books.invoice("INV-2024-00002")
    assert (p2["status"], p2["balance"]) == ("Paid", ZERO)
    movements = assert_books_balance(books)
    assert movements == {"10001": D("1785.00"), "1200": D("1785.00"), "1776": D("-570.00"), "8400": D("-3000.00")}
    books.pay("INV-2024-00003", "1785.00", date(2024, 6, 30))
    assert assert_books_balance(books) == {"1200": D("3570.00"), "1776": D("-570.00"), "8400": D("-3000.00")}


def test_cancellation_of_a_paid_invoice_keeps_the_payment(books_sqlite):
    books = books_sqlite
    books.bill_month(("Order Invoice",), 2024, 1)
    books.pay("INV-2024-00001", "1249.19", date(2024, 2, 5))
    books.cancel("INV-2024-00001", date(2024, 2, 10))
    assert books.free_balances("10001") == D("-1249.19")
    movements = books.movements()
    assert movements == {"1200": D("1249.19"), "10001": D("-1249.19")}
    assert_books_balance(books)


def test_cancellation_of_a_final_invoice_and_its_new_version(books_sqlite):
    books = books_sqlite
    progress_project(books, p2_paid=None)
    books.cancel("INV-2024-00003", date(2024, 6, 12))
    assert_books_balance(books)
    assert [p["finalinvoice"] for p in books.invoices(books.t("Invoice").c.type == "Progress")] == [None, None]
    step = books.bill_month(UC1_FINAL, 2024, 6, date(2024, 6, 15))
    final = books.invoice(step.numbers[0])
    assert final["grandtotal"] == D("2380.00")
    books.pay(final["name"], "2380.00", date(2024, 6, 30))
    movements = assert_books_balance(books)
    assert movements.get("1718", ZERO) == 0 and movements.get("1593", ZERO) == 0
    assert movements["1776"] == D("-570.00")
