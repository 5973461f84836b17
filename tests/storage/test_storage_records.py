"""Loading CSV/JSON records and exporting CSV, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from engine.storage import records
from engine.storage.migrate import apply_migration
from engine.storage.csvio import RecordError
from engine.storage.records import export_records, load_records

from storage_models import billing_model
from contexts import context


@pytest.fixture
def model(engine):
    model = billing_model()
    apply_migration(engine, model)
    return model


def write(tmp_path, name, text, *, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def rows(engine, model, object_name):
    table = context(model).metadata.tables[object_name.lower()]
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).order_by(table.c.id))]


def messages(report):
    return [e.render() for e in report.errors]


ACCOUNTS = (
    "\ufeffname,ACCOUNTNUMBER,Industry,ParentId.AccountNumber,CreditLimit,Email\n"
    "Acme,A-1,Energy,,1000.50,billing@acme.example\n"
    'Globex,A-2,,A-1,"2,5",\n'.replace('"2,5"', "-0.05")
    + "Initech,A-3,Media,A-2,,\n"
)


def load_accounts(engine, model, tmp_path):
    report = load_records(engine, context(model), "Account", write(tmp_path, "accounts.csv", ACCOUNTS))
    assert report.ok, report.render()
    return report


def test_csv_load_with_bom_headers_in_any_case_and_self_lookups(engine, model, tmp_path):
    report = load_accounts(engine, model, tmp_path)
    assert report.inserted == 3 and report.render() == f"{report.file}: 3 Account records loaded."
    loaded = rows(engine, model, "Account")
    assert [r["id"] for r in loaded] == [1, 2, 3]
    assert [r["name"] for r in loaded] == ["Acme", "Globex", "Initech"]
    assert [r["parentid"] for r in loaded] == [None, 1, 2]  # resolved against earlier rows of the file
    assert [r["creditlimit"] for r in loaded] == [Decimal("1000.50"), Decimal("-0.05"), None]
    assert [r["active"] for r in loaded] == [True, True, True]  # the field default (column absent)
    assert loaded[0]["createddate"].tzinfo == timezone.utc


def test_csv_load_with_external_id_lookups_autonumbers_and_every_type(engine, model, tmp_path):
    load_accounts(engine, model, tmp_path)
    text = (
        "Account.AccountNumber,GrandTotal,TaxRate,InvoiceDate,PostedAt,Paid,Status,Tags,Notes\n"
        "A-2,1234.5,19,2024-04-30,2024-04-30T10:00:00+02:00,yes,,C;A,\"two\nlines\"\n"
        "A-1,0.10,,,,,Posted,,\n"
    )
    report = load_records(engine, context(model), "Invoice", write(tmp_path, "invoices.csv", text))
    assert report.ok, report.render()
    loaded = rows(engine, model, "Invoice")
    assert [r["name"] for r in loaded] == ["INV-000001", "INV-000002"]
    first, second = loaded
    assert first["account"] == 2 and second["account"] == 1
    assert first["grandtotal"] == Decimal("1234.50") and str(first["taxrate"]) == "19.00"
    assert first["invoicedate"] == date(2024, 4, 30)
    assert first["postedat"] == datetime(2024, 4, 30, 8, 0, tzinfo=timezone.utc)
    assert first["paid"] is True and second["paid"] is False
    assert first["status"] == "Draft" and second["status"] == "Posted"  # empty cell -> default
    assert first["tags"] == ("A", "C") and second["tags"] is None
    assert first["notes"] == "two\nlines"

    lines = "Name,Invoice,Quantity,Amount\nL1,1,1.5,100.00\nL2,2,,0.10\n"
    assert load_records(engine, context(model), "InvoiceLineItem", write(tmp_path, "lines.csv", lines)).ok
    table = context(model).metadata.tables["invoicelineitem"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.sum(table.c.amount))).scalar_one() == Decimal("100.10")


def test_json_load(engine, model, tmp_path):
    load_accounts(engine, model, tmp_path)
    data = (
        '[{"Account": 1, "GrandTotal": 10.25, "Tags": ["B", "A"], "Paid": true},\n'
        ' {"account.accountnumber": "A-3", "GrandTotal": "7", "InvoiceDate": "2024-01-31"}]'
    )
    report = load_records(engine, context(model), "Invoice", write(tmp_path, "invoices.json", data))
    assert report.ok, report.render()
    loaded = rows(engine, model, "Invoice")
    assert [r["account"] for r in loaded] == [1, 3]
    assert [r["grandtotal"] for r in loaded] == [Decimal("10.25"), Decimal("7.00")]
    assert loaded[0]["tags"] == ("A", "B") and loaded[0]["paid"] is True


def test_every_problem_is_reported_and_nothing_is_written(engine, model, tmp_path):
    load_accounts(engine, model, tmp_path)
    text = (
        "Name,Account,GrandTotal,InvoiceDate,Status,GrossTotal,CreatedDate,Colour,Account.AccountNumber\n"
        "X,1,1.234,2024-13-01,Open,,,,\n"
        ",99,abc,,,,,,\n"
    )
    path = write(tmp_path, "bad.csv", text)
    report = load_records(engine, context(model), "Invoice", path)
    assert not report.ok and report.inserted == 0
    got = messages(report)
    expected_fragments = [
        f"{path}:1:Name: Invoice.Name is an AutoNumber field",
        f"{path}:1:GrossTotal: Invoice.GrossTotal is a formula field",
        f"{path}:1:CreatedDate: CreatedDate is set by the engine",
        f"{path}:1:Colour: Invoice has no field 'Colour'",
        f"{path}:1:Account.AccountNumber: repeats the column 'Account'",
        f"{path}:2:GrandTotal: 1.234 has more than 2 decimal places",
        f"{path}:2:InvoiceDate: expected a date as YYYY-MM-DD",
        f"{path}:2:Status: 'Open' is not a value of the picklist Invoice.Status",
        f"{path}:3:Account: no Account has Id 99",
        f"{path}:3:GrandTotal: expected a decimal number",
    ]
    for fragment in expected_fragments:
        assert any(line.startswith(fragment) for line in got), (fragment, got)
    assert len(got) == len(expected_fragments)
    assert rows(engine, model, "Invoice") == []
    assert report.render().endswith("problems; nothing was loaded.")


def test_required_and_unique_values(engine, model, tmp_path):
    load_accounts(engine, model, tmp_path)
    text = "Name,AccountNumber\nNew,A-1\n,A-9\nTwin,A-7\nTwin2,A-7\n"
    path = write(tmp_path, "accounts2.csv", text)
    report = load_records(engine, context(model), "Account", path)
    assert messages(report) == [
        f"{path}:2:AccountNumber: another Account already has AccountNumber 'A-1'",
        f"{path}:3:Name: Name is required",
        f"{path}:5:AccountNumber: 'A-7' repeats row 4; AccountNumber must be unique",
    ]
    assert len(rows(engine, model, "Account")) == 3


def test_required_lookup_and_unknown_external_id(engine, model, tmp_path):
    load_accounts(engine, model, tmp_path)
    path = write(tmp_path, "inv.csv", "Account.AccountNumber,GrandTotal\n,1\nZZ,2\n")
    assert messages(load_records(engine, context(model), "Invoice", path)) == [
        f"{path}:2:Account.AccountNumber: Account is required",
        f"{path}:3:Account.AccountNumber: no Account has AccountNumber 'ZZ'",
    ]
    path = write(tmp_path, "inv2.csv", "GrandTotal\n1\n")
    assert messages(load_records(engine, context(model), "Invoice", path)) == [f"{path}:2:Account: Account is required"]


def test_lookup_headers_must_name_a_key_field(engine, model, tmp_path):
    path = write(tmp_path, "inv.csv", "Account.Industry,Account.Nope,GrandTotal.X\n")
    got = messages(load_records(engine, context(model), "Invoice", path))
    assert got == [
        f"{path}:1:Account.Industry: Account.Industry is not an external id or unique field, so it cannot identify a record",
        f"{path}:1:Account.Nope: Account has no field 'Nope'",
        f"{path}:1:GrandTotal.X: 'GrandTotal' is not a lookup field of Invoice",
    ]


def test_all_or_nothing_across_chunks(engine, model, tmp_path, monkeypatch):
    monkeypatch.setattr(records, "CHUNK_ROWS", 4)
    lines = ["Name,AccountNumber"] + [f"N{i},K{i}" for i in range(1, 11)] + ["Last,K1"]
    path = write(tmp_path, "many.csv", "\n".join(lines) + "\n")
    report = load_records(engine, context(model), "Account", path)
    assert messages(report) == [f"{path}:12:AccountNumber: 'K1' repeats row 2; AccountNumber must be unique"]
    assert rows(engine, model, "Account") == []
    # The ids reserved by the failed load were given back.
    good = write(tmp_path, "good.csv", "\n".join(lines[:-1]) + "\n")
    assert load_records(engine, context(model), "Account", good).inserted == 10
    assert [r["id"] for r in rows(engine, model, "Account")] == list(range(1, 11))


def test_explicit_ids_move_the_sequence(engine, model, tmp_path):
    path = write(tmp_path, "a.csv", "Id,Name\n10,Ten\n,Next\n5,Five\n")
    assert load_records(engine, context(model), "Account", path).ok
    path = write(tmp_path, "b.csv", "Name\nAfter\n")
    assert load_records(engine, context(model), "Account", path).ok
    assert [(r["id"], r["name"]) for r in rows(engine, model, "Account")] == [
        (5, "Five"), (10, "Ten"), (11, "Next"), (12, "After"),
    ]
    path = write(tmp_path, "c.csv", "Id,Name\n12,Again\n7,Seven\n7,Twice\nx,Bad\n")
    assert messages(load_records(engine, context(model), "Account", path)) == [
        f"{path}:2:Id: another Account already has Id 12",
        f"{path}:4:Id: Id 7 is already used by row 3",
        f"{path}:5:Id: expected a record id (a positive whole number), got 'x'",
    ]


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", ":  the file is empty"),
        (b"Name,AccountNumber\nA,1,extra\nB,2\n", ":2: the row has 3 cells but the header has 2"),
        (b'Name,AccountNumber\n"A"x,1\n', ":2: malformed CSV: ',' expected after '\"'"),
        (b'Name,AccountNumber\n"A,1\n', ":2: malformed CSV: unexpected end of data"),
        (b"Name,AccountNumber\nA\x00B,1\n", ":2:Name: the value contains a NUL character"),
        (b"Name,AccountNumber\nA,1\n\xff\xfe,2\n", ":3: the file is not UTF-8 text"),
        (b",\n", ":1: the header row is empty"),
    ],
)
def test_malformed_csv_is_reported(engine, model, tmp_path, content, expected):
    path = write(tmp_path, "x.csv", content)
    report = load_records(engine, context(model), "Account", path)
    assert not report.ok
    assert any(expected.replace(":  ", ": ") in line for line in messages(report)), messages(report)
    assert rows(engine, model, "Account") == []


def test_header_only_file_loads_nothing(engine, model, tmp_path):
    report = load_records(engine, context(model), "Account", write(tmp_path, "x.csv", "Name\n"))
    assert report.ok and report.inserted == 0


def test_row_numbers_are_lines_even_after_multiline_cells(engine, model, tmp_path):
    text = 'Name,Email\n"multi\nline\nname",a@b.example\nSecond,not-an-email\n'
    path = write(tmp_path, "x.csv", text)
    assert messages(load_records(engine, context(model), "Account", path)) == [
        f"{path}:5:Email: 'not-an-email' is not an e-mail address"
    ]


def test_size_limits(engine, model, tmp_path, monkeypatch):
    path = write(tmp_path, "big.csv", "Name,AccountNumber\n" + "x" * (records.MAX_CELL + 1) + ",1\n")
    assert any("field larger than field limit" in m or "characters" in m for m in messages(load_records(engine, context(model), "Account", path)))
    monkeypatch.setattr(records, "MAX_ROWS", 2)
    path = write(tmp_path, "rows.csv", "Name\na\nb\nc\n")
    assert messages(load_records(engine, context(model), "Account", path)) == [f"{path}:4: more than 2 rows; split the file"]
    path = write(tmp_path, "rows.json", '[{"Name": "a"}, {"Name": "b"}, {"Name": "c"}]')
    assert messages(load_records(engine, context(model), "Account", path)) == [f"{path}: more than 2 records; split the file"]
    monkeypatch.setattr(records, "MAX_JSON_BYTES", 10)
    assert messages(load_records(engine, context(model), "Account", path)) == [f"{path}: the file exceeds 10 bytes; split it or use CSV"]


def test_loading_before_the_migration_is_reported(engine, tmp_path):
    path = write(tmp_path, "x.csv", "Name\na\n")
    assert messages(load_records(engine, context(billing_model()), "Account", path)) == [
        f"{path}: the database has no table for Account; apply the schema migration first"
    ]


def test_error_count_is_capped(engine, model, tmp_path, monkeypatch):
    monkeypatch.setattr(records, "MAX_ERRORS", 5)
    path = write(tmp_path, "x.csv", "Name,CreditLimit\n" + "a,x\n" * 50)
    got = messages(load_records(engine, context(model), "Account", path))
    assert len(got) == 6 and got[-1].endswith("stopped after 5 problems; fix these first")


@pytest.mark.parametrize(
    "content, expected",
    [
        ('[{"Name": "a"},\n {"Name": }]', ": JSON syntax error at line 2, column 11: Expecting value"),
        ('{"Name": "a"}', ": expected a JSON list of objects, got an object"),
        ('[{"Name": "a"}, 3, "x"]', ":2: expected an object, got a number"),
        ('[{"Name": "a", "CreditLimit": NaN}]', ": invalid JSON: NaN is not a number"),
        ('[{"Name": "a", "name": "b"}]', ":1:name: repeats the key 'Name'"),
        ('[{"Name": {"x": 1}}]', ":1:Name: expected text, got dict"),
        (b'["\xff"]', ": the file is not UTF-8 text (line 1)"),
    ],
)
def test_malformed_json_is_reported(engine, model, tmp_path, content, expected):
    path = write(tmp_path, "x.json", content)
    report = load_records(engine, context(model), "Account", path)
    assert any(line == f"{path}{expected}" or line.startswith(f"{path}{expected}") for line in messages(report)), messages(report)
    assert rows(engine, model, "Account") == []


def test_format_from_argument_and_unknown_format(engine, model, tmp_path):
    path = write(tmp_path, "accounts.txt", '[{"Name": "a"}]')
    assert load_records(engine, context(model), "Account", path, fmt="json").inserted == 1
    assert messages(load_records(engine, context(model), "Account", path)) == [
        f"{path}: unknown file format 'txt': use a .csv or .json file"
    ]
    assert messages(load_records(engine, context(model), "Account", tmp_path / "missing.csv")) == [
        f"{tmp_path / 'missing.csv'}: no such file"
    ]


def test_only_data_objects_can_be_loaded(engine, model, tmp_path):
    path = write(tmp_path, "x.csv", "Name\na\n")
    with pytest.raises(KeyError):
        load_records(engine, context(model), "Nope", path)
    with pytest.raises(ValueError):
        load_records(engine, context(model), "BillingSettings", path)


def test_record_error_rendering():
    assert RecordError("f.csv", 3, "Name", "bad").render() == "f.csv:3:Name: bad"
    assert str(RecordError("f.csv", 3, None, "bad")) == "f.csv:3: bad"
    assert RecordError("f.json", None, None, "bad").render() == "f.json: bad"


# ---------------------------------------------------------------------------
# Export


def test_export_formats_values_and_neutralises_formulas(engine, model, tmp_path):
    hostile = '=HYPERLINK("http://x","y")'
    path = write(
        tmp_path,
        "a.csv",
        "Name,AccountNumber,CreditLimit,Industry,Email\n"
        f'"{hostile.replace(chr(34), chr(34) * 2)}",+1,-1234.50,Energy,\n'
        "@home,-A,0,,\n"
        "Plain,A-3,,,\n",
    )
    assert load_records(engine, context(model), "Account", path).ok
    out = io.StringIO()
    assert export_records(engine, context(model), "Account", out) == 3
    lines = out.getvalue().splitlines()
    assert lines[0] == "Id,Name,AccountNumber,Industry,ParentId,CreditLimit,Active,Email"
    assert lines[1] == '1,"\'=HYPERLINK(""http://x"",""y"")",\'+1,Energy,,-1234.50,true,'
    assert lines[2] == "2,'@home,'-A,,,0.00,true,"
    assert lines[3] == "3,Plain,A-3,,,,true,"


def test_export_of_every_type_round_trips_through_load(engine, model, tmp_path, engine_for, monkeypatch):
    monkeypatch.setattr(records, "EXPORT_PAGE", 2)  # several pages
    load_accounts(engine, model, tmp_path)
    invoices = (
        "Account,GrandTotal,TaxRate,InvoiceDate,PostedAt,Paid,Status,Tags,Notes\n"
        "1,1234.5,19,2024-04-30,2024-04-30T10:00:00.5+02:00,yes,,C;A,\"two\nlines, with comma\"\n"
        "2,0.10,,,,,Posted,,\n"
        "3,-7,,,,,,B,\n"
    )
    assert load_records(engine, context(model), "Invoice", write(tmp_path, "i.csv", invoices)).ok
    out = io.StringIO()
    assert export_records(engine, context(model), "Invoice", out) == 3
    text = out.getvalue()
    assert text.splitlines()[0] == "Id,Name,Account,GrandTotal,TaxRate,InvoiceDate,PostedAt,Paid,Status,Tags,Notes"
    assert text.splitlines()[1] == '1,INV-000001,1,1234.50,19.00,2024-04-30,2024-04-30T08:00:00.500000Z,true,Draft,A;C,"two'

    # Export -> load into a second, empty database gives the same rows.
    other_url = f"sqlite:///{tmp_path / 'copy.db'}"
    other = engine_for(other_url)
    apply_migration(other, model)
    accounts_out = io.StringIO()
    export_records(engine, context(model), "Account", accounts_out)
    for name, content in (("Account", accounts_out.getvalue()), ("Invoice", text)):
        path = write(tmp_path, f"export-{name}.csv", content)
        if name == "Invoice":
            # Name is an AutoNumber: it is generated again, not loaded.
            path = write(tmp_path, "export-inv.csv", "\n".join(
                ",".join(cells) for cells in _drop_column(content, "Name")) + "\n")
        report = load_records(other, context(model), name, path)
        assert report.ok, report.render()
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("createddate", "lastmodifieddate")} for r in rs]
    for name in ("Account", "Invoice"):
        assert strip(rows(other, model, name)) == strip(rows(engine, model, name))


def _drop_column(text, header):
    import csv

    table = list(csv.reader(io.StringIO(text)))
    index = table[0].index(header)
    out = []
    for cells in table:
        del cells[index]
        out.append([_quote(c) for c in cells])
    return out


def _quote(cell):
    return '"' + cell.replace('"', '""') + '"' if any(ch in cell for ch in ',"\n') else cell


def test_export_selected_fields(engine, model, tmp_path):
    load_accounts(engine, model, tmp_path)
    out = io.StringIO()
    export_records(engine, context(model), "Account", out, fields=["accountnumber", "Id", "CreatedDate"])
    lines = out.getvalue().splitlines()
    assert lines[0] == "AccountNumber,Id,CreatedDate"
    assert lines[1].startswith("A-1,1,") and lines[1].endswith("Z")
    with pytest.raises(ValueError, match="no field 'Colour'"):
        export_records(engine, context(model), "Account", io.StringIO(), fields=["Colour"])
    with pytest.raises(ValueError, match="formula"):
        export_records(engine, context(model), "Invoice", io.StringIO(), fields=["GrossTotal"])


def test_export_of_an_empty_table_writes_the_header(engine, model):
    out = io.StringIO()
    assert export_records(engine, context(model), "InvoiceLineItem", out) == 0
    assert out.getvalue() == "Id,Name,Invoice,Quantity,Amount\n"
