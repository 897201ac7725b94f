"""The one guest-access path: the batch is the loop of single writes, and ``d.p2m`` stays true.

``Xen.guest_write_many`` must leave exactly the state the single calls leave (PAs, the dirty set,
every ledger counter, every CPU's TLB and counters, memory); ``Domain.p2m`` is the PageTable that
owns the p2m's tables, so its own check and its record of tables agree with memory after every
kind of p2m change.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaalloc.errors import MappingError, RangeError
from vaalloc.xen import Xen

MB = 1 << 20


def observable(xen: Xen) -> object:
    return (
        [list(m.tlb.entries.items()) for m in xen.mmus],
        [m.counters for m in xen.mmus],
        xen.ledger.snapshot(),
        {d.domid: sorted(d.dirty) for d in xen.domains.values()},
        list(xen.mem.frames()),
        [None if d is None else d.domid for d in xen.current],
    )


def two_systems(superpages: bool) -> tuple[Xen, Xen]:
    out = []
    for _ in range(2):
        xen = Xen(cpus=2, tlb_entries=32)
        d = xen.create_domain(ram=16 * MB, superpages=superpages)
        xen.create_domain(ram=4 * MB)  # another guest, so switches happen
        xen.logdirty.enable(d)
        out.append(xen)
    return out[0], out[1]


@settings(max_examples=25, deadline=None)
@given(
    pages=st.lists(st.integers(0, 16 * 256 - 1), max_size=80),
    cpu=st.integers(0, 1),
    superpages=st.booleans(),
    start_elsewhere=st.booleans(),
)
def test_guest_write_many_is_the_loop_of_guest_write(
    pages: list[int], cpu: int, superpages: bool, start_elsewhere: bool
) -> None:
    one, many = two_systems(superpages)
    for xen in (one, many):
        if start_elsewhere:  # the CPU runs the other guest: the batch switches once, as the loop
            xen.context_switch(cpu, xen.domains[2])
    d1, d2 = one.domains[1], many.domains[1]
    ipas1 = [d1.ram_base + page * 4096 + 8 * (page % 7) for page in pages]
    ipas2 = [d2.ram_base + page * 4096 + 8 * (page % 7) for page in pages]
    expected = [one.guest_write(d1, ipa, cpu) for ipa in ipas1]
    assert many.guest_write_many(d2, ipas2, cpu) == expected
    assert observable(one) == observable(many)
    assert one.logdirty.peek(d1) == many.logdirty.peek(d2) == {ipa >> 12 for ipa in ipas1}


def test_guest_write_many_refuses_a_bad_ipa_before_any_access() -> None:
    xen = Xen(cpus=2)
    d = xen.create_domain(ram=4 * MB)
    other = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(d)
    xen.context_switch(0, other)
    before = observable(xen)
    for bad in (d.ram_base - 8, d.ram_end, "0x80000000", 1.5, None):
        with pytest.raises(RangeError, match="IPA"):
            xen.guest_write_many(d, [d.ram_base, bad], 0)
        assert observable(xen) == before  # nothing written, the CPU still runs `other`
    with pytest.raises(RangeError):
        xen.guest_write_many(d, [d.ram_base], cpu=2)
    assert xen.guest_write_many(d, [], 0) == []


def test_guest_write_many_stops_at_a_real_fault_as_the_loop_would() -> None:
    xen = Xen(cpus=1)
    d = xen.create_domain(ram=4 * MB)
    xen.logdirty.enable(d)
    ro = d.ram_base + 2 * 4096
    l3 = d.p2m.entry_pa(ro, 3)
    xen.mem.write64(l3, xen.mem.read64(l3) & ~(0xF << 55) | (2 << 55))  # p2m type ram_ro
    with pytest.raises(MappingError, match="non-log-dirty"):
        xen.guest_write_many(d, [d.ram_base, d.ram_base + 4096, ro, d.ram_base + 3 * 4096], 0)
    assert xen.logdirty.peek(d, clean=False) == {d.ram_base >> 12, (d.ram_base >> 12) + 1}


def owned_match_reachable(xen: Xen) -> None:
    for d in xen.domains.values():
        d.p2m.check()
        owned = {pa for _level, pa in d.p2m.owned_tables()}
        reachable = {pa for _level, pa in d.p2m.tables()}
        assert owned == reachable


def test_domain_p2m_owns_exactly_the_tables_the_p2m_uses() -> None:
    xen = Xen(cpus=2)
    small = xen.create_domain(ram=6 * MB, superpages=True)
    big = xen.create_domain(ram=(1 << 30) + 4 * MB)
    owned_match_reachable(xen)
    xen.logdirty.enable(small)
    xen.guest_write(small, small.ram_base + 2 * MB + 0x3000, 1)  # a superpage split
    owned_match_reachable(xen)
    xen.p2m_depopulate(big, big.ram_base + (1 << 30), 4 * MB)  # empties a level-2 table
    owned_match_reachable(xen)
    xen.p2m_populate(big, big.ram_base + (1 << 30), 2 * MB)
    owned_match_reachable(xen)
    frames = xen.mem.frames_in_use
    tables = sum(1 for _ in big.p2m.owned_tables())
    xen.destroy_domain(big)
    assert xen.mem.frames_in_use < frames - tables  # its tables and RAM went back
