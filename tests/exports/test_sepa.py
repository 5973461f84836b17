"""SEPA exports on the demo data: the three files (golden, XSD-valid,
deterministic), export history with the one-time lock and forced exports,
invalid SEPA data written to the invoice instead of breaking the file, locked
balances with their reverse balances, atomic files, safe XML parsing, CLI.

This module runs the sample org with both SEPA settings switched to
``SepaMessageVersion: Legacy`` (pain.008.001.02 / pain.001.001.03, for banks
that still need them): its golden files are the legacy ones. The default
(the current versions) is tested by ``test_sepa_v08.py``."""

from __future__ import annotations

import os
import threading
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from lxml import etree

from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.booking.finalize import finalize_invoices
from engine.cli.main import cli
from engine.exports import sepa_xml
from engine.exports.sepa import (
    BALANCES,
    CREDIT,
    DEBIT,
    SepaExportError,
    creditor_for,
    export_sepa,
    run_export,
)
from engine.project import load_project
from engine.exports.sepa_xml import PAIN_001, PAIN_008, SepaXmlError, amount_text, parse_xml, read_message, sepa_text
from engine.storage.bulk import RowWriter
from engine.storage.db import unit_of_work

from booking.helpers import org_variant
from config.orgcopy import REPO_ROOT, Replace, copy_org

from .conftest import Demo
from .helpers import check_golden
from contexts import context
from databases import load_model

CREATED = datetime(2024, 10, 1, 12, 0, 0)
CREDIT_CREATED = datetime(2025, 1, 15, 9, 0, 0)
NS = {"d": sepa_xml.MESSAGES[PAIN_008], "c": sepa_xml.MESSAGES[PAIN_001]}
DEBITS = ("INV-2024-00008", "INV-2024-00010")  # Nordlicht Logistik, Direct Debit, mandate MNDT-10004-001


@pytest.fixture(scope="module")
def sample_model(tmp_path_factory):
    """The sample org whose two active SEPA settings ask for the legacy
    versions (overrides the conftest's fixture for this module)."""
    org = org_variant(tmp_path_factory.mktemp("legacy") / "org",
                      Replace("custom_settings/ExportSetting.yaml",
                              "  - Name: SEPA Direct Debit\n    Active: true\n",
                              "  - Name: SEPA Direct Debit\n    Active: true\n    SepaMessageVersion: Legacy\n"),
                      Replace("custom_settings/ExportSetting.yaml", "    Format: SEPA Credit\n",
                              "    Format: SEPA Credit\n    SepaMessageVersion: Legacy\n"))
    return load_model(org)


def sepa(demo: Demo, kind: str = DEBIT, *, apply: bool = True, **options):
    """export_sepa in a unit of work; ``apply=False`` is the dry run (the same
    code, rolled back)."""
    options.setdefault("created", CREDIT_CREATED if kind != DEBIT else CREATED)
    with unit_of_work(demo.engine, dry_run=not apply) as conn:
        return export_sepa(conn, context(demo.model), kind, business_entity="DE01", **options)


def invoices(demo: Demo) -> dict[str, dict]:
    return {r["name"]: r for r in demo.rows("Invoice")}


def set_invoice(demo: Demo, name: str, **values) -> None:
    table = demo.table("Invoice")
    with demo.engine.begin() as conn:
        assert conn.execute(sa.update(table).where(table.c.name == name).values(**values)).rowcount == 1


def history(demo: Demo) -> list[dict]:
    names = {r["id"]: r["name"] for r in demo.rows("Invoice")}
    return [{**h, "invoice_name": names[h["invoice"]]} for h in demo.rows("InvoiceExportHistory")]


def bill_credit(demo: Demo) -> str:
    """The January 2025 order run of scripts/demo.sh step 8: ORD-2025-001
    (Nordlicht, -150.00 net, not billed by the 2024 runs) becomes the credit
    CR-2025-00001 of -178.50."""
    when = date(2025, 1, 15)
    request = RunRequest(filters=("Order Invoice",), period_start=date(2025, 1, 1), period_end=date(2025, 1, 31),
                         invoice_date=when, today=when)
    report = run_invoices(demo.engine, context(demo.model), request)
    with demo.engine.connect() as conn:
        ids = draft_ids(conn, context(demo.model), run_id=report.run_id)
    finalized = finalize_invoices(demo.engine, context(demo.model), ids, today=when)
    assert not finalized.failures and len(ids) == 1
    credit = invoices(demo)["CR-2025-00001"]
    assert (credit["class"], credit["status"], credit["balance"]) == ("Credit", "Open", Decimal("-178.50"))
    return credit["name"]


