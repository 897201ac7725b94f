"""Log-dirty mode: write-protect guest RAM, catch the writes, report and re-arm.

The state machine and the TLB maintenance are documented in docs/vlpt.md. In short:

* ``enable``: reserve VLPT slots (OutOfSpace changes nothing), split 1GB blocks, install the
  slots, write-protect every RAM leaf (type ``ram_rw`` -> ``ram_logdirty``), one ``TLBIALLIS``
  for the domain's VMID.
* the fault handler (stage-2 permission fault on a guest write): reads the level-2 entry through
  the second-level view; a ``ram_logdirty`` 2MB block is split into 512 write-protected pages
  (the written page alone becomes dirty); reads the leaf through the leaf view, writes it back
  ``ram_rw`` + writable through the same VA, records the frame, local ``TLBIALL`` (ARMv7 has no
  invalidate by IPA).
* ``peek(clean=True)``: returns the dirty frames and re-protects exactly those, then one
  ``TLBIALLIS``.
* ``disable``: every RAM leaf back to ``ram_rw``, slots removed (hyp flushes), ``TLBIALLIS``.

The dirty set beside the p2m is an index, not the truth: :meth:`LogDirty.scan` derives the same
set from the p2m types, and the tests keep the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vaalloc.errors import LogDirtyError, MappingError, OutOfSpace, RangeError
from vaalloc.lpae._checks import check_bool
from vaalloc.lpae.descriptor import ADDR_MASK_40, S2AP_WRITE, is_block, is_table
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.layout import (
    LPAE_ENTRY_MASK,
    P2M_LOGDIRTY_TYPE_BITS,
    P2M_RAM_RW,
    P2M_RW_TYPE_BITS,
    P2M_TYPE_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    SECOND_SHIFT,
)
from vaalloc.xen.lookup.base import P2MLookup
from vaalloc.xen.p2m import (
    leaf_to_logdirty,
    leaf_to_rw,
    p2m_type,
)
from vaalloc.xen.vlptmath import gb_span

if TYPE_CHECKING:
    from vaalloc.xen.domain import Domain

__all__ = ["LogDirty"]

#: peek(clean=True) switches to a whole-p2m pass when dirty pages exceed RAM / this.
_BULK_CLEAN_FRACTION = 8


class LogDirty:
    """Log-dirty operations (``xen.logdirty``), over the core and the p2m lookup strategy.
    The constructor raises RangeError for a ``core`` that is not a Hypervisor or a
    ``lookup`` that is not a P2MLookup."""

    def __init__(self, core: Hypervisor, lookup: P2MLookup) -> None:
        self.core = check_core(core, "LogDirty")
        if not isinstance(lookup, P2MLookup):
            raise RangeError(f"LogDirty(lookup={lookup!r}): expected a P2MLookup")
        self.lookup = lookup

    # --- state changes ----------------------------------------------------------------------
    def enable(self, d: Domain) -> None:
        """Start tracking ``d``'s writes.

        All or nothing: first every frame enable and the fault path will need (a level-2
        table per 1GB block to split, one split frame per 2MB block, see
        :class:`~vaalloc.xen.p2m.P2M`), then the strategy's resources (VLPT slots), and only
        then a change. Raises RangeError for a dead domain, LogDirtyError if already
        tracking, OutOfSpace (naming the domain and its size) if the frames or the VLPT
        window's slots do not suffice; nothing changed in any of those cases. Cost: one pass
        over the p2m tables, ``nr_slots`` xen_second writes, one TLBIALLIS.
        """
        self.core.check_domain(d)
        if d.logdirty:
            raise LogDirtyError(f"log-dirty already enabled on domain {d.domid}")
        stage2 = d.stage2
        first_gb, nr = gb_span(d.ram_base, d.ram_size)
        gbs = [gb for gb in range(first_gb, first_gb + nr) if is_block(stage2.read_l1(gb << 30))]
        blocks = stage2.tracked_blocks()
        free = self.core.mem.frames_free
        if len(gbs) + blocks > free:
            raise OutOfSpace(
                f"log-dirty on domain {d.domid} (RAM {d.ram_size:#x} bytes) needs "
                f"{len(gbs) + blocks} frames for splits, {free} are free"
            )
        tables: list[int] = []
        try:
            for _ in gbs:
                tables.append(stage2.table.new_table(2))
            stage2.reserve_split_frames(blocks)
        except BaseException:
            for table in reversed(tables):
                stage2.table.free_table(table)
            raise
        lookup = self.lookup
        try:
            lookup.reserve(d)
        except BaseException:
            stage2.release_split_reserve()
            for table in reversed(tables):
                stage2.table.free_table(table)
            raise
        # Nothing below runs out of anything.
        for gb, table in zip(gbs, tables, strict=True):
            stage2.split_gb(gb << 30, table)
        if gbs:
            self.core.flush_guest_all(d)
        try:
            lookup.on_enable(d)
        except BaseException:  # pragma: no cover - an invariant broken by hand
            # Give the slots back (a 1GB split already done stays: same translations).
            lookup.on_disable(d)
            stage2.release_split_reserve()
            raise
        stage2.protect_all()
        d.dirty = set()
        d.logdirty = True
        self.core.flush_guest_all(d)

    def disable(self, d: Domain) -> None:
        """Stop tracking: RAM leaves writable again, slots removed, dirty set dropped, split
        frames given back.

        Split superpages stay split. Raises RangeError for a dead domain, LogDirtyError when
        not tracking.
        """
        self.core.check_domain(d)
        if not d.logdirty:
            raise LogDirtyError(f"log-dirty is not enabled on domain {d.domid}")
        d.stage2.unprotect_all()
        self.lookup.on_disable(d)
        d.stage2.release_split_reserve()
        d.logdirty = False
        d.dirty = set()
        self.core.flush_guest_all(d)

    # --- reporting --------------------------------------------------------------------------
    def peek(self, d: Domain, clean: bool = True) -> set[int]:
        """Guest frame numbers (``ipa >> 12``) written since the last clean.

        With ``clean``, write-protects exactly those pages again and issues one TLBIALLIS:
        grouped per level-3 table, O(dirty pages), or, when more than 1/8 of RAM is dirty, one
        bulk pass over the leaf tables, O(RAM) with a small constant. Raises RangeError for a
        dead domain or a ``clean`` that is not a bool, LogDirtyError when not tracking.
        """
        self.core.check_domain(d)
        check_bool(clean, "peek", "clean")
        if not d.logdirty:
            raise LogDirtyError(f"peek: log-dirty is not enabled on domain {d.domid}")
        dirty = d.dirty
        if not clean:
            return set(dirty)
        d.dirty = set()
        if len(dirty) * _BULK_CLEAN_FRACTION >= d.ram_size >> PAGE_SHIFT:
            # Most of RAM is dirty: one bulk pass over every leaf table is cheaper than
            # grouping the frames. While tracking, the ram_rw leaves are exactly the dirty
            # ones (the invariant Xen.check verifies), so protect_all re-arms the same set.
            d.stage2.protect_all()
            self.core.flush_guest_all(d)
        elif dirty:
            self._reprotect(d, dirty)
            self.core.flush_guest_all(d)
        return dirty

    def _reprotect(self, d: Domain, gfns: Iterable[int]) -> None:
        """Write-protect the leaves of ``gfns`` (dirty pages: 4KB leaves of type ram_rw)."""
        mem = self.core.mem
        writes = 0
        shift = SECOND_SHIFT - PAGE_SHIFT
        buckets: dict[int, list[int]] = {}
        for gfn in gfns:
            bucket = buckets.get(gfn >> shift)
            if bucket is None:
                buckets[gfn >> shift] = [gfn]
            else:
                bucket.append(gfn)
        for chunk, group in buckets.items():
            l3 = d.stage2.l3_pa(chunk << SECOND_SHIFT)
            if l3 is None:
                continue  # RAM removed since the write
            table = l3 & ~(PAGE_SIZE - 1)
            entries = mem.read_table(table)
            for gfn in group:
                i = gfn & LPAE_ENTRY_MASK
                e = entries[i]
                new = leaf_to_logdirty(e)
                if new != e:
                    entries[i] = new
                    writes += 1
            mem.write_table(table, entries)
        self.core.ledger.add("p2m_pte_writes", writes)

    def scan(self, d: Domain) -> set[int]:
        """The dirty set as the p2m says it: frames of 4KB leaves of type ``ram_rw`` (plus every
        frame of a ``ram_rw`` 2MB block) while tracking. O(RAM); for tests and tools. Raises
        RangeError for a dead domain."""
        self.core.check_domain(d)
        if not d.logdirty:
            return set()
        out: set[int] = set()
        for ipa, size, desc in d.stage2.leaves():
            if p2m_type(desc) == P2M_RAM_RW:
                out.update(range(ipa >> PAGE_SHIFT, (ipa + size) >> PAGE_SHIFT))
        return out

    # --- the fault handler ------------------------------------------------------------------
    def handle_fault(self, cpu: int, d: Domain, ipa: int) -> None:
        """Resolve a stage-2 write permission fault of ``d`` at ``ipa`` taken on ``cpu``.

        Reads go through the VLPT on ``cpu``'s MMU (second-level view first, so a superpage is
        never looked up in the leaf view, where it would fault). Raises MappingError if the
        fault is not a log-dirty one (e.g. a ``ram_ro`` page): nothing is changed then.
        """
        lookup = self.lookup
        ledger = self.core.ledger
        l2 = lookup.read_second(cpu, d, ipa)
        if is_table(l2):
            pass  # the common case: a level-3 table below
        elif is_block(l2):
            if l2 & P2M_TYPE_MASK == P2M_LOGDIRTY_TYPE_BITS:
                # Break-before-make: the 2MB entry may sit in any CPU's TLB, so it goes from
                # every TLB between the invalid entry and the new table.
                d.stage2.split_block(ipa, lambda: self.core.flush_guest_all(d))
                ledger.add("superpage_splits")
            elif l2 & S2AP_WRITE:
                ledger.add("spurious_faults")
                self.core.flush_guest_local(cpu, d)
                return
            else:
                raise MappingError(f"d{d.domid}: write to read-only 2MB block at {ipa:#x}")
        else:
            raise MappingError(f"d{d.domid}: no p2m mapping at IPA {ipa:#x}")
        leaf = lookup.read_leaf(cpu, d, ipa)
        kind = leaf & P2M_TYPE_MASK
        if kind == P2M_LOGDIRTY_TYPE_BITS and leaf & 1:
            lookup.write_leaf(cpu, d, ipa, leaf_to_rw(leaf))
            ledger.counts["p2m_pte_writes"] += 1
            d.dirty.add(ipa >> PAGE_SHIFT)
        elif kind == P2M_RW_TYPE_BITS and leaf & S2AP_WRITE:
            ledger.add("spurious_faults")
        else:
            raise MappingError(
                f"d{d.domid}: write fault at IPA {ipa:#x} on a non-log-dirty leaf {leaf:#x} "
                f"(p2m type {p2m_type(leaf)}, table {leaf & ADDR_MASK_40:#x})"
            )
        self.core.flush_guest_local(cpu, d)
