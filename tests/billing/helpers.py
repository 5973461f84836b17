"""Shared helpers of the invoice-run tests: the test org, a database harness,
canonical snapshots of what a run produced, and the invariants every run
must keep.

The *test org* is the sample org plus a few additions that never change what
the sample data bills (all new fields are empty in data/*.csv):

* ``Usage__c``: a single-object source whose controlling fields are plain
  fields (not formulas), so a test can set every value directly, with data ON
  fields for the copy/precedence/coercion tests, and the filter ``Usage``;
* ``ON_InvoiceCriterion__c`` on ``Partial_Delivery__c`` (header level of the
  single-object filter ``Order Sub Invoice``) and on ``OrderItem`` (child
  level of the parent-child filter ``Order Invoice``).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import event

from engine.billing.run import RunReport, RunRequest, run_invoices
from engine.config.model import OrgModel
from engine.storage.bulk import RowWriter
from engine.storage.schema import CLAIM

from config.orgcopy import InsertAfter, copy_org
from contexts import context

SAMPLE_FILTERS = ("UC1 Sub Invoice", "UC1 Final Invoice", "Order Sub Invoice", "Order Invoice")
YEAR_2024 = (date(2024, 1, 1), date(2024, 12, 31))

USAGE_OBJECT = """\
version: 1
object: Usage__c
label: Usage
plural_label: Usages
description: Test source object of the invoice-run tests (single-object run, plain controlling fields).
name_field: {type: AutoNumber, format: "U-{00000}", label: Usage Number}
fields:
  ON_Account__c: {type: Text, length: 40, label: Invoice Account}
  ON_Template__c: {type: Text, length: 80, label: Invoice Template}
  ON_ServiceDate__c: {type: Date, label: Service Date}
  ON_IsItem__c: {type: Checkbox, label: Is Item, default: true}
  ON_Type__c: {type: Text, length: 40, label: Invoice Type}
  ON_SubInvoiceAssignmentKey__c: {type: Text, length: 80, label: Sub Invoice Assignment Key}
  ON_InvoiceCriterion__c: {type: Text, length: 40, label: Invoice Criterion}
  ON_Title__c: {type: Text, length: 255, label: Line Title}
  ON_Quantity__c: {type: Number, precision: 16, scale: 4, label: Quantity}
  ON_UnitPrice__c: {type: Currency, precision: 18, scale: 4, label: Unit Price}
  ON_Invoice__c: {type: Lookup, to: Invoice, relationship_name: InvoicedUsages, on_delete: clear, label: Invoice}
  ON_LastInvoiceRun__c: {type: Lookup, to: InvoiceRun, relationship_name: LastRunUsages, on_delete: clear,
                         label: Last Invoice Run}
  ON_InvoiceBuildError__c: {type: Text, length: 255, label: Invoice Build Error}
  ON_PaymentMethod__c: {type: Text, length: 40, label: Payment Method (Invoice)}
  ON_PaymentDue__c: {type: Number, precision: 6, scale: 2, label: Payment Terms (Invoice)}
  ON_DirectDebitSequenceType__c: {type: Text, length: 10, label: Sequence Type (Invoice)}
  ON_BillingCity__c: {type: Text, length: 40, label: Billing City (Invoice)}
  ON_Region__c: {type: Text, length: 40, label: Tax Region (Invoice)}
  ON_DebtorNo__c: {type: Number, precision: 10, scale: 0, label: Debtor Number (Invoice)}
  ON_Contact__c: {type: Text, length: 20, label: Contact (Invoice)}
  ON_CostObject__c: {type: Text, length: 40, label: Cost Object (Line)}
  ON_ProductTaxClass__c: {type: Text, length: 40, label: Product Tax Class (Line)}
"""

USAGE_FILTER = """\
version: 1
setting: Filter
records:
  - Name: Usage
    Target: Usage__c
    UseCase: Generic
    Sequence: 50
