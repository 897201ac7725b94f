"""VLPT address arithmetic: where a p2m entry appears in Xen's virtual address space.

Pure functions of integers, no state, so a C port can copy them into a header and a test can
check them against a real walk.  The derivation (docs/vlpt.md has the pictures):

*Leaf view.*  Window slot ``s`` (a ``xen_second`` index, VA ``s << 21``) holds a copy of the
p2m first-level entry for one gigabyte ``g`` of IPA.  Xen's hyp walker takes
``xen_pgtable[va >> 30]`` to ``xen_second`` page 0, reads slot ``s`` as a level-2 *table* and
so uses the p2m level-2 page as its level-3 table; index ``(va >> 12) & 511`` there is a p2m
level-2 *table* descriptor, which at level 3 reads as a *page*: the p2m level-3 table.  The
page offset ``va & 0xfff`` then selects the leaf.  Hence, with ``i2 = (ipa >> 21) & 511`` and
``i3 = (ipa >> 12) & 511``::

    third_va = (s << 21) + i2 * 4096 + i3 * 8 = (s << 21) + ((ipa - (g << 30)) >> 12) * 8

*Second-level view.*  The loop slot ``L`` holds a table entry pointing at ``xen_second``
page 0 itself.  For ``va = (L << 21) + k * 4096``, the walker reads ``xen_second`` page 0 as
its level-3 table and entry ``k`` as a page; for a window slot ``k = s`` that entry is the copied
p2m first-level table descriptor, i.e. the page is the p2m level-2 table.  Hence::

    second_va = (L << 21) + s * 4096 + i2 * 8

A p2m level-2 *block* (0b01) read at hyp level 3 is an invalid descriptor, so the leaf view
faults inside a superpage: the fault handler must read the second-level view first.
"""

from __future__ import annotations

from vaalloc.errors import RangeError
from vaalloc.lpae._checks import check_int
from vaalloc.xen.layout import (
    FIRST_SHIFT,
    FIRST_SIZE,
    LPAE_ENTRY_MASK,
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_SIZE,
    SECOND_SHIFT,
    VLPT_END_SLOT,
    VLPT_FIRST_SLOT,
    XEN_SECOND_ENTRIES,
)

__all__ = [
    "gb_span",
    "loop_page_va",
    "second_va",
    "slot_va",
    "slots_for_ram",
    "third_va",
    "view_bases",
]


def slot_va(slot: int) -> int:
    """Return the hyp VA mapped by ``xen_second[slot]`` (``slot << 21``). O(1). Raises
    RangeError for a slot that is not an int in 0..2047."""
    check_int(slot, "slot_va", "slot", 0, XEN_SECOND_ENTRIES)
    return slot << SECOND_SHIFT


def gb_span(ipa_base: int, size: int) -> tuple[int, int]:
    """Return ``(first_gb, nr_gb)``: the p2m first-level entries covering ``[ipa_base, +size)``.

    Each is one VLPT slot. Raises RangeError if ``size <= 0`` or either is not an int. O(1).
    """
    check_int(ipa_base, "gb_span", "ipa_base")
    check_int(size, "gb_span", "size")
    if size <= 0 or ipa_base < 0:
        raise RangeError(f"gb_span: bad IPA range base={ipa_base:#x} size={size:#x}")
    first = ipa_base >> FIRST_SHIFT
    last = (ipa_base + size - 1) >> FIRST_SHIFT
    return first, last - first + 1


def slots_for_ram(ipa_base: int, size: int) -> int:
    """Number of 2MB window slots a domain with RAM ``[ipa_base, +size)`` needs. O(1).
    Raises RangeError as :func:`gb_span`."""
    return gb_span(ipa_base, size)[1]


def _check_slot(slot: int, what: str) -> None:
    check_int(slot, what, "slot")
    if not VLPT_FIRST_SLOT <= slot < VLPT_END_SLOT:
        raise RangeError(
            f"{what}: slot {slot} outside the VLPT window [{VLPT_FIRST_SLOT}, {VLPT_END_SLOT})"
        )


