"""The ``walk`` p2m lookups: no window, a software walk of the p2m per fault.

The alternative the thread weighs against the VLPT: "doing the domain_map_page walk on each
lookup". The fault handler walks the faulting domain's p2m from its root; every table page it
visits is mapped with ``map_domain_page``, read (or written) through the mapping, and unmapped.

* :class:`DomheapWalk` (``walk``, arm32): Xen 4.3's per-CPU domheap
  (:class:`vaalloc.xen.domheap.Domheap`): a hash of 1024 2MB slots keyed by
  ``(mfn >> 9) % 1024``, reference counts in the entry's software bits, one PTE write per map
  and a local ``TLBIMVAH`` of the returned VA (a TLB may still hold the slot's previous 2MB
  mapping). The read through the fresh mapping therefore always misses the TLB: a 3-level hyp
  walk. All of it is counted by the real model (``map_domain_page``, ``xen_pte_writes``,
  ``tlbi:TLBIMVAH``, ``hyp_tlb_misses``, ``hyp_walk_reads``) plus ``domheap_unmaps``.
* :class:`DirectMapWalk` (``walk64``, arm64): with a direct map of all RAM,
  ``map_domain_page`` is address arithmetic (``DIRECTMAP_VIRT_START + pa``): no PTE write, no
  flush. Reads go through a per-CPU AArch64 EL2 MMU over the same physical memory, whose
  direct map uses 1GB blocks (as Xen maps RAM on arm64), so its TLB misses are measured too.

**Exact counts.** A fault visits three levels (root, level 2, level 3) and maps and unmaps one
domheap page per level visited, as a C handler written as one function would:
``read_second`` maps the root page and the level-2 page; ``read_leaf`` maps the level-3 page
and, when the handler will write the leaf back (a valid ``ram_logdirty`` leaf), keeps it mapped
for ``write_leaf``, which unmaps it. A superpage split between the two reads (reported by
``on_p2m_change``) is followed to the new level-3 table, like a C handler using the table
``split`` returned. After every handler call, no domheap reference is held.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaalloc.errors import InvariantError, MappingError, RangeError
from vaalloc.lpae import MMU, TLB, PageTable, S1Attrs, aarch64_s1
from vaalloc.lpae.descriptor import ADDR_MASK_40, is_block, is_table
from vaalloc.xen.domheap import Domheap
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.layout import (
    P2M_LOGDIRTY_TYPE_BITS,
    P2M_TYPE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    SECOND_SHIFT,
)
from vaalloc.xen.lookup.base import P2MLookup

if TYPE_CHECKING:
    from vaalloc.xen.domain import Domain

__all__ = ["DIRECTMAP_VIRT_START", "DirectMapWalk", "DomheapWalk"]

#: arm64 Xen's direct map of RAM (``xen/include/asm-arm/config.h``, 4.5+: slot 256 of the
#: zeroeth level, 0x0000_8000_0000_0000); the model maps the whole PA range there.
DIRECTMAP_VIRT_START = 0x0000_8000_0000_0000

#: Xen's arm64 hyp stage 1 (TTBR0_EL2): 48-bit VA, 4KB granule, non-VHE EL2.
XEN64_S1 = aarch64_s1(48, regime="el2")


def _will_write(leaf: int) -> bool:
    """True if the log-dirty handler writes ``leaf`` back (a valid ``ram_logdirty`` leaf)."""
    return leaf & P2M_TYPE_MASK == P2M_LOGDIRTY_TYPE_BITS and bool(leaf & 1)


class DomheapWalk(P2MLookup):
    """Walk the p2m per lookup, mapping each visited table page with ``map_domain_page``.

    No window, nothing at enable, disable or context switch. Costs per fault: three
    map/unmap pairs (each one PTE write and one ``TLBIMVAH`` on arm32) and the three TLB
    misses the fresh mappings cause. The constructor raises RangeError for a ``core`` that
    is not a Hypervisor.
    """

    name = "walk"

    def __init__(self, core: Hypervisor) -> None:
        self.core = check_core(core, type(self).__name__)
        self.domheap = Domheap(core)  # a view of the per-CPU dommap tables: it holds no state
        # cpu -> (domid, ipa >> 21, level-2 entry) from read_second, for read_leaf.
        self._cursor: dict[int, tuple[int, int, int]] = {}
        # cpu -> (domid, ipa >> 12, va): the level-3 page read_leaf kept mapped for write_leaf.
        self._held: dict[int, tuple[int, int, int]] = {}

    # --- mapping primitives (overridden by the direct-map variant) --------------------------
    def map_pa(self, cpu: int, pa: int) -> int:
        """Map the frame holding ``pa`` on ``cpu``; return the VA of ``pa``."""
        va: int = self.domheap.map_domain_page(cpu, pa >> PAGE_SHIFT)
        return va + (pa & (PAGE_SIZE - 1))

    def unmap_va(self, cpu: int, va: int) -> None:
        """Release a mapping made by :meth:`map_pa`."""
        self.domheap.unmap_domain_page(cpu, va)
        self.core.ledger.counts["domheap_unmaps"] += 1

    def read_va(self, cpu: int, va: int) -> int:
        """Read a descriptor through ``cpu``'s hyp MMU (misses counted in the ledger)."""
        return self.core.hyp_read(cpu, va)

    def write_va(self, cpu: int, va: int, value: int) -> None:
        """Write a descriptor through ``cpu``'s hyp MMU."""
        self.core.hyp_write(cpu, va, value)

    # --- the walk ---------------------------------------------------------------------------
    def _read_pa(self, cpu: int, pa: int) -> int:
        """Map, read, unmap one p2m entry (one level visited)."""
        va = self.map_pa(cpu, pa)
        try:
            value = self.read_va(cpu, va)
        finally:
            self.unmap_va(cpu, va)
        self.core.ledger.counts["walk_p2m_reads"] += 1
        return value

    def _walk_l2(self, cpu: int, d: Domain, ipa: int) -> int:
        """Visit the root and level 2: the level-2 entry of ``ipa`` (0 if level 1 is not a
        table). Raises InvariantError on a 1GB block (log-dirty splits them at enable)."""
        l1 = self._read_pa(cpu, d.stage2.l1_pa(ipa))
        if is_block(l1):
            raise InvariantError(f"domain {d.domid}: 1GB block at IPA {ipa:#x} under log-dirty")
        if not is_table(l1):
            return 0
        return self._read_pa(cpu, (l1 & ADDR_MASK_40) + ((ipa >> SECOND_SHIFT) & 511) * 8)

    def release(self, cpu: int) -> None:
        """Drop the level-3 mapping :meth:`read_leaf` kept for a ``write_leaf`` that will not
        come (a reader that is not the log-dirty handler). No-op if none is held. Raises
        RangeError for a bad CPU."""
        self.core.check_cpu(cpu)
        self._release(cpu)

    def _release(self, cpu: int) -> None:
        held = self._held.pop(cpu, None)
        if held is not None:
            self.unmap_va(cpu, held[2])

    # --- hooks ------------------------------------------------------------------------------
    def on_disable(self, d: Domain) -> None:
        """Forget walks of ``d`` in progress."""
        for cpu in [c for c, cur in self._cursor.items() if cur[0] == d.domid]:
            del self._cursor[cpu]
        for cpu in [c for c, held in self._held.items() if held[0] == d.domid]:
            self._release(cpu)

    def on_p2m_change(self, d: Domain, level: int, ipa: int, old: int, new: int) -> None:
        """Follow a level-2 change (a split) in a walk in progress; drop it on a level-1 one."""
        for cpu, (domid, chunk, _) in list(self._cursor.items()):
            if domid != d.domid:
                continue
            if level == 2 and chunk == ipa >> SECOND_SHIFT:
                self._cursor[cpu] = (domid, chunk, new)
            elif level == 1:
                del self._cursor[cpu]

    # --- the handler's accesses -------------------------------------------------------------
    def read_second(self, cpu: int, d: Domain, ipa: int) -> int:
        """Walk root and level 2 (two map/unmap pairs); remember the result for read_leaf."""
        self._release(cpu)
        l2 = self._walk_l2(cpu, d, ipa)
        self._cursor[cpu] = (d.domid, ipa >> SECOND_SHIFT, l2)
        return l2

    def read_leaf(self, cpu: int, d: Domain, ipa: int) -> int:
        """Map the level-3 page and read the leaf (one map; the walk continues from
        read_second when it covered ``ipa``, else a full three-level walk). The page stays
        mapped when the handler will write the leaf back. Raises MappingError if level 2 is
        not a table."""
        self._release(cpu)
        cursor = self._cursor.pop(cpu, None)
        if cursor is not None and cursor[0] == d.domid and cursor[1] == ipa >> SECOND_SHIFT:
            l2 = cursor[2]
        else:
            l2 = self._walk_l2(cpu, d, ipa)
        if not is_table(l2):
            raise MappingError(f"d{d.domid}: no level-3 table maps IPA {ipa:#x}")
        va = self.map_pa(cpu, (l2 & ADDR_MASK_40) + ((ipa >> PAGE_SHIFT) & 511) * 8)
        try:
            leaf = self.read_va(cpu, va)
        except BaseException:
            self.unmap_va(cpu, va)
            raise
        self.core.ledger.counts["walk_p2m_reads"] += 1
        if _will_write(leaf):
            self._held[cpu] = (d.domid, ipa >> PAGE_SHIFT, va)
        else:
            self.unmap_va(cpu, va)
        return leaf

    def write_leaf(self, cpu: int, d: Domain, ipa: int, value: int) -> None:
        """Write the leaf through the mapping read_leaf kept, then unmap it (or walk afresh
        when there is none for ``ipa``)."""
        held = self._held.get(cpu)
        if held is None or held[0] != d.domid or held[1] != ipa >> PAGE_SHIFT:
            self.read_leaf(cpu, d, ipa)  # maps the level-3 page again (counted)
            held = self._held.get(cpu)
            if held is None:
                raise MappingError(f"d{d.domid}: leaf of IPA {ipa:#x} is not log-dirty")
        del self._held[cpu]
        try:
            self.write_va(cpu, held[2], value)
        finally:
            self.unmap_va(cpu, held[2])
        self.core.ledger.counts["walk_p2m_writes"] += 1

    def check(self) -> None:
        """Raise InvariantError if a domheap reference outlived a handler call."""
        if self._held:
            raise InvariantError(f"walk: mappings still held on cpus {sorted(self._held)}")