def free_balances(demo: Demo, *specs: tuple) -> list[int]:
    """Insert free balances: (account number, type, amount, extra fields)."""
    accounts = {r["accountnumber"]: r["id"] for r in demo.rows("Account")}
    records = [{"account": accounts[number], "type": kind, "amount": Decimal(amount), "date": date(2024, 10, 15),
                "currencyisocode": "EUR", **extra} for number, kind, amount, extra in specs]
    with demo.engine.begin() as conn:
        RowWriter(conn, demo.model.require("Balance")).insert(records)
    return [r["id"] for r in records]


def texts(data: bytes, path: str) -> list[str]:
    return [e.text for e in parse_xml(data).getroot().xpath(path, namespaces=NS)]


# ---------------------------------------------------------------------------
# Files


def test_sepa_debit_golden(demo):
    report = sepa(demo)
    check_golden("sepa-debit.xml", report.data)
    assert read_message(report.data)[0] == PAIN_008
    assert [t.record_name for t in report.transactions] == list(DEBITS)
    assert report.total == Decimal("15172.50") and report.rejected == [] and report.not_due == []
    assert [t.sequence_type for t in report.transactions] == ["RCUR", "RCUR"]  # as recorded on the account
    # collected on the due date (2024-10-07); the message id derives from the time and the orders
    assert texts(report.data, "//d:ReqdColltnDt") == ["2024-10-07"]
    assert texts(report.data, "//d:GrpHdr/d:MsgId") == [report.message_id] and len(report.message_id) <= 35
    assert texts(report.data, "//d:InstdAmt") == ["892.50", "14280.00"]
    assert texts(report.data, "//d:GrpHdr/d:CtrlSum") == ["15172.50"]
    assert texts(report.data, "//d:CdtrSchmeId//d:Othr/d:Id") == ["DE98ZZZ09999999999"]
    assert texts(report.data, "//d:RmtInf/d:Ustrd") == ["Rechnung INV-2024-00008", "Rechnung INV-2024-00010"]
    assert report.data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')

    rows = history(demo)
    assert [(h["invoice_name"], h["amount"], h["exportsetting"], h["exportformat"], h["locked"], h["forcedexport"],
             h["nextpaymentduedate"]) for h in rows] == [
        (name, amount, "SEPA Direct Debit", PAIN_008, True, False, date(2024, 10, 7))
        for name, amount in zip(DEBITS, (Decimal("892.50"), Decimal("14280.00")))
    ]
    assert {invoices(demo)[name]["timesexported"] for name in DEBITS} == {1}
    assert invoices(demo)["INV-2024-00005"]["timesexported"] == 0


def test_sepa_content_is_deterministic(demo_sqlite):
    first = sepa(demo_sqlite, apply=False).data
    assert sepa(demo_sqlite, apply=False).data == first
    later = sepa(demo_sqlite, apply=False, created=datetime(2024, 10, 2, 8, 0, 0)).data
    assert later != first and texts(later, "//d:ReqdColltnDt") == ["2024-10-07"]
    assert demo_sqlite.rows("InvoiceExportHistory") == []  # dry runs record nothing


def test_sepa_credit_golden(demo):
    credit = bill_credit(demo)
    report = sepa(demo, CREDIT)
    check_golden("sepa-credit.xml", report.data)
    assert read_message(report.data)[0] == PAIN_001
    assert [(t.record_name, t.amount, t.when, t.iban) for t in report.transactions] == [
        (credit, Decimal("178.50"), date(2025, 1, 15), "DE02120300000000202051")
    ]
    assert texts(report.data, "//c:PmtInf/c:Dbtr/c:Nm") == ["Muster GmbH"]
    assert texts(report.data, "//c:DbtrAcct/c:Id/c:IBAN") == ["DE89370400440532013000"]
    assert texts(report.data, "//c:Cdtr/c:Nm") == ["Nordlicht Logistik GmbH"]
    assert texts(report.data, "//c:RmtInf/c:Ustrd") == [f"Gutschrift {credit}"]
    [row] = history(demo)
    assert (row["invoice_name"], row["exportsetting"], row["exportformat"], row["amount"]) == (
        credit, "SEPA Credit", PAIN_001, Decimal("178.50"))
    # the credit's balance is unchanged: the payout is registered when the bank confirms it
    assert invoices(demo)[credit]["balance"] == Decimal("-178.50")
    again = sepa(demo, CREDIT)
    assert again.data is None and again.already_exported == [credit]


