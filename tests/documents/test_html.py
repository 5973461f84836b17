"""The HTML of invoice documents: positions, totals, the balance table of
seed 002 between grand total and payment amount, hiding it both ways,
column configuration, German labels and formatting, template selection."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from engine.documents.context import document_context, render_document
from engine.documents.formatting import Formatter, round_money
from engine.documents.template_records import parse_template_settings
from engine.documents import DocumentError, render_html

from config.orgcopy import REPO_ROOT

from .conftest import add_balance, invoice_html, org_with, parse, row_texts
from .seed import seed_invoice
from contexts import context


def _settings(model, name="Default Invoice (EN)", **changes):
    settings = parse_template_settings(model, model.setting_record("Template", name))
    assert settings.problems == ()
    return replace(settings, **changes)


def test_seed_002_example(sample_model):
    """Seed 002's table: Product 1 25.00, Subtotal (net) 25.00, Tax (0.00%)
    0.00, Grand Total 25.00, Prepayment 2017-03-02 -10.00, Payment Amount 15.00."""
    tree = parse(render_document(REPO_ROOT, sample_model, _settings(sample_model), seed_invoice(sample_model)))
    assert row_texts(tree, "position") == [["1", "Product 1", "1", "0.00%", "25.00", "25.00"]]
    assert row_texts(tree, "subtotal") == [["Subtotal (net)", "25.00"]]
    assert row_texts(tree, "tax") == [["Tax (0.00%)", "0.00"]]
    assert row_texts(tree, "grand-total") == [["Grand Total", "25.00"]]
    assert row_texts(tree, "balances") == [["Prepayment", "Mar 2, 2017", "-10.00"]]
    assert row_texts(tree, "payment-amount") == [["Payment Amount", "€15.00"]]
    # the order of the totals rows: grand total, balances, payment amount
    classes = [tr.get("class") for tr in tree.xpath("//table[@class='positions']/tfoot/tr")]
    assert classes == ["subtotal", "tax", "grand-total", "balances", "payment-amount"]
    assert tree.xpath("//tr[@class='balances']/td[1]/@colspan") == ["4"]


def test_hide_balance_table_by_clearing_balance_types(sample_model):
    settings = _settings(sample_model, balance_types=())
    tree = parse(render_document(REPO_ROOT, sample_model, settings, seed_invoice(sample_model)))
    assert row_texts(tree, "balances") == []
    assert "Prepayment" not in tree.text_content()
    # hidden balances still reduce the amount to pay (domain-spec §9.2)
    assert row_texts(tree, "payment-amount") == [["Payment Amount", "€15.00"]]


def test_hide_balance_table_with_custom_css(sample_model):
    settings = _settings(sample_model, custom_css="tr.balances {\n    display: none;\n}")
    html = render_document(REPO_ROOT, sample_model, settings, seed_invoice(sample_model))
    tree = parse(html)
    assert row_texts(tree, "balances") == [["Prepayment", "Mar 2, 2017", "-10.00"]]  # in the HTML ...
    style = tree.xpath("//style")[0].text
    assert "tr.balances {\n    display: none;\n}" in style  # ... and hidden by the style (the PDF test checks it)


def test_custom_css_cannot_close_the_style_element(sample_model):
    settings = _settings(sample_model, custom_css="</style><script>alert(1)</script>")
    tree = parse(render_document(REPO_ROOT, sample_model, settings, seed_invoice(sample_model)))
    assert tree.xpath("//script") == []
    assert len(tree.xpath("//style")) == 1


def test_only_listed_types_shown_in_date_order_with_titles(sample_model):
    balances = [
        {"Id": 1, "Name": "BAL-1", "Type": "Invoice", "Amount": Decimal("25.00"), "Date": date(2017, 3, 1)},
        {"Id": 2, "Name": "BAL-2", "Type": "Payment", "Amount": Decimal("-5.00"), "Date": date(2017, 3, 9)},
        {"Id": 3, "Name": "BAL-3", "Type": "Settlement", "Amount": Decimal("-2.50"), "Date": date(2017, 3, 3),
         "RelatedInvoice": 7, "RelatedInvoiceNo": "INV-2017-00007"},
        {"Id": 4, "Name": "BAL-4", "Type": "Write off", "Amount": Decimal("-1.00"), "Date": date(2017, 3, 4)},
        {"Id": 5, "Name": "BAL-5", "Type": "Payment", "Amount": Decimal("-3.00"), "Date": date(2017, 3, 5),
         "Draft": True},
    ]
    data = seed_invoice(sample_model, balances=balances)
    tree = parse(render_document(REPO_ROOT, sample_model, _settings(sample_model), data))
    assert row_texts(tree, "balances") == [
        ["Settlement for Invoice INV-2017-00007", "Mar 3, 2017", "-2.50"],
        ["Payment", "Mar 9, 2017", "-5.00"],
    ]
    # Write off is not listed (not shown) but still counts; the draft does not
    assert row_texts(tree, "payment-amount") == [["Payment Amount", "€16.50"]]


def test_balance_columns_order_and_any_field(sample_model):
    balances = [{"Id": 2, "Name": "BAL-2", "Type": "Prepayment", "Amount": Decimal("-10.00"),
                 "Date": date(2017, 3, 2), "Reference": "PP-42"}]
    settings = _settings(sample_model, balance_columns=("Amount", "BalanceTitle", "Reference"))
    tree = parse(render_document(REPO_ROOT, sample_model, settings, seed_invoice(sample_model, balances=balances)))
    assert row_texts(tree, "balances") == [["-10.00", "Prepayment", "PP-42"]]
    assert tree.xpath("//tr[@class='balances']/td[1]/@colspan") == ["4"]


def test_balance_columns_seed_spelling_is_accepted(sample_model):
    """The seed writes BalanceTitle;Date__c;Amount__c (Salesforce suffixes)."""
    record = sample_model.setting_record("Template", "Default Invoice (EN)")
    record = replace(record, values={**record.values, "balancecolumns": "BalanceTitle;Date__c;Amount__c"})
    settings = parse_template_settings(sample_model, record)
    assert settings.problems == ()
    assert settings.balance_columns == ("BalanceTitle", "Date", "Amount")


def test_amounts_round_half_up_and_never_float(sample_model):
    assert round_money(Decimal("2.675")) == Decimal("2.68")  # a float 2.675 would round to 2.67
    assert round_money(Decimal("-2.675")) == Decimal("-2.68")
    assert Formatter("de_DE").money(Decimal("1234.565")) == "1.234,57"
    assert Formatter("en_US").money(Decimal("1234.565")) == "1,234.57"
    with pytest.raises(TypeError):
        Formatter("en_US").money(2.675)


def test_german_labels_and_formatting(sample_model):
    settings = _settings(sample_model, "Standardrechnung (DE)")
    data = seed_invoice(sample_model, template="Standardrechnung (DE)", TotalNet=Decimal("1234.5"),
                        GrandTotal=Decimal("1234.5"))
    tree = parse(render_document(REPO_ROOT, sample_model, settings, data))
    assert tree.xpath("/html/@lang") == ["de"]
    headers = [" ".join(th.text_content().split()) for th in tree.xpath("//table[@class='positions']/thead//th")]
    assert headers == ["Pos.", "Bezeichnung", "Menge", "USt.", "Einzelpreis", "Gesamt"]
    assert row_texts(tree, "position") == [["1", "Product 1", "1", "0,00 %", "25,00", "25,00"]]
    assert row_texts(tree, "subtotal") == [["Zwischensumme (netto)", "1.234,50"]]
    assert row_texts(tree, "grand-total") == [["Gesamtbetrag", "1.234,50"]]
    assert row_texts(tree, "balances") == [["Vorkasse", "02.03.2017", "-10,00"]]
    assert row_texts(tree, "payment-amount") == [["Zahlbetrag", "1.224,50 €"]]  # (no-break space collapsed)
    info = {" ".join(th.text_content().split()): " ".join(td.text_content().split())
            for th, td in zip(tree.xpath("//table[@class='info']//th"), tree.xpath("//table[@class='info']//td"))}
    assert info["Rechnungsnummer"] == "INV-2017-00001"
    assert info["Rechnungsdatum"] == "01.03.2017"
    assert info["Fällig am"] == "15.03.2017"
    terms = tree.xpath("//p[@class='payment-terms']")[0].text_content()
    assert terms == "Bitte überweisen Sie den Rechnungsbetrag innerhalb von 14 Tagen, spätestens bis zum 15.03.2017."


def test_sepa_mandate_text_for_direct_debit(sample_model):
    data = seed_invoice(sample_model, PaymentMethod="Direct Debit", BankAccount="DE89370400440532013000",
                        DirectDebitMandateReference="M-7")
    data.business_entity["SEPACreditorId"] = "DE98ZZZ09999999999"
    tree = parse(render_document(REPO_ROOT, sample_model, _settings(sample_model), data))
    text = " ".join(tree.xpath("//p[@class='sepa-mandate']")[0].text_content().split())
    assert "€15.00" in text and "DE89 **** 3000" in text and "M-7" in text and "DE98ZZZ09999999999" in text
    assert tree.xpath("//p[@class='payment-terms']") == []
    plain = seed_invoice(sample_model)
    assert parse(render_document(REPO_ROOT, sample_model, _settings(sample_model), plain)).xpath(
        "//p[@class='sepa-mandate']") == []


def test_final_invoice_lists_sub_invoices_and_deductions(sample_model):
    data = seed_invoice(sample_model, Type="Final")
    data.sub_invoices.append({"Name": "INV-2017-00000", "Date": date(2017, 2, 1), "TotalNet": Decimal("10"),
                              "GrandTotal": Decimal("11.90")})
    deduction = dict(data.lines[0]) | {"Id": 2, "Sequence": Decimal("2"), "Title": "Deduction", "IsDeduction": True,
                                       "SubInvoiceNo": "INV-2017-00000", "UnitPrice": Decimal("-10"),
                                       "PosTotalNet": Decimal("-10.00")}
    data.lines.append(deduction)
    tree = parse(render_document(REPO_ROOT, sample_model, _settings(sample_model), data))
    assert tree.xpath("//h1")[0].text_content().strip() == "Final Invoice INV-2017-00001"
    assert row_texts(tree, "sub-invoice") == [["INV-2017-00000", "Feb 1, 2017", "10.00", "11.90"]]
    assert row_texts(tree, "deduction") == [["", "Deduction for INV-2017-00000", "1", "0.00%", "-10.00", "-10.00"]]


def test_context_tax_per_rate(sample_model):
    data = seed_invoice(sample_model)
    second = dict(data.lines[0]) | {"Id": 2, "TaxRate": Decimal("19.000"), "PosTotalNet": Decimal("10.00"),
                                    "PosTotalTax": Decimal("1.90")}
    third = dict(second) | {"Id": 3, "TaxRate": Decimal("19"), "PosTotalTax": Decimal("1.90")}
    data.lines.extend([second, third])
    context = document_context(sample_model, _settings(sample_model), data)
    assert [(r["rate"], r["tax"]) for r in context["invoice"]["tax_rates"]] == [
        (Decimal("0"), Decimal("0.00")), (Decimal("19"), Decimal("3.80"))]


# --- from the database -----------------------------------------------------------------


def test_demo_invoice_with_payment_balance(demo):
    """INV-2024-00006 (English template): positions and totals from the
    database, and a Payment balance row between grand total and payment amount."""
    add_balance(demo, "INV-2024-00006", "Payment", "-500.00", date(2024, 10, 15), reference="Abschlag")
    tree = parse(invoice_html(demo, "INV-2024-00006"))
    positions = row_texts(tree, "position")
    period = "Service period Jan 1, 2024 – Dec 31, 2024"  # each line's own service period (§14 UStG)
    assert positions == [["1", f"Software licence Standard 2024{period}", "1", "0.00%", "1,200.00", "1,200.00"],
                         ["2", f"Setup fee{period}", "1", "0.00%", "350.00", "350.00"]]
    assert row_texts(tree, "grand-total") == [["Grand Total", "1,550.00"]]
    assert row_texts(tree, "balances") == [["Payment", "Oct 15, 2024", "-500.00"]]
    assert row_texts(tree, "payment-amount") == [["Payment Amount", "€1,050.00"]]
    text = tree.text_content()
    assert "Muster GmbH" in text and "Alpenblick Hotel GmbH" in text
    # a reverse-charge invoice to an EU business: the note and the customer's VAT id (§14a UStG)
    assert "Reverse charge: the recipient of the service is liable for the VAT" in text
    assert "Customer VAT ID: ATU12345678" in text
    assert "Commercial register: Amtsgericht Berlin-Charlottenburg, HRB 123456 B" in text


def test_demo_german_invoice_with_clearing_and_settlement(demo):
    """INV-2024-00004 (German template) carries the Clearing balance of its
    final invoice; a Settlement shows its related invoice number."""
    invoice_10 = demo.rows("Invoice", demo.table("Invoice").c.name == "INV-2024-00010")[0]
    add_balance(demo, "INV-2024-00008", "Settlement", "-10.00", date(2024, 10, 20), relatedinvoice=invoice_10["id"])
    tree = parse(invoice_html(demo, "INV-2024-00004"))
    assert row_texts(tree, "balances") == [["Auszifferung", "30.09.2024", "-9.996,00"]]
    assert row_texts(tree, "payment-amount") == [["Zahlbetrag", "0,00 €"]]
    tree = parse(invoice_html(demo, "INV-2024-00008"))
    assert row_texts(tree, "balances") == [["Ausgleich für INV-2024-00010", "20.10.2024", "-10,00"]]
    assert "SEPA-Lastschrift" in tree.text_content()  # INV-2024-00008 is paid by direct debit


def test_template_selection(demo_sqlite, tmp_path):
    demo = demo_sqlite
    invoices = demo.table("Invoice")
    with demo.engine.begin() as conn:
        conn.execute(invoices.update().where(invoices.c.name == "INV-2024-00005").values(template=None))
        conn.execute(invoices.update().where(invoices.c.name == "INV-2024-00007").values(template="Nope"))
    # no template named: the default record (English)
    assert parse(invoice_html(demo, "INV-2024-00005")).xpath("/html/@lang") == ["en"]
    with pytest.raises(DocumentError, match=r"invoice INV-2024-00007 names the unknown template 'Nope'"):
        invoice_html(demo, "INV-2024-00007")


def test_template_error_names_invoice_template_and_line(demo_sqlite, tmp_path):
    org = org_with(tmp_path, files={"invoice.html.j2": "<p>\n{{ invoice.Name }}\n{{ invoice.NoSuchField }}\n</p>\n"})
    # the org does not validate (E121); the renderer reports the same error on real data
    from engine.project import load_project

    model = load_project(org).model
    with pytest.raises(DocumentError) as caught:
        invoice_html(demo_sqlite, "INV-2024-00006", model=model, org=org)
    message = str(caught.value)
    assert message.startswith("invoice INV-2024-00006: template 'Default Invoice (EN)' failed at "
                              "templates/invoice.html.j2:3:")
    assert "NoSuchField" in message


def test_render_refuses_template_file_outside_templates(sample_model, tmp_path):
    data = seed_invoice(sample_model)
    record = sample_model.setting_record("Template", "Default Invoice (EN)")
    bad = replace(record, values={**record.values, "file": "../metabill.yaml"})
    model = replace(sample_model, records={**sample_model.records, "template": (bad,)})
    with pytest.raises(DocumentError, match=r"relative path inside templates/"):
        render_html(REPO_ROOT, context(model), data)


def test_header_and_footer_placeholders(sample_model):
    settings = _settings(sample_model, header="Invoice [Name] of [Date]", footer="[BusinessEntityCompany], [Unknown]")
    tree = parse(render_document(REPO_ROOT, sample_model, settings, seed_invoice(sample_model)))
    assert tree.xpath("//p[@class='header-text']")[0].text_content() == "Invoice INV-2017-00001 of Mar 1, 2017"
    assert tree.xpath("//p[@class='footer-text']")[0].text_content() == "Muster GmbH, [Unknown]"
