"""Fixtures of the document tests: the demo database of the export tests
(``demo`` on SQLite and PostgreSQL, ``demo_sqlite``), plus helpers that add
balances and render invoices from it.

Balances are inserted as plain Balance rows through the metadata (no cash
code): the document reads whatever Balance rows name the invoice.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

from lxml import html as lxml_html

from engine.project import load_project
from engine.config.model import OrgModel
from engine.documents import find_invoices, read_documents, render_html
from engine.storage.bulk import RowWriter

from config.orgcopy import REPO_ROOT, copy_org
from exports.conftest import Demo, demo, demo_sqlite, make_demo, sample_model  # noqa: F401 (fixtures)
from contexts import context


def add_balance(database: Demo, invoice_name: str, balance_type: str, amount: str, day: date, **extra) -> int:
    """Insert a Balance row on the invoice (negative amounts are credits)."""
    invoice = database.rows("Invoice", database.table("Invoice").c.name == invoice_name)[0]
    record = {"account": invoice["account"], "invoice": invoice["id"], "type": balance_type,
              "amount": Decimal(amount), "date": day, "currencyisocode": "EUR", **extra}
    with database.engine.begin() as conn:
        RowWriter(conn, database.model.require("Balance")).insert([record])
    return record["id"]


def invoice_html(database: Demo, name: str, model: OrgModel | None = None, org: Path = REPO_ROOT) -> str:
    model = model or database.model
    with database.engine.connect() as conn:
        [(invoice_id, _)] = find_invoices(conn, context(model), names=[name])
        [data] = read_documents(conn, context(model), [invoice_id], today=date(2024, 12, 31))
    return render_html(org, context(model), data).html


def parse(text: str):
    return lxml_html.fromstring(text)


def row_texts(tree, css_class: str) -> list[list[str]]:
    """The cell texts of every ``tr`` with the class, whitespace collapsed."""
    rows = tree.xpath(f"//tr[contains(concat(' ', normalize-space(@class), ' '), ' {css_class} ')]")
    return [[" ".join(td.text_content().split()) for td in row.xpath("./td")] for row in rows]


def org_with(tmp_path: Path, template_yaml: str | None = None, files: dict[str, str] | None = None) -> Path:
    """A copy of the sample org whose custom_settings/Template.yaml is
    ``template_yaml`` (when given) with extra files under templates/."""
    org = copy_org(tmp_path / "org")
    if template_yaml is not None:
        (org / "custom_settings" / "Template.yaml").write_text(template_yaml, encoding="utf-8")
    for name, text in (files or {}).items():
        path = org / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return org


def load_ok(org: Path) -> OrgModel:
    result = load_project(org)
    assert result.ok, [f"{d.location.render()}: {d.code} {d.message}" for d in result.errors]
    return result.model



def draft_names(database: Demo, tmp_path: Path) -> list[str]:
    """Two new orders billed into drafts; their names. Issued invoices return
    their stored document, so what a template does with real data at render
    time is seen on drafts."""
    import sqlalchemy as sa

    from engine.billing.drafts import draft_ids
    from engine.billing.run import RunRequest, run_invoices
    from engine.storage.records import load_records

    ctx = context(database.model)
    orders = tmp_path / "orders.csv"
    orders.write_text("Name,OrderNumber,AccountId.AccountNumber,EffectiveDate,Status,Type,CurrencyIsoCode\n"
                      "March A,ORD-DOC-1,10001,2024-03-05,Activated,Standard,EUR\n"
                      "March B,ORD-DOC-2,10002,2024-03-06,Activated,Standard,EUR\n", encoding="utf-8")
    items = tmp_path / "items.csv"
    items.write_text("OrderItemNumber,OrderId.OrderNumber,ProductId.ProductCode,Quantity,UnitPrice,ON_Title__c\n"
                     "ORD-DOC-1-1,ORD-DOC-1,SRV-CONSULT,2,120.00,Beratung\n"
                     "ORD-DOC-2-1,ORD-DOC-2,SRV-CONSULT,3,120.00,Beratung\n", encoding="utf-8")
    for object_name, path in (("Order", orders), ("OrderItem", items)):
        loaded = load_records(database.engine, ctx, object_name, path)
        assert loaded.ok, loaded.render()
    report = run_invoices(database.engine, ctx, RunRequest(("Order Invoice",), date(2024, 3, 1), date(2024, 3, 31),
                                                           invoice_date=date(2024, 3, 31), today=date(2024, 3, 31)))
    invoice = ctx.table("Invoice")
    with database.engine.connect() as conn:
        ids = draft_ids(conn, ctx, run_id=report.run_id)
        return sorted(conn.execute(sa.select(invoice.c.name).where(invoice.c.id.in_(ids))).scalars())