def set_bank_data(demo: Demo, account_number: str, **values) -> None:
    table = demo.table("Account")
    with demo.engine.begin() as conn:
        conn.execute(sa.update(table).where(table.c.accountnumber == account_number).values(**values))


def test_sepa_balances_golden(demo):
    # Alpenblick pays by bank transfer; it gave an IBAN for pay-outs.
    set_bank_data(demo, "10002", on_bankaccount__c="AT61 1904 3002 3457 3201", on_bankcode__c="BKAUATWWXXX")
    payment, prepayment, muster, locked, jpay, positive, refund = free_balances(
        demo,
        ("10002", "Payment", "-500.00", {}),
        ("10004", "Prepayment", "-80.10", {}),
        ("10001", "Payment", "-20.00", {}),  # Muster GmbH has no IBAN: left out, reported
        ("10002", "Payment", "-30.00", {"lockedreason": "Refund via payment provider"}),
        ("10002", "Payment", "-40.00", {"origin": "JPAY1"}),
        ("10002", "Payment", "50.00", {}),
        ("10002", "Refund", "-60.00", {}),
    )
    report = sepa(demo, BALANCES)
    check_golden("sepa-balances.xml", report.data)
    assert read_message(report.data)[0] == PAIN_001
    assert [(t.record_id, t.amount, t.holder, t.iban, t.bic) for t in report.transactions] == [
        (payment, Decimal("500.00"), "Alpenblick Hotel GmbH", "AT611904300234573201", "BKAUATWWXXX"),
        (prepayment, Decimal("80.10"), "Nordlicht Logistik GmbH", "DE02120300000000202051", "BYLADEM1001"),
    ]
    [rejected] = report.rejected
    assert rejected.record_id == muster and "IBAN" in rejected.reason and "empty" in rejected.reason
    assert report.reverse_balances == 2

    balance = demo.table("Balance")
    rows = {r["id"]: r for r in demo.rows("Balance")}
    assert rows[payment]["lockedreason"] == rows[prepayment]["lockedreason"] == "Exported"
    assert rows[muster]["lockedreason"] is None
    reverse = demo.rows("Balance", balance.c.type == "Payout")
    assert [(r["account"], r["amount"], r["lockedreason"], r["reference"], r["invoice"], r["date"]) for r in reverse] == [
        (rows[payment]["account"], Decimal("500.00"), "Exported", rows[payment]["name"], None, date(2025, 1, 15)),
        (rows[prepayment]["account"], Decimal("80.10"), "Exported", rows[prepayment]["name"], None, date(2025, 1, 15)),
    ]
    # the account total reflects the pay-out: balance and reverse balance net to zero
    assert rows[payment]["amount"] + reverse[0]["amount"] == 0
    # never exported twice, and --force does not apply
    again = sepa(demo, BALANCES)
    assert again.transactions == [] and again.data is None and [r.record_id for r in again.rejected] == [muster]
    with pytest.raises(SepaExportError, match="never exported again"):
        sepa(demo, BALANCES, force=True)
    assert {locked, jpay, positive, refund}.isdisjoint(t.record_id for t in report.transactions)


