"""Fixtures and hypothesis profiles of the reliability tests.

Profiles (chosen with ``METABILL_HYPOTHESIS_PROFILE``, default ``ci``; see
docs/reliability.md). They are applied to the state machine only, never
loaded globally, so the rest of the suite keeps its own settings:

* ``ci``: a modest number of examples per database, for ``make test``,
  derandomized: the same histories on every machine and every run, so a red
  CI is caused by the change under test and reproduces with the same command;
* ``long``: at least 500 examples per database, for a release or after a
  change to the run, finalization or payments, drawn at random: this is the
  profile that explores new histories (a failure prints its
  ``@reproduce_failure`` blob).

The lifecycle machine (test_lifecycle_machine.py: the whole cycle with an
audit after every step) has profiles of the same names,
:data:`LIFECYCLE_PROFILES`: its steps cost more (each ends with the audit),
so its ``ci`` profile takes fewer examples.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from engine.project import load_project

from billing.helpers import make_test_org

PROFILE_ENV = "METABILL_HYPOTHESIS_PROFILE"
_COMMON = dict(
    deadline=None,  # a step runs real transactions on a loaded machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
PROFILES = {
    "ci": settings(max_examples=20, stateful_step_count=12, derandomize=True, **_COMMON),
    "long": settings(max_examples=500, stateful_step_count=20, derandomize=False, **_COMMON),
}

LIFECYCLE_PROFILES = {
    "ci": settings(max_examples=10, stateful_step_count=25, derandomize=True, **_COMMON),
    "long": settings(max_examples=500, stateful_step_count=15, derandomize=False, **_COMMON),
}


def _profile() -> str:
    name = os.environ.get(PROFILE_ENV, "ci").strip() or "ci"
    if name not in PROFILES:
        raise pytest.UsageError(f"{PROFILE_ENV}={name!r}: choose one of {', '.join(PROFILES)}")
    return name


def reliability_settings() -> settings:
    return PROFILES[_profile()]


def lifecycle_settings() -> settings:
    """The profile of the lifecycle machine (same names, same variable)."""
    return LIFECYCLE_PROFILES[_profile()]


@pytest.fixture(scope="session")
def reliability_org(tmp_path_factory) -> Path:
    """The test org of the invoice-run tests (it has the plain Usage__c source)."""
    return make_test_org(tmp_path_factory.mktemp("reliability") / "org")


@pytest.fixture(scope="session")
def lifecycle_model(tmp_path_factory):
    """The org of the lifecycle machine (lifecycle_world.make_lifecycle_org)."""
    from .lifecycle_world import make_lifecycle_org

    result = load_project(make_lifecycle_org(tmp_path_factory.mktemp("lifecycle") / "org"))
    assert result.ok, [str(d) for d in result.errors]
    return result.model


@pytest.fixture(scope="session")
def reliability_model(reliability_org):
    result = load_project(reliability_org)
    assert result.ok, [str(d) for d in result.errors]
    return result.model


@pytest.fixture
def world(db_url, reliability_model, tmp_path):
    """An empty database of the reliability org (``support.World``); a
    module that needs data in it defines its own ``world``."""
    from .support import World

    w = World(db_url, reliability_model, tmp_path)
    w.reset()
    yield w
    w.close()
