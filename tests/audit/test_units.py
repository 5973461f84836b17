"""The audit's pure parts: merging ordered streams, reading numbers back
through counter patterns, judging an invoice (gross accounting, deductions),
direct debits against a payment plan, DATEV files, SEPA references."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from engine.audit.base import merge, movement
from engine.audit.datev import read_datev
from engine.audit.findings import CODES, Finding, finding
from engine.audit.invoices import judge_invoice
from engine.audit.numbers import pattern_regex
from engine.audit.sepa import judge_collections, reference_of

D = Decimal


def test_merge_walks_ordered_streams_side_by_side():
    a = [{"id": 1, "v": "a1"}, {"id": 3, "v": "a3"}]
    b = [{"id": 1, "v": "b1"}, {"id": 1, "v": "b1'"}, {"id": 2, "v": "b2"}]
    c: list = []
    walked = [(key, [[r["v"] for r in rows] for rows in groups]) for key, groups in
              merge(lambda r: r["id"], a, b, c)]
    assert walked == [(1, [["a1"], ["b1", "b1'"], []]), (2, [[], ["b2"], []]), (3, [["a3"], [], []])]


def test_movement_follows_sides():
    payment = {"type": "Payment", "accountno": "1200", "contraaccountno": None, "bpaccountno": "10001",
               "amount": D("1190.00")}
    assert movement(payment, "1200") == D("1190.00") and movement(payment, "10001") == D("-1190.00")
    assert movement({**payment, "amount": D("-5.00")}, "10001") == D("5.00")
    assert movement(payment, "8400") == 0


@pytest.mark.parametrize("pattern, number, value", [
    ("INV-[Year]-{00000}", "INV-2024-00011", 11),
    ("INV-[Year]-{00000}", "INV-2024-123456", 123456),  # wider than the mask: written in full
    ("[AccountNo]/[Year][Month]-{000}", "B-17/202403-007", 7),
    ("{0000}", "0042", 42),
])
def test_numbers_are_read_back_through_their_pattern(pattern, number, value):
    assert int(pattern_regex(pattern).fullmatch(number).group(1)) == value


def test_a_number_that_does_not_fit_its_pattern():
    assert pattern_regex("INV-[Year]-{00000}").fullmatch("INV-24-00001") is None
    assert pattern_regex("INV-[Year]") is None  # no digit mask


def _invoice(**values):
    return {"name": "INV-1", "status": "Open", "type": "Standard", "totalnet": D("100.00"), "totaltax": D("19.00"),
            "grandtotal": D("119.00"), "balance": D("119.00"), "relatedinvoice": None, **values}


def _lines(net="100.00", tax="19.00", gross="119.00"):
    return {"n": 1, "net": D(net), "tax": D(tax), "gross": D(gross), "unbalanced": 0}


def _booked(booking_type, account, amount, *, gross=False, contra=None):
    return {"type": booking_type, "accountno": account, "contraaccountno": contra, "bpaccountno": "10001",
            "amount": D(amount), "isgross": gross, "reversal": False}


INVOICE_BALANCE = [{"type": "Invoice", "clearingreason": None, "amount": D("119.00"), "n": 1}]


def test_an_invoice_booked_net():
    details = [_booked("Revenue", "8400", "100.00"), _booked("Tax", "1776", "19.00")]
    assert list(judge_invoice(_invoice(), _lines(), INVOICE_BALANCE, details, book=True)) == []


def test_an_invoice_booked_gross_respects_gross_accounting():
    details = [_booked("Revenue", "8400", "119.00", gross=True)]
    assert list(judge_invoice(_invoice(), _lines(), INVOICE_BALANCE, details, book=True)) == []
    # gross revenue with a separate tax booking: together they are the grand total
    mixed = [_booked("Revenue", "8400", "118.00", gross=True), _booked("Tax", "1776", "1.00")]
    assert [f.code for f in judge_invoice(_invoice(), _lines(), INVOICE_BALANCE, mixed, book=True)] == []
    short = [_booked("Revenue", "8400", "110.00", gross=True)]
    assert sorted(f.code for f in judge_invoice(_invoice(), _lines(), INVOICE_BALANCE, short, book=True)) == [
        "A210", "A212"]


def test_a_final_invoice_deducting_a_progress_payment():
    """Worked example of domain-spec §5.6: revenue 3000, interim payment clearing 2000, tax 190."""
    invoice = _invoice(type="Final", totalnet=D("1000.00"), totaltax=D("190.00"), grandtotal=D("1190.00"),
                       balance=D("1190.00"))
    balances = [{"type": "Invoice", "clearingreason": None, "amount": D("1190.00"), "n": 1}]
    details = [_booked("Revenue", "8400", "3000.00"), _booked("Interim Payment Clearing", "1718", "2000.00"),
               _booked("Tax", "1776", "190.00")]
    lines = _lines("1000.00", "190.00", "1190.00")
    assert list(judge_invoice(invoice, lines, balances, details, book=True)) == []
    missing = details[:1] + details[2:]
    assert {f.code for f in judge_invoice(invoice, lines, balances, missing, book=True)} == {"A210", "A212"}


def test_a_progress_invoice_cleared_by_its_final_invoice():
    invoice = _invoice(type="Progress", status="Paid", balance=D("0.00"))
    balances = INVOICE_BALANCE + [{"type": "Clearing", "clearingreason": "Final Invoice", "amount": D("-119.00"),
                                   "n": 1}]
    details = [_booked("Interim Revenue", "1593", "119.00", gross=True),
               _booked("Interim Revenue", "1593", "-119.00", gross=True)]
    assert list(judge_invoice(invoice, _lines(), balances, details, book=True)) == []


def test_a_status_and_a_balance_that_disagree():
    found = judge_invoice(_invoice(status="Paid"), _lines(), INVOICE_BALANCE, [], book=False)
    assert [(f.code, f.expected, f.actual) for f in found] == [("A221", "Open", "Paid")]


def test_direct_debits_against_a_payment_plan():
    invoice = {"name": "INV-8", "grandtotal": D("120.00")}
    plan = [{"amount": D("40.00"), "isdeposit": False, "exportfile": "a.xml"},
            {"amount": D("40.00"), "isdeposit": False, "exportfile": "b.xml"},
            {"amount": D("40.00"), "isdeposit": False, "exportfile": None}]

    def debit(amount, file, forced=False):
        return {"amount": D(amount), "filename": file, "nextpaymentduedate": date(2024, 11, 1), "forcedexport": forced}

    assert list(judge_collections(invoice, [debit("40.00", "a.xml"), debit("40.00", "b.xml")], plan)) == []
    whole = list(judge_collections(invoice, [debit("120.00", "a.xml")], plan))
    assert [(f.code, f.expected, f.actual) for f in whole] == [("A511", "40.00", "120.00")]
    # a forced re-export repeats a collection; twice the grand total without a plan is too much
    assert list(judge_collections(invoice, [debit("120.00", "a.xml"), debit("120.00", "a.xml", True)], [])) == []
    twice = list(judge_collections(invoice, [debit("120.00", "a.xml"), debit("120.00", "b.xml")], []))
    assert [(f.code, f.actual) for f in twice] == [("A511", "240.00")]


def test_sepa_references():
    known = {"INV-2024-00008", "BAL-000021"}
    assert reference_of("INV-2024-00008/3", known) == "INV-2024-00008"
    assert reference_of("BAL-000021", known) == "BAL-000021"
    assert reference_of("INV-2024-00009/3", known) == "INV-2024-00009/3"


def _datev(lines: list[str], first="20240701", last="20250630") -> bytes:
    header = f'"EXTF";700;21;"Buchungsstapel";13;20250101000000000;;"MB";"metabill";"";29098;55003;20240701;4;' \
             f'{first};{last};"x";"";1;0;0;"EUR";;"";;;"03";;;"";""'
    headings = ";".join(["Umsatz (ohne Soll/Haben-Kz)", "Soll/Haben-Kennzeichen", "WKZ Umsatz", "Konto",
                         "Gegenkonto (ohne BU-Schlüssel)", "Belegdatum", "Belegfeld 1"])
    return "\r\n".join([header, headings, *lines, ""]).encode("cp1252")


def test_a_datev_file_over_two_calendar_years():
    data = _datev(['1190,00;"S";"EUR";1200;10001;3012;"INV-1"', '5,00;"H";"EUR";8400;10001;1501;"INV-2"'])
    parsed, problems = read_datev(Path("f.csv"), data)
    assert problems == [] and parsed.amount == D("1195.00")
    assert sorted(parsed.lines) == [
        (date(2024, 12, 30), "1200", "10001", "S", D("1190.00"), "INV-1", "EUR"),
        (date(2025, 1, 15), "8400", "10001", "H", D("5.00"), "INV-2", "EUR"),
    ]


def test_a_datev_file_with_bad_lines():
    parsed, problems = read_datev(Path("f.csv"), _datev(['1190,00;"S";"EUR";1200;10001;3106;"INV-1"', "x;y"]))
    assert parsed is not None and len(problems) == 2 and "line 3" in problems[0] and "line 4" in problems[1]
    assert read_datev(Path("f.csv"), b"a;b\r\n")[0] is None


def test_every_finding_code_is_catalogued_in_the_readme():
    readme = (Path(__file__).resolve().parents[2] / "engine" / "audit" / "README.md").read_text(encoding="utf-8")
    assert all(f"| {code} |" in readme for code in CODES)
    with pytest.raises(ValueError):
        Finding("A999", "invoice", "x", "unknown")
    assert finding("A212", "invoice", "INV-1", "m", expected=D("1.5"), actual=D("2.00")).expected == "1.50"
