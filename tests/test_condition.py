"""Filter conditions: parsing and checking (engine.billing.condition) and
compiling to SQLAlchemy, executed on SQLite and PostgreSQL
(engine.billing.condition.sql)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from engine.billing.condition import (
    MAX_DEPTH,
    MAX_IN_ITEMS,
    MAX_LENGTH,
    MAX_NODES,
    And,
    Comparison,
    Condition,
    DateLiteral,
    LikePattern,
    Not,
    Or,
    parse_condition,
)
from engine.billing.condition.sql import compile_condition
from engine.config.model import FieldDef, FieldType, FormulaDef, ObjectDef, ObjectKind, OrgModel
from contexts import context

T = FieldType
TODAY = date(2024, 3, 15)
UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# The test org


def fld(obj: str, name: str, type_: FieldType, **kw) -> FieldDef:
    return FieldDef(name=name, object_name=obj, type=type_, label=kw.pop("label", name), **kw)


def system_fields(obj: str) -> tuple[FieldDef, ...]:
    return (
        fld(obj, "Id", T.ID, system=True),
        fld(obj, "CreatedDate", T.DATETIME, system=True),
        fld(obj, "LastModifiedDate", T.DATETIME, system=True),
    )


ACCOUNT = ObjectDef(
    name="Account",
    label="Account",
    kind=ObjectKind.OBJECT,
    fields=system_fields("Account") + (
        fld("Account", "Name", T.TEXT, length=80),
        fld("Account", "Type", T.PICKLIST, values=("Customer", "Partner", "Prospect")),
        fld("Account", "BillingCountryCode", T.PICKLIST, values=("DE", "US", "FR")),
        fld("Account", "ParentId", T.LOOKUP, reference_to="Account"),
    ),
)
ORDER = ObjectDef(
    name="Order",
    label="Order",
    kind=ObjectKind.OBJECT,
    fields=system_fields("Order") + (
        fld("Order", "Status", T.PICKLIST, values=("Draft", "Activated")),
        fld("Order", "EffectiveDate", T.DATE),
        fld("Order", "TotalAmount", T.CURRENCY, precision=16, scale=2),
        fld("Order", "IsTest__c", T.CHECKBOX),
        fld("Order", "AccountId", T.LOOKUP, reference_to="Account"),
        fld("Order", "OrderNumber", T.TEXT, length=30),
        fld("Order", "Tags__c", T.MULTIPICKLIST, values=("A", "B", "C")),
        fld("Order", "Description", T.LONGTEXT),
        fld("Order", "Region__c", T.PICKLIST, values=("North",), restricted=False),
        fld("Order", "Template__c", T.LOOKUP, reference_to="Template"),
        fld("Order", "Total__c", T.FORMULA,
            formula=FormulaDef(returns=T.CURRENCY, expression="TotalAmount * 2")),
    ),
)
DELIVERY = ObjectDef(
    name="Partial_Delivery__c",
    label="Partial Delivery",
    kind=ObjectKind.OBJECT,
    fields=system_fields("Partial_Delivery__c") + (
        fld("Partial_Delivery__c", "Order__c", T.LOOKUP, reference_to="Order"),
        fld("Partial_Delivery__c", "Quantity__c", T.NUMBER, precision=10, scale=2),
    ),
)
TEMPLATE = ObjectDef(
    name="Template",
    label="Template",
    kind=ObjectKind.LIST_SETTING,
    fields=(fld("Template", "Name", T.TEXT),),
)
MODEL = OrgModel(
    root=".",
    objects=MappingProxyType({o.key: o for o in (ACCOUNT, ORDER, DELIVERY, TEMPLATE)}),
    records=MappingProxyType({}),
    templates=MappingProxyType({}),
    config_hash="t",
)


def parse(text: str, obj: ObjectDef = ORDER):
    return parse_condition(text, obj, MODEL.object)


def ok(text: str, obj: ObjectDef = ORDER) -> Condition:
    condition, problems = parse(text, obj)
    assert problems == [], problems
    assert condition is not None
    return condition


def only_problem(text: str, obj: ObjectDef = ORDER):
    condition, problems = parse(text, obj)
    assert condition is None
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------------------
# Parsing


def test_empty_condition_selects_everything():
    for text in ("", "   ", "\n"):
        condition = ok(text)
        assert condition.is_empty and condition.root is None
        assert condition.paths == frozenset()


def test_simple_comparison_tree():
    condition = ok("Status = 'Activated'")
    assert condition.object_name == "Order"
    assert isinstance(condition.root, Comparison)
    assert condition.root.op == "="
    assert condition.root.value == "Activated"
    assert condition.root.field.field.name == "Status"
    assert condition.root.field.path == ()
    assert condition.references == frozenset({("status",)})


def test_keywords_and_names_are_case_insensitive():
    condition = ok("status = 'Draft' and not istest__C = TRUE or accountid in (1) AND effectivedate = this_month")
    assert isinstance(condition.root, Or)


def test_precedence_not_and_or():
    root = ok("Status = 'Draft' OR NOT IsTest__c = true AND AccountId = 1").root
    assert isinstance(root, Or) and len(root.operands) == 2
    first, second = root.operands
    assert isinstance(first, Comparison) and first.field.field.name == "Status"
    assert isinstance(second, And)
    assert isinstance(second.operands[0], Not)
    assert second.operands[0].operand.field.field.name == "IsTest__c"
    assert isinstance(second.operands[1], Comparison)


def test_parentheses_override_precedence_and_chains_are_flat():
    root = ok("(Status = 'Draft' OR IsTest__c = true) AND AccountId = 1 AND AccountId = 2").root
    assert isinstance(root, And) and len(root.operands) == 3
    assert isinstance(root.operands[0], Or)
    root = ok("NOT (Status = 'Draft' AND AccountId = 1)").root
    assert isinstance(root, Not) and isinstance(root.operand, And)


def test_values_are_typed():
    assert ok("TotalAmount > 10.5").root.value == Decimal("10.50")
    assert isinstance(ok("TotalAmount > -3").root.value, Decimal)
    assert ok("IsTest__c = false").root.value is False
    assert ok("AccountId = 12").root.value == 12
    assert ok("EffectiveDate = 2024-01-31").root.value == date(2024, 1, 31)
    assert ok("CreatedDate > 2024-01-31T10:00:00+02:00").root.value == datetime(2024, 1, 31, 8, tzinfo=UTC)
    assert ok("EffectiveDate < LAST_N_DAYS:30").root.value == DateLiteral("LAST_N_DAYS", 30)
    assert ok("EffectiveDate = null").root.value is None
    assert ok("OrderNumber = 'it\\'s \\\\ \\n'").root.value == "it's \\ \n"
    assert ok("Status IN ('Draft', null)").root.value == ("Draft", None)
    assert ok("Status <> 'Draft'").root.op == "!="
    assert ok("Status NOT IN ('Draft')").root.op == "NOT IN"


def test_like_patterns_keep_escaped_wildcards_literal():
    value = ok("OrderNumber LIKE 'a\\_b_c%d\\%/'").root.value
    assert value == LikePattern("a/_b_c%d/%//", "a_b_c%d%/")


def test_picklist_values_take_the_declared_spelling():
    assert ok("Status = 'activated'").root.value == "Activated"
    assert ok("Status IN ('DRAFT')").root.value == ("Draft",)
    # unrestricted picklists take any value
    assert ok("Region__c = 'South'").root.value == "South"


def test_empty_text_means_null():
    assert ok("OrderNumber = ''").root.value is None


def test_multipicklist_values_are_canonical():
    assert ok("Tags__c = 'c;a'").root.value == "A;C"
    assert ok("Tags__c INCLUDES ('B;A', 'c')").root.value == (("A", "B"), ("C",))


def test_paths_include_every_prefix():
    condition = ok("Order__r.Account.Parent.Name = 'x' AND Order__r.Status = 'Draft'", DELIVERY)
    assert condition.paths == frozenset({("order__r",), ("order__r", "account"), ("order__r", "account", "parent")})
    assert ("order__r", "account", "parent", "name") in condition.references
    assert ("order__r", "status") in condition.references


def test_condition_is_immutable():
    condition = ok("Status = 'Draft'")
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.text = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.root.value = "x"  # type: ignore[union-attr]


def test_condition_module_does_not_import_sqlalchemy():
    code = "import sys, engine.billing.condition; assert 'sqlalchemy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---------------------------------------------------------------------------
# Problems, with exact offsets and hints

PROBLEMS = [
    # text, code, offset, hint (None: any or none)
    ("Stauts = 'Activated'", "E057", 0, "did you mean Status?"),
    ("EffectiveDate = 'x'", "E058", 16, "write a date like 2024-01-31, or a date literal such as TODAY or THIS_MONTH"),
    ("Status = 'Actvated'", "E058", 9, "did you mean Activated?"),
    ("Status = 'Bogus'", "E058", 9, "values of Order.Status: Draft, Activated"),
    ("Account.Typo = 'x'", "E057", 8, "did you mean Type?"),
    ("AccountId.Type = 'x'", "E057", 0, "did you mean Account.Type?"),
    ("Acount.Type = 'x'", "E057", 0, "did you mean Account?"),
    ("Status.Name = 'x'", "E057", 0, None),
    ("Account = 1", "E057", 0, "Account is a relationship; name one of its fields, e.g. Account.Name"),
    ("Template__r.Name = 'x'", "E057", 0, None),
    ("EffectiveDate = '2024-01-31'", "E058", 16, "write dates without quotes: 2024-01-31"),
    ("EffectiveDate = 2024-01-31T00:00:00Z", "E058", 16, "compare Date fields with a date like 2024-01-31"),
    ("CreatedDate = 2024-01-31", "E058", 14,
     "write a date-time like 2024-01-31T00:00:00Z, or a date literal such as TODAY"),
    ("TotalAmount > '5'", "E058", 14, "write numbers without quotes: 5"),
    ("TotalAmount > 1.005", "E058", 14, None),
    ("TotalAmount > 12345678901234567", "E058", 14, None),
    ("TotalAmount LIKE '1%'", "E058", 12, None),
    ("OrderNumber IN ('a', 1)", "E058", 21, "text values are written in single quotes: '1'"),
    ("OrderNumber = 5", "E058", 14, "text values are written in single quotes: '5'"),
    ("IsTest__c = 'true'", "E058", 12, "write true or false without quotes"),
    ("IsTest__c < true", "E058", 10, "compare checkboxes with = true or = false"),
    ("AccountId = '12'", "E058", 12, "write record ids without quotes"),
    ("AccountId = 1.5", "E058", 12, None),
    ("AccountId = 0", "E058", 12, None),
    ("AccountId > 1", "E058", 10, None),
    ("Status < 'Draft'", "E058", 7, "list the values with IN ('a', 'b')"),
    ("Status INCLUDES ('Draft')", "E058", 7, "use IN ('a', 'b') for a single-select picklist"),
    ("Tags__c IN ('A')", "E058", 8, None),
    ("Tags__c INCLUDES ('D')", "E058", 18, "values of Order.Tags__c: A, B, C"),
    ("Tags__c INCLUDES (null)", "E058", 18, None),
    ("TotalAmount < null", "E058", 14, None),
    ("Status LIKE null", "E058", 12, None),
    ("EffectiveDate IN (THIS_MONTH)", "E058", 18, "compare with = THIS_MONTH and combine with OR"),
    ("EffectiveDate LIKE '2024%'", "E058", 14, None),
    ("Order__r.Status = 'x'", "E057", 0, None),
    # syntax
    ("Status = 'Activated' AND", "E056", 24, "a comparison is missing at the end"),
    ("Status = 'Activated", "E056", 9, "end it with '"),
    ("Status == 'Activated'", "E056", 7, "use a single = for 'equals'"),
    ("Status = Activated", "E056", 9, "text values are written in single quotes: 'Activated'"),
    ("Status = OrderNumber", "E056", 9, "compare the field with a value"),
    ("'Activated' = Status", "E056", 0, None),
    ("Status = 'Draft' Status = 'Activated'", "E056", 17, "is AND or OR missing before it?"),
    ("(Status = 'Draft'", "E056", 0, "add the missing ')'"),
    ("Status = 'Draft')", "E056", 16, None),
    ('Status = "Draft"', "E056", 9, "text is written in single quotes: 'like this'"),
    ("Status = 'Draft' && IsTest__c = true", "E056", 17, "use AND"),
    ("EffectiveDate = 2024-02-30", "E056", 16, "write dates as YYYY-MM-DD"),
    ("CreatedDate > 2024-01-31T00:00:00", "E056", 33, "end it with Z (UTC) or an offset like +01:00"),
    ("CreatedDate > 2024-01-31T00:00", "E056", 14, "write a date-time like 2024-01-31T00:00:00Z"),
    ("EffectiveDate = LAST_N_DAYS", "E056", 27, "write it like LAST_N_DAYS:30"),
    ("EffectiveDate = LAST_N_DAYS:0", "E056", 28, None),
    ("TotalAmount > 1e5", "E056", 15, None),
    ("Status IN ()", "E056", 11, "give at least one value"),
    ("Status IN 'Draft'", "E056", 10, "write it like IN ('a', 'b')"),
    ("Status IN ('Draft'", "E056", 10, "add the missing ')'"),
    ("Status NOT LIKE 'D%'", "E056", 7, "to negate a comparison write NOT (Field LIKE 'x%')"),
    ("WHERE Status = 'Draft'", "E056", 0, "write only what follows WHERE, e.g. Status = 'Activated'"),
    ("Status = 'x\\q'", "E056", 11, None),
    ("OrderNumber = 'a' 'b'", "E056", 18, "write a quote inside text as \\' (not '')"),
    ("Account. Type = 'x'", "E056", 7, None),
    ("Status ~ 'x'", "E056", 7, None),
    ("Status", "E056", 6, None),
    ("AND Status = 'x'", "E056", 0, None),
    ("NOT", "E056", 3, None),
]


@pytest.mark.parametrize("text, code, offset, hint", PROBLEMS)
def test_problem(text, code, offset, hint):
    problem = only_problem(text)
    assert (problem.code, problem.offset) == (code, offset), problem
    if hint is not None:
        assert problem.hint == hint
    assert problem.message


def test_unknown_field_message():
    problem = only_problem("Stauts = 'Activated'")
    assert problem.message == "unknown field Stauts on Order"


def test_formula_fields_are_refused_with_a_clear_message():
    problem = only_problem("Total__c > 5")
    assert problem.code == "E058" and problem.offset == 0
    assert "formula fields cannot be used in filter conditions yet: compare the fields the formula reads" in (
        problem.message
    )


def test_setting_lookup_cannot_be_followed():
    problem = only_problem("Template__r.Name = 'x'")
    assert "custom setting Template" in problem.message


def test_all_name_and_type_problems_are_reported_together():
    condition, problems = parse("Stauts = 'x' AND EffectiveDate = 'y' OR Account.Typo = 'z'")
    assert condition is None
    assert [(p.code, p.offset) for p in problems] == [("E057", 0), ("E058", 33), ("E057", 48)]


# ---------------------------------------------------------------------------
# Limits


def test_length_limit():
    text = "Status = 'Draft' OR " * 600
    assert len(text) > MAX_LENGTH
    problem = only_problem(text)
    assert problem.code == "E056" and "at most 10,000" in problem.message


def test_deep_parentheses_fail_cleanly():
    problem = only_problem("(" * 9_000 + "Status = 'Draft'" + ")" * 900)
    assert problem.code == "E056" and problem.offset == MAX_DEPTH
    assert "nested more than 50 levels" in problem.message


def test_parentheses_up_to_the_limit_are_fine():
    ok("(" * MAX_DEPTH + "Status = 'Draft'" + ")" * MAX_DEPTH)


def test_deep_not_chains_fail_cleanly():
    problem = only_problem("NOT " * 2_400 + "Status = 'Draft'")
    assert problem.code == "E056" and problem.offset == 4 * MAX_DEPTH


def test_node_limit():
    text = " OR ".join(["Id = 1"] * 260)  # 260 comparisons + 259 ORs
    problem = only_problem(text)
    assert problem.code == "E056" and "more than 500 elements" in problem.message
    ok(" OR ".join(["Id = 1"] * ((MAX_NODES + 1) // 2)))


def test_in_list_limit():
    ok("Id IN (" + ", ".join(str(i) for i in range(1, MAX_IN_ITEMS + 1)) + ")")
    problem = only_problem("Id IN (" + ", ".join(str(i) for i in range(1, MAX_IN_ITEMS + 2)) + ")")
    assert problem.code == "E056" and "more than 1,000 values" in problem.message


def test_relationship_hop_limit():
    ok("Account.Parent.Parent.Parent.Parent.Name = 'x'")  # 5 hops
    problem = only_problem("Account.Parent.Parent.Parent.Parent.Parent.Name = 'x'")
    assert problem.code == "E056" and "at most 5" in problem.message


# ---------------------------------------------------------------------------
# Date literals


@pytest.mark.parametrize(
    "literal, first, last",
    [
        ("TODAY", date(2024, 3, 15), date(2024, 3, 15)),
        ("YESTERDAY", date(2024, 3, 14), date(2024, 3, 14)),
        ("TOMORROW", date(2024, 3, 16), date(2024, 3, 16)),
        ("LAST_N_DAYS:14", date(2024, 3, 1), date(2024, 3, 15)),
        ("NEXT_N_DAYS:20", date(2024, 3, 16), date(2024, 4, 4)),
        ("THIS_MONTH", date(2024, 3, 1), date(2024, 3, 31)),
        ("LAST_MONTH", date(2024, 2, 1), date(2024, 2, 29)),
        ("NEXT_MONTH", date(2024, 4, 1), date(2024, 4, 30)),
        ("THIS_YEAR", date(2024, 1, 1), date(2024, 12, 31)),
        ("LAST_YEAR", date(2023, 1, 1), date(2023, 12, 31)),
        ("NEXT_YEAR", date(2025, 1, 1), date(2025, 12, 31)),
    ],
)
def test_date_literal_ranges(literal, first, last):
    value = ok(f"EffectiveDate = {literal}").root.value
    assert isinstance(value, DateLiteral)
    assert value.range(TODAY) == (first, last)
    assert str(value) == literal


def test_date_literal_ranges_across_year_ends():
    assert DateLiteral("LAST_MONTH").range(date(2024, 1, 10)) == (date(2023, 12, 1), date(2023, 12, 31))
    assert DateLiteral("NEXT_MONTH").range(date(2024, 12, 10)) == (date(2025, 1, 1), date(2025, 1, 31))
    assert DateLiteral("LAST_N_DAYS", 100_000).range(date(1, 1, 2))[0] == date.min


# ---------------------------------------------------------------------------
# Executing on SQLite and PostgreSQL

ACCOUNTS = [
    dict(id=1, name="Acme", type="Customer", billingcountrycode="DE", parentid=None),
    dict(id=2, name="O'Brien & Co", type="Partner", billingcountrycode="US", parentid=None),
    dict(id=3, name="zeta", type=None, billingcountrycode=None, parentid=1),
]
ORDERS = [
    dict(id=1, status="Activated", effectivedate=date(2024, 3, 1), totalamount=Decimal("100.00"), istest__c=False,
         accountid=1, ordernumber="ORD-001", tags__c=("A", "B"), description="the first",
         createddate=datetime(2024, 3, 15, 10, tzinfo=UTC)),
    dict(id=2, status="Draft", effectivedate=date(2024, 2, 29), totalamount=Decimal("0.10"), istest__c=True,
         accountid=2, ordernumber="ORD-002", tags__c=("B",), description=None,
         createddate=datetime(2024, 2, 10, 23, 30, tzinfo=UTC)),
    dict(id=3, status="Activated", effectivedate=date(2024, 3, 15), totalamount=Decimal("99.99"), istest__c=False,
         accountid=None, ordernumber="ord_003", tags__c=None, description=None,
         createddate=datetime(2024, 3, 14, 23, 59, 59, 999999, tzinfo=UTC)),
    dict(id=4, status=None, effectivedate=None, totalamount=None, istest__c=False,
         accountid=3, ordernumber=None, tags__c=("C",), description=None,
         createddate=datetime(2023, 6, 1, tzinfo=UTC)),
    dict(id=5, status="Draft", effectivedate=date(2023, 12, 31), totalamount=Decimal("1234.56"), istest__c=False,
         accountid=1, ordernumber="100%", tags__c=("A", "C"), description=None,
         createddate=datetime(2024, 3, 16, tzinfo=UTC)),
]
DELIVERIES = [
    dict(id=1, order__c=1, quantity__c=Decimal("1.50")),
    dict(id=2, order__c=2, quantity__c=Decimal("2")),
    dict(id=3, order__c=None, quantity__c=None),
    dict(id=4, order__c=4, quantity__c=Decimal("0.25")),
]
CREATED = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(db_url, engine_for):
    engine = engine_for(db_url)
    metadata = context(MODEL).metadata
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table, rows in (("account", ACCOUNTS), ("order", ORDERS), ("partial_delivery__c", DELIVERIES)):
            rows = [{"createddate": CREATED, "lastmodifieddate": CREATED, **row} for row in rows]
            conn.execute(sa.insert(metadata.tables[table]), rows)
    return engine, metadata


def select_ids(db, text: str, obj: ObjectDef = ORDER, today: date = TODAY) -> set[int]:
    engine, metadata = db
    condition = ok(text, obj)
    table = metadata.tables[obj.table_name]
    where, from_clause = compile_condition(condition, context(MODEL), table, today=today)
    statement = sa.select(table.c.id).select_from(from_clause).where(where)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(statement)]
    assert len(ids) == len(set(ids)), "a join duplicated records"
    return set(ids)


ALL = {1, 2, 3, 4, 5}
ORDER_CASES = [
    ("", ALL),
    # picklists, null as a value
    ("Status = 'Activated'", {1, 3}),
    ("status = 'activated'", {1, 3}),
    ("Status != 'Activated'", {2, 4, 5}),
    ("Status <> 'Activated'", {2, 4, 5}),
    ("Status = null", {4}),
    ("Status != null", {1, 2, 3, 5}),
    ("Status = ''", {4}),
    ("NOT Status = 'Activated'", {2, 4, 5}),
    ("NOT Status != 'Activated'", {1, 3}),
    ("NOT Status = null", {1, 2, 3, 5}),
    ("NOT (Status = 'Activated' OR Status = 'Draft')", {4}),
    ("NOT NOT Status = 'Draft'", {2, 5}),
    ("Status IN ('Draft', 'Activated')", {1, 2, 3, 5}),
    ("Status NOT IN ('Draft')", {1, 3, 4}),
    ("NOT Status NOT IN ('Draft')", {2, 5}),
    ("Status IN ('Draft', null)", {2, 4, 5}),
    ("Status NOT IN ('Draft', null)", {1, 3}),
    ("NOT Status IN ('Draft', null)", {1, 3}),
    ("Status IN (null)", {4}),
    ("Status NOT IN (null)", {1, 2, 3, 5}),
    ("Status LIKE 'act%'", {1, 3}),
    # numbers (scaled integers on SQLite)
    ("TotalAmount > 99.99", {1, 5}),
    ("TotalAmount >= 99.99", {1, 3, 5}),
    ("TotalAmount < 1", {2}),
    ("TotalAmount <= 0.1", {2}),
    ("TotalAmount = 100", {1}),
    ("TotalAmount = 0.10", {2}),
    ("TotalAmount != 100", {2, 3, 4, 5}),
    ("TotalAmount IN (100, 0.1, 5)", {1, 2}),
    ("TotalAmount NOT IN (100)", {2, 3, 4, 5}),
    ("TotalAmount > -1", {1, 2, 3, 5}),
    ("NOT TotalAmount > 1", {2, 4}),
    # checkboxes
    ("IsTest__c = true", {2}),
    ("IsTest__c = false", {1, 3, 4, 5}),
    ("IsTest__c != true", {1, 3, 4, 5}),
    ("NOT IsTest__c = false", {2}),
    # dates
    ("EffectiveDate = 2024-03-01", {1}),
    ("EffectiveDate < 2024-03-01", {2, 5}),
    ("EffectiveDate >= 2024-02-29", {1, 2, 3}),
    ("EffectiveDate != 2024-03-01", {2, 3, 4, 5}),
    ("EffectiveDate IN (2024-02-29, 2023-12-31)", {2, 5}),
    ("EffectiveDate = TODAY", {3}),
    ("EffectiveDate = YESTERDAY", set()),
    ("EffectiveDate = THIS_MONTH", {1, 3}),
    ("EffectiveDate != THIS_MONTH", {2, 4, 5}),
    ("EffectiveDate < THIS_MONTH", {2, 5}),
    ("EffectiveDate <= THIS_MONTH", {1, 2, 3, 5}),
    ("EffectiveDate > LAST_MONTH", {1, 3}),
    ("EffectiveDate >= LAST_MONTH", {1, 2, 3}),
    ("EffectiveDate = LAST_MONTH", {2}),
    ("EffectiveDate = LAST_N_DAYS:14", {1, 3}),
    ("EffectiveDate = LAST_N_DAYS:13", {3}),
    ("EffectiveDate = NEXT_N_DAYS:30", set()),
    ("EffectiveDate >= TOMORROW", set()),
    ("EffectiveDate = THIS_YEAR", {1, 2, 3}),
    ("EffectiveDate = LAST_YEAR", {5}),
    ("NOT EffectiveDate = THIS_YEAR", {4, 5}),
    # date-times (UTC days for date literals)
    ("CreatedDate = TODAY", {1}),
    ("CreatedDate = YESTERDAY", {3}),
    ("CreatedDate = TOMORROW", {5}),
    ("CreatedDate > TODAY", {5}),
    ("CreatedDate <= YESTERDAY", {2, 3, 4}),
    ("CreatedDate = THIS_MONTH", {1, 3, 5}),
    ("CreatedDate >= 2024-03-15T00:00:00Z", {1, 5}),
    ("CreatedDate < 2024-03-15T11:00:00+01:00", {2, 3, 4}),
    ("CreatedDate = 2024-03-15T10:00:00Z", {1}),
    ("CreatedDate = 2024-03-14T23:59:59.999999Z", {3}),
    # text: exact equality, case-insensitive LIKE, code point order
    ("OrderNumber = 'ORD-001'", {1}),
    ("OrderNumber = 'ord-001'", set()),
    ("OrderNumber = null", {4}),
    ("OrderNumber LIKE 'ord%'", {1, 2, 3}),
    ("OrderNumber LIKE 'ORD-00_'", {1, 2}),
    ("OrderNumber LIKE 'ord\\_%'", {3}),
    ("OrderNumber LIKE 'ord_%'", {1, 2, 3}),
    ("OrderNumber LIKE '100\\%'", {5}),
    ("OrderNumber LIKE '100%'", {5}),
    ("OrderNumber LIKE '%0%'", {1, 2, 3, 5}),
    ("NOT OrderNumber LIKE 'ORD%'", {4, 5}),
    ("OrderNumber < 'ORD-002'", {1, 5}),
    ("OrderNumber >= 'a'", {3}),
    ("OrderNumber IN ('ORD-001', 'ord_003')", {1, 3}),
    ("Description LIKE '%FIRST'", {1}),
    ("Description = null", {2, 3, 4, 5}),
    # lookups and relationships (LEFT OUTER JOINs)
    ("AccountId = 1", {1, 5}),
    ("AccountId = null", {3}),
    ("AccountId IN (2, 3)", {2, 4}),
    ("AccountId != 1", {2, 3, 4}),
    ("Id IN (1, 5)", {1, 5}),
    ("Account.Type = 'Customer'", {1, 5}),
    ("Account.Type != 'Customer'", {2, 3, 4}),
    ("Account.Type = null", {3, 4}),
    ("Account.Name = 'O\\'Brien & Co'", {2}),
    ("Account.Name LIKE 'o\\'b%'", {2}),
    ("Account.Parent.Name = 'Acme'", {4}),
    ("Account.Parent.Name != 'Acme'", {1, 2, 3, 5}),
    ("Account.Id = 1", {1, 5}),
    ("Account.BillingCountryCode IN ('DE', 'US') AND TotalAmount > 1", {1, 5}),
    ("Account.Type = 'Customer' OR Account.Parent.Type = 'Customer'", {1, 4, 5}),
    # precedence
    ("Status = 'Draft' OR Status = 'Activated' AND IsTest__c = true", {2, 5}),
    ("(Status = 'Draft' OR Status = 'Activated') AND IsTest__c = true", {2}),
    ("NOT Status = 'Draft' AND IsTest__c = false", {1, 3, 4}),
    ("NOT (Status = 'Draft' AND IsTest__c = false)", {1, 2, 3, 4}),
    ("NOT (Status = 'Draft' OR TotalAmount > 99.99) OR AccountId = null", {3, 4}),
    # multi-select picklists
    ("Tags__c INCLUDES ('A')", {1, 5}),
    ("Tags__c INCLUDES ('a')", {1, 5}),
    ("Tags__c INCLUDES ('A;B')", {1}),
    ("Tags__c INCLUDES ('B;A', 'C')", {1, 4, 5}),
    ("Tags__c EXCLUDES ('A')", {2, 3, 4}),
    ("Tags__c EXCLUDES ('A', 'C')", {2, 3}),
    ("NOT Tags__c INCLUDES ('B')", {3, 4, 5}),
    ("NOT Tags__c EXCLUDES ('B')", {1, 2}),
    ("Tags__c = 'B;A'", {1}),
    ("Tags__c != 'B'", {1, 3, 4, 5}),
    ("Tags__c = null", {3}),
]
DELIVERY_CASES = [
    ("Order__r.Status = 'Activated'", {1}),
    ("Order__r.Status != 'Activated'", {2, 3, 4}),
    ("Order__r.Account.Type = 'Partner'", {2}),
    ("Order__r.Account.Parent.Name = 'Acme'", {4}),
    ("Order__c = null", {3}),
    ("Order__r.Id = 1", {1}),
    ("Quantity__c >= 1.5", {1, 2}),
    ("Order__r.Tags__c INCLUDES ('C') OR Order__r.TotalAmount < 1", {2, 4}),
]


@pytest.mark.parametrize("text, expected", ORDER_CASES)
def test_order_condition_selects(db, text, expected):
    assert select_ids(db, text) == expected


@pytest.mark.parametrize("text, expected", DELIVERY_CASES)
def test_delivery_condition_selects(db, text, expected):
    assert select_ids(db, text, DELIVERY) == expected


def test_today_is_a_compile_parameter(db):
    assert select_ids(db, "EffectiveDate = THIS_MONTH", today=date(2024, 2, 10)) == {2}
    assert select_ids(db, "EffectiveDate = THIS_MONTH", today=date(2024, 3, 31)) == {1, 3}
    assert select_ids(db, "EffectiveDate = LAST_N_DAYS:1", today=date(2024, 3, 1)) == {1, 2}


def test_base_may_be_an_alias(db):
    engine, metadata = db
    condition = ok("Account.Type = 'Customer' AND TotalAmount > 1000")
    base = metadata.tables["order"].alias("o")
    where, from_clause = compile_condition(condition, context(MODEL), base, today=TODAY)
    with engine.connect() as conn:
        assert conn.execute(sa.select(base.c.id).select_from(from_clause).where(where)).scalars().all() == [5]


def test_full_in_list_executes(db):
    ids = ", ".join(str(i) for i in range(1, MAX_IN_ITEMS + 1))
    assert select_ids(db, f"Id IN ({ids})") == ALL
    assert select_ids(db, f"Id NOT IN ({ids})") == set()


def test_deepest_nesting_executes(db):
    text = "NOT (" * 25 + "Status = 'Draft'" + ")" * 25
    assert select_ids(db, text) == {1, 3, 4}  # 25 NOTs: negated once


# ---------------------------------------------------------------------------
# Hostile input

HOSTILE_TEXT = "OrderNumber = '\\'; DROP TABLE \"order\"; --'"


def test_sql_in_text_values_is_only_ever_a_bound_parameter(db):
    engine, metadata = db
    condition = ok(HOSTILE_TEXT)
    assert condition.root.value == "'; DROP TABLE \"order\"; --"
    table = metadata.tables["order"]
    where, from_clause = compile_condition(condition, context(MODEL), table, today=TODAY)
    statement = sa.select(table.c.id).select_from(from_clause).where(where)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        compiled = statement.compile(dialect=dialect)
        assert "DROP" not in str(compiled)
        assert "'; DROP TABLE \"order\"; --" in compiled.params.values()
    with engine.connect() as conn:
        assert conn.execute(statement).all() == []
    assert select_ids(db, "OrderNumber LIKE '%\\'; DELETE FROM account; --%'") == set()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 5
        assert conn.execute(sa.select(sa.func.count()).select_from(metadata.tables["account"])).scalar_one() == 3


def test_no_value_is_inlined_into_sql():
    condition = ok("Status = 'Activated' AND TotalAmount > 12.5 AND EffectiveDate = THIS_MONTH "
                   "AND Account.Name LIKE 'Ac%' AND Tags__c INCLUDES ('B') AND AccountId IN (7777, 8888)")
    metadata = context(MODEL).metadata
    table = metadata.tables["order"]
    where, from_clause = compile_condition(condition, context(MODEL), table, today=TODAY)
    statement = sa.select(table.c.id).select_from(from_clause).where(where)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        sql = str(statement.compile(dialect=dialect))
        for value in ("Activated", "12.5", "1250", "2024", "Ac%", "B;", "7777", "8888"):
            assert value not in sql, (value, sql)
        assert "LEFT OUTER JOIN account" in sql


@pytest.mark.parametrize(
    "text, code, offset",
    [
        ("OrderNumber = ''; DROP TABLE order; --'", "E056", 16),
        ("Id = 1; DELETE FROM account", "E056", 6),
        ("Id = 1 OR 1 = 1", "E056", 10),
        ("Status = 'x' UNION SELECT id FROM account", "E056", 13),
        ('"order".id = 1', "E056", 0),
        ("Status = 'x' -- comment", "E056", 13),
        ("Status = 'x' /* c */", "E056", 13),
        ("sqlite_master = 'x'", "E057", 0),
        ("pg_catalog.pg_tables = 'x'", "E057", 0),
        ("DROP_TABLE__c = 1", "E057", 0),
        ("information_schema.tables.table_name = 'x'", "E057", 0),
    ],
)
def test_hostile_conditions_are_refused(text, code, offset):
    problem = only_problem(text)
    assert (problem.code, problem.offset) == (code, offset), problem


# ---------------------------------------------------------------------------
# The sample org's filters


def test_sample_org_filter_conditions_parse():
    from engine.project import load_project

    result = load_project(ROOT)
    if result.model is None:  # pragma: no cover - the sample org always loads
        pytest.skip("the sample org does not load")
    model = result.model
    filters = model.setting_records("Filter")
    assert filters
    for record in filters:
        target = model.object(str(record.get("Target")))
        condition, problems = parse_condition(str(record.get("Condition") or ""), target, model.object)
        assert problems == [], (record.name, problems)
        assert condition is not None and condition.object_name == target.name
