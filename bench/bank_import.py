"""Benchmark: ``metabill bank import`` of a camt.053 statement against many
open invoices.

Builds the database of ``bench.invoice_run`` (N order lines, billed and
finalized; not timed), then writes one camt.053 statement with one entry per
open invoice: 70 % name the invoice in the remittance text and pay its amount
(assigned automatically), 20 % pay the amount without a reference (review),
10 % match nothing (review). Times the import with matching and assignment
(one transaction: parse, store, score every line against the open invoices,
register the payments with their bookings) and a second import of the same
file (skipped: idempotence), and prints one JSON line.

    python -m bench.bank_import --lines 20000
    python -m bench.bank_import --lines 20000 --db-url postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from xml.sax.saxutils import escape

import sqlalchemy as sa

from bench.invoice_run import ROOT, fresh_database
from bench.workload import generate
from engine.billing.drafts import draft_ids
from engine.billing.run import RunRequest, run_invoices
from engine.cash import bank_service
from engine.project import finalize, load_project
from engine.storage.context import Context
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration


def build(url: str, lines: int) -> tuple[Context, list[tuple[str, Decimal]]]:
    model = load_project(ROOT).model
    ctx = Context(model)
    engine = open_engine(url)
    apply_migration(engine, model)
    generate(engine, model, lines)
    report = run_invoices(engine, ctx, RunRequest(("Order Invoice",), date(2024, 1, 1), date(2024, 12, 31),
                                                  invoice_date=date(2024, 1, 31)))
    with engine.connect() as conn:
        ids = draft_ids(conn, ctx, run_id=report.run_id)
    finalize(engine, ctx, ids, today=date(2024, 2, 1))
    invoices = ctx.table("Invoice")
    with engine.connect() as conn:
        open_ = [(str(n), Decimal(b)) for n, b in conn.execute(
            sa.select(invoices.c.name, invoices.c.balance).where(invoices.c.status == "Open",
                                                                 invoices.c.currencyisocode == "EUR",
                                                                 invoices.c.balance > 0).order_by(invoices.c.id))]
    engine.dispose()
    return ctx, open_


def statement(open_invoices: list[tuple[str, Decimal]]) -> tuple[str, int]:
    """One line per open invoice, except that every tenth line (kind 6) pays
    its invoice and the next one together, naming both (a split), and the
    next invoice gets no line of its own."""
    entries, total = [], Decimal("0.00")
    skip = False
    for number, (name, amount) in enumerate(open_invoices, 1):
        if skip:
            skip = False
            continue
        kind = number % 10
        text = f"Rechnung {name}" if kind < 7 else ("Zahlung" if kind < 9 else "Sonstiges")
        paid = amount if kind < 9 else Decimal("1.23")
        if kind == 6 and number < len(open_invoices):
            following, more = open_invoices[number]
            text, paid, skip = f"Rechnungen {name} und {following}", amount + more, True
        total += paid
        entries.append(f"""<Ntry><Amt Ccy="EUR">{paid}</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>
<BookgDt><Dt>2024-02-20</Dt></BookgDt><AcctSvcrRef>B-{number:08d}</AcctSvcrRef><NtryDtls><TxDtls>
<RltdPties><Dbtr><Pty><Nm>Payer {number % 97}</Nm></Pty></Dbtr></RltdPties>
<RmtInf><Ustrd>{escape(text)}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>""")
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"><BkToCstmrStmt>
<GrpHdr><MsgId>BENCH</MsgId><CreDtTm>2024-02-20T20:00:00</CreDtTm></GrpHdr>
<Stmt><Id>BENCH-1</Id><Acct><Id><IBAN>DE89370400440532013000</IBAN></Id></Acct>
<Bal><Tp><CdOrPrtry><Cd>PRCD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">0.00</Amt><CdtDbtInd>CRDT</CdtDbtInd></Bal>
<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy="EUR">{total}</Amt><CdtDbtInd>CRDT</CdtDbtInd></Bal>
{"".join(entries)}</Stmt></BkToCstmrStmt></Document>
"""
    return document, len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=20000, help="order lines billed (invoices: about a tenth)")
    parser.add_argument("--db-url", default=None, help="PostgreSQL server URL (default: a SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database(args.db_url, Path(tmp), "bank") as url:
        ctx, open_invoices = build(url, args.lines)
        text, count = statement(open_invoices)
        path = Path(tmp) / "statement.xml"
        path.write_text(text, encoding="utf-8")
        engine = open_engine(url)
        load_before = os.getloadavg()
        started = time.perf_counter()
        report = bank_service.import_statement(engine, ctx, path, run="bench")
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        again = bank_service.import_statement(engine, ctx, path, run="bench again")
        again_seconds = time.perf_counter() - started
        engine.dispose()
    print(json.dumps({
        "benchmark": "bank_import", "backend": "postgresql" if args.db_url else "sqlite",
        "open_invoices": len(open_invoices), "statement_lines": count, "file_mb": round(len(text) / 2**20, 2),
        "seconds": round(seconds, 2), "lines_per_second": round(count / seconds, 1) if seconds else None,
        "assigned": report.count("assigned"), "split": report.count("split"), "review": report.count("review"),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "second_import_seconds": round(again_seconds, 2), "second_import_entries": again.entries,
    }))


if __name__ == "__main__":
    main()
