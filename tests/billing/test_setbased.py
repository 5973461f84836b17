"""The set-based evaluation bills exactly what the Python path bills (issue 19, item 2).

The differential test fills two databases with the same seeded random data
(the realistic benchmark workload of ``bench.workload``, three filters, with
a random seed, plus random disturbances: huge quantities, empty titles and
prices, headers without lines, unknown accounts), runs the same invoice run
once with ``evaluation=python`` and once with ``evaluation=set``, with a
random batch size, and compares every column that matters: each invoice
(all columns but id, name and timestamps; keyed by the source records it
claimed), each line (all columns but id, name and timestamps, its invoice
by that key), the billing claims, the write-back of every source record,
the record errors and the report's counts and totals. Money compares as
exact Decimals. Rows the set path cannot take fall back to the Python path
inside the same batch; the test asserts that such rows were present, so the
fallback is exercised, and a second test checks that a filter the set path
cannot compile runs on the Python path with its reason.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.billing import filterrun, setrun
from engine.billing.build import RunFacts
from engine.billing.filterrun import FilterRun
from engine.billing.plan import plan_filter
from engine.billing.run import RunRequest, run_invoices
from engine.billing.session import RunSession
from engine.billing.setplan import AMOUNT_BOUND, plan_set
from engine.billing.tax import TaxResolver
from engine.storage.db import open_engine, private_schema
from engine.storage.migrate import apply_migration
from engine.storage.schema import CLAIM
from engine.storage.types import TextTooLong

from bench.workload import FILTERS, INVOICE_DATE, RUN_PERIOD, _Realistic  # noqa: PLC2701 - the benchmark's data
from contexts import context

#: Columns that differ between two equal runs by construction.
VOLATILE = {"id", "name", "createddate", "lastmodifieddate"}
SEEDS = (1, 2, 3)


@pytest.fixture
def twin_urls(request, db_url, tmp_path):
    """Two empty databases of the same backend."""
    if db_url.startswith("sqlite"):
        yield db_url, f"sqlite:///{tmp_path / 'twin.db'}"
        return
    with private_schema(request.getfixturevalue("pg_url"), "mbt") as other:
        yield db_url, other


def _fill(url: str, model, seed: int, lines: int) -> sa.Engine:
    """The realistic workload with ``seed`` and random disturbances."""
    engine = open_engine(url)
    apply_migration(engine, model)
    workload = _Realistic(engine, model, lines)
    workload.rng = random.Random(seed)
    workload.write()
    rng = random.Random(seed * 7919)
    ctx = context(model)
    items, deliveries = ctx.table("OrderItem"), ctx.table("Partial_Delivery__c")
    with engine.begin() as conn:
        item_ids = list(conn.execute(sa.select(items.c.id).order_by(items.c.id)).scalars())
        delivery_ids = list(conn.execute(sa.select(deliveries.c.id).order_by(deliveries.c.id)).scalars())
        for record_id in rng.sample(item_ids, 4):  # beyond what the SQL amounts take
            conn.execute(items.update().where(items.c.id == record_id)
                         .values(quantity=Decimal(AMOUNT_BOUND) + rng.randint(0, 99)))
        for record_id in rng.sample(item_ids, 3):  # no price, no title: record errors
            conn.execute(items.update().where(items.c.id == record_id).values(unitprice=None))
        for record_id in rng.sample(item_ids, 2):
            conn.execute(items.update().where(items.c.id == record_id).values(on_title__c=""))
        for record_id in rng.sample(delivery_ids, 3):
            conn.execute(deliveries.update().where(deliveries.c.id == record_id)
                         .values(on_quantity__c=Decimal("-3.1250"), on_unitprice__c=Decimal("0.0050")))
        # An order whose items all went to another order: a header without lines.
        orders = ctx.table("Order")
        lonely = conn.execute(sa.select(items.c.orderid).order_by(items.c.id).limit(1)).scalar()
        other = conn.execute(sa.select(orders.c.id).where(orders.c.id != lonely).order_by(orders.c.id)
                             .limit(1)).scalar()
        conn.execute(items.update().where(items.c.orderid == lonely).values(orderid=other))
    return engine


def _state(engine: sa.Engine, model, report) -> dict:
    """Everything the run wrote, independent of ids and insertion order."""
    ctx = context(model)
    out: dict = {}
    with engine.connect() as conn:
        claims = conn.execute(sa.select(CLAIM)).mappings().all()
        sources: dict[int, list] = {}
        for claim in claims:
            sources.setdefault(claim["invoice_id"], []).append((claim["source_table"], claim["source_id"],
                                                                claim["suffix"]))
        key = {invoice: tuple(sorted(found)) for invoice, found in sources.items()}
        out["claims"] = sorted((c["source_table"], c["source_id"], c["suffix"], key[c["invoice_id"]], c["run_id"])
                               for c in claims)
        invoices = conn.execute(sa.select(ctx.table("Invoice"))).mappings().all()
        out["invoices"] = {key[i["id"]]: {k: v for k, v in i.items() if k not in VOLATILE} for i in invoices}
        lines = conn.execute(sa.select(ctx.table("InvoiceLineItem"))).mappings().all()
        out["lines"] = {(key[l["invoice"]], l["sequence"]): {k: v for k, v in l.items()
                                                             if k not in VOLATILE | {"invoice"}} for l in lines}
        # Line ids follow the invoices' ids, then the positions (as the Python path numbers them).
        by_id = sorted(lines, key=lambda l: l["id"])
        # The numbering itself: both databases start alike, so a batch mixing
        # set-based and fallback groups must hand out the same invoice ids,
        # DRAFT names, line ids and line names as the Python path.
        out["numbering"] = ({key[i["id"]]: (i["id"], i["name"]) for i in invoices},
                            {(key[l["invoice"]], l["sequence"]): (l["id"], l["name"]) for l in lines})
        out["line ids in invoice order"] = by_id == sorted(lines, key=lambda l: (l["invoice"], l["sequence"]))
        writeback = {}
        for obj in ("Order", "Opportunity", "Partial_Delivery__c"):
            table = ctx.table(obj)
            columns = [c for c in table.c if c.name.startswith(("on_invoice", "on_lastinvoicerun"))]
            for row in conn.execute(sa.select(table.c.id, *columns)).mappings():
                writeback[(obj, row["id"])] = {
                    k: key.get(v) if k.startswith("on_invoice") and "builderror" not in k and v is not None else v
                    for k, v in row.items()}
        out["writeback"] = writeback
    out["report"] = (report.invoice_count, report.line_count,
                     sorted((f.object_name, f.record_id, f.message) for fr in report.filters for f in fr.failures),
                     sorted((s.type, s.lines, s.total_net, s.grand_total, s.currency) for s in report.invoices))
    return out


def _run(engine: sa.Engine, model, evaluation: str, batch_size: int, monkeypatch):
    monkeypatch.setenv("METABILL_EVALUATION", evaluation)
    request = RunRequest(filters=FILTERS["realistic"], period_start=RUN_PERIOD[0], period_end=RUN_PERIOD[1],
                         invoice_date=INVOICE_DATE, batch_size=batch_size, today=date(2024, 12, 31))
    return run_invoices(engine, context(model), request)


@pytest.mark.parametrize("seed", SEEDS)
def test_set_based_and_python_paths_bill_the_same(seed, twin_urls, sample_model, monkeypatch):
    rng = random.Random(seed)
    lines, batch_size = rng.randint(400, 900), rng.choice((3, 40, 2000))
    fallbacks: list[int] = []
    refused: list[int] = []
    original = setrun.SetBatchWriter.prepare

    def counting(self, conn, sources, failures):
        prepared = original(self, conn, sources, failures)
        fallbacks.extend(prepared.fallback)
        refused.extend(prepared.refused)
        return prepared

    monkeypatch.setattr(setrun.SetBatchWriter, "prepare", counting)
    with ExitStack() as stack:
        engines = [_fill(url, sample_model, seed, lines) for url in twin_urls]
        for engine in engines:
            stack.callback(engine.dispose)
        python = _state(engines[0], sample_model, _run(engines[0], sample_model, "python", batch_size, monkeypatch))
        assert not fallbacks, "the Python path must not enter the set-based writer"
        set_based = _state(engines[1], sample_model, _run(engines[1], sample_model, "set", batch_size, monkeypatch))
    assert fallbacks, "the disturbances should have sent some records to the Python fallback"
    assert refused, "records with an empty title or price should have been refused set-based"
    assert len(fallbacks) * 2 < len(set_based["claims"]), "most records should be billed set-based"
    assert python["report"][0] > 20 and python["report"][2], "the data should bill invoices and fail some records"
    assert python["line ids in invoice order"] and set_based["line ids in invoice order"]
    for part in ("report", "claims", "writeback", "invoices", "lines", "numbering"):
        if python[part] != set_based[part]:
            mine, theirs = python[part], set_based[part]
            if isinstance(mine, dict):
                diff = [(k, mine.get(k), theirs.get(k)) for k in sorted(set(mine) | set(theirs), key=repr)
                        if mine.get(k) != theirs.get(k)][:2]
                pytest.fail(f"{part} differ: {diff}")
            pytest.fail(f"{part} differ")


def test_a_staged_header_that_does_not_fit_sends_its_batch_to_the_python_path(twin_urls, sample_model, monkeypatch):
    """The first batch's staged headers are refused as a value too long would
    be: nothing of the batch is written by the set path, the Python path bills
    all of it (fallback included), and no record error is reported twice."""
    original = setrun.insert_headers
    refused: list[int] = []

    def refusing(conn, obj, headers):
        if not refused:
            refused.append(len(headers))
            raise TextTooLong("Invoice.AccountName: a text that does not fit (test)")
        return original(conn, obj, headers)

    monkeypatch.setattr(setrun, "insert_headers", refusing)
    with ExitStack() as stack:
        engines = [_fill(url, sample_model, 5, 500) for url in twin_urls]
        for engine in engines:
            stack.callback(engine.dispose)
        python = _state(engines[0], sample_model, _run(engines[0], sample_model, "python", 40, monkeypatch))
        assert not refused
        set_based = _state(engines[1], sample_model, _run(engines[1], sample_model, "set", 40, monkeypatch))
    assert refused and refused[0] > 0
    for part in ("report", "claims", "writeback", "invoices", "lines", "numbering"):
        assert python[part] == set_based[part], part


def _stage_count_unknown(monkeypatch):
    """The set writer stages as always but reports no line count (as a
    driver without ``rowcount`` would): the sequence bound is then checked
    by its grouping query."""
    original = setrun.SetBatchWriter._stage_lines

    def staging(self, conn):
        original(self, conn)
        return None

    monkeypatch.setattr(setrun.SetBatchWriter, "_stage_lines", staging)


def test_the_sequence_bound_query_bills_as_the_python_path(twin_urls, sample_model, monkeypatch):
    """With the staged line count unknown, the grouping query of the
    sequence bound runs in every batch, and the results are the Python path's."""
    _stage_count_unknown(monkeypatch)
    with ExitStack() as stack:
        engines = [_fill(url, sample_model, 11, 500) for url in twin_urls]
        for engine in engines:
            stack.callback(engine.dispose)
        python = _state(engines[0], sample_model, _run(engines[0], sample_model, "python", 40, monkeypatch))
        set_based = _state(engines[1], sample_model, _run(engines[1], sample_model, "set", 40, monkeypatch))
    for part in ("report", "claims", "writeback", "invoices", "lines", "numbering"):
        assert python[part] == set_based[part], part


