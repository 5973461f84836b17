"""Credit balances and the credit balance strategy (seed 000: "refund creation
via credit balance strategy", "manual refund creation", "SCT order transfer
from refunds"): an overpaid statement line leaves free credit; Future
Settlement keeps it, Prepared Refund leaves it to the SEPA credit export,
Direct Refund registers and books the refund. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from engine.cash import bank_service
from engine.cash.errors import PaymentError
from engine.exports.sepa import export_sepa
from engine.storage.db import unit_of_work

from booking.helpers import D
from contexts import context

from .helpers import assert_cash_invariants, free_of
from .test_bank_statements import findings

OVERPAID = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">
  <BkToCstmrStmt><GrpHdr><MsgId>M-1</MsgId><CreDtTm>2024-11-05T20:00:00</CreDtTm></GrpHdr>
    <Stmt><Id>S-OVER</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
      <Ntry><Amt Ccy="EUR">1300.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>2024-11-05</Dt></BookgDt><AcctSvcrRef>OVER-1</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>INV-2024-00001</EndToEndId></Refs><RltdPties><Dbtr><Pty><Nm>Muster GmbH</Nm></Pty></Dbtr></RltdPties>
          <RmtInf><Ustrd>INV-2024-00001</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>
    </Stmt></BkToCstmrStmt>
</Document>
"""


@pytest.fixture
def overpaid(orders, tmp_path):
    """INV-2024-00001 (1249.19) paid with 1300.00: 50.81 free credit on account 10001."""
    path = Path(tmp_path / "overpaid.xml")
    path.write_text(OVERPAID, encoding="utf-8")
    report = bank_service.import_statement(orders.engine, context(orders.model), path, run="test import")
    assert [s.outcome for s in report.settled] == ["assigned"]  # end-to-end id = invoice number: 100 points
    return orders


def refunds(books, strategy=None, dry_run=False):
    return bank_service.refunds(books.engine, context(books.model), "DE01", strategy=strategy, when=date(2024, 11, 6),
                                run="test refunds", dry_run=dry_run)


def test_future_settlement_keeps_the_credit(overpaid):
    report = refunds(overpaid)  # the entity's strategy: not set, so Future Settlement
    assert report.strategy == "Future Settlement"
    assert [(c.target, c.amount) for c in report.credits] == [("account 10001", D("50.81"))]
    assert report.refunded == [] and [b["amount"] for b in free_of(overpaid, "10001")] == [D("-50.81")]


def test_prepared_refund_leaves_it_to_the_sepa_credit_transfer(overpaid):
    report = refunds(overpaid, "Prepared Refund")
    assert report.refunded == [] and report.total == D("50.81")
    accounts = overpaid.t("Account")
    with overpaid.engine.begin() as conn:
        conn.execute(accounts.update().where(accounts.c.accountnumber == "10001").values(
            on_bankaccount__c="DE75512108001245126199", on_bankcode__c="SOGEDEFFXXX",
            on_bankaccountowner__c="Muster GmbH"))
    with unit_of_work(overpaid.engine, dry_run=True) as conn:
        orders = export_sepa(conn, context(overpaid.model), "sepa-balances", business_entity="DE01",
                             created=datetime(2024, 11, 6, 9))
    assert [(t.iban, t.amount) for t in orders.transactions] == [("DE75512108001245126199", D("50.81"))]


def test_direct_refund_registers_and_books_the_refund(overpaid):
    dry = refunds(overpaid, "Direct Refund", dry_run=True)
    assert len(dry.refunded) == 1 and [b["amount"] for b in free_of(overpaid, "10001")] == [D("-50.81")]
    report = refunds(overpaid, "Direct Refund")
    (credit, name), = report.refunded
    assert credit.target == "account 10001"
    refund = overpaid.balances(overpaid.t("Balance").c.name == name)[0]
    assert (refund["type"], refund["amount"], refund["run"]) == ("Refund", D("50.81"), "test refunds")
    assert sum(b["amount"] for b in free_of(overpaid, "10001")) == D("0.00")
    assert overpaid.details(overpaid.t("BookingDetail").c.type == "Refund")  # booked
    assert_cash_invariants(overpaid)
    assert findings(overpaid) == []
    assert refunds(overpaid, "Direct Refund").credits == []  # nothing left


def test_an_unknown_strategy_or_entity_is_refused(orders):
    with pytest.raises(PaymentError, match="not one of"):
        refunds(orders, "Lottery")
    with pytest.raises(PaymentError, match="no business entity"):
        bank_service.refunds(orders.engine, context(orders.model), "XX99", when=date(2024, 11, 6))


def test_a_manual_refund_via_a_payment_provider_is_booked_with_it(overpaid):
    """Seed 000 "refunds via payment provider": the free credit paid back
    through a provider; the provider travels onto the Refund balance and its
    booking (where a CollectiveAccount's PaymentProvider criterion picks the
    provider's clearing account)."""
    from engine.cash.payments import PaymentDetails, register_refund

    with overpaid.engine.begin() as conn:
        refund = register_refund(conn, context(overpaid.model), D("50.81"), date(2024, 11, 6), account_number="10001",
                                 details=PaymentDetails(payment_provider="PayPal", reference="refund via PayPal"))
    assert (refund["type"], refund["amount"], refund["paymentprovider"]) == ("Refund", D("50.81"), "PayPal")
    (booking,) = overpaid.details(overpaid.t("BookingDetail").c.balance == refund["id"])
    assert (booking["type"], booking["paymentprovider"], booking["amount"]) == ("Refund", "PayPal", D("50.81"))
    assert sum(b["amount"] for b in free_of(overpaid, "10001")) == D("0.00")
    assert_cash_invariants(overpaid)
    assert findings(overpaid) == []
