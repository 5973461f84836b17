"""The broken-config corpus, part two: mistakes in setting records that only
the run or an export would otherwise find (issue 15).

Each case makes one realistic mistake in a shipped file of the sample org,
as a consultant would, and asserts that ``load_project`` reports it at the
exact line and column of the value to change, with no errors in files the
case did not touch (the machinery of :mod:`.test_broken_configs`).
``test_all_setting_cases_in_one_org`` applies them all to one copy: one
validate-config pass reports every one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.diagnostics import CODES, Severity
from engine.project import load_project

from .orgcopy import AddFile, InsertAfter, Replace, apply_edits, copy_org
from .test_broken_configs import At, Case, Expect, assert_no_cascade, assert_reported

OBJ = "metadata/objects"
REC = "custom_settings"

CASES: list[Case] = []


def case(id: str, edits, *expects: Expect, **options) -> None:
    CASES.append(Case(id, tuple(edits), tuple(expects), **options))


def row(*lines: str) -> str:
    """A record inserted right after ``records:`` (first key with the dash)."""
    return "\n".join(("  - " if i == 0 else "    ") + line for i, line in enumerate(lines))


# References between setting records -----------------------------------------------

f = f"{REC}/GlAccountRule.yaml"
case("gl-rule-names-a-tax-code-no-tax-rule-gives",
     [InsertAfter(f, "records:", row("Name: Revenue 16%", "TaxCode: DE_16", 'GLAccount: "8410"'))],
     Expect("E162", f, At("DE_16"), message_contains=("tax code 'DE_16'",), hint_contains=("DE_19",)))

case("gl-rule-tax-code-differs-in-case",
     [InsertAfter(f, "records:", row("Name: Revenue reduced", "TaxCode: de_7", 'GLAccount: "8310"'))],
     Expect("E162", f, At("de_7"), hint="did you mean DE_7?", message_contains=("case-sensitively",)))

case("gl-rule-names-an-unknown-tax-rule",
     [InsertAfter(f, "records:", row("Name: Revenue by rule", "TaxRule: DE19", 'GLAccount: "8420"'))],
     Expect("E162", f, At("DE19"), message_contains=("tax rule 'DE19'",)))

f = f"{REC}/CollectiveAccount.yaml"
case("collective-account-for-an-unknown-business-entity",
     [InsertAfter(f, "records:", row("Name: Bank AT", "Type: Payment", 'Account: "1210"',
                                     "BusinessEntity: DE01, AT01"))],
     Expect("E163", f, At("AT01"), message_contains=("business entity 'AT01'",)))

f = f"{REC}/CenterRule.yaml"
case("center-rule-for-an-unknown-business-entity",
     [InsertAfter(f, "records:", row("Name: Consulting DE", "BusinessEntity: DE1", "ProductGroup: Consulting",
                                     'Center: "400"'))],
     Expect("E163", f, At("DE1\n"), hint="did you mean DE01?"))

f = f"{REC}/BookingText.yaml"
case("booking-text-placeholder-names-no-field",
     [Replace(f, "Text: Erlös [InvoiceNo] [AccountName]", "Text: Erlös [InvoiceNumber] [AccountName]")],
     Expect("E164", f, At("[InvoiceNumber]"), hint="did you mean InvoiceNo?"))

case("booking-text-for-no-booking-type",
     [InsertAfter(f, "records:", row("Name: Dunning fees", "Text: Mahngebühr [InvoiceNo]"))],
     Expect("E165", f, At("Dunning fees"), hint="did you mean Dunning Fee?"))

f = f"{REC}/Template.yaml"
case("template-file-named-with-the-wrong-case",
     [Replace(f, "    File: invoice.html.j2\n    Locale: de_DE", "    File: Invoice.html.j2\n    Locale: de_DE")],
     Expect("E110", f, At("Invoice.html.j2"), hint="write File: invoice.html.j2",
            message_contains=("case-sensitive",)))

f = f"{REC}/ExportSetting.yaml"
case("remittance-text-placeholder-names-no-field",
     [Replace(f, "PaymentReferenceText: Gutschrift [Name]", "PaymentReferenceText: Gutschrift [InvoiceNumber]")],
     Expect("E164", f, At("[InvoiceNumber]"), message_contains=("ExportSetting 'SEPA Credit'",)))

f = f"{REC}/GlobalSettings.yaml"
case("account-external-id-field-unknown",
     [Replace(f, "AccountExternalIdField: AccountNumber", "AccountExternalIdField: AccountNo")],
     Expect("E041", f, At("AccountNo\n"), hint="did you mean AccountNumber?"))

# Values only checked at run time ---------------------------------------------------

f = f"{REC}/InstallmentPlan.yaml"
case("installment-rates-do-not-sum-to-100",
     [InsertAfter(f, "records:", row("Name: Half and half", "Period: 1m(2)", 'Rates: "50;40"'))],
     Expect("E171", f, At('"50;40"'), message_contains=("summing to 100", "gives 2 installments")))

case("installment-rates-count-differs",
     [InsertAfter(f, "records:", row("Name: Thirds", "Period: 1m(3)", 'Rates: "50;50"'))],
     Expect("E171", f, At('"50;50"'), message_contains=("2 percentages for 3 installments",)))

case("installment-period-malformed",
     [InsertAfter(f, "records:", row("Name: Weekly", "Period: 1w(4)"))],
     Expect("E171", f, At("1w(4)"), message_contains=("'1w(4)' is not of the form",)))

f = f"{OBJ}/Invoice.yaml"
case("installment-type-names-no-plan",
     [Replace(f, "values: [Monthly x12, 30 days x6, Bimonthly x4 + 120 days]",
              "values: [Monthly x12, 30 days x6, Bimonthly x4 + 120 days, Quarterly x4]")],
     Expect("E171", f, At("InstallmentType:"), message_contains=("'Quarterly x4'",)))

f = f"{REC}/BusinessEntity.yaml"
case("business-entity-iban-check-digits",
     [Replace(f, "IBAN: DE89370400440532013000", "IBAN: DE89370400440532013001")],
     Expect("E166", f, At("DE89370400440532013001"), message_contains=("not a valid IBAN",)))

case("business-entity-bic-malformed",
     [Replace(f, "BIC: COBADEFFXXX", "BIC: COBADEF")],
     Expect("E167", f, At("COBADEF\n"), message_contains=("not a valid BIC",)))

case("business-entity-creditor-id-checksum",
     [Replace(f, "SEPACreditorId: DE98ZZZ09999999999", "SEPACreditorId: DE98ZZZ09999999998")],
     Expect("E168", f, At("DE98ZZZ09999999998"), message_contains=("not a valid SEPA creditor identifier",)))

f = f"{REC}/GlobalSettings.yaml"
case("default-currency-not-iso",
     [Replace(f, "DefaultCurrency: EUR", "DefaultCurrency: eur")],
     Expect("E169", f, At("eur"), hint="did you mean EUR?"))

case("write-off-currency-not-iso",
     [Replace(f, "WriteOffCurrency: EUR", "WriteOffCurrency: EUX")],
     Expect("E169", f, At("EUX"), message_contains=("not an ISO 4217 currency code",)))

f = f"{REC}/ExportSetting.yaml"
case("datev-client-number-out-of-range",
     [Replace(f, "DatevClientNumber: 55003", "DatevClientNumber: 0")],
     Expect("E172", f, At("DatevClientNumber: 0", delta=19), message_contains=("client number",)))

case("datev-consultant-number-too-small",
     [Replace(f, "DatevConsultantNumber: 29098", "DatevConsultantNumber: 99")],
     Expect("E172", f, At("99\n"), message_contains=("consultant number",)))

f = f"{REC}/CollectiveAccount.yaml"
case("collective-account-number-datev-refuses",
     [InsertAfter(f, "records:", row("Name: Dunning fees", "Type: Dunning Fee", 'Account: "4830-1"'))],
     Expect("E173", f, At('"4830-1"'), message_contains=("not a DATEV account number",)))

f = f"{REC}/CenterRule.yaml"
case("center-longer-than-kost1",
     [InsertAfter(f, "records:", row("Name: Training", "ProductGroup: Training",
                                     "Center: Training and education of our customers"))],
     Expect("E174", f, At("Training and education"), message_contains=("longer than 36",)))

f = f"{REC}/BookingText.yaml"
case("booking-text-leading-formula-character",
     [Replace(f, "Text: Forderungsausfall [InvoiceNo] [AccountName]", 'Text: "=Forderungsausfall [InvoiceNo]"')],
     Expect("E170", f, At("=Forderungsausfall"), message_contains=("leading '='",)))

case("booking-text-outside-the-datev-code-page",
     [Replace(f, "Text: Auszahlung [AccountName] [BalanceReference]", "Text: Auszahlung ✓ [AccountName]")],
     Expect("E170", f, At("✓"), message_contains=("cp1252",)))

f = f"{REC}/CollectiveAccount.yaml"
case("bookkeeping-without-a-tax-collective-account",
     [Replace(f, "  - Name: Tax 19%\n    Type: Tax\n", "  - Name: Tax 19%\n    Type: Tax (19%)\n"),
      Replace(f, "  - Name: Tax 7%\n    Type: Tax\n", "  - Name: Tax 7%\n    Type: Tax (7%)\n"),
      Replace(f, "  - Name: Tax 19% (EU_VAT)\n    Type: Tax\n", "  - Name: Tax 19% (EU_VAT)\n    Type: Tax (EU)\n")],
     Expect("E175", f"{REC}/GlobalSettings.yaml", At("CreateBookkeepingData: true", delta=23),
            message_contains=("Type Tax",)),
     also_in=(f"{REC}/GlobalSettings.yaml",))

# Ties -------------------------------------------------------------------------------

f = f"{REC}/TaxRule.yaml"
case("tax-rules-tie",
     [InsertAfter(f, "records:", row("Name: Germany standard", "Type: VAT", "AccountRegion: DE", "TaxCode: DE_19",
                                     'TaxRate: "16.00"'))],
     Expect("E160", f, At("Name: DE_19\n"), message_contains=("'Germany standard' and 'DE_19'",
                                                                     "refuses every line")),
     single_code=True)

case("tax-rule-period-empty",
     [InsertAfter(f, "records:", row("Name: DE_19 2020", "Type: VAT", "AccountRegion: DE, EU", "TaxCode: DE_19",
                                     'TaxRate: "16.00"', "StartDate: 2020-12-31", "EndDate: 2020-07-01"))],
     Expect("E161", f, At("2020-07-01"), message_contains=("after EndDate",)))

f = f"{REC}/CenterRule.yaml"
case("center-rules-tie",
     [InsertAfter(f, "records:", row("Name: Services (new)", "ProductGroup: Services", 'Center: "110"'))],
     Expect("W102", f, At("Name: Services\n"), message_contains=("'Services (new)' and 'Services'",)))

# Files the loader does not read ------------------------------------------------------

f = "custom_setting/Filter.yaml"
case("yaml-file-in-a-misspelt-folder",
     [AddFile(f, "version: 1\nsetting: Filter\nrecords: []\n")],
     Expect("W014", f, None, hint="move it to custom_settings/ (is 'custom_setting' a misspelling?)",
            severity=Severity.WARNING))

f = "metadata/Product2.yaml"
case("yaml-file-one-folder-too-high",
     [AddFile(f, "version: 1\nobject: Product2__c\nlabel: Product 2\nfields: {}\n")],
     Expect("W014", f, None, message_contains=("is not read",), severity=Severity.WARNING))


# --- running ------------------------------------------------------------------------------


def test_codes_are_catalogued():
    for c in CASES:
        for expect in c.expects:
            assert expect.code in CODES


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_broken_setting(case: Case, tmp_path: Path):
    org = copy_org(tmp_path / "org")
    touched = apply_edits(org, case.edits)
    result = load_project(org)
    for expect in case.expects:
        assert_reported(result, org, expect)
    assert_no_cascade(result, touched | set(case.also_in))
    assert not any(d.code == "E099" for d in result.diagnostics), [d.message for d in result.diagnostics]
    if case.single_code:
        for code in {e.code for e in case.expects}:
            assert sum(d.code == code for d in result.diagnostics) == 1


def test_all_setting_cases_in_one_org(tmp_path: Path):
    """Every case in one copy: a single run reports all of them."""
    org = copy_org(tmp_path / "org")
    touched: set[str] = set()
    for c in CASES:
        touched |= apply_edits(org, c.edits)
    result = load_project(org)
    for c in CASES:
        for expect in c.expects:
            assert_reported(result, org, expect)
    assert_no_cascade(result, touched)
    assert not any(d.code == "E099" for d in result.diagnostics)


def test_tax_rules_with_disjoint_periods_do_not_tie(tmp_path: Path):
    """The same criteria in successive validity periods are how a rate
    change is configured: no E160."""
    org = copy_org(tmp_path / "org")
    apply_edits(org, [InsertAfter(f"{REC}/TaxRule.yaml", "records:", row(
        "Name: DE_19 until 2019", "Type: VAT", "AccountRegion: DE", "TaxCode: DE_19", 'TaxRate: "19.00"',
        "EndDate: 2019-12-31")),
        Replace(f"{REC}/TaxRule.yaml", "  - Name: DE_19\n    Type: VAT\n",
                "  - Name: DE_19\n    Type: VAT\n    StartDate: 2020-01-01\n")])
    result = load_project(org)
    assert not [d for d in result.diagnostics if d.location.file == f"{REC}/TaxRule.yaml"], result.diagnostics


def test_yaml_in_python_packages_and_nested_orgs_is_not_reported(tmp_path: Path):
    org = copy_org(tmp_path / "org")
    apply_edits(org, [AddFile("tools/plugin/__init__.py", ""), AddFile("tools/plugin/data.yaml", "a: 1\n"),
                      AddFile("examples/other/metabill.yaml", "version: 1\n"),
                      AddFile("examples/other/custom_settings/Filter.yaml", "version: 1\n"),
                      AddFile(".github/workflows/ci.yml", "on: push\n")])
    result = load_project(org)
    assert not [d for d in result.diagnostics if d.code == "W014"], result.diagnostics
