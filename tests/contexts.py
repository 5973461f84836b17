"""Runtime contexts for tests.

The engine's layers take a :class:`~engine.storage.context.Context`, which a
command builds once from its loaded model. Tests hold models (session
fixtures, org variants); :func:`context` gives each model one context, so a
test's calls share tables and services exactly as one command's would.
"""

from __future__ import annotations

from engine.config.model import OrgModel
from engine.storage.context import Context

_CONTEXTS: dict[int, tuple[OrgModel, Context]] = {}


def context(model: OrgModel | Context) -> Context:
    """The context of ``model`` (built on first use); a context is returned as is."""
    if isinstance(model, Context):
        return model
    found = _CONTEXTS.get(id(model))
    if found is None or found[0] is not model:
        found = _CONTEXTS[id(model)] = (model, Context(model))
    return found[1]
