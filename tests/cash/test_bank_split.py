"""One bank payment across several invoices (issue 18, gap 3): the split
decision (engine.cash.splitting) as a pure function, and the import that
registers it, on SQLite and PostgreSQL (``orders``: Muster GmbH owes
INV-2024-00001 1249.19, 00005 5712.00, 00006 1190.00 and 00007 4998.00)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from engine.cash import bank_service
from engine.cash.matching import Candidate, LineFacts, MatchingRules
from engine.cash.splitting import MAX_SUMMED, named_invoices, settle_decision

from booking.helpers import D
from contexts import context

from .helpers import assert_cash_invariants, free_of

RULES = MatchingRules.from_records([], Decimal(100))
DAY = date(2024, 11, 20)


def candidate(number: str, amount: str, account: int = 1, name: str = "Muster GmbH", **extra) -> Candidate:
    return Candidate(number, int(number[-3:]), account, name, Decimal(amount), "EUR", date(2024, 1, 31), **extra)


def line(amount: str, text: str | None = None, **extra) -> LineFacts:
    return LineFacts(amount=Decimal(amount), currency="EUR", booking_date=DAY, remittance=text, **extra)


POOL = [candidate("INV-001", "100.00"), candidate("INV-002", "250.00"), candidate("INV-003", "80.00"),
        candidate("INV-012", "40.00", account=2, name="Other AG")]


def test_a_text_naming_several_invoices_splits_in_their_order_and_keeps_the_remainder():
    decision = settle_decision(line("400.00", "Rechnungen INV-002 und INV-001"), POOL, RULES)
    assert decision.outcome == "split"
    assert decision.parts == (("INV-002", D("250.00")), ("INV-001", D("100.00")))
    assert decision.remainder == D("50.00")
    text = "\n".join(decision.lines())
    assert "part: 250.00 to INV-002" in text and "part: 50.00 stays a credit on the account" in text
    # less than both owe: the first named is paid in full, the second in part
    short = settle_decision(line("300.00", "INV-002, INV-001"), POOL, RULES)
    assert (short.parts, short.remainder) == ((("INV-002", D("250.00")), ("INV-001", D("50.00"))), D("0"))


def test_a_named_number_inside_a_longer_named_number_does_not_count_twice():
    assert [c.invoice for c in named_invoices(line("1", "INV-012 INV-003"), POOL)] == ["INV-012", "INV-003"]
    assert [c.invoice for c in named_invoices(line("1", "INV 001"), POOL)] == ["INV-001"]


def test_an_amount_covering_only_the_first_named_invoice_is_the_single_decision():
    decision = settle_decision(line("100.00", "INV-001 INV-002"), POOL, RULES)
    assert decision.outcome == "assign" and decision.invoice == "INV-001" and decision.parts == ()


def test_the_sum_of_several_open_invoices_of_one_payer_splits_when_it_is_the_only_such_set():
    decision = settle_decision(line("330.00", "Sammelzahlung", payer_name="MUSTER gmbh"), POOL, RULES)
    assert decision.outcome == "split" and decision.remainder == 0
    assert decision.parts == (("INV-002", D("250.00")), ("INV-003", D("80.00")))  # 250 + 80: the only set
    # 180.00 is 100 + 80 of two different pairs: ambiguous, never guessed
    pool = POOL + [candidate("INV-004", "180.00"), candidate("INV-005", "100.00")]
    ambiguous = settle_decision(line("180.00", None, payer_name="Muster GmbH"), pool, RULES)
    assert ambiguous.outcome == "review" and "ambiguous" in ambiguous.reason


def test_no_summed_split_without_one_payer_or_with_too_many_invoices():
    # the payer is not known: nothing to sum over
    assert settle_decision(line("330.00", "Sammelzahlung"), POOL, RULES).outcome == "review"
    many = [candidate(f"INV-{n:03d}", str(n)) for n in range(1, MAX_SUMMED + 2)]
    assert settle_decision(line("3", None, payer_name="Muster GmbH"), many, RULES).outcome == "review"
    # a line the single decision is sure of is not split
    sure = settle_decision(line("100.00", "INV-001", payer_name="Muster GmbH"), POOL, RULES)
    assert sure.outcome == "assign"


def test_excluded_invoices_are_never_split_onto():
    pool = POOL + [Candidate("INV-009", 9, 1, "Muster GmbH", Decimal("70.00"), "CHF", date(2024, 1, 31))]
    decision = settle_decision(line("170.00", "INV-001 INV-009"), pool, RULES)
    assert decision.outcome != "split"


STATEMENT = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
  <BkToCstmrStmt><GrpHdr><MsgId>M-{ref}</MsgId><CreDtTm>2024-11-20T18:00:00</CreDtTm></GrpHdr>
    <Stmt><Id>{ref}</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
      <Ntry><Amt Ccy="EUR">{amount}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2024-11-20</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>NOTPROVIDED</EndToEndId></Refs>
          <RltdPties><Dbtr><Pty><Nm>Muster GmbH</Nm></Pty></Dbtr>
            <DbtrAcct><Id><IBAN>DE44500105175407324931</IBAN></Id></DbtrAcct></RltdPties>
          <RmtInf><Ustrd>{text}</Ustrd></RmtInf>
        </TxDtls></NtryDtls></Ntry></Stmt></BkToCstmrStmt>
</Document>
"""


