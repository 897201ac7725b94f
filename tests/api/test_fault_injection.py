"""Fault injection: every frame allocation of an operation fails in turn, and each failure
leaves the whole model as it was (memory and its contents, allocations and table owners,
tables, TLBs, ledger, allocators, dirty sets, what each CPU runs).

``inject_every`` fails allocation 1, then 2, ... of one call until the call succeeds; each
failure must change nothing, so every k starts from the same state. The number of failure
points tried per operation is asserted, so a change in how many frames an operation takes is
noticed (and the operation is then re-proven for each of them).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.model_state import FailAt, count_allocations, hooked, inject_every, lpae_state
from tests.api.model_state import xen_state as state
from vaalloc.errors import OutOfSpace
from vaalloc.lpae import ARMV7_S1, ARMV7_S2_40, MMU, PageTable, PhysicalMemory, S1Attrs, S2Attrs
from vaalloc.xen import LOOKUPS, Xen
from vaalloc.xen import layout as L

MB = 1 << 20
GB = 1 << 30
PAGE = 4096


def prove(xen: Xen, call: Callable[[], object], points: int) -> None:
    """Fail each of ``call``'s allocations in turn (state unchanged, ``xen.check()`` holding
    after each), then let it succeed; it must have had exactly ``points`` allocations."""
    tried = inject_every(xen.mem, call, lambda: state(xen), xen.check)
    assert tried == points
    xen.check()


def gb_block_domain(xen: Xen, ram: int, superpages: bool = True):  # type: ignore[no-untyped-def]
    """A domain whose first gigabyte is one 1GB block (hand-written, as tests of the VLPT's
    1GB rule do), the rest as populated."""
    d = xen.create_domain(ram=ram, superpages=superpages)
    xen.p2m_depopulate(d, d.ram_base, GB)
    run = xen.mem.alloc_frames(GB >> 12, GB >> 12)
    d.stage2.write_entry(1, d.ram_base, d.stage2.l1_pa(d.ram_base), run | L.P2M_RAM_RW_ATTRS)
    return d


# -- create_domain ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ram", "superpages", "points"),
    [
        # root; per 2MB piece: its run, the level-2 table of a new GB, the level-3 table
        (4 * MB + 3 * PAGE, False, 1 + 1 + 3 * 2),
        # root, level 2, three 2MB blocks, the partial last piece (run + level-3 table)
        (6 * MB + 3 * PAGE, True, 1 + 1 + 3 + 2),
    ],
)
def test_create_domain(ram: int, superpages: bool, points: int) -> None:
    xen = Xen(cpus=2)
    xen.create_domain(ram=2 * MB)  # not the first domain: ids and VMIDs in use
    prove(xen, lambda: xen.create_domain(ram=ram, superpages=superpages), points)
    d = xen.domains[max(xen.domains)]
    assert d.ram_size == ram and d.domid == 2 and d.vmid == 2
    d.p2m.check()


def test_create_domain_of_several_gigabytes_refused_late() -> None:
    """A domain whose frames add up but whose 2MB runs do not fit (RAM fragmented by hand) is
    refused after some of its runs were taken: they go back, and nothing else changed."""
    xen = Xen(cpus=1, pa_bits=32)  # 2GB of RAM
    holes = [xen.mem.alloc_frames(1, 512) for _ in range(4)]  # one frame in each of 4 runs
    before = state(xen)
    free = xen.mem.frames_free
    with pytest.raises(OutOfSpace, match="domain d1"):
        xen.create_domain(ram=(free - 600) * PAGE, superpages=True)
    assert state(xen) == before
    for pa in holes:
        xen.mem.free_frames(pa)


# -- p2m_populate ------------------------------------------------------------------------------


@pytest.mark.parametrize("lookup", ["partitioned", "switched", "walk"])
def test_p2m_populate_while_tracking(lookup: str) -> None:
    """Across a gigabyte boundary, in a superpage domain under log-dirty: RAM runs, a new
    level-2 table (reported to the strategy) and the split frames of the new blocks."""
    xen = Xen(cpus=2, lookup=lookup)
    d = xen.create_domain(ram=GB + 8 * MB, superpages=True)
    lo = d.ram_base + GB - 4 * MB
    xen.p2m_depopulate(d, lo, 12 * MB)  # empties the second GB: its level-2 table goes
    xen.context_switch(0, d)
    xen.logdirty.enable(d)
    xen.guest_write(d, d.ram_base, cpu=0)  # something dirty, a TLB warmed
    # 6 pieces: 6 runs, 1 level-2 table, 6 reserved split frames
    prove(xen, lambda: xen.p2m_populate(d, lo, 12 * MB), 6 + 1 + 6)
    assert d.stage2.split_reserve == d.stage2.tracked_blocks()


def test_p2m_populate_pages() -> None:
    xen = Xen(cpus=1)
    d = xen.create_domain(ram=16 * MB)
    xen.p2m_depopulate(d, d.ram_base + 4 * MB, 6 * MB)
    prove(xen, lambda: xen.p2m_populate(d, d.ram_base + 4 * MB, 6 * MB), 3 * 2)


# -- logdirty.enable ----------------------------------------------------------------------------


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_logdirty_enable(lookup: str) -> None:
    """Superpages: one split frame per 2MB block is reserved, all or none, before the slots."""
    xen = Xen(cpus=2, lookup=lookup)
    other = xen.create_domain(ram=8 * MB)
    xen.logdirty.enable(other)
    d = xen.create_domain(ram=24 * MB, superpages=True)
    xen.context_switch(1, d)
    prove(xen, lambda: xen.logdirty.enable(d), 12)
    assert d.stage2.split_reserve == 12


def test_logdirty_enable_splits_a_gigabyte_block() -> None:
    """The level-2 table of the 1GB split and 512 + 2 split frames (the split's 512 blocks
    and the 4MB past the gigabyte), every one of them failed in turn."""
    xen = Xen(cpus=1, pa_bits=36)
    d = gb_block_domain(xen, GB + 4 * MB)
    prove(xen, lambda: xen.logdirty.enable(d), 1 + 512 + 2)


# -- the superpage split of a write fault --------------------------------------------------------


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_write_fault_split_allocates_nothing(lookup: str) -> None:
    """A guest write that splits a log-dirty superpage takes its frame from the reserve made at
    enable: no allocation can fail inside the fault handler. Failing every allocation while it
    runs changes nothing: the write succeeds, splits, and marks the page dirty."""
    xen = Xen(cpus=2, lookup=lookup)
    d = xen.create_domain(ram=8 * MB, superpages=True)
    xen.logdirty.enable(d)
    reserve = d.stage2.split_reserve
    frames = xen.mem.frames_in_use
    ipa = d.ram_base + 2 * MB + 5 * PAGE
    never = FailAt(1)
    with hooked(xen.mem, never):
        xen.guest_write(d, ipa, cpu=1)
    assert never.calls == 0 and not never.fired
    assert xen.ledger.counts["superpage_splits"] == 1
    assert d.stage2.split_reserve == reserve - 1 and xen.mem.frames_in_use == frames
    assert d.p2m.walk(ipa).level == 3 and xen.logdirty.peek(d, clean=False) == {ipa >> 12}
    xen.check()


def test_split_reserve_follows_the_blocks() -> None:
    """The reserve is one frame per log-dirty 2MB block through splits, populate, depopulate,
    and goes back whole at disable and destroy."""
    xen = Xen(cpus=1)
    base = xen.mem.frames_in_use
    d = xen.create_domain(ram=16 * MB, superpages=True)
    frames = xen.mem.frames_in_use
    xen.logdirty.enable(d)
    assert d.stage2.split_reserve == d.stage2.tracked_blocks() == 8
    for k in range(3):
        xen.guest_write(d, d.ram_base + k * 2 * MB)
    assert d.stage2.split_reserve == 5
    xen.p2m_depopulate(d, d.ram_base + 8 * MB, 4 * MB)  # two blocks
    assert d.stage2.split_reserve == 3
    xen.p2m_populate(d, d.ram_base + 8 * MB, 4 * MB)
    assert d.stage2.split_reserve == 5
    xen.check()
    xen.logdirty.disable(d)
    assert d.stage2.split_reserve == 0
    assert xen.mem.frames_in_use == frames + 3  # the three level-3 tables of the splits
    xen.destroy_domain(d)
    assert xen.mem.frames_in_use == base


# -- vmap / vmalloc ------------------------------------------------------------------------------


def test_vmap_new_level3_tables() -> None:
    xen = Xen(cpus=2)
    xen.vmalloc(3 * PAGE)
    mfns = [0x80000 + i for i in range(1030)]  # pages 11..1040 of the area: 2 new tables
    prove(xen, lambda: xen.vmap(mfns), 2)
    assert xen.vmap_area.allocator.allocations()


def test_vmap_that_grows_the_bitmap_gives_vm_top_back() -> None:
    """Past 128MB of vmap space Xen's vm_alloc grows its bitmap (vm_top), which vm_free never
    shrinks: a vmap failing after that must put vm_top back too."""
    xen = Xen(cpus=1)
    xen.vmap([0x80000] * 30000)
    top = xen.vmap_area.allocator.vm_top
    mfns = [0x80000] * 8000
    prove(xen, lambda: xen.vmap(mfns), 16)
    assert xen.vmap_area.allocator.vm_top > top


def test_vmalloc() -> None:
    xen = Xen(cpus=2)
    xen.vmalloc(500 * PAGE)  # pages 7..506 of the area, a guard, then 508..512: a new table
    prove(xen, lambda: xen.vmalloc(5 * PAGE), 5 + 1)


# -- PageTable.map and protect, with the TLB of an MMU as the flush --------------------------


def hyp_world() -> tuple[PhysicalMemory, PageTable, MMU]:
    """Xen-like hyp tables with a flush hook doing TLBIMVAH per page, a warmed TLB."""
    mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=64 * MB)
    mmu = MMU(mem)

    def flush(va: int, size: int) -> None:
        for page in range(va, va + size, PAGE):
            mmu.tlbi("TLBIMVAH", page)

    pt = PageTable(mem, ARMV7_S1, flush=flush)
    pt.map(0x4000_0000, 0x9000_0000, 4 * MB, S1Attrs())  # two 2MB blocks
    pt.map(0x4040_0000, 0x9040_0000, 8 * PAGE, S1Attrs(), max_level_block=3)
    mmu.set_hyp(pt.root)
    for va in range(0x4000_0000, 0x4040_8000, 64 * PAGE):
        mmu.hyp_read64(va)
    return mem, pt, mmu


def test_map_replace_with_flushes() -> None:
    """Replacing mapped blocks and pages (break-before-make, flushes into the TLB) with a
    mapping that needs new tables: every failure leaves memory and the TLB untouched."""
    mem, pt, mmu = hyp_world()

    def call() -> None:
        pt.map(
            0x4000_0000 + 4 * PAGE,
            0xA000_0000 + 4 * PAGE,
            4 * MB + 4 * PAGE,
            S1Attrs(xn=True),
            replace=True,
            max_level_block=3,
        )

    tried = inject_every(mem, call, lambda: lpae_state(mem, [pt], [mmu]), pt.check)
    assert tried == 2  # both 2MB blocks become level-3 tables; the pages' table exists
    assert pt.walk(0x4040_0000).descriptor & (1 << 54)
    pt.check()


def test_map_needing_tables_at_every_level() -> None:
    mem = PhysicalMemory(48, ram_base=0x8000_0000, ram_size=64 * MB)
    pt = PageTable(mem, ARMV7_S2_40)
    call = lambda: pt.map(GB - PAGE, 0x1_0000_0000 - PAGE, 2 * PAGE, S2Attrs())  # noqa: E731
    # two gigabytes, each a level-2 and a level-3 table
    assert inject_every(mem, call, lambda: lpae_state(mem, [pt]), pt.check) == 4


def test_protect_with_splits_and_break_before_make() -> None:
    """A memory-type change (break-before-make, flushed leaf by leaf) over a range whose two
    edges split a block each: the splits' frames are taken before the first flush."""
    mem, pt, mmu = hyp_world()

    def call() -> None:
        pt.protect(0x4000_0000 + 3 * PAGE, 4 * MB - 6 * PAGE, S1Attrs(attr_indx=2))

    tried = inject_every(mem, call, lambda: lpae_state(mem, [pt], [mmu]), pt.check)
    assert tried == 2
    assert {m[3].attr_indx for m in pt.mappings() if m[0] == 0x4000_0000 + 3 * PAGE} == {2}


def test_unmap_split() -> None:
    mem, pt, mmu = hyp_world()
    call = lambda: pt.unmap(0x4000_0000 + MB, 2 * MB)  # noqa: E731
    assert inject_every(mem, call, lambda: lpae_state(mem, [pt], [mmu]), pt.check) == 2


def test_allocation_counts_match_the_plan() -> None:
    """The frames a change takes are exactly the tables it creates (the plan is exact)."""
    mem, pt, _ = hyp_world()
    before = len(list(pt.owned_tables()))
    n = count_allocations(mem, lambda: pt.map(0x5000_0000, 0xB000_0000, 5 * MB + PAGE, S1Attrs()))
    assert n == len(list(pt.owned_tables())) - before == 1


def test_injected_failure_is_reported_as_out_of_space() -> None:
    mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=MB)
    with hooked(mem, FailAt(1)), pytest.raises(OutOfSpace, match="injected"):
        PageTable(mem, ARMV7_S1)
    assert mem.frames_in_use == 0
