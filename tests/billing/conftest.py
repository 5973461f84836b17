"""Fixtures of the invoice-run tests.

Two orgs, each loaded once per session: the sample org as shipped
(``sample_model``) and the test org (``test_model``, see helpers.py). A
database with the org's schema and the sample data is prepared once per
session as a SQLite file and copied for every SQLite test (a copy is much
faster than migrating and loading again); a PostgreSQL test migrates and
loads into its private schema.

``sample`` and ``billing`` give a :class:`Harness` on both backends (through
``db_url``); ``sample_sqlite`` and ``billing_sqlite`` on SQLite only, for the
many small cases whose engine code does not depend on the backend.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from engine.project import load_project
from engine.storage.db import open_engine

from config.orgcopy import REPO_ROOT

from .helpers import Harness, make_test_org, prepare_database


def _load(path: Path):
    result = load_project(path)
    assert result.ok, [str(d) for d in result.errors]
    return result.model


@pytest.fixture(scope="session")
def sample_model():
    return _load(REPO_ROOT)


@pytest.fixture(scope="session")
def test_org_dir(tmp_path_factory) -> Path:
    return make_test_org(tmp_path_factory.mktemp("billing") / "org")


@pytest.fixture(scope="session")
def test_model(test_org_dir):
    return _load(test_org_dir)


class _Templates:
    """One migrated and loaded SQLite file per org model, made on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, Path] = {}

    def file_for(self, model) -> Path:
        key = model.config_hash  # not id(model): module-scoped models come and go
        if key not in self.files:
            path = self.root / f"template-{len(self.files)}.db"
            engine = open_engine(f"sqlite:///{path}")
            try:
                prepare_database(engine, model)
            finally:
                engine.dispose()  # checkpoints the WAL into the file
            self.files[key] = path
        return self.files[key]


@pytest.fixture(scope="session")
def sqlite_templates(tmp_path_factory) -> _Templates:
    return _Templates(tmp_path_factory.mktemp("templates"))


@pytest.fixture
def make_harness(sqlite_templates, engine_for):
    """``make_harness(url, model, org_dir)``: the database at ``url`` with the
    schema and the sample data."""

    def make(url: str, model, org_dir: Path) -> Harness:
        if url.startswith("sqlite"):
            shutil.copyfile(sqlite_templates.file_for(model), make_url(url).database)
            engine = engine_for(url)
        else:
            engine = engine_for(url)
            prepare_database(engine, model)
        return Harness(engine, model, url, org_dir)

    return make


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'metabill.db'}"


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