def test_sepa_balances_pays_no_more_than_the_free_credit(demo):
    """Free debits of an account (a refund already paid, a fee the customer
    owes) take part of its free credit: sepa-balances pays only what is left,
    balance by balance in order, and reports a balance it cannot pay at all.
    Before, each credit balance was paid in full: the lifecycle machine saw
    1224.07 paid out of a free credit of 1224.06 after a refund of 0.01."""
    from engine.audit.service import audit
    from engine.cash.payments import register_account_payment, register_refund

    set_bank_data(demo, "10002", on_bankaccount__c="AT61 1904 3002 3457 3201", on_bankcode__c="BKAUATWWXXX")
    ctx = context(demo.model)
    with demo.engine.begin() as conn:
        first = register_account_payment(conn, ctx, "10002", Decimal("1224.07"), date(2024, 12, 20))
        second = register_account_payment(conn, ctx, "10002", Decimal("30.00"), date(2024, 12, 21))
        register_refund(conn, ctx, Decimal("0.01"), date(2024, 12, 22), account_number="10002")
    [fee] = free_balances(demo, ("10002", "Dunning Fee", "40.00", {}))  # owed on the account
    report = sepa(demo, BALANCES)
    assert [(t.record_id, t.amount) for t in report.transactions] == [(first.balance_id, Decimal("1214.06"))]
    assert report.netted == [demo.rows("Balance", demo.table("Balance").c.id == second.balance_id)[0]["name"]]
    balance = demo.table("Balance")
    free = demo.rows("Balance", balance.c.account == demo.rows("Balance", balance.c.id == fee)[0]["account"],
                     balance.c.invoice.is_(None))
    assert sum((b["amount"] for b in free), Decimal("0.00")) == 0  # the account's free credit is paid, no more
    [payout] = demo.rows("Balance", balance.c.type == "Payout")
    assert payout["amount"] == Decimal("1214.06") and payout["reference"] == report.transactions[0].record_name
    # The unpaid balance stays unlocked; nothing is left to pay on the next export.
    assert demo.rows("Balance", balance.c.id == second.balance_id)[0]["lockedreason"] is None
    assert sepa(demo, BALANCES).transactions == []
    findings = [f for f in audit(demo.engine, ctx).findings if f.code == "A512"]
    assert findings == [], [str(f) for f in findings]


@pytest.mark.postgres
def test_a_refund_in_flight_is_seen_by_the_balance_export(pg_schema_url, sample_model, make_demo):
    """PostgreSQL: a refund holds its account locked until it commits; the
    balance export locks the accounts it pays before it reads their free
    credit, so it waits and then pays what the refund left (SQLite runs one
    writer at a time). Without the lock it paid the credit in full."""
    import time

    from engine.cash.payments import register_account_payment, register_refund

    demo = make_demo(pg_schema_url, sample_model)
    set_bank_data(demo, "10002", on_bankaccount__c="AT61 1904 3002 3457 3201", on_bankcode__c="BKAUATWWXXX")
    ctx = context(demo.model)
    with demo.engine.begin() as conn:
        register_account_payment(conn, ctx, "10002", Decimal("100.00"), date(2024, 12, 20))
    holder = demo.engine.connect()
    refund = holder.begin()
    register_refund(holder, ctx, Decimal("0.01"), date(2024, 12, 22), account_number="10002")
    found: dict = {}

    def export() -> None:
        try:
            found["report"] = sepa(demo, BALANCES)
        except Exception as error:  # noqa: BLE001 - reported to the test below
            found["error"] = error

    thread = threading.Thread(target=export)
    thread.start()
    try:
        probe = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'")
        with demo.engine.connect() as watcher:  # until the export waits for a lock, or is done without waiting
            for _ in range(600):
                if not thread.is_alive() or watcher.execute(probe).scalar():
                    break
                time.sleep(0.1)
        refund.commit()
    finally:
        holder.close()
        thread.join(60)
    assert "error" not in found, found
    assert [t.amount for t in found["report"].transactions] == [Decimal("99.99")]


def test_pay_out_is_capped_by_what_is_left():
    from engine.exports.sepa_selection import pay_out

    assert pay_out(Decimal("10.00"), Decimal("25.00")) == Decimal("10.00")
    assert pay_out(Decimal("10.00"), Decimal("4.99")) == Decimal("4.99")
    assert pay_out(Decimal("10.00"), Decimal("0.00")) == Decimal("0.00")
    assert pay_out(Decimal("10.00"), Decimal("-3.00")) == Decimal("0.00")


# ---------------------------------------------------------------------------
# Export history: one-time lock, forced export, due dates


def test_repeated_and_forced_export(demo):
    first = sepa(demo)
    again = sepa(demo)
    assert again.transactions == [] and again.data is None and again.already_exported == list(DEBITS)
    assert len(history(demo)) == 2

    forced = sepa(demo, force=True, created=datetime(2024, 10, 2, 9, 0, 0))
    assert [t.record_name for t in forced.transactions] == list(DEBITS) and forced.forced == list(DEBITS)
    rows = history(demo)
    assert [(h["invoice_name"], h["forcedexport"]) for h in rows] == [
        (DEBITS[0], False), (DEBITS[1], False), (DEBITS[0], True), (DEBITS[1], True)]
    assert {invoices(demo)[name]["timesexported"] for name in DEBITS} == {2}
    assert forced.message_id != first.message_id

    # The lock is per effective due date: a new due date is a new collection.
    set_invoice(demo, DEBITS[0], paymentduedate=date(2024, 10, 9))
    moved = sepa(demo, created=datetime(2024, 10, 3, 9, 0, 0))
    assert [t.record_name for t in moved.transactions] == [DEBITS[0]] and moved.already_exported == [DEBITS[1]]
    assert not moved.transactions[0].forced
    assert history(demo)[-1]["nextpaymentduedate"] == date(2024, 10, 9)
    assert invoices(demo)[DEBITS[0]]["timesexported"] == 3