class DirectMapWalk(DomheapWalk):
    """The arm64 walk: every table page is already mapped by the direct map.

    ``map_domain_page`` is ``DIRECTMAP_VIRT_START + pa`` (counted as ``directmap_maps``; no
    PTE write, no TLB maintenance, nothing to unmap). Reads and writes go through a per-CPU
    AArch64 EL2 MMU (``mmus64``) whose tables map all of physical memory with 1GB blocks;
    its misses are counted as ``hyp_tlb_misses`` / ``hyp_walk_reads`` like arm32's.

    Its tables are allocated from ``core.mem`` at construction (a few frames): the
    constructor raises RangeError for a ``core`` that is not a Hypervisor, OutOfSpace when
    no frame is left.
    """

    name = "walk64"

    def __init__(self, core: Hypervisor) -> None:
        super().__init__(core)
        mem = core.mem
        self.directmap = PageTable(mem, XEN64_S1)
        start, size = mem.ram_base, mem.ram_end - mem.ram_base
        try:
            self.directmap.map(DIRECTMAP_VIRT_START + start, start, size, S1Attrs(xn=True))
        except BaseException:  # all or nothing: the root goes back
            self.directmap.free()
            raise
        capacity = core.mmus[0].tlb.capacity
        self.mmus64: list[MMU] = []
        for _ in range(core.cpus):
            mmu = MMU(mem, tlb=TLB(capacity), stale_check=core.mmus[0].stale_check)
            mmu.set_hyp(httbr=self.directmap.root, fmt=XEN64_S1)
            self.mmus64.append(mmu)

    def map_pa(self, cpu: int, pa: int) -> int:
        """``mfn_to_virt``: the direct-map VA of ``pa`` (O(1), no state)."""
        if not 0 <= pa < self.core.mem.limit:
            raise RangeError(f"direct map: PA {pa:#x} beyond physical memory")
        self.core.ledger.counts["directmap_maps"] += 1
        return DIRECTMAP_VIRT_START + pa

    def unmap_va(self, cpu: int, va: int) -> None:
        """Nothing to undo on a direct map."""

    def read_va(self, cpu: int, va: int) -> int:
        """Read through ``cpu``'s AArch64 MMU, counting its misses in the ledger."""
        mmu = self.mmus64[cpu]
        misses, reads = mmu.misses, mmu.walk_reads
        value = mmu.hyp_read64(va)
        self._count(mmu, misses, reads)
        return value

    def write_va(self, cpu: int, va: int, value: int) -> None:
        """Write through ``cpu``'s AArch64 MMU, counting its misses in the ledger."""
        mmu = self.mmus64[cpu]
        misses, reads = mmu.misses, mmu.walk_reads
        mmu.hyp_write64(va, value)
        self._count(mmu, misses, reads)

    def _count(self, mmu: MMU, misses: int, reads: int) -> None:
        if mmu.misses != misses:
            counts = self.core.ledger.counts
            counts["hyp_tlb_misses"] += mmu.misses - misses
            counts["hyp_walk_reads"] += mmu.walk_reads - reads

    def stale_hits(self) -> int:
        """Stale TLB hits recorded by the AArch64 MMUs (needs ``stale_check``)."""
        return sum(len(m.stale_hits) for m in self.mmus64)
