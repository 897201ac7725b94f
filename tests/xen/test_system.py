"""The Xen ARM32 model end to end: boot, domains, VLPT reads, log-dirty, vmap, domheap."""

from __future__ import annotations

import pytest

from tests.xen.helpers import state
from vaalloc.errors import (
    InvalidFree,
    LogDirtyError,
    MappingError,
    OutOfSpace,
    RangeError,
    VAAllocError,
)
from vaalloc.lpae import Fault, FaultError, PageTable, Translation
from vaalloc.lpae.descriptor import ADDR_MASK_40, S2AP_WRITE
from vaalloc.xen import Xen
from vaalloc.xen import layout as L
from vaalloc.xen.p2m import is_block, is_table, p2m_type

MB = 1 << 20
GB = 1 << 30


def vmap_tables(xen: Xen) -> int:
    """Level-3 tables vmap created (they stay, as in Xen)."""
    first = L.VMAP_VIRT_START >> 21
    return sum(1 for i in range(first, 512) if is_table(xen.pagetables.read_second(i)))


def walk_desc(d: object, ipa: int) -> int:
    t = d.p2m.walk(ipa)  # type: ignore[attr-defined]
    assert isinstance(t, Translation), t
    return t.descriptor


# --- boot ----------------------------------------------------------------------------------------


def test_boot_tables_per_cpu_and_shared_second(xen: Xen) -> None:
    assert xen.httbr(0) != xen.httbr(1)
    xen.pagetables.check()
    # Xen's image is mapped on both CPUs at 2MB, by the same shared xen_second.
    xen.mem.write64(xen.pagetables.xen_image_pa + 8, 0xC0FFEE)
    assert xen.read_va(0, L.XEN_VIRT_START + 8) == 0xC0FFEE
    assert xen.read_va(1, L.XEN_VIRT_START + 8) == 0xC0FFEE
    # The loop slot maps xen_second page 0 as a level-3 table: page k of the loop is what
    # xen_second[k] points at; for k = 1 that is xen_xenmap, whose entry 1 maps image page 1.
    xenmap_entry = xen.read_va(0, L.VLPT_LOOP_VA + 1 * L.PAGE_SIZE + 8)
    assert xenmap_entry & ADDR_MASK_40 == xen.pagetables.xen_image_pa + L.PAGE_SIZE
    with pytest.raises(RangeError, match="CPU 2"):
        xen.httbr(2)


def test_xen_requires_sane_arguments() -> None:
    with pytest.raises(RangeError, match="cpus=0"):
        Xen(cpus=0)
    with pytest.raises(RangeError, match="'bogus'"):
        Xen(lookup="bogus")


# --- the conformance surface ---------------------------------------------------------------------


def test_conformance_surface(xen: Xen) -> None:
    d = xen.create_domain(ram=64 * MB)
    assert d.ram_base == 0x8000_0000
    assert isinstance(d.p2m, PageTable) and d.p2m.root == d.stage2.root
    xen.logdirty.enable(d)
    for ipa in (0x8000_0000, 0x8123_4000, 0x8000_0000 + 64 * MB - 4096):
        for cpu in (0, 1):
            assert xen.read_va(cpu, xen.vlpt.third_va(d, ipa)) == walk_desc(d, ipa)
            l2_pa = d.p2m.entry_pa(ipa, 2)
            assert xen.read_va(cpu, xen.vlpt.second_va(d, ipa)) == xen.mem.read64(l2_pa)
    xen.guest_write(d, 0x8123_4000, cpu=0)
    xen.guest_write(d, 0x8123_4008, cpu=1)
    xen.guest_write(d, 0x8200_0000, cpu=1)
    assert xen.logdirty.peek(d, clean=True) == {0x81234, 0x82000}
    assert xen.logdirty.peek(d, clean=True) == set()
    before = xen.ledger.counts["xen_second_writes"]
    xen.context_switch(0, d)
    xen.context_switch(0, None)
    xen.context_switch(1, d)
    assert xen.ledger.counts["xen_second_writes"] == before
    assert xen.ledger.counts["context_switch_slot_writes"] == 0
    assert xen.stale_hits() == []


