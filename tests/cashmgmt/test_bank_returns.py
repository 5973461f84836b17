"""Returns with cash management on (issue 18, gaps 1 and 2): a collection
assigned from a bank statement became a CM payment settling the invoice's
entry; its return reverses the payment and the entry items (the entry is
open again), books the return through the collective accounts, charges the
bank's fee to the customer with an open item for it, and leaves the mandate
unused so the next collection is FRST. Twice imported, nothing changes.
SQLite and PostgreSQL (``cm``)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from engine.audit import audit
from engine.cash import bank_service
from engine.exports.sepa import export_sepa
from engine.exports.sepa_orders import DEBIT
from engine.storage.db import unit_of_work

from booking.test_balanced_books import bill_orders
from contexts import context

from .helpers import CMBooks, assert_entries_match

INVOICE = "INV-2024-00004"  # Nordlicht Logistik, 892.50, mandate MNDT-10004-001

COLLECTION = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.05{kind}.001.08">
  <{body}><GrpHdr><MsgId>M-{ref}</MsgId><CreDtTm>{day}T18:00:00</CreDtTm></GrpHdr>
    <{item}><Id>{ref}</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
      <Ntry><Amt Ccy="EUR">892.50</Amt><CdtDbtInd>{side}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef>
        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>RDDT</Cd><SubFmlyCd>{sub}</SubFmlyCd></Fmly></Domn></BkTxCd>
        {charges}
        <NtryDtls><TxDtls><Refs><EndToEndId>{e2e}</EndToEndId><MndtId>MNDT-10004-001</MndtId></Refs>
          <RltdPties><Dbtr><Pty><Nm>Nordlicht Logistik GmbH</Nm></Pty></Dbtr>
            <DbtrAcct><Id><IBAN>DE02120300000000202051</IBAN></Id></DbtrAcct></RltdPties>{rtr}
        </TxDtls></NtryDtls></Ntry></{item}></{body}>
</Document>
"""


@pytest.fixture
def billed(cm) -> CMBooks:
    bill_orders(cm)
    return cm


def files(tmp_path: Path, e2e: str = INVOICE) -> tuple[Path, Path]:
    collected, returned = tmp_path / "collected.xml", tmp_path / "returned.xml"
    collected.write_text(COLLECTION.format(kind=3, body="BkToCstmrStmt", item="Stmt", ref="C-1107", day="2024-11-07",
                                           side="CRDT", sub="ESDD", charges="", e2e=e2e, rtr=""), encoding="utf-8")
    returned.write_text(COLLECTION.format(
        kind=4, body="BkToCstmrDbtCdtNtfctn", item="Ntfctn", ref="R-1112", day="2024-11-12", side="DBIT", sub="UPDD",
        charges='<Chrgs><Rcrd><Amt Ccy="EUR">3.00</Amt><CdtDbtInd>DBIT</CdtDbtInd></Rcrd></Chrgs>', e2e=e2e,
        rtr="<RtrInf><Rsn><Cd>MD06</Cd></Rsn></RtrInf>"), encoding="utf-8")
    return collected, returned


def counts(books: CMBooks) -> tuple[int, ...]:
    return tuple(len(books.select(name)) for name in
                 ("PaymentEntry", "Balance", "BookingDetail", "Payment", "Entry", "EntryItem"))