def statement(tmp_path: Path, ref: str, amount: str, text: str) -> Path:
    path = tmp_path / f"{ref}.xml"
    path.write_text(STATEMENT.format(ref=ref, amount=amount, text=text), encoding="utf-8")
    return path


def test_a_payment_naming_two_invoices_pays_both_and_leaves_the_rest_as_credit(orders, tmp_path):
    ctx = context(orders.model)
    path = statement(tmp_path, "SPLIT-1", "10735.00", "Rechnungen INV-2024-00005 und INV-2024-00007")
    dry = bank_service.import_statement(orders.engine, ctx, path, dry_run=True)
    assert [(s.outcome, s.invoice) for s in dry.settled] == [("split", "INV-2024-00005, INV-2024-00007")]
    assert orders.select("PaymentEntry") == []
    report = bank_service.import_statement(orders.engine, ctx, path)
    assert [(s.outcome, s.invoice, s.amount) for s in report.settled] == \
        [("split", "INV-2024-00005, INV-2024-00007", D("10735.00"))]
    assert [orders.invoice(n)["status"] for n in ("INV-2024-00005", "INV-2024-00007")] == ["Paid", "Paid"]
    t = orders.t("Balance")
    parts = {b["transactionno"]: (b["amount"], b["invoice"] is None) for b in
             orders.balances(t.c.transactionno.like("SPLIT-1/%"))}
    assert parts == {"SPLIT-1/p1": (D("-5712.00"), False), "SPLIT-1/p2": (D("-4998.00"), False),
                     "SPLIT-1/rest": (D("-25.00"), True)}
    entry = orders.select("PaymentEntry")[0]
    assert entry["status"] == "Assigned" and "25.00 left as a credit" in entry["matchnote"]
    name = str(entry["name"])
    row, decision = bank_service.explain_entry(orders.engine, ctx, name)
    assert row["name"] == name and decision is not None
    before = (orders.select("Balance"), orders.select("BookingDetail"))
    again = bank_service.import_statement(orders.engine, ctx, path)
    assert again.settled == [] and (orders.select("Balance"), orders.select("BookingDetail")) == before
    assert_cash_invariants(orders)


def test_a_payment_of_the_sum_of_two_open_invoices_of_the_payer_is_split(orders, tmp_path):
    ctx = context(orders.model)
    # 1249.19 + 1190.00: INV-2024-00001 and 00006 are the only set of Muster's open invoices with this sum
    report = bank_service.import_statement(orders.engine, ctx, statement(tmp_path, "SUM-1", "2439.19", "Sammelzahlung"))
    assert [(s.outcome, s.invoice) for s in report.settled] == [("split", "INV-2024-00001, INV-2024-00006")]
    assert [orders.invoice(n)["status"] for n in ("INV-2024-00001", "INV-2024-00005", "INV-2024-00006")] == \
        ["Paid", "Open", "Paid"]
    assert bank_service.review(orders.engine, ctx) == []
    assert_cash_invariants(orders)


def test_a_sum_no_set_of_invoices_makes_waits_for_review(orders, tmp_path):
    ctx = context(orders.model)
    report = bank_service.import_statement(orders.engine, ctx, statement(tmp_path, "SUM-2", "2439.20", "Sammelzahlung"))
    assert [s.outcome for s in report.settled] == ["review"]
    assert [orders.invoice(n)["status"] for n in ("INV-2024-00001", "INV-2024-00006")] == ["Open", "Open"]


def test_a_split_line_moved_to_another_invoice_reverses_every_part(orders, tmp_path):
    ctx = context(orders.model)
    path = statement(tmp_path, "SPLIT-2", "6000.00", "INV-2024-00005 INV-2024-00007")
    assert [s.outcome for s in bank_service.import_statement(orders.engine, ctx, path).settled] == ["split"]
    assert [orders.invoice(n)["balance"] for n in ("INV-2024-00005", "INV-2024-00007")] == [D("0.00"), D("4710.00")]
    name = str(orders.select("PaymentEntry")[0]["name"])
    done = bank_service.reassign_entry(orders.engine, ctx, name, "INV-2024-00007", when=date(2024, 11, 21),
                                       run="test move split")
    assert (done.invoice, done.amount) == ("INV-2024-00007", D("6000.00"))
    assert [orders.invoice(n)["balance"] for n in ("INV-2024-00005", "INV-2024-00007")] == [D("5712.00"), D("0.00")]
    # INV-2024-00007 owed 4998.00: the 1002.00 over it is free credit (AllowOverpayments is off)
    assert sum(b["amount"] for b in free_of(orders, "10001")) == D("-1002.00")
    assert_cash_invariants(orders)
