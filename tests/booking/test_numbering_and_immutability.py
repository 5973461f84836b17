"""Invoice numbers (domain-spec §4.3) and the immutability of finalized
records (guards in engine/storage/guards.py), on SQLite and PostgreSQL.

* Numbers are gapless across many finalizations even when some fail: an
  invoice whose bookings cannot be made (no Tax collective account for its
  tax code) stays a draft, draws no number and leaves nothing behind.
* The yearly reset starts every counter again at 1; cancellations draw from
  the template's credit counter (CR-...), not the invoice counter.
* Raw SQL cannot change a finalized invoice's legal content, its lines or a
  booking detail; status changes and export flags stay possible.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from billing.helpers import make_test_org

from config.orgcopy import Replace

from .helpers import Books, assert_books_balance, load_model
from contexts import context

NO_TAX_7 = Replace("custom_settings/CollectiveAccount.yaml", """\
  - Name: Tax 7%
    Type: Tax
    Account: "1771"
    TaxCode: DE_7
""", "")


@pytest.fixture(scope="module")
def no_tax7_org(tmp_path_factory):
    """The billing test org (with the Usage__c source) without the Tax
    collective account of tax code DE_7."""
    org = make_test_org(tmp_path_factory.mktemp("notax7") / "org")
    NO_TAX_7.apply(org)
    return org, load_model(org)


def usage(books: Books, count: int, *, reduced: set[int], start: int = 0) -> None:
    """One usage record per invoice (distinct invoice criteria) for 10001;
    records in ``reduced`` are books (7 %)."""
    rows = []
    for i in range(start, start + count):
        rows.append({
            "on_account__c": "10001", "on_title__c": f"Usage {i:02d}", "on_quantity__c": Decimal(1),
            "on_unitprice__c": Decimal(10 + i), "on_invoicecriterion__c": f"U{i:02d}",
            "on_producttaxclass__c": "Reduced" if i in reduced else None,
        })
    books.insert("Usage__c", rows)


def drafts(books: Books) -> list[int]:
    return [i["id"] for i in books.invoices(books.t("Invoice").c.status == "Draft")]


def number_range(books: Books) -> list[tuple]:
    return [(r["rangekey"], int(r["counter"]), r["lastgeneratedname"]) for r in books.select("NumberRange")]


def test_numbers_stay_gapless_when_finalizations_fail(no_tax7_org, db_url, make_books):
    org, model = no_tax7_org
    books = make_books(db_url, model, org)
    usage(books, 12, reduced={2, 3, 7})
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    ids = drafts(books)
    assert len(ids) == 12
    report = books.finalize(ids, date(2024, 5, 2))
    assert [f.number for f in report.finalized] == [f"INV-2024-{n:05d}" for n in range(1, 10)]
    assert len(report.failures) == 3
    assert all("no collective account of type Tax" in message for _, message in report.failures)
    failed = {int(name) for name, _ in report.failures}
    # Finalized in id order: the numbers follow the drafts, skipping the failures.
    assert [f.invoice_id for f in report.finalized] == [i for i in ids if i not in failed]
    for invoice in books.invoices(books.t("Invoice").c.id.in_(failed)):
        assert invoice["status"] == "Draft" and invoice["name"].startswith("DRAFT-")
        assert invoice["date"] is None and invoice["balance"] == 0
        assert not books.balances(books.t("Balance").c.invoice == invoice["id"])
        assert not books.details(books.t("BookingDetail").c.invoice == invoice["id"])
    assert number_range(books) == [("Default|2024|None|None|None", 9, "INV-2024-00009")]

    # More finalizations continue the range; a failing retry still draws nothing.
    usage(books, 3, reduced=set(), start=20)
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    again = books.finalize(drafts(books), date(2024, 5, 3))
    assert [f.number for f in again.finalized] == ["INV-2024-00010", "INV-2024-00011", "INV-2024-00012"]
    assert len(again.failures) == 3
    # The yearly reset: the first invoice dated 2025 is number 1 of 2025.
    usage(books, 2, reduced=set(), start=30)
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    new_year = books.finalize(drafts(books), date(2025, 1, 2))
    assert [f.number for f in new_year.finalized] == ["INV-2025-00001", "INV-2025-00002"]
    assert number_range(books) == [("Default|2024|None|None|None", 12, "INV-2024-00012"),
                                   ("Default|2025|None|None|None", 2, "INV-2025-00002")]
    names = sorted(i["name"] for i in books.invoices() if i["status"] != "Draft")
    assert names == [f"INV-2024-{n:05d}" for n in range(1, 13)] + ["INV-2025-00001", "INV-2025-00002"]
    assert_books_balance(books)


def test_batches_keep_numbers_gapless_and_in_id_order(no_tax7_org, db_url, make_books, monkeypatch):
    """Finalization works in batches (one transaction each): with batches of
    three, failures spread over several batches still draw no number, and
    the numbers follow the drafts' ids across batch boundaries."""
    from engine.booking import finalize

    monkeypatch.setattr(finalize, "BATCH_INVOICES", 3)
    org, model = no_tax7_org
    books = make_books(db_url, model, org)
    usage(books, 10, reduced={0, 4, 5, 9})
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    ids = drafts(books)
    report = books.finalize(ids, date(2024, 5, 2))
    failed = {int(name) for name, _ in report.failures}
    assert len(failed) == 4
    assert [f.invoice_id for f in report.finalized] == [i for i in ids if i not in failed]
    assert [f.number for f in report.finalized] == [f"INV-2024-{n:05d}" for n in range(1, 7)]
    assert number_range(books) == [("Default|2024|None|None|None", 6, "INV-2024-00006")]
    assert len(books.balances()) == 6
    assert {d["invoice"] for d in books.details()} == {f.invoice_id for f in report.finalized}
    assert_books_balance(books)


