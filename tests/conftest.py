"""Shared test configuration: hypothesis profiles.

``ci`` keeps the whole suite inside the CI budget and derandomizes it, so that a run on a
clean machine explores what the last green run explored (a landing must not hang on a lucky
draw); finding new bugs by chance is the job of ``dev`` runs and of the long campaigns of
``vaalloc fuzz``. ``dev`` is the default for a developer (random, with the example database);
``fuzz`` is for long runs of the suite itself. Choose with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None, print_blob=True)
settings.register_profile("fuzz", max_examples=5000, stateful_step_count=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
