"""SEPA files in the German banking industry's current versions (issue 18):
pain.008.001.08 and pain.001.001.09 chosen by ExportSetting.SepaMessageVersion,
golden files valid against their vendored XSDs, the audit reconciling them;
collection dates on TARGET2 business days after the lead time; and a
returned first collection collected again as FRST. SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from engine.audit import audit
from engine.cash import bank_service
from engine.exports import sepa_xml
from engine.exports.sepa import export_sepa
from engine.exports.sepa_orders import BALANCES, CREDIT, DEBIT
from engine.exports.sepa_versions import message_for, upgrade
from engine.exports.sepa_xml import PAIN_001, PAIN_001_V09, PAIN_008, PAIN_008_V08, parse_xml, read_message
from engine.storage.db import unit_of_work

from booking.helpers import org_variant
from config.orgcopy import REPO_ROOT, Replace
from contexts import context
from databases import load_model

from .helpers import check_golden
from .test_sepa import DEBITS, bill_credit, free_balances, history, invoices, set_invoice

CREATED = datetime(2024, 10, 1, 12, 0, 0)
NS08 = {"d": sepa_xml.MESSAGES[PAIN_008_V08]}
NS09 = {"c": sepa_xml.MESSAGES[PAIN_001_V09]}
XSD = Path(sepa_xml.__file__).parent / "xsd"


@pytest.fixture(scope="module")
def current_model():
    """The sample org as it is: its SEPA settings name no version, so they
    write the default, the current versions."""
    return load_model(REPO_ROOT)


@pytest.fixture(scope="module")
def explicit_model(tmp_path_factory):
    """The sample org with ``SepaMessageVersion: Current`` written out: the same files."""
    org = org_variant(tmp_path_factory.mktemp("current") / "org",
                      Replace("custom_settings/ExportSetting.yaml",
                              "  - Name: SEPA Direct Debit\n    Active: true\n",
                              "  - Name: SEPA Direct Debit\n    Active: true\n    SepaMessageVersion: Current\n"),
                      Replace("custom_settings/ExportSetting.yaml", "    Format: SEPA Credit\n",
                              "    Format: SEPA Credit\n    SepaMessageVersion: Current\n"))
    return load_model(org)


@pytest.fixture
def current(db_url, current_model, make_demo):
    return make_demo(db_url, current_model)


def sepa(demo, kind: str = DEBIT, *, apply: bool = True, **options):
    options.setdefault("created", CREATED)
    with unit_of_work(demo.engine, dry_run=not apply) as conn:
        return export_sepa(conn, context(demo.model), kind, business_entity="DE01", **options)


def texts(data: bytes, path: str, ns: dict) -> list[str]:
    return [e.text for e in parse_xml(data).getroot().xpath(path, namespaces=ns)]


def sepa_findings(demo, *files: Path) -> list[tuple[str, str]]:
    report = audit(demo.engine, context(demo.model), sepa_files=files)
    return [(f.code, f.message) for f in report.findings if f.code.startswith("A5")]


def test_the_vendored_current_schemas_are_the_documented_ones():
    readme = (XSD / "README.md").read_text(encoding="utf-8")
    for message in (PAIN_008_V08, PAIN_001_V09):
        digest = hashlib.sha256((XSD / f"{message}.xsd").read_bytes()).hexdigest()
        assert f"| `{message}.xsd` | `{digest}` |" in readme
    assert message_for(DEBIT, "Current") == PAIN_008_V08 and message_for(CREDIT, "Current") == PAIN_001_V09
    assert message_for(DEBIT, None) == PAIN_008_V08 and message_for(BALANCES, None) == PAIN_001_V09
    assert message_for(DEBIT, "Legacy") == PAIN_008 and message_for(BALANCES, "Legacy") == PAIN_001


def test_pain_008_001_08_golden_validates_and_the_audit_reconciles_it(current, tmp_path):
    report = sepa(current, file_name="sepa-debit-v08.xml")
    check_golden("sepa-debit-v08.xml", report.data)
    assert report.message == PAIN_008_V08
    assert read_message(report.data)[0] == PAIN_008_V08          # valid against xsd/pain.008.001.08.xsd
    assert texts(report.data, "//d:CdtrAgt/d:FinInstnId/d:BICFI", NS08) == ["COBADEFFXXX"]
    assert texts(report.data, "//d:DbtrAgt/d:FinInstnId/d:BICFI", NS08) == ["BYLADEM1001", "BYLADEM1001"]
    assert texts(report.data, "//d:ReqdColltnDt", NS08) == ["2024-10-07"]
    assert texts(report.data, "//d:InstdAmt", NS08) == ["892.50", "14280.00"]
    assert {h["exportformat"] for h in history(current)} == {PAIN_008_V08}
    path = tmp_path / "sepa-debit-v08.xml"
    path.write_bytes(report.data)
    assert sepa_findings(current, path) == []


def test_pain_001_001_09_golden_for_credits_and_balances(current, tmp_path):
    credit_name = bill_credit(current)
    report = sepa(current, CREDIT, created=datetime(2025, 1, 15, 9, 0, 0), file_name="credit.xml")
    check_golden("sepa-credit-v09.xml", report.data)
    assert read_message(report.data)[0] == PAIN_001_V09
    assert [t.record_name for t in report.transactions] == [credit_name]
    assert texts(report.data, "//c:ReqdExctnDt/c:Dt", NS09) == ["2025-01-15"]
    assert texts(report.data, "//c:DbtrAgt/c:FinInstnId/c:BICFI", NS09) == ["COBADEFFXXX"]
    free_balances(current, ("10004", "Prepayment", "-300.00", {"reference": "Vorauszahlung"}))
    balances = sepa(current, BALANCES, created=datetime(2024, 10, 30, 9, 0, 0))
    assert read_message(balances.data)[0] == PAIN_001_V09 and balances.total == Decimal("300.00")
    files = []
    for name, data in (("credit.xml", report.data), ("balances.xml", balances.data)):
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    assert sepa_findings(current, *files) == []


def test_the_current_versions_are_the_default(current, explicit_model, make_demo, tmp_path):
    # the sample org's settings name no version; writing "Current" out changes nothing in the files
    # (the second org on its own SQLite file: one test database holds one org)
    default = sepa(current, apply=False)
    explicit = sepa(make_demo(f"sqlite:///{tmp_path / 'explicit.db'}", explicit_model), apply=False)
    assert default.message == explicit.message == PAIN_008_V08
    assert default.data == explicit.data


def test_upgrade_changes_only_namespace_bic_and_execution_date():
    legacy = parse_xml((Path(__file__).parent / "golden" / "sepa-credit.xml").read_bytes()).getroot()
    upgraded = upgrade(legacy, PAIN_001_V09)
    sepa_xml.validate(upgraded, PAIN_001_V09)
    old_tags = [e.xpath("local-name()") for e in legacy.iter()]
    new_tags = [e.xpath("local-name()") for e in upgraded.iter()]
    renamed = [t.replace("BIC", "BICFI") if t == "BIC" else t for t in old_tags]
    dated = [t for t in new_tags if t != "Dt"]
    assert dated == renamed
    assert [e.text for e in legacy.iter() if len(e) == 0] == [e.text for e in upgraded.iter() if len(e) == 0]


def test_collection_dates_respect_the_lead_time_and_the_target2_calendar(current):
    # overdue invoices exported on Christmas Eve 2024: 25 and 26 December are closed, so the
    # earliest collection one TARGET2 business day later is Friday 27 December
    report = sepa(current, apply=False, created=datetime(2024, 12, 24, 9, 0, 0))
    assert {t.when for t in report.transactions} == {date(2024, 12, 27)}
    # exported on Thursday 28 March 2024: Good Friday and Easter Monday are closed
    set_invoice(current, DEBITS[0], paymentduedate=date(2024, 3, 29))
    set_invoice(current, DEBITS[1], paymentduedate=date(2024, 4, 1))
    report = sepa(current, apply=False, created=datetime(2024, 3, 28, 9, 0, 0))
    assert {t.when for t in report.transactions} == {date(2024, 4, 2)}
    # due on 1 May 2024 (Wednesday, closed): collected on 2 May
    set_invoice(current, DEBITS[0], paymentduedate=date(2024, 5, 1))
    set_invoice(current, DEBITS[1], paymentduedate=date(2024, 5, 1))
    report = sepa(current, apply=False, created=datetime(2024, 4, 25, 9, 0, 0))
    assert {t.when for t in report.transactions} == {date(2024, 5, 2)}


COLLECTED = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.05{kind}.001.08">
  <{body}><GrpHdr><MsgId>M-{ref}</MsgId><CreDtTm>{day}T18:00:00</CreDtTm></GrpHdr>
    <{item}><Id>{ref}</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
      <Ntry><Amt Ccy="EUR">892.50</Amt><CdtDbtInd>{side}</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
        <BookgDt><Dt>{day}</Dt></BookgDt><AcctSvcrRef>{ref}</AcctSvcrRef>
        <NtryDtls><TxDtls><Refs><EndToEndId>{e2e}</EndToEndId><MndtId>MNDT-10004-001</MndtId></Refs>{rtr}
        </TxDtls></NtryDtls></Ntry></{item}></{body}>
</Document>
"""


