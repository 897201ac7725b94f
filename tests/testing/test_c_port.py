"""The kit on a real port: examples/c_port's vm_alloc/vm_free built as a shared library,
driven through ctypes, must agree with vaalloc step by step; the same source with the fit
test's ``<`` turned into ``<=`` (the missing guard page Xen fixed in August 2013) must be
caught, and the reproducer shrunk to a handful of calls."""

from __future__ import annotations

import ctypes
import re

import pytest
from hypothesis import settings

from tests.testing.cport import COMPILER, CVmap, build
from vaalloc.testing import DifferentialAllocatorMachine, Region, RunStats
from vaalloc.testing.fuzz import machine_settings, run_machine

pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return build(tmp_path_factory.mktemp("vmap_good"))


@pytest.fixture(scope="module")
def buggy(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    return build(tmp_path_factory.mktemp("vmap_bug"), planted_bug=True)


def machine_for(so: ctypes.CDLL, **attrs: object) -> type[DifferentialAllocatorMachine]:
    def make_adapter(self: DifferentialAllocatorMachine, region: Region) -> CVmap:
        return CVmap(so, region)

    body = {"policy": "xen_vmap", "run_stats": RunStats(), "make_adapter": make_adapter, **attrs}
    return type("CVmapMachine", (DifferentialAllocatorMachine,), body)


def test_the_c_port_agrees_with_vaalloc_step_by_step(good: ctypes.CDLL) -> None:
    machine = machine_for(good)
    profile = settings()
    failure = run_machine(machine, profile.max_examples, seed=1, steps=profile.stateful_step_count)
    assert failure is None, failure
    stats = machine.run_stats
    assert stats is not None and stats.examples >= profile.max_examples
    # The fuzzer really exercised the port: allocs, frees and refusals, far beyond setup.
    assert stats.steps > 10 * stats.examples


def test_the_c_port_exposes_xen_hints_and_they_are_compared(good: ctypes.CDLL) -> None:
    region = Region(0x1000, 0x1000 + 300 * 16, 16)
    port = CVmap(good, region)
    try:
        assert (port.vm_low, port.vm_top) == (3, 128)  # 300 bits: 38 bytes of bitmap, 3 pages
        assert port.alloc(1, 1) == 0x1000 + 4 * 16  # bit 3 is the guard before the run
        assert port.free(0x1000 + 4 * 16) == 1
        assert port.free(0x1000 + 4 * 16) == 0  # Xen WARNs and refuses a double free
    finally:
        port.close()


def test_the_planted_fit_bug_is_found_and_shrunk(buggy: ctypes.CDLL) -> None:
    # Small regions and short traces keep shrinking to a few seconds.  Seeds fixed so the test
    # is deterministic: with hypothesis 6.155 the first seed finds it after ~20 examples; the
    # others are there so that a hypothesis upgrade cannot turn bad luck into a failure.
    for seed in (1, 2, 7):
        machine = machine_for(buggy, max_granules=40, check_refusals=False)
        failure = run_machine(machine, 200, seed=seed, steps=10)
        if failure is not None:
            break
    assert failure is not None, "the kit missed a missing guard page"
    stats = machine.run_stats
    assert stats is not None and stats.first_failure_at is not None
    calls = [
        line for line in failure.splitlines() if re.match(r"(\w+ = )?state\.(alloc|free)", line)
    ]
    assert 2 <= len(calls) <= 6, failure
    # The step that differs is an allocation that the C code placed against a used bit.
    assert re.search(r"PortMismatch: alloc\(nr=\d+, align=\d+\): port returned 0x", failure)
    assert "trace:" in failure and "region [" in failure


def test_the_planted_bug_is_a_real_difference_replayed_by_hand(
    buggy: ctypes.CDLL, good: ctypes.CDLL
) -> None:
    # The smallest case (granule 16: bits 0-2 hold the bitmap): allocate 2 and 1, free the 2,
    # ask for 3: only the buggy code squeezes it in with no guard before the next run.
    region = Region(0x1000, 0x1000 + 64 * 16, 16)
    answers = []
    for so in (good, buggy):
        port = CVmap(so, region)
        first = port.alloc(2, 1)
        assert first is not None and port.alloc(1, 1) is not None
        assert port.free(first) == 2
        answers.append(port.alloc(3, 1))
        port.close()
    assert answers[1] == first  # ends right against the next allocation: no guard bit
    assert answers[0] != first


def test_machine_settings_write_no_database() -> None:
    assert machine_settings(5).database is None
