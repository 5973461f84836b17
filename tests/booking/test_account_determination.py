"""Account determination (domain-spec §6): G/L rules by tax code, the
fallback to the collective account of type Revenue, a customer criterion
added in YAML only, precedence (more significant criteria, shorter lists,
name on a tie with warning W100) and ``metabill explain``."""

from __future__ import annotations

import json
from datetime import date

import pytest
from click.testing import CliRunner

from engine.domain.rules import decide
from engine.booking.accounts import AccountResolver
from engine.cli.main import cli

from config.orgcopy import REPO_ROOT, AddFile, InsertAfter

from .helpers import Books, D, assert_books_balance, load_model, org_variant
from contexts import context

# A customer criterion: Region__c on the rule and on the invoice line, filled
# from a line-level ON field of the order product. No code knows about it.
REGION_EDITS = (
    InsertAfter("metadata/settings/GlAccountRule.yaml", "fields:",
                "  Region__c: {type: Text, length: 255, label: Sales Region}"),
    InsertAfter("metadata/objects/InvoiceLineItem.yaml", "fields:",
                "  Region__c: {type: Text, length: 40, label: Sales Region}"),
    InsertAfter("metadata/objects/OrderItem.yaml", "fields:",
                "  ON_Region__c: {type: Text, length: 40, label: Sales Region (Invoice Line)}"),
    AddFile("custom_settings/GlAccountRule_region.yaml", """\
version: 1
setting: GlAccountRule
records:
  - Name: Revenue 19% Nord
    TaxCode: DE_19
    Region__c: NORD, NORDOST
    GLAccount: "8410"
"""),
)

# Precedence: a rule with one more criterion, two rules differing only in the
# length of a list, and two rules that tie completely.
PRECEDENCE_EDITS = (
    AddFile("custom_settings/GlAccountRule_precedence.yaml", """\
version: 1
setting: GlAccountRule
records:
  - Name: Revenue 19% Services
    TaxCode: DE_19
    ProductGroup: Services
    GLAccount: "8401"
  - Name: Revenue 7% Books A
    TaxCode: DE_7
    ProductGroup: Books, Software
    GLAccount: "8310"
  - Name: Revenue 7% Books B
    TaxCode: DE_7
    ProductGroup: Books
    GLAccount: "8320"
  - Name: Revenue RC Z
    TaxCode: RC
    GLAccount: "8338"
  - Name: Revenue RC Y
    TaxCode: RC
    GLAccount: "8337"
  - Name: Revenue Special
    CustomRule: SPECIAL
    GLAccount: "8999"
"""),
)


@pytest.fixture(scope="module")
def region_org(tmp_path_factory):
    org = org_variant(tmp_path_factory.mktemp("region") / "org", *REGION_EDITS)
    return org, load_model(org)


@pytest.fixture(scope="module")
def precedence_org(tmp_path_factory):
    org = org_variant(tmp_path_factory.mktemp("precedence") / "org", *PRECEDENCE_EDITS)
    return org, load_model(org)


def revenue(books: Books, name: str) -> list[tuple]:
    return [(d["accountno"], d["accountrule"], d["taxcode"], d["amount"])
            for d in books.details_of(name) if d["type"] == "Revenue"]


def test_gl_rule_by_tax_code_and_fallback_to_the_collective_revenue_account(books):
    books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 2, 29), today=date(2024, 2, 29))
    by_account = {i["accountname"]: i["name"] for i in books.invoices()}
    assert revenue(books, by_account["Muster GmbH"]) == [
        ("8400", "Revenue 19%", "DE_19", D("960.00")), ("8300", "Revenue 7%", "DE_7", D("99.80"))]
    # Reverse charge: no G/L rule has tax code RC -> collective account of type Revenue.
    assert revenue(books, by_account["Alpenblick Hotel GmbH"]) == [("8200", "Revenue", "RC", D("1550.00"))]
    taxes = [(d["accountno"], d["accountrule"]) for d in books.details() if d["type"] == "Tax"]
    assert taxes == [("1776", "Tax 19%"), ("1771", "Tax 7%")]
    assert_books_balance(books)


def test_custom_criterion_in_yaml_changes_the_account(region_org, db_url, make_books):
    org, model = region_org
    books = make_books(db_url, model, org)
    items = books.t("OrderItem")
    with books.engine.begin() as conn:
        conn.execute(items.update().where(items.c.orderitemnumber == "ORD-2024-001-1").values(on_region__c="NORD"))
        conn.execute(items.update().where(items.c.orderitemnumber == "ORD-2024-004-1").values(on_region__c="SUED"))
    step = books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 4, 30), today=date(2024, 4, 30))
    assert not step.finalized.failures
    by_account = {i["accountname"]: i["name"] for i in books.invoices()}
    lines = books.lines(by_account["Muster GmbH"])
    assert [l["region__c"] for l in lines] == ["NORD", None]
    # NORD is in the rule's list: 8410; the 7 % line has no region: the tax-code rule.
    assert revenue(books, by_account["Muster GmbH"]) == [
        ("8410", "Revenue 19% Nord", "DE_19", D("960.00")), ("8300", "Revenue 7%", "DE_7", D("99.80"))]
    # SUED is not in the list: the rule without the criterion applies.
    assert revenue(books, by_account["Nordlicht Logistik GmbH"]) == [("8400", "Revenue 19%", "DE_19", D("750.00"))]
    movements = assert_books_balance(books)
    assert movements["8410"] == D("-960.00")


