"""Whole-table reads and writes of the model's physical memory.

Xen touches p2m tables a whole 4KB page at a time when it builds them, write-protects them
for log-dirty or cleans them; doing the same here through 512 separate ``read64``/``write64``
calls would dominate the model's run time.  These helpers move one table (512 descriptors) in
one call, using a bulk accessor of :class:`vaalloc.lpae.PhysicalMemory` when it has one and
falling back to per-descriptor calls otherwise (same result, slower).
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

from vaalloc.errors import RangeError
from vaalloc.xen.layout import LPAE_ENTRIES, PAGE_SHIFT, PAGE_SIZE, PTE_SIZE

__all__ = ["read_table", "write_table"]


def read_table(mem: Any, pa: int, n: int = LPAE_ENTRIES) -> list[int]:
    """Return the ``n`` descriptors of the table at ``pa`` (4KB aligned). O(n)."""
    bulk = getattr(mem, "read_table", None)
    if bulk is not None:
        return list(bulk(pa, n))
    frames = getattr(mem, "_frames", None)
    if isinstance(frames, dict) and n <= LPAE_ENTRIES and not pa & (PAGE_SIZE - 1):
        # Workaround until PhysicalMemory has a public bulk read: its storage is a dict of
        # array('Q') per frame (unpopulated frames read as zero).
        words = frames.get(pa >> PAGE_SHIFT)
        return [0] * n if words is None else words[:n].tolist()
    read64 = mem.read64
    return [read64(pa + i * PTE_SIZE) for i in range(n)]


def write_table(mem: Any, pa: int, values: Sequence[int]) -> None:
    """Store ``values`` as consecutive descriptors from ``pa``. O(len(values))."""
    bulk = getattr(mem, "write_table", None)
    if bulk is not None:
        bulk(pa, values)
        return
    words_of = getattr(mem, "_words", None)
    if words_of is not None and len(values) <= LPAE_ENTRIES and not pa & (PAGE_SIZE - 1):
        # Workaround until PhysicalMemory has a public bulk write (values are trusted: they
        # are descriptors this package computed, 64-bit by construction).
        if pa >= mem.limit:
            raise RangeError(f"write_table: PA {pa:#x} beyond {mem!r}")
        words = words_of(pa >> PAGE_SHIFT)
        words[: len(values)] = array("Q", values)
        return
    write64 = mem.write64
    for i, v in enumerate(values):
        write64(pa + i * PTE_SIZE, v)
