"""The stale-TLB detector catching a missing flush.

A hyp mapping is changed in memory but the TLB entry for it is not invalidated: the next read
still uses the old translation.  With ``stale_check=True`` the MMU re-walks on every TLB hit and
records the hit whose answer no longer matches the tables.

Run: python examples/stale_tlb.py
"""

from __future__ import annotations

from vaalloc.lpae import ARMV7_S1, MMU, TLB, PageTable, PhysicalMemory, S1Attrs, Translation

mem = PhysicalMemory(pa_bits=40)
tables = PageTable(mem, ARMV7_S1)
old, new = mem.alloc_frames(), mem.alloc_frames()
mem.write64(old, 0x0111)
mem.write64(new, 0x0222)
va = 0x0040_0000
tables.map(va, old, 4096, S1Attrs())

mmu = MMU(mem, tlb=TLB(64), stale_check=True)
mmu.set_hyp(httbr=tables.root, fmt=ARMV7_S1)
assert mmu.hyp_read64(va) == 0x0111  # a miss: walks, fills the TLB

tables.map(va, new, 4096, S1Attrs(), replace=True)  # remap... and forget TLBIMVAH
value = mmu.hyp_read64(va)
print(f"read after remap without a flush: {value:#x} (tables say 0x222)")
assert value == 0x0111 and len(mmu.stale_hits) == 1
hit = mmu.stale_hits[0]
fresh = hit.current.pa if isinstance(hit.current, Translation) else hit.current
print(f"stale hit: va {hit.va:#x}, cached PA {hit.cached_pa:#x}, a fresh walk gives {fresh:#x}")
assert (hit.cached_pa, fresh) == (old, new)

mmu.tlbi("TLBIMVAH", va)  # the flush that was missing
assert mmu.hyp_read64(va) == 0x0222
assert len(mmu.stale_hits) == 1  # no new stale hit once the entry is gone
print("after TLBIMVAH: reads the new frame, no new stale hit")