def test_worked_4gb_example(xen: Xen) -> None:
    """docs/vlpt.md: a 4GB guest gets slots 64..67, 8MB of leaf view, 16KB of second view."""
    d = xen.create_domain(ram=4 * GB)
    xen.logdirty.enable(d)
    run = xen.vlpt.run(d)
    assert (run.first_slot, run.first_gb, run.nr) == (64, 2, 4)
    ipa = 0x1_2345_6000
    assert xen.vlpt.third_va(d, ipa) == 0x0851_A2B0
    assert xen.vlpt.second_va(d, ipa) == 0x0FE4_28D0
    assert xen.read_va(1, 0x0851_A2B0) == walk_desc(d, ipa)
    assert xen.read_va(0, 0x0FE4_28D0) == xen.mem.read64(d.p2m.entry_pa(ipa, 2))
    last = d.ram_end - L.PAGE_SIZE
    assert xen.vlpt.third_va(d, last) + 8 - xen.vlpt.third_va(d, d.ram_base) == 8 * MB
    assert xen.vlpt.second_va(d, last) + 8 - xen.vlpt.second_va(d, d.ram_base) == 16 * 1024
    xen.guest_write(d, ipa)
    assert xen.logdirty.peek(d) == {ipa >> 12}
    xen.logdirty.disable(d)
    xen.destroy_domain(d)
    assert xen.mem.frames_in_use == xen.boot_frames


def test_p2m_table_entries_read_as_xen_data_pages(xen: Xen) -> None:
    """The attribute bits that make the VLPT work: AF=1, writable by Xen, never executable."""
    d = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(d)
    t = xen.mmus[0].hyp_translate(xen.vlpt.third_va(d, d.ram_base), access="write")
    assert isinstance(t, Translation) and t.writable and not t.executable
    t2 = xen.mmus[0].hyp_translate(xen.vlpt.second_va(d, d.ram_base), access="read")
    assert isinstance(t2, Translation) and not t2.executable


# --- log-dirty --------------------------------------------------------------------------------


def test_fault_path_costs(xen: Xen) -> None:
    d = xen.create_domain(ram=8 * MB)
    xen.logdirty.enable(d)
    xen.guest_write(d, d.ram_base)  # warm
    with xen.ledger.measure() as cost:
        xen.guest_write(d, d.ram_base + 0x5000, cpu=0)
    assert cost["faults"] == 1
    assert cost["vlpt_reads"] == 2  # second-level view, then the leaf
    assert cost["vlpt_writes"] == 1
    assert cost["tlbi:TLBIALL"] == 1
    assert cost.get("xen_second_writes", 0) == 0
    with xen.ledger.measure() as cost:
        xen.guest_write(d, d.ram_base + 0x5008, cpu=0)  # already dirty: no fault
    assert cost.get("faults", 0) == 0


def test_superpage_split_on_write(xen: Xen) -> None:
    d = xen.create_domain(ram=8 * MB, superpages=True)
    ipa = d.ram_base + 2 * MB + 0x3000
    assert d.p2m.walk(ipa).level == 2
    xen.logdirty.enable(d)
    sva = xen.vlpt.second_va(d, ipa)
    assert is_block(xen.read_va(0, sva))
    with pytest.raises(FaultError):  # a block read at hyp level 3 is invalid
        xen.read_va(0, xen.vlpt.third_va(d, ipa))
    l2_pa = d.p2m.entry_pa(ipa, 2)
    trace: list[tuple[int, int]] = []
    xen.mem.trace = trace
    flush = xen.core.flush_guest_all
    xen.core.flush_guest_all = lambda dom: (trace.append((-1, dom.vmid)), flush(dom))[1]  # type: ignore[method-assign]
    xen.guest_write(d, ipa, cpu=1)
    xen.mem.trace = None
    # Break-before-make on the level-2 entry: invalid, TLBIALLIS for the VMID, then the table.
    events = [(pa, v) for pa, v in trace if pa in (l2_pa, -1)]
    assert events[:3] == [(l2_pa, 0), (-1, d.vmid), (l2_pa, xen.mem.read64(l2_pa))]
    assert xen.ledger.counts["superpage_splits"] == 1
    assert is_table(xen.read_va(0, sva))
    for off in range(0, 2 * MB, 64 * 4096):
        a = d.ram_base + 2 * MB + off
        assert xen.read_va(0, xen.vlpt.third_va(d, a)) == walk_desc(d, a)
    assert xen.logdirty.peek(d) == {ipa >> 12}
    assert xen.logdirty.scan(d) == set()
    xen.logdirty.disable(d)
    assert p2m_type(walk_desc(d, ipa)) == L.P2M_RAM_RW
    assert xen.stale_hits() == []


