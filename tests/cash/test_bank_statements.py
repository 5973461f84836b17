"""Bank statements in (seed 000: "bank statement retrieval", "payment entry
matching and assignment", "automatic payment assignment", "manual payment
management"): camt.053, camt.054 and MT940 imported all or nothing and once,
lines matched by the PaymentMatchingRule settings, returns reopening the
invoice. Every test runs on SQLite and PostgreSQL (``orders``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.audit import audit
from engine.cash import bank_service
from engine.cash.errors import BankAssignmentError, PaymentEntryNotFound, StatementImportFailed

from booking.helpers import D
from contexts import context

from .helpers import assert_cash_invariants

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bank"
CAMT = EXAMPLES / "camt053-2024-11-05.xml"
MT940 = EXAMPLES / "mt940-2024-11-06.sta"


def run_import(books, path: Path, **options):
    return bank_service.import_statement(books.engine, context(books.model), path, run="test bank import", **options)


def entries(books) -> dict[str, dict]:
    return {str(row["externaltransactionid"]): row for row in books.select("PaymentEntry")}


def counts(books) -> tuple[int, ...]:
    return tuple(len(books.select(name)) for name in ("BankStatement", "PaymentEntry", "Balance", "BookingDetail"))


def findings(books) -> list[tuple[str, str]]:
    """The audit's findings other than those of the test fixture itself
    (finalized invoices without issued documents, A603)."""
    return [(f.code, f.subject) for f in audit(books.engine, context(books.model)).findings if f.code != "A603"]


def test_a_camt053_statement_settles_what_matching_is_sure_of_and_leaves_the_rest_for_review(orders):
    assert findings(orders) == []
    report = run_import(orders, CAMT)
    assert (report.format, len(report.statements), report.entries) == ("camt.053", 1, 5)
    assert (report.count("assigned"), report.count("review")) == (2, 2)
    lines = entries(orders)
    assert lines["20241105-000101"]["status"] == "Assigned"
    assert lines["20241105-000101"]["matchscore"] == 100          # invoice number 60 + amount 40
    assert lines["20241105-000102"]["status"] == "Assigned"       # "RE INV 2024 00002": spaces ignored
    assert lines["20241105-000103"]["status"] == "Unassigned"
    assert lines["20241105-000104"]["status"] == "Unassigned"     # amount + known IBAN = 70 < 100
    assert lines["20241105-000104"]["matchscore"] == 70
    assert lines["20241105-000105"]["status"] == "Ignored"        # bank charges: money paid out
    assert [orders.invoice(n)["status"] for n in ("INV-2024-00001", "INV-2024-00002", "INV-2024-00006")] == \
        ["Paid", "Paid", "Open"]
    payment = orders.balances(orders.t("Balance").c.transactionno == "20241105-000101")[0]
    assert (payment["amount"], payment["paymententry"], payment["run"]) == \
        (D("-1249.19"), lines["20241105-000101"]["id"], "test bank import")
    statement = orders.select("BankStatement")[0]
    assert (statement["openingbalance"], statement["closingbalance"], statement["entrycount"]) == \
        (D("10000.00"), D("14464.19"), 5)
    assert_cash_invariants(orders)
    assert findings(orders) == []


def test_a_statement_imported_twice_changes_nothing_the_second_time(orders):
    run_import(orders, CAMT)
    before, lines = counts(orders), entries(orders)
    again = run_import(orders, CAMT)
    assert (again.statements, again.entries, again.settled) == ([], 0, [])
    assert again.skipped == [f"{CAMT}: statement 2024-11-05-0001 of DE89370400440532013000 is imported already"]
    assert counts(orders) == before
    assert entries(orders) == lines


def test_mt940_with_the_german_structured_details_is_matched_too(orders):
    report = run_import(orders, MT940)
    assert (report.format, report.count("assigned")) == ("MT940", 1)
    line = entries(orders)["2024110600201"]
    assert (line["customeriban"], line["customername"], line["reference"]) == \
        ("DE75512108001245126199", "Muster GmbH", "Rechnung INV-2024-00005")
    assert orders.invoice("INV-2024-00005")["status"] == "Paid"
    assert_cash_invariants(orders)


def test_every_bad_entry_is_named_by_file_and_position_and_nothing_is_stored(orders, tmp_path):
    text = CAMT.read_text(encoding="utf-8")
    bad = (text.replace("<Amt Ccy=\"EUR\">500.00</Amt>", "<Amt Ccy=\"EUR\">5OO.00</Amt>")
           .replace("<Amt Ccy=\"EUR\">25.00</Amt>", "<Amt Ccy=\"EUR\">25.001</Amt>")
           .replace("<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts><Cd>BOOK</Cd></Sts>\n        <BookgDt><Dt>2024-11-05"
                    "</Dt></BookgDt>\n        <ValDt><Dt>2024-11-05</Dt></ValDt>\n        <AcctSvcrRef>20241105-000102",
                    "<CdtDbtInd>CREDIT</CdtDbtInd>\n        <Sts><Cd>BOOK</Cd></Sts>\n        <BookgDt><Dt>2024-11-05"
                    "</Dt></BookgDt>\n        <ValDt><Dt>2024-11-05</Dt></ValDt>\n        <AcctSvcrRef>20241105-000102"))
    path = tmp_path / "bad.xml"
    path.write_text(bad, encoding="utf-8")
    before = counts(orders)
    with pytest.raises(StatementImportFailed) as caught:
        run_import(orders, path)
    rendered = [error.render() for error in caught.value.errors]
    assert any(":Stmt[1]/Ntry[2]/CdtDbtInd:" in r and "CREDIT" in r for r in rendered), rendered
    assert any(":Stmt[1]/Ntry[3]/Amt:" in r and "5OO.00" in r for r in rendered), rendered
    assert any(":Stmt[1]/Ntry[5]/Amt:" in r and "25.001" in r for r in rendered), rendered
    assert all(r.startswith(f"{path}:") for r in rendered)
    assert caught.value.code == "R450"
    assert counts(orders) == before


def test_a_statement_that_does_not_add_up_is_refused(orders, tmp_path):
    path = tmp_path / "edited.xml"
    path.write_text(CAMT.read_text(encoding="utf-8").replace("14464.19", "14464.20"), encoding="utf-8")
    with pytest.raises(StatementImportFailed) as caught:
        run_import(orders, path)
    assert "closing balance is 14464.20" in caught.value.errors[0].message
    assert orders.select("PaymentEntry") == []


def test_a_doctype_is_refused_and_no_entity_is_resolved(orders, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET", encoding="utf-8")
    text = CAMT.read_text(encoding="utf-8").replace(
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE Document [<!ENTITY x SYSTEM "file://{secret}">]>'
    ).replace("Anzahlung Projekt Nord", "&x;")
    path = tmp_path / "xxe.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(StatementImportFailed) as caught:
        run_import(orders, path)
    assert "DOCTYPE" in caught.value.errors[0].message
    assert orders.select("PaymentEntry") == []


def test_review_explain_manual_assignment_and_ignore(orders):
    run_import(orders, CAMT)
    ctx = context(orders.model)
    waiting = bank_service.review(orders.engine, ctx)
    names = {str(row["externaltransactionid"]): str(row["name"]) for row, _ in waiting}
    assert set(names) == {"20241105-000103", "20241105-000104"}
    row, decision = bank_service.explain_entry(orders.engine, ctx, names["20241105-000104"])
    text = "\n".join(decision.lines())
    assert decision.outcome == "review" and decision.best.candidate.invoice == "INV-2024-00006"
    assert "below the threshold 100" in text
    assert "+40  Amount equals the open amount [Amount]" in text
    assert "+30  Payer IBAN known for the account [PayerIBAN]" in text
    assert "not a candidate: INV-2024-00003: currency CHF" in text
    done = bank_service.assign_entry(orders.engine, ctx, names["20241105-000104"], "INV-2024-00006")
    assert (done.outcome, done.invoice, done.amount) == ("assigned", "INV-2024-00006", D("1190.00"))
    assert orders.invoice("INV-2024-00006")["status"] == "Paid"
    assert entries(orders)["20241105-000104"]["matchnote"] == "manual: assigned to INV-2024-00006"
    with pytest.raises(BankAssignmentError, match="assigned already"):
        bank_service.assign_entry(orders.engine, ctx, names["20241105-000104"], "INV-2024-00007")
    bank_service.ignore_entry(orders.engine, ctx, names["20241105-000103"], reason="deposit, not ours")
    assert bank_service.review(orders.engine, ctx) == []
    with pytest.raises(PaymentEntryNotFound):
        bank_service.assign_entry(orders.engine, ctx, "PE-999999", "INV-2024-00006")
    assert_cash_invariants(orders)


COLLECTION = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.05{kind}.001.02">
  <{body}><GrpHdr><MsgId>M-{sid}</MsgId><CreDtTm>{day}T18:00:00</CreDtTm></GrpHdr>
    <{item}><Id>{sid}</Id><CreDtTm>{day}T18:00:00</CreDtTm>
      <Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
      <Ntry><Amt Ccy="EUR">892.50</Amt><CdtDbtInd>{side}</CdtDbtInd>{reversal}<Sts>BOOK</Sts>
        <BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RDDT</Cd><SubFmlyCd>{sub}</SubFmlyCd></Fmly></Domn></BkTxCd>
        {charges}
        <NtryDtls><TxDtls>
          <Refs><EndToEndId>INV-2024-00004</EndToEndId><MndtId>MNDT-10004-001</MndtId></Refs>
          <RltdPties><Dbtr><Nm>Nordlicht Logistik GmbH</Nm></Dbtr>
            <DbtrAcct><Id><IBAN>DE02120300000000202051</IBAN></Id></DbtrAcct></RltdPties>
          {rtr}
        </TxDtls></NtryDtls>
      </Ntry>
    </{item}>
  </{body}>
</Document>
"""


