"""Property tests of invoice bookings over random invoices (derandomized).

Pure part: random lines (quantity with up to 4 decimals, positive and
negative unit prices, tax codes DE_19 / DE_7 / RC / Non_EU of the sample tax
rules) are turned into invoice and line dicts the way the run and
finalize.py do, and booked with :func:`engine.booking.invoices.invoice_bookings`
and an :class:`AccountResolver` of the sample org. Always:

* the bookings satisfy ``check_postings`` and the debtor moves by exactly the
  grand total;
* revenue per tax code is the lines' net, tax per tax code the lines' tax, on
  the accounts of the sample's G/L rules and collective accounts;
* progress invoices book their gross as interim revenue and no tax; final
  invoices post progress deductions to interim payment clearing and partial
  deductions to revenue;
* the bookings of the cancellation (lines mirrored with negated amounts, as
  cancel.py makes them) exactly negate the original bookings.

Database part (fewer examples): random usage records of the billing test org
are billed, finalized and cancelled through the engine; the stored bookings
balance, and the cancellation's reversals negate them one by one.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.domain.money import round_money, tax_of
from engine.booking.accounts import AccountResolver
from engine.booking.invoices import invoice_bookings
from engine.booking.postings import account_movements, check_postings

from billing.helpers import make_test_org

from .helpers import ZERO, Books, assert_books_balance, load_model
from contexts import context

TAX = {"DE_19": Decimal("19.000"), "DE_7": Decimal("7.000"), "RC": Decimal("0.000"), "Non_EU": Decimal("0.000")}
REVENUE_ACCOUNT = {"DE_19": "8400", "DE_7": "8300", "RC": "8200", "Non_EU": "8200"}
TAX_ACCOUNT = {"DE_19": "1776", "DE_7": "1771"}
DEBTOR = "10001"

quantities = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("999.9999"), places=4)
prices = st.one_of(
    st.decimals(min_value=Decimal("-5000"), max_value=Decimal("5000"), places=2),
    st.decimals(min_value=Decimal("-99.9999"), max_value=Decimal("99.9999"), places=4),
)
line_specs = st.tuples(quantities, prices, st.sampled_from(sorted(TAX)))


@pytest.fixture(scope="module")
def resolver(sample_model):
    return AccountResolver(context(sample_model))


def make_line(index: int, quantity: Decimal, price: Decimal, code: str, **extra) -> dict:
    rate = TAX[code]
    net = round_money(quantity * price)
    tax = tax_of(net, rate)
    return {
        "id": 1000 + index, "name": f"ILI-{index:07d}", "title": f"Line {index}", "sequence": Decimal(index + 1),
        "quantity": quantity, "unitprice": price, "postotalnet": net, "postotaltax": tax, "postotalgross": net + tax,
        "taxrate": rate, "taxcode": code, "appliedtaxrule": code, "isdeduction": False, "subinvoice": None,
        "center": None, "costobject": None, "billingpractice": None, **extra,
    }


def make_invoice(lines: list[dict], invoice_type: str = "Standard", name: str = "INV-2024-00001") -> dict:
    total = sum((line["postotalgross"] for line in lines), ZERO)
    return {
        "id": 1, "name": name, "type": invoice_type, "class": "Invoice" if total >= 0 else "Credit",
        "status": "Open", "date": date(2024, 5, 31), "account": 7, "accountname": "Muster GmbH",
        "businessentity": "DE01", "region": "DE", "currencyisocode": "EUR", "debtorno__c": DEBTOR,
        "totalnet": sum((line["postotalnet"] for line in lines), ZERO),
        "totaltax": sum((line["postotaltax"] for line in lines), ZERO), "grandtotal": total,
        "purchaseorderno__c": "PO-1",
    }


def mirror(invoice: dict, lines: list[dict]) -> tuple[dict, list[dict]]:
    """The cancellation as engine/booking/cancel.py creates it."""
    header = {**invoice, "id": 2, "name": "CR-2024-00001", "type": "Cancelation",
              "class": "Invoice" if invoice["class"] == "Credit" else "Credit",
              "totalnet": -invoice["totalnet"], "totaltax": -invoice["totaltax"], "grandtotal": -invoice["grandtotal"]}
    copies = []
    for line in lines:
        copy = dict(line)
        for key in ("unitprice", "postotalnet", "postotaltax", "postotalgross"):
            copy[key] = -copy[key]
        copies.append(copy)
    return header, copies


def book(model, resolver, invoice, lines, sub_types=None) -> list[dict]:
    bookings = invoice_bookings(context(model), resolver, invoice, lines, {"on_debtorno__c": DEBTOR}, sub_types or {},
                                {"run": "", "confighash": "x"})
    return [b.fields for b in bookings]


def per(details: list[dict], booking_type: str, key: str = "taxcode") -> dict:
    out: dict = defaultdict(lambda: ZERO)
    for d in details:
        if d["type"] == booking_type:
            out[d[key]] += d["amount"]
    return {k: v for k, v in out.items()}


def nonzero(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if v != 0}


@settings(max_examples=250, deadline=None, derandomize=True)
@given(st.lists(line_specs, min_size=1, max_size=8))
def test_standard_and_credit_bookings(sample_model, resolver, specs):
    lines = [make_line(i, *spec) for i, spec in enumerate(specs)]
    invoice = make_invoice(lines)
    details = book(sample_model, resolver, invoice, lines)
    check_postings(details, debtor=DEBTOR, receivable=invoice["grandtotal"])
    movements = account_movements(details)
    assert movements.get(DEBTOR, ZERO) == invoice["grandtotal"]
    assert sum(movements.values(), ZERO) == 0
    net, tax = defaultdict(lambda: ZERO), defaultdict(lambda: ZERO)
    for line in lines:
        net[line["taxcode"]] += line["postotalnet"]
        tax[line["taxcode"]] += line["postotaltax"]
    assert per(details, "Revenue") == nonzero(net)
    assert per(details, "Tax") == nonzero(tax)
    assert {d["type"] for d in details} <= {"Revenue", "Tax"}
    for d in details:
        assert d["amount"] != 0 and d["amount"].as_tuple().exponent == -2
        expected = (REVENUE_ACCOUNT if d["type"] == "Revenue" else TAX_ACCOUNT)[d["taxcode"]]
        assert (d["accountno"], d["bpaccountno"], d["invoiceno"]) == (expected, DEBTOR, invoice["name"])
        assert d["purchaseorderno__c"] == "PO-1"
        assert d["debitcredit"] == ("Credit" if d["amount"] > 0 else "Debit")
    # One booking per (type, tax code): the lines of a code are aggregated.
    assert len({(d["type"], d["taxcode"]) for d in details}) == len(details)
    assert sorted(sum((d["invoicelineitems"].split(", ") for d in details if d["type"] == "Revenue"), [])) == sorted(
        line["name"] for line in lines if net[line["taxcode"]] != 0)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(line_specs, min_size=1, max_size=8))
def test_cancellation_bookings_negate_the_originals(sample_model, resolver, specs):
    lines = [make_line(i, *spec) for i, spec in enumerate(specs)]
    invoice = make_invoice(lines)
    header, copies = mirror(invoice, lines)
    original = book(sample_model, resolver, invoice, lines)
    reversal = book(sample_model, resolver, header, copies)
    check_postings(reversal, debtor=DEBTOR, receivable=header["grandtotal"])
    keys = ("type", "accountno", "contraaccountno", "bpaccountno", "taxcode", "taxrate", "accountrule")
    assert [tuple(d[k] for k in keys) + (-d["amount"],) for d in original] == [
        tuple(d[k] for k in keys) + (d["amount"],) for d in reversal]
    assert [d["debitcredit"] for d in reversal] == [
        "Debit" if d["debitcredit"] == "Credit" else "Credit" for d in original]
    both = account_movements(original + reversal)
    assert all(v == 0 for v in both.values())


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(quantities, prices), min_size=1, max_size=6))
def test_progress_invoice_books_gross_interim_revenue(sample_model, resolver, specs):
    lines = [make_line(i, q, p, "DE_19") for i, (q, p) in enumerate(specs)]
    invoice = make_invoice(lines, "Progress")
    details = book(sample_model, resolver, invoice, lines)
    check_postings(details, debtor=DEBTOR, receivable=invoice["grandtotal"])
    if invoice["grandtotal"] == 0:
        assert details == []
        return
    assert [(d["type"], d["accountno"], d["amount"], d["isgross"], d["taxcode"]) for d in details] == [
        ("Interim Revenue", "1593", invoice["grandtotal"], True, "DE_19")]
    assert account_movements(details) == {DEBTOR: invoice["grandtotal"], "1593": -invoice["grandtotal"]}


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    st.lists(line_specs.filter(lambda s: s[2] == "DE_19"), min_size=1, max_size=4),
    st.lists(st.tuples(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=2),
                       st.sampled_from(["Partial", "Progress"])), min_size=1, max_size=4),
)
def test_final_invoice_deductions(sample_model, resolver, main_specs, deductions):
    main = [make_line(i, *spec) for i, spec in enumerate(main_specs)]
    lines = list(main)
    sub_types = {}
    for j, (net, sub_type) in enumerate(deductions):
        sub_id = 500 + j
        sub_types[sub_id] = sub_type
        lines.append(make_line(100 + j, Decimal(1), -net, "DE_19", isdeduction=True, subinvoice=sub_id))
    invoice = make_invoice(lines, "Final")
    details = book(sample_model, resolver, invoice, lines, sub_types)
    check_postings(details, debtor=DEBTOR, receivable=invoice["grandtotal"])
    progress_net = sum((net for net, t in deductions if t == "Progress"), ZERO)
    partial_net = sum((net for net, t in deductions if t == "Partial"), ZERO)
    main_net = sum((line["postotalnet"] for line in main), ZERO)
    assert per(details, "Interim Payment Clearing") == nonzero({"DE_19": progress_net})
    assert per(details, "Revenue") == nonzero({"DE_19": main_net - partial_net})
    assert per(details, "Tax") == nonzero({"DE_19": sum((line["postotaltax"] for line in lines), ZERO)})
    assert {d["accountno"] for d in details if d["type"] == "Interim Payment Clearing"} <= {"1718"}


# --- through the database ----------------------------------------------------------------


@pytest.fixture(scope="module")
def usage_org(tmp_path_factory):
    org = make_test_org(tmp_path_factory.mktemp("props") / "org")
    return org, load_model(org)


usage_lines = st.lists(
    st.tuples(quantities, prices, st.booleans()), min_size=1, max_size=5)
db_examples = st.tuples(st.sampled_from(["10001", "10002", "10003", "10004"]), usage_lines)


@pytest.fixture
def usage_books(usage_org, db_url, make_books) -> Books:
    org, model = usage_org
    return make_books(db_url, model, org)


def _db_examples(usage_books) -> int:
    return 25 if usage_books.backend == "sqlite" else 8


def test_random_invoices_through_the_database(usage_books):
    books = usage_books
    counter = iter(range(10_000))

    @settings(max_examples=_db_examples(books), deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(db_examples)
    def check(example):
        account, specs = example
        key = f"P{next(counter):04d}"
        rows = [{
            "on_account__c": account, "on_title__c": f"{key} line {i}", "on_quantity__c": q, "on_unitprice__c": p,
            "on_invoicecriterion__c": key, "on_producttaxclass__c": "Reduced" if reduced else None,
        } for i, (q, p, reduced) in enumerate(specs)]
        books.insert("Usage__c", rows)
        step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 6, 30))
        assert not step.run_failures and not step.finalized.failures, (step.run_failures, step.finalized.failures)
        assert len(step.numbers) == 1
        name = step.numbers[0]
        invoice = books.invoice(name)
        details = books.details_of(name)
        check_postings(details, debtor=account, receivable=invoice["grandtotal"])
        assert sum((d["amount"] for d in details if d["type"] in ("Revenue", "Tax")), ZERO) == invoice["grandtotal"]
        assert name.startswith("CR-") == (invoice["grandtotal"] < 0)

        cancellation = books.cancel(name, date(2024, 7, 1))
        reversals = books.details_of(cancellation)
        assert sorted((r["reversalof"], r["amount"]) for r in reversals) == sorted(
            (d["id"], -d["amount"]) for d in details)
        assert account_movements(details + reversals).get(account, ZERO) == 0
        assert all(v == 0 for v in account_movements(details + reversals).values())
        assert_books_balance(books)
        # The cancellation released the usage records; keep them out of the next example's run.
        usage = books.t("Usage__c")
        assert {r["on_invoice__c"] for r in books.select("Usage__c", usage.c.on_invoicecriterion__c == key)} == {None}
        with books.engine.begin() as conn:
            conn.execute(usage.update().where(usage.c.on_invoicecriterion__c == key).values(on_isitem__c=False))

    check()
    assert next(counter) == _db_examples(books)  # every example ran to its end


progress_projects = st.tuples(
    st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=2), min_size=1, max_size=3),
    st.integers(min_value=0, max_value=100),  # percent of the progress invoice paid before the final invoice
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("20000"), places=2),
)


def test_random_progress_projects_through_the_database(usage_books):
    """Progress invoices (one per milestone, random prices), a random share of
    each paid, then the final invoice: the interim accounts 1593 and 1718
    return to zero, the debtor equals the open final invoice, the progress
    invoices are settled, and 1776 is 19 % of the final net within a cent per
    milestone (the cent is the rounding bug shown by
    test_balanced_books.py::test_p2_partly_paid_with_an_amount_whose_tax_rounds_differently).
    One line per progress invoice: with several lines the deduction's
    per-line rounding is a second bug (test_progress_invoice_with_two_lines_partly_paid)."""
    books = usage_books
    counter = iter(range(10_000))
    examples = 10 if books.backend == "sqlite" else 3

    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(progress_projects)
    def check(example):
        milestones, percent, final_price = example
        key = f"K{next(counter):04d}"
        common = {"on_account__c": "10001", "on_subinvoiceassignmentkey__c": key}
        books.insert("Usage__c", [{**common, "on_type__c": "Progress", "on_title__c": f"{key} milestone {i}",
                                   "on_invoicecriterion__c": f"{key}-{i}", "on_unitprice__c": price}
                                  for i, price in enumerate(milestones)])
        step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 3, 31))
        assert len(step.numbers) == len(milestones), (step.run_failures, step.finalized.failures)
        progress = [books.invoice(n) for n in step.numbers]
        paid = ZERO
        for invoice in progress:
            amount = (invoice["grandtotal"] * percent / 100).quantize(Decimal("0.01"))
            if amount > 0:
                books.pay(invoice["name"], amount, date(2024, 4, 15))
                paid += amount
        books.insert("Usage__c", [{**common, "on_type__c": "Final", "on_title__c": f"{key} total",
                                   "on_unitprice__c": final_price}])
        step = books.bill(("Usage",), date(2024, 1, 1), date(2024, 12, 31), today=date(2024, 6, 30))
        assert len(step.numbers) == 1, (step.run_failures, step.finalized.failures)
        final = books.invoice(step.numbers[0])
        ids = {i["id"] for i in progress} | {final["id"]}
        movements = account_movements([d for d in books.details() if d["invoice"] in ids])
        assert movements.get("1593", ZERO) == 0 and movements.get("1718", ZERO) == 0
        assert movements.get("10001", ZERO) == final["grandtotal"]
        assert movements.get("1200", ZERO) == paid
        assert movements.get("8400", ZERO) == -final_price
        for invoice in progress:
            again = books.invoice(invoice["name"])
            assert (again["status"], again["balance"], again["finalinvoice"]) == ("Paid", ZERO, final["id"])
        drift = movements.get("1776", ZERO) + tax_of(final_price, Decimal(19))
        assert abs(drift) <= Decimal("0.01") * len(milestones)
        assert_books_balance(books)
        if final["grandtotal"] > 0:  # settle, so the debtor starts the next example at zero
            books.pay(final["name"], final["grandtotal"], date(2024, 7, 1))

    check()
    assert next(counter) == examples
