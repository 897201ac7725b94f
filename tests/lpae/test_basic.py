"""First checks of map/walk on the two formats Xen uses (ARMv7 hyp S1 and 40-bit S2)."""

from __future__ import annotations

from vaalloc.lpae import ARMV7_S1, ARMV7_S2_40, Fault, PageTable, PhysicalMemory, S1Attrs, S2Attrs


def test_armv7_s1_block_and_page_walks() -> None:
    mem = PhysicalMemory(40)
    pt = PageTable(mem, ARMV7_S1)
    pt.map(0x0020_0000, 0x8000_0000, 0x40_0000, S1Attrs())
    pt.map(0x1000, 0x9000_0000, 0x3000, S1Attrs(ap=2, xn=True))
    block = pt.walk(0x0020_0123)
    assert not isinstance(block, Fault)
    assert (block.level, block.pa, block.block_size) == (2, 0x8000_0123, 0x20_0000)
    page = pt.walk(0x2010, "read")
    assert not isinstance(page, Fault)
    assert (page.level, page.pa, page.writable, page.executable) == (3, 0x9000_1010, False, False)
    denied = pt.walk(0x2010, "write")
    assert isinstance(denied, Fault) and (denied.kind, denied.level) == ("permission", 3)


def test_armv7_s2_root_is_two_concatenated_pages() -> None:
    mem = PhysicalMemory(40)
    p2m = PageTable(mem, ARMV7_S2_40)
    assert p2m.root % 0x2000 == 0
    assert mem.frames_in_use == 2
    top_gb = (1 << 40) - (1 << 30)
    p2m.map(top_gb, 0x8000_0000, 0x1000, S2Attrs())
    # IPA bit 39 selects the second root page: the last GB is its last entry.
    assert p2m.entry_pa(top_gb, 1) == p2m.root + 4096 + 511 * 8
    t = p2m.walk(top_gb, "write")
    assert not isinstance(t, Fault)
    assert t.pa == 0x8000_0000 and t.reads[0][0] == p2m.root + 1023 * 8
