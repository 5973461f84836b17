"""The whole billing cycle for the lifecycle state machine
(``test_lifecycle_machine.py``): an org, a database that resets quickly,
every operation a user runs (through the services the CLI calls), and a
model of the money that an uninterrupted history gives.

The org is the test org of the invoice-run tests (tests/billing/helpers.py:
``Usage__c``, a single-object source with plain controlling fields) plus
what the cycle needs:

* ``ON_DepositRate__c`` on ``Usage__c`` and ``CreateBookkeepingDataForDeposit``
  on, so deposit invoices are billed and booked as down payments
  (domain-spec §4.10);
* ``ON_InstallmentType__c`` on ``Usage__c``, so an invoice gets a payment plan
  from its source (domain-spec §4.9, without cash management).

The accounts are those of ``data/01_Account.csv``: 10001 (DE, bank transfer),
10002 (AT, reverse charge), 10003 (CH, in CHF: left out of DATEV), 10004 (DE,
SEPA direct debit with a mandate).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.audit import AuditReport, audit
from engine.billing.run import RunReport, RunRequest, run_invoices
from engine.cash import service as cash
from engine.config.model import OrgModel
from engine.exports import service as exports
from engine.exports.datev import params_from_setting
from engine.project import cancel_invoice, finalize
from engine.storage.bulk import RowWriter
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration
from engine.storage.records import load_records
from engine.storage.schema import META, ON_DEMAND, SCHEMA_FIELD

from billing.helpers import make_test_org
from config.orgcopy import InsertAfter, Replace
from contexts import context
from databases import DATA_DIR

ZERO = Decimal("0.00")
FILTER = "Usage"
PERIOD = (date(2024, 1, 1), date(2025, 12, 31))
START = date(2024, 3, 1)
ENTITY = "DE01"
#: Tax rate of each account's invoices (seed tax rules: DE 19 %, AT reverse charge, CH not taxable).
ACCOUNTS = {"10001": Decimal(19), "10002": ZERO, "10003": ZERO, "10004": Decimal(19)}
SEPA_ACCOUNT = "10004"

USAGE_FIELDS = ("  ON_DepositRate__c: {type: Percent, precision: 6, scale: 3, label: Deposit Rate}\n"
                "  ON_InstallmentType__c: {type: Text, length: 80, label: Installment Type (Invoice)}")


def make_lifecycle_org(dest: Path) -> Path:
    """The test org with deposits booked and payment plans from the source."""
    org = make_test_org(dest)
    InsertAfter("metadata/objects/Usage__c.yaml", "fields:", USAGE_FIELDS).apply(org)
    Replace("custom_settings/GlobalSettings.yaml", "  CreateBookkeepingDataForDeposit: false",
            "  CreateBookkeepingDataForDeposit: true").apply(org)
    return org


def gross(net: Decimal, rate: Decimal) -> Decimal:
    """A line's gross: its net plus the tax at ``rate`` (half up to cents)."""
    return net + money(net * rate / 100)


def money(value: Decimal) -> Decimal:
    from engine.domain.money import round_money

    return round_money(value)


@dataclass
class Files:
    """The export files written so far (the audit reconciles them all)."""

    datev: list[Path] = field(default_factory=list)
    sepa: list[Path] = field(default_factory=list)


