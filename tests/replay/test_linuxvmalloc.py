"""linux-vmalloc: the fast policy against the line-by-line port of Linux's vmap-area allocator.

The differential machine drives both with the same alloc / free / lazy free / purge sequence.
Where the kernel searches its tree for ``size`` (``align <= PAGE_SIZE`` in v6.x; always under the
``exact`` rule of 9f531973dff3; ``align`` of one byte under 5.2) the two must return the same
address, purge at the same moments and keep the same free blocks.  Where the kernel searches for
``size + align - 1`` (its answer then depends on the tree's shape) the properties the policy
documents must hold: searching the same free space, the fast address is never higher than the
kernel's and it succeeds whenever the kernel does (so it purges only when the kernel purges; the
kernel may purge where the policy found a fit, and then land anywhere); without a window the
kernel never goes past the aligned start of the lowest free block of at least
``size + align - 1`` bytes (and always succeeds if one exists).  After such a step the fast
policy is moved to the kernel's placement, so that the machines stay comparable.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.reference.linux_vmalloc_plain import SEARCH_RULES, PlainLinuxVmalloc
from vaalloc.alloc.linuxvmalloc import LINUX_VMALLOC, LinuxVmalloc
from vaalloc.errors import InvalidFree, InvariantError, OutOfSpace, RangeError

PAGE = 4096


def merged(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Coalesce touching ``[start, end)`` byte intervals (sorted)."""
    out: list[tuple[int, int]] = []
    for s, e in sorted(runs):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def free_blocks(fast: LinuxVmalloc) -> list[tuple[int, int]]:
    """The fast policy's free blocks, computed from its busy areas."""
    busy = merged([(va, va + nr * PAGE) for va, nr in fast.allocations()])
    out, cursor = [], fast.start
    for s, e in busy:
        if s > cursor:
            out.append((cursor, s))
        cursor = e
    if cursor < fast.end:
        out.append((cursor, fast.end))
    return out


def fit_bound(blocks: list[tuple[int, int]], size: int, align: int) -> int | None:
    """Aligned start of the lowest free block of at least ``size + align - 1`` bytes."""
    for s, e in blocks:
        if e - s >= size + align - 1:
            return (s + align - 1) & ~(align - 1)
    return None


def fast_alloc(
    fast: LinuxVmalloc, nr: int, align: int, vstart: int | None, vend: int | None
) -> tuple[int | None, bool]:
    """What the replay engine does: alloc; when nothing fits and areas wait for a purge, purge
    and retry once (the kernel's overflow path).  Returns (address or None, purged)."""
    try:
        return fast.alloc(nr, align, vstart=vstart, vend=vend), False
    except OutOfSpace:
        if not fast.lazy_areas:
            return None, False
    fast.purge()
    try:
        return fast.alloc(nr, align, vstart=vstart, vend=vend), True
    except OutOfSpace:
        return None, True


