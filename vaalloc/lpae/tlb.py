"""A translation lookaside buffer: cached leaf translations, tagged like ARM's.

What an entry holds: one translation of one block (4KB page, 2MB or 1GB block; for a
two-stage entry the smaller of the two stages' blocks), its output base, its permissions, and
its tag:

* ``hyp`` entries (EL2 / PL2 stage 1): no ASID, no VMID; nG is ignored in this regime.
* guest *combined* entries (stage 1 + stage 2, VA -> PA): tagged with the VMID, and with the
  ASID when the stage-1 leaf has nG=1 (else global: they match every ASID of the VMID).
* guest *stage-2-only* entries (IPA -> PA, used when the guest's stage 1 is off): tagged with
  the VMID.  ``TLBIIPAS2`` removes these and only these: combined entries that used the same
  IPA survive it, exactly the case the architecture requires a stage-1 invalidation for.

Faults are never cached (a translation, access-flag or address-size fault leaves no entry, as
on hardware); a permission fault is raised from a cached entry.  Walk caches (intermediate
table entries) are not modelled: every miss walks from the root.

Replacement rule, chosen per TLB: ``"fifo"`` (default; round-robin: an insert into a full TLB
evicts the entry inserted longest ago, hits change nothing) or ``"lru"`` (a hit also moves the
entry to the most-recent end, and the least recently used entry is evicted).  FIFO is the
default because it costs nothing on a hit, which is the path the Xen model runs most; both are
deterministic, so a test can predict exactly which entry a fill evicts.  ``capacity=0``
disables caching (every access walks), which is how a benchmark measures the miss path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Literal

from vaalloc.errors import RangeError

__all__ = ["TLB", "TLBEntry"]

# An entry: (out_base, perm, level, descriptor, shift, s2perm, s2level, in_base, ng, low)
#   out_base: output base (PA) of the block; perm: stage-1 (or only-stage) permission mask,
#   privileged bits 2:0 and unprivileged bits 5:3; s2perm/s2level: stage-2 mask and level for
#   combined entries (-1 otherwise); in_base: the IPA base for combined entries (else -1);
#   ng: the stage-1 leaf had nG=1; low: block size - 1 (offset mask).
TLBEntry = tuple[int, int, int, int, int, int, int, int, bool, int]

Key = int | tuple[int, ...]
Kind = Literal["hyp", "guest", "s2"]

_GUEST = 1
_S2 = 2


def hyp_key(va: int, shift: int) -> int:
    """Key of a hyp entry: the block number and its size in one int."""
    return ((va >> shift) << 6) | shift


class TLB:
    """A fully associative TLB of ``capacity`` entries, FIFO or LRU replacement.

    Storage only: lookups, inserts and invalidations by tag; the :class:`~vaalloc.lpae.mmu.MMU`
    decides what to look up and the architectural names of maintenance operations.
    O(1) lookup per probed block size, O(1) insert and eviction; invalidation by address is
    O(block sizes), by tag O(entries).  Raises RangeError for a negative capacity.
    """

    def __init__(self, capacity: int = 512, *, replacement: str = "fifo") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise RangeError(f"TLB(capacity={capacity!r}): expected an integer >= 0")
        if replacement not in ("fifo", "lru"):
            raise RangeError(f"TLB(replacement={replacement!r}): expected 'fifo' or 'lru'")
        self.capacity = capacity
        self.replacement = replacement
        self.lru = replacement == "lru"
        self.entries: OrderedDict[Key, TLBEntry] = OrderedDict()
        self.evictions = 0
        self._shifts: set[int] = set()  # block sizes ever cached, for by-address invalidation
        # Indexes so that invalidation by tag costs O(entries with that tag), not O(capacity):
        # the log-dirty handler invalidates a whole VMID on every fault.
        self._hyp_keys: set[int] = set()
        self._vmid_keys: dict[int, set[Key]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return (
            f"TLB(capacity={self.capacity}, replacement={self.replacement!r}, "
            f"entries={len(self.entries)})"
        )

    def insert(self, key: Key, entry: TLBEntry) -> None:
        """Cache ``entry`` under ``key``, evicting the oldest (FIFO) or least recently used
        (LRU) entry first if full.  O(1)."""
        if not self.capacity:
            return
        entries = self.entries
        if key in entries:
            if self.lru:
                entries.move_to_end(key)
            entries[key] = entry
            return
        if len(entries) >= self.capacity:
            self.evict()
        entries[key] = entry
        self._shifts.add(entry[4])
        if isinstance(key, int):
            self._hyp_keys.add(key)
        else:
            self._vmid_keys.setdefault(key[1], set()).add(key)

    def evict(self) -> None:
        """Drop the next victim (oldest / least recently used entry).  O(1)."""
        key, _ = self.entries.popitem(last=False)
        self.evictions += 1
        self._unindex(key)

    def _unindex(self, key: Key) -> None:
        if isinstance(key, int):
            self._hyp_keys.discard(key)
        else:
            keys = self._vmid_keys.get(key[1])
            if keys is not None:
                keys.discard(key)

    # -- keys -------------------------------------------------------------------------------

    @staticmethod
    def guest_key(vmid: int, asid: int, va: int, shift: int) -> tuple[int, ...]:
        """Key of a combined entry; ``asid=-1`` for a global (nG=0) entry."""
        return (_GUEST, vmid, asid, shift, va >> shift)

    @staticmethod
    def s2_key(vmid: int, ipa: int, shift: int) -> tuple[int, ...]:
        """Key of a stage-2-only entry."""
        return (_S2, vmid, shift, ipa >> shift)

    # -- invalidation -----------------------------------------------------------------------

    def _drop(self, keys: list[Key]) -> int:
        entries = self.entries
        for key in keys:
            del entries[key]
            self._unindex(key)
        return len(keys)

    def invalidate_all(self) -> int:
        """Drop every entry; return how many."""
        n = len(self.entries)
        self.entries.clear()
        self._hyp_keys.clear()
        self._vmid_keys.clear()
        return n

    def invalidate_hyp(self, va: int | None = None) -> int:
        """Drop hyp entries (covering ``va`` if given, any size).  O(hyp entries) for all,
        O(block sizes) for one address."""
        if va is None:
            return self._drop(list(self._hyp_keys))
        keys = [hyp_key(va, shift) for shift in self._shifts]
        return self._drop([key for key in keys if key in self.entries])

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
        """Drop guest entries matching every given criterion.  O(entries of the VMID) when
        ``vmid`` is given, O(guest entries) otherwise.

        ``vmid`` None = all VMIDs; ``asid`` given = non-global entries of that ASID plus, unless
        ``keep_global``, global ones (TLBIMVA semantics); ``va`` = entries whose block covers
        it (a VA for combined entries, an IPA for stage-2-only ones); ``combined``/``stage2``
        select the two kinds of guest entries."""

        def match(key: Key) -> bool:
            if isinstance(key, int):
                return False
            kind = key[0]
            if kind == _GUEST:
                if not combined:
                    return False
                _, k_vmid, k_asid, shift, block = key
                if asid is not None and k_asid != asid and (keep_global or k_asid != -1):
                    return False
            else:
                if not stage2:
                    return False
                _, k_vmid, shift, block = key
            if vmid is not None and k_vmid != vmid:
                return False
            return va is None or va >> shift == block

        if vmid is None:
            candidates: list[Key] = [k for keys in self._vmid_keys.values() for k in keys]
        else:
            candidates = list(self._vmid_keys.get(vmid, ()))
        return self._drop([key for key in candidates if match(key)])

    def keys(self) -> Iterator[Key]:
        """Keys of the cached entries, next victim first."""
        return iter(self.entries)
