"""Fixtures of the booking tests.

``books`` is the sample org with the sample data on both backends (through
``db_url``); ``books_sqlite`` on SQLite only. On SQLite a migrated and loaded
database file is made once per session and org and copied per test;
PostgreSQL tests migrate and load into their private schema.
``make_books(url, model, org_dir)`` does the same for org variants.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from engine.storage.db import open_engine

from config.orgcopy import REPO_ROOT

from .helpers import Books, load_model, prepare


@pytest.fixture(scope="session")
def sample_model():
    return load_model(REPO_ROOT)


class _Templates:
    def __init__(self, root: Path):
        self.root = root
        self.files: dict[str, Path] = {}

    def file_for(self, model) -> Path:
        key = model.config_hash
        if key not in self.files:
            path = self.root / f"books-{len(self.files)}.db"
            engine = open_engine(f"sqlite:///{path}")
            try:
                prepare(engine, model)
            finally:
                engine.dispose()
            self.files[key] = path
        return self.files[key]


@pytest.fixture(scope="session")
def book_templates(tmp_path_factory) -> _Templates:
    return _Templates(tmp_path_factory.mktemp("book-templates"))


@pytest.fixture
def make_books(book_templates, engine_for):
    def make(url: str, model, org_dir: Path = REPO_ROOT) -> Books:
        if url.startswith("sqlite"):
            shutil.copyfile(book_templates.file_for(model), make_url(url).database)
            engine = engine_for(url)
        else:
            engine = engine_for(url)
            prepare(engine, model)
        return Books(engine, model, url, org_dir)

    return make


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'books.db'}"


@pytest.fixture
def books(db_url, sample_model, make_books) -> Books:
    return make_books(db_url, sample_model)


@pytest.fixture
def books_sqlite(sqlite_url, sample_model, make_books) -> Books:
    return make_books(sqlite_url, sample_model)