def test_due_window_and_collection_date(demo_sqlite):
    demo = demo_sqlite
    # INV-2024-00008 and -00010 are due 2024-10-07: too early for an export on 2024-09-01.
    early = sepa(demo, apply=False, created=datetime(2024, 9, 1, 9, 0, 0))
    assert early.transactions == [] and early.not_due == list(DEBITS)
    # Seen from a collection date, they are due within 14 days.
    report = sepa(demo, apply=False, created=datetime(2024, 9, 1, 9, 0, 0), when=date(2024, 9, 30))
    assert {t.when for t in report.transactions} == {date(2024, 9, 30)}
    assert texts(report.data, "//d:ReqdColltnDt") == ["2024-09-30"]
    # A due date in the past is collected as early as the lead time allows: one TARGET2 business
    # day after the export date (GlobalSettings.PaymentLeadDays, default 1; issue 18).
    late = sepa(demo, apply=False, created=datetime(2024, 11, 20, 9, 0, 0))
    assert {t.when for t in late.transactions} == {date(2024, 11, 21)}
    with pytest.raises(SepaExportError, match="before the export date"):
        sepa(demo, apply=False, when=date(2024, 9, 30))


def test_sequence_type_follows_mandate_use(demo_sqlite):
    demo = demo_sqlite
    for name in DEBITS:
        set_invoice(demo, name, directdebitsequencetype=None)
    set_invoice(demo, DEBITS[1], paymentduedate=date(2024, 12, 1))
    first = sepa(demo)
    assert [(t.record_name, t.sequence_type) for t in first.transactions] == [(DEBITS[0], "FRST")]
    assert first.not_due == [DEBITS[1]]
    set_invoice(demo, DEBITS[1], paymentduedate=date(2024, 10, 7))
    second = sepa(demo)
    assert [(t.record_name, t.sequence_type) for t in second.transactions] == [(DEBITS[1], "RCUR")]
    # a recorded FRST also becomes RCUR once the mandate was collected; OOFF and FNAL stay
    set_invoice(demo, DEBITS[1], directdebitsequencetype="FRST")
    assert [t.sequence_type for t in sepa(demo, apply=False, force=True).transactions] == ["RCUR", "RCUR"]
    set_invoice(demo, DEBITS[1], directdebitsequencetype="FNAL")
    report = sepa(demo, apply=False, force=True)
    assert [t.sequence_type for t in report.transactions] == ["RCUR", "FNAL"]
    assert texts(report.data, "//d:SeqTp") == ["RCUR", "FNAL"]  # one PmtInf per sequence type


# ---------------------------------------------------------------------------
# Invalid data: SepaPaymentError instead of a broken file


def test_bad_iban_bic_and_mandate_are_left_out(demo):
    set_invoice(demo, DEBITS[0], bankaccount="DE02120300000000202052")  # check digits wrong
    set_invoice(demo, "INV-2024-00005", paymentmethod="SEPA", bankaccount="DE89370400440532013000",
                bankcode="NOTABIC", bankaccountowner="Muster GmbH", directdebitmandatereference="MNDT#1",
                directdebitmandategranted=None)
    set_invoice(demo, "INV-2024-00007", paymentmethod="SEPA")  # CHF, no bank data at all
    report = sepa(demo)
    assert [t.record_name for t in report.transactions] == [DEBITS[1]]
    assert read_message(report.data)[0] == PAIN_008  # the file stays valid
    reasons = {r.name: r.reason for r in report.rejected}
    assert set(reasons) == {DEBITS[0], "INV-2024-00005", "INV-2024-00007"}
    assert "IBAN (BankAccount) 'DE02120300000000202052' is not a valid IBAN" in reasons[DEBITS[0]]
    muster = reasons["INV-2024-00005"]
    assert "BIC (BankCode) 'NOTABIC' is not a valid BIC" in muster
    assert "mandate reference 'MNDT#1'" in muster and "DirectDebitMandateGranted) is empty" in muster
    assert "currency CHF" in reasons["INV-2024-00007"] and "BankAccountOwner" in reasons["INV-2024-00007"]

    stored = invoices(demo)
    for name, reason in reasons.items():
        assert stored[name]["sepapaymenterror"] == reason and stored[name]["timesexported"] == 0
    assert stored[DEBITS[1]]["sepapaymenterror"] is None
    assert [h["invoice_name"] for h in history(demo)] == [DEBITS[1]]

    # Fixed data: exported, and the error is cleared.
    set_invoice(demo, DEBITS[0], bankaccount="DE02120300000000202051")
    fixed = sepa(demo)
    assert [t.record_name for t in fixed.transactions] == [DEBITS[0]]
    assert invoices(demo)[DEBITS[0]]["sepapaymenterror"] is None