def test_the_custom_criterion_is_a_rule_criterion(region_org):
    _, model = region_org
    resolver = AccountResolver(context(model))
    assert [c.name for c in resolver.gl_criteria][:1] == ["Region__c"]
    invoice = {"businessentity": "DE01", "class": "Invoice", "type": "Standard"}
    choice = resolver.gl_account(invoice, {"taxcode": "DE_19", "region__c": "NORDOST"})
    assert (choice.account, choice.rule) == ("8410", "Revenue 19% Nord")
    assert resolver.gl_account(invoice, {"taxcode": "DE_19", "region__c": "nord"}).account == "8400"  # case-sensitive
    assert resolver.gl_account(invoice, {"taxcode": "DE_7", "region__c": "NORD"}).account == "8300"


def test_precedence_more_criteria_then_shorter_lists_then_name(precedence_org):
    _, model = precedence_org
    resolver = AccountResolver(context(model))
    invoice = {"businessentity": "DE01", "class": "Invoice", "type": "Standard"}

    services = resolver.gl_account(invoice, {"taxcode": "DE_19", "productgroup": "Services"})
    assert (services.account, services.rule, services.decision.tie) == ("8401", "Revenue 19% Services", False)
    assert [c.name for c in services.decision.candidates] == ["Revenue 19% Services", "Revenue 19%"]
    hardware = resolver.gl_account(invoice, {"taxcode": "DE_19", "productgroup": "Hardware"})
    assert (hardware.account, hardware.rule) == ("8400", "Revenue 19%")

    books = resolver.gl_account(invoice, {"taxcode": "DE_7", "productgroup": "Books"})
    assert (books.account, books.rule, books.decision.tie) == ("8320", "Revenue 7% Books B", False)
    assert [c.name for c in books.decision.candidates] == ["Revenue 7% Books B", "Revenue 7% Books A", "Revenue 7%"]
    software = resolver.gl_account(invoice, {"taxcode": "DE_7", "productgroup": "Software"})
    assert (software.account, software.rule) == ("8310", "Revenue 7% Books A")

    tie = resolver.gl_account(invoice, {"taxcode": "RC", "productgroup": "Software"})
    assert (tie.account, tie.rule, tie.decision.tie) == ("8337", "Revenue RC Y", True)
    assert "tie, won by name" in tie.explain()


def test_custom_rule_takes_precedence_over_all_other_criteria(precedence_org):
    _, model = precedence_org
    resolver = AccountResolver(context(model))
    invoice = {"businessentity": "DE01", "class": "Invoice", "type": "Standard"}
    choice = resolver.gl_account(invoice, {"taxcode": "DE_19", "on_customglrule__c": "SPECIAL"})
    assert (choice.account, choice.rule) == ("8999", "Revenue Special")


def test_precedence_through_finalization(precedence_org, db_url, make_books):
    org, model = precedence_org
    books = make_books(db_url, model, org)
    books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 2, 29), today=date(2024, 2, 29))
    by_account = {i["accountname"]: i["name"] for i in books.invoices()}
    assert revenue(books, by_account["Muster GmbH"]) == [
        ("8401", "Revenue 19% Services", "DE_19", D("960.00")), ("8320", "Revenue 7% Books B", "DE_7", D("99.80"))]
    assert revenue(books, by_account["Alpenblick Hotel GmbH"]) == [("8337", "Revenue RC Y", "RC", D("1550.00"))]
    assert_books_balance(books)


def _validate(org) -> tuple[int, list[dict]]:
    result = CliRunner().invoke(cli, ["validate-config", str(org), "--format", "json"])
    payload = json.loads(result.output)
    diagnostics = payload["diagnostics"] if isinstance(payload, dict) else payload
    return result.exit_code, diagnostics


def test_validate_config_warns_about_the_tie(precedence_org):
    org, _ = precedence_org
    code, diagnostics = _validate(org)
    assert code == 0  # warnings only
    w100 = [d["message"] for d in diagnostics if d["code"] == "W100"]
    tie = [m for m in w100 if "'Revenue RC Z'" in m and "'Revenue RC Y'" in m]
    assert len(tie) == 1 and "'Revenue RC Y' would win by name" in tie[0]
    assert not [d for d in diagnostics if d["code"] != "W100"]
    _, sample = _validate(REPO_ROOT)
    assert not [d for d in sample if d["code"] == "W100"]