def collection_files(tmp_path: Path) -> tuple[Path, Path]:
    """The camt.053 crediting our direct debit of INV-2024-00004 (end-to-end
    id = invoice number), and the camt.054 returning it (MD06, 3.00 fee)."""
    credit = tmp_path / "collection.xml"
    credit.write_text(COLLECTION.format(kind=3, body="BkToCstmrStmt", item="Stmt", sid="S-1107", day="2024-11-07",
                                        side="CRDT", reversal="", ref="DD-0001", sub="ESDD", charges="", rtr=""),
                      encoding="utf-8")
    returned = tmp_path / "return.xml"
    returned.write_text(COLLECTION.format(
        kind=4, body="BkToCstmrDbtCdtNtfctn", item="Ntfctn", sid="N-1112", day="2024-11-12", side="DBIT",
        reversal="<RvslInd>true</RvslInd>", ref="RT-0001", sub="UPDD",
        charges='<Chrgs><Rcrd><Amt Ccy="EUR">3.00</Amt><CdtDbtInd>DBIT</CdtDbtInd></Rcrd></Chrgs>',
        rtr="<RtrInf><Rsn><Cd>MD06</Cd></Rsn></RtrInf>"), encoding="utf-8")
    return credit, returned


def test_a_returned_collection_reopens_the_invoice_and_books_the_return(orders, tmp_path):
    credit, returned = collection_files(tmp_path)
    first = run_import(orders, credit)
    assert [s.outcome for s in first.settled] == ["assigned"]      # end-to-end id = invoice number: 100
    assert orders.invoice("INV-2024-00004")["status"] == "Paid"
    report = run_import(orders, returned)
    assert (report.format, [s.outcome for s in report.settled]) == ("camt.054", ["returned"])
    invoice = orders.invoice("INV-2024-00004")
    assert (invoice["status"], invoice["balance"]) == ("Open", D("892.50"))
    line = entries(orders)["RT-0001"]
    assert (line["isreturn"], line["returnreason"], line["chargebackfee"], line["status"]) == \
        (True, "MD06", D("3.00"), "Assigned")
    reversal = orders.balances(orders.t("Balance").c.transactionno == "RT-0001")[0]
    assert (reversal["amount"], reversal["type"], reversal["invoice"]) == (D("892.50"), "Payment", invoice["id"])
    # the bank's 3.00 is charged to the customer (GlobalSettings.ChargeReturnFees): owed on the account,
    # booked against the Return Fee collective account (4970), the invoice keeps what was invoiced
    fee = orders.balances(orders.t("Balance").c.paymententry == line["id"], orders.t("Balance").c.type == "Dunning Fee")
    assert [(b["amount"], b["clearingreason"], b["invoice"], b["relatedinvoice"]) for b in fee] == \
        [(D("3.00"), "Return Fee", None, invoice["id"])]
    bookings = orders.select("BookingDetail", orders.t("BookingDetail").c.balance == fee[0]["id"])
    assert [(b["type"], b["accountno"], b["amount"]) for b in bookings] == [("Dunning Fee", "4970", D("3.00"))]
    assert "bank fee 3.00 charged to the customer" in line["matchnote"]
    assert_cash_invariants(orders)
    assert findings(orders) == []
    before = counts(orders)
    assert run_import(orders, returned).settled == []
    assert counts(orders) == before


