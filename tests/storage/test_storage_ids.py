"""Record ids and AutoNumber values from _mb_sequence."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from engine.storage.db import open_engine, transaction
from engine.storage.ids import (advance_ids_past, format_autonumber, next_autonumbers, reserve_autonumbers,
                                reserve_ids)
from engine.storage.migrate import apply_migration

from engine.config.model import ObjectDef, ObjectKind
from storage_models import T, billing_model, fld, make_model


@pytest.fixture
def model(engine):
    model = billing_model()
    apply_migration(engine, model)
    return model


def test_ids_are_consecutive_blocks(engine, model):
    with transaction(engine) as conn:
        first = reserve_ids(conn, "account", 3)
        second = reserve_ids(conn, "account", 2)
        other = reserve_ids(conn, "invoice", 1)
        assert reserve_ids(conn, "account", 0) == range(0)
    assert list(first) == [1, 2, 3] and list(second) == [4, 5] and list(other) == [1]


def test_rolled_back_reservations_are_given_back(engine, model):
    with pytest.raises(RuntimeError):
        with transaction(engine) as conn:
            reserve_ids(conn, "account", 10)
            raise RuntimeError
    with transaction(engine) as conn:
        assert list(reserve_ids(conn, "account", 1)) == [1]


def test_first_reservation_starts_after_existing_rows(engine, model):
    with transaction(engine) as conn:
        conn.execute(
            sa.text("INSERT INTO account (id, name, createddate, lastmodifieddate) VALUES (41, 'x', :t, :t)"),
            {"t": "2024-01-01 00:00:00.000000"},
        )
        assert list(reserve_ids(conn, "account", 2)) == [42, 43]
        advance_ids_past(conn, "account", 99)
        assert list(reserve_ids(conn, "account", 1)) == [100]
        advance_ids_past(conn, "account", 50)  # never moves backwards
        assert list(reserve_ids(conn, "account", 1)) == [101]
        advance_ids_past(conn, "invoice", 7)  # first use
        assert list(reserve_ids(conn, "invoice", 1)) == [8]


def test_concurrent_reservers_never_share_an_id(engine, model):
    taken: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def reserve() -> None:
        try:
            for _ in range(10):
                with transaction(engine) as conn:
                    block = reserve_ids(conn, "invoice", 5)
                with lock:
                    taken.extend(block)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert sorted(taken) == list(range(1, 201))


def test_autonumber_rendering():
    assert format_autonumber("INV-{000000}", 42) == "INV-000042"
    assert format_autonumber("INV-{000}", 12345) == "INV-12345"  # wider: not truncated
    assert format_autonumber("{0}-X", 7) == "7-X"
    with pytest.raises(ValueError):
        format_autonumber("INV-", 1)


def test_next_autonumbers_for_the_name_field(engine, model):
    invoice = model.require("Invoice")
    with transaction(engine) as conn:
        assert next_autonumbers(conn, invoice, 3) == ["INV-000001", "INV-000002", "INV-000003"]
        assert next_autonumbers(conn, invoice, 0) == []
    with transaction(engine) as conn:
        assert next_autonumbers(conn, invoice, 1) == ["INV-000004"]


def test_reserved_autonumbers_read_as_the_listed_ones(engine, model):
    """The lazily formatted block (the set-based run reads few of its values)
    holds exactly what next_autonumbers lists, and advances the counter alike."""
    invoice = model.require("Invoice")
    with transaction(engine) as conn:
        block = reserve_autonumbers(conn, invoice, 4)
        assert len(block) == 4 and block.first == 1
        assert list(block) == ["INV-000001", "INV-000002", "INV-000003", "INV-000004"]
        assert (block[0], block[3], block[-1], block[1:3]) == ("INV-000001", "INV-000004", "INV-000004",
                                                             ["INV-000002", "INV-000003"])
        with pytest.raises(IndexError):
            block[4]
        assert next_autonumbers(conn, invoice, 1) == ["INV-000005"]
        assert list(reserve_autonumbers(conn, invoice, 0)) == []
        assert next_autonumbers(conn, invoice, 1) == ["INV-000006"]
    with transaction(engine) as conn:
        with pytest.raises(ValueError):
            reserve_autonumbers(conn, model.require("Account"), 1)


def test_next_autonumbers_needs_an_autonumber_field(engine, model):
    with transaction(engine) as conn:
        with pytest.raises(ValueError):
            next_autonumbers(conn, model.require("Account"), 1)


def test_autonumber_field_other_than_name():
    ticket = ObjectDef(
        name="Ticket__c",
        label="Ticket",
        kind=ObjectKind.OBJECT,
        fields=(
            fld("Ticket__c", "Name", T.TEXT, length=80),
            fld("Ticket__c", "Number__c", T.AUTONUMBER, autonumber_format="T{00}"),
        ),
    )
    model = make_model(ticket)
    engine = open_engine("sqlite://")
    try:
        apply_migration(engine, model)
        with engine.begin() as conn:
            assert next_autonumbers(conn, ticket, 2) == ["T01", "T02"]
            assert next_autonumbers(conn, ticket, 1, "Number__c") == ["T03"]
    finally:
        engine.dispose()
