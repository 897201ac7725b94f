"""The allocator benchmark's own machinery, run tiny (the benchmark itself is not part of the
suite): today's index and the first one (extracted from git history by the benchmark) must place
every request alike, and the memory probe must count the allocator."""

from __future__ import annotations

import pytest

from benchmarks.baseline import legacy_allocator
from vaalloc.alloc import RangeAllocator

try:
    legacy_allocator()
except LookupError as error:  # pragma: no cover - a checkout without git history
    pytest.skip(f"the benchmark's baseline needs git history: {error}", allow_module_level=True)

from benchmarks import bench_alloc  # after the check: it extracts the baseline when imported

LegacyAllocator = bench_alloc.LegacyAllocator


@pytest.mark.parametrize("policy", ["xen_vmap", "first-fit", "best-fit", "instant-fit"])
def test_v1_and_v2_place_alike_on_the_benchmark_trace(policy: str) -> None:
    # speed() raises SystemExit on the first differing placement.
    new, old = bench_alloc.speed(policy, 4096, None, seed=3, batches=2, ops=400)
    assert new > 0 and old > 0


def test_memory_probe_counts_the_whole_allocator() -> None:
    v2 = bench_alloc.memory(RangeAllocator, "first-fit", 200)
    v1 = bench_alloc.memory(LegacyAllocator, "first-fit", 200)
    # A tag, a key, a list slot: tens of bytes at least, and less than the first index.
    assert all(50 < new < old for new, old in zip(v2, v1, strict=True))
