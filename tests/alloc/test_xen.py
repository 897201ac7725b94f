"""xen_vmap: the fast implementation against the line-by-line port of Xen's vmap.c.

The differential machine drives both with the same alloc/free sequence and requires the same
bit index (or the same failure) for every alloc, the same ``vm_low`` after every step, and the
same ``vm_top`` as long as no alloc has failed (Xen grows ``vm_top`` to ``vm_end`` on a failed
alloc; vaalloc changes nothing on a failed call, which does not affect placement).
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.reference.xen_vmap_plain import PlainXenVmap
from vaalloc.alloc import RangeAllocator, Unsupported
from vaalloc.errors import AlignmentError, InvalidFree, OutOfSpace, RangeError

PAGE = 4096
VMAP_START, VMAP_END = 0x1000_0000, 0x4000_0000  # Xen ARM32's VMAP: 256M-1G


def test_arm32_vmap_geometry_and_first_alloc() -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    # 196608 pages need 24 KiB of bitmap = 6 pages; one page of bitmap covers 32768 bits.
    assert (x.vm_low, x.vm_top, x.vm_end) == (6, 32768, 196608)
    assert x.alloc(1) == 0x1000_7000  # bit 6 is the guard page, bit 7 the allocation
    assert x.vm_low == 8
    assert x.alloc(2) == 0x1000_9000
    assert x.policy == "xen-vmap" and x.guard
    x.check()


def test_bitmap_pages_are_used_and_not_freeable() -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    stats = x.stats()
    # Past vm_top nothing is mapped yet, but it is free: one hole from bit 6 to vm_end.
    assert (stats.total, stats.used, stats.free) == (196608, 6, 196602)
    assert (stats.largest_free, stats.holes, stats.live) == (196602, 1, 0)
    x.alloc(32768 - 8)  # fills the first bitmap page's reach exactly: [7, 32767)
    # Holes [6, 7) and [32767, vm_end): the bits past vm_top continue the last hole.
    assert (x.stats().holes, x.stats().largest_free, x.vm_top) == (2, 196608 - 32767, 32768)
    for page in range(7):
        with pytest.raises(InvalidFree):
            x.free(VMAP_START + page * PAGE)


def test_growth_by_one_bitmap_page_and_exhaustion() -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    p = PlainXenVmap(196608)
    # A run that cannot fit below vm_top makes Xen map one more bitmap page (32768 bits).
    va = x.alloc(40000)
    assert (va - VMAP_START) // PAGE == p.vm_alloc(40000, 1) == 7
    assert x.vm_top == p.vm_top == 65536
    before = x.snapshot()
    with pytest.raises(OutOfSpace):
        x.alloc(196608)
    assert p.vm_alloc(196608, 1) is None
    assert x.snapshot() == before  # vaalloc: unchanged; Xen grew vm_top to vm_end
    assert p.vm_top == p.vm_end


def test_free_moves_vm_low_like_vm_free() -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    vas = [x.alloc(n) for n in (1, 3, 2, 5)]
    assert x.vm_low == 21  # runs at 7, 9-11, 13-14, 16-20; each followed by its guard
    assert x.free(vas[1]) == 3
    # vm_free: vm_low = bit - 1, then down while the bit below is clear: to the guard at 8.
    assert x.vm_low == 8
    assert x.alloc(3) == vas[1]
    x.check()


def test_last_granule_and_le_rule_at_vm_top() -> None:
    # 32768 granules: vm_top == vm_end == 32768 and the bitmap is one page.
    x = RangeAllocator.xen_vmap(0, 32768 * PAGE)
    p = PlainXenVmap(32768)
    assert x.vm_top == 32768 and x.vm_low == 1
    # The first hole is [1, 32768); a run may end exactly at vm_top ("<=" there).
    nr = 32768 - 2
    assert (x.alloc(nr) // PAGE) == p.vm_alloc(nr, 1) == 2
    with pytest.raises(OutOfSpace):
        x.alloc(1)
    assert p.vm_alloc(1, 1) is None
    x.check()


def test_small_region_caps_vm_top() -> None:
    x = RangeAllocator.xen_vmap(0, 100 * PAGE)
    assert (x.vm_low, x.vm_top, x.vm_end) == (1, 100, 100)
    assert x.alloc(98) == 2 * PAGE
    with pytest.raises(OutOfSpace):
        x.alloc(1)


@pytest.mark.parametrize("align,expect", [(0, 1), (3, 1), (6, 2), (12, 4), (8, 8), (24, 8)])
def test_non_power_of_two_align_uses_lowest_set_bit(align: int, expect: int) -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    p = PlainXenVmap(196608)
    x.alloc(1)
    p.vm_alloc(1, 1)
    bit = (x.alloc(3, align) - VMAP_START) // PAGE
    assert bit == p.vm_alloc(3, align)
    assert bit % expect == 0


def test_alignment_is_index_relative() -> None:
    # Base 0x10001000 is not 8-page aligned: Xen aligns the bit index, not the address.
    x = RangeAllocator.xen_vmap(0x1000_1000, 0x1000_1000 + 65536 * PAGE)
    bit = (x.alloc(1, 8) - 0x1000_1000) // PAGE
    assert bit % 8 == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"phase": 1}, {"nocross": 8}, {"min_addr": VMAP_START}, {"max_addr": VMAP_END}],
)
def test_constraints_outside_xen_interface_are_refused(kwargs: dict[str, int]) -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    before = x.snapshot()
    with pytest.raises(Unsupported):
        x.alloc(1, **kwargs)
    with pytest.raises(Unsupported):
        x.reserve(VMAP_START + 0x10000, 1)
    assert x.snapshot() == before


def test_vm_properties_only_on_xen_instances() -> None:
    a = RangeAllocator(0, 1 << 20)
    for prop in ("vm_low", "vm_top", "vm_end"):
        with pytest.raises(Unsupported):
            getattr(a, prop)


@pytest.mark.parametrize("bad", [-1, "2", 1.0, None])
def test_xen_bad_align(bad: object) -> None:
    x = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    with pytest.raises((AlignmentError, RangeError)):
        x.alloc(1, bad)  # type: ignore[arg-type]


class XenDifferential(RuleBasedStateMachine):
    """Same operations on the fast xen_vmap and the plain port; same answers."""

    @initialize(
        pages=st.sampled_from([8, 100, 4096, 32768, 40000, 70000, 196608]) | st.integers(9, 70000),
        base_page=st.integers(0, 1 << 10),
    )
    def setup(self, pages: int, base_page: int) -> None:
        self.base = base_page * PAGE
        self.fast = RangeAllocator.xen_vmap(self.base, self.base + pages * PAGE)
        self.plain = PlainXenVmap(pages)
        self.live: list[int] = []
        self.failed = False

    @rule(
        nr=st.integers(1, 24) | st.integers(1, 40000),
        align=st.integers(0, 9) | st.sampled_from([16, 64, 512, 1024, 4096]),
    )
    def alloc(self, nr: int, align: int) -> None:
        want = self.plain.vm_alloc(nr, align)
        if want is None:
            before = self.fast.snapshot()
            with pytest.raises(OutOfSpace):
                self.fast.alloc(nr, align)
            assert self.fast.snapshot() == before
            self.failed = True
            return
        got = self.fast.alloc(nr, align)
        assert (got - self.base) // PAGE == want
        self.live.append(want)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1 << 30))
    def free(self, pick: int) -> None:
        bit = self.live.pop(pick % len(self.live))
        size = self.plain.vm_size(bit)
        assert self.plain.vm_free(bit)
        assert self.fast.free(self.base + bit * PAGE) == size

    @rule(bit=st.integers(0, 70000))
    def free_invalid(self, bit: int) -> None:
        if bit in self.live:
            return
        before = self.fast.snapshot()
        with pytest.raises(InvalidFree):
            self.fast.free(self.base + bit * PAGE)
        assert self.fast.snapshot() == before
        # Xen refuses it too (vm_index() == 0: WARN_ON and return).
        if bit < self.plain.vm_top:
            assert not self.plain.vm_free(bit)

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "fast"):
            return
        assert self.fast.vm_low == self.plain.vm_low
        if not self.failed:
            assert self.fast.vm_top == self.plain.vm_top
        assert self.fast.vm_top <= self.plain.vm_top
        self.fast.check()


TestXenDifferential = XenDifferential.TestCase


@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 70), st.integers(0, 8)), max_size=300))
def test_xen_long_sequences(ops: list[tuple[bool, int, int]]) -> None:
    """Longer flat sequences (more fragmentation than the machine reaches) on ARM32's VMAP."""
    fast = RangeAllocator.xen_vmap(VMAP_START, VMAP_END)
    plain = PlainXenVmap(196608)
    live: list[int] = []
    for is_free, nr, align in ops:
        if is_free and live:
            bit = live.pop(nr % len(live))
            plain.vm_free(bit)
            fast.free(VMAP_START + bit * PAGE)
        else:
            bit = plain.vm_alloc(nr, align)
            assert bit is not None
            assert fast.alloc(nr, align) == VMAP_START + bit * PAGE
            live.append(bit)
        assert fast.vm_low == plain.vm_low
    fast.check()


@given(ops=st.lists(st.tuples(st.booleans(), st.integers(1, 40), st.integers(0, 8)), max_size=120))
def test_bitmap_is_the_bitmap_xen_keeps(ops: list[tuple[bool, int, int]]) -> None:
    """bitmap(), built from the run tags, is bit for bit the plain port's bitmap (bitmap pages
    included) below vm_top, and clear above it."""
    fast = RangeAllocator.xen_vmap(VMAP_START, VMAP_START + 40000 * PAGE)
    plain = PlainXenVmap(40000)
    live: list[int] = []
    for is_free, nr, align in ops:
        if is_free and live:
            bit = live.pop(nr % len(live))
            plain.vm_free(bit)
            fast.free(VMAP_START + bit * PAGE)
        else:
            bit = plain.vm_alloc(nr, align)
            if bit is None:
                continue
            assert fast.alloc(nr, align) == VMAP_START + bit * PAGE
            live.append(bit)
    bitmap = fast.bitmap()
    top = fast.vm_top
    assert [bitmap.test(b) for b in range(top)] == [plain.test_bit(b) for b in range(top)]
    assert bitmap.next_set(top, 1 << 20) == 1 << 20
