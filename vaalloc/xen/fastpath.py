"""The guest-access hot path: a stage-2-only TLB lookup and fill, done as the MMU does it.

``MMU.guest_pa`` builds a key list per probed block size and formats a message for every
permission fault, about 23us per faulting write; the log-dirty benchmark needs a whole fault
(fault, handler, retry) in about 10us. These two functions do exactly what the MMU does for a
guest whose stage 1 is off (probe the TLB for each leaf block size, smallest first; on a miss,
the MMU's own miss handler walks, caches and counts) and return the TLB entry, leaving the
permission decision to the caller, with no exception on the expected path.

They use the MMU's TLB, counters and miss handler, so the TLB ends in the same state as after
``guest_pa``; ``tests/xen/test_fastpath.py`` checks that differentially. The Xen model
uses them only when the MMU's stale detector is off (the detector's checks live inside the MMU).
Workaround, local to vaalloc.xen, until ``vaalloc.lpae`` offers an equally lean guest path.
"""

from __future__ import annotations

from vaalloc.lpae.mmu import MMU
from vaalloc.lpae.tlb import TLB, TLBEntry

__all__ = ["s2_fill", "s2_probe"]

_S2_KEY = TLB.s2_key
_ACCESS = {"read": 1, "write": 2, "exec": 4}


def s2_probe(mmu: MMU, ipa: int) -> TLBEntry | None:
    """The cached stage-2 entry translating ``ipa`` on ``mmu``, or None (a miss, not counted).

    A hit is counted (and refreshed, under LRU replacement), as in ``MMU.guest_pa``. The
    caller guarantees that a stage 2 is loaded, stage 1 is off and ``ipa`` is in range.
    """
    s2 = mmu._s2
    assert s2 is not None
    entries = mmu.tlb.entries
    vmid = s2.tag
    for shift in s2.shifts:
        key = _S2_KEY(vmid, ipa, shift)
        entry = entries.get(key)
        if entry is not None:
            if mmu.tlb.lru:  # FIFO replacement does not reorder on a hit
                entries.move_to_end(key)
            mmu.hits += 1
            return entry
    return None


def s2_fill(mmu: MMU, ipa: int, access: str) -> TLBEntry:
    """Walk stage 2 for ``ipa`` on a TLB miss, cache the leaf and return the entry.

    This is the MMU's own miss handler (``MMU._guest_miss``: counts, walk, entry layout and
    insert stay the MMU's), called without the permission check that would raise on the
    expected write-protect fault. Raises FaultError for a translation/access-flag/
    address-size fault (nothing cached).
    """
    s2 = mmu._s2
    assert s2 is not None
    return mmu._guest_miss(s2, None, ipa, _ACCESS[access], False)