def test_groups_with_more_lines_than_the_sequence_numbers_go_to_python(db_url, sample_model, monkeypatch):
    """A group with as many lines as InvoiceLineItem.Sequence cannot number
    is handed to the Python path (here the bound is narrowed to 10 lines; the
    workload bills 5-15 lines per invoice)."""
    _stage_count_unknown(monkeypatch)
    original_field = setrun.SetBatchWriter._field

    def narrow_sequence(self, key):
        found = original_field(self, key)
        return replace(found, precision=1) if key == "sequence" else found

    big: list[int] = []
    original_suspects = setrun.SetBatchWriter._suspects

    def watching(self, conn, staged):
        suspects, refused = original_suspects(self, conn, staged)
        counted = conn.exec_driver_sql(
            f"SELECT s.grp FROM {setrun.LINE} l JOIN {setrun.SRC} s ON s.record_id = l.hdr "
            f"GROUP BY s.grp HAVING COUNT(*) >= 10").scalars().all()
        assert set(counted) <= suspects
        big.extend(counted)
        return suspects, refused

    monkeypatch.setattr(setrun.SetBatchWriter, "_field", narrow_sequence)
    monkeypatch.setattr(setrun.SetBatchWriter, "_suspects", watching)
    engine = _fill(db_url, sample_model, 11, 300)
    try:
        _run(engine, sample_model, "set", 40, monkeypatch)
    finally:
        engine.dispose()
    assert big, "the workload should have groups of 10 lines or more"


