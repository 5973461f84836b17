"""Hypothesis settings of the fuzz tests (issue 14).

``METABILL_FUZZ_EXAMPLES`` sets the examples per fuzz test (default 40, so
that the whole folder stays well within a few minutes in CI); raise it for a
longer hunt, e.g. ``METABILL_FUZZ_EXAMPLES=1000 pytest tests/fuzz``. The
settings are applied to these tests only, never loaded globally.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

FUZZ_ENV = "METABILL_FUZZ_EXAMPLES"


def fuzz_settings() -> settings:
    examples = int(os.environ.get(FUZZ_ENV) or 40)
    return settings(max_examples=examples, deadline=None, derandomize=False, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
