"""Fixtures of the export tests: the demo database, built the way
``scripts/demo.sh`` builds it but through the engine functions (migrate,
load data/*.csv, the same invoice runs with the same dates, finalize with a
fixed date), so the tests depend on neither ``out/`` nor the clock.

The database comes from the shared ``prepared`` fixture (tests/conftest.py):
on SQLite it is built once per session per org and data folder and copied
for every test; a PostgreSQL test builds it in its private schema.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.project import finalize as finalize_invoices
from engine.config.model import OrgModel
from engine.exports.datev import DatevParams
from engine.storage.bulk import RowWriter
from engine.storage.migrate import apply_migration

from config.orgcopy import REPO_ROOT
from contexts import context
from databases import DATA_DIR, load_data, load_model

GOLDEN = Path(__file__).parent / "golden"
#: "Erzeugt am" of every DATEV file the tests write.
CREATED = datetime(2024, 10, 1, 12, 0, 0, 123000)
PARAMS = DatevParams(consultant=29098, client=55003, fiscal_year_start=date(2024, 1, 1), account_length=4,
                     chart_of_accounts="03")

#: The invoice runs of scripts/demo.sh step 4, in order: (filters, period start, period end, invoice date).
_YEAR = (date(2024, 1, 1), date(2024, 12, 31))
_ORDERS = ("Order Sub Invoice", "Order Invoice")
DEMO_RUNS = (
    (("UC1 Sub Invoice",), date(2024, 3, 1), date(2024, 3, 31), date(2024, 3, 15)),
    (("UC1 Sub Invoice",), date(2024, 4, 1), date(2024, 4, 30), date(2024, 4, 15)),
    (_ORDERS, *_YEAR, date(2024, 9, 30)),
    (_ORDERS, *_YEAR, date(2024, 9, 30)),
    (("UC1 Final Invoice",), date(2024, 6, 1), date(2024, 6, 30), date(2024, 6, 10)),
)

def build_demo(engine: sa.Engine, model: OrgModel, data_dir: Path = DATA_DIR) -> None:
    """scripts/demo.sh steps 2-4 on ``engine``."""
    apply_migration(engine, model)
    load_data(engine, model, data_dir)
    ctx = context(model)
    for filters, start, end, invoice_date in DEMO_RUNS:
        request = RunRequest(filters=filters, period_start=start, period_end=end, invoice_date=invoice_date,
                             today=invoice_date)
        # Run 3 reports the final orders as record errors: they wait for their sub invoices.
        report = run_invoices(engine, ctx, request)
        with engine.connect() as conn:
            ids = draft_ids(conn, ctx, run_id=report.run_id)
        finalized = finalize_invoices(engine, ctx, ids, today=invoice_date)
        assert not finalized.failures, finalized.failures
    invoices = ctx.table("Invoice")
    with engine.connect() as conn:
        statuses = [r.status for r in conn.execute(sa.select(invoices.c.status))]
    assert len(statuses) == 11 and "Draft" not in statuses, statuses


@dataclass
class Demo:
    """The demo database of one test."""

    engine: sa.Engine
    model: OrgModel
    url: str

    def table(self, object_name: str) -> sa.Table:
        return context(self.model).table(object_name)

    def rows(self, object_name: str, *where) -> list[dict]:
        table = self.table(object_name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where).order_by(table.c.id))]

    def insert_details(self, *details: dict) -> list[int]:
        """Insert booking details (lower-case keys) into the booking period of
        September 2024; EUR, 2024-09-30 and a Revenue type unless given."""
        period = self.rows("BookingPeriod", self.table("BookingPeriod").c.name == "DE01-2024-09")[0]["id"]
        records = [{"bookingperiod": period, "currencyisocode": "EUR", "bookingdate": date(2024, 9, 30),
                    "type": "Revenue", **detail} for detail in details]
        with self.engine.begin() as conn:
            RowWriter(conn, self.model.require("BookingDetail")).insert(records)
        return [r["id"] for r in records]


@pytest.fixture(scope="session")
def sample_model() -> OrgModel:
    return load_model(REPO_ROOT)


@pytest.fixture
def make_demo(prepared):
    """``make_demo(url, model, data_dir)``: the demo database at ``url``
    (the shared ``prepared`` fixture with :func:`build_demo`; the data folder
    tells preparations apart)."""

    def make(url: str, model: OrgModel, data_dir: Path = DATA_DIR) -> Demo:
        def build_demo_database(engine: sa.Engine, model: OrgModel) -> None:
            build_demo(engine, model, data_dir)

        return Demo(prepared(url, model, prepare=build_demo_database, key=str(data_dir)), model, url)

    return make


@pytest.fixture
def demo(db_url, sample_model, make_demo) -> Demo:
    """The demo database of the sample org, on SQLite and on PostgreSQL."""
    return make_demo(db_url, sample_model)


@pytest.fixture
def demo_sqlite(tmp_path, sample_model, make_demo) -> Demo:
    """The demo database on SQLite only (for cases whose code does not depend on the backend)."""
    return make_demo(f"sqlite:///{tmp_path / 'demo.db'}", sample_model)
