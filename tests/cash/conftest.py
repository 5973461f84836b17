"""Fixtures of the cash tests: the booking tests' databases (the sample org
with its sample data, on SQLite and PostgreSQL through ``db_url``)."""

from booking.conftest import book_templates, books, books_sqlite, make_books, sample_model, sqlite_url  # noqa: F401

import pytest

from .helpers import billed, cash_books


@pytest.fixture
def cash(books):
    """The sample org's database with the finalization write-off step wired."""
    return cash_books(books)


@pytest.fixture
def orders(cash):
    """``cash`` with the sample orders billed over 2024: INV-2024-00001 ..
    INV-2024-00010 (00003 in CHF, 00008/00009 progress invoices)."""
    return billed(cash)