def bank_file(tmp_path: Path, name: str, **values) -> Path:
    path = tmp_path / name
    path.write_text(COLLECTED.format(**values), encoding="utf-8")
    return path


def test_a_returned_first_collection_is_collected_again_as_frst(current, tmp_path):
    for name in DEBITS:
        set_invoice(current, name, directdebitsequencetype=None)
    set_invoice(current, DEBITS[1], paymentduedate=date(2024, 12, 1))
    first = sepa(current)
    assert [(t.record_name, t.sequence_type) for t in first.transactions] == [(DEBITS[0], "FRST")]
    ctx = context(current.model)
    collected = bank_file(tmp_path, "collected.xml", kind=3, body="BkToCstmrStmt", item="Stmt", ref="C-1008",
                          day="2024-10-08", side="CRDT", e2e=DEBITS[0], rtr="")
    assert [s.outcome for s in bank_service.import_statement(current.engine, ctx, collected).settled] == ["assigned"]
    returned = bank_file(tmp_path, "returned.xml", kind=4, body="BkToCstmrDbtCdtNtfctn", item="Ntfctn",
                         ref="R-1010", day="2024-10-10", side="DBIT", e2e=DEBITS[0],
                         rtr="<RtrInf><Rsn><Cd>AC04</Cd></Rsn></RtrInf>")
    assert [s.outcome for s in bank_service.import_statement(current.engine, ctx, returned).settled] == ["returned"]
    assert invoices(current)[DEBITS[0]]["status"] == "Open"
    set_invoice(current, DEBITS[1], paymentduedate=date(2024, 10, 7))
    # the same setting collects it again without --force: a returned collection does not lock the invoice
    again = sepa(current, created=datetime(2024, 10, 14, 9, 0, 0))
    assert [(t.record_name, t.sequence_type) for t in again.transactions] == [(DEBITS[0], "FRST"), (DEBITS[1], "FRST")]
    assert sepa(current, apply=False, created=datetime(2024, 10, 15, 9, 0, 0)).transactions == []  # locked again
    assert texts(again.data, "//d:SeqTp", NS08) == ["FRST"]
    # that collection went through: the next one under the mandate is recurring
    assert [t.sequence_type for t in sepa(current, apply=False, force=True,
                                          created=datetime(2024, 11, 14, 9, 0, 0)).transactions] == ["RCUR", "RCUR"]


