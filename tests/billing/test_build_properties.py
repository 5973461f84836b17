"""Properties of the pure invoice builder (engine.billing.build) and the money
helpers (engine.domain.money), for random lines: quantities and unit prices
with up to four decimals, positive and negative, tax rates 0, 7 and 19 %, in
net and gross mode, rounded per line and per tax group.

Whatever the lines: the invoice totals are the sums of the lines, gross is
net + tax on every line and on the invoice, every amount has two decimals,
line amounts are round-half-up of quantity x unit price, and the per-group
tax is the rounded tax of the group's net sum.
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.billing.build import (
    RunFacts,
    SourceHeader,
    SourceLine,
    SubInvoice,
    build_invoice,
    deduction_lines,
)
from engine.domain.money import allocate, net_of_gross, round_money, tax_of
from engine.billing.tax import TaxResolver
from contexts import context

CENT = Decimal("0.01")
D = Decimal
RATES = [Decimal(0), Decimal(7), Decimal(19)]

amounts4 = st.decimals(min_value=Decimal("-99999.9999"), max_value=Decimal("99999.9999"), places=4,
                       allow_nan=False, allow_infinity=False)
quantities = st.decimals(min_value=Decimal("-999.9999"), max_value=Decimal("999.9999"), places=4,
                         allow_nan=False, allow_infinity=False)
line_values = st.tuples(quantities, amounts4, st.sampled_from(RATES))


def half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@pytest.fixture(scope="module")
def run_facts(sample_model):
    def facts(rounding: str) -> RunFacts:
        return RunFacts(
            run_id=None, period_start=date(2024, 1, 1), period_end=date(2024, 1, 31),
            invoice_date=None, config_hash="test", rounding=rounding, tax=context(sample_model).service(TaxResolver),
        )

    return {"PerLine": facts("PerLine"), "PerTaxGroup": facts("PerTaxGroup")}


@pytest.fixture(scope="module")
def template(sample_model):
    return sample_model.setting_record("Template", "Default Invoice (EN)")


def _source(template, values, gross: bool) -> SourceHeader:
    header = SourceHeader(
        object_name="Usage__c", record_id=1, account_id=1, template=template, invoice_type="Standard",
        assignment_key=None, criterion=None, currency="EUR", business_entity="DE01",
        invoice_fields={"grossinvoice": True} if gross else {},
    )
    for i, (quantity, price, rate) in enumerate(values, start=1):
        # an explicit tax rate (as from ON_TaxRate) bypasses the tax rules
        fields = {"title": f"line {i}", "quantity": quantity, "unitprice": price, "taxrate": rate}
        header.lines.append(SourceLine("Usage__c", i, (1, Decimal(0), i), fields))
    return header


ACCOUNT = {"accountname": "Muster GmbH", "billingcountrycode": "DE", "currencyisocode": "EUR"}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values=st.lists(line_values, min_size=1, max_size=12), gross=st.booleans(),
       rounding=st.sampled_from(["PerLine", "PerTaxGroup"]))
def test_totals_are_the_sum_of_the_lines(run_facts, template, values, gross, rounding):
    draft = build_invoice(run_facts[rounding], [_source(template, values, gross)], ACCOUNT, {"region": "DE"})
    header, lines = draft.header, draft.lines
    assert len(lines) == len(values)
    for line, (quantity, price, rate) in zip(lines, values):
        for key in ("postotalnet", "postotaltax", "postotalgross"):
            assert line[key].as_tuple().exponent == -2
        assert line["postotalgross"] == line["postotalnet"] + line["postotaltax"]
        assert line["taxrate"] == rate
        if gross:
            assert line["postotalgross"] == half_up(quantity * price)
            assert line["postotalnet"] == half_up(line["postotalgross"] * 100 / (100 + rate))
        else:
            assert line["postotalnet"] == half_up(quantity * price)
            if rounding == "PerLine":
                assert line["postotaltax"] == half_up(line["postotalnet"] * rate / 100)
    if rounding == "PerTaxGroup" and not gross:
        for rate in RATES:
            group = [l for l in lines if l["taxrate"] == rate]
            if group:
                group_net = sum(l["postotalnet"] for l in group)
                assert sum(l["postotaltax"] for l in group) == half_up(group_net * rate / 100)
    assert header["totalnet"] == sum(l["postotalnet"] for l in lines)
    assert header["totaltax"] == sum(l["postotaltax"] for l in lines)
    assert header["grandtotal"] == sum(l["postotalgross"] for l in lines)
    assert header["grandtotal"] == header["totalnet"] + header["totaltax"]
    assert header["class"] == ("Credit" if header["grandtotal"] < 0 else "Invoice")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    sub_lines=st.lists(st.tuples(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("50000"), places=2),
                                 st.sampled_from(RATES)), min_size=1, max_size=5),
    paid_share=st.decimals(min_value=Decimal("0"), max_value=Decimal("1.5"), places=3),
)
def test_progress_deductions_match_the_payment_received(run_facts, template, sub_lines, paid_share):
    """A progress invoice is deducted with what was received (capped at its
    total): the deduction lines' gross is exactly the amount received, and
    each tax group deducts the tax a payment of its share books (its gross
    less its net, rounded once), whatever the number of lines."""
    lines = []
    for net, rate in sub_lines:
        tax = tax_of(net, rate)
        lines.append({"title": "Abschlag", "postotalnet": net, "postotaltax": tax, "postotalgross": net + tax,
                      "taxrate": rate, "taxcode": None})
    grand = sum(l["postotalgross"] for l in lines)
    received = round_money(grand * paid_share)
    sub = SubInvoice(7, "DRAFT-000007", "Progress", "Open", grand, received, lines)
    out = deduction_lines(run_facts["PerLine"], {"subinvoiceassignmentkey": "K"}, [{"title": "Abschlag"}], [sub])
    deducted = min(received, grand)
    if deducted == 0:
        assert out == []
        return
    per_rate: dict[Decimal, list[Decimal]] = {}
    for line in out:
        assert line["isdeduction"] is True and line["subinvoice"] == 7 and line["title"] == "Abschlag"
        assert line["postotalgross"] == line["postotalnet"] + line["postotaltax"] <= 0
        assert line["unitprice"] == line["unitpricenet"] == line["postotalnet"]
        sums = per_rate.setdefault(line["taxrate"], [Decimal(0), Decimal(0)])
        sums[0] += line["postotalgross"]
        sums[1] += line["postotaltax"]
    assert sum(line["postotalgross"] for line in out) == -deducted
    for rate, (gross, tax) in per_rate.items():
        assert tax == gross - net_of_gross(gross, rate)


def test_a_deduction_keeps_the_tax_booked_on_receipt(run_facts):
    """53.64 received at 19 %: the payment booked 45.08 net and 8.56 tax
    (the tax the gross contains); 45.08 x 19 % would be 8.57, a cent the
    tax and interim accounts would keep (found by the lifecycle machine)."""
    line = {"title": "Milestone", "postotalnet": D("2075.18"), "postotaltax": D("394.28"),
            "postotalgross": D("2469.46"), "taxrate": D("19"), "taxcode": "DE_19", "appliedtaxrule": None}
    group = ("DE_19", D("19"), None)
    for booked, booked_tax in (({}, {}), ({group: D("53.64")}, {group: D("8.56")})):
        sub = SubInvoice(7, "INV-1", "Progress", "Open", D("2469.46"), D("53.64"), [line], booked, booked_tax)
        [out] = deduction_lines(None, {}, [{"title": "Project"}], [sub])
        assert (out["postotalnet"], out["postotaltax"], out["postotalgross"]) == (D("-45.08"), D("-8.56"),
                                                                                 D("-53.64"))
    header = {"grossinvoice": True}
    sub = SubInvoice(7, "INV-1", "Progress", "Open", D("2469.46"), D("53.64"), [line])
    [out] = deduction_lines(None, header, [{"title": "Project"}], [sub])
    assert (out["unitprice"], out["unitpricenet"]) == (D("-53.64"), D("-45.08"))  # a gross invoice prices gross


def test_a_partial_invoice_is_deducted_with_its_own_tax(run_facts):
    """A partial invoice rounded per tax group carries its group's cent on
    one line; the deduction takes each line's own tax back, so the final
    invoice and its partials add up to the project to the cent."""
    lines = [{"title": "A", "postotalnet": D("0.03"), "postotaltax": D("0.01"), "postotalgross": D("0.04"),
              "taxrate": D("19")},
             {"title": "B", "postotalnet": D("0.03"), "postotaltax": D("0.00"), "postotalgross": D("0.03"),
              "taxrate": D("19")}]
    sub = SubInvoice(8, "INV-2", "Partial", "Open", D("0.07"), D("0"), lines)
    out = deduction_lines(None, {}, [], [sub])
    assert [(l["postotalnet"], l["postotaltax"]) for l in out] == [(D("-0.03"), D("-0.01")), (D("-0.03"), D("0.00"))]


@settings(derandomize=True)
@given(total=st.decimals(min_value=Decimal("-100000"), max_value=Decimal("100000"), places=2),
       weights=st.lists(st.decimals(min_value=Decimal("0"), max_value=Decimal("10000"), places=2), min_size=1,
                        max_size=8))
def test_allocate_splits_exactly(total, weights):
    parts = allocate(total, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == total
    assert all(p.as_tuple().exponent == -2 for p in parts)
    if sum(weights) > 0:
        assert all(p == 0 or (p > 0) == (total > 0) for p in parts)
        assert all(p == 0 for p, w in zip(parts, weights) if w == 0)


@settings(derandomize=True)
@given(gross=st.decimals(min_value=Decimal("-100000"), max_value=Decimal("100000"), places=2),
       rate=st.sampled_from(RATES))
def test_net_of_gross_round_trip(gross, rate):
    net = net_of_gross(gross, rate)
    assert net == half_up(gross * 100 / (100 + rate))
    assert abs(net + tax_of(net, rate) - gross) <= CENT
