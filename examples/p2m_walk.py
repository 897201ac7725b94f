"""A p2m walk: build an ARMv7 stage-2 table (40-bit IPA), map guest RAM, walk it by hand.

Run: python examples/p2m_walk.py
"""

from __future__ import annotations

from vaalloc.lpae import ARMV7_S2_40, Fault, PageTable, PhysicalMemory, S2Attrs, Translation

mem = PhysicalMemory(pa_bits=40)
p2m = PageTable(mem, ARMV7_S2_40)  # root: two concatenated level-1 pages, 8KB aligned
print(f"p2m root at {p2m.root:#x} ({ARMV7_S2_40.root_pages} pages, VTCR {ARMV7_S2_40.vtcr:#x})")
assert ARMV7_S2_40.vtcr == 0x8000_3558

ram = 0x8000_0000
p2m.map(ram, 0x2_0000_0000, 4 << 20, S2Attrs())  # 4MB: two 2MB blocks (va and pa aligned)
p2m.map(ram + (4 << 20), 0x2_0040_1000, 64 << 10, S2Attrs(s2ap=1))  # 64KB read-only, 4KB pages

t = p2m.walk(ram + 0x1234)
assert isinstance(t, Translation)
print(f"IPA {ram + 0x1234:#x} -> PA {t.pa:#x}: level {t.level} block of {t.block_size >> 20}MB")
for pa, value in t.reads:
    print(f"    read descriptor at {pa:#x} = {value:#018x}")
assert t.level == 2 and t.pa == 0x2_0000_1234 and t.descriptor & 0b11 == 0b01  # a block

t = p2m.walk(ram + (4 << 20) + 0x3008, access="read")
assert isinstance(t, Translation) and t.level == 3 and not t.writable
print(f"IPA {t.va:#x} -> PA {t.pa:#x}: level-3 page, read-only")

f = p2m.walk(ram + (4 << 20) + 0x3008, access="write")
assert isinstance(f, Fault) and (f.kind, f.level) == ("permission", 3)
print(f"write there: {f}")

f = p2m.walk(ram + (64 << 20))
assert isinstance(f, Fault) and f.kind == "translation"
print(f"unmapped IPA: {f}")