def one_invoice_of_lines(books: Books, count: int) -> int:
    """A draft with ``count`` lines (one invoice criterion), returns its id."""
    rows = [{"on_account__c": "10001", "on_title__c": f"Line {i:02d}", "on_quantity__c": Decimal(1),
             "on_unitprice__c": Decimal(10 + i), "on_invoicecriterion__c": "ONE",
             "on_producttaxclass__c": None} for i in range(count)]
    books.insert("Usage__c", rows)
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    (draft,) = drafts(books)
    return draft


def test_a_tampered_draft_is_not_finalized(no_tax7_org, db_url, make_books):
    """Drafts are editable, so finalization re-checks them: a line whose
    gross is not net + tax is refused even when another line offsets it in
    the totals, and so are totals that differ from the lines."""
    org, model = no_tax7_org
    books = make_books(db_url, model, org)
    draft = one_invoice_of_lines(books, 3)
    first, second = (line["id"] for line in books.select("InvoiceLineItem")[:2])
    with books.engine.begin() as conn:
        conn.execute(sa.text("UPDATE invoicelineitem SET postotalgross = postotalgross + 1 WHERE id = :id"), {"id": first})
        conn.execute(sa.text("UPDATE invoicelineitem SET postotalgross = postotalgross - 1 WHERE id = :id"), {"id": second})
    report = books.finalize([draft], date(2024, 5, 2))
    assert report.finalized == [] and "2 line(s) where gross != net + tax" in report.failures[0][1]
    with books.engine.begin() as conn:
        conn.execute(sa.text("UPDATE invoicelineitem SET postotalgross = postotalnet + postotaltax"))
        conn.execute(sa.text("UPDATE invoice SET totalnet = totalnet + 1 WHERE id = :id"), {"id": draft})
    report = books.finalize([draft], date(2024, 5, 2))
    assert report.finalized == [] and "totalnet" in report.failures[0][1] and "sum of lines" in report.failures[0][1]
    assert not books.balances() and not books.details() and number_range(books) == []


def test_booking_details_list_their_lines_in_line_order(no_tax7_org, db_url, make_books):
    """Lines are summed in SQL per alike group; the booking detail still
    names its lines in line order (InvoiceLineItems__c)."""
    org, model = no_tax7_org
    books = make_books(db_url, model, org)
    draft = one_invoice_of_lines(books, 12)
    lines = books.select("InvoiceLineItem")
    report = books.finalize([draft], date(2024, 5, 2))
    assert not report.failures
    ordered = sorted(lines, key=lambda line: (line["sequence"], line["id"]))
    revenue = [d for d in books.details() if d["type"] == "Revenue"]
    assert len(revenue) == 1
    assert revenue[0]["invoicelineitems"] == ", ".join(line["name"] for line in ordered)
    assert revenue[0]["amount"] == sum((line["postotalnet"] for line in lines), Decimal("0.00"))


