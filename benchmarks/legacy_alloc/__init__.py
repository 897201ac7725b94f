"""vaalloc's allocator as it was at commit 83ca9ed (index v1), kept for benchmarks/bench_alloc.py.

A verbatim copy of ``vaalloc/alloc/{allocator,bitmap,errors,extents,policies,xenvmap}.py`` at
that commit, with only the package name in its imports changed.  It is benchmark-only: the
benchmark runs it side by side with today's allocator on the same operations, so that every
ratio it prints is measured in one run on the same machine.  Nothing in ``vaalloc`` or the tests
imports it (except the benchmark's own smoke test).
"""

from __future__ import annotations

from benchmarks.legacy_alloc.allocator import RangeAllocator

__all__ = ["RangeAllocator"]