"""


def make_test_org(dest: Path) -> Path:
    """The sample org plus the test additions (see the module docstring)."""
    org = copy_org(dest)
    (org / "metadata/objects/Usage__c.yaml").write_text(USAGE_OBJECT, encoding="utf-8")
    (org / "custom_settings/Filter_billing_tests.yaml").write_text(USAGE_FILTER, encoding="utf-8")
    criterion = "  ON_InvoiceCriterion__c: {type: Text, length: 40, label: Invoice Criterion}"
    InsertAfter("metadata/objects/Partial_Delivery__c.yaml", "fields:", criterion).apply(org)
    InsertAfter("metadata/objects/OrderItem.yaml", "fields:", criterion).apply(org)
    return org


# --- values ---------------------------------------------------------------------------


def norm(value: object) -> object:
    """Backend-independent form of a stored value (for comparisons)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, bool):
        return value
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return tuple(norm(v) for v in value)
    return value


def D(text: str) -> Decimal:  # noqa: N802 - reads like a literal
    return Decimal(text)


class InjectedFault(RuntimeError):
    """Raised by :func:`fault_after` to simulate a crash."""


@contextmanager
def count_statements(engine: sa.Engine) -> Iterator[list[int]]:
    counter = [0]

    def listener(*_args) -> None:
        counter[0] += 1

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", listener)


@contextmanager
def fault_after(engine: sa.Engine, k: int) -> Iterator[list[int]]:
    """Every SQL statement after the first ``k`` raises InjectedFault (the
    database "dies" at statement k + 1); the listener is removed on exit."""
    counter = [0]

    def listener(_conn, _cursor, statement, *_rest) -> None:
        counter[0] += 1
        if counter[0] > k:
            raise InjectedFault(f"injected fault at statement {counter[0]}: {statement[:60]}")

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield counter
    finally:
        event.remove(engine, "before_cursor_execute", listener)


# --- the harness ----------------------------------------------------------------------


class Harness:
    """One database with the org's schema: run invoice runs, insert and read
    records with typed values (Decimal on both backends)."""

    def __init__(self, engine: sa.Engine, model: OrgModel, url: str, org_dir: Path):
        self.engine = engine
        self.model = model
        self.url = url
        self.org_dir = org_dir
        self.tables = context(model).metadata

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def t(self, object_name: str) -> sa.Table:
        return self.tables.tables[self.model.require(object_name).table_name]

    # -- runs ---------------------------------------------------------------------

    def run(self, *filters: str, start: date = YEAR_2024[0], end: date = YEAR_2024[1], **options) -> RunReport:
        request = RunRequest(filters=tuple(filters), period_start=start, period_end=end, **options)
        return run_invoices(self.engine, context(self.model), request)

    # -- records ------------------------------------------------------------------

    def insert(self, object_name: str, records: list[dict]) -> list[int]:
        with self.engine.begin() as conn:
            RowWriter(conn, self.model.require(object_name)).insert(records)
        return [r["id"] for r in records]

    def usage(self, *records: dict, **common) -> list[int]:
        """Insert Usage__c records: keyword names without ON_ and __c
        (``title=``, ``account=``); ``common`` applies to all."""
        rows = []
        for record in records:
            merged = {**common, **record}
            rows.append({f"on_{key}__c": value for key, value in merged.items()})
        return self.insert("Usage__c", rows)

    def select(self, object_name: str, *where: sa.ColumnElement[bool]) -> list[dict]:
        table = self.t(object_name)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where).order_by(table.c.id))]

    def get(self, object_name: str, record_id: int) -> dict:
        rows = self.select(object_name, self.t(object_name).c.id == record_id)
        assert rows, f"no {object_name} {record_id}"
        return rows[0]

    def by_field(self, object_name: str, field: str, value: object) -> dict:
        rows = self.select(object_name, self.t(object_name).c[field.lower()] == value)
        assert len(rows) == 1, f"{len(rows)} {object_name} with {field}={value!r}"
        return rows[0]

    def account_id(self, number: str) -> int:
        return self.by_field("Account", "AccountNumber", number)["id"]

    def update(self, object_name: str, record_id: int, **values) -> None:
        table = self.t(object_name)
        with self.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == record_id).values(**values))

    def invoices(self, *where: sa.ColumnElement[bool]) -> list[dict]:
        return self.select("Invoice", *where)

    def lines(self, invoice_id: int) -> list[dict]:
        table = self.t("InvoiceLineItem")
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(table).where(table.c.invoice == invoice_id).order_by(table.c.sequence, table.c.id)
            )
            return [dict(r._mapping) for r in rows]

    def claims(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(CLAIM).order_by(*CLAIM.primary_key.columns))]

    # -- stand-ins for later issues -------------------------------------------------

    def set_open(self, *invoice_ids: int) -> None:
        """Stands in for finalization (a later issue): the sub invoices become
        Open so that a final invoice may deduct them."""
        table = self.t("Invoice")
        with self.engine.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id.in_(invoice_ids)).values(status="Open"))

    def pay(self, invoice_id: int, amount: Decimal, on: date) -> None:
        """Stands in for payment registration (a later issue): a Payment
        balance (negative amount = money received) on the invoice."""
        invoice = self.get("Invoice", invoice_id)
        self.insert("Balance", [{
            "account": invoice["account"], "invoice": invoice_id, "type": "Payment",
            "amount": -amount, "date": on, "currencyisocode": invoice["currencyisocode"],
        }])

    # -- dumps ----------------------------------------------------------------------

    def dump_all_tables(self) -> dict[str, list[tuple]]:
        """Every row of every table (internal ones included), sorted."""
        out: dict[str, list[tuple]] = {}
        with self.engine.connect() as conn:
            for name in sorted(sa.inspect(conn).get_table_names()):
                rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).all()
                out[name] = sorted((tuple(r) for r in rows), key=repr)
        return out