def test_mandate_signed_after_collection_and_all_invalid(demo_sqlite):
    demo = demo_sqlite
    set_invoice(demo, DEBITS[0], directdebitmandategranted=date(2024, 12, 1))
    set_invoice(demo, DEBITS[1], bankaccountowner=None)
    report = sepa(demo)
    assert report.transactions == [] and report.data is None and report.message_id is None
    assert "after the collection date 2024-10-07" in invoices(demo)[DEBITS[0]]["sepapaymenterror"]
    assert "account holder (BankAccountOwner) is empty" in invoices(demo)[DEBITS[1]]["sepapaymenterror"]


def test_bad_creditor_data_refuses_the_export(demo_sqlite, tmp_path):
    org = copy_org(tmp_path / "org")
    path = org / "custom_settings" / "BusinessEntity.yaml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("DE98ZZZ09999999999", "DE99ZZZ09999999999").replace("COBADEFFXXX", "COBADEFF1"),
                    encoding="utf-8")
    result = load_project(org)
    # validate-config reports both first (issue 15); the export still refuses them should it run anyway
    assert {d.code for d in result.errors} == {"E167", "E168"}
    model = result.model
    with pytest.raises(SepaExportError) as error:
        creditor_for(context(model), "DE01", DEBIT)
    assert "SEPACreditorId 'DE99ZZZ09999999999' is not a valid SEPA creditor identifier" in str(error.value)
    assert "BIC 'COBADEFF1' is not a valid BIC" in str(error.value)
    with pytest.raises(SepaExportError, match="no business entity named 'XX'"):
        creditor_for(context(model), "XX", DEBIT)
    with pytest.raises(SepaExportError):
        with demo_sqlite.engine.begin() as conn:
            export_sepa(conn, context(model), DEBIT, business_entity="DE01", created=CREATED)
    assert demo_sqlite.rows("InvoiceExportHistory") == []
    assert {r["sepapaymenterror"] for r in demo_sqlite.rows("Invoice")} == {None}


# ---------------------------------------------------------------------------
# File handling, safe XML