class LifecycleWorld:
    """One database (SQLite file or PostgreSQL schema) with the org's schema
    and the sample accounts; :meth:`reset` brings it back to that state."""

    def __init__(self, url: str, model: OrgModel, workdir: Path):
        self.url = url
        self.model = model
        self.ctx = context(model)
        self.engine = open_engine(url)
        self.backend = self.engine.dialect.name
        self.workdir = workdir
        self.out = workdir / "files"
        self.files = Files()
        self.exports = 0
        apply_migration(self.engine, model)
        self._template: Path | None = None
        if self.backend == "sqlite":
            self._seed()
            self.engine.dispose()  # checkpoints the WAL into the file
            self._template = workdir / "lifecycle-template.db"
            shutil.copyfile(make_url(url).database, self._template)

    def close(self) -> None:
        self.engine.dispose()

    def t(self, object_name: str) -> sa.Table:
        return self.ctx.table(object_name)

    def reset(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        self.files = Files()
        if self._template is not None:
            self.engine.dispose()
            path = Path(make_url(self.url).database)
            for leftover in (Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
            shutil.copyfile(self._template, path)
            return
        keep = {SCHEMA_FIELD.name, META.name}
        names = sorted(name for name in self.ctx.metadata.tables if name not in keep)
        with self.engine.begin() as conn:
            present = set(sa.inspect(conn).get_table_names())
            names += sorted(t for t in ON_DEMAND.tables if t in present)
            prep = conn.dialect.identifier_preparer
            conn.exec_driver_sql("TRUNCATE " + ", ".join(prep.quote(n) for n in names))
        self._seed()

    def _seed(self) -> None:
        report = load_records(self.engine, self.ctx, "Account", DATA_DIR / "01_Account.csv")
        assert report.ok, report.render()

    # -- source data (a user's own records: loaded, not engine-owned) ---------------

    def add_usage(self, record: dict) -> int:
        with self.engine.begin() as conn:
            RowWriter(conn, self.model.require("Usage__c")).insert([record])
        return record["id"]

    # -- the commands, through the services the CLI calls ------------------------------

    def run(self, today: date) -> RunReport:
        request = RunRequest(filters=(FILTER,), period_start=PERIOD[0], period_end=PERIOD[1],
                             invoice_date=today, today=today)
        return run_invoices(self.engine, self.ctx, request)

    def drafts(self) -> list[int]:
        invoice = self.t("Invoice")
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(invoice.c.id).where(invoice.c.status == "Draft")
                                     .order_by(invoice.c.id)).scalars())

    def finalize(self, ids: list[int], today: date):
        return finalize(self.engine, self.ctx, ids, today=today)

    def pay(self, invoice: str, amount: Decimal, when: date):
        return cash.register_payment(self.engine, self.ctx, invoice, amount, when)

    def pay_on_account(self, account: str, amount: Decimal, when: date, kind: str):
        return cash.register_account_payment(self.engine, self.ctx, account, amount, when, balance_type=kind)

    def write_off(self, invoice: str, amount: Decimal | None, when: date):
        return cash.write_off(self.engine, self.ctx, invoice, amount, reason="Goodwill", when=when)

    def refund(self, account: str, amount: Decimal, when: date):
        return cash.register_refund(self.engine, self.ctx, amount, when, account=account)

    def change_plan(self, invoice: str, plan: str | None, when: date):
        return cash.change_payment_plan(self.engine, self.ctx, invoice, plan, when=when)

    def cancel(self, invoice: str, when: date):
        return cancel_invoice(self.engine, self.ctx, invoice, reason="Goodwill", when=when)

    def next_file(self, stem: str, suffix: str) -> Path:
        self.exports += 1
        return self.out / f"{self.exports:03d}-{stem}{suffix}"

    def sepa_debit(self, out: Path, when: date):
        return exports.export_sepa_debit(self.engine, self.ctx, out, business_entity=ENTITY,
                                         created=datetime.combine(when, datetime.min.time()))

    def sepa_balances(self, out: Path, when: date):
        return exports.export_sepa_balances(self.engine, self.ctx, out, business_entity=ENTITY,
                                            created=datetime.combine(when, datetime.min.time()))

    def datev(self, out: Path, when: date):
        params = params_from_setting(self.ctx, None, date_to=when)
        return exports.export_datev_file(self.engine, self.ctx, out, params,
                                         created=datetime.combine(when, datetime.min.time()))

    def recover_files(self):
        return exports.recover_export_files(self.engine, self.ctx)

    def audit(self) -> AuditReport:
        """``metabill audit --datev … --sepa …`` over every file written."""
        return audit(self.engine, self.ctx, datev_files=self.files.datev, sepa_files=self.files.sepa)

    # -- reading -----------------------------------------------------------------------

    def rows(self, object_name: str, *where) -> list[dict]:
        table = self.t(object_name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where).order_by(table.c.id))]