class LinuxDifferential(RuleBasedStateMachine):
    """Same operations on the fast policy and on the plain port of mm/vmalloc.c."""

    @initialize(
        pages=st.sampled_from([16, 64, 200]) | st.integers(8, 600),
        base_page=st.integers(0, 1 << 12),
        search=st.sampled_from(SEARCH_RULES),
    )
    def setup(self, pages: int, base_page: int, search: str) -> None:
        self.start = base_page * PAGE
        self.end = self.start + pages * PAGE
        self.plain = PlainLinuxVmalloc(self.start, self.end, PAGE, search)
        self.fast = LinuxVmalloc(self.start, self.end, PAGE)
        self.busy: list[int] = []

    def _window(self, window: tuple[int, int] | None) -> tuple[int | None, int | None]:
        if window is None:
            return None, None
        pages = (self.end - self.start) // PAGE
        lo = self.start + (window[0] % pages) * PAGE
        hi = min(self.end, lo + window[1] * PAGE)
        return lo, hi

    @rule(
        pages=st.integers(1, 12) | st.integers(1, 300),
        align=st.sampled_from([1, PAGE, 1, PAGE, 2 * PAGE, 4 * PAGE, 16 * PAGE, 64 * PAGE]),
        window=st.none() | st.tuples(st.integers(0, 1 << 16), st.integers(1, 400)),
    )
    def alloc(self, pages: int, align: int, window: tuple[int, int] | None) -> None:
        size = pages * PAGE
        vstart, vend = self._window(window)
        before = self.plain.free_blocks()
        after_purge = merged(before + self.plain.lazy_blocks())
        purges = self.plain.purges
        lazy = bool(self.plain.lazy_blocks())
        want = self.plain.alloc_vmap_area(size, align, vstart, vend)
        plain_purged = self.plain.purges > purges
        lo = self.start if vstart is None else vstart
        hi = self.end if vend is None else vend
        exact = not self.plain.adjust_search_size(size, align, lo, hi)
        got, fast_purged = fast_alloc(self.fast, pages, max(1, align // PAGE), vstart, vend)
        if exact:
            event(f"{self.plain.search}: exact search")
            assert got == want
            assert fast_purged == (plain_purged and lazy)
        else:
            event(f"{self.plain.search}: search by size + align - 1")
            # The policy fails only where nothing fits at all, so it purges only if the
            # kernel's first search failed too.
            if fast_purged:
                assert plain_purged
            if plain_purged and not fast_purged:
                # The kernel's first search failed where the policy found a fit; after its
                # purge the kernel may well land lower than the policy, which did not purge.
                event("kernel purged where the policy found a fit")
                assert got is not None
            elif want is not None:
                # Same free space on both sides: never higher, and success when it succeeds.
                assert got is not None and got <= want
            if window is None:
                state = after_purge if plain_purged else before
                bound = fit_bound(state, size, align)
                if bound is not None:
                    assert want is not None and want <= bound
            if got != want:
                event("kernel's tree walk skipped a lower fit")
            # Move the fast policy to the kernel's answer so the states stay equal.
            if plain_purged and not fast_purged:
                self.fast.purge()
            if got is not None and got != want:
                self.fast.free(got)
            if want is not None and got != want:
                self.fast.reserve(want, pages)
        if want is not None:
            self.busy.append(want)

    @precondition(lambda self: self.busy)
    @rule(pick=st.integers(0, 1 << 30))
    def free(self, pick: int) -> None:
        va = self.busy.pop(pick % len(self.busy))
        assert self.plain.free_vmap_area(va) == self.fast.free(va) * PAGE

    @precondition(lambda self: self.busy)
    @rule(pick=st.integers(0, 1 << 30))
    def free_lazy(self, pick: int) -> None:
        va = self.busy.pop(pick % len(self.busy))
        nr_lazy, size = self.plain.free_vmap_area_noflush(va)
        assert self.fast.free_lazy(va) * PAGE == size
        assert self.fast.lazy_pages == nr_lazy
        # Still busy: a second free of either kind is refused and changes nothing.
        before = list(self.fast.allocations())
        for call in (self.fast.free, self.fast.free_lazy):
            with pytest.raises(InvalidFree):
                call(va)
        assert list(self.fast.allocations()) == before

    @rule()
    def purge(self) -> None:
        areas = self.fast.lazy_areas
        self.plain.purge_vmap_area_lazy()
        assert self.fast.purge() == areas
        assert self.fast.lazy_pages == self.plain.vmap_lazy_nr == 0

    @rule(page=st.integers(0, 700))
    def free_invalid(self, page: int) -> None:
        va = self.start + page * PAGE
        if va in self.busy:
            return
        before = (list(self.fast.allocations()), self.fast.lazy())
        with pytest.raises(InvalidFree):
            self.fast.free(va)
        assert (list(self.fast.allocations()), self.fast.lazy()) == before

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "fast"):
            return
        self.plain.check()
        self.fast.check()
        assert free_blocks(self.fast) == self.plain.free_blocks()
        lazy = merged([(va, va + nr * PAGE) for va, nr in self.fast.lazy()])
        assert lazy == self.plain.lazy_blocks()
        assert self.fast.lazy_pages == self.plain.vmap_lazy_nr


TestLinuxDifferential = LinuxDifferential.TestCase
# The oracle is cheap (about 15 ms an example): at least 300 examples of 50 steps, more under
# the long profiles.
TestLinuxDifferential.settings = settings(
    max_examples=max(300, settings.default.max_examples),
    stateful_step_count=max(50, settings.default.stateful_step_count),
)


# -- the cases the docs cite -------------------------------------------------------------------


def skipped_fit_sequence(search: str) -> tuple[PlainLinuxVmalloc, LinuxVmalloc]:
    """Both allocators with free blocks [16K, 20K) and [40K, 256K), the small one the left child
    of the big one in the kernel's free tree."""
    plain = PlainLinuxVmalloc(0, 64 * PAGE, PAGE, search)
    fast = LinuxVmalloc(0, 64 * PAGE, PAGE)
    for pages in (4, 1, 5):
        assert plain.alloc_vmap_area(pages * PAGE, PAGE) == fast.alloc(pages)
    plain.free_vmap_area(4 * PAGE)
    fast.free(4 * PAGE)
    assert plain.free_blocks() == free_blocks(fast) == [(0x4000, 0x5000), (0xA000, 0x40000)]
    return plain, fast


def test_kernel_skips_a_lower_fit_above_page_alignment() -> None:
    # One page aligned to 16K: the kernel (v5.18-v6.8) walks for 4K + 16K - 1 bytes, so the
    # 4K block at 0x4000, which fits exactly, is never looked at; it takes 0xc000 in the big
    # block.  The policy takes the lowest fit, 0x4000: lower, as documented.
    plain, fast = skipped_fit_sequence("6.8")
    kernel = plain.alloc_vmap_area(PAGE, 4 * PAGE)
    ours = fast.alloc(1, 4)
    assert (ours, kernel) == (0x4000, 0xC000)
    assert kernel == fit_bound([(0xA000, 0x40000)], PAGE, 4 * PAGE)


def test_exact_rule_of_9f531973dff3_finds_the_lower_fit() -> None:
    plain, fast = skipped_fit_sequence("exact")
    assert plain.alloc_vmap_area(PAGE, 4 * PAGE) == fast.alloc(1, 4) == 0x4000


def test_v5_2_rule_skips_even_at_page_alignment() -> None:
    # 5.2-5.15 walk for size + align - 1 for every align: with align = PAGE_SIZE (vm_map_ram,
    # small ioremaps) the one-page block at 0x4000 is skipped too; with align = 1 (vmalloc)
    # it is not.
    plain, fast = skipped_fit_sequence("5.2")
    assert plain.alloc_vmap_area(PAGE, PAGE) == 0xA000
    plain, fast = skipped_fit_sequence("5.2")
    assert plain.alloc_vmap_area(PAGE, 1) == fast.alloc(1) == 0x4000


def test_exact_window_is_searched_by_size() -> None:
    # 9333fe98d0a6: a window exactly as long as the request is searched for ``size``, or the
    # aligned request could never succeed (KASAN's shadow for onlined memory).
    plain = PlainLinuxVmalloc(0, 256 * PAGE, PAGE)
    fast = LinuxVmalloc(0, 256 * PAGE, PAGE)
    assert not plain.adjust_search_size(16 * PAGE, 16 * PAGE, 16 * PAGE, 32 * PAGE)
    got = plain.alloc_vmap_area(16 * PAGE, 16 * PAGE, 16 * PAGE, 32 * PAGE)
    assert got == fast.alloc(16, 16, vstart=16 * PAGE, vend=32 * PAGE) == 16 * PAGE


# -- the policy on its own ---------------------------------------------------------------------


def test_lazy_areas_stay_busy_until_purge() -> None:
    v = LinuxVmalloc(0x1000_0000, 0x1000_0000 + 8 * PAGE)
    a = v.alloc(5)  # a 16K stack with its guard page
    b = v.alloc(3)
    assert (a, b) == (0x1000_0000, 0x1000_5000)
    assert v.free_lazy(a) == 5
    assert (v.lazy_pages, v.lazy_areas, v.is_lazy(a)) == (5, 1, True)
    assert v.stats().used == 8
    with pytest.raises(OutOfSpace):
        v.alloc(2)  # the lazily freed area is not reusable yet
    assert v.purge() == 1
    assert (v.lazy_pages, v.stats().used) == (0, 3)
    assert v.alloc(2) == a  # lowest fit: the purged range
    assert v.policy == LINUX_VMALLOC and not v.guard
    v.check()


def test_window_is_clipped_and_checked() -> None:
    v = LinuxVmalloc(0x1000_0000, 0x1010_0000)
    # vstart rounded up, vend rounded down to the page, as the kernel's search would land.
    assert v.alloc(1, vstart=0x1000_0001, vend=0x1000_3FFF) == 0x1000_1000
    with pytest.raises(OutOfSpace):
        v.alloc(2, vstart=0x1000_2000, vend=0x1000_3FFF)
    with pytest.raises(RangeError):
        v.alloc(1, vstart=0x2000_0000)
    with pytest.raises(RangeError):
        v.alloc(1, vstart="0x1000")  # type: ignore[arg-type]
    assert v.alloc(1, vstart=0, vend=1 << 40) == 0x1000_0000  # covers the range: no window


def test_check_reports_a_corrupted_lazy_table() -> None:
    v = LinuxVmalloc(0, 16 * PAGE)
    va = v.alloc(2)
    v.free_lazy(va)
    v._lazy[va] = 3
    with pytest.raises(InvariantError, match="recorded 3"):
        v.check()
