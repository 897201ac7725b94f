"""The ``partitioned`` p2m lookup: the per-domain VLPT of the thread's last message.

Every log-dirty domain owns a run of VLPT window slots, installed once at enable, so context
switch touches no slot and flushes nothing. :class:`PartitionedVLPT` implements
:class:`~vaalloc.xen.lookup.base.P2MLookup`; docs/vlpt.md derives every address.

The window is a :class:`vaalloc.alloc.RangeAllocator` over ``[128MB, 256MB)`` with 2MB granules
(one per ``xen_second`` slot), first fit, no guard; the loop slot is reserved in it at boot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvariantError, OutOfSpace, RangeError
from vaalloc.lpae._checks import check_int
from vaalloc.lpae.descriptor import is_table
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.layout import (
    FIRST_SHIFT,
    PAGE_SHIFT,
    SECOND_SHIFT,
    SECOND_SIZE,
    VLPT_FIRST_SLOT,
    VLPT_LOOP_SLOT,
    VLPT_LOOP_VA,
    VLPT_VIRT_END,
    VLPT_VIRT_START,
)
from vaalloc.xen.lookup.base import P2MLookup, leaf_view_page, slot_pages, slot_value
from vaalloc.xen.vlptmath import gb_span, second_va, slot_va, third_va, view_bases

if TYPE_CHECKING:
    from vaalloc.xen.domain import Domain

__all__ = ["PartitionedVLPT", "SlotRun", "limit_window", "new_window"]


def new_window() -> RangeAllocator:
    """The VLPT window's slot allocator, as Xen boots it: ``[128MB, 256MB)`` in 2MB granules
    (one granule = one ``xen_second`` slot), first fit, no guard (a slot is a whole table
    entry: nothing can overrun into its neighbour), the loop slot already reserved.

    First fit keeps a domain's slots one linear run, lowest first, so the window fills from
    the bottom and ``vaalloc layout`` can predict the slots the model will hand out."""
    window = RangeAllocator(
        VLPT_VIRT_START,
        VLPT_VIRT_END,
        granule=SECOND_SIZE,
        policy="first-fit",
        guard=False,
        name="vlpt",
    )
    window.reserve(VLPT_LOOP_VA, 1)  # the loop slot, installed at boot
    return window


def limit_window(lookup: PartitionedVLPT, capacity: int | None) -> None:
    """Shrink a fresh partitioned window to ``capacity`` usable slots by reserving the rest
    (the highest ones below the loop). None keeps all 63. Raises RangeError outside 1..63."""
    if not isinstance(lookup, PartitionedVLPT):
        raise RangeError(f"limit_window({lookup!r}): expected a PartitionedVLPT")
    if capacity is None:
        return
    total = lookup.window.stats().free
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= total:
        raise RangeError(f"partitioned capacity {capacity!r}: expected 1..{total} slots")
    if capacity < total:
        first_unused = lookup.window.start + capacity * lookup.window.granule
        lookup.window.reserve(first_unused, total - capacity)


@attrs.frozen
class SlotRun:
    """A domain's run of window slots: ``nr`` slots from ``first_slot`` for gigabytes
    ``first_gb ..`` of its IPA space. A plain record made by :meth:`PartitionedVLPT.reserve`:
    its constructor raises nothing and checks nothing."""

    first_slot: int
    first_gb: int
    nr: int

    @property
    def va(self) -> int:
        """Hyp VA of the first slot (start of the domain's leaf view)."""
        return slot_va(self.first_slot)

    def slots(self) -> range:
        """The ``xen_second`` indices of the run."""
        return range(self.first_slot, self.first_slot + self.nr)


class PartitionedVLPT(P2MLookup):
    """The per-domain VLPT: each log-dirty domain owns a run of ``xen_second`` window slots.

    ``third_va`` / ``second_va`` give the leaf and level-2 views; reads and writes go through
    the CPU's hyp MMU and TLB (``Xen.read_va``), and are counted as ``vlpt_reads`` /
    ``vlpt_writes``. Context switch does nothing. The constructor raises RangeError for a
    ``core`` that is not a Hypervisor.
    """

    name = "partitioned"

    def __init__(self, core: Hypervisor) -> None:
        self.core = check_core(core, "PartitionedVLPT")
        self.window = new_window()
        self.runs: dict[int, SlotRun] = {}  # domid -> run
        # domid -> (leaf_base, second_base): third_va = leaf_base + (ipa >> 12) * 8 and
        # second_va = second_base + (ipa >> 30) * 4KB + ((ipa >> 21) & 511) * 8, for an IPA
        # inside the run (the handler's IPA is in guest RAM, hence in the run).
        self._bases: dict[int, tuple[int, int]] = {}
        self._installed: set[int] = set()  # domids whose slots are live

    # --- arithmetic -------------------------------------------------------------------------
    def run(self, d: Domain) -> SlotRun:
        """The slot run of ``d``; raises RangeError if ``d`` is not a live domain or has none
        (log-dirty is off)."""
        self.core.check_domain(d)
        r = self.runs.get(d.domid)
        if r is None:
            raise RangeError(f"domain {d.domid} has no VLPT slots (log-dirty is off)")
        return r

    def third_va(self, d: Domain, ipa: int) -> int:
        """Hyp VA of the p2m leaf translating ``ipa`` (see :func:`vlptmath.third_va`).
        Raises RangeError as :meth:`run`, or for an IPA outside ``d``'s slots."""
        r = self.run(d)
        return third_va(r.first_slot, r.first_gb, r.nr, ipa)

    def second_va(self, d: Domain, ipa: int) -> int:
        """Hyp VA of the p2m level-2 entry covering ``ipa`` (via the loop slot). Raises as
        :meth:`third_va`."""
        r = self.run(d)
        return second_va(VLPT_LOOP_SLOT, r.first_slot, r.first_gb, r.nr, ipa)

    def slot_of(self, d: Domain, ipa: int) -> int:
        """The window slot showing the gigabyte of ``ipa``. Raises as :meth:`third_va`."""
        r = self.run(d)
        check_int(ipa, "slot_of", "ipa", r.first_gb << FIRST_SHIFT, (r.first_gb + r.nr) << 30)
        return r.first_slot + (ipa >> FIRST_SHIFT) - r.first_gb

    # --- hooks ------------------------------------------------------------------------------
    def reserve(self, d: Domain) -> None:
        """Carve ``d``'s consecutive slots out of the window; OutOfSpace (naming the domain,
        its size and the slots it needs; nothing changed) if no run fits."""
        first_gb, nr = gb_span(d.ram_base, d.ram_size)
        try:
            va = self.window.alloc(nr)
        except OutOfSpace:
            stats = self.window.stats()
            raise OutOfSpace(
                f"VLPT window: domain {d.domid} (RAM [{d.ram_base:#x}, {d.ram_end:#x}), "
                f"{d.ram_size:#x} bytes) needs {nr} consecutive slots; the window has "
                f"{stats.free} free, at most {stats.largest_free} in a row"
            ) from None
        first_slot = va >> SECOND_SHIFT
        self.runs[d.domid] = SlotRun(first_slot, first_gb, nr)
        self._bases[d.domid] = view_bases(VLPT_LOOP_SLOT, first_slot, first_gb)

    def on_enable(self, d: Domain) -> None:
        """Copy ``d``'s p2m first-level entries into its slots (one xen_second write each).

        No TLB maintenance: the slots were invalid, and a TLB never holds a translation fault.
        """
        r = self.run(d)
        pt = self.core.pagetables
        for k, slot in enumerate(r.slots()):
            gb = r.first_gb + k
            value = slot_value(d, gb, d.stage2.read_l1(gb << FIRST_SHIFT))
            if value:
                pt.write_second(slot, value)
        self._installed.add(d.domid)

    def on_disable(self, d: Domain) -> None:
        """Clear ``d``'s slots, flush every hyp VA that translated through them, free the run."""
        r = self.run(d)
        pt = self.core.pagetables
        for slot in r.slots():
            old = pt.read_second(slot)
            if is_table(old):
                pt.write_second(slot, 0)
                self._flush_slot(slot, old)
        self._installed.discard(d.domid)
        self.window.free(r.va)
        del self.runs[d.domid]
        del self._bases[d.domid]

    def on_p2m_change(self, d: Domain, level: int, ipa: int, old: int, new: int) -> None:
        """Keep ``d``'s slots equal to its first-level entries; flush VAs that changed.

        Level 1: rewrite the slot (a 1GB block is refused: never copied). Level 2: the leaf
        view page ``slot_va + i2 * 4KB`` changes translation; flush it if it was valid.
        A change outside the gigabytes of ``d``'s RAM has no slot: nothing to do.
        """
        if d.domid not in self._installed:
            return
        r = self.runs[d.domid]
        rel = (ipa >> FIRST_SHIFT) - r.first_gb
        if not 0 <= rel < r.nr:
            return
        slot = r.first_slot + rel
        pt = self.core.pagetables
        if level == 1:
            value = slot_value(d, ipa >> FIRST_SHIFT, new)
            was = pt.read_second(slot)
            pt.write_second(slot, value)
            if is_table(was):
                self._flush_slot(slot, was)
        elif level == 2 and is_table(old):
            self.core.flush_xen_va(leaf_view_page(slot, ipa))

    def _flush_slot(self, slot: int, old_l1: int) -> None:
        """Flush the pages that translated through ``slot`` while it held ``old_l1``."""
        for va in slot_pages(self.core.mem, slot, old_l1):
            self.core.flush_xen_va(va)

    # --- the handler's accesses -------------------------------------------------------------
    def read_second(self, cpu: int, d: Domain, ipa: int) -> int:
        """Read the level-2 entry through the loop view on ``cpu``'s MMU (``ipa`` in RAM)."""
        second_base = self._bases[d.domid][1]
        va = (
            second_base
            + ((ipa >> FIRST_SHIFT) << PAGE_SHIFT)
            + (((ipa >> SECOND_SHIFT) & 511) << 3)
        )
        self.core.ledger.counts["vlpt_reads"] += 1
        return self.core.hyp_read(cpu, va)

    def read_leaf(self, cpu: int, d: Domain, ipa: int) -> int:
        """Read the leaf through the leaf view on ``cpu``'s MMU (``ipa`` in RAM)."""
        va = self._bases[d.domid][0] + ((ipa >> PAGE_SHIFT) << 3)
        self.core.ledger.counts["vlpt_reads"] += 1
        return self.core.hyp_read(cpu, va)

    def write_leaf(self, cpu: int, d: Domain, ipa: int, value: int) -> None:
        """Write the leaf through the leaf view on ``cpu``'s MMU (``ipa`` in RAM)."""
        va = self._bases[d.domid][0] + ((ipa >> PAGE_SHIFT) << 3)
        self.core.ledger.counts["vlpt_writes"] += 1
        self.core.hyp_write(cpu, va, value)

    # --- checks -----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise InvariantError if runs overlap, leave the window, or slots differ from p2m."""
        self.window.check()
        seen: set[int] = set()
        for domid, r in self.runs.items():
            for slot in r.slots():
                if slot in seen or not VLPT_FIRST_SLOT <= slot < VLPT_LOOP_SLOT:
                    raise InvariantError(f"domain {domid}: slot {slot} overlaps or escapes")
                seen.add(slot)
            if domid not in self._installed:
                continue
            d = self.core.domains[domid]
            for k, slot in enumerate(r.slots()):
                want = d.stage2.read_l1((r.first_gb + k) << FIRST_SHIFT)
                have = self.core.pagetables.read_second(slot)
                if have != (want if is_table(want) else 0):
                    raise InvariantError(f"slot {slot} = {have:#x}, p2m L1 = {want:#x}")
