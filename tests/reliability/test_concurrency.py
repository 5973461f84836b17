"""Concurrency (issue 8 part 3) and scale-out (part 2), with real processes.

Two invoice runs, two finalizations and two payment registrations are each
started at the same moment by two spawned processes on the same data, on
SQLite (they take turns: BEGIN IMMEDIATE and the busy timeout) and on
PostgreSQL (they really overlap: advisory locks, row locks, retried
serialization failures). Afterwards nothing is billed twice, invoice numbers
are unique and gapless, and no money is lost (support.check_invariants plus
the exact expectations). ``--workers`` runs give the same invoices as a
single process, also when two such commands race. SQLite's lock timeout
ends with a clear message; the retry helper really retries a serialization
failure; PostgreSQL's COPY path writes exactly what executemany writes.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections import defaultdict
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from engine.billing import run as run_module
from engine.billing import writing as writing_module
from engine.storage.retry import DatabaseBusyError, run_in_transaction

from . import procs
from .support import ACCOUNTS, ZERO, World, check_invariants
from contexts import context

CTX = multiprocessing.get_context("spawn")
TIMEOUT = 300


def _usages(world: World, per_account: int = 8) -> list[int]:
    ids = []
    for n in range(per_account):
        for account in ACCOUNTS:
            ids.append(world.add_usage(account, Decimal(1 + n % 3), Decimal("10.50") + n, f"u{n}"))
    return ids


def _race(target, argsets: list[tuple]) -> list[tuple]:
    """Start one spawned process per argument tuple; they meet at a barrier
    and start together. Returns what each put on the queue."""
    barrier = CTX.Barrier(len(argsets))
    queue = CTX.Queue()
    processes = [CTX.Process(target=target, args=(*args, barrier, queue)) for args in argsets]
    for process in processes:
        process.start()
    results = [queue.get(timeout=TIMEOUT) for _ in processes]
    for process in processes:
        process.join(timeout=TIMEOUT)
    errors = [text for kind, text in results if kind == "error"]
    assert not errors, errors[0]
    return results


def _billed(world: World) -> dict[str, set[int]]:
    """Account number -> usage ids billed on its live invoices (a set per invoice, merged)."""
    accounts = {a["id"]: a["accountnumber"] for a in world.rows("Account")}
    invoice_account = {i["id"]: accounts[i["account"]] for i in world.rows("Invoice")}
    out: dict[str, set[int]] = defaultdict(set)
    for line in world.rows("InvoiceLineItem"):
        out[invoice_account[line["invoice"]]].add(int(line["sourcerecordid"]))
    return dict(out)


def _expected(world: World, ids: list[int]) -> dict[str, set[int]]:
    usages = {u["id"]: u for u in world.rows("Usage__c")}
    out: dict[str, set[int]] = defaultdict(set)
    for usage_id in ids:
        out[usages[usage_id]["on_account__c"]].add(usage_id)
    return dict(out)


def test_two_runs_at_the_same_moment_bill_everything_once(world, reliability_org):
    ids = _usages(world)
    results = _race(procs.run_invoices_proc, [(str(reliability_org), world.url, 2), (str(reliability_org), world.url, 5)])
    check_invariants(world)
    assert _billed(world) == _expected(world, ids)
    assert len(world.rows("Invoice")) == len(ACCOUNTS)  # one invoice per account, none split or doubled
    assert sum(lines for _, (_, _, lines) in results) == len(ids)
    assert len(world.rows("InvoiceRun")) == 1 and len({run_id for _, (run_id, _, _) in results}) == 1


def test_two_finalizations_at_the_same_moment_number_each_invoice_once(world, reliability_org):
    _usages(world, per_account=2)
    for batch in (1, 2):  # several runs: several drafts per account
        world.add_usage("S1", Decimal(1), Decimal(batch), f"extra {batch}")
        world.run(batch)
    drafts = world.drafts()
    assert len(drafts) >= 4
    results = _race(procs.finalize_proc, [(str(reliability_org), world.url, drafts)] * 2)
    finalized = [pair for _, (done, _) in results for pair in done]
    assert sorted(i for i, _ in finalized) == drafts  # each draft finalized by exactly one of them
    assert len({number for _, number in finalized}) == len(finalized)
    for _, (_, failures) in results:
        assert all("not a draft" in message for _, message in failures), failures
    check_invariants(world)  # gapless, unique, balanced books


def test_two_payment_registrations_at_the_same_moment_lose_no_money(world, reliability_org):
    _usages(world, per_account=1)
    world.run(10)
    world.finalize(world.drafts())
    invoice = next(i for i in world.rows("Invoice") if i["balance"] > 10)
    amounts = ["1.11", "2.22", "0.37"]
    _race(procs.pay_proc, [(str(reliability_org), world.url, invoice["name"], amounts)] * 2)
    after = next(i for i in world.rows("Invoice") if i["id"] == invoice["id"])
    received = 2 * sum(Decimal(a) for a in amounts)
    assert after["balance"] == invoice["balance"] - received
    payments = [b for b in world.rows("Balance") if b["type"] == "Payment"]
    assert len(payments) == 6 and -sum((b["amount"] for b in payments), ZERO) == received
    check_invariants(world)


def test_workers_bill_what_one_process_bills(world, reliability_org, reliability_model):
    from engine.billing.run import RunRequest
    from engine.billing.workers import run_invoices_parallel

    ids = _usages(world, per_account=6)
    world.add_usage("S2", Decimal(1), Decimal("-3.00"), "credit part")  # a credit line in one group
    ids = [u["id"] for u in world.rows("Usage__c")]
    request = RunRequest(filters=("Usage",), period_start=date(2024, 1, 1),
                         period_end=date(2024, 12, 31), batch_size=2, today=date(2024, 12, 31))
    report = run_invoices_parallel(world.url, reliability_org, context(reliability_model), request, 2)
    assert report.invoice_count == len(ACCOUNTS) and report.line_count == len(ids)
    assert _billed(world) == _expected(world, ids)
    check_invariants(world)
    run = world.rows("InvoiceRun")
    assert len(run) == 1 and run[0]["status"] == "Completed" and run[0]["numinvoices"] == len(ACCOUNTS)


def test_two_worker_commands_at_the_same_moment(world, reliability_org):
    """The same ``--workers 2`` run started on two machines at once."""
    ids = _usages(world, per_account=6)
    _race(procs.run_workers_proc, [(str(reliability_org), world.url, 2)] * 2)
    check_invariants(world)
    assert _billed(world) == _expected(world, ids)
    assert len(world.rows("Invoice")) == len(ACCOUNTS)
    assert len(world.rows("InvoiceRun")) == 1


def test_cli_invoice_run_with_workers(world, reliability_org):
    from engine.cli.main import cli

    ids = _usages(world, per_account=3)
    result = CliRunner().invoke(cli, [
        "invoice-run", "--filter", "Usage", "--period-start", "2024-01-01", "--period-end", "2024-12-31",
        "--workers", "2", "--batch-size", "2", "--org", str(reliability_org), "--db", world.url,
    ])
    assert result.exit_code == 0, result.output
    assert _billed(world) == _expected(world, ids)
    check_invariants(world)


@pytest.mark.parametrize("workers", ["0", "x"])
def test_cli_rejects_bad_worker_counts(workers, reliability_org, tmp_path):
    from engine.cli.main import cli

    result = CliRunner().invoke(cli, [
        "invoice-run", "--filter", "Usage", "--period-start", "2024-01-01", "--period-end", "2024-12-31",
        "--workers", workers, "--org", str(reliability_org), "--db", f"sqlite:///{tmp_path / 'x.db'}",
    ])
    assert result.exit_code == 2 and "--workers" in result.output


def test_sqlite_lock_timeout_gives_a_clear_message(reliability_model, reliability_org, tmp_path, monkeypatch):
    """A writer that holds SQLite's lock longer than the busy timeout: the
    run stops with DatabaseBusyError (the CLI prints its message), nothing
    half-written."""
    from engine.cli.main import cli
    from engine.storage import db as db_module

    url = f"sqlite:///{tmp_path / 'busy.db'}"
    world = World(url, reliability_model, tmp_path)
    world.reset()
    _usages(world, per_account=1)
    world.close()
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    blocker = sqlite3.connect(make_url(url).database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(DatabaseBusyError, match="stayed locked by another metabill process"):
            world.run(10)
        result = CliRunner().invoke(cli, [
            "invoice-run", "--filter", "Usage", "--period-start", "2024-01-01", "--period-end", "2024-12-31",
            "--org", str(reliability_org), "--db", url,
        ])
        assert result.exit_code == 1
        assert "stayed locked by another metabill process" in result.output
        assert "Traceback" not in result.output
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    world.engine.dispose()
    assert world.rows("Invoice") == [] and world.claims() == []
    world.close()


@pytest.mark.postgres
def test_retry_runs_a_serialization_failure_again(pg_schema_url, engine_for):
    engine = engine_for(pg_schema_url)
    other = engine_for(pg_schema_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counter (id int PRIMARY KEY, value int NOT NULL)")
        conn.exec_driver_sql("INSERT INTO counter VALUES (1, 0)")
    attempts = []

    def work(conn: sa.Connection) -> int:
        attempts.append(1)
        conn.exec_driver_sql("SELECT value FROM counter WHERE id = 1")  # the snapshot is taken here
        if len(attempts) == 1:
            with other.begin() as racer:  # a concurrent transaction commits a change meanwhile
                racer.exec_driver_sql("UPDATE counter SET value = value + 10 WHERE id = 1")
        conn.exec_driver_sql("UPDATE counter SET value = value + 1 WHERE id = 1")  # 40001 on the first attempt
        return conn.exec_driver_sql("SELECT value FROM counter WHERE id = 1").scalar_one()

    retried = []
    value = run_in_transaction(engine, work, isolation_level="REPEATABLE READ",
                               on_retry=lambda attempt, error: retried.append(getattr(error.orig, "sqlstate", None)))
    assert value == 11 and len(attempts) == 2 and retried == ["40001"]


@pytest.mark.postgres
def test_copy_path_writes_what_executemany_writes(pg_url, reliability_model, tmp_path, monkeypatch, request):
    """The PostgreSQL COPY path for big inserts of lines and of draft headers
    (writing.insert_many) gives the same rows as executemany."""
    dumps = []
    for threshold in (10**9, 1):
        monkeypatch.setattr(writing_module, "COPY_MIN_ROWS", threshold)
        url = request.getfixturevalue("pg_schema_url") if not dumps else _another_schema(pg_url, request)
        world = World(url, reliability_model, tmp_path)
        world.reset()
        _usages(world, per_account=4)
        world.add_usage("S3", Decimal("0.25"), Decimal("-7.77"), "tab\tand 'quote' \\ back\nslash")
        world.run(100)
        check_invariants(world)
        keep = ("title", "quantity", "unitprice", "postotalnet", "postotaltax", "postotalgross", "taxrate", "taxcode",
                "sourcerecordid", "sequence", "serviceperiodstart", "serviceperiodend", "name", "id", "invoice")
        headers = sorted(tuple(sorted((k, v) for k, v in invoice.items() if k not in ("createddate", "lastmodifieddate")))
                         for invoice in world.rows("Invoice"))
        dumps.append((sorted(tuple(line[k] for k in keep) for line in world.rows("InvoiceLineItem")), headers))
        world.close()
    assert dumps[0][1] and dumps[0] == dumps[1]


def _another_schema(pg_url: str, request) -> str:
    import uuid

    schema = f"mbt_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    request.addfinalizer(drop)
    return make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False)


@pytest.mark.postgres
def test_a_busy_account_is_left_and_billed_after_its_holder_is_done(pg_schema_url, reliability_model, tmp_path):
    """PostgreSQL: an account locked by another process (here: a connection
    holding the run's advisory lock of that account) is skipped while the
    run bills the others, then billed once the lock is released."""
    import threading
    import time

    world = World(pg_schema_url, reliability_model, tmp_path)
    world.reset()
    ids = _usages(world, per_account=3)
    held = next(a["id"] for a in world.rows("Account") if a["accountnumber"] == "S2")
    holder = world.engine.connect()
    holder.begin()
    holder.execute(sa.select(sa.func.pg_advisory_xact_lock(run_module.lock_class("account"), held)))
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(world.run(1)))
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while set(_billed(world)) != {"S1", "S3"} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(_billed(world)) == {"S1", "S3"}  # the others are billed, S2 waits for its holder
        assert thread.is_alive()
    finally:
        holder.rollback()  # releases the lock
        holder.close()
        thread.join(timeout=120)
    assert not thread.is_alive() and outcome
    assert _billed(world) == _expected(world, ids)
    check_invariants(world)
    world.close()
