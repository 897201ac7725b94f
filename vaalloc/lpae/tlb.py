"""A translation lookaside buffer: cached leaf translations, tagged like ARM's.

What an entry holds (:class:`TLBEntry`): one translation of one block (4KB page, 2MB or 1GB
block; for a two-stage entry the smaller of the two stages' blocks), its output base and its
permissions; where it is filed says its tag:

* ``hyp`` entries (EL2 / PL2 stage 1): no ASID, no VMID; nG is ignored in this regime.
* guest *combined* entries (stage 1 + stage 2, VA -> PA): tagged with the VMID, and with the
  ASID when the stage-1 leaf has nG=1 (else global: they match every ASID of the VMID).
* guest *stage-2-only* entries (IPA -> PA, used when the guest's stage 1 is off): tagged with
  the VMID.  ``TLBIIPAS2`` removes these and only these: combined entries that used the same
  IPA survive it, exactly the case the architecture requires a stage-1 invalidation for.

Faults are never cached (a translation, access-flag or address-size fault leaves no entry, as
on hardware); a permission fault is raised from a cached entry.  Walk caches (intermediate
table entries) are not modelled: every miss walks from the root.

**Data layout.**  Entries are filed in *buckets*, one per (kind, VMID, ASID, block size): a
bucket is a dict from block number (``address >> shift``) to entry.  A lookup therefore costs
one shift and one dict probe per block size, with a key that is a small int (an int that packs
every tag costs three more operations and hashes a multi-digit int; a tuple key costs a tuple
build and hash).  A real TLB is organised the same way: per page size, indexed by the address
bits above it, the tag compared on a hit.  A bucket lives as long as the TLB (invalidation
empties it in place), so a translation regime binds its buckets' ``get`` once
(:mod:`vaalloc.lpae.regime`).

Every entry also has one int *key*, :func:`tlb_key` (``block << 41 | bucket id``, the bucket
id packing kind, VMID, ASID and size, see :func:`bucket_id`), the one place the tag layout is
written: it orders replacement and names an entry in :attr:`TLB.entries`.

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
from typing import Final

from vaalloc.errors import RangeError

__all__ = [
    "BLOCK_SHIFT",
    "GUEST",
    "HYP",
    "S2",
    "TLB",
    "TLBEntry",
    "bucket_id",
    "key_fields",
    "tlb_key",
]

#: Entry kinds, the low two bits of a bucket id.
HYP: Final = 0
GUEST: Final = 1  # combined stage 1 + stage 2
S2: Final = 2  # stage 2 only (guest stage 1 off)

_VMID_SHIFT = 2  # 16-bit VMID
_ASID_SHIFT = 18  # 17-bit field: 0 = global / not tagged, asid + 1 otherwise
_SIZE_SHIFT = 35  # 6 bits: log2 of the block size
#: Where the block number starts in a key (above every bucket-id field).
BLOCK_SHIFT: Final = 41
_BUCKET_MASK = (1 << BLOCK_SHIFT) - 1


def bucket_id(kind: int, shift: int, vmid: int = 0, asid: int | None = None) -> int:
    """The id of the bucket holding entries of ``kind``, block size ``1 << shift``, tagged
    ``vmid`` and (non-global combined entries only) ``asid``; None or -1: untagged."""
    asid_field = 0 if asid is None or asid < 0 else asid + 1
    return shift << _SIZE_SHIFT | asid_field << _ASID_SHIFT | vmid << _VMID_SHIFT | kind


def tlb_key(kind: int, addr: int, shift: int, vmid: int = 0, asid: int | None = None) -> int:
    """The key of the entry of ``kind`` for the block of ``1 << shift`` bytes holding ``addr``
    (a VA, or an IPA for :data:`S2`), tagged as :func:`bucket_id` says."""
    return (addr >> shift) << BLOCK_SHIFT | bucket_id(kind, shift, vmid, asid)


def key_fields(key: int) -> tuple[int, int, int | None, int, int]:
    """``(kind, vmid, asid, shift, block)`` of a key (or a bucket id, block 0); ``asid`` is
    None for an untagged entry."""
    asid_field = (key >> _ASID_SHIFT) & 0x1FFFF
    return (
        key & 3,
        (key >> _VMID_SHIFT) & 0xFFFF,
        asid_field - 1 if asid_field else None,
        (key >> _SIZE_SHIFT) & 63,
        key >> BLOCK_SHIFT,
    )


class TLBEntry:
    """One cached translation: ``pa = base | (addr & low)``.  Never changed once made.

    base: output address of the block; low: block size - 1; perm: permission mask of the leaf
    (privileged read/write/exec in bits 2:0, unprivileged in 5:3; for a stage-2-only entry both
    halves are the stage-2 permissions); level: the leaf's level; descriptor: the raw leaf;
    shift: log2 of the block size; s2perm / s2level: stage 2's mask and level for a combined
    entry (-1 otherwise, when ``perm`` already says everything); ipa_base: the IPA of the block
    for a combined entry (-1 otherwise).

    A class with slots rather than a named tuple: a hit reads ``perm``, ``base`` and ``low``,
    and a slot read is specialised by the interpreter where a tuple subclass's is not.
    """

    __slots__ = (
        "base",
        "descriptor",
        "ipa_base",
        "level",
        "low",
        "perm",
        "s2level",
        "s2perm",
        "shift",
        "stamp",
    )

    def __init__(
        self,
        base: int,
        low: int,
        perm: int,
        level: int,
        descriptor: int,
        shift: int,
        s2perm: int = -1,
        s2level: int = -1,
        ipa_base: int = -1,
    ) -> None:
        self.base = base
        self.low = low
        self.perm = perm
        self.level = level
        self.descriptor = descriptor
        self.shift = shift
        self.s2perm = s2perm
        self.s2level = s2level
        self.ipa_base = ipa_base
        self.stamp = (
            0  # the TLB's bookkeeping (its place in the replacement order), not the translation
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TLBEntry):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        body = ", ".join(f"{name}={getattr(self, name):#x}" for name in _FIELDS[:2])
        rest = ", ".join(f"{name}={getattr(self, name)}" for name in _FIELDS[2:])
        return f"TLBEntry({body}, {rest})"


_FIELDS = ("base", "low", "perm", "level", "descriptor", "shift", "s2perm", "s2level", "ipa_base")

#: A bucket: block number -> entry.
Bucket = dict[int, TLBEntry]


class TLB:
    """A fully associative TLB of ``capacity`` entries, FIFO or LRU replacement.

    Storage only: lookups, inserts and invalidations by tag; the :class:`~vaalloc.lpae.mmu.MMU`
    decides what to look up and the architectural names of maintenance operations.

    ==============================  ===================================================
    lookup (per probed block size)  O(1): one dict probe, nothing written on a FIFO hit
    fill, with its eviction         O(1)
    LRU refresh of a hit            O(1)
    invalidate by VMID (TLBIALL)    O(entries of the VMID): its buckets emptied in place
    invalidate by address           O(buckets of the kind)
    everything else                 O(entries)
    ==============================  ===================================================

    **Replacement order** is an ordered dict from each entry's *stamp* (a fill counter, a small
    int) to where the entry is filed, oldest first: a fill appends, an eviction pops the oldest,
    an LRU hit moves the entry's stamp to the young end, and an invalidation deletes the stamps
    of the entries it drops.  No search, and nothing to clean up later.

    Raises RangeError for a negative capacity or an unknown replacement rule.
    """

    def __init__(self, capacity: int = 512, *, replacement: str = "fifo") -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise RangeError(f"TLB(capacity={capacity!r}): expected an integer >= 0")
        if replacement not in ("fifo", "lru"):
            raise RangeError(f"TLB(replacement={replacement!r}): expected 'fifo' or 'lru'")
        self.capacity = capacity
        self.replacement = replacement
        self.lru = replacement == "lru"
        self.evictions = 0
        self._buckets: dict[int, Bucket] = {}  # bucket id -> bucket, kept for the TLB's life
        self._order: OrderedDict[int, tuple[int, int]] = OrderedDict()  # stamp -> (bid, block)
        self._stamp = 0
        # Bucket ids by VMID, so that invalidation by VMID costs O(entries with that VMID):
        # the log-dirty handler invalidates a whole VMID on every fault.
        self._by_vmid: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return (
            f"TLB(capacity={self.capacity}, replacement={self.replacement!r}, "
            f"entries={len(self._order)})"
        )

    # -- buckets ------------------------------------------------------------------------------

    def bucket(self, bid: int) -> Bucket:
        """The bucket ``bid`` (see :func:`bucket_id`), made empty on first use.  The same dict
        for the TLB's whole life: a lookup may bind its ``get`` once.  Read it, never write it
        (use :meth:`fill` and the invalidations, which keep the replacement order)."""
        bucket = self._buckets.get(bid)
        if bucket is None:
            bucket = self._buckets[bid] = {}
            if bid & 3 != HYP:
                self._by_vmid.setdefault((bid >> _VMID_SHIFT) & 0xFFFF, []).append(bid)
        return bucket

    def lookup(self, key: int) -> TLBEntry | None:
        """The entry filed under ``key`` (:func:`tlb_key`), or None.  Counts nothing."""
        bucket = self._buckets.get(key & _BUCKET_MASK)
        return None if bucket is None else bucket.get(key >> BLOCK_SHIFT)

    @property
    def entries(self) -> dict[int, TLBEntry]:
        """Every entry by key, next victim first: a snapshot for tests and tools.  O(n)."""
        buckets = self._buckets
        return {
            block << BLOCK_SHIFT | bid: buckets[bid][block] for bid, block in self._order.values()
        }

    def keys(self) -> Iterator[int]:
        """Keys of the cached entries, next victim first."""
        return iter(list(self.entries))

    # -- fill and replacement -----------------------------------------------------------------

    def insert(self, key: int, entry: TLBEntry) -> None:
        """Cache ``entry`` under ``key`` (:func:`tlb_key`): :meth:`fill` by key."""
        self.fill(key & _BUCKET_MASK, key >> BLOCK_SHIFT, entry)

    def fill(self, bid: int, block: int, entry: TLBEntry) -> None:
        """Cache ``entry`` for block number ``block`` in bucket ``bid``, evicting the oldest
        (FIFO) or least recently used (LRU) entry first if full; an entry already filed there
        is replaced and the new one is the youngest.  O(1)."""
        if not self.capacity:
            return
        bucket = self._buckets.get(bid)
        if bucket is None:
            bucket = self.bucket(bid)
        order = self._order
        old = bucket.get(block)
        if old is not None:
            del order[old.stamp]
        elif len(order) >= self.capacity:
            stamp, (victim_bid, victim_block) = order.popitem(False)
            del self._buckets[victim_bid][victim_block]
            self.evictions += 1
        self._stamp = stamp = self._stamp + 1
        entry.stamp = stamp
        bucket[block] = entry
        order[stamp] = (bid, block)

    def touch(self, key: int) -> None:
        """Note a hit on ``key`` for LRU replacement (FIFO ignores hits).  O(1)."""
        entry = self.lookup(key)
        if entry is not None:
            self.refresh(key & _BUCKET_MASK, key >> BLOCK_SHIFT, entry)

    def refresh(self, bid: int, block: int, entry: TLBEntry) -> None:
        """Note a hit on ``entry`` (filed at ``bid``, ``block``) for LRU replacement: it
        becomes the youngest.  FIFO ignores hits.  O(1)."""
        if self.lru:
            self._order.move_to_end(entry.stamp)

    def evict(self) -> None:
        """Drop the next victim (oldest / least recently used entry).  O(1)."""
        _, (bid, block) = self._order.popitem(False)
        del self._buckets[bid][block]
        self.evictions += 1

    # -- invalidation -----------------------------------------------------------------------

    def _empty(self, bucket: Bucket) -> int:
        order = self._order
        for entry in bucket.values():
            del order[entry.stamp]
        n = len(bucket)
        bucket.clear()
        return n

    def invalidate_all(self) -> int:
        """Drop every entry; return how many."""
        n = len(self._order)
        for bucket in self._buckets.values():
            bucket.clear()
        self._order.clear()
        return n

    def invalidate_hyp(self, va: int | None = None) -> int:
        """Drop hyp entries (covering ``va`` if given, any size).  O(hyp buckets), plus the
        entries dropped."""
        removed = 0
        for bid, bucket in self._buckets.items():
            if bid & 3 != HYP or not bucket:
                continue
            if va is None:
                removed += self._empty(bucket)
                continue
            entry = bucket.pop(va >> ((bid >> _SIZE_SHIFT) & 63), None)
            if entry is not None:
                del self._order[entry.stamp]
                removed += 1
        return removed

    def invalidate_vmid(self, vmid: int) -> int:
        """Drop every guest entry of ``vmid``, combined and stage-2-only (TLBIALL from hyp):
        its buckets emptied in place, O(entries of the VMID)."""
        removed = 0
        buckets = self._buckets
        for bid in self._by_vmid.get(vmid, ()):
            bucket = buckets[bid]
            if bucket:
                removed += self._empty(bucket)
        return removed

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
        """Drop guest entries matching every given criterion.  O(buckets of the VMID) when
        ``vmid`` is given, O(guest buckets) otherwise, plus the entries dropped.

        ``vmid`` None = all VMIDs; ``asid`` given = non-global entries of that ASID plus, unless
        ``keep_global``, global ones (TLBIMVA semantics); ``va`` = entries whose block covers
        it (a VA for combined entries, an IPA for stage-2-only ones); ``combined``/``stage2``
        select the two kinds of guest entries."""
        if vmid is not None and asid is None and va is None and combined and stage2:
            return self.invalidate_vmid(vmid)
        if vmid is None:
            bids = [b for group in self._by_vmid.values() for b in group]
        else:
            bids = list(self._by_vmid.get(vmid, ()))
        removed = 0
        for bid in bids:
            bucket = self._buckets[bid]
            if not bucket:
                continue
            kind, _vmid, b_asid, shift, _ = key_fields(bid)
            if not (combined if kind == GUEST else stage2):
                continue
            # TLBIMVA semantics: another ASID's entry survives; a global one too if kept.
            other_asid = kind == GUEST and asid is not None and b_asid != asid
            if other_asid and (keep_global or b_asid is not None):
                continue
            if va is None:
                removed += self._empty(bucket)
                continue
            entry = bucket.pop(va >> shift, None)
            if entry is not None:
                del self._order[entry.stamp]
                removed += 1
        return removed