def _gb_index(first_slot: int, first_gb: int, nr_slots: int, ipa: int) -> int:
    """Index of the slot (relative to ``first_slot``) covering ``ipa``; RangeError if none."""
    check_int(first_gb, "vlpt", "first_gb", 0)
    check_int(nr_slots, "vlpt", "nr_slots", 1)
    check_int(ipa, "vlpt", "ipa")
    rel = (ipa >> FIRST_SHIFT) - first_gb
    if ipa < 0 or not 0 <= rel < nr_slots:
        lo = first_gb * FIRST_SIZE
        hi = (first_gb + nr_slots) * FIRST_SIZE
        raise RangeError(
            f"IPA {ipa:#x} is not covered by slots {first_slot}..{first_slot + nr_slots - 1} "
            f"(IPA [{lo:#x}, {hi:#x}))"
        )
    return rel


def third_va(first_slot: int, first_gb: int, nr_slots: int, ipa: int) -> int:
    """Hyp VA of the p2m level-3 entry translating ``ipa`` (leaf view).

    ``first_slot`` is the window slot holding p2m first-level entry ``first_gb``; the run has
    ``nr_slots`` consecutive slots for consecutive gigabytes.  Raises RangeError for an IPA
    outside the run or a slot outside the window. O(1).
    """
    _check_slot(first_slot, "third_va")
    _gb_index(first_slot, first_gb, nr_slots, ipa)
    _check_slot(first_slot + nr_slots - 1, "third_va")
    return slot_va(first_slot) + ((ipa - (first_gb << FIRST_SHIFT)) >> PAGE_SHIFT) * PTE_SIZE


def loop_page_va(loop_slot: int, slot: int) -> int:
    """Hyp VA of the page that ``xen_second[slot]`` points at, seen through the loop slot.

    For a window slot holding a p2m first-level table entry, that page is the p2m level-2
    table. Raises RangeError unless both slots lie in the window. O(1).
    """
    _check_slot(loop_slot, "loop_page_va")
    _check_slot(slot, "loop_page_va")
    return slot_va(loop_slot) + (slot & LPAE_ENTRY_MASK) * PAGE_SIZE


def second_va(loop_slot: int, first_slot: int, first_gb: int, nr_slots: int, ipa: int) -> int:
    """Hyp VA of the p2m level-2 entry covering ``ipa`` (second-level view, via the loop).

    Raises RangeError like :func:`third_va`. O(1).
    """
    _check_slot(first_slot, "second_va")
    rel = _gb_index(first_slot, first_gb, nr_slots, ipa)
    page = loop_page_va(loop_slot, first_slot + rel)
    return page + ((ipa >> SECOND_SHIFT) & LPAE_ENTRY_MASK) * PTE_SIZE


def view_bases(loop_slot: int, first_slot: int, first_gb: int) -> tuple[int, int]:
    """``(leaf_base, second_base)`` for a run of slots from ``first_slot`` showing p2m
    first-level entries from ``first_gb`` on: what a fault handler adds an IPA's offsets to,
    so that each of its accesses costs one add and no bounds checks.  For every ``ipa`` the
    run covers::

        third_va(...)  == leaf_base + (ipa >> 12) * 8
        second_va(...) == second_base + (ipa >> 30) * 4096 + ((ipa >> 21) & 511) * 8

    The bases themselves may lie below the window (the run starts at ``first_gb``, not 0).
    Raises RangeError for a slot outside the window or a ``first_gb`` that is not an int
    of at least 0. O(1).
    """
    _check_slot(loop_slot, "view_bases")
    _check_slot(first_slot, "view_bases")
    check_int(first_gb, "view_bases", "first_gb", 0)
    leaf_base = slot_va(first_slot) - ((first_gb << FIRST_SHIFT) >> PAGE_SHIFT) * PTE_SIZE
    second_base = loop_page_va(loop_slot, first_slot) - first_gb * PAGE_SIZE
    return leaf_base, second_base
