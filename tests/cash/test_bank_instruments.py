"""Payment instruments (seed 000: "payment instrument replaced by payment
instrument"): IBAN/BIC checked with schwifty, mandates with reference and date
of signature, migrated from the accounts' bank fields, and used by the SEPA
direct debits instead of the invoice's fields, with the sequence type of the
mandate's own history. SQLite and PostgreSQL (``orders``)."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from click.testing import CliRunner

from engine.cash import bank_service
from engine.cash.errors import InstrumentError, PaymentTargetNotFound
from engine.cash.instruments import BANK_ACCOUNT, DIRECT_DEBIT, InstrumentInput, check_instrument
from engine.cli.main import cli
from engine.exports.sepa import export_sepa
from engine.storage.db import unit_of_work

from config.orgcopy import REPO_ROOT
from contexts import context

TODAY = date(2024, 10, 1)


def mandate(account: str = "10004", iban: str = "DE75 5121 0800 1245 1261 99", reference: str = "MNDT-NEW-1",
            signed: date | None = date(2024, 1, 10), **options) -> InstrumentInput:
    return InstrumentInput(account, DIRECT_DEBIT, iban, options.pop("bic", None), options.pop("holder", "Nordlicht"),
                           reference, signed, **options)


def test_checks_are_schwiftys_and_the_sepa_rules():
    checked, problems = check_instrument(mandate(), TODAY)
    assert problems == [] and (checked.iban, checked.bic) == ("DE75512108001245126199", "SOGEDEFFXXX")
    _, problems = check_instrument(mandate(iban="DE75512108001245126198"), TODAY)
    assert len(problems) == 1 and problems[0].startswith("IBAN 'DE75512108001245126198' is not valid")
    _, problems = check_instrument(mandate(iban="BR1800360305000010009795493C1"), TODAY)
    assert problems == ["IBAN 'BR1800360305000010009795493C1' is not an IBAN of the SEPA zone"]
    _, problems = check_instrument(mandate(bic="COBADEFF1"), TODAY)
    assert len(problems) == 1 and problems[0].startswith("BIC 'COBADEFF1' is not valid")
    _, problems = check_instrument(mandate(reference="MNDT//1", signed=date(2024, 12, 1)), TODAY)
    assert [p.split(" ")[0:2] for p in problems] == [["mandate", "reference"], ["the", "mandate's"]]
    _, problems = check_instrument(mandate(reference=None, signed=None), TODAY)
    assert len(problems) == 2
    checked, problems = check_instrument(InstrumentInput("10001", BANK_ACCOUNT, "AT611904300234573201"), TODAY)
    assert problems == [] and checked.bic is None  # no BIC derivable: IBAN-only is fine in SEPA


def test_add_default_and_unique_mandate(orders):
    ctx = context(orders.model)
    first = bank_service.add_instrument(orders.engine, ctx, mandate(), today=TODAY)
    assert (first["type"], first["isdefault"], first["bic"]) == (DIRECT_DEBIT, True, "SOGEDEFFXXX")
    second = bank_service.add_instrument(orders.engine, ctx, mandate(reference="MNDT-NEW-2",
                                                                     iban="DE02120300000000202051"), today=TODAY)
    rows = {r["name"]: r for r in orders.select("PaymentInstrument")}
    assert (rows[first["name"]]["isdefault"], rows[second["name"]]["isdefault"]) == (False, True)
    with pytest.raises(InstrumentError, match="used by another instrument"):
        bank_service.add_instrument(orders.engine, ctx, mandate(reference="MNDT-NEW-2"), today=TODAY)
    with pytest.raises(InstrumentError) as refused:
        bank_service.add_instrument(orders.engine, ctx, mandate(iban="DE00", reference="X"), today=TODAY)
    assert refused.value.code == "R453" and "IBAN 'DE00' is not valid" in refused.value.problems[0].message
    with pytest.raises(PaymentTargetNotFound):
        bank_service.add_instrument(orders.engine, ctx, mandate(account="99999"), today=TODAY)
    assert len(orders.select("PaymentInstrument")) == 2


def test_instruments_from_the_accounts_bank_fields_once(orders):
    ctx = context(orders.model)
    report = bank_service.instruments_from_accounts(orders.engine, ctx, today=TODAY)
    assert len(report.created) == 1 and report.created[0].endswith("(SEPA Direct Debit) for account 10004")
    made = orders.select("PaymentInstrument")[0]
    assert (made["iban"], made["bic"], made["mandatereference"], made["mandatesignaturedate"], made["usedbefore"]) == \
        ("DE02120300000000202051", "BYLADEM1001", "MNDT-10004-001", date(2023, 11, 2), True)  # the account's RCUR
    again = bank_service.instruments_from_accounts(orders.engine, ctx, today=TODAY)
    assert (again.created, again.skipped) == ([], [])


def test_the_direct_debit_takes_the_mandate_instrument_and_its_history(orders):
    ctx = context(orders.model)
    bank_service.add_instrument(orders.engine, ctx, mandate(), today=TODAY)

    def export(apply: bool, created: datetime):
        with unit_of_work(orders.engine, dry_run=not apply) as conn:
            return export_sepa(conn, ctx, "sepa-debit", business_entity="DE01", created=created)

    first = export(True, datetime(2024, 10, 1, 9, 0, 0))
    assert [(t.record_name, t.iban, t.mandate_id, t.sequence_type) for t in first.transactions] == [
        ("INV-2024-00004", "DE75512108001245126199", "MNDT-NEW-1", "FRST"),
        ("INV-2024-00010", "DE75512108001245126199", "MNDT-NEW-1", "FRST")]  # the invoices' RCUR is not the mandate's
    again = export(False, datetime(2024, 10, 20, 9, 0, 0))
    assert again.already_exported == ["INV-2024-00004", "INV-2024-00010"]
    with unit_of_work(orders.engine, dry_run=True) as conn:
        forced = export_sepa(conn, ctx, "sepa-debit", business_entity="DE01", created=datetime(2024, 10, 20, 9),
                             force=True)
    assert {t.sequence_type for t in forced.transactions} == {"RCUR"}


def test_instrument_commands(orders):
    def invoke(*args):
        result = CliRunner(env={"COLUMNS": "250"}).invoke(cli, [*args, "--org", str(REPO_ROOT), "--db", orders.url],
                                                          catch_exceptions=False)
        return result.exit_code, result.output

    code, out = invoke("instrument", "add", "10004", "--iban", "DE75512108001245126199", "--mandate", "MNDT-CLI-1",
                       "--signed", "2024-01-10", "--holder", "Nordlicht Logistik GmbH")
    assert code == 0 and "(SEPA Direct Debit, DE75512108001245126199, BIC SOGEDEFFXXX) to account 10004." in out
    code, out = invoke("instrument", "add", "10001", "--iban", "DE75512108001245126198")
    assert code == 1 and "is not valid" in out and "Traceback" not in out
    code, out = invoke("instrument", "from-accounts", "--dry-run")
    assert code == 0 and "0 instrument(s), 0 account(s) skipped." in out  # 10004 has one already
    code, out = invoke("instrument", "list")
    assert code == 0 and "MNDT-CLI-1" in out and "1 instrument(s)." in out
