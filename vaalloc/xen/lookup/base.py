"""The interface every p2m lookup strategy implements: :class:`P2MLookup`.

The log-dirty fault handler must read a guest's level-2 p2m entry and leaf, and write the leaf
back, from Xen. How it reaches them is the question the xen-devel thread argues about; each
answer is a strategy behind this one interface (the per-domain VLPT, a window rewritten at
context switch, a ``map_domain_page`` walk), so the rest of the model calls the same hooks at
the same moments and one cost ledger compares them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaalloc.errors import InvariantError
from vaalloc.lpae.descriptor import ADDR_MASK_40, is_block, is_table
from vaalloc.xen.layout import PAGE_SIZE, SECOND_SHIFT, VLPT_LOOP_SLOT
from vaalloc.xen.vlptmath import loop_page_va, slot_va

if TYPE_CHECKING:
    from vaalloc.lpae.memory import PhysicalMemory
    from vaalloc.xen.domain import Domain

__all__ = ["P2MLookup", "leaf_view_page", "slot_pages", "slot_value"]


def slot_value(d: Domain, gb: int, l1: int) -> int:
    """What a VLPT window slot holds for ``d``'s p2m first-level entry ``l1`` (gigabyte ``gb``
    of its IPA space): the entry itself when it is a table, 0 when it is invalid.  A 1GB block
    is never copied: read through ``xen_second`` it would be a 2MB hyp block mapping guest RAM
    into Xen (log-dirty splits them at enable), so one here is a broken invariant.

    Raises InvariantError for a 1GB block."""
    if is_block(l1):
        raise InvariantError(f"domain {d.domid}: refusing to copy the 1GB block at GB {gb}")
    return l1 if is_table(l1) else 0


def slot_pages(mem: PhysicalMemory, slot: int, l1: int) -> list[int]:
    """Hyp VAs that translate through window ``slot`` while it holds the table entry ``l1``:
    the leaf-view pages whose p2m level-2 entry is a table, then the slot's alias page under
    the loop (its second-level view). These are what a rewrite of the slot must flush. Reads
    the level-2 table ``l1`` points at (512 entries)."""
    base = slot_va(slot)
    l2 = mem.read_table(l1 & ADDR_MASK_40)
    pages = [base + i2 * PAGE_SIZE for i2, e in enumerate(l2) if is_table(e)]
    pages.append(loop_page_va(VLPT_LOOP_SLOT, slot))
    return pages


def leaf_view_page(slot: int, ipa: int) -> int:
    """Hyp VA of the leaf-view page of window ``slot`` (showing ``ipa``'s gigabyte) that holds
    ``ipa``'s level-3 entries: it changes translation when ``ipa``'s level-2 entry does."""
    return slot_va(slot) + ((ipa >> SECOND_SHIFT) & 511) * PAGE_SIZE


class P2MLookup:
    """Interface of a p2m lookup strategy for the fault handler (all hooks default to no-op).

    * ``reserve(d)`` before anything changes at enable: claim resources, may raise
      OutOfSpace (then nothing changed);
    * ``on_enable(d)`` / ``on_disable(d)``: install / remove what the strategy needs;
    * ``on_context_switch(cpu, prev, next)``: called by ``context_switch``;
    * ``on_p2m_change(d, level, ipa, old, new)``: a level-1/2 p2m entry of a tracked domain
      changed (memory already holds ``new``);
    * ``read_second(cpu, d, ipa)`` / ``read_leaf(cpu, d, ipa)`` / ``write_leaf``: the handler's
      accesses to the level-2 entry and the leaf, as that CPU would make them.
    """

    name = "abstract"

    def reserve(self, d: Domain) -> None:
        """Claim what enable needs for ``d``; raise (changing nothing) if impossible."""

    def on_enable(self, d: Domain) -> None:
        """Install the lookup for ``d`` (after :meth:`reserve`)."""

    def on_disable(self, d: Domain) -> None:
        """Remove the lookup for ``d`` and release what :meth:`reserve` claimed."""

    def on_context_switch(self, cpu: int, prev: Domain | None, next_: Domain | None) -> None:
        """React to ``cpu`` switching from ``prev`` to ``next_``."""

    def on_p2m_change(self, d: Domain, level: int, ipa: int, old: int, new: int) -> None:
        """React to a level-1/2 entry of tracked domain ``d`` changing."""

    def read_second(self, cpu: int, d: Domain, ipa: int) -> int:
        """The level-2 p2m entry covering ``ipa``."""
        raise NotImplementedError

    def read_leaf(self, cpu: int, d: Domain, ipa: int) -> int:
        """The level-3 p2m entry translating ``ipa`` (level 2 must be a table)."""
        raise NotImplementedError

    def write_leaf(self, cpu: int, d: Domain, ipa: int, value: int) -> None:
        """Store the level-3 p2m entry translating ``ipa``."""
        raise NotImplementedError