def test_the_written_batch_is_checked_against_its_invoices_totals(db_url, sample_model, monkeypatch):
    """The set path checks each written invoice's totals against the sums of
    its lines, in SQL, before the batch commits: a line amount changed after
    the lines were written fails the run, and that batch leaves nothing."""
    from engine.billing.build import InvariantError

    original = setrun.SetBatchWriter._insert_lines
    tampered: list[int] = []

    def tampering(self, conn, *args):
        original(self, conn, *args)
        line = context(sample_model).table("InvoiceLineItem")
        victim = conn.execute(sa.select(sa.func.max(line.c.id))).scalar()
        conn.execute(line.update().where(line.c.id == victim).values(postotalnet=line.c.postotalnet + Decimal("0.01")))
        tampered.append(victim)

    monkeypatch.setattr(setrun.SetBatchWriter, "_insert_lines", tampering)
    engine = _fill(db_url, sample_model, 5, 60)
    try:
        with pytest.raises(InvariantError, match="totals differ from the sums of its lines"):
            _run(engine, sample_model, "set", 1000, monkeypatch)
        with engine.connect() as conn:
            lines = context(sample_model).table("InvoiceLineItem")
            assert conn.execute(sa.select(sa.func.count()).select_from(lines)
                                .where(lines.c.id == tampered[0])).scalar() == 0
    finally:
        engine.dispose()
    assert tampered