def test_1gb_block_is_split_never_copied(xen: Xen) -> None:
    d = xen.create_domain(ram=1 * GB)
    xen.p2m_depopulate(d, d.ram_base, GB)
    assert d.stage2.read_l1(d.ram_base) == 0
    run = xen.mem.alloc_frames(GB >> 12, GB >> 12)
    d.stage2.write_entry(1, d.ram_base, d.stage2.l1_pa(d.ram_base), run | L.P2M_RAM_RW_ATTRS)
    assert d.p2m.walk(d.ram_base + 0x1234000).level == 1
    xen.logdirty.enable(d)
    slot = xen.vlpt.run(d).first_slot
    assert is_table(xen.pagetables.read_second(slot))
    ipa = d.ram_base + 0x1234000
    assert xen.read_va(0, xen.vlpt.second_va(d, ipa)) == xen.mem.read64(d.p2m.entry_pa(ipa, 2))
    xen.guest_write(d, ipa)
    assert xen.logdirty.peek(d) == {ipa >> 12}
    assert xen.read_va(0, xen.vlpt.third_va(d, ipa)) == walk_desc(d, ipa)
    xen.logdirty.disable(d)
    xen.mem.free_frames(run)


def test_p2m_changes_while_tracking_update_slots_and_flush(xen: Xen) -> None:
    d = xen.create_domain(ram=2 * GB)
    xen.logdirty.enable(d)
    ipa = d.ram_base + 6 * MB
    for cpu in (0, 1):  # warm both hyp TLBs with the leaf view page
        xen.read_va(cpu, xen.vlpt.third_va(d, ipa))
    xen.p2m_depopulate(d, ipa & ~(2 * MB - 1), 2 * MB)
    for cpu in (0, 1):
        with pytest.raises(FaultError):
            xen.read_va(cpu, xen.vlpt.third_va(d, ipa))
    xen.p2m_populate(d, ipa & ~(2 * MB - 1), 2 * MB)
    assert xen.read_va(1, xen.vlpt.third_va(d, ipa)) == walk_desc(d, ipa)
    assert p2m_type(walk_desc(d, ipa)) == L.P2M_RAM_LOGDIRTY
    # A whole gigabyte goes: its level-2 table is freed and the slot cleared.
    second_gb = d.ram_base + GB
    slot = xen.vlpt.slot_of(d, second_gb)
    xen.read_va(0, xen.vlpt.second_va(d, second_gb))
    xen.p2m_depopulate(d, second_gb, GB)
    assert xen.pagetables.read_second(slot) == 0
    with pytest.raises(FaultError):
        xen.read_va(0, xen.vlpt.second_va(d, second_gb))
    xen.p2m_populate(d, second_gb, 4 * MB)
    assert is_table(xen.pagetables.read_second(slot))
    xen.guest_write(d, second_gb + 0x1000, cpu=1)
    assert xen.logdirty.peek(d) == {(second_gb + 0x1000) >> 12}
    xen.check()
    assert xen.stale_hits() == []


def test_disable_flushes_so_reused_slots_are_not_stale(xen: Xen) -> None:
    a = xen.create_domain(ram=4 * MB)
    b = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(a)
    va = xen.vlpt.third_va(a, a.ram_base)
    xen.read_va(0, va)
    xen.read_va(1, xen.vlpt.second_va(a, a.ram_base))
    xen.logdirty.disable(a)
    xen.logdirty.enable(b)
    assert xen.vlpt.third_va(b, b.ram_base) == va  # same slot, other domain
    for cpu in (0, 1):
        assert xen.read_va(cpu, va) == walk_desc(b, b.ram_base)
        assert xen.read_va(cpu, xen.vlpt.second_va(b, b.ram_base)) == xen.mem.read64(
            b.p2m.entry_pa(b.ram_base, 2)
        )
    assert xen.stale_hits() == []


# --- bad input: typed errors, nothing changed ---------------------------------------------------


def test_logdirty_bad_state_changes_nothing(xen: Xen) -> None:
    d = xen.create_domain(ram=4 * MB)
    snap = state(xen)
    with pytest.raises(LogDirtyError, match="not enabled on domain 1"):
        xen.logdirty.disable(d)
    with pytest.raises(LogDirtyError, match="peek"):
        xen.logdirty.peek(d)
    assert state(xen) == snap
    xen.logdirty.enable(d)
    xen.guest_write(d, d.ram_base)
    snap = state(xen)
    with pytest.raises(LogDirtyError, match="already enabled on domain 1"):
        xen.logdirty.enable(d)
    with pytest.raises(LogDirtyError, match="log-dirty mode"):
        xen.destroy_domain(d)
    with pytest.raises(RangeError, match="0x80400000"):
        xen.guest_write(d, d.ram_base + 4 * MB)
    with pytest.raises(RangeError, match="0x7ffff000"):
        xen.guest_write(d, d.ram_base - 4096)
    with pytest.raises(RangeError, match="CPU 7"):
        xen.guest_write(d, d.ram_base, cpu=7)
    assert state(xen) == snap