def test_a_return_reverses_the_cm_payment_and_reopens_the_entry(billed, tmp_path):
    ctx = context(billed.model)
    collected, returned = files(tmp_path)
    assert [s.outcome for s in bank_service.import_statement(billed.engine, ctx, collected).settled] == ["assigned"]
    (entry,) = billed.entries(INVOICE, live=True)
    assert (entry["status"], entry["amount"]) == ("Settled", Decimal("0.00"))
    (payment,) = [p for p in billed.payments() if p["endtoendid"] == "C-1107"]
    assert (payment["amount"], payment["status"]) == (Decimal("892.50"), "Final")

    report = bank_service.import_statement(billed.engine, ctx, returned)
    assert [(s.outcome, s.invoice) for s in report.settled] == [("returned", INVOICE)]
    note = report.settled[0].note
    assert "payment C-1107 reversed by 1 entry item(s)" in note and "bank fee 3.00 charged" in note
    invoice = billed.invoice(INVOICE)
    assert (invoice["status"], invoice["balance"]) == ("Open", Decimal("892.50"))
    (entry,) = billed.entries(INVOICE, live=True)
    assert (entry["status"], entry["amount"]) == ("Open", Decimal("892.50"))       # open again, balance restored
    assert sorted(i["amount"] for i in billed.items(entry)) == [Decimal("-892.50"), Decimal("892.50")]
    (payment,) = [p for p in billed.payments() if p["endtoendid"] == "C-1107"]
    assert (payment["amount"], payment["status"]) == (Decimal("0.00"), "Reversed")
    # the return is booked through the collective accounts, the other way round of the payment
    t = billed.t("Balance")
    (back,) = billed.balances(t.c.type == "Payment", t.c.amount > 0, t.c.invoice == invoice["id"])
    assert (back["origin"], back["transactionno"]) == ("JPAY1", "C-1107")
    bookings = billed.select("BookingDetail", billed.t("BookingDetail").c.balance == back["id"])
    assert [(b["type"], b["accountno"], b["amount"]) for b in bookings] == [("Payment", "1200", Decimal("-892.50"))]
    # the fee: owed on the account (not the invoice), booked, and an open item of its own
    (fee,) = billed.balances(t.c.type == "Dunning Fee")
    assert (fee["amount"], fee["invoice"], fee["relatedinvoice"]) == (Decimal("3.00"), None, invoice["id"])
    (fee_entry,) = [e for e in billed.entries() if e["statementtype"] == "Fee"]
    assert (fee_entry["invoice"], fee_entry["account"], fee_entry["amount"], fee_entry["status"]) == \
        (None, invoice["account"], Decimal("3.00"), "Open")
    assert_entries_match(billed)
    # the books reconcile (A603: the fixture's finalized invoices have no issued documents)
    assert [(f.code, f.subject) for f in audit(billed.engine, ctx).findings if f.code != "A603"] == []

    before = counts(billed)
    assert bank_service.import_statement(billed.engine, ctx, returned).settled == []   # the same return again
    assert counts(billed) == before


def test_a_returned_first_collection_under_cash_management_is_collected_again_as_frst(billed, tmp_path):
    ctx = context(billed.model)
    for name in ("INV-2024-00004", "INV-2024-00010"):
        billed.update("Invoice", billed.invoice(name)["id"], directdebitsequencetype=None)
    # the other invoice under the mandate is due later: the first collection is INV-2024-00004's alone
    billed.update("Invoice", billed.invoice("INV-2024-00010")["id"], paymentduedate=date(2025, 6, 1))

    def sepa(created: datetime):
        with unit_of_work(billed.engine) as conn:
            return export_sepa(conn, context(billed.model), DEBIT, business_entity="DE01", created=created)

    first = sepa(datetime(2024, 11, 4, 9, 0))
    assert [(t.record_name, t.sequence_type) for t in first.transactions] == [(INVOICE, "FRST")]
    collected, returned = files(tmp_path)
    bank_service.import_statement(billed.engine, ctx, collected)
    bank_service.import_statement(billed.engine, ctx, returned)
    again = sepa(datetime(2024, 11, 13, 9, 0))
    # collected again by the same setting without --force, and as FRST: the mandate was never used
    assert [(t.record_name, t.sequence_type) for t in again.transactions] == [(INVOICE, "FRST")]
    assert_entries_match(billed)


def test_a_return_of_a_collection_registered_by_hand_reverses_its_one_cm_payment(billed, tmp_path):
    """A collection registered by hand: the bank's data name the invoice only;
    its one CM payment of the returned amount is reversed."""
    from .helpers import pay_cm

    _, payment = pay_cm(billed, INVOICE, "892.50")
    _, returned = files(tmp_path)
    report = bank_service.import_statement(billed.engine, context(billed.model), returned)
    assert [(s.outcome, s.invoice) for s in report.settled] == [("returned", INVOICE)]
    assert f"payment {payment['endtoendid']} reversed by 1 entry item(s)" in report.settled[0].note
    assert billed.invoice(INVOICE)["status"] == "Open"
    (entry,) = billed.entries(INVOICE, live=True)
    assert (entry["status"], entry["amount"]) == ("Open", Decimal("892.50"))
    (reversed_,) = [p for p in billed.payments() if p["id"] == payment["id"]]
    assert (reversed_["amount"], reversed_["status"]) == (Decimal("0.00"), "Reversed")
    assert_entries_match(billed)