def test_a_return_without_a_known_collection_waits_for_review(orders, tmp_path):
    _, returned = collection_files(tmp_path)
    report = run_import(orders, returned)
    assert [s.outcome for s in report.settled] == ["review"]
    assert "no payment received" in entries(orders)["RT-0001"]["matchnote"]
    assert orders.invoice("INV-2024-00004")["status"] == "Open"


def test_a_collection_registered_by_hand_is_found_by_the_invoice_number(orders, tmp_path):
    from .helpers import pay

    pay(orders, "INV-2024-00004", "892.50", transaction_no="SEPA-DD-1")
    _, returned = collection_files(tmp_path)
    assert [s.outcome for s in run_import(orders, returned).settled] == ["returned"]
    assert orders.invoice("INV-2024-00004")["balance"] == D("892.50")
    note = entries(orders)["RT-0001"]["matchnote"]
    assert note.startswith("return (MD06) of the payment of INV-2024-00004 on INV-2024-00004: 892.50 reopened")
    assert_cash_invariants(orders)


def test_a_dry_run_stores_nothing(orders):
    report = run_import(orders, CAMT, dry_run=True)
    assert report.count("assigned") == 2
    with orders.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(orders.t("PaymentEntry"))).scalar() == 0


def test_a_payment_moved_to_another_account_is_reversed_and_registered_again(orders):
    """Seed 000 "balance transfer replaced by payment account modification":
    the 1550.00 auto-assigned to INV-2024-00002 (Alpenblick) belonged to Muster
    GmbH's INV-2024-00005 (5712.00)."""
    from datetime import date

    run_import(orders, CAMT)
    ctx = context(orders.model)
    name = str(entries(orders)["20241105-000102"]["name"])
    done = bank_service.reassign_entry(orders.engine, ctx, name, "INV-2024-00005", when=date(2024, 11, 8),
                                       run="test move 1")
    assert (done.invoice, done.amount) == ("INV-2024-00005", D("1550.00"))
    assert (orders.invoice("INV-2024-00002")["status"], orders.invoice("INV-2024-00002")["balance"]) == \
        ("Open", D("1550.00"))
    assert orders.invoice("INV-2024-00005")["balance"] == D("4162.00")
    moved = sorted((b["amount"], b["transactionno"], b["rule"]) for b in orders.balances(
        orders.t("Balance").c.paymententry == entries(orders)["20241105-000102"]["id"]))
    assert moved == [(D("-1550.00"), "20241105-000102", "payment"), (D("-1550.00"), "20241105-000102/2", "payment"),
                     (D("1550.00"), None, "payment moved (balance transfer)")]
    assert entries(orders)["20241105-000102"]["matchnote"] == "manual: moved from INV-2024-00002 to INV-2024-00005"
    assert_cash_invariants(orders)
    assert findings(orders) == []
    again = bank_service.reassign_entry(orders.engine, ctx, name, "INV-2024-00002", when=date(2024, 11, 9),
                                        run="test move 2")
    assert again.invoice == "INV-2024-00002" and orders.invoice("INV-2024-00005")["balance"] == D("5712.00")
    assert orders.invoice("INV-2024-00002")["status"] == "Paid"
    assert_cash_invariants(orders)
    with pytest.raises(BankAssignmentError, match="assigned to INV-2024-00002 already"):
        bank_service.reassign_entry(orders.engine, ctx, name, "INV-2024-00002", run="test move 3")
    waiting = str(entries(orders)["20241105-000103"]["name"])
    with pytest.raises(BankAssignmentError, match="not money received that was assigned"):
        bank_service.reassign_entry(orders.engine, ctx, waiting, "INV-2024-00002", run="test move 4")


