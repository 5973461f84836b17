"""Fixtures of the booking tests.

``books`` is the sample org with the sample data on both backends (through
``db_url``); ``books_sqlite`` on SQLite only. ``make_books(url, model,
org_dir)`` does the same for org variants. The databases come from the
shared ``prepared`` fixture (tests/databases.py): migrated and loaded once
per session and org on SQLite and copied per test, prepared in the test's
private schema on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config.orgcopy import REPO_ROOT

from .helpers import Books, load_model


@pytest.fixture(scope="session")
def sample_model():
    return load_model(REPO_ROOT)


@pytest.fixture
def make_books(prepared):
    def make(url: str, model, org_dir: Path = REPO_ROOT) -> Books:
        return Books(prepared(url, model), model, url, org_dir)

    return make


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """A SQLite file of its own (``db_url``'s SQLite file is metabill.db)."""
    return f"sqlite:///{tmp_path / 'books.db'}"


@pytest.fixture
def books(db_url, sample_model, make_books) -> Books:
    return make_books(db_url, sample_model)


@pytest.fixture
def books_sqlite(sqlite_url, sample_model, make_books) -> Books:
    return make_books(sqlite_url, sample_model)