# --- canonical views ------------------------------------------------------------------

LINE_KEYS = ("sequence", "title", "quantity", "unitprice", "postotalnet", "postotaltax", "postotalgross", "taxrate",
             "taxcode", "appliedtaxrule", "isdeduction", "sourceobject", "sourcerecordid", "costobject",
             "serviceperiodstart", "serviceperiodend")
INVOICE_KEYS = ("type", "class", "status", "currencyisocode", "template", "businessentity", "subinvoiceassignmentkey",
                "totalnet", "totaltax", "grandtotal", "paymentdue", "paymentmethod", "region", "debtorno__c",
                "purchaseorderno__c", "serviceperiodstart", "serviceperiodend", "date")


def snapshot(h: Harness) -> list[tuple]:
    """The invoices of the database, independent of ids and insertion order:
    per invoice the account number, header values and its lines; deduction
    lines name their sub invoice by the source records of its lines."""
    accounts = {a["id"]: a["accountnumber"] or a["name"] for a in h.select("Account")}
    lines: dict[int, list[dict]] = defaultdict(list)
    for line in h.select("InvoiceLineItem"):
        lines[line["invoice"]].append(line)
    sources = {inv_id: tuple(sorted(str(l["sourcerecordid"]) for l in ls)) for inv_id, ls in lines.items()}
    out = []
    for invoice in h.invoices():
        own = sorted(lines[invoice["id"]], key=lambda l: (l["sequence"], l["id"]))
        out.append((
            accounts[invoice["account"]],
            tuple(norm(invoice[k]) for k in INVOICE_KEYS),
            tuple(
                tuple(norm(l[k]) for k in LINE_KEYS) + (sources.get(l["subinvoice"]) if l["subinvoice"] else None,)
                for l in own
            ),
        ))
    return sorted(out, key=repr)


def writeback_state(h: Harness) -> dict:
    """Per (filter target, suffix): the write-back values of every source
    record, with the invoice replaced by the sources it billed."""
    invoice_sources = {}
    for line in h.select("InvoiceLineItem"):
        invoice_sources.setdefault(line["invoice"], set()).add(str(line["sourcerecordid"]))
    state = {}
    for obj, suffix in filter_sources(h.model):
        inv, run, err = (f"on_invoice{suffix}__c", f"on_lastinvoicerun{suffix}__c", f"on_invoicebuilderror{suffix}__c")
        for record in h.select(obj):
            billed = record[inv.lower()]
            state[(obj, suffix, record["id"])] = (
                tuple(sorted(invoice_sources[billed])) if billed else None,
                record[run.lower()],
                record[err.lower()],
            )
    return state


