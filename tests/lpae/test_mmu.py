"""MMU and TLB: hits and misses, tags, replacement, maintenance, stale entries, two stages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaalloc.errors import AlignmentError, RangeError
from vaalloc.lpae import (
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    MMU,
    TLB,
    TLBI_OPS,
    Fault,
    FaultError,
    Format,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S2Attrs,
    Translation,
    walk_two_stage,
)
from vaalloc.lpae.walk import walk

from .test_walk import random_tables

PAGE = 0x1000
RAM = 0x8000_0000


def hyp_setup(
    capacity: int = 64, replacement: str = "fifo", stale: bool = False
) -> tuple[PhysicalMemory, PageTable, int, MMU]:
    mem = PhysicalMemory(40)
    xen = PageTable(mem, ARMV7_S1)
    data = mem.alloc_frames(16)
    xen.map(0x1000_0000, data, 16 * PAGE, S1Attrs())
    mmu = MMU(mem, TLB(capacity, replacement=replacement), stale_check=stale)
    mmu.set_hyp(xen.root)
    return mem, xen, data, mmu


def test_hits_misses_and_walk_reads_are_counted() -> None:
    mem, _, data, mmu = hyp_setup()
    mmu.hyp_write64(0x1000_0008, 0x1234)
    assert mem.read64(data + 8) == 0x1234
    assert mmu.hyp_read64(0x1000_0008) == 0x1234
    assert mmu.hyp_read64(0x1000_1000) == 0
    c = mmu.counters
    assert (c["misses"], c["hits"], c["walks"], c["walk_reads"]) == (2, 1, 2, 6)
    t = mmu.hyp_translate(0x1000_0010)
    assert isinstance(t, Translation) and t.reads == () and t.pa == data + 0x10
    mmu.reset_counters()
    assert mmu.counters["hits"] == 0


def test_permission_fault_from_a_cached_entry_and_faults_are_not_cached() -> None:
    _mem, xen, _data, mmu = hyp_setup()
    xen.protect(0x1000_0000, PAGE, S1Attrs(ap=2))
    mmu.hyp_read64(0x1000_0000)
    with pytest.raises(FaultError) as info:
        mmu.hyp_write64(0x1000_0000, 1)
    assert (info.value.fault.kind, info.value.fault.level, mmu.counters["hits"]) == (
        "permission",
        3,
        1,
    )
    for _ in range(2):
        with pytest.raises(FaultError, match="translation fault, level 3"):
            mmu.hyp_read64(0x1001_0000)
    assert mmu.counters["misses"] == 3  # an unmapped address walks every time


def test_fifo_and_lru_replacement_evict_predictably() -> None:
    for replacement, survivor in (("fifo", 0x1000_1000), ("lru", 0x1000_0000)):
        _, _, _, mmu = hyp_setup(capacity=2, replacement=replacement)
        for va in (0x1000_0000, 0x1000_1000, 0x1000_0000, 0x1000_2000):
            mmu.hyp_read64(va)
        assert mmu.counters["evictions"] == 1
        before = mmu.counters["hits"]
        mmu.hyp_read64(survivor)
        assert mmu.counters["hits"] == before + 1, replacement


def test_stale_detector_catches_a_missing_tlbimvah() -> None:
    mem, xen, data, mmu = hyp_setup(stale=True)
    va = 0x1000_3000
    mmu.hyp_write64(va, 0xAAAA)
    other = mem.alloc_frames()
    mem.write64(other, 0xBBBB)
    xen.map(va, other, PAGE, S1Attrs(), replace=True)  # no TLB maintenance
    assert mmu.hyp_read64(va) == 0xAAAA  # the TLB still says the old page
    [hit] = mmu.stale_hits
    assert (hit.va, hit.cached_pa, hit.regime) == (va, data + 0x3000, "hyp")
    assert isinstance(hit.current, Translation) and hit.current.pa == other
    mmu.tlbi("TLBIMVAH", va)
    assert mmu.hyp_read64(va) == 0xBBBB and len(mmu.stale_hits) == 1
    assert mmu.counters["tlbi:TLBIMVAH"] == 1


def test_stale_detector_is_silent_when_the_flush_is_there() -> None:
    mem, _, _data, mmu = hyp_setup(stale=True)
    flushed: list[int] = []

    def flush(va: int, size: int) -> None:
        for page in range(va, va + size, PAGE):
            mmu.tlbi("TLBIMVAH", page)
            flushed.append(page)

    xen = PageTable(mem, ARMV7_S1, root=mmu._hyp.root, flush=flush)  # type: ignore[union-attr]
    va = 0x1000_3000
    mmu.hyp_write64(va, 0xAAAA)
    other = mem.alloc_frames()
    mem.write64(other, 0xBBBB)
    xen.map(va, other, PAGE, S1Attrs(), replace=True)
    assert flushed == [va]
    assert mmu.hyp_read64(va) == 0xBBBB
    xen.unmap(va, PAGE)
    with pytest.raises(FaultError):
        mmu.hyp_read64(va)
    assert mmu.stale_hits == []


def guest_setup(
    capacity: int = 64, stale: bool = False
) -> tuple[PhysicalMemory, dict[int, PageTable], MMU]:
    mem = PhysicalMemory(40)
    p2m = {vmid: PageTable(mem, ARMV7_S2_40) for vmid in (1, 2)}
    for vmid, pt in p2m.items():
        pt.map(RAM, 0x1_0000_0000 * vmid, 1 << 21, S2Attrs())
    mmu = MMU(mem, TLB(capacity), stale_check=stale)
    return mem, p2m, mmu


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("replacement", ["fifo", "lru"])
def test_guest_entries_follow_the_replacement_rule(replacement: str, stale: bool) -> None:
    # The guest paths (the lean one, and the full one the stale detector uses) must evict as
    # the TLB's rule says: FIFO ignores hits, LRU refreshes on a hit.
    mem = PhysicalMemory(40)
    p2m = PageTable(mem, ARMV7_S2_40)
    p2m.map(RAM, 0x1_0000_0000, 3 * PAGE, S2Attrs())
    mmu = MMU(mem, TLB(2, replacement=replacement), stale_check=stale)
    mmu.set_stage2(p2m.root, 1)
    for ipa in (RAM, RAM + PAGE, RAM, RAM + 2 * PAGE):
        mmu.guest_pa(ipa)
    assert mmu.counters["evictions"] == 1
    survivor = RAM + PAGE if replacement == "fifo" else RAM
    before = mmu.counters["hits"]
    mmu.guest_pa(survivor)
    assert mmu.counters["hits"] == before + 1


def test_vmid_tags_keep_guests_apart() -> None:
    _, p2m, mmu = guest_setup()
    for vmid in (1, 2, 1, 2):
        mmu.set_stage2(p2m[vmid].root, vmid)
        assert mmu.guest_pa(RAM + 0x10) == 0x1_0000_0000 * vmid + 0x10
    assert (mmu.counters["misses"], mmu.counters["hits"]) == (2, 2)  # one 2MB block each
    mmu.set_stage2(p2m[1].root, 1)
    assert mmu.tlbi("TLBIALL") == 1  # the current VMID only
    mmu.set_stage2(p2m[2].root, 2)
    mmu.guest_pa(RAM)
    assert mmu.counters["hits"] == 3
    assert mmu.tlbi("TLBIALLNSNH") == 1


def test_stage2_permission_fault_reports_the_ipa() -> None:
    _, p2m, mmu = guest_setup()
    p2m[1].protect(RAM, 1 << 21, S2Attrs(s2ap=1))
    mmu.set_stage2(p2m[1].root, 1)
    result = mmu.guest_translate(RAM + 0x2345, "write")
    assert isinstance(result, Fault)
    assert (result.kind, result.stage, result.level, result.ipa) == (
        "permission",
        2,
        2,
        RAM + 0x2345,
    )


def test_two_stage_walk_with_s1ptw_fault() -> None:
    mem, p2m, _ = guest_setup()
    s1_root_ipa = RAM + 0x1F_0000
    offset = 0x1_0000_0000 - RAM
    l2_ipa, l3_ipa = s1_root_ipa + PAGE, s1_root_ipa + 2 * PAGE
    mem.write64(s1_root_ipa + offset + 8, l2_ipa | 3)  # VA 0x4000_0000
    mem.write64(l2_ipa + offset, l3_ipa | 3)
    mem.write64(l3_ipa + offset + 8, (RAM + 0x5000) | 3 | (1 << 10) | (1 << 6))
    t = walk_two_stage(mem, ARMV7_S1_PL1, s1_root_ipa, ARMV7_S2_40, p2m[1].root, 0x4000_1010)
    assert isinstance(t, Translation)
    assert (t.ipa, t.pa) == (RAM + 0x5010, offset + RAM + 0x5010)
    assert [pa for pa, _ in t.reads] == [
        s1_root_ipa + offset + 8,
        l2_ipa + offset,
        l3_ipa + offset + 8,
    ]
    # The level-2 table's IPA is no longer mapped at stage 2: a stage-2 fault on a
    # stage-1 table walk (S1PTW), at the stage-2 level that failed.
    p2m[1].unmap(RAM, 1 << 21)
    p2m[1].map(RAM, 0x1_0000_0000, 0x1F_0000, S2Attrs())
    p2m[1].map(s1_root_ipa, s1_root_ipa + offset, PAGE, S2Attrs())
    f = walk_two_stage(mem, ARMV7_S1_PL1, s1_root_ipa, ARMV7_S2_40, p2m[1].root, 0x4000_1010)
    assert isinstance(f, Fault)
    assert (f.kind, f.stage, f.s1ptw, f.level, f.ipa) == ("translation", 2, True, 3, l2_ipa)
    # A stage-1 fault says stage 1.
    f1 = walk_two_stage(mem, ARMV7_S1_PL1, s1_root_ipa, ARMV7_S2_40, p2m[1].root, 0x8000_0000)
    assert isinstance(f1, Fault) and (f1.kind, f1.stage, f1.level) == ("translation", 1, 1)


def test_asid_tags_and_stage1_maintenance() -> None:
    mem, p2m, mmu = guest_setup(stale=True)
    offset = 0x1_0000_0000 - RAM
    root = RAM + 0x1F_0000
    mem.write64(root + offset + 8, (root + PAGE) | 3)
    mem.write64(root + PAGE + offset, (root + 2 * PAGE) | 3)
    for i, ng in enumerate((True, False)):
        page = (RAM + 0x5000 + i * PAGE) | 3 | (1 << 10) | (1 << 6) | (int(ng) << 11)
        mem.write64(root + 2 * PAGE + offset + 8 * i, page)
    mmu.set_stage2(p2m[1].root, 1)
    mmu.set_stage1(root, asid=7)
    local, shared = 0x4000_0000, 0x4000_1000
    assert mmu.guest_pa(local) == offset + RAM + 0x5000
    assert mmu.guest_pa(shared, user=True) == offset + RAM + 0x6000
    mmu.set_stage1(root, asid=8)
    mmu.guest_pa(local)
    mmu.guest_pa(shared)
    assert (mmu.counters["misses"], mmu.counters["hits"]) == (3, 1)  # nG entry is per ASID
    hit = mmu.guest_translate(shared + 0x18, "write", user=True)
    assert isinstance(hit, Translation) and hit.reads == ()
    assert (hit.stage, hit.ipa, hit.pa) == (1, RAM + 0x6018, offset + RAM + 0x6018)
    assert hit.writable and hit.executable  # AP=01: read/write at both levels, XN clear
    assert mmu.tlbi("TLBIASID", asid=7) == 1  # only 7's non-global entry
    assert mmu.tlbi("TLBIMVAA", shared) == 1
    # Changing stage 2 and invalidating by IPA leaves the combined entry: stale, caught.
    p2m[1].map(RAM + 0x5000, 0x3_0000_0000, PAGE, S2Attrs(), replace=True)
    mmu.tlbi("TLBIIPAS2", RAM + 0x5000)
    mmu.guest_pa(local)
    assert len(mmu.stale_hits) == 1 and mmu.stale_hits[0].asid == 8
    mmu.tlbi("TLBIALL")
    assert mmu.guest_pa(local) == 0x3_0000_0000 and len(mmu.stale_hits) == 1


def test_inner_shareable_maintenance_reaches_joined_mmus() -> None:
    mem, xen, _, cpu0 = hyp_setup()
    cpu1 = MMU(mem)
    cpu1.set_hyp(xen.root)
    cpu0.join(cpu1)
    for cpu in (cpu0, cpu1):
        cpu.hyp_read64(0x1000_0000)
    assert cpu0.tlbi("TLBIALLH") == 1 and len(cpu1.tlb) == 1
    assert cpu0.tlbi("TLBIALLHIS") == 1 and len(cpu1.tlb) == 0
    cpu1.hyp_read64(0x1000_0000)
    assert cpu0.tlbi("TLBI VAE2IS", 0x1000_0008) == 1


def test_every_operation_has_an_inner_shareable_form() -> None:
    for name in ("TLBIALLH", "TLBIMVAH", "TLBIALL", "TLBIALLNSNH", "TLBI VMALLS12E1", "TLBI ALLE2"):
        assert name in TLBI_OPS and name + "IS" in TLBI_OPS


def test_bad_requests_raise_typed_errors() -> None:
    mem, _, _, mmu = hyp_setup()
    with pytest.raises(RangeError, match="unknown operation"):
        mmu.tlbi("TLBIEVERYTHING")
    with pytest.raises(RangeError, match="address operand"):
        mmu.tlbi("TLBIMVAH")
    with pytest.raises(RangeError, match="address operand"):
        mmu.tlbi("TLBIALLH", 0x1000)
    with pytest.raises(RangeError, match="VMID"):
        mmu.tlbi("TLBIALL")
    with pytest.raises(RangeError, match="hyp virtual address"):
        mmu.hyp_pa(1 << 32)
    with pytest.raises(RangeError):
        mmu.hyp_pa(0x1000_0000, "fetch")
    with pytest.raises(AlignmentError):
        mmu.hyp_read64(0x1000_0004)
    with pytest.raises(RangeError, match="no stage 2"):
        MMU(mem).guest_pa(0)
    guest = MMU(mem)
    guest.set_stage2(mmu.mem.alloc_frames(2, 2), 1)
    with pytest.raises(RangeError, match="stage 1"):
        guest.guest_pa(0x8000_0000, user=True)
    with pytest.raises(RangeError, match="set_hyp"):
        MMU(mem).hyp_pa(0)
    with pytest.raises(RangeError):
        mmu.set_hyp(0x8000_0000, ARMV7_S2_40)
    with pytest.raises(RangeError):
        TLB(-1)


@given(
    random_tables(), st.lists(st.sampled_from(["read", "write", "exec"]), min_size=1, max_size=3)
)
def test_mmu_answers_like_a_fresh_walk_on_every_access(
    case: tuple[Format, PhysicalMemory, int, list[int]], accesses: list[str]
) -> None:
    """Without table changes a TLB must be invisible: the same answer, hit or miss."""
    fmt, mem, root, vas = case
    if fmt.regime == "el1&0":
        return  # guest stage 1 needs a stage 2 underneath: covered by the tests above
    mmu = MMU(mem, TLB(4))
    if fmt.stage == 1:
        mmu.set_hyp(root, fmt)
        translate = mmu.hyp_pa
    else:
        mmu.set_stage2(root, 5, fmt)
        translate = mmu.guest_pa
    for access in accesses:
        for va in vas + vas[::-1]:
            expected = walk(mem, fmt, root, va, access)
            try:
                got: int | Fault = translate(va, access)
            except FaultError as error:
                got = error.fault
            if isinstance(expected, Fault):
                assert isinstance(got, Fault)
                assert (got.kind, got.level, got.stage) == (
                    expected.kind,
                    expected.level,
                    fmt.stage,
                )
            else:
                assert got == expected.pa
    assert mmu.counters["hits"] + mmu.counters["misses"] >= len(vas)


def test_stale_detector_judges_the_access_made() -> None:
    """A page made read-only without a flush: reads through the stale entry are still right,
    the write it lets through is not."""
    _, xen, data, mmu = hyp_setup(stale=True)
    va = 0x1000_5000
    mmu.hyp_read64(va)
    xen.protect(va, PAGE, S1Attrs(ap=2))
    mmu.hyp_read64(va)
    assert mmu.stale_hits == []
    mmu.hyp_write64(va, 7)
    [hit] = mmu.stale_hits
    assert (hit.access, hit.cached_perm, hit.cached_pa) == ("write", "rwx", data + 0x5000)
    assert isinstance(hit.current, Fault) and hit.current.kind == "permission"


@given(random_tables(), st.sampled_from(["read", "write", "exec"]), st.sampled_from([0, 2, 512]))
def test_guest_pa_many_is_the_loop_of_guest_pa(
    case: tuple[Format, PhysicalMemory, int, list[int]], access: str, capacity: int
) -> None:
    """The batch gives what the loop gives: the same PAs, the same first fault, the same
    counters and TLB contents afterwards."""
    fmt, mem, root, vas = case
    if fmt.stage != 2:
        return
    one, many = MMU(mem, TLB(capacity)), MMU(mem, TLB(capacity))
    for mmu in (one, many):
        mmu.set_stage2(root, 3, fmt)
    batch = vas + vas[::-1]
    expected: list[int] = []
    fault: Fault | None = None
    for va in batch:
        try:
            expected.append(one.guest_pa(va, access))
        except FaultError as error:
            fault = error.fault
            break
    if fault is None:
        assert many.guest_pa_many(batch, access) == expected
    else:
        with pytest.raises(FaultError) as info:
            many.guest_pa_many(batch, access)
        assert info.value.fault == fault
    assert one.counters == many.counters
    assert one.tlb.entries == many.tlb.entries


def test_guest_pa_many_checks_its_arguments() -> None:
    _, p2m, mmu = guest_setup()
    mmu.set_stage2(p2m[1].root, 1)
    before = mmu.counters
    for bad in ([RAM, "0x80000000"], [RAM, 1 << 64], [RAM, True], 5):
        with pytest.raises(RangeError, match=r"IPA|iterable"):
            mmu.guest_pa_many(bad)  # type: ignore[arg-type]
    assert mmu.counters == before and len(mmu.tlb) == 0  # checked before the first access
    with pytest.raises(RangeError, match="access"):
        mmu.guest_pa_many([RAM], "fetch")
    assert mmu.guest_pa_many([]) == []
    assert mmu.guest_pa_many(iter([RAM, RAM + 8])) == [0x1_0000_0000, 0x1_0000_0008]