def test_a_return_of_a_collection_registered_by_hand_in_parts_waits_for_review(billed, tmp_path):
    """Two payments registered by hand, neither of the returned amount: which
    one came back is not known, so nothing is reversed."""
    from .helpers import pay_cm

    pay_cm(billed, INVOICE, "500.00")
    pay_cm(billed, INVOICE, "392.50", when=date(2024, 11, 2))
    _, returned = files(tmp_path)
    report = bank_service.import_statement(billed.engine, context(billed.model), returned)
    assert [s.outcome for s in report.settled] == ["review"]
    assert "registered by hand" in report.settled[0].note and "no single cash-management payment" in report.settled[0].note
    assert billed.invoice(INVOICE)["status"] == "Paid"
    assert all(p["status"] == "Final" for p in billed.payments())
    assert_entries_match(billed)


def test_a_payment_moved_to_another_invoice_under_cash_management_moves_its_cm_payment(billed, tmp_path):
    """``metabill bank reassign`` with the integration on: the CM payment of
    the wrong invoice is reversed with its entry items (the entry is open
    again), and the registration on the right invoice has a CM payment of its
    own that settles that invoice's entry; moved back, all is as before."""
    ctx = context(billed.model)
    collected, _ = files(tmp_path)
    bank_service.import_statement(billed.engine, ctx, collected)
    (line,) = [e for e in billed.select("PaymentEntry") if e["externaltransactionid"] == "C-1107"]
    target = "INV-2024-00005"
    open_before = billed.invoice(target)["balance"]

    moved = bank_service.reassign_entry(billed.engine, ctx, str(line["name"]), target, when=date(2024, 11, 8),
                                        run="test move 1")
    assert (moved.invoice, moved.amount) == (target, Decimal("892.50"))
    assert (billed.invoice(INVOICE)["status"], billed.invoice(INVOICE)["balance"]) == ("Open", Decimal("892.50"))
    (entry,) = billed.entries(INVOICE, live=True)
    assert (entry["status"], entry["amount"]) == ("Open", Decimal("892.50"))
    payments = {p["endtoendid"]: p for p in billed.payments()}
    assert (payments["C-1107"]["amount"], payments["C-1107"]["status"]) == (Decimal("0.00"), "Reversed")
    assert (payments["C-1107/2"]["amount"], payments["C-1107/2"]["status"]) == (Decimal("892.50"), "Final")
    assert billed.invoice(target)["balance"] == open_before - Decimal("892.50")
    assert sum(e["amount"] for e in billed.entries(target, live=True)) == open_before - Decimal("892.50")
    t = billed.t("Balance")
    (back,) = billed.balances(t.c.rule == "payment moved (balance transfer)")
    assert (back["amount"], back["origin"], back["transactionno"], back["invoice"]) == \
        (Decimal("892.50"), "JPAY1", "C-1107", billed.invoice(INVOICE)["id"])
    assert_entries_match(billed)
    assert [(f.code, f.subject) for f in audit(billed.engine, ctx).findings if f.code != "A603"] == []

    bank_service.reassign_entry(billed.engine, ctx, str(line["name"]), INVOICE, when=date(2024, 11, 9),
                                run="test move 2")
    assert billed.invoice(INVOICE)["status"] == "Paid" and billed.invoice(target)["balance"] == open_before
    payments = {p["endtoendid"]: p for p in billed.payments()}
    assert [payments[e2e]["status"] for e2e in ("C-1107", "C-1107/2", "C-1107/3")] == ["Reversed", "Reversed", "Final"]
    assert_entries_match(billed)
    assert [(f.code, f.subject) for f in audit(billed.engine, ctx).findings if f.code != "A603"] == []
