"""Fuzzing the entry points a user feeds (issue 14): ``metabill load`` (CSV
and JSON), ``metabill payment import``, ``metabill validate-config`` on
mutated YAML, and the invoice run over records of any magnitude.

Every command is run in-process through the CLI's own click group, so the
error handling is the command's: what a user sees as "internal error ...
This is a bug" (exit code 3) is an exception that escapes the group, and
each test fails on it. Exit codes 0 (done), 1 (a clear refusal) and 2
(usage) are fine; a refusal writes nothing.

The cells mix anything hypothesis invents with values known to have broken
engines before: numbers of 25+ digits and huge exponents, dates such as
9999-12-31, NUL and bidi controls, formula triggers, very long texts.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import engine.cli.main  # noqa: F401 - registers the commands on the group
from engine.billing.run import RunRequest, run_invoices
from engine.cli.app import cli
from engine.storage.bulk import RowWriter
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration
from engine.storage.records import load_records

from billing.helpers import make_test_org
from config.orgcopy import ORG_PARTS
from contexts import context
from databases import REPO_ROOT, load_model

from .conftest import fuzz_settings

HOSTILE = [
    "1234567890123456789012345", "-99999999999999999999999999.99", "1e400", "1E+30", "NaN", "Infinity", "-0",
    "0.000000000000000000000000000001", "9" * 60, "9999-12-31", "0001-01-01", "2024-02-30", "1899-12-31",
    "2024-13-01", "9999-12-31T23:59:59Z", "\x00", "a\x00b", "\u202eevil", "\u2066x\u2069", "=cmd|' /C calc'!A0",
    "+49 89 5550100", "'quoted", "@SUM(A1)", "-1", "\t", "\r\n", "", " ", "x" * 300, "x" * 5000, "ü" * 90,
    "99999999999999999999", "18446744073709551616", "0", "-0.005", "1.005", "true", "yes", "null", "\"", "'",
    ";", "INV-2024-00001", "10001", "Payment", "Refund", "Prepayment", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
]

cells = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40),
                  st.decimals(allow_nan=False, allow_infinity=False).map(str),
                  st.dates().map(date.isoformat), st.integers().map(str))


def _invoke(*args: str):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"internal error (exit 3 for a user) from {args[:2]}: "
                             f"{type(result.exception).__name__}: {result.exception}") from result.exception
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    return result


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory):
    """The sample org's schema with its data loaded, once per module (a
    refused load changes nothing; an accepted one only adds records)."""
    folder = tmp_path_factory.mktemp("fuzzdb")
    url = f"sqlite:///{folder / 'fuzz.db'}"
    model = load_model(REPO_ROOT)
    engine = open_engine(url)
    apply_migration(engine, model)
    for path in sorted((REPO_ROOT / "data").glob("[0-9]*_*.csv")):
        assert load_records(engine, context(model), path.stem.split("_", 1)[1], path).ok
    engine.dispose()
    return url, folder


def _counts(url: str) -> dict[str, int]:
    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one()
                    for t in sa.inspect(conn).get_table_names()}
    finally:
        engine.dispose()


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


ACCOUNT_COLUMNS = ["Name", "AccountNumber", "Phone", "Email", "CurrencyIsoCode", "ON_PaymentDue__c",
                   "ON_DirectDebitMandateGranted__c", "ParentId", "Id", "Unknown__c"]
ITEM_COLUMNS = ["OrderItemNumber", "OrderId.OrderNumber", "ProductId.ProductCode", "Quantity", "UnitPrice",
                "ServiceDate", "EndDate", "ON_Title__c"]


@fuzz_settings()
@given(data=st.data())
def test_fuzz_load_csv(sample_db, data):
    url, folder = sample_db
    object_name, columns = data.draw(st.sampled_from([("Account", ACCOUNT_COLUMNS), ("OrderItem", ITEM_COLUMNS),
                                                      ("Invoice", ["Name"]), ("BookingDetail", ["Amount"])]))
    header = data.draw(st.lists(st.sampled_from(columns), min_size=1, max_size=len(columns), unique=True))
    rows = data.draw(st.lists(st.lists(cells, min_size=len(header), max_size=len(header)), max_size=6))
    raw = _csv(header, rows)
    if data.draw(st.booleans()):  # now and then the bytes themselves are broken
        raw = data.draw(st.binary(max_size=64)) + raw[data.draw(st.integers(0, len(raw))):]
    path = folder / "fuzz.csv"
    path.write_bytes(raw)
    before = _counts(url)
    result = _invoke("load", object_name, str(path), "--org", str(REPO_ROOT), "--db", url)
    if result.exit_code != 0:
        assert _counts(url) == before  # all or nothing


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from(HOSTILE) | st.text(max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _json(value) -> str:
    return json.dumps(value, default=str) if not isinstance(value, Decimal) else str(value)


@fuzz_settings()
@given(data=st.data())
def test_fuzz_load_json(sample_db, data):
    url, folder = sample_db
    keys = st.sampled_from(ACCOUNT_COLUMNS + ["", "name", "NAME", "Id"]) | st.text(max_size=8)
    items = data.draw(st.lists(st.dictionaries(keys, json_values, max_size=5) | json_values, max_size=5))
    text = "[" + ", ".join(
        "{" + ", ".join(f"{json.dumps(k)}: {_json(v)}" for k, v in item.items()) + "}" if isinstance(item, dict)
        else _json(item) for item in items) + "]"
    path = folder / "fuzz.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = _counts(url)
    result = _invoke("load", "Account", str(path), "--org", str(REPO_ROOT), "--db", url)
    if result.exit_code != 0:
        assert _counts(url) == before


PAYMENT_COLUMNS = ["Invoice", "Account", "Amount", "Date", "Type", "Reference", "PaymentMethod", "PaymentProvider",
                   "BankAccountId", "TransactionNo", "BalanceAssignmentKey", "Bogus"]
payment_cells = st.one_of(cells, st.sampled_from(["10001", "10002", "10004", "1.00", "250.00", "2024-11-02",
                                                  "Payment", "Prepayment", "Refund", "T-1", "T-2"]))


@fuzz_settings()
@given(data=st.data())
def test_fuzz_payment_import(sample_db, data):
    url, folder = sample_db
    header = data.draw(st.lists(st.sampled_from(PAYMENT_COLUMNS), min_size=1, max_size=8, unique=True))
    rows = data.draw(st.lists(st.lists(payment_cells, min_size=len(header), max_size=len(header)), max_size=5))
    path = folder / "payments.csv"
    path.write_bytes(_csv(header, rows))
    before = _counts(url)
    result = _invoke("payment", "import", str(path), "--org", str(REPO_ROOT), "--db", url)
    if result.exit_code != 0:
        assert _counts(url) == before


# --- validate-config on mutated YAML ------------------------------------------------------


def _org_files(org: Path) -> list[str]:
    return sorted(str(p.relative_to(org)) for part in ("metadata", "custom_settings")
                  for p in (org / part).rglob("*.yaml"))


@pytest.fixture(scope="module")
def org_copy(tmp_path_factory):
    org = tmp_path_factory.mktemp("fuzzorg") / "org"
    org.mkdir()
    for part in ORG_PARTS:
        source = REPO_ROOT / part
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, org / part)
    return org


def _mutate(text: str, data) -> str:
    lines = text.splitlines(keepends=True)
    if not lines:
        return text
    kind = data.draw(st.sampled_from(["value", "delete", "duplicate", "insert", "truncate", "indent", "key"]))
    index = data.draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    if kind == "value" and ":" in line:
        key, _ = line.split(":", 1)
        value = data.draw(st.sampled_from(HOSTILE) | st.text(max_size=20))
        lines[index] = f"{key}: {json.dumps(value)}\n" if data.draw(st.booleans()) else f"{key}: {value}\n"
    elif kind == "delete":
        del lines[index]
    elif kind == "duplicate":
        lines.insert(index, line)
    elif kind == "insert":
        lines.insert(index, data.draw(st.text(max_size=30)) + "\n")
    elif kind == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    elif kind == "indent":
        lines[index] = " " * data.draw(st.integers(0, 6)) + line.lstrip(" ")
    elif kind == "key" and ":" in line:
        _, value = line.split(":", 1)
        indent = line[: len(line) - len(line.lstrip(" "))]
        lines[index] = indent + data.draw(st.sampled_from(["Bogus", "Name", "type", "!!python/object", "&a", "*a",
                                                            "<<", "? x"])) + ":" + value
    return "".join(lines)


@fuzz_settings()
@given(data=st.data())
def test_fuzz_validate_config_on_mutated_yaml(org_copy, data):
    rel = data.draw(st.sampled_from(_org_files(org_copy)))
    path = org_copy / rel
    original = (REPO_ROOT / rel).read_text(encoding="utf-8")
    mutated = original
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = _mutate(mutated, data)
    path.write_text(mutated, encoding="utf-8", errors="surrogatepass")
    try:
        result = _invoke("validate-config", str(org_copy))
        assert result.exit_code in (0, 1)
        assert "E099" not in result.output  # a check that crashed
    finally:
        path.write_text(original, encoding="utf-8")


# --- the invoice run over records of any magnitude ------------------------------------------


@pytest.fixture(scope="module")
def usage_org(tmp_path_factory):
    org = make_test_org(tmp_path_factory.mktemp("fuzzrun") / "org")
    return org, load_model(org)


quantities = st.decimals(min_value=Decimal("-999999999999.9999"), max_value=Decimal("999999999999.9999"),
                         places=4, allow_nan=False, allow_infinity=False)
prices = st.decimals(min_value=Decimal("-99999999999999.9999"), max_value=Decimal("99999999999999.9999"),
                     places=4, allow_nan=False, allow_infinity=False)


@fuzz_settings()
@given(data=st.data())
def test_fuzz_invoice_run_never_stops_for_one_record(usage_org, tmp_path_factory, data):
    """Valid quantities and prices of any magnitude: every record is billed or
    carries its error, and the run completes."""
    org, model = usage_org
    url = f"sqlite:///{tmp_path_factory.mktemp('run') / 'run.db'}"
    engine = open_engine(url)
    try:
        apply_migration(engine, model)
        with engine.begin() as conn:
            RowWriter(conn, model.require("Account")).insert([{"name": "A", "accountnumber": "10001"}])
            usages = [{"on_account__c": "10001", "on_title__c": data.draw(st.sampled_from(["t", "=x", "x" * 255])),
                       "on_quantity__c": data.draw(quantities), "on_unitprice__c": data.draw(prices)}
                      for _ in range(data.draw(st.integers(1, 4)))]
            RowWriter(conn, model.require("Usage__c")).insert(usages)
        request = RunRequest(filters=("Usage",), period_start=date(2024, 1, 1), period_end=date(2024, 12, 31),
                             today=date(2024, 12, 31))
        report = run_invoices(engine, context(model), request)
        table = context(model).table("Usage__c")
        with engine.connect() as conn:
            states = conn.execute(sa.select(table.c.on_invoice__c, table.c.on_invoicebuilderror__c)).all()
            status = conn.execute(sa.select(context(model).table("InvoiceRun").c.status)).scalar_one()
        assert status == "Completed"
        assert all((invoice is None) != (error is None) for invoice, error in states), states
        assert report.failure_count == sum(1 for invoice, _ in states if invoice is None)
    finally:
        engine.dispose()