def test_the_shortlist_decides_like_all_candidates():
    """CandidateIndex only drops invoices that agree on nothing (score 0)."""
    import random
    from datetime import date

    from engine.cash.matching import DEFAULT_RULES, Candidate, CandidateIndex, LineFacts, MatchingRules, Rule, decide
    from engine.cash.splitting import settle_decision

    rules = MatchingRules(tuple(Rule(n, f, s) for n, f, s in DEFAULT_RULES)
                          + (Rule("name", "PayerName", 20), Rule("near amount", "Amount", 10, tolerance=D("2.00"))),
                          D("100"))
    chooser = random.Random(18)
    pool = [Candidate(f"INV-2024-{i:05d}", i, i % 7, f"Kunde {i % 7}", D(chooser.choice(["100.00", "250.50", "99.00"])),
                      "EUR", date(2024, 1, 1), "Open", frozenset({f"DE0{i % 7}"}), f"M-{i % 5}") for i in range(1, 60)]
    index = CandidateIndex(pool, rules)
    for n in range(200):
        line = LineFacts(D(chooser.choice(["100.00", "250.50", "98.00", "7.00"])), "EUR", date(2024, 2, 1),
                         remittance=chooser.choice(["", f"RE INV 2024 {chooser.randint(1, 70):05d}", "Danke"]),
                         end_to_end_id=chooser.choice([None, f"INV-2024-{chooser.randint(1, 70):05d}"]),
                         payer_iban=chooser.choice([None, "DE03", "XX"]), payer_name=chooser.choice([None, "Kunde 3"]),
                         mandate_reference=chooser.choice([None, "M-2"]))
        full, short = decide(line, pool, rules), decide(line, index.shortlist(line), rules)
        assert (full.outcome, full.invoice, full.score, [s.candidate.invoice for s in full.ranked]) == \
            (short.outcome, short.invoice, short.score, [s.candidate.invoice for s in short.ranked]), n
        # the split decision sees the shortlist plus the payer's invoices, as the import gives it
        shortlist = {c.invoice: c for c in [*index.shortlist(line), *index.payer_candidates(line)]}
        full = settle_decision(line, pool, rules)
        short = settle_decision(line, sorted(shortlist.values(), key=lambda c: c.invoice), rules)
        assert (full.outcome, full.invoice, full.parts, full.remainder) == \
            (short.outcome, short.invoice, short.parts, short.remainder), n


def test_a_pain_002_rejection_without_its_transactions_is_refused(orders, tmp_path):
    path = tmp_path / "rejected-file.xml"
    path.write_text("""<?xml version="1.0"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03"><CstmrPmtStsRpt>
<GrpHdr><MsgId>S-2</MsgId><CreDtTm>2024-10-04T08:00:00</CreDtTm></GrpHdr>
<OrgnlGrpInfAndSts><OrgnlMsgId>M</OrgnlMsgId><OrgnlMsgNmId>pain.008.001.02</OrgnlMsgNmId><GrpSts>RJCT</GrpSts>
</OrgnlGrpInfAndSts></CstmrPmtStsRpt></Document>
""", encoding="utf-8")
    with pytest.raises(StatementImportFailed) as caught:
        run_import(orders, path)
    assert caught.value.errors[0].field == "OrgnlGrpInfAndSts/GrpSts"
    assert "rejected without its transactions" in caught.value.errors[0].message