def test_cancellations_use_the_credit_counter(books):
    assert books.bill_month(("Order Invoice",), 2024, 1).numbers == ["INV-2024-00001"]
    assert books.cancel("INV-2024-00001", date(2024, 1, 31)) == "CR-2024-00001"
    assert books.bill_month(("Order Invoice",), 2024, 2).numbers == ["INV-2024-00002"]
    assert books.cancel("INV-2024-00002", date(2024, 2, 29)) == "CR-2024-00002"
    assert books.bill_month(("Order Invoice",), 2024, 3).numbers == ["INV-2024-00003"]
    # The credit counter resets yearly too.
    assert books.cancel("INV-2024-00003", date(2025, 1, 3)) == "CR-2025-00001"
    assert books.cancel_error("CR-2024-00001") == "CR-2024-00001 is Settled: only Open or Paid invoices can be cancelled"
    assert books.cancel_error("INV-2024-00001") == "INV-2024-00001 is Canceled: only Open or Paid invoices can be cancelled"
    assert {(r["countername"], int(r["counter"])) for r in books.select("NumberRange")} == {
        ("Default", 3), ("Credit", 2), ("Credit", 1)}
    assert_books_balance(books)


# --- guards --------------------------------------------------------------------------------


@pytest.fixture
def finalized(books):
    """INV-2024-00001 (Open, with bookings) and a draft of the next month."""
    books.bill_month(("Order Invoice",), 2024, 1)
    step = books.bill(("Order Invoice",), date(2024, 2, 1), date(2024, 2, 29), finalize=False)
    assert step.run.invoices
    return books


def refused(books: Books, sql: str, **params) -> str:
    with pytest.raises(sa.exc.DBAPIError) as error:
        with books.engine.begin() as conn:
            conn.execute(sa.text(sql), params)
    return str(error.value.orig)


def ids(books: Books) -> dict[str, int]:
    invoice = books.invoice("INV-2024-00001")
    line = books.lines("INV-2024-00001")[0]
    detail = books.details_of("INV-2024-00001")[0]
    draft = books.invoices(books.t("Invoice").c.status == "Draft")[0]
    return {"invoice": invoice["id"], "line": line["id"], "detail": detail["id"], "draft": draft["id"]}


REFUSED = [
    # (what, statement, message)
    ("invoice total", "UPDATE invoice SET grandtotal = 0 WHERE id = :invoice", "finalized invoice"),
    ("invoice net", "UPDATE invoice SET totalnet = totalnet + 1 WHERE id = :invoice", "finalized invoice"),
    ("invoice number", "UPDATE invoice SET name = 'INV-2024-99999' WHERE id = :invoice", "finalized invoice"),
    ("invoice date", "UPDATE invoice SET date = :when WHERE id = :invoice", "finalized invoice"),
    ("invoice currency", "UPDATE invoice SET currencyisocode = 'CHF' WHERE id = :invoice", "finalized invoice"),
    ("invoice class", "UPDATE invoice SET class = 'Credit' WHERE id = :invoice", "finalized invoice"),
    ("back to draft", "UPDATE invoice SET status = 'Draft' WHERE id = :invoice", "finalized invoice"),
    ("invoice delete", "DELETE FROM invoice WHERE id = :invoice", "finalized invoice"),
    ("line price", "UPDATE invoicelineitem SET unitprice = 0 WHERE id = :line", "lines of a finalized invoice"),
    ("line title", "UPDATE invoicelineitem SET title = 'x' WHERE id = :line", "lines of a finalized invoice"),
    ("line delete", "DELETE FROM invoicelineitem WHERE id = :line", "lines of a finalized invoice"),
    ("line insert", "INSERT INTO invoicelineitem (id, name, invoice, title, quantity, unitprice) "
                    "SELECT 999999, 'ILI-X', invoice, title, quantity, unitprice FROM invoicelineitem WHERE id = :line",
     "lines of a finalized invoice"),
    ("detail delete", "DELETE FROM bookingdetail WHERE id = :detail", "booking details are immutable"),
    ("detail amount", "UPDATE bookingdetail SET amount = 0 WHERE id = :detail", "booking details are immutable"),
    ("detail account", "UPDATE bookingdetail SET accountno = '9999' WHERE id = :detail", "booking details are immutable"),
    ("detail date", "UPDATE bookingdetail SET bookingdate = :when WHERE id = :detail", "booking details are immutable"),
    ("detail period", "UPDATE bookingdetail SET bookingperiod = NULL WHERE id = :detail", "booking details are immutable"),
]


