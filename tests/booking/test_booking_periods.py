"""Booking periods (domain-spec §5.2): a booking detail belongs to the period
(business entity, year, month) of its booking date; missing periods are
created open; a closed period sends new bookings to the next open month while
the booking date stays as it was."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from engine.booking.write import booking_period

from .helpers import Books, D, assert_books_balance
from contexts import context


def periods(books: Books) -> dict[str, tuple]:
    return {p["name"]: (p["businessentity"], p["year"], p["month"], p["startdate"], p["enddate"], p["status"])
            for p in books.select("BookingPeriod")}


def period_names(books: Books, invoice_name: str) -> list[tuple]:
    names = {p["id"]: p["name"] for p in books.select("BookingPeriod")}
    return [(d["type"], d["bookingdate"], d["originalbookingdate"], names[d["bookingperiod"]])
            for d in books.details_of(invoice_name)]


def close(books: Books, name: str) -> None:
    books.execute("UPDATE bookingperiod SET status = 'Closed' WHERE name = :name", name=name)


def extra_order(books: Books, number: str, effective: date, price: str = "500.00") -> None:
    order = books.insert("Order", [{
        "name": number, "ordernumber": number, "accountid": books.account_id("10001"), "effectivedate": effective,
        "status": "Activated", "currencyisocode": "EUR",
    }])[0]
    books.insert("OrderItem", [{"orderid": order, "orderitemnumber": f"{number}-1", "quantity": D("1"),
                                "unitprice": D(price), "on_title__c": "Nachtrag"}])


def test_missing_periods_are_created_open(books):
    books.bill_month(("Order Invoice",), 2024, 1)
    books.bill_month(("Order Invoice",), 2024, 3)
    assert periods(books) == {
        "DE01-2024-01": ("DE01", "2024", "01", date(2024, 1, 1), date(2024, 1, 31), "Open"),
        "DE01-2024-03": ("DE01", "2024", "03", date(2024, 3, 1), date(2024, 3, 31), "Open"),
    }
    assert {p[3] for p in period_names(books, "INV-2024-00001")} == {"DE01-2024-01"}
    books.pay("INV-2024-00001", "1249.19", date(2024, 2, 29))  # a payment opens February
    assert periods(books)["DE01-2024-02"] == ("DE01", "2024", "02", date(2024, 2, 1), date(2024, 2, 29), "Open")
    assert period_names(books, "INV-2024-00001")[-1] == (
        "Payment", date(2024, 2, 29), date(2024, 2, 29), "DE01-2024-02")


def test_closed_period_moves_new_bookings_to_the_next_open_month(books):
    books.bill_month(("Order Invoice",), 2024, 1)
    close(books, "DE01-2024-01")
    # Already written bookings stay in the closed period.
    assert {p[3] for p in period_names(books, "INV-2024-00001")} == {"DE01-2024-01"}
    extra_order(books, "ORD-LATE-1", date(2024, 1, 20))
    step = books.bill_month(("Order Invoice",), 2024, 1)
    assert step.numbers == ["INV-2024-00002"]
    assert books.invoice("INV-2024-00002")["date"] == date(2024, 1, 31)
    assert period_names(books, "INV-2024-00002") == [
        ("Revenue", date(2024, 1, 31), date(2024, 1, 31), "DE01-2024-02"),
        ("Tax", date(2024, 1, 31), date(2024, 1, 31), "DE01-2024-02"),
    ]
    assert periods(books)["DE01-2024-01"][-1] == "Closed"
    assert periods(books)["DE01-2024-02"][-1] == "Open"
    # A payment dated in the closed month, too.
    books.pay("INV-2024-00002", "595.00", date(2024, 1, 31))
    assert period_names(books, "INV-2024-00002")[-1] == ("Payment", date(2024, 1, 31), date(2024, 1, 31), "DE01-2024-02")
    assert_books_balance(books)


def test_several_closed_months_and_the_year_end(books):
    books.bill_month(("Order Invoice",), 2024, 1)
    books.pay("INV-2024-00001", "100.00", date(2024, 2, 10))
    books.pay("INV-2024-00001", "100.00", date(2024, 3, 10))
    close(books, "DE01-2024-02")
    close(books, "DE01-2024-03")
    books.pay("INV-2024-00001", "100.00", date(2024, 2, 20))
    assert period_names(books, "INV-2024-00001")[-1] == ("Payment", date(2024, 2, 20), date(2024, 2, 20), "DE01-2024-04")
    assert "DE01-2024-04" in periods(books)
    # December closed: a December booking goes to January of the next year.
    books.pay("INV-2024-00001", "100.00", date(2024, 12, 1))
    close(books, "DE01-2024-12")
    books.pay("INV-2024-00001", "100.00", date(2024, 12, 30))
    assert period_names(books, "INV-2024-00001")[-1] == ("Payment", date(2024, 12, 30), date(2024, 12, 30), "DE01-2025-01")
    assert periods(books)["DE01-2025-01"] == ("DE01", "2025", "01", date(2025, 1, 1), date(2025, 1, 31), "Open")
    assert_books_balance(books)


def test_cancellation_in_a_closed_month(books):
    """The reversal is dated on the cancellation date; when that month is
    closed it is booked in the next open one."""
    books.bill_month(("Order Invoice",), 2024, 1, date(2024, 1, 15))
    close(books, "DE01-2024-01")
    cancellation = books.cancel("INV-2024-00001", date(2024, 1, 31))
    assert {(p[1], p[3]) for p in period_names(books, cancellation)} == {(date(2024, 1, 31), "DE01-2024-02")}
    assert books.movements() == {}
    assert_books_balance(books)


def test_period_without_business_entity_and_reuse(books):
    with books.engine.begin() as conn:
        first = booking_period(conn, context(books.model), None, date(2024, 5, 17))
        again = booking_period(conn, context(books.model), None, date(2024, 5, 2))
        entity = booking_period(conn, context(books.model), "DE01", date(2024, 5, 2))
    assert first == again != entity
    assert periods(books) == {
        "2024-05": (None, "2024", "05", date(2024, 5, 1), date(2024, 5, 31), "Open"),
        "DE01-2024-05": ("DE01", "2024", "05", date(2024, 5, 1), date(2024, 5, 31), "Open"),
    }
    close(books, "2024-05")
    with books.engine.begin() as conn:
        moved = booking_period(conn, context(books.model), None, date(2024, 5, 17))
    table = books.t("BookingPeriod")
    with books.engine.connect() as conn:
        assert conn.execute(sa.select(table.c.name).where(table.c.id == moved)).scalar_one() == "2024-06"