PAIN002 = """<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10">
  <CstmrPmtStsRpt>
    <GrpHdr><MsgId>STS-1</MsgId><CreDtTm>2024-10-04T08:00:00</CreDtTm></GrpHdr>
    <OrgnlGrpInfAndSts><OrgnlMsgId>{msg}</OrgnlMsgId><OrgnlMsgNmId>pain.008.001.08</OrgnlMsgNmId>
      <GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>
    <OrgnlPmtInfAndSts><OrgnlPmtInfId>{msg}-1</OrgnlPmtInfId>
      <TxInfAndSts><StsId>STS-1-1</StsId><OrgnlEndToEndId>{e2e}</OrgnlEndToEndId><TxSts>RJCT</TxSts>
        <StsRsnInf><Rsn><Cd>MD01</Cd></Rsn></StsRsnInf>
        <OrgnlTxRef><Amt><InstdAmt Ccy="EUR">892.50</InstdAmt></Amt><ReqdColltnDt>2024-10-07</ReqdColltnDt>
          <CdtrAcct><Id><IBAN>DE89370400440532013000</IBAN></Id></CdtrAcct></OrgnlTxRef>
      </TxInfAndSts>
    </OrgnlPmtInfAndSts>
  </CstmrPmtStsRpt>
</Document>
"""


def test_a_first_collection_rejected_by_pain_002_is_collected_again_as_frst(current, tmp_path):
    for name in DEBITS:
        set_invoice(current, name, directdebitsequencetype=None)
    set_invoice(current, DEBITS[1], paymentduedate=date(2024, 12, 1))
    first = sepa(current, file_name="first.xml")
    assert [(t.record_name, t.sequence_type) for t in first.transactions] == [(DEBITS[0], "FRST")]
    status = tmp_path / "status.xml"
    status.write_text(PAIN002.format(msg=first.message_id, e2e=DEBITS[0]), encoding="utf-8")
    ctx = context(current.model)
    report = bank_service.import_statement(current.engine, ctx, status)
    assert (report.format, [(s.outcome, s.invoice) for s in report.settled]) == ("pain.002", [("rejected", DEBITS[0])])
    before = invoices(current)[DEBITS[0]]
    assert (before["status"], before["balance"]) == ("Open", Decimal("892.50"))  # no money moved, nothing booked
    again = sepa(current, created=datetime(2024, 10, 8, 9, 0, 0), file_name="again.xml")
    assert [(t.record_name, t.sequence_type) for t in again.transactions] == [(DEBITS[0], "FRST")]
    first_file, again_file = tmp_path / "first.xml", tmp_path / "again.xml"
    first_file.write_bytes(first.data)
    again_file.write_bytes(again.data)
    assert sepa_findings(current, first_file, again_file) == []
    assert bank_service.import_statement(current.engine, ctx, status).settled == []  # imported once
