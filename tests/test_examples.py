"""Every script in examples/ runs to completion (each asserts what it shows) and prints the
result it is there to demonstrate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# What each example must print; a new example without an entry here fails the coverage test.
EXPECTED = {
    "vmap_session.py": ["alloc(1) -> 0x10007000", "vunmap: 3 pages unmapped"],
    "p2m_walk.py": ["level 2 block of 2MB", "permission fault, level 3, stage 2"],
    "logdirty_fault.py": ["faults=1", "peek(clean=True) -> ['0x81234']", "stale TLB hits: 0"],
    "stale_tlb.py": ["read after remap without a flush: 0x111", "no new stale hit"],
    "strategy_comparison.py": ["partitioned", "switched", "walk", "cheapest per write fault"],
}


def test_every_example_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_shows_its_point(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=EXAMPLES.parent,
    )
    assert proc.returncode == 0, proc.stderr
    for text in EXPECTED[name]:
        assert text in proc.stdout, (name, text)
