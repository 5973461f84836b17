"""A hostile-input run through the real ``metabill`` command (issue 14).

Not a pytest module: run it by hand (it starts a process per input and takes
a few minutes) to get the counts of a fresh hostile-input run::

    PATH=$PWD/.venv/bin:$PATH python tests/hostile/run_corpus.py [--metabill PATH] [--keep DIR]

It builds the demo database (validate, migrate, load, bill and finalize the
demo runs) in a temporary folder, then feeds every input of the corpus below
to the command it enters through, and classifies each outcome:

* **clear error**: exit code 1 or 2 with a message (and, for commands that
  write, nothing written: the database's row counts unchanged, no part file);
* **accepted**: exit code 0 (the input was valid after all);
* **internal error**: exit code 3 or a Python traceback;
* **partial write**: a refused command that changed row counts or left a
  ``.part`` file or a file it refused to finish.

The last lines are the counts; the exit code is 1 when an internal error or a
partial write was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HUGE = "1234567890123456789012345"


@dataclass
class Case:
    name: str
    args: list[str]
    files: dict[str, str | bytes] = field(default_factory=dict)
    writes: bool = True  # a refusal must leave the database as it was
    org_edit: tuple[str, str, str] | None = None  # (file, old, new) in a copy of the org
    fifo: str | None = None
    timeout: float = 60


def _csv(header: str, *rows: str) -> str:
    return header + "\n" + "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    """A CSV cell holding ``text`` exactly (quoted, quotes doubled)."""
    return '"' + text.replace('"', '""') + '"'


ITEM = "OrderItemNumber,OrderId.OrderNumber,ProductId.ProductCode,Quantity,UnitPrice,ServiceDate,ON_Title__c"
VALUES = [HUGE, "-" + HUGE + ".5", "1e400", "NaN", "Infinity", "9" * 99, "0." + "0" * 40 + "1", "1.00001", "abc",
          "", " ", "1,5", "99999999999999999999"]
DATES = ["9999-12-31", "0001-01-01", "1899-12-31", "2200-01-01", "2024-02-30", "31.12.2024", "2024-13-01"]
TEXTS = ["x" * 300, "\u202eevil", "a\u0000b", "=cmd|' /C calc'!A0", "'quoted", "\ud83d\ude00" * 100]


def corpus() -> list[Case]:
    cases: list[Case] = []
    for i, value in enumerate(VALUES):
        for column, cells in (("Quantity", f"{value},1,2024-05-01"), ("UnitPrice", f"1,{value},2024-05-01")):
            cases.append(Case(f"load csv {column}={value[:20]!r}", ["load", "OrderItem", "f.csv"],
                              {"f.csv": _csv(ITEM, f"H{i}{column},ORD-2024-001,SRV-CONSULT,{cells},t")}))
    for i, day in enumerate(DATES):
        cases.append(Case(f"load csv ServiceDate={day}", ["load", "OrderItem", "f.csv"],
                          {"f.csv": _csv(ITEM, f"HD{i},ORD-2024-001,SRV-CONSULT,1,1,{day},t")}))
    for i, text in enumerate(TEXTS):
        cases.append(Case(f"load csv Title={text[:12]!r}", ["load", "OrderItem", "f.csv"],
                          {"f.csv": _csv(ITEM, f"HT{i},ORD-2024-001,SRV-CONSULT,1,1,2024-05-01,{_cell(text)}")}))
    for i, value in enumerate([10**30, -(10**25), "1e400", 2**64, True, [1], {"a": 1}, None, "9999-12-31"]):
        body = json.dumps([{"Name": f"J{i}", "AccountNumber": f"J-{i}", "ON_PaymentDue__c": value,
                            "ON_DirectDebitMandateGranted__c": value if isinstance(value, str) else None}])
        cases.append(Case(f"load json {str(value)[:20]}", ["load", "Account", "f.json"],
                          {"f.json": body.replace('"1e400"', "1e400")}))
    cases.append(Case("load json Id 2**64", ["load", "Account", "f.json"],
                      {"f.json": json.dumps([{"Id": 2**64, "Name": "X", "AccountNumber": "X-1"}])}))
    cases.append(Case("load json nested deep", ["load", "Account", "f.json"], {"f.json": "[" * 100000}))
    cases.append(Case("load csv not utf-8", ["load", "Account", "f.csv"], {"f.csv": b"Name\n\xff\xfe\n"}))
    cases.append(Case("load csv ragged", ["load", "Account", "f.csv"], {"f.csv": "Name,AccountNumber\na\n"}))
    for owned in ("Invoice", "InvoiceLineItem", "InvoiceRun", "NumberRange", "BookingPeriod", "BookingDetail",
                  "Balance", "AccountingDocument", "AccountingDocumentItem", "InvoiceExportHistory", "Entry",
                  "EntryItem", "Installment", "Payment", "PaymentEntry", "Reduction"):
        cases.append(Case(f"load engine-owned {owned}", ["load", owned, "f.csv"], {"f.csv": "Name\nX\n"}))
    pay = "Invoice,Amount,Date,Reference,TransactionNo"
    for i, (amount, day, ref) in enumerate([
        (HUGE, "2024-11-02", "r"), ("1e5", "2024-11-02", "r"), ("-5", "2024-11-02", "r"), ("1.001", "2024-11-02", "r"),
        ("10.00", "9999-12-31", "r"), ("10.00", "0001-01-01", "r"), ("10.00", "2024-02-30", "r"),
        ("10.00", "2024-11-02", "R" * 300), ("10.00", "2024-11-02", "a\u0000b"), ("NaN", "2024-11-02", "r"),
    ]):
        cases.append(Case(f"payment import amount={amount[:12]} date={day} ref={ref[:8]!r}",
                          ["payment", "import", "p.csv"], {"p.csv": _csv(pay, f"INV-2024-00011,{amount},{day},{_cell(ref)},")}))
    cases.append(Case("payment import duplicate rows", ["payment", "import", "p.csv"],
                      {"p.csv": _csv("Invoice,Amount,Date", "INV-2024-00011,1.00,2024-11-02", "INV-2024-00011,1.00,2024-11-02")}))
    cases.append(Case("payment import TransactionNo 300 chars", ["payment", "import", "p.csv"],
                      {"p.csv": _csv(pay, f"INV-2024-00011,1.00,2024-11-02,r,{'T' * 300}")}))
    for day in DATES[:4]:
        cases.append(Case(f"payment register --date {day}", ["payment", "register", "INV-2024-00011", "1.00", "--date", day]))
        cases.append(Case(f"invoice-run --period-end {day}", ["invoice-run", "--filter", "Order Invoice",
                                                               "--period-start", "2024-01-01", "--period-end", day]))
    cases.append(Case("payment register amount 25 digits", ["payment", "register", "INV-2024-00011", HUGE, "--date", "2024-11-02"]))
    cases.append(Case("payment register reference 300 chars", ["payment", "register", "INV-2024-00011", "1.00",
                                                               "--date", "2024-11-02", "--reference", "R" * 300]))
    # validate-config on hostile settings and trees (the org is a copy).
    settings = [
        ("custom_settings/GlobalSettings.yaml", 'WriteOffCapAmount: "5.00"', f'WriteOffCapAmount: "{HUGE}"'),
        ("custom_settings/GlobalSettings.yaml", "StatuteOfLimitationsYears: 3", f"StatuteOfLimitationsYears: {HUGE}"),
        ("custom_settings/BookingText.yaml", "Text: Erlös [InvoiceNo] [AccountName]", 'Text: "Erl\\0s"'),
        ("custom_settings/BookingText.yaml", "Text: Erlös [InvoiceNo] [AccountName]", 'Text: "\\u202eErlös"'),
        ("custom_settings/BookingText.yaml", "Text: Erlös [InvoiceNo] [AccountName]", 'Text: "\\u2067x"'),
        ("custom_settings/TaxRule.yaml", "    TaxCode: DE_19\n", "    TaxCode: DE_19\n    EndDate: 9999-12-31\n"),
        ("custom_settings/TaxRule.yaml", 'TaxRate: "19.00"', f'TaxRate: "{HUGE}"'),
        ("metadata/objects/InvoiceExportHistory.yaml", "name_field: {", f"name_field: {HUGE}\nx_: {{"),
        ("metadata/objects/Account.yaml", "Phone: {type: Text, length: 40", f"Phone: {{type: Text, length: {HUGE}"),
        ("metadata/objects/Account.yaml", "Phone: {type: Text, length: 40", "Phone: {type: [Text], length: 40"),
        ("metabill.yaml", "version", "\u0000version"),
    ]
    for file, old, new in settings:
        cases.append(Case(f"validate-config {file} {new[:24]!r}", ["validate-config", "ORG"], writes=False,
                          org_edit=(file, old, new)))
    for folder in ("metadata/objects", "metadata/settings", "custom_settings", "templates"):
        cases.append(Case(f"validate-config with a FIFO in {folder}", ["validate-config", "ORG"], writes=False,
                          fifo=f"{folder}/Evil.yaml", timeout=30))
    return cases


@dataclass
class Outcome:
    case: Case
    code: int
    kind: str
    detail: str


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metabill", default="metabill")
    parser.add_argument("--keep", type=Path, default=None)
    options = parser.parse_args()
    work = options.keep or Path(tempfile.mkdtemp(prefix="metabill-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "demo.db"
    url = f"sqlite:///{db}"
    exe = options.metabill
    env = {**os.environ, "COLUMNS": "200"}

    def run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

    if not db.exists():
        demo = (REPO / "scripts" / "demo.sh").read_text().replace("OUT=out", f"OUT={work / 'demo'}")
        demo = demo.replace('cd "$(dirname "$0")/.."', f"cd {REPO}")
        script = work / "demo.sh"
        script.write_text(demo)
        built = subprocess.run(["bash", str(script)], env={**env, "PATH": f"{Path(exe).parent}:{env['PATH']}"}
                               if os.sep in exe else env, capture_output=True, text=True)
        if built.returncode != 0:
            print(built.stdout[-2000:], built.stderr[-2000:])
            return 2
        shutil.copyfile(work / "demo" / "demo.db", db)
    outcomes: list[Outcome] = []
    for case in corpus():
        folder = work / "case"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name, content in case.files.items():
            (folder / name).write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
        org = REPO
        if case.org_edit or case.fifo:
            org = folder / "org"
            org.mkdir()
            for part in ("metabill.yaml", "metadata", "custom_settings", "templates"):
                source = REPO / part
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, org / part)
            if case.org_edit:
                file, old, new = case.org_edit
                text = (org / file).read_text(encoding="utf-8")
                (org / file).write_text(text.replace(old, new, 1), encoding="utf-8")
            if case.fifo:
                os.mkfifo(org / case.fifo)
        args = [str(org) if a == "ORG" else a for a in case.args]
        if args[0] != "validate-config":
            args += ["--org", str(org), "--db", url]
        before = _counts(db)
        try:
            proc = run(args, folder, case.timeout)
            code, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired:
            code, out = 124, "timed out"
        changed = _counts(db) != before
        leftovers = [p.name for p in folder.rglob("*.part")]
        if code == 3 or "Traceback" in out or code == 124:
            kind = "internal error"
        elif code != 0 and ((case.writes and changed) or leftovers):
            kind = "partial write"
        elif code == 0:
            kind = "accepted"
        else:
            kind = "clear error"
        outcomes.append(Outcome(case, code, kind, out.strip().splitlines()[-1][:160] if out.strip() else ""))
    for o in outcomes:
        print(f"{o.kind:15} exit {o.code:3}  {o.case.name[:70]:70}  {o.detail}")
    counts = {kind: sum(1 for o in outcomes if o.kind == kind)
              for kind in ("clear error", "accepted", "internal error", "partial write")}
    print(f"\ninputs tried: {len(outcomes)}; " + "; ".join(f"{k}: {v}" for k, v in counts.items()))
    return 1 if counts["internal error"] or counts["partial write"] else 0


if __name__ == "__main__":
    sys.exit(main())