def test_window_full_raises_out_of_space_and_changes_nothing(xen: Xen) -> None:
    domains = [xen.create_domain(ram=2 * MB) for _ in range(L.VLPT_DOMAIN_SLOTS + 1)]
    for d in domains[:-1]:
        xen.logdirty.enable(d)
    slots = sorted(xen.vlpt.run(d).first_slot for d in domains[:-1])
    assert slots == list(range(L.VLPT_FIRST_SLOT, L.VLPT_LOOP_SLOT))
    snap = state(xen)
    with pytest.raises(OutOfSpace):
        xen.logdirty.enable(domains[-1])
    assert state(xen) == snap
    assert not domains[-1].logdirty
    xen.logdirty.disable(domains[3])
    xen.logdirty.enable(domains[-1])
    assert xen.vlpt.run(domains[-1]).first_slot == L.VLPT_FIRST_SLOT + 3


def test_domain_too_big_for_window_changes_nothing(xen: Xen) -> None:
    d = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(d)
    big = xen.create_domain(ram=2 * MB)
    big.ram_size = 63 * GB  # as if it had 63GB: needs 63 slots, 62 are free
    snap = state(xen)
    with pytest.raises(OutOfSpace):
        xen.logdirty.enable(big)
    assert state(xen) == snap
    big.ram_size = 2 * MB


def test_create_domain_bad_input(xen: Xen) -> None:
    snap = state(xen)
    for ram in (0, -4096, 4095, 1 << 40):
        with pytest.raises(RangeError, match=f"ram={ram:#x}"):
            xen.create_domain(ram=ram)
    assert state(xen) == snap


def test_dead_domain_is_refused(xen: Xen) -> None:
    d = xen.create_domain(ram=2 * MB)
    xen.destroy_domain(d)
    for call in (
        lambda: xen.logdirty.enable(d),
        lambda: xen.guest_write(d, d.ram_base),
        lambda: xen.context_switch(0, d),
        lambda: xen.destroy_domain(d),
    ):
        with pytest.raises(RangeError, match="not a live domain"):
            call()
    assert xen.mem.frames_in_use == xen.boot_frames


def test_write_to_read_only_block_is_a_real_fault(xen: Xen) -> None:
    d = xen.create_domain(ram=2 * MB)
    l3 = d.stage2.l3_pa(d.ram_base)
    assert l3 is not None
    ro = (xen.mem.read64(l3) & ~(S2AP_WRITE | L.P2M_TYPE_MASK)) | (L.P2M_RAM_RO << 55)
    xen.mem.write64(l3, ro)
    xen.logdirty.enable(d)
    snap = state(xen)
    with pytest.raises(MappingError, match="non-log-dirty"):
        xen.guest_write(d, d.ram_base)
    assert state(xen) == snap


# --- vmap and domheap ---------------------------------------------------------------------


def test_vmap_places_like_xen_and_maps_real_frames(xen: Xen) -> None:
    pa = xen.mem.alloc_frames(2)
    xen.mem.write64(pa + 4096 + 16, 0xABCD)
    va = xen.vmap([pa >> 12, (pa >> 12) + 1])
    assert va == 0x1000_7000  # docs/design.md: the first vm_alloc of Xen's vmap region
    assert xen.read_va(1, va + 4096 + 16) == 0xABCD
    v2 = xen.vmalloc(3 * 4096)
    assert v2 == va + 3 * 4096  # two pages plus one guard page
    xen.write_va(0, v2 + 8, 7)
    assert xen.read_va(1, v2 + 8) == 7
    assert xen.vunmap(va) == 2
    for cpu in (0, 1):
        with pytest.raises(FaultError):
            xen.read_va(cpu, va + 4096)
    with pytest.raises(InvalidFree):
        xen.vunmap(va)
    with pytest.raises(InvalidFree, match="vfree"):
        xen.vunmap(v2)
    xen.vfree(v2)
    with pytest.raises(RangeError):
        xen.vmap([])
    xen.mem.free_frames(pa)
    assert xen.mem.frames_in_use == xen.boot_frames + vmap_tables(xen)
    assert xen.stale_hits() == []


