"""``map_domain_page``: Xen 4.3's per-CPU domheap mappings on ARM32.

Each CPU owns 1024 second-level entries (``xen_dommap``) covering VA 2GB-4GB in 2MB slots. The
map is an open-addressed hash keyed by the 2MB-aligned MFN group: ``slot = (mfn >> 9) % 1024``,
probing linearly. The entry is a 2MB block whose 4 software bits ("avail") count references;
a slot with count 0 can be commandeered, a slot already mapping the same 2MB is shared while its
count is below 15. ``map_domain_page`` flushes the one 4KB VA it returns on the local CPU
(``flush_xen_data_tlb_range_va``): a TLB may still hold a 2MB entry from the slot's last owner,
and TLBIMVAH on any address inside it removes it.
"""

from __future__ import annotations

from vaalloc.errors import InvalidFree, OutOfSpace, RangeError
from vaalloc.lpae._checks import check_int, shown
from vaalloc.lpae.descriptor import ADDR_MASK_40
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.layout import (
    DOMHEAP_AVAIL_SHIFT,
    DOMHEAP_ENTRIES,
    DOMHEAP_REFCOUNT_MAX,
    DOMHEAP_VIRT_END,
    DOMHEAP_VIRT_START,
    LPAE_ENTRY_MASK,
    LPAE_SHIFT,
    PAGE_SHIFT,
    SECOND_SHIFT,
    XEN_ENTRY_ATTRS,
)

__all__ = ["Domheap"]

_AVAIL_MASK = 0xF << DOMHEAP_AVAIL_SHIFT


class Domheap:
    """``map_domain_page`` / ``unmap_domain_page`` of a :class:`~vaalloc.xen.system.Xen`.
    The constructor raises RangeError for a ``core`` that is not a Hypervisor."""

    def __init__(self, core: Hypervisor) -> None:
        self.core = check_core(core, "Domheap")

    def _entry(self, cpu: int, slot: int) -> int:
        v: int = self.core.mem.read64(self.core.pagetables.dommap_pa(cpu, slot))
        return v

    def map_domain_page(self, cpu: int, mfn: int) -> int:
        """Map frame ``mfn`` on ``cpu``; return its VA (valid on that CPU only).

        O(1) expected, O(1024) probes worst case. Raises RangeError for a bad CPU or MFN and
        OutOfSpace when every slot is busy (Xen BUG()s: callers misbehaved).
        """
        self.core.check_cpu(cpu)
        limit = self.core.mem.limit >> PAGE_SHIFT
        if isinstance(mfn, bool) or not isinstance(mfn, int) or not 0 <= mfn < limit:
            raise RangeError(
                f"map_domain_page(cpu={cpu}): MFN {shown(mfn)} is not a frame of physical "
                f"memory ({limit:#x} frames)"
            )
        slot_mfn = mfn & ~LPAE_ENTRY_MASK
        slot = (slot_mfn >> LPAE_SHIFT) % DOMHEAP_ENTRIES
        pt = self.core.pagetables
        for _ in range(DOMHEAP_ENTRIES):
            e = self._entry(cpu, slot)
            count = (e & _AVAIL_MASK) >> DOMHEAP_AVAIL_SHIFT
            if count == 0:
                new = (slot_mfn << PAGE_SHIFT) | XEN_ENTRY_ATTRS | (1 << DOMHEAP_AVAIL_SHIFT)
                pt.write_pte(pt.dommap_pa(cpu, slot), new)
                break
            if count < DOMHEAP_REFCOUNT_MAX and (e & ADDR_MASK_40) >> PAGE_SHIFT == slot_mfn:
                pt.write_pte(pt.dommap_pa(cpu, slot), e + (1 << DOMHEAP_AVAIL_SHIFT))
                break
            slot = (slot + 1) % DOMHEAP_ENTRIES
        else:
            raise OutOfSpace(f"map_domain_page(cpu={cpu}, mfn={mfn:#x}): domheap map full")
        va = DOMHEAP_VIRT_START + (slot << SECOND_SHIFT) + ((mfn & LPAE_ENTRY_MASK) << PAGE_SHIFT)
        self.core.flush_xen_va_local(cpu, va)
        self.core.ledger.add("map_domain_page")
        return va

    def unmap_domain_page(self, cpu: int, va: int) -> None:
        """Drop one reference to the slot holding ``va`` on ``cpu``.

        The entry stays valid (Xen reuses it lazily). Raises InvalidFree if ``va`` is not in
        the domheap or its slot has no reference, RangeError for a bad CPU (nothing changed).
        """
        self.core.check_cpu(cpu)
        if isinstance(va, bool) or not isinstance(va, int):
            raise InvalidFree(f"unmap_domain_page({va!r}): not a domheap address")
        if not DOMHEAP_VIRT_START <= va < DOMHEAP_VIRT_END:
            raise InvalidFree(f"unmap_domain_page({va:#x}): not a domheap address")
        slot = (va - DOMHEAP_VIRT_START) >> SECOND_SHIFT
        e = self._entry(cpu, slot)
        if not e & _AVAIL_MASK:
            raise InvalidFree(f"unmap_domain_page({va:#x}): slot {slot} on cpu {cpu} not mapped")
        pt = self.core.pagetables
        pt.write_pte(pt.dommap_pa(cpu, slot), e - (1 << DOMHEAP_AVAIL_SHIFT))

    def refcount(self, cpu: int, slot: int) -> int:
        """References held on ``cpu``'s domheap slot ``slot``. Raises RangeError for a bad CPU
        or slot."""
        self.core.check_cpu(cpu)
        check_int(slot, "refcount", "slot", 0, DOMHEAP_ENTRIES)
        return (self._entry(cpu, slot) & _AVAIL_MASK) >> DOMHEAP_AVAIL_SHIFT