def test_raw_sql_cannot_rewrite_history(finalized):
    """Each statement in its own transaction: refused with the guard's
    message, and nothing changed."""
    books = finalized
    key = ids(books)
    before = (books.invoice("INV-2024-00001"), books.lines("INV-2024-00001"), books.details_of("INV-2024-00001"))
    for what, sql, message in REFUSED:
        text = refused(books, sql, when=date(2023, 1, 1), **key)
        assert message in text, (what, text)
    assert (books.invoice("INV-2024-00001"), books.lines("INV-2024-00001"), books.details_of("INV-2024-00001")) == before


def test_status_changes_and_export_flags_are_allowed(finalized):
    books = finalized
    key = ids(books)
    with books.engine.begin() as conn:
        conn.execute(sa.text("UPDATE invoice SET status = 'Paid', exported = :yes, timesexported = 1, "
                             "pdf = 'out/INV-2024-00001.pdf' WHERE id = :invoice"), {"yes": True, **key})
        conn.execute(sa.text("UPDATE bookingdetail SET exported = :yes, exportdestination = 'DATEV', "
                             "lasterror = 'none' WHERE invoice = :invoice"), {"yes": True, **key})
        # A draft's lines and totals are still the run's to change.
        conn.execute(sa.text("UPDATE invoicelineitem SET title = 'corrected' WHERE invoice = :draft"), key)
        conn.execute(sa.text("UPDATE invoice SET grandtotal = grandtotal WHERE id = :draft"), key)
    invoice = books.invoice("INV-2024-00001")
    assert (invoice["status"], invoice["exported"], invoice["timesexported"]) == ("Paid", True, 1)
    assert {(d["exported"], d["exportdestination"]) for d in books.details_of("INV-2024-00001")} == {(True, "DATEV")}
    assert {l["title"] for l in books.select("InvoiceLineItem", books.t("InvoiceLineItem").c.invoice == key["draft"])} == {"corrected"}
    # The draft can still be deleted; the finalized invoice cannot.
    with books.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM invoicelineitem WHERE invoice = :draft"), key)
        conn.execute(sa.text("DELETE FROM invoice WHERE id = :draft"), key)
    assert "finalized invoice" in refused(books, "DELETE FROM invoice WHERE id = :invoice", **key)


def test_guards_survive_a_migration(finalized):
    """SQLite drops triggers when it rebuilds a table; migrating again must
    reinstall them."""
    from engine.storage.migrate import apply_migration

    books = finalized
    apply_migration(books.engine, books.model)
    key = ids(books)
    assert "finalized invoice" in refused(books, "UPDATE invoice SET grandtotal = 0 WHERE id = :invoice", **key)
    assert "immutable" in refused(books, "DELETE FROM bookingdetail WHERE id = :detail", **key)


def test_a_stage_refusing_an_invoice_rolls_its_batch_back_and_retries_without_it(no_tax7_org, db_url, make_books):
    """Later stages of the chain (write-offs, cash-management entries) run in
    the batch's transaction; when one refuses an invoice, the batch is rolled
    back and finalized again without it: it stays a draft, draws no number,
    and the stage sees every other invoice exactly once, committed."""
    from engine.booking.finalize import StageError, finalize_invoices

    org, model = no_tax7_org
    books = make_books(db_url, model, org)
    usage(books, 5, reduced=set())
    books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), finalize=False)
    ids = drafts(books)
    refused_id = ids[2]
    seen: list[list[int]] = []

    def stage(conn, model, invoices):
        seen.append([invoice["id"] for invoice in invoices])
        assert all(invoice["status"] == "Open" and invoice["name"].startswith("INV-") for invoice in invoices)
        if refused_id in seen[-1]:
            raise StageError(refused_id, "the stage cannot take this one")

    report = finalize_invoices(books.engine, context(model), ids, today=date(2024, 5, 2), stages=(stage,))
    assert report.failures == [(str(refused_id), "the stage cannot take this one")]
    assert seen == [ids, [i for i in ids if i != refused_id]]
    assert [f.number for f in report.finalized] == [f"INV-2024-{n:05d}" for n in range(1, 5)]
    refused = books.invoices(books.t("Invoice").c.id == refused_id)[0]
    assert refused["status"] == "Draft" and not books.balances(books.t("Balance").c.invoice == refused_id)
    assert number_range(books) == [("Default|2024|None|None|None", 4, "INV-2024-00004")]
    assert_books_balance(books)
