"""Storage failures as runtime-error data: codes, what they concern, hints."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.domain.errors import EngineError, Where
from engine.storage.csvio import InputFileRefused, RecordError
from engine.storage.environment import DatabaseUnreachable, SchemaNotMigrated, environment_error
from engine.storage.migrate import DataLossRefused, MigrationError, apply_migration
from engine.storage.records import (
    ExportFieldError,
    NotADataObject,
    UnknownObject,
    data_object,
    export_records_file,
    load_file,
)
from engine.storage.retry import DatabaseBusyError
from engine.storage.types import ValueOutOfRange, to_db_converter

from contexts import context
from storage_models import T, billing_model, drop_field, fld


def test_every_storage_error_is_an_engine_error_with_its_own_code():
    classes = (MigrationError, DataLossRefused, InputFileRefused, UnknownObject, NotADataObject,
               ExportFieldError, ValueOutOfRange, DatabaseBusyError, DatabaseUnreachable, SchemaNotMigrated)
    codes = [cls.code for cls in classes]
    assert all(issubclass(cls, EngineError) for cls in classes)
    assert len(set(codes)) == len(codes)
    assert all(code[:2] in ("R1", "R9") for code in codes)


def test_a_record_error_is_a_problem_at_its_file_row_and_column():
    error = RecordError("accounts.csv", 3, "Email", "'x' is not an e-mail address")
    problem = error.problem
    assert problem.code == InputFileRefused.code
    assert problem.where == Where(file="accounts.csv", row=3, field="Email")
    assert problem.where.render() + ": " + problem.message == error.render()
    whole_file = RecordError("x.json", None, None, "the file is empty")
    assert whole_file.problem.where.render() + ": " + whole_file.problem.message == whole_file.render()


def test_load_file_refuses_a_file_with_every_problem(engine, tmp_path):
    model = billing_model()
    apply_migration(engine, model)
    path = tmp_path / "accounts.csv"
    path.write_text("Name,Email\n,a@b.example\nX,not-an-email\n", encoding="utf-8")
    with pytest.raises(InputFileRefused) as info:
        load_file(engine, context(model), "Account", path)
    assert info.value.message == f"2 problem(s) in {path}; nothing was loaded"
    assert [p.where.render() for p in info.value.problems] == [f"{path}:2:Name", f"{path}:3:Email"]
    good = tmp_path / "good.csv"
    good.write_text("Name\nAcme\n", encoding="utf-8")
    assert load_file(engine, context(model), "Account", good).inserted == 1


def test_only_data_objects_are_named(tmp_path):
    ctx = context(billing_model())
    assert data_object(ctx, "account").name == "Account"
    with pytest.raises(UnknownObject) as unknown:
        data_object(ctx, "Acount")
    assert unknown.value.message == "'Acount' is not a data object of this org"
    assert "Account" in (unknown.value.hint or "")
    with pytest.raises(NotADataObject) as setting:
        data_object(ctx, "BillingSettings")
    assert setting.value.message == "'BillingSettings' is not a data object of this org"
    assert "setting" in setting.value.hint


def test_export_to_a_file_is_whole_or_absent(engine, tmp_path):
    model = billing_model()
    apply_migration(engine, model)
    target = tmp_path / "out" / "accounts.csv"
    report = export_records_file(engine, context(model), "account", target)
    assert (report.object_name, report.path, report.count) == ("Account", target, 0)
    assert target.read_text(encoding="utf-8") == "Id,Name,AccountNumber,Industry,ParentId,CreditLimit,Active,Email\n"
    missing = tmp_path / "out" / "nothing.csv"
    with pytest.raises(ExportFieldError, match="no field 'Colour'"):
        export_records_file(engine, context(model), "Account", missing, fields=["Colour"])
    assert not missing.exists() and not missing.with_name("nothing.csv.part").exists()


def test_refused_data_loss_lists_each_change_as_a_problem(engine):
    model = billing_model()
    apply_migration(engine, model)
    with pytest.raises(DataLossRefused) as info:
        apply_migration(engine, drop_field(model, "Account", "Email"))
    (problem,) = info.value.problems
    assert problem.code == "R111" and problem.where == Where(object="Account", field="Email")
    assert info.value.message.startswith("1 change would lose data; nothing was applied")


def test_a_number_too_wide_for_its_column_names_the_field():
    convert = to_db_converter(fld("Invoice", "Rate", T.PERCENT, precision=5, scale=4), "sqlite")
    with pytest.raises(ValueOutOfRange, match=r"does not fit NUMERIC\(5, 4\)") as info:
        convert(123)
    assert info.value.where == Where(object="Invoice", field="Rate")


def test_environment_failures_become_runtime_errors(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(sa.exc.OperationalError) as missing:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM account"))
    assert isinstance(environment_error(missing.value), SchemaNotMigrated)
    engine.dispose()

    nowhere = sa.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}")
    with pytest.raises(sa.exc.OperationalError) as unreachable:
        nowhere.connect()
    assert isinstance(environment_error(unreachable.value), DatabaseUnreachable)
    assert environment_error(ValueError("not a database error")) is None


@pytest.mark.postgres
def test_an_unreachable_server_is_an_environment_error(pg_url):
    url = sa.engine.make_url(pg_url).set(port=1, host="127.0.0.1")
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError) as info:
        engine.connect()
    found = environment_error(info.value)
    assert isinstance(found, DatabaseUnreachable) and found.code == "R902"