def test_validate_config_does_not_call_a_shorter_list_a_tie(precedence_org):
    org, _ = precedence_org
    _, diagnostics = _validate(org)
    books_pair = [d["message"] for d in diagnostics if d["code"] == "W100" and "Books A" in d["message"]]
    assert books_pair == []


def test_explain_lists_winner_criteria_and_losers(precedence_org, db_url, make_books):
    org, model = precedence_org
    books = make_books(db_url, model, org)
    books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 1, 31), today=date(2024, 1, 31))
    result = CliRunner().invoke(cli, ["explain", "INV-2024-00001", "--org", str(org), "--db", books.url])
    assert result.exit_code == 0, result.output
    out = result.output
    blocks = {}
    for block in out.split("\nBD-"):
        head = block.splitlines()[0]
        blocks[" ".join(head.split()[1:3])] = block
    assert set(blocks) == {"Revenue 960.00", "Revenue 99.80", "Tax 182.40", "Tax 6.99"}
    rev19 = blocks["Revenue 960.00"]
    assert "debit 10001 / credit 8401  (AccountNo 8401, rule 'Revenue 19% Services')" in rev19
    assert "decided by: Assignment Rules - G/L Account for line" in rev19
    # criteria in the setting's declaration (= precedence) order: TaxCode before ProductGroup
    assert ("WON  'Revenue 19% Services': TaxCode='DE_19' vs 'DE_19', ProductGroup='Services' vs 'Services'"
            in rev19)
    assert "lost 'Revenue 19%': TaxCode='DE_19' vs 'DE_19' (less specific)" in rev19
    assert "no   'Revenue 7%': TaxCode is 'DE_7' but the context has 'DE_19'" in rev19
    assert "no   'Revenue RC Y': TaxCode is 'RC' but the context has 'DE_19'" in rev19
    rev7 = blocks["Revenue 99.80"]
    assert "WON  'Revenue 7% Books B'" in rev7
    assert ("lost 'Revenue 7% Books A': TaxCode='DE_7' vs 'DE_7', ProductGroup='Books, Software' vs 'Books' "
            "(less specific)") in rev7
    assert "lost 'Revenue 7%': TaxCode='DE_7' vs 'DE_7' (less specific)" in rev7
    tax = blocks["Tax 182.40"]
    assert "decided by: Collective Accounts of type Tax" in tax
    assert "WON  'Tax 19%': TaxCode='DE_19' vs 'DE_19'" in tax
    assert "no   'Tax 7%': TaxCode is 'DE_7' but the context has 'DE_19'" in tax


def test_explain_shows_the_revenue_fallback(books):
    books.bill(("Order Invoice",), *(date(2024, 2, 1), date(2024, 2, 29)), today=date(2024, 2, 29))
    result = CliRunner().invoke(cli, ["explain", "INV-2024-00001", "--org", str(REPO_ROOT), "--db", books.url])
    assert result.exit_code == 0, result.output
    assert "decided by: no G/L rule matched: collective account of type Revenue" in result.output
    assert "WON  'Revenue': no criteria (catch-all)" in result.output
    unknown = CliRunner().invoke(cli, ["explain", "INV-2099-99999", "--org", str(REPO_ROOT), "--db", books.url])
    assert unknown.exit_code == 1 and "no invoice INV-2099-99999" in unknown.output


def test_finalized_lines_carry_their_gl_account(books_sqlite):
    books = books_sqlite
    books.bill(("Order Invoice",), date(2024, 1, 1), date(2024, 1, 31), today=date(2024, 1, 31))
    assert [(l["glaccount"], l["glaccountrule"]) for l in books.lines("INV-2024-00001")] == [
        ("8400", "Revenue 19%"), ("8300", "Revenue 7%")]


def test_decide_is_the_same_function_for_every_rule_setting(sample_model):
    """Collective accounts use the same matching: the Bank account with tax
    code DE_19 beats the catch-all bank account for a DE_19 payment."""
    resolver = AccountResolver(context(sample_model))
    bank = resolver.collective_account("Payment", {"taxcode": "DE_19"})
    assert (bank.account, bank.rule) == ("1200", "Bank")
    other = resolver.collective_account("Payment", {"taxcode": "DE_7"})
    assert (other.account, other.rule) == ("1200", "Bank (all tax codes)")
    assert resolver.collective_account("Interim Revenue", {"taxcode": "DE_7"}).account is None
    direct = decide("CollectiveAccount", resolver.collective_records, resolver.collective_criteria,
                    lambda c: {"taxcode": "DE_7"}.get(c.context_field.lower()),
                    admissible=lambda r: r.get("Type") == "Tax")
    assert direct.winner.name == "Tax 7%"
