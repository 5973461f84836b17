"""The runtime context: what every layer of one command shares.

A command loads the org once (:func:`engine.project.load_project`) and builds
one :class:`Context` from the resolved model. Every layer above storage
receives it instead of the raw model:

* ``model``: the immutable resolved metadata;
* ``metadata`` / :meth:`table`: the SQLAlchemy tables derived from it, built
  once here (never re-derived per call, never cached by object identity);
* ``settings``: Global Settings as typed values with their defaults
  (:class:`engine.domain.settings.GlobalSettings`);
* :meth:`service`: the resolvers a layer builds from the model (account
  decisions, tax rules, counters, copied fields), built on first use and
  kept for the rest of the command.

The context is per command and immutable in what it exposes; services are
pure functions of the model and settings, so memoizing them here is safe.
"""

from __future__ import annotations

import hashlib
from typing import Callable, TypeVar

import sqlalchemy as sa

from engine.config.model import ObjectDef, OrgModel
from engine.domain.settings import GlobalSettings

from .schema import build_metadata

T = TypeVar("T")


class Context:
    """One command's view of the org: model, tables, typed settings, services."""

    __slots__ = ("model", "metadata", "settings", "config_hash", "_services")

    def __init__(self, model: OrgModel, *, settings: GlobalSettings | None = None,
                 metadata: sa.MetaData | None = None, config_hash: str | None = None):
        self.model = model
        self.metadata = metadata if metadata is not None else build_metadata(model)
        self.settings = settings if settings is not None else GlobalSettings.of(model)
        #: The configuration's hash, carried by generated records as provenance.
        self.config_hash = config_hash or model.config_hash
        self._services: dict[Callable, object] = {}

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_services"):
            raise AttributeError("a Context is immutable; build another with with_settings()")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"Context({self.model.root!r}, config {self.config_hash[:12]})"

    def obj(self, name: str) -> ObjectDef:
        """A data object of the model by name (a KeyError names it when missing)."""
        return self.model.require(name)

    def table(self, object_name: str) -> sa.Table:
        """The table of a data object by object name."""
        return self.metadata.tables[self.model.require(object_name).table_name]

    def service(self, factory: Callable[["Context"], T]) -> T:
        """The instance ``factory(self)`` built on first use and shared by every
        later call in this command (``ctx.service(AccountResolver)``)."""
        found = self._services.get(factory)
        if found is None:
            found = self._services[factory] = factory(self)
        return found  # type: ignore[return-value]

    def with_settings(self, settings: GlobalSettings, change: str) -> "Context":
        """A context of the same model and tables with other settings, for a
        command that runs as if a switch were on (``fix-invoices
        --enable-integration``). ``change`` names the override
        (``GlobalSettings.X=true``); it goes into the config hash, so records
        written under the override say so."""
        digest = hashlib.sha256(f"{self.config_hash}|{change}".encode()).hexdigest()
        return Context(self.model, settings=settings, metadata=self.metadata, config_hash=digest)
