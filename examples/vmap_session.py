"""A vmap session: Xen's vm_alloc placement, then real frames mapped in the Xen model's vmap.

Run: python examples/vmap_session.py
"""

from __future__ import annotations

import vaalloc
from vaalloc.xen import Xen

# 1. The allocator alone, placing exactly as Xen's vm_alloc over the 256MB..1GB vmap region.
vmap = vaalloc.RangeAllocator.xen_vmap(0x1000_0000, 0x4000_0000)
print(f"boot: vm_low={vmap.vm_low} (bitmap pages), vm_top={vmap.vm_top} bits mapped")
a = vmap.alloc(1)
b = vmap.alloc(4)
c = vmap.alloc(2, align=4)  # alignment is of the bit index, relative to the region base
print(f"alloc(1) -> {a:#x}, alloc(4) -> {b:#x}, alloc(2, align=4) -> {c:#x}")
assert a == 0x1000_7000  # bit 7: bits 0-5 hold the bitmap, bit 6 is the guard before
assert b == a + 2 * 4096  # one guard page after each allocation
assert ((c - 0x1000_0000) // 4096) % 4 == 0
assert vmap.free(b) == 4
d = vmap.alloc(3)  # first fit: the hole b left, after the guard that follows a
print(f"free({b:#x}) -> 4 pages; alloc(3) -> {d:#x} (reuses the hole)")
assert d == b
try:
    vmap.free(d + 4096)  # not the start of an allocation: Xen would WARN and refuse
except vaalloc.InvalidFree as exc:
    print(f"free inside a run refused: {exc}")
vmap.check()

# 2. The same allocator inside the Xen model: vmap() maps real frames in Xen's tables.
xen = Xen(cpus=2)
frames = [xen.mem.alloc_frames() for _ in range(3)]
xen.mem.write64(frames[1], 0xFEED_F00D)
va = xen.vmap([pa >> 12 for pa in frames])
print(f"xen.vmap(3 frames) -> {va:#x}")
for cpu in range(xen.cpus):  # xen_second is shared: every CPU sees the mapping
    assert xen.read_va(cpu, va + 4096) == 0xFEED_F00D
print(f"read through the MMU of each CPU at {va + 4096:#x}: {xen.read_va(0, va + 4096):#x}")
assert xen.vunmap(va) == 3
print("vunmap: 3 pages unmapped and flushed on every CPU")