def _order_invoice(ctx):
    record = next(r for r in ctx.model.setting_records("Filter") if r.name == "Order Invoice")
    return plan_filter(ctx, record)


def test_a_line_formula_that_computes_keeps_the_filter_in_python_with_its_reason(sample_model):
    ctx = context(sample_model)
    plan = _order_invoice(ctx)
    assert plan_set(ctx, plan, ("producttaxclass",), "PerLine").eligible
    quantity = plan.line.controls["ON_Quantity"]
    computed = replace(quantity, formula=replace(quantity.formula, expression="Quantity * 2"))
    changed = replace(plan, line=replace(plan.line, controls={**plan.line.controls, "ON_Quantity": computed}))
    refused = plan_set(ctx, changed, ("producttaxclass",), "PerLine")
    assert not refused.eligible
    assert [r for r in refused.reasons if "ON_Quantity__c" in r and "not a plain field path" in r]


@pytest.mark.parametrize("target, reason", [
    ("Title", "2 fields fill InvoiceLineItem.Title"),
    ("TaxCode", "ON_CostObject__c -> InvoiceLineItem.TaxCode: the run computes this field itself"),
    ("SubInvoice", "ON_CostObject__c -> InvoiceLineItem.SubInvoice: the run computes this field itself"),
])
def test_copies_the_set_path_leaves_to_python_are_reasons(sample_model, target, reason):
    ctx = context(sample_model)
    plan = _order_invoice(ctx)
    source = next(s for s, _, _ in plan.line.copies if s.name == "ON_CostObject__c")
    extra = (source, ctx.obj("InvoiceLineItem").field(target), "InvoiceLineItem")
    changed = replace(plan, line=replace(plan.line, copies=plan.line.copies + (extra,)))
    assert reason in plan_set(ctx, changed, (), "PerLine").reasons


def test_rounding_per_tax_group_keeps_the_filter_in_python_with_its_reason(sample_model, monkeypatch, tmp_path):
    ctx = context(sample_model)
    plan = _order_invoice(ctx)
    reasons = plan_set(ctx, plan, (), "PerTaxGroup").reasons
    assert reasons == ["rounding mode PerTaxGroup (the set path rounds per line)"]
    monkeypatch.setenv("METABILL_EVALUATION", "set")
    assert filterrun.default_evaluation() == "set"
    engine = open_engine(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        facts = RunFacts(None, RUN_PERIOD[0], RUN_PERIOD[1], INVOICE_DATE, "x", "PerTaxGroup", ctx.service(TaxResolver))
        runner = FilterRun(RunSession(engine, False), ctx, plan, facts, date(2024, 12, 31), 10, None)
        assert runner.evaluation == "set" and runner.set_writer is None and runner.set_reasons == reasons
        per_line = FilterRun(RunSession(engine, False), ctx, plan, replace(facts, rounding="PerLine"),
                             date(2024, 12, 31), 10, None)
        assert per_line.set_writer is not None and per_line.set_reasons == []
        python = FilterRun(RunSession(engine, False), ctx, plan, replace(facts, rounding="PerLine"),
                           date(2024, 12, 31), 10, None, evaluation="python")
        assert python.set_writer is None
    finally:
        engine.dispose()
