"""One way for every test package to get a prepared database.

A *preparation* turns an empty database into the state a group of tests
starts from (migrate the org's schema, load ``data/*.csv``, maybe bill and
finalize the demo runs). :class:`PreparedDatabases` runs each preparation
once per session and org on a SQLite file and copies that file for every
SQLite test (a copy is much faster than preparing again); a PostgreSQL test
prepares in its private schema. Billing, booking, cash, exports and document
tests all go through it (the ``prepared`` fixture of ``tests/conftest.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from engine.config.model import OrgModel
from engine.project import load_project
from engine.storage.db import open_engine
from engine.storage.migrate import apply_migration
from engine.storage.records import load_records

from contexts import context

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"

Preparation = Callable[[sa.Engine, OrgModel], None]


def load_model(org: Path) -> OrgModel:
    """The org at ``org``, which must load without errors."""
    result = load_project(org)
    assert result.ok, [str(d) for d in result.errors]
    return result.model


def load_data(engine: sa.Engine, model: OrgModel, data_dir: Path = DATA_DIR) -> None:
    """data/*.csv in file-name order, as data/README.md says."""
    for path in sorted(data_dir.glob("[0-9]*_*.csv")):
        report = load_records(engine, context(model), path.stem.split("_", 1)[1], path)
        assert report.ok, report.render()


def migrate_and_load(engine: sa.Engine, model: OrgModel) -> None:
    """The preparation most tests start from: the org's schema and the sample data."""
    apply_migration(engine, model)
    load_data(engine, model)


class PreparedDatabases:
    """Prepared SQLite files per (preparation, org), made on first use."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[tuple, Path] = {}

    def file_for(self, model: OrgModel, prepare: Preparation, key: str = "") -> Path:
        """The prepared SQLite file of ``prepare`` for ``model`` (``key``
        tells apart preparations that take further arguments)."""
        # not id(model): module-scoped models come and go
        ident = (getattr(prepare, "__qualname__", repr(prepare)), key, model.config_hash)
        if ident not in self.files:
            path = self.root / f"prepared-{len(self.files)}.db"
            engine = open_engine(f"sqlite:///{path}")
            try:
                prepare(engine, model)
            finally:
                engine.dispose()  # checkpoints the WAL into the file
            self.files[ident] = path
        return self.files[ident]

    def open(self, url: str, model: OrgModel, engine_for: Callable[[str], sa.Engine],
             prepare: Preparation = migrate_and_load, key: str = "") -> sa.Engine:
        """An engine on the database at ``url`` in the state ``prepare`` leaves."""
        if url.startswith("sqlite"):
            shutil.copyfile(self.file_for(model, prepare, key), make_url(url).database)
            return engine_for(url)
        engine = engine_for(url)
        prepare(engine, model)
        return engine
