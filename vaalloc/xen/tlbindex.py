"""A TLB that finds a VMID's entries without scanning the whole TLB.

The log-dirty fault handler issues ``TLBIALL`` for the faulting VMID on every fault (ARMv7 has
no invalidate by IPA). :class:`vaalloc.lpae.TLB` implements invalidation by tag as a scan of
every entry, O(capacity) per fault, which alone would cap the model near 10k faults/s. This
subclass keeps, per VMID, the set of keys inserted since that VMID was last invalidated, so
``invalidate_guest(vmid=v)`` costs O(entries of v). Semantics are unchanged: the index may hold
keys already evicted (popping them is a no-op), and is pruned when it outgrows the TLB.

Workaround, local to vaalloc.xen, until the LPAE TLB indexes by VMID itself.
"""

from __future__ import annotations

from collections import defaultdict

from vaalloc.lpae.tlb import TLB, Key, TLBEntry

__all__ = ["VmidIndexedTLB"]


class VmidIndexedTLB(TLB):
    """:class:`vaalloc.lpae.tlb.TLB` plus a per-VMID key index (same behaviour, faster
    invalidation of one whole VMID)."""

    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity)
        self._by_vmid: defaultdict[int, set[Key]] = defaultdict(set)

    def insert(self, key: Key, entry: TLBEntry) -> None:
        """Cache ``entry`` (see :meth:`TLB.insert`) and index guest keys by VMID."""
        TLB.insert(self, key, entry)
        if key.__class__ is tuple and self.capacity:
            keys = self._by_vmid[key[1]]
            keys.add(key)
            if len(keys) > 2 * self.capacity:  # drop keys evicted meanwhile
                entries = self.entries
                self._by_vmid[key[1]] = {k for k in keys if k in entries}

    def invalidate_all(self) -> int:
        """Drop every entry (see :meth:`TLB.invalidate_all`)."""
        self._by_vmid.clear()
        return super().invalidate_all()

    def invalidate_guest(
        self,
        *,
        vmid: int | None = None,
        asid: int | None = None,
        va: int | None = None,
        combined: bool = True,
        stage2: bool = True,
        keep_global: bool = False,
    ) -> int:
        """As :meth:`TLB.invalidate_guest`; a whole-VMID invalidation uses the index."""
        if vmid is not None and asid is None and va is None and combined and stage2:
            entries = self.entries
            n = 0
            for key in self._by_vmid.pop(vmid, ()):
                if entries.pop(key, None) is not None:
                    n += 1
            return n
        if vmid is None and asid is None and va is None and combined and stage2:
            self._by_vmid.clear()
        return super().invalidate_guest(
            vmid=vmid,
            asid=asid,
            va=va,
            combined=combined,
            stage2=stage2,
            keep_global=keep_global,
        )
