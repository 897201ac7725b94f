"""Exact counts of each p2m lookup strategy, their refusals, and the strategy registry.

The numbers asserted are the ones docs/strategies.md documents: what a context switch writes
and flushes, what a fault maps. Expected values are computed from the p2m itself (how many of
its level-2 entries are tables), never copied from a run.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaalloc.errors import OutOfSpace, RangeError
from vaalloc.lpae import Translation
from vaalloc.lpae.descriptor import is_table
from vaalloc.xen import Domain, Xen
from vaalloc.xen.layout import DOMHEAP_ENTRIES, PAGE_SIZE, VLPT_DOMAIN_SLOTS
from vaalloc.xen.lookup import LOOKUPS, DirectMapWalk, DomheapWalk, P2MLookup, SwitchedVLPT

MB = 1 << 20
GB = 1 << 30


def span(d: Domain) -> int:
    return (((d.ram_end - 1) >> 30) - (d.ram_base >> 30)) + 1


def valid_pages(xen: Xen, d: Domain) -> int:
    """Hyp pages the window shows for ``d``: per gigabyte with a level-2 table, its entries
    that are tables (leaf-view pages) plus the alias page under the loop."""
    n = 0
    for k in range(span(d)):
        l1 = d.stage2.read_l1(d.ram_base + k * GB)
        if is_table(l1):
            l2 = xen.mem.read_table(l1 & ~0xFFF & ((1 << 40) - 1))
            n += sum(1 for e in l2 if is_table(e)) + 1
    return n


def switch_delta(xen: Xen, cpu: int, d: Domain | None) -> dict[str, int]:
    with xen.ledger.measure() as delta:
        xen.context_switch(cpu, d)
    return delta


@pytest.fixture
def domains() -> tuple[Xen, Domain, Domain, Domain, Domain]:
    """A switched Xen with a 4KB-page domain (1 slot), a 2-slot superpage domain (both
    log-dirty) and two plain ones."""
    xen = Xen(2, lookup="switched", stale_check=True)
    small = xen.create_domain(ram=4 * MB)
    wide = xen.create_domain(ram=GB + 4 * MB, superpages=True)
    plain1 = xen.create_domain(ram=2 * MB)
    plain2 = xen.create_domain(ram=2 * MB)
    xen.logdirty.enable(small)
    xen.logdirty.enable(wide)
    return xen, small, wide, plain1, plain2


# --- partitioned ----------------------------------------------------------------------------
def test_partitioned_switches_write_no_slot_and_flush_nothing() -> None:
    xen = Xen(2, lookup="partitioned", stale_check=True)
    a, b = xen.create_domain(ram=4 * MB), xen.create_domain(ram=4 * MB)
    plain = xen.create_domain(ram=2 * MB)
    xen.logdirty.enable(a)
    xen.logdirty.enable(b)
    for target in (a, b, plain, None, a, plain, b):
        delta = switch_delta(xen, 0, target)
        assert delta.get("xen_second_writes", 0) == 0
        assert delta.get("tlbi", 0) == 0
    xen.guest_write(a, a.ram_base, cpu=0)
    xen.guest_write(b, b.ram_base, cpu=0)
    assert xen.logdirty.peek(a) == {a.ram_base >> 12}
    assert xen.logdirty.peek(b) == {b.ram_base >> 12}
    assert xen.ledger.counts["context_switch_slot_writes"] == 0


# --- switched -------------------------------------------------------------------------------
def test_switched_counts_per_switch(domains: tuple[Xen, Domain, Domain, Domain, Domain]) -> None:
    xen, small, wide, plain1, plain2 = domains
    xen.context_switch(0, plain1)
    delta = switch_delta(xen, 0, plain2)  # plain -> plain
    assert delta.get("xen_second_writes", 0) == 0 and delta.get("tlbi", 0) == 0
    delta = switch_delta(xen, 0, small)  # plain -> log-dirty: install, nothing to flush
    assert delta["xen_second_writes"] == span(small) == 1
    assert delta.get("tlbi", 0) == 0
    delta = switch_delta(xen, 0, wide)  # log-dirty -> log-dirty
    assert delta["xen_second_writes"] == max(span(small), span(wide)) == 2
    assert delta["tlbi:TLBIALLH"] == 1 and delta["tlbi"] == 1
    delta = switch_delta(xen, 0, plain1)  # log-dirty -> plain
    assert delta["xen_second_writes"] == span(wide)
    assert delta["tlbi:TLBIALLH"] == 1
    assert delta["context_switch_slot_writes"] == span(wide)
    assert xen.stale_hits() == []


def test_switched_va_flushes_exactly_the_valid_pages() -> None:
    xen = Xen(2, lookup="switched-va", stale_check=True)
    small = xen.create_domain(ram=6 * MB)
    wide = xen.create_domain(ram=GB + 4 * MB, superpages=True)
    xen.logdirty.enable(small)
    xen.logdirty.enable(wide)
    xen.guest_write(wide, wide.ram_base + 5 * PAGE_SIZE, cpu=0)  # splits one superpage
    xen.context_switch(0, small)
    expected = valid_pages(xen, small)
    assert expected == 3 + 1  # three level-3 tables, one alias page
    delta = switch_delta(xen, 0, wide)
    assert delta["tlbi:TLBIMVAH"] == expected == delta["tlbi"]
    assert delta["switch_scan_reads"] == 512 * span(small)
    expected = valid_pages(xen, wide)
    assert expected == 1 + span(wide)  # the split 2MB, and both slots' alias pages
    delta = switch_delta(xen, 0, None)
    assert delta["tlbi:TLBIMVAH"] == expected
    assert xen.stale_hits() == []


def test_switched_auto_picks_by_ceiling() -> None:
    xen = Xen(
        2,
        stale_check=True,
        lookup=lambda core, capacity=None: SwitchedVLPT(core, flush="auto", ceiling=3),
    )
    few = xen.create_domain(ram=2 * MB)  # 1 table + 1 alias = 2 pages <= 3
    many = xen.create_domain(ram=8 * MB)  # 4 tables + 1 alias = 5 pages > 3
    for d in (few, many):
        xen.logdirty.enable(d)
    xen.context_switch(1, few)
    assert switch_delta(xen, 1, many)["tlbi:TLBIMVAH"] == 2
    assert switch_delta(xen, 1, None)["tlbi:TLBIALLH"] == 1


def test_switched_enable_while_running_and_disable_flush(
    domains: tuple[Xen, Domain, Domain, Domain, Domain],
) -> None:
    xen, _, _, plain1, _ = domains
    xen.context_switch(1, plain1)
    with xen.ledger.measure() as delta:
        xen.logdirty.enable(plain1)  # running on cpu 1: installed there at once
    assert isinstance(xen.lookup, SwitchedVLPT)
    assert xen.lookup.installed[1] is plain1
    assert delta["xen_second_writes"] == span(plain1)
    xen.guest_write(plain1, plain1.ram_base, cpu=1)
    with xen.ledger.measure() as delta:
        xen.logdirty.disable(plain1)
    assert delta["tlbi:TLBIALLHIS"] == 1  # disable may run anywhere: broadcast
    assert xen.lookup.installed[1] is None
    xen.check()
    assert xen.stale_hits() == []


def test_switched_refuses_a_domain_wider_than_its_window() -> None:
    xen = Xen(2, lookup="switched", capacity=1)
    d = xen.create_domain(ram=GB + 2 * MB, superpages=True)  # 2 slots
    second = [xen.pagetables.read_second(i) for i in range(512)]
    leaves = list(d.stage2.leaves())
    with pytest.raises(OutOfSpace, match="spans 2 GB"):
        xen.logdirty.enable(d)
    assert not d.logdirty
    assert [xen.pagetables.read_second(i) for i in range(512)] == second
    assert list(d.stage2.leaves()) == leaves


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flush": "some"},
        {"capacity": 0},
        {"capacity": 32},
        {"capacity": True},
        {"ceiling": -1},
        {"lazy": 1},
    ],
)
def test_switched_bad_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(RangeError):
        SwitchedVLPT(Xen(2).core, **kwargs)  # type: ignore[arg-type]


def test_switched_capacity_defaults_to_a_share_of_the_window() -> None:
    for cpus in (1, 2, 3, 8):
        assert SwitchedVLPT(Xen(cpus).core).capacity == VLPT_DOMAIN_SLOTS // cpus


# --- walk -----------------------------------------------------------------------------------
def _refs(xen: Xen, cpu: int) -> int:
    return sum(xen.domheap.refcount(cpu, s) for s in range(DOMHEAP_ENTRIES))


@pytest.mark.parametrize("superpages", [False, True])
def test_walk_maps_one_page_per_level(superpages: bool) -> None:
    xen = Xen(2, lookup="walk", stale_check=True)
    d = xen.create_domain(ram=4 * MB, superpages=superpages)
    xen.logdirty.enable(d)
    for n, page in enumerate((0, 1, 700)):
        with xen.ledger.measure() as delta:
            xen.guest_write(d, d.ram_base + page * PAGE_SIZE, cpu=n % 2)
        assert delta["faults"] == 1
        assert delta["map_domain_page"] == 3  # root, level 2, level 3
        assert delta["domheap_unmaps"] == 3
        assert delta["tlbi:TLBIMVAH"] == 3  # map_domain_page flushes the VA it returns
        assert delta.get("xen_second_writes", 0) == 0
        assert _refs(xen, n % 2) == 0  # nothing held after the handler
    assert xen.ledger.counts["superpage_splits"] == (2 if superpages else 0)
    assert xen.logdirty.peek(d) == {(d.ram_base >> 12) + p for p in (0, 1, 700)}
    with xen.ledger.measure() as delta:
        for target in (None, d, None):
            xen.context_switch(0, target)
    assert delta.get("tlbi", 0) == 0 and delta.get("map_domain_page", 0) == 0
    assert xen.stale_hits() == []


def test_walk64_uses_the_direct_map() -> None:
    xen = Xen(2, lookup="walk64", stale_check=True)
    assert isinstance(xen.lookup, DirectMapWalk)
    d = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(d)
    with xen.ledger.measure() as delta:
        xen.guest_write(d, d.ram_base, cpu=0)
        xen.guest_write(d, d.ram_base + PAGE_SIZE, cpu=0)
    assert delta["directmap_maps"] == 6
    assert delta.get("map_domain_page", 0) == 0
    assert delta.get("tlbi:TLBIMVAH", 0) == 0
    assert delta.get("hyp_tlb_misses", 0) == 1  # one 1GB direct-map block, then hits
    assert xen.lookup.stale_hits() == 0


def test_walk_write_leaf_without_read_walks_again() -> None:
    xen = Xen(1, lookup="walk")
    d = xen.create_domain(ram=2 * MB)
    xen.logdirty.enable(d)
    lookup = xen.lookup
    assert isinstance(lookup, DomheapWalk)
    t = d.p2m.walk(d.ram_base)
    assert isinstance(t, Translation)
    leaf = t.descriptor
    with xen.ledger.measure() as delta:
        lookup.write_leaf(0, d, d.ram_base, leaf)
    assert delta["map_domain_page"] == 3 == delta["domheap_unmaps"]
    lookup.check()


# --- hybrid ---------------------------------------------------------------------------------
def test_hybrid_falls_back_to_the_walk_when_the_window_is_full() -> None:
    xen = Xen(2, lookup="hybrid", capacity=1, stale_check=True)
    fits, falls = xen.create_domain(ram=2 * MB), xen.create_domain(ram=2 * MB)
    xen.logdirty.enable(fits)
    xen.logdirty.enable(falls)  # no OutOfSpace: the walk takes it
    assert xen.ledger.counts["fallback_walks"] == 1
    with xen.ledger.measure() as delta:
        xen.guest_write(fits, fits.ram_base, cpu=0)
    assert delta.get("map_domain_page", 0) == 0 and delta["vlpt_reads"] == 2
    with xen.ledger.measure() as delta:
        xen.guest_write(falls, falls.ram_base, cpu=0)
    assert delta["map_domain_page"] == 3
    xen.logdirty.disable(fits)
    xen.logdirty.enable(fits)  # slot returned and taken again
    assert xen.ledger.counts["fallback_walks"] == 1
    assert xen.stale_hits() == []


# --- registry -------------------------------------------------------------------------------
def test_registry_builds_every_strategy() -> None:
    for name in LOOKUPS:
        xen = Xen(2, lookup=name)
        assert xen.lookup.name == name
        assert xen.mem.frames_in_use == xen.boot_frames


def test_registry_refuses_bad_names_and_takes_factories() -> None:
    with pytest.raises(RangeError, match="bogus"):
        Xen(2, lookup="bogus")
    with pytest.raises(RangeError):
        Xen(2, lookup="partitioned", capacity=64)
    built: list[object] = []

    def factory(core: object, *, capacity: int | None = None) -> P2MLookup:
        built.append((core, capacity))
        return LOOKUPS["walk"](core, capacity=capacity)  # type: ignore[arg-type]

    xen = Xen(2, lookup=factory, capacity=3)
    assert built == [(xen.core, 3)]
    assert xen.lookup.name == "walk"


@settings(max_examples=10)
@given(cap=st.integers(1, VLPT_DOMAIN_SLOTS))
def test_partitioned_capacity_limits_the_window(cap: int) -> None:
    xen = Xen(1, lookup="partitioned", capacity=cap)
    assert xen.vlpt.window.stats().free == cap


def test_switched_views_read_the_p2m_through_the_cpu_window() -> None:
    xen = Xen(2, lookup="switched", stale_check=True)
    lookup = xen.lookup
    assert isinstance(lookup, SwitchedVLPT)
    d = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(d)
    ipa = d.ram_base + 0x123000
    with pytest.raises(RangeError, match="does not show"):
        lookup.third_va(1, d, ipa)
    xen.context_switch(1, d)
    t = d.p2m.walk(ipa)
    assert isinstance(t, Translation)
    assert xen.read_va(1, lookup.third_va(1, d, ipa)) == t.descriptor
    assert xen.read_va(1, lookup.second_va(1, d, ipa)) == xen.mem.read64(d.p2m.entry_pa(ipa, 2))
    assert lookup.third_va(1, d, ipa) >> 21 == lookup.base_slot(1)
    with pytest.raises(RangeError, match="outside"):
        lookup.third_va(1, d, d.ram_end)


def test_run_workload_refuses_a_mismatched_xen_without_changing_it() -> None:
    from vaalloc.studies.workload import Workload, run_workload

    xen = Xen(2, lookup="walk")
    with pytest.raises(RangeError, match="CPUs"):
        run_workload(xen, Workload(pcpus=3))
    assert not xen.domains and xen.mem.frames_in_use == xen.boot_frames
    xen.create_domain(ram=2 * MB)
    frames = xen.mem.frames_in_use
    with pytest.raises(RangeError, match="without domains"):
        run_workload(xen, Workload())
    assert len(xen.domains) == 1 and xen.mem.frames_in_use == frames


def test_switched_lazy_keeps_the_view_across_plain_domains() -> None:
    xen = Xen(2, lookup="switched-lazy", stale_check=True)
    a, b = xen.create_domain(ram=4 * MB), xen.create_domain(ram=4 * MB)
    plain = xen.create_domain(ram=2 * MB)
    xen.logdirty.enable(a)
    xen.logdirty.enable(b)
    assert switch_delta(xen, 0, a)["xen_second_writes"] == 1  # first install
    for _ in range(3):  # a <-> plain: the window keeps showing a, nothing written or flushed
        for target in (plain, a):
            delta = switch_delta(xen, 0, target)
            assert delta.get("xen_second_writes", 0) == 0 and delta.get("tlbi", 0) == 0
    xen.context_switch(0, plain)
    xen.p2m_depopulate(a, a.ram_base, 2 * MB)  # a changes while only shown, not running
    xen.p2m_populate(a, a.ram_base, 2 * MB)
    xen.check()
    delta = switch_delta(xen, 0, b)  # a different log-dirty domain: rewrite and flush
    assert delta["xen_second_writes"] == 1 and delta["tlbi:TLBIALLH"] == 1
    xen.guest_write(a, a.ram_base, cpu=1)
    xen.guest_write(b, b.ram_base, cpu=0)
    assert xen.logdirty.peek(a) == {a.ram_base >> 12}
    assert xen.stale_hits() == []
