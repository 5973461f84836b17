"""Fixtures of the cash-management tests, on SQLite and PostgreSQL (``db_url``),
on the databases of the cash tests (``make_books``: tests/cash/conftest.py).

``cm_model`` is the sample org with ``EnableCashManagementIntegration: true``
(a copy made once per session); ``cm`` a database of it with the sample data;
``billed_off`` the sample orders billed over 2024 with the integration off
(the sample org itself), the situation the fix tasks start from.
"""

import pytest

from booking.helpers import org_variant
from booking.test_balanced_books import bill_orders
from cash import conftest as cash_fixtures
from databases import load_model

from .helpers import CM_ON, CMBooks

# The cash tests' databases, as fixtures of this directory too.
sample_model = cash_fixtures.sample_model
make_books = cash_fixtures.make_books
books = cash_fixtures.books


@pytest.fixture(scope="session")
def cm_org(tmp_path_factory):
    return org_variant(tmp_path_factory.mktemp("cm-org"), CM_ON)


@pytest.fixture(scope="session")
def cm_model(cm_org):
    return load_model(cm_org)


@pytest.fixture
def cm(db_url, cm_model, cm_org, make_books) -> CMBooks:
    books = make_books(db_url, cm_model, cm_org)
    return CMBooks(books.engine, books.model, books.url, books.org_dir)


@pytest.fixture
def billed_off(db_url, sample_model, make_books) -> CMBooks:
    books = make_books(db_url, sample_model)
    off = CMBooks(books.engine, books.model, books.url, books.org_dir)
    bill_orders(off)
    return off
