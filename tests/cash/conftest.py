"""Fixtures of the cash tests: the sample org with its sample data, on
SQLite and PostgreSQL (``db_url``), through the shared ``prepared`` fixture
(tests/databases.py: the SQLite file is prepared once per session and org
and copied per test; PostgreSQL prepares in the test's private schema).

``make_books(url, model, org_dir)`` gives a :class:`booking.helpers.Books`
on such a database for any org variant; ``books`` is the sample org on both
backends, ``books_sqlite`` on SQLite only. The cash-management tests
(tests/cashmgmt) use the same fixtures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from booking.helpers import Books
from databases import REPO_ROOT, load_model

from .helpers import billed, cash_books


@pytest.fixture(scope="session")
def sample_model():
    return load_model(REPO_ROOT)


@pytest.fixture
def make_books(prepared):
    def make(url: str, model, org_dir: Path = REPO_ROOT) -> Books:
        return Books(prepared(url, model), model, url, org_dir)

    return make


@pytest.fixture
def books(db_url, sample_model, make_books) -> Books:
    return make_books(db_url, sample_model)


@pytest.fixture
def books_sqlite(sqlite_url, sample_model, make_books) -> Books:
    return make_books(sqlite_url, sample_model)


@pytest.fixture
def cash(books):
    """The sample org's database with the finalization write-off step wired."""
    return cash_books(books)


@pytest.fixture
def orders(cash):
    """``cash`` with the sample orders billed over 2024: INV-2024-00001 ..
    INV-2024-00010 (00003 in CHF, 00008/00009 progress invoices)."""
    return billed(cash)
