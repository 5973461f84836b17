"""Fixtures of the invoice-run tests.

Two orgs, each loaded once per session: the sample org as shipped
(``sample_model``) and the test org (``test_model``, see helpers.py). Their
databases come from the shared ``prepared`` fixture (tests/databases.py):
the org's schema and the sample data, prepared once per session as a SQLite
file and copied for every SQLite test; a PostgreSQL test migrates and loads
into its private schema.

``sample`` and ``billing`` give a :class:`Harness` on both backends (through
``db_url``); ``sample_sqlite`` and ``billing_sqlite`` on SQLite only, for the
many small cases whose engine code does not depend on the backend.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from databases import REPO_ROOT, load_model

from .helpers import Harness, make_test_org


@pytest.fixture(scope="session")
def sample_model():
    return load_model(REPO_ROOT)


@pytest.fixture(scope="session")
def test_org_dir(tmp_path_factory) -> Path:
    return make_test_org(tmp_path_factory.mktemp("billing") / "org")


@pytest.fixture(scope="session")
def test_model(test_org_dir):
    return load_model(test_org_dir)


@pytest.fixture
def make_harness(prepared):
    """``make_harness(url, model, org_dir)``: the database at ``url`` with the
    schema and the sample data."""

    def make(url: str, model, org_dir: Path) -> Harness:
        return Harness(prepared(url, model), model, url, org_dir)

    return make


@pytest.fixture
def sample(db_url, sample_model, make_harness) -> Harness:
    return make_harness(db_url, sample_model, REPO_ROOT)


@pytest.fixture
def billing(db_url, test_model, test_org_dir, make_harness) -> Harness:
    return make_harness(db_url, test_model, test_org_dir)


@pytest.fixture
def sample_sqlite(sqlite_url, sample_model, make_harness) -> Harness:
    return make_harness(sqlite_url, sample_model, REPO_ROOT)


@pytest.fixture
def billing_sqlite(sqlite_url, test_model, test_org_dir, make_harness) -> Harness:
    return make_harness(sqlite_url, test_model, test_org_dir)
