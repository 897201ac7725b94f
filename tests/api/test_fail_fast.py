"""Fail fast: a request the model cannot satisfy is refused before any work, naming what asked
and how much, and changes nothing.

"Before any work" is checked structurally, not with a clock (timing belongs to the benchmarks):
the refusal happens with no frame allocated, counted through the ``alloc_hook`` seam. Before
this, such requests allocated frame after frame until memory ran out, then freed them all:
minutes for a domain of a terabyte.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.api.model_state import count_allocations, lpae_state, xen_state
from vaalloc.errors import OutOfSpace, RangeError, VAAllocError
from vaalloc.lpae import ARMV7_S1, ARMV7_S2_40, PageTable, PhysicalMemory, S1Attrs, S2Attrs
from vaalloc.lpae.memory import MAX_READ_BYTES
from vaalloc.xen import Xen

MB = 1 << 20
GB = 1 << 30
PAGE = 4096


def refused_at_once(mem: PhysicalMemory, call: Callable[[], object], *words: str) -> None:
    """``call()`` raises OutOfSpace with every one of ``words`` in its message, allocating
    no frame on the way."""
    raised: list[VAAllocError] = []

    def attempt() -> None:
        try:
            call()
        except OutOfSpace as error:
            raised.append(error)

    assert count_allocations(mem, attempt) == 0
    assert len(raised) == 1, "the call did not raise OutOfSpace"
    for word in words:
        assert word in str(raised[0]), (word, str(raised[0]))


@pytest.fixture
def small() -> Xen:
    """A Xen with 2GB of RAM and a 16MB domain."""
    xen = Xen(cpus=2, pa_bits=32)
    xen.create_domain(16 * MB)
    return xen


def test_create_domain(small: Xen) -> None:
    before = xen_state(small)
    ram = 2 * GB - 16 * MB  # more than the RAM left
    refused_at_once(small.mem, lambda: small.create_domain(ram), "d2", f"{ram:#x}")
    assert xen_state(small) == before
    d = small.create_domain(GB, superpages=True)  # what fits still fits, as d2
    assert d.domid == 2


def test_p2m_populate(small: Xen) -> None:
    d = small.create_domain(2 * GB - 64 * MB)
    small.p2m_depopulate(d, d.ram_base, 2 * GB - 64 * MB)
    filler = small.create_domain(2 * GB - 200 * MB)
    before = xen_state(small)
    refused_at_once(
        small.mem, lambda: small.p2m_populate(d, d.ram_base, 2 * GB - 64 * MB), "d2.p2m"
    )
    assert xen_state(small) == before
    assert filler.alive


def test_logdirty_enable_split_frames() -> None:
    """Enable reserves a split frame per 2MB block: with too few frames left it is refused
    before any is taken, naming the domain and its RAM."""
    xen = Xen(cpus=1, pa_bits=32)
    d = xen.create_domain(GB, superpages=True)  # 512 blocks
    hogs, size = [], 1 << 18
    while xen.mem.frames_free > 100:  # take frames, largest runs first, until 100 are left
        try:
            hogs.append(xen.mem.alloc_frames(min(size, xen.mem.frames_free - 100)))
        except OutOfSpace:
            size >>= 1
    before = xen_state(xen)
    refused_at_once(xen.mem, lambda: xen.logdirty.enable(d), "domain 1", "0x40000000")
    assert xen_state(xen) == before
    for pa in hogs:
        xen.mem.free_frames(pa)
    xen.logdirty.enable(d)
    assert d.stage2.split_reserve == 512


def test_vmalloc_and_vmap(small: Xen) -> None:
    before = xen_state(small)
    refused_at_once(small.mem, lambda: small.vmalloc(3 * GB), "vmalloc(0xc0000000)")
    refused_at_once(small.mem, lambda: small.vmalloc(GB), "pages of VA")  # frames enough
    refused_at_once(small.mem, lambda: small.vmap([0x80000] * (1 << 18)))  # 1GB of VA
    assert xen_state(small) == before


def test_page_table_map_and_reserve() -> None:
    mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=MB)  # 256 frames
    pt = PageTable(mem, ARMV7_S2_40)
    before = lpae_state(mem, [pt])
    # 4GB of 4KB pages needs 2048 level-3 tables and 4 level-2 ones
    refused_at_once(
        mem,
        lambda: pt.map(0, 0, 4 * GB, S2Attrs(), max_level_block=3),
        "needs 2052 new tables",
    )
    refused_at_once(mem, lambda: pt.reserve_tables(300), "needs 300 new tables")
    assert lpae_state(mem, [pt]) == before
    pt.map(0, 0, 4 * GB, S2Attrs())  # with blocks it fits: four 1GB blocks, no table


def test_huge_reads_are_refused_not_materialised() -> None:
    mem = PhysicalMemory(48)
    with pytest.raises(RangeError, match="read_bytes"):
        mem.read_bytes(0, 1 << 40)
    with pytest.raises(RangeError, match="read_table"):
        mem.read_table(0, 1 << 40)
    assert len(mem.read_bytes(0, 4 * PAGE)) == 4 * PAGE
    assert MAX_READ_BYTES == 1 << 30


def test_a_map_without_tables_to_spare_is_refused_even_for_one_page() -> None:
    mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=PAGE)
    pt = PageTable(mem, ARMV7_S1)  # the only frame
    refused_at_once(mem, lambda: pt.map(0, 0x1000, PAGE, S1Attrs()), "needs 2 new tables")
