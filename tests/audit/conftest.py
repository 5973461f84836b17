"""Fixtures of the audit tests.

* ``demo`` (from tests/exports/conftest.py): scripts/demo.sh steps 2-4 built
  through the engine (runs and finalization), on SQLite and PostgreSQL;
* ``full_demo``: the whole of scripts/demo.sh up to the DATEV export (steps
  2-9: runs, payments, a cancellation, SEPA exports, balances, the assignment
  job, cash management, DATEV) through the services its commands call, with
  the SEPA and DATEV files it wrote;
* :func:`tamper`: change the database behind the engine's back, the way a
  script or a hand-written statement would (the immutability triggers are
  bypassed for the change, since that is what tampering means).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.audit import AuditReport, audit
from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.cash.payments import PaymentDetails
from engine.cash.service import fix_invoices, register_account_payment, register_payment, run_job
from engine.config.model import OrgModel
from engine.exports.datev import params_from_setting
from engine.exports.service import export_datev_file, export_sepa_balances, export_sepa_credit, export_sepa_debit
from engine.project import cancel_invoice, finalize
from engine.storage.guards import install_guards, remove_guards
from engine.storage.migrate import apply_migration

from contexts import context
from databases import load_data
import exports.conftest as exports_fixtures
from exports.conftest import Demo

#: The demo fixtures of the export tests, shared here.
sample_model = exports_fixtures.sample_model
make_demo = exports_fixtures.make_demo
demo = exports_fixtures.demo

FILES = ("EXTF_Buchungsstapel.csv", "sepa-debit.xml", "sepa-balances.xml", "sepa-credit.xml")
_YEAR = (date(2024, 1, 1), date(2024, 12, 31), date(2024, 9, 30))
_ORDERS = ("Order Sub Invoice", "Order Invoice")


def build_full_demo(engine: sa.Engine, model: OrgModel, out: Path) -> None:
    """scripts/demo.sh steps 2-9 on ``engine`` through the services its
    commands call, in the same order with the same values; its files in
    ``out``."""
    ctx = context(model)
    out.mkdir(parents=True, exist_ok=True)
    apply_migration(engine, model)
    load_data(engine, model)

    def run(filters: tuple[str, ...], start: date, end: date, invoice_date: date) -> None:
        report = run_invoices(engine, ctx, RunRequest(filters, start, end, invoice_date=invoice_date))
        with engine.connect() as conn:
            ids = draft_ids(conn, ctx, run_id=report.run_id)
        if ids:
            finalized = finalize(engine, ctx, ids)
            assert not finalized.failures, finalized.failures

    def pay(invoice: str, amount: str, when: date, **details) -> None:
        register_payment(engine, ctx, invoice, Decimal(amount), when, details=PaymentDetails(**details))

    run(("UC1 Sub Invoice",), date(2024, 3, 1), date(2024, 3, 31), date(2024, 3, 15))
    pay("INV-2024-00001", "1190.00", date(2024, 3, 28), reference="Abschlag 1")
    run(("UC1 Sub Invoice",), date(2024, 4, 1), date(2024, 4, 30), date(2024, 4, 15))
    pay("INV-2024-00002", "1190.00", date(2024, 4, 30), reference="Abschlag 2")
    run(_ORDERS, *_YEAR)
    run(_ORDERS, *_YEAR)
    run(("UC1 Final Invoice",), date(2024, 6, 1), date(2024, 6, 30), date(2024, 6, 10))
    pay("INV-2024-00005", "1249.19", date(2024, 10, 14))
    pay("INV-2024-00006", "500.00", date(2024, 10, 15))
    cancel_invoice(engine, ctx, "INV-2024-00008", reason="Wrong maintenance period", when=date(2024, 10, 20))
    export_sepa_debit(engine, ctx, out / FILES[1], business_entity="DE01", created=datetime(2024, 10, 25, 9, 0))
    pay("INV-2024-00010", "14280.00", date(2024, 10, 28), payment_method="SEPA", reference="SEPA-Lastschrift")
    register_account_payment(engine, ctx, "10004", Decimal("300.00"), date(2024, 10, 29), balance_type="Prepayment",
                             details=PaymentDetails(reference="Vorauszahlung"))
    export_sepa_balances(engine, ctx, out / FILES[2], business_entity="DE01", created=datetime(2024, 10, 30, 9, 0))
    run(("Order Invoice",), date(2025, 1, 1), date(2025, 1, 31), date(2025, 1, 15))
    export_sepa_credit(engine, ctx, out / FILES[3], business_entity="DE01", created=datetime(2025, 1, 15, 9, 0))
    pay("INV-2024-00011", "1300.00", date(2025, 1, 20))
    register_account_payment(engine, ctx, "10001", Decimal("5000.00"), date(2025, 1, 21),
                             details=PaymentDetails(reference="Sammelzahlung"))
    run_job(engine, ctx, "AssignBalancesChain", today=date(2025, 1, 22))
    both = ("create-or-fix-entries", "create-payments-and-migrate-balances")
    fix_invoices(engine, ctx, both, when=date(2025, 1, 20), enable_integration=True)
    pay("INV-2024-00007", "2300.00", date(2025, 1, 21), reference="RE INV-2024-00007")
    fix_invoices(engine, ctx, both[1:], ["INV-2024-00007"], when=date(2025, 1, 21), enable_integration=True)
    fix_invoices(engine, ctx, both, when=date(2025, 1, 21), enable_integration=True)
    export_datev_file(engine, ctx, out / FILES[0], params_from_setting(ctx, None, date_to=date(2024, 12, 31)),
                      created=datetime(2025, 2, 1, 9, 0))


@dataclass
class FullDemo(Demo):
    """The full demo database and the folder with its SEPA and DATEV files."""

    files: Path = Path()

    @property
    def datev(self) -> Path:
        return self.files / FILES[0]

    @property
    def sepa(self) -> list[Path]:
        return [self.files / name for name in FILES[1:]]


@pytest.fixture(scope="session")
def full_demo_files(tmp_path_factory) -> Path:
    """Where the SQLite full demo (built once per session) keeps its files."""
    return tmp_path_factory.mktemp("full-demo")


@pytest.fixture
def full_demo(db_url, sample_model, prepared, full_demo_files, tmp_path) -> FullDemo:
    """scripts/demo.sh steps 2-9, on SQLite (built once, copied) and PostgreSQL."""
    out = full_demo_files if db_url.startswith("sqlite") else tmp_path / "files"

    def build_full_demo_database(engine: sa.Engine, model: OrgModel) -> None:
        build_full_demo(engine, model, out)

    engine = prepared(db_url, sample_model, prepare=build_full_demo_database, key="full")
    return FullDemo(engine, sample_model, db_url, files=out)


def run_audit(demo: Demo, **files) -> AuditReport:
    """The audit of a demo database."""
    return audit(demo.engine, context(demo.model), **files)


def codes(report: AuditReport) -> set[str]:
    return {f.code for f in report.findings}


def subjects(report: AuditReport, code: str) -> set[str]:
    return {f.subject for f in report.findings if f.code == code}


def tamper(demo: Demo, *statements) -> None:
    """Execute ``statements`` (SQLAlchemy statements, or functions of the
    connection) in one transaction with the immutability triggers out of the
    way: dropped on SQLite and put back afterwards; on PostgreSQL the guarded
    tables' user triggers are disabled for the transaction (foreign keys stay
    in force on both)."""
    guarded = [context(demo.model).table(name).name for name in ("Invoice", "InvoiceLineItem", "BookingDetail", "InvoiceDocument")]
    with demo.engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        quote = conn.dialect.identifier_preparer.quote
        if postgres:
            for table in guarded:
                conn.exec_driver_sql(f"ALTER TABLE {quote(table)} DISABLE TRIGGER USER")
        else:
            remove_guards(conn)
        for statement in statements:
            if callable(statement):
                statement(conn)
            else:
                conn.execute(statement)
        if postgres:
            for table in guarded:
                conn.exec_driver_sql(f"ALTER TABLE {quote(table)} ENABLE TRIGGER USER")
        else:
            install_guards(conn, demo.model)
