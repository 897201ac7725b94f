"""Fixtures of the Xen model tests."""

from __future__ import annotations

import pytest

from vaalloc.xen import Xen


@pytest.fixture
def xen() -> Xen:
    """A two-CPU Xen with the stale-TLB detector on."""
    return Xen(cpus=2, stale_check=True)
