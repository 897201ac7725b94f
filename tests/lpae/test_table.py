"""PageTable: largest blocks, overlap, atomicity, splitting with break-before-make, freeing."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from vaalloc.errors import (
    AlignmentError,
    InvariantError,
    MappingError,
    OutOfSpace,
    RangeError,
    VAAllocError,
)
from vaalloc.lpae import (
    AARCH64_S1_48,
    ARMV7_S1,
    ARMV7_S2_40,
    Fault,
    FaultError,
    Format,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S2Attrs,
    Translation,
    aarch64_s1,
    aarch64_s2,
)
from vaalloc.lpae.descriptor import LEAF_ATTR_MASK

MB2 = 0x20_0000
PAGE = 0x1000
PERMISSION_BITS = (3 << 6) | (1 << 53) | (1 << 54) | (0xF << 55) | (1 << 10)


def snapshot(mem: PhysicalMemory) -> tuple[list[tuple[int, bytes]], int]:
    return list(mem.frames()), mem.frames_in_use


def break_before_make_violations(
    before: list[tuple[int, bytes]], trace: list[tuple[int, int]]
) -> list[str]:
    """Writes that turn a valid descriptor of a table that existed before the call into a
    different valid one, other than a permission-only change of a leaf.  Tables created by
    the call are not live until linked, so their writes are exempt."""
    frames = dict(before)
    current: dict[int, int] = {}
    bad = []
    for slot, new in trace:
        data = frames.get(slot & ~0xFFF)
        if data is None:
            continue
        offset = slot & 0xFFF
        old = current.get(slot, int.from_bytes(data[offset : offset + 8], "little"))
        current[slot] = new
        if old & 1 and new & 1 and old != new:
            same_leaf = old & 3 == new & 3 and (old ^ new) & ~PERMISSION_BITS == 0
            if not same_leaf:
                bad.append(f"{slot:#x}: {old:#x} -> {new:#x}")
    return bad


# -- single behaviours ------------------------------------------------------------------------


def test_map_uses_the_largest_legal_blocks() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    # [1GB - 4KB, 2GB + 2MB + 4KB) with pa congruent mod 1GB: page, 2MB blocks, 1GB, 2MB, page
    va = (1 << 30) - PAGE
    pa = 0x1_0000_0000 + va
    size = (1 << 30) + MB2 + 2 * PAGE
    pt.map(va, pa, size, S1Attrs())
    levels = sorted({level for _, _, _, level, _ in pt.leaves()})
    assert levels == [1, 2, 3]
    sizes = [s for _, _, s, _, _ in pt.leaves()]
    assert sizes.count(1 << 30) == 1 and sizes.count(MB2) == 1 and sizes.count(PAGE) == 2
    assert list(pt.mappings()) == [(va, pa, size, S1Attrs())]
    # Misaligned pa relative to va: no block can be used anywhere.
    pt2 = PageTable(mem, ARMV7_S1)
    pt2.map(0, 0x1000_1000, 2 * MB2, S1Attrs())
    assert {level for *_, level, _ in pt2.leaves()} == {3}
    # max_level_block=3: pages only even where blocks fit.
    pt3 = PageTable(mem, ARMV7_S2_40)
    pt3.map(0x8000_0000, 0x1_0000_0000, 1 << 30, S2Attrs(), max_level_block=3)
    assert {level for *_, level, _ in pt3.leaves()} == {3}
    # pt: root + 2 L2 + 2 L3; pt2: root + L2 + 2 L3; pt3: 2-page root + L2 + 512 L3
    assert mem.frames_in_use == 5 + 4 + 515


def test_overlap_is_refused_and_changes_nothing() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(MB2, 0x4000_0000, MB2, S1Attrs())
    pt.map(0x1000, 0x5000_0000, PAGE, S1Attrs())
    before = snapshot(mem)
    for va, size in ((0, 3 * MB2), (MB2 + PAGE, PAGE), (0, 2 * PAGE)):
        with pytest.raises(MappingError, match=r"already mapped|covered"):
            pt.map(va, 0x6000_0000, size, S1Attrs())
        assert snapshot(mem) == before
    pt.map(0, 0x6000_0000, 3 * MB2, S1Attrs(xn=True), replace=True)
    assert list(pt.mappings()) == [(0, 0x6000_0000, 3 * MB2, S1Attrs(xn=True))]
    assert mem.frames_in_use == 2  # the page table that held 0x1000 was freed


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0x1001, 0x4000_0000, PAGE), AlignmentError),
        ((0x1000, 0x4000_0800, PAGE), AlignmentError),
        ((0x1000, 0x4000_0000, 0x800), AlignmentError),
        ((0x1000, 0x4000_0000, 0), RangeError),
        ((0xFFFF_F000, 0x4000_0000, 2 * PAGE), RangeError),
        ((0x1000, (1 << 40) - PAGE, 2 * PAGE), RangeError),
    ],
)
def test_bad_map_arguments(args: tuple[int, int, int], error: type) -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    before = snapshot(mem)
    with pytest.raises(error, match="PageTable"):
        pt.map(*args, S1Attrs())
    assert snapshot(mem) == before


def test_wrong_stage_attrs_and_impossible_block_levels() -> None:
    mem = PhysicalMemory(48)
    pt = PageTable(mem, AARCH64_S1_48)
    with pytest.raises(MappingError, match="S1Attrs"):
        pt.map(0, 0, PAGE, S2Attrs())  # type: ignore[arg-type]
    with pytest.raises(MappingError, match="level 0 cannot hold a block"):
        pt.map(0, 0, 1 << 39, S1Attrs(), max_level_block=0)
    assert mem.frames_in_use == 1


def test_unmap_splits_blocks_with_break_before_make_and_frees_empty_tables() -> None:
    mem = PhysicalMemory(40)
    flushes: list[tuple[int, int]] = []
    pt = PageTable(mem, ARMV7_S1, flush=lambda va, size: flushes.append((va, size)))
    pt.map(0, 0x4000_0000, 2 * MB2, S1Attrs())
    assert mem.frames_in_use == 2
    mem.trace = []
    pt.unmap(MB2 + 5 * PAGE, PAGE)
    block_slot = pt.entry_pa(MB2, 2)
    writes = [value for slot, value in mem.trace if slot == block_slot]
    assert writes[0] == 0 and writes[-1] & 3 == 3  # break, then make the table
    assert (MB2, MB2) in flushes
    assert [m[:3] for m in pt.mappings()] == [
        (0, 0x4000_0000, MB2 + 5 * PAGE),
        (MB2 + 6 * PAGE, 0x4000_0000 + MB2 + 6 * PAGE, MB2 - 6 * PAGE),
    ]
    assert isinstance(pt.walk(MB2 + 5 * PAGE), Fault)
    assert mem.frames_in_use == 3
    pt.unmap(MB2, 5 * PAGE)
    pt.unmap(MB2 + 6 * PAGE, MB2 - 6 * PAGE)
    assert mem.frames_in_use == 2  # the emptied level-3 table went back
    pt.unmap(0, MB2)
    assert mem.frames_in_use == 1 and list(pt.mappings()) == []
    with pytest.raises(MappingError, match="not mapped"):
        pt.unmap(0, PAGE)
    pt.unmap(0, PAGE, missing_ok=True)


def test_protect_changes_attributes_in_place_or_with_break_before_make() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(0, 0x4000_0000, MB2, S1Attrs())
    mem.trace = []
    pt.protect(0, MB2, S1Attrs(ap=2, xn=True))  # permissions only: written in place
    assert [value for _, value in mem.trace] == [0x4000_0000 | S1Attrs(ap=2, xn=True).bits | 1]
    t = pt.walk(0x10, "write")
    assert isinstance(t, Fault) and t.kind == "permission"
    mem.trace = []
    pt.protect(PAGE, PAGE, S1Attrs(attr_indx=1))  # memory type: split, break-before-make
    assert any(value == 0 for _, value in mem.trace)
    assert [m[3].attr_indx for m in pt.mappings()] == [0, 1, 0]
    with pytest.raises(MappingError):
        pt.protect(MB2, PAGE, S1Attrs())


def test_out_of_frames_midway_rolls_back() -> None:
    mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=4 * PAGE)
    pt = PageTable(mem, ARMV7_S1)  # 1 frame
    pt.map(0, 0x4000_0000, PAGE, S1Attrs())  # 2 more
    before = snapshot(mem)
    with pytest.raises(OutOfSpace):  # needs one table for 1GB+, another for 2GB+
        pt.map(1 << 30, 0x5000_0000, (1 << 30) + PAGE, S1Attrs(), max_level_block=3)
    assert snapshot(mem) == before
    with pytest.raises(OutOfSpace):  # splitting two blocks needs two frames, one is left
        pt.map(2 * MB2, 0x6000_0000, 2 * MB2, S1Attrs())
        pt.unmap(2 * MB2 + PAGE, MB2)
    assert mem.frames_in_use == 3


def test_tables_and_links_survive_loops() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(0, 0x4000_0000, PAGE, S1Attrs())
    mem.write64(pt.root + 3 * 8, pt.root | 3 | (1 << 10))  # the VLPT-style loop
    levels = dict((pa, level) for level, pa in pt.tables())
    assert len(levels) == 3 and levels[pt.root] == 1
    assert "link" in pt.dump()
    # map refuses to write through a link, unmap clears a whole link slot only
    with pytest.raises(MappingError, match="link"):
        pt.map(0xC000_0000, 0x5000_0000, PAGE, S1Attrs())
    with pytest.raises(MappingError, match="link"):
        pt.unmap(0xC000_0000, PAGE)
    pt.unmap(0xC000_0000, 1 << 30)
    assert mem.read64(pt.root + 24) == 0 and mem.frames_in_use == 3
    pt.check()
    mem.write64(pt.root + 3 * 8, mem.read64(pt.root) | (1 << 10))  # a second path to the L2
    with pytest.raises(InvariantError, match="linked 2 times"):
        pt.check()
    mem.write64(pt.root + 3 * 8, 0)
    adopted = PageTable(mem, ARMV7_S1, root=pt.root)
    assert sorted(adopted.owned_tables()) == sorted(pt.owned_tables())
    assert pt.free() == 3 and mem.frames_in_use == 0


# -- the state machine ------------------------------------------------------------------------

WINDOW_PAGES = 2 * 512 + 64  # two 2MB regions and a bit of a third
S1_CHOICES = [S1Attrs(), S1Attrs(ap=2), S1Attrs(xn=True, sw=5), S1Attrs(attr_indx=1)]
S2_CHOICES = [S2Attrs(), S2Attrs(s2ap=1), S2Attrs(xn=True, sw=9), S2Attrs(mem_attr=0x5)]


class PageTableMachine(RuleBasedStateMachine):
    """Random map/unmap/protect against a page-granular dict model, in a tiny RAM."""

    fmt: Format = ARMV7_S1
    choices: list[S1Attrs] | list[S2Attrs] = S1_CHOICES

    def __init__(self) -> None:
        super().__init__()
        self.mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=8 * PAGE)
        self.pt = PageTable(self.mem, self.fmt)
        self.model: dict[int, tuple[int, int]] = {}  # page va -> (pa, attribute bits)
        # Start 1GB in (level-1 index 1), or for a 4-level format inside the second level-0
        # slot, or for a stage-2 root where the window crosses from the first concatenated
        # root page into the second.
        if self.fmt.stage == 2:
            self.base = (1 << 39) - MB2
        elif self.fmt.start_level == 1:
            self.base = 1 << 30
        else:
            self.base = (1 << 39) + (1 << 30)

    def attempt(self, expect_ok: bool, call: object) -> bool:
        before = snapshot(self.mem)
        self.mem.trace = []
        try:
            call()  # type: ignore[operator]
        except OutOfSpace:
            assert snapshot(self.mem) == before
            return False
        except MappingError:
            assert not expect_ok
            assert snapshot(self.mem) == before
            return False
        assert expect_ok
        trace = self.mem.trace
        self.mem.trace = None
        assert break_before_make_violations(before[0], trace) == []
        return True

    @rule(
        first=st.integers(0, WINDOW_PAGES - 1),
        count=st.integers(1, 600),
        block_aligned_pa=st.booleans(),
        choice=st.integers(0, 3),
        replace=st.booleans(),
    )
    def map(
        self, first: int, count: int, block_aligned_pa: bool, choice: int, replace: bool
    ) -> None:
        attrs = self.choices[choice]
        count = min(count, WINDOW_PAGES - first)
        va = self.base + first * PAGE
        pa = 0x4000_0000 + (first * PAGE if block_aligned_pa else (first + 1) * PAGE)
        pages = range(va, va + count * PAGE, PAGE)
        ok = replace or not any(p in self.model for p in pages)
        if self.attempt(ok, lambda: self.pt.map(va, pa, count * PAGE, attrs, replace=replace)):
            for i, p in enumerate(pages):
                self.model[p] = (pa + i * PAGE, attrs.bits)

    @rule(first=st.integers(0, WINDOW_PAGES - 1), count=st.integers(1, 600), lax=st.booleans())
    def unmap(self, first: int, count: int, lax: bool) -> None:
        count = min(count, WINDOW_PAGES - first)
        va = self.base + first * PAGE
        pages = range(va, va + count * PAGE, PAGE)
        ok = lax or all(p in self.model for p in pages)
        if self.attempt(ok, lambda: self.pt.unmap(va, count * PAGE, missing_ok=lax)):
            for p in pages:
                self.model.pop(p, None)

    @rule(
        first=st.integers(0, WINDOW_PAGES - 1),
        count=st.integers(1, 600),
        choice=st.integers(0, 3),
    )
    def protect(self, first: int, count: int, choice: int) -> None:
        attrs = self.choices[choice]
        count = min(count, WINDOW_PAGES - first)
        va = self.base + first * PAGE
        pages = range(va, va + count * PAGE, PAGE)
        ok = all(p in self.model for p in pages)
        if self.attempt(ok, lambda: self.pt.protect(va, count * PAGE, attrs)):
            for p in pages:
                self.model[p] = (self.model[p][0], attrs.bits)

    @invariant()
    def mappings_match_the_model(self) -> None:
        runs: list[list[int]] = []
        for va in sorted(self.model):
            pa, bits = self.model[va]
            last = runs[-1] if runs else None
            if last and last[0] + last[2] == va and last[1] + last[2] == pa and last[3] == bits:
                last[2] += PAGE
            else:
                runs.append([va, pa, PAGE, bits])
        got = [[va, pa, size, a.bits & LEAF_ATTR_MASK] for va, pa, size, a in self.pt.mappings()]
        assert got == runs

        for va, pa, size, attrs in self.pt.mappings():  # the walker agrees at run edges
            for probe in (va, va + size - 8):
                t = self.pt.walk(probe)
                assert isinstance(t, Translation) and t.pa == pa + probe - va
                assert t.attrs == attrs

    @invariant()
    def only_needed_tables_are_held(self) -> None:
        self.pt.check()
        owned = list(self.pt.owned_tables())
        root_frames = self.fmt.root_bytes // PAGE
        assert self.mem.frames_in_use == len(owned) - 1 + root_frames
        for level, pa in owned:
            if pa != self.pt.root:
                data = self.mem.read_bytes(pa, PAGE)
                assert any(data[i] & 1 for i in range(0, PAGE, 8)), (level, pa)


class AArch64PageTableMachine(PageTableMachine):
    fmt = AARCH64_S1_48


class Stage2PageTableMachine(PageTableMachine):
    fmt = ARMV7_S2_40
    choices = S2_CHOICES


# Each step checks the whole window (mappings, walks, tables); fewer, longer runs keep the
# suite inside the CI budget without losing the interesting interleavings.
_FEWER = settings(settings.default, max_examples=min(settings.default.max_examples, 20))
TestARMv7Table = PageTableMachine.TestCase
TestARMv7Table.settings = _FEWER
TestAArch64Table = AArch64PageTableMachine.TestCase
TestAArch64Table.settings = _FEWER
TestStage2Table = Stage2PageTableMachine.TestCase
TestStage2Table.settings = _FEWER


def test_all_table_errors_are_vaalloc_errors() -> None:
    assert issubclass(MappingError, VAAllocError) and issubclass(OutOfSpace, VAAllocError)


@pytest.mark.parametrize(
    "fmt",
    [
        ARMV7_S2_40,
        aarch64_s2(42),
        aarch64_s2(48),
        aarch64_s1(39),
        aarch64_s1(48, granule=16384),
        aarch64_s1(48, granule=65536),
        aarch64_s2(40, granule=65536),
    ],
    ids=lambda fmt: fmt.name,
)
def test_every_geometry_maps_walks_and_unmaps_back_to_its_root(fmt: Format) -> None:
    mem = PhysicalMemory(48)
    pt = PageTable(mem, fmt)
    root_frames = mem.frames_in_use
    assert root_frames == fmt.root_bytes // PAGE and pt.root % fmt.root_bytes == 0
    attrs = S1Attrs() if fmt.stage == 1 else S2Attrs()
    block = fmt.block_size(fmt.first_block_level + (1 if fmt.first_block_level < 2 else 0))
    top = (1 << fmt.ia_bits) - 2 * block  # near the top: the last root entries
    pieces = [(top, 0x10_0000_0000, block), (top + block, 0x20_0000_0000 + fmt.granule, block)]
    for va, pa, size in pieces:
        pt.map(va, pa, size, attrs)
    got = sorted((va, pa, size) for va, pa, size, _ in pt.mappings())
    assert got == pieces
    sizes = {level: size for _, _, size, level, _ in pt.leaves()}
    assert sizes == {fmt.shifts.index(block.bit_length() - 1): block, 3: fmt.granule}
    probe = top + block + 3 * fmt.granule + 8
    t = pt.walk(probe, "write")
    assert isinstance(t, Translation) and t.pa == 0x20_0000_0000 + 4 * fmt.granule + 8
    pt.unmap(top, 2 * block)
    assert mem.frames_in_use == root_frames and list(pt.mappings()) == []


def test_translate_pa_is_walk_without_the_objects() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(MB2, 0x4000_0000, MB2, S1Attrs(ap=2))
    assert pt.translate_pa(MB2 + 0x1238) == 0x4000_1238
    assert pt.translate_pa(MB2, "exec") == 0x4000_0000
    for va, access in ((MB2, "write"), (0, "read"), (0xFFFF_F000, "exec")):
        expected = pt.walk(va, access)
        assert isinstance(expected, Fault)
        with pytest.raises(FaultError) as info:
            pt.translate_pa(va, access)
        assert info.value.fault == expected
    for bad in (
        (1 << 32, "read", False),
        (-8, "read", False),
        (0, "fetch", False),
        (0, "read", True),
    ):
        with pytest.raises(RangeError):
            pt.translate_pa(*bad)
