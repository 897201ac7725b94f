"""Issue 12, item by item: each call the issue found misbehaving, as a user would make it.

Every refusal is a VAAllocError subclass whose message names the argument's value, and the
model (its whole state, tests/api/model_state.py) is as it was before the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.api.model_state import count_allocations, lpae_state, xen_state
from vaalloc.errors import InvalidFree, OutOfSpace, RangeError, VAAllocError
from vaalloc.lpae import (
    ARMV7_S1,
    ARMV7_S1_PL1,
    MMU,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S2Attrs,
    aarch64_s1,
    armv7_s2,
)
from vaalloc.xen import Xen

MB = 1 << 20
GB = 1 << 30
PAGE = 4096


class World:
    """A small lpae model and a Xen with a tracked domain, built fresh per test."""

    def __init__(self) -> None:
        self.mem = PhysicalMemory(40)
        self.pt = PageTable(self.mem, ARMV7_S1)
        self.pt.map(0x40_0000, 0x8000_0000, 4 * PAGE, S1Attrs())
        self.mmu = MMU(self.mem)
        self.mmu.set_hyp(self.pt.root)
        self.mmu.hyp_read64(0x40_0000)
        self.pt1 = PageTable(self.mem, ARMV7_S1_PL1)  # a regime with user accesses
        self.xen = Xen(cpus=2)
        self.d = self.xen.create_domain(64 * MB)
        self.xen.logdirty.enable(self.d)
        self.xen.guest_write(self.d, self.d.ram_base + 5 * PAGE)

    def state(self) -> Any:
        return (lpae_state(self.mem, [self.pt, self.pt1], [self.mmu]), xen_state(self.xen))


@pytest.fixture
def w() -> World:
    return World()


def refused(w: World, call: Callable[[], object], error: type[Exception] = VAAllocError) -> str:
    """``call()`` raises ``error`` (a VAAllocError) and changes nothing; its message."""
    before = w.state()
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, VAAllocError)
    assert w.state() == before
    return str(info.value)


# -- "A failed guest write changes the model" --------------------------------------------------


def test_failed_guest_write_changes_nothing(w: World) -> None:
    xen, d = w.xen, w.d
    ipa = d.ram_base  # clean: a write would fault and dirty it
    message = refused(w, lambda: xen.guest_write(d, ipa, value=2**64), RangeError)
    assert "18446744073709551616" in message
    assert xen.logdirty.peek(d, clean=False) == {(d.ram_base >> 12) + 5}
    assert xen.ledger.counts["faults"] == 1  # the one write of the fixture
    for bad in (-1, 1.5, "1", True):
        refused(w, lambda bad=bad: xen.guest_write(d, ipa, value=bad), RangeError)  # type: ignore[misc]


# -- "A domain that cannot fit takes minutes to fail" -------------------------------------------


def test_domain_that_cannot_fit_is_refused_at_once() -> None:
    """The issue's 1TB domain: refused before a single frame is taken, naming it and its size.
    (Counting allocations proves the refusal is O(1); it took minutes before.)"""
    xen = Xen()
    ram = (1 << 40) - (2 << 30)
    before = xen_state(xen)
    errors: list[VAAllocError] = []

    def create() -> None:
        try:
            xen.create_domain(ram)
        except OutOfSpace as error:
            errors.append(error)

    assert count_allocations(xen.mem, create) == 0
    assert len(errors) == 1 and f"{ram:#x}" in str(errors[0]) and "d1" in str(errors[0])
    assert xen_state(xen) == before


def test_domain_bigger_than_a_small_ram_names_itself() -> None:
    xen = Xen(cpus=1, pa_bits=32)
    with pytest.raises(OutOfSpace, match=r"create_domain\(ram=0x7fe00000\): domain d1 needs"):
        xen.create_domain(0x7FE0_0000)
    d = xen.create_domain(16 * MB)
    assert d.domid == 1  # the refused one took no id


def test_ipa_space_and_vmids_name_the_domain() -> None:
    xen = Xen(cpus=1)
    with pytest.raises(RangeError, match=r"domain d1 does not fit the 40-bit IPA"):
        xen.create_domain((1 << 40) - (2 << 30) + PAGE)
    for _ in range(255):
        xen.create_domain(PAGE)
    with pytest.raises(OutOfSpace, match=r"create_domain\(ram=0x1000\): domain d256: all 255"):
        xen.create_domain(PAGE)


def test_vlpt_window_exhaustion_names_the_domain() -> None:
    xen = Xen(cpus=1, capacity=1)
    first = xen.create_domain(2 * MB)
    xen.logdirty.enable(first)
    second = xen.create_domain(4 * MB)
    before = xen_state(xen)
    with pytest.raises(OutOfSpace, match=r"domain 2 .*0x400000 bytes\) needs 1 consecutive"):
        xen.logdirty.enable(second)
    assert xen_state(xen) == before


# -- "raw Python exceptions escape" ---------------------------------------------------------


RAW: list[tuple[str, Callable[[World], object]]] = [
    ("PhysicalMemory(pa_bits='40')", lambda w: PhysicalMemory(pa_bits="40")),  # type: ignore[arg-type]
    ("PhysicalMemory(pa_bits=40.0)", lambda w: PhysicalMemory(pa_bits=40.0)),  # type: ignore[arg-type]
    ("PhysicalMemory(pa_bits=None)", lambda w: PhysicalMemory(pa_bits=None)),  # type: ignore[arg-type]
    ("Xen(pa_bits='40')", lambda w: Xen(pa_bits="40")),  # type: ignore[arg-type]
    ("Xen(xenheap_size='8M')", lambda w: Xen(xenheap_size="8M")),  # type: ignore[arg-type]
    ("Xen(lookup=['x'])", lambda w: Xen(lookup=["x"])),  # type: ignore[arg-type]
    ("aarch64_s1('48')", lambda w: aarch64_s1("48")),  # type: ignore[arg-type]
    ("armv7_s2('x')", lambda w: armv7_s2("x")),  # type: ignore[arg-type]
    ("mmu.hyp_read64('0x400000')", lambda w: w.mmu.hyp_read64("0x400000")),  # type: ignore[arg-type]
    ("xen.read_va(0, 'x')", lambda w: w.xen.read_va(0, "x")),  # type: ignore[arg-type]
    ("mmu.tlbi('TLBIMVAH', '0x1000')", lambda w: w.mmu.tlbi("TLBIMVAH", "0x1000")),  # type: ignore[arg-type]
    ("xen.vlpt.third_va(d, 'x')", lambda w: w.xen.vlpt.third_va(w.d, "x")),  # type: ignore[arg-type]
    (
        "xen.p2m_populate(d, '0x80000000', 2 << 20)",
        lambda w: w.xen.p2m_populate(w.d, "0x80000000", 2 << 20),  # type: ignore[arg-type]
    ),
    ("xen.vmap(['a'])", lambda w: w.xen.vmap(["a"])),  # type: ignore[list-item]
    ("xen.vmap(5)", lambda w: w.xen.vmap(5)),  # type: ignore[arg-type]
    ("xen.vmalloc('x')", lambda w: w.xen.vmalloc("x")),  # type: ignore[arg-type]
    ("xen.map_domain_page(0, 'x')", lambda w: w.xen.map_domain_page(0, "x")),  # type: ignore[arg-type]
    ("PageTable(None, ARMV7_S1)", lambda w: PageTable(None, ARMV7_S1)),  # type: ignore[arg-type]
    ("MMU(mem, tlb=5)", lambda w: MMU(w.mem, tlb=5)),  # type: ignore[arg-type]
    ("pt.walk(va, access=['read'])", lambda w: w.pt.walk(0x40_0000, access=["read"])),  # type: ignore[arg-type]
    ("mmu.tlbi(['TLBIALL'])", lambda w: w.mmu.tlbi(["TLBIALL"])),  # type: ignore[arg-type]
    ("xen.vfree(None)", lambda w: w.xen.vfree(None)),  # type: ignore[arg-type]
    # and the others of the same kinds
    ("PhysicalMemory(ram_base='0')", lambda w: PhysicalMemory(ram_base="0")),  # type: ignore[arg-type]
    ("PhysicalMemory(ram_size=1.5)", lambda w: PhysicalMemory(ram_size=1.5)),  # type: ignore[arg-type]
    ("Xen(cpus=2.0)", lambda w: Xen(cpus=2.0)),  # type: ignore[arg-type]
    ("Xen(capacity='2')", lambda w: Xen(capacity="2")),  # type: ignore[arg-type]
    ("aarch64_s2([40])", lambda w: __import__("vaalloc.lpae").lpae.aarch64_s2([40])),
    ("xen.vunmap('x')", lambda w: w.xen.vunmap("x")),  # type: ignore[arg-type]
    ("xen.unmap_domain_page(0, None)", lambda w: w.xen.unmap_domain_page(0, None)),  # type: ignore[arg-type]
    ("xen.p2m_depopulate(d, ipa, '2M')", lambda w: w.xen.p2m_depopulate(w.d, w.d.ram_base, "2M")),  # type: ignore[arg-type]
    ("xen.vlpt.second_va(d, None)", lambda w: w.xen.vlpt.second_va(w.d, None)),  # type: ignore[arg-type]
    ("xen.vlpt.run('d1')", lambda w: w.xen.vlpt.run("d1")),  # type: ignore[arg-type]
    ("pt.translate_pa(va, ['read'])", lambda w: w.pt.translate_pa(0x40_0000, ["read"])),  # type: ignore[arg-type]
    ("pt.entry_pa(va, True)", lambda w: w.pt.entry_pa(0x40_0000, True)),
    ("mem.read_bytes(pa, '8')", lambda w: w.mem.read_bytes(0x8000_0000, "8")),  # type: ignore[arg-type]
    ("S1Attrs.from_descriptor('x')", lambda w: S1Attrs.from_descriptor("x")),  # type: ignore[arg-type]
    ("ARMV7_S1.block_size('2')", lambda w: ARMV7_S1.block_size("2")),  # type: ignore[arg-type]
    ("d.in_ram('x')", lambda w: w.d.in_ram("x")),  # type: ignore[arg-type]
    ("xen.logdirty.scan(None)", lambda w: w.xen.logdirty.scan(None)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "call"), RAW, ids=[name for name, _ in RAW])
def test_wrong_types_raise_typed_errors(w: World, name: str, call: Callable[[World], Any]) -> None:
    refused(w, lambda: call(w))


# -- "bad values accepted silently" -------------------------------------------------------------


SILENT: list[tuple[str, Callable[[World], object], str]] = [
    ("MMU(None)", lambda w: MMU(None), "None"),  # type: ignore[arg-type]
    ("Xen(stale_check='yes')", lambda w: Xen(stale_check="yes"), "'yes'"),  # type: ignore[arg-type]
    (
        "create_domain(1 << 20, superpages='x')",
        lambda w: w.xen.create_domain(1 << 20, superpages="x"),  # type: ignore[arg-type]
        "'x'",
    ),
    ("S1Attrs(xn='no')", lambda w: S1Attrs(xn="no"), "'no'"),  # type: ignore[arg-type]
    ("S2Attrs(af=1)", lambda w: S2Attrs(af=1), "1"),  # type: ignore[arg-type]
    (
        "pt.map(..., replace='yes')",
        lambda w: w.pt.map(0x80_0000, 0x8000_0000, PAGE, S1Attrs(), replace="yes"),  # type: ignore[arg-type]
        "'yes'",
    ),
    ("peek(d, clean='no')", lambda w: w.xen.logdirty.peek(w.d, clean="no"), "'no'"),  # type: ignore[arg-type]
    ("mmu.tlbi('TLBIMVAH', -1)", lambda w: w.mmu.tlbi("TLBIMVAH", -1), "-0x1"),
    ("pt.unmap(..., missing_ok=1)", lambda w: w.pt.unmap(0, PAGE, missing_ok=1), "1"),  # type: ignore[arg-type]
    ("pt.walk(va, user='no')", lambda w: w.pt1.walk(0x40_0000, user="no"), "'no'"),  # type: ignore[arg-type]
    ("Xen(lookup='walk', capacity='x')", lambda w: Xen(lookup="walk", capacity="x"), "'x'"),  # type: ignore[arg-type]
    ("xen.vmap([True])", lambda w: w.xen.vmap([True]), "True"),
    ("mem.alloc_frames(True)", lambda w: w.mem.alloc_frames(True), "True"),
]


@pytest.mark.parametrize(("name", "call", "shown"), SILENT, ids=[n for n, _, _ in SILENT])
def test_bad_values_are_refused(
    w: World, name: str, call: Callable[[World], Any], shown: str
) -> None:
    assert shown in refused(w, lambda: call(w))


def test_peek_with_a_bad_clean_does_not_clean(w: World) -> None:
    xen, d = w.xen, w.d
    dirty = xen.logdirty.peek(d, clean=False)
    with pytest.raises(RangeError):
        xen.logdirty.peek(d, clean="no")  # type: ignore[arg-type]
    assert xen.logdirty.peek(d, clean=False) == dirty != set()


# -- "use after free is not caught" -------------------------------------------------------------


def test_freed_page_table_refuses_use() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(0x40_0000, 0x8010_0000, PAGE, S1Attrs())
    assert pt.free() == 3  # root, level 2, level 3
    before = lpae_state(mem)
    calls: list[Callable[[], object]] = [
        lambda: pt.map(0x40_0000, 0x8000_0000, PAGE, S1Attrs()),
        lambda: pt.unmap(0x40_0000, PAGE),
        lambda: pt.protect(0x40_0000, PAGE, S1Attrs()),
        pt.check,
        lambda: pt.walk(0x40_0000),
        lambda: pt.translate_pa(0x40_0000),
        lambda: pt.entry_pa(0x40_0000, 2),
        pt.tables,
        pt.owned_tables,
        pt.leaves,
        pt.mappings,
        pt.dump,
        lambda: pt.new_table(2),
        lambda: pt.reserve_tables(1),
    ]
    for call in calls:
        with pytest.raises(RangeError, match="freed"):
            call()
    with pytest.raises(InvalidFree, match="already freed"):
        pt.free()
    assert lpae_state(mem) == before and mem.frames_in_use == 0


def test_live_tables_cannot_be_freed_under_their_owner(w: World) -> None:
    for pa in (w.pt.root, *(pa for _, pa in w.pt.owned_tables())):
        assert "a live table" in refused(w, lambda pa=pa: w.mem.free_frames(pa), InvalidFree)  # type: ignore[misc]
    xen, d = w.xen, w.d
    for pa in (d.p2m.root, xen.httbr(1), xen.pagetables.xen_second, xen.pagetables.fixmap):
        refused(w, lambda pa=pa: xen.mem.free_frames(pa), InvalidFree)  # type: ignore[misc]
    # A frame that is not a table is still the caller's to free.
    pa = w.mem.alloc_frames()
    assert w.mem.free_frames(pa) == 1


def test_adopted_tables_are_claimed_once() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(0x40_0000, 0x8010_0000, PAGE, S1Attrs())
    other = PageTable(mem, ARMV7_S1, root=pt.root)  # pt's tables stay pt's
    assert sorted(other.owned_tables()) == sorted(pt.owned_tables())
    assert all(mem.table_owner(pa) is pt for _, pa in pt.owned_tables())
    assert other.free() == 0 and pt.free() == 3
    # Tables nobody registered (written by hand) become the adopter's.
    root = mem.alloc_frames()
    adopted = PageTable(mem, ARMV7_S1, root=root)
    with pytest.raises(InvalidFree, match="live table"):
        mem.free_frames(root)
    assert adopted.free() == 1 and mem.frames_in_use == 0


def test_destroyed_domain_refuses_further_use() -> None:
    xen = Xen(cpus=2)
    d = xen.create_domain(8 * MB)
    xen.context_switch(1, d)
    xen.destroy_domain(d)
    assert not d.alive and not d.p2m.live and not d.stage2.live
    before = xen_state(xen)
    calls: list[Callable[[], object]] = [
        lambda: xen.destroy_domain(d),
        lambda: xen.context_switch(0, d),
        lambda: xen.guest_write(d, d.ram_base),
        lambda: xen.guest_read(d, d.ram_base),
        lambda: xen.guest_write_many(d, [d.ram_base]),
        lambda: xen.p2m_populate(d, d.ram_base, 2 * MB),
        lambda: xen.p2m_depopulate(d, d.ram_base, 2 * MB),
        lambda: xen.flush_guest_all(d),
        lambda: xen.logdirty.enable(d),
        lambda: xen.logdirty.disable(d),
        lambda: xen.logdirty.peek(d),
        lambda: xen.logdirty.scan(d),
        lambda: xen.vlpt.run(d),
        lambda: xen.vlpt.third_va(d, d.ram_base),
        lambda: d.p2m.walk(d.ram_base),
        lambda: d.p2m.map(d.ram_base, 0x8000_0000, PAGE, S2Attrs()),
        lambda: d.stage2.populate(d.ram_base, 2 * MB, False),
        lambda: d.stage2.leaves(),
        d.stage2.free,
    ]
    for call in calls:
        with pytest.raises(VAAllocError):
            call()
    assert xen_state(xen) == before
    xen.check()