def test_run_export_writes_atomically(demo_sqlite, tmp_path, monkeypatch):
    demo = demo_sqlite
    out = tmp_path / "out" / "debit.xml"
    dry = run_export(demo.engine, context(demo.model), DEBIT, out, dry_run=True, business_entity="DE01", created=CREATED)
    assert len(dry.transactions) == 2 and not out.exists() and demo.rows("InvoiceExportHistory") == []

    # A message that fails XSD validation: no file, no history, no marks.
    real = sepa_xml.validate

    def broken(tree, message):
        tree.find(".//{*}InstdAmt").text = "-1.00"  # below the XSD minimum
        real(tree, message)

    monkeypatch.setattr("engine.exports.sepa_message.validate", broken)
    with pytest.raises(SepaXmlError, match="not valid against the ISO 20022 XSD"):
        run_export(demo.engine, context(demo.model), DEBIT, out, business_entity="DE01", created=CREATED)
    assert not out.exists() and not out.with_name("debit.xml.part").exists()
    assert demo.rows("InvoiceExportHistory") == [] and {r["timesexported"] for r in demo.rows("Invoice")} == {0}
    monkeypatch.undo()

    report = run_export(demo.engine, context(demo.model), DEBIT, out, business_entity="DE01", created=CREATED)
    assert out.read_bytes() == report.data and not out.with_name("debit.xml.part").exists()
    assert {h["filename"] for h in demo.rows("InvoiceExportHistory")} == {"debit.xml"}
    with pytest.raises(SepaExportError, match="never overwritten"):
        run_export(demo.engine, context(demo.model), DEBIT, out, business_entity="DE01", created=CREATED, force=True)


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Document [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.008.001.02">&secret;</Document>
"""


def test_external_entities_are_refused(tmp_path):
    with pytest.raises(SepaXmlError, match="DOCTYPE"):
        parse_xml(XXE)
    with pytest.raises(SepaXmlError, match="DOCTYPE"):
        read_message(XXE)
    xsd = (Path(sepa_xml.__file__).parent / "xsd" / "pain.001.001.03.xsd").read_bytes()
    evil = xsd.replace(b"?>", b'?>\n<!DOCTYPE xs:schema [<!ENTITY e SYSTEM "http://example.invalid/x">]>', 1)
    with pytest.raises(SepaXmlError, match="DOCTYPE"):
        sepa_xml.load_schema_bytes(evil)
    laughs = b'<!DOCTYPE a [<!ENTITY l "lol"><!ENTITY l2 "&l;&l;&l;&l;">]><a>&l2;</a>'
    with pytest.raises(SepaXmlError):
        parse_xml(laughs)
    # The parser itself resolves nothing, even where a DTD would be allowed.
    parsed = etree.fromstring(XXE, sepa_xml.safe_parser())
    assert b"root:" not in etree.tostring(parsed)
    with pytest.raises(SepaXmlError, match="unknown namespace"):
        read_message(b"<a/>")


def test_schema_references_are_refused():
    xsd = (Path(sepa_xml.__file__).parent / "xsd" / "pain.008.001.02.xsd").read_bytes()
    importing = xsd.replace(b'<xs:element name="Document"',
                            b'<xs:import namespace="urn:x" schemaLocation="http://example.invalid/x.xsd"/>\n'
                            b'    <xs:element name="Document"', 1)
    with pytest.raises(SepaXmlError, match="refers to other schema documents"):
        sepa_xml.load_schema_bytes(importing)
    assert isinstance(sepa_xml.load_schema_bytes(xsd), etree.XMLSchema)


def test_concurrent_exports_do_not_export_twice(demo):
    """A second export waits for the first one's transaction (row locks on
    PostgreSQL, the write lock on SQLite) and then sees its history."""
    holder = demo.engine.connect()
    first_transaction = holder.begin()
    first = export_sepa(holder, context(demo.model), DEBIT, business_entity="DE01", created=CREATED)
    assert len(first.transactions) == 2
    found: dict = {}

    def second() -> None:
        try:
            with demo.engine.begin() as conn:
                found["report"] = export_sepa(conn, context(demo.model), DEBIT, business_entity="DE01", created=CREATED)
        except Exception as error:  # noqa: BLE001 - reported to the test below
            found["error"] = error

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), found  # blocked by the first export
    first_transaction.commit()
    holder.close()
    thread.join(60)
    assert "error" not in found, found
    assert found["report"].transactions == [] and found["report"].already_exported == list(DEBITS)
    assert len(history(demo)) == 2


def test_vendored_schemas_are_package_data():
    for message in (PAIN_008, PAIN_001):
        assert isinstance(sepa_xml.schema(message), etree.XMLSchema)
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"engine.exports" = ["xsd/*.xsd", "xsd/*.md"]' in pyproject
    readme = (Path(sepa_xml.__file__).parent / "xsd" / "README.md").read_text(encoding="utf-8")
    assert "ISO 20022" in readme


def test_text_and_amount_rules():
    assert sepa_text("Förderanlage Halle 3 & Söhne_GmbH", 70) == "Foerderanlage Halle 3 + Soehne-GmbH"
    assert sepa_text("Straße  «Zürich»\n", 140) == "Strasse Zuerich"
    assert sepa_text("x" * 80, 70) == "x" * 70
    assert amount_text(Decimal("1")) == "1.00" and amount_text(Decimal("892.5")) == "892.50"
    with pytest.raises(ValueError):
        amount_text(Decimal("0.00"))


# ---------------------------------------------------------------------------
# CLI


def invoke(*args: str):
    runner = CliRunner(env={"METABILL_DB_URL": None, "COLUMNS": "250"})
    return runner.invoke(cli, ["export", *args], catch_exceptions=False)


def test_cli_sepa_commands(demo, tmp_path):
    org = ("--org", str(REPO_ROOT), "--db", demo.url)
    out = tmp_path / "sepa-debit.xml"
    result = invoke("sepa-debit", "--business-entity", "DE01", "--out", str(out), "--created",
                    "2024-10-01T12:00:00", *org)
    assert result.exit_code == 0, result.output
    assert "Wrote 2 order(s)" in result.stdout and "15172.50" in result.stdout
    # the command reads the sample org itself, whose settings write the default (current) version
    assert out.read_bytes() == (Path(__file__).parent / "golden" / "sepa-debit-v08.xml").read_bytes()

    result = invoke("sepa-debit", "--business-entity", "DE01", "--out", str(tmp_path / "again.xml"), "--created",
                    "2024-10-01T12:00:00", *org)
    assert result.exit_code == 0 and "Nothing to export" in result.stdout and not (tmp_path / "again.xml").exists()
    assert "already exported (skipped)" in result.stdout

    set_invoice(demo, DEBITS[0], bankaccount="DE00INVALID")
    result = invoke("sepa-debit", "--business-entity", "DE01", "--dry-run", "--force", "--created",
                    "2024-10-01T12:00:00", *org)
    assert result.exit_code == 0 and "dry run" in result.stdout and "is not a valid IBAN" in result.stdout
    assert invoices(demo)[DEBITS[0]]["sepapaymenterror"] is None  # a dry run writes nothing

    for args, message in (
        (("sepa-debit", "--business-entity", "NOPE", "--out", str(tmp_path / "x.xml")), "no business entity named"),
        (("sepa-debit", "--business-entity", "DE01", "--out", str(out)), "never overwritten"),
        (("sepa-credit", "--business-entity", "DE01"), "--out is required"),
        (("sepa-balances", "--business-entity", "DE01", "--out", str(tmp_path / "b.xml"), "--execution-date",
          "2000-01-01"), "before the export date"),
    ):
        result = invoke(*args, *org)
        assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output

    result = invoke("sepa-balances", "--business-entity", "DE01", "--out", str(tmp_path / "b.xml"), *org)
    assert result.exit_code == 0 and "Nothing to export" in result.stdout
    assert os.path.exists(out)


# ---------------------------------------------------------------------------
# Issue 13: the pay-out of a balance export is booked


def test_the_payout_of_a_balance_export_is_booked(demo):
    """The reverse balance (Payout) of an exported free balance is booked like
    every payment-type balance: the debtor is debited, the bank credited, so
    the money received on account and paid out again nets to zero in the
    journal, in DATEV and in Account.Balance. Before, the Payout had no
    booking: the debtor kept a credit and the bank a receipt that was gone."""
    from engine.booking.postings import account_movements, sides
    from engine.cash.payments import register_account_payment
    from engine.exports.journal import journal_rows

    set_bank_data(demo, "10002", on_bankaccount__c="AT61 1904 3002 3457 3201", on_bankcode__c="BKAUATWWXXX")
    ctx = context(demo.model)
    with demo.engine.begin() as conn:
        received = register_account_payment(conn, ctx, "10002", Decimal("500.00"), date(2024, 12, 20))
    report = sepa(demo, BALANCES)
    assert [t.record_id for t in report.transactions] == [received.balance_id]
    balance = demo.table("Balance")
    [payout] = demo.rows("Balance", balance.c.type == "Payout")
    detail = demo.table("BookingDetail")
    booked = demo.rows("BookingDetail", detail.c.balance.in_([received.balance_id, payout["id"]]))
    debtor = demo.rows("Account", demo.table("Account").c.accountnumber == "10002")[0]["on_debtorno__c"]
    payout_details = [d for d in booked if d["balance"] == payout["id"]]
    assert [(d["type"], d["amount"], *sides(d)) for d in payout_details] == [
        ("Payout", Decimal("500.00"), str(debtor), "1200")]
    movements = {k: v for k, v in account_movements(booked).items() if v != 0}
    assert movements == {}  # received and paid out: bank and debtor net to zero
    assert demo.rows("Account", demo.table("Account").c.accountnumber == "10002")[0]["balance"] == \
        sum((b["amount"] for b in demo.rows("Balance", balance.c.account == payout["account"])), Decimal("0.00"))
    with demo.engine.connect() as conn:
        journal = [r for r in journal_rows(conn, ctx) if r.type == "Payout"]
    assert len(journal) == 1