def filter_sources(model: OrgModel) -> list[tuple[str, str]]:
    """(header object, suffix) of every generic filter."""
    pairs = {(str(r.get("Target")), str(r.get("TransactionalSuffix") or "")) for r in model.setting_records("Filter")
             if r.get("UseCase") in (None, "Generic")}
    return sorted(pairs)


def assert_invariants(h: Harness) -> None:
    """What must hold after any run, crashed or not, checked with SQL:
    totals are the sums of their lines, gross = net + tax on every line and
    invoice, the class follows the sign, every invoice has lines, no line is
    orphaned, every claim matches the source's write-back field and vice
    versa (each source billed at most once per suffix)."""
    inv, line = h.t("Invoice"), h.t("InvoiceLineItem")
    with h.engine.connect() as conn:
        sums = {
            r.invoice: r
            for r in conn.execute(
                sa.select(
                    line.c.invoice,
                    sa.func.count().label("n"),
                    sa.func.sum(line.c.postotalnet).label("net"),
                    sa.func.sum(line.c.postotaltax).label("tax"),
                    sa.func.sum(line.c.postotalgross).label("gross"),
                ).group_by(line.c.invoice)
            )
        }
        invoices = conn.execute(sa.select(inv)).mappings().all()
        bad_lines = conn.execute(
            sa.select(sa.func.count()).where(line.c.postotalgross != line.c.postotalnet + line.c.postotaltax)
        ).scalar_one()
        orphans = conn.execute(
            sa.select(sa.func.count())
            .select_from(line.outerjoin(inv, line.c.invoice == inv.c.id))
            .where(inv.c.id.is_(None))
        ).scalar_one()
    assert bad_lines == 0
    assert orphans == 0
    for invoice in invoices:
        total = sums.get(invoice["id"])
        assert total is not None and total.n > 0, f"invoice {invoice['name']} has no lines"
        assert (invoice["totalnet"], invoice["totaltax"], invoice["grandtotal"]) == (total.net, total.tax, total.gross)
        assert invoice["grandtotal"] == invoice["totalnet"] + invoice["totaltax"]
        assert invoice["class"] == ("Invoice" if invoice["grandtotal"] >= 0 else "Credit")
    assert set(sums) <= {i["id"] for i in invoices}

    claims = h.claims()
    invoice_ids = {i["id"] for i in invoices}
    claimed = {(c["source_table"], c["source_id"], c["suffix"]): c["invoice_id"] for c in claims}
    assert len(claimed) == len(claims)
    written = {}
    for obj, suffix in filter_sources(h.model):
        table = h.t(obj)
        for record in h.select(obj):
            billed = record[f"on_invoice{suffix}__c".lower()]
            if billed is not None:
                written[(table.name, record["id"], suffix)] = billed
    assert claimed == written
    assert set(claimed.values()) <= invoice_ids
    # every invoice was claimed by at least one source (none is left behind by a crash)
    assert invoice_ids == set(claimed.values())


def summaries(report: RunReport) -> list[tuple]:
    """The invoices a run reported, without ids and names."""
    return sorted(
        (s.account, s.type, s.lines, norm(s.total_net), norm(s.grand_total), s.currency) for s in report.invoices
    )


def db_summaries(h: Harness, ids: Iterable[int]) -> list[tuple]:
    """The view of :func:`summaries` for the given invoices, read from the database."""
    out = []
    for invoice in h.invoices(h.t("Invoice").c.id.in_(list(ids))):
        out.append((invoice["accountname"] or str(invoice["account"]), invoice["type"], len(h.lines(invoice["id"])),
                    norm(invoice["totalnet"]), norm(invoice["grandtotal"]), invoice["currencyisocode"]))
    return sorted(out)


def failures(report: RunReport) -> dict[int, str]:
    """Record id -> message (for runs whose failing records are of one object)."""
    return {f.record_id: f.message for fr in report.filters for f in fr.failures}


def failure_list(report: RunReport) -> list[tuple[str, str, int, str]]:
    """(filter, object, record id, message) of every failure, in report order."""
    return [(fr.name, f.object_name, f.record_id, f.message) for fr in report.filters for f in fr.failures]


def only(items: Iterable):
    items = list(items)
    assert len(items) == 1, items
    return items[0]