def test_map_domain_page_hash_refcount_and_per_cpu(xen: Xen) -> None:
    pa = xen.mem.alloc_frames(1)
    xen.mem.write64(pa + 24, 0x5A5A)
    mfn = pa >> 12
    va = xen.map_domain_page(0, mfn)
    slot = (mfn >> 9) % L.DOMHEAP_ENTRIES
    assert va == L.DOMHEAP_VIRT_START + (slot << 21) + ((mfn & 511) << 12)
    assert xen.read_va(0, va + 24) == 0x5A5A
    with pytest.raises(FaultError):  # cpu 1's domheap does not have it
        xen.read_va(1, va + 24)
    assert xen.map_domain_page(0, mfn + 1) == va + 4096  # same 2MB: slot shared
    assert xen.domheap.refcount(0, slot) == 2
    xen.unmap_domain_page(0, va)
    xen.unmap_domain_page(0, va + 4096)
    assert xen.domheap.refcount(0, slot) == 0
    with pytest.raises(InvalidFree, match="not mapped"):
        xen.unmap_domain_page(0, va)
    with pytest.raises(InvalidFree, match="not a domheap"):
        xen.unmap_domain_page(0, 0x1000)
    # A different 2MB group hashing to the same slot probes to the next one.
    other = mfn + (L.DOMHEAP_ENTRIES << 9)
    xen.map_domain_page(0, mfn)
    va2 = xen.map_domain_page(0, other)
    assert (va2 - L.DOMHEAP_VIRT_START) >> 21 == (slot + 1) % L.DOMHEAP_ENTRIES
    xen.mem.free_frames(pa)


def test_empty_window_slot_faults_as_vaalloc_error(xen: Xen) -> None:
    with pytest.raises(VAAllocError):
        xen.read_va(0, 0x0800_0000)
    fault = xen.mmus[0].hyp_translate(0x0800_0000)
    assert isinstance(fault, Fault) and (fault.kind, fault.level) == ("translation", 2)


def test_p2m_change_bad_input_changes_nothing(xen: Xen) -> None:
    d = xen.create_domain(ram=8 * MB)
    xen.logdirty.enable(d)
    snap = state(xen)
    with pytest.raises(MappingError, match="already populated"):
        xen.p2m_populate(d, d.ram_base + 2 * MB, 4 * MB)
    with pytest.raises(RangeError, match="outside"):
        xen.p2m_populate(d, d.ram_end, 2 * MB)
    with pytest.raises(RangeError, match="not 2MB aligned"):
        xen.p2m_depopulate(d, d.ram_base + 4096, 2 * MB)
    assert state(xen) == snap
    xen.p2m_depopulate(d, d.ram_base, 2 * MB)
    snap = state(xen)
    with pytest.raises(MappingError, match="not populated"):
        xen.p2m_depopulate(d, d.ram_base, 4 * MB)
    with pytest.raises(MappingError, match="translation fault"):
        xen.guest_write(d, d.ram_base + 0x1000)
    assert state(xen) == snap


def test_vmap_and_domheap_bad_input(xen: Xen) -> None:
    snap = state(xen)
    with pytest.raises(RangeError, match="MFN 0x10000000000"):
        xen.vmap([1 << 40])
    with pytest.raises(RangeError, match="CPU 5"):
        xen.map_domain_page(5, 0x80000)
    with pytest.raises(RangeError, match="MFN"):
        xen.map_domain_page(0, -1)
    with pytest.raises(RangeError, match="size must be positive"):
        xen.vmalloc(0)
    with pytest.raises(InvalidFree, match="vfree"):
        xen.vfree(0x1000_7000)
    assert state(xen) == snap


def test_enable_out_of_frames_gives_the_slots_back() -> None:
    xen = Xen(cpus=1, pa_bits=32)  # 2GB of RAM frames at 0x80000000
    d = xen.create_domain(ram=1 * GB)
    xen.p2m_depopulate(d, d.ram_base, GB)
    run = xen.mem.alloc_frames(GB >> 12, GB >> 12)
    d.stage2.write_entry(1, d.ram_base, d.stage2.l1_pa(d.ram_base), run | L.P2M_RAM_RW_ATTRS)
    size = 1 << 20  # take every free frame, largest runs first
    while size:
        try:
            xen.mem.alloc_frames(size)
        except OutOfSpace:
            size >>= 1
    before = list(xen.vlpt.window.allocations())
    with pytest.raises(OutOfSpace):
        xen.logdirty.enable(d)
    assert list(xen.vlpt.window.allocations()) == before
    assert not d.logdirty and d.domid not in xen.vlpt.runs
