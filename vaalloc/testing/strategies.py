"""Hypothesis strategies for allocator regions, requests and whole operation traces.

Shaped so that the interesting edges come up in a few dozen examples rather than never:

* regions are small (tens to a few hundred granules) with small granules for ``xen_vmap``, so
  that Xen's bitmap (``granule * 8`` bits per bitmap page) needs several pages and ``vm_top``
  has to grow, and region sizes cluster just around those page boundaries;
* requests mix small runs (most real traffic), runs of a sizeable fraction of the region
  (fragmentation, exhaustion) and runs of the whole region or more (refusal, last granule);
* alignments are powers of two, with an occasional non-power of two for ``xen_vmap`` (Xen uses
  the lowest set bit).
"""

from __future__ import annotations

from typing import NamedTuple

import hypothesis.strategies as st

__all__ = [
    "AllocOp",
    "Region",
    "alignments",
    "alloc_requests",
    "op_traces",
    "regions",
    "request_sizes",
]

XEN_VMAP = "xen_vmap"


class Region(NamedTuple):
    """An allocator's range: byte addresses ``[start, end)`` of ``granule``-byte units."""

    start: int
    end: int
    granule: int

    @property
    def granules(self) -> int:
        """Units in the region."""
        return (self.end - self.start) // self.granule


class AllocOp(NamedTuple):
    """One step of a trace: ``("alloc", nr, align)`` or ``("free", index, 0)``, where
    ``index`` picks a live allocation (modulo how many are live; ignored when none is)."""

    kind: str
    a: int
    b: int


def alignments(policy: str = "first-fit", max_align: int = 16) -> st.SearchStrategy[int]:
    """Alignments in granules: mostly 1, powers of two up to ``max_align``; for ``xen_vmap``
    also 0 and non-powers of two (Xen takes 0 as 1 and otherwise the lowest set bit)."""
    powers = [1 << k for k in range(max_align.bit_length())]
    common = st.sampled_from([1, 1, 1, *powers])
    if policy != XEN_VMAP:
        return common
    return common | st.sampled_from([0, 3, 6, 12])


def regions(policy: str = "first-fit", max_granules: int = 400) -> st.SearchStrategy[Region]:
    """Allocator ranges of 1..``max_granules`` granules at a granule-aligned, non-zero base.

    For ``xen_vmap`` the granule is 16, 32 or 64 bytes (a bitmap page then covers 128, 256 or
    512 bits) and sizes near multiples of that reach are favoured, so that the bitmap grows,
    the last bitmap page is partial, and ``vm_top`` meets ``vm_end``.  The generic policies use
    4KB granules.
    """
    if policy == XEN_VMAP:

        @st.composite
        def xen(draw: st.DrawFn) -> Region:
            granule = draw(st.sampled_from([16, 16, 32, 64]))
            step = granule * 8
            size = draw(st.integers(1, max_granules))
            shape = draw(st.integers(0, 2))
            if step < max_granules and shape == 1:
                # Beyond the first bitmap page: vm_top must grow before the region fills.
                size = draw(st.integers(step + 1, max_granules))
            elif step <= max_granules and shape == 2:
                # Just around a bitmap page boundary: the last page partial, full, or one over.
                near = draw(st.integers(1, max_granules // step)) * step
                size = draw(st.integers(max(1, near - 3), min(max_granules, near + 3)))
            base = draw(st.integers(1, 64)) * granule * 8
            return Region(base, base + size * granule, granule)

        return xen()
    return st.builds(
        lambda base, size: Region(base * 4096, (base + size) * 4096, 4096),
        st.integers(1, 64),
        st.integers(1, max_granules),
    )


def request_sizes(max_granules: int = 400) -> st.SearchStrategy[int]:
    """Run lengths for a region of up to ``max_granules``: small runs (most real traffic), up to
    a quarter and up to all of the region (fragmentation, exhaustion), and a few granules more
    than the region holds (refusal)."""
    quarter = max(2, max_granules // 4)
    return (
        st.integers(1, 8)
        | st.integers(1, quarter)
        | st.integers(quarter, max_granules)
        | st.integers(max_granules, max_granules + 8)
    )


def alloc_requests(
    max_granules: int = 400, policy: str = "first-fit"
) -> st.SearchStrategy[tuple[int, int]]:
    """``(nr, align)`` pairs: :func:`request_sizes` with :func:`alignments`."""
    return st.tuples(request_sizes(max_granules), alignments(policy))


def op_traces(
    max_granules: int = 400, policy: str = "first-fit", max_ops: int = 60
) -> st.SearchStrategy[list[AllocOp]]:
    """Whole traces of allocs and frees (about two allocs per free, so regions fill up)."""
    alloc = alloc_requests(max_granules, policy).map(lambda r: AllocOp("alloc", r[0], r[1]))
    free = st.integers(0, 1 << 16).map(lambda i: AllocOp("free", i, 0))
    return st.lists(st.one_of(alloc, alloc, free), max_size=max_ops)
