"""Shared test configuration: hypothesis profiles.

``ci`` keeps the whole suite inside the CI budget; ``dev`` is the default for a
developer; ``fuzz`` is for long campaigns (``vaalloc fuzz`` uses its own settings).
Choose with the ``HYPOTHESIS_PROFILE`` environment variable.
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
    derandomize=False,
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None, print_blob=True)
settings.register_profile("fuzz", max_examples=5000, stateful_step_count=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
