"""The VLPT address arithmetic: properties, the docs' worked numbers, bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaalloc.errors import RangeError
from vaalloc.xen import layout as L
from vaalloc.xen.vlptmath import (
    gb_span,
    loop_page_va,
    second_va,
    slots_for_ram,
    third_va,
    view_bases,
)


def test_layout_derivations() -> None:
    # The window is the hole between the frametable and vmap, in xen_second page 0.
    assert L.FRAMETABLE_VIRT_END == L.VLPT_VIRT_START
    assert L.VLPT_VIRT_END == L.VMAP_VIRT_START
    assert (L.VLPT_FIRST_SLOT, L.VLPT_END_SLOT) == (64, 128)
    assert L.VLPT_END_SLOT <= L.LPAE_ENTRIES  # every slot lives in xen_second page 0
    assert L.VLPT_LOOP_VA == 0x0FE0_0000
    assert L.VLPT_DOMAIN_SLOTS == 63
    assert L.XEN_SECOND_ENTRIES * L.SECOND_SIZE == 1 << 32


def test_worked_4gb_example_from_docs() -> None:
    # docs/vlpt.md: a 4GB guest at IPA 0x80000000 given slots 64..67.
    first_gb, nr = gb_span(L.GUEST_RAM_BASE, 4 * L.GB)
    assert (first_gb, nr) == (2, 4)
    end = L.GUEST_RAM_BASE + 4 * L.GB
    leaf_lo = third_va(64, first_gb, nr, L.GUEST_RAM_BASE)
    leaf_hi = third_va(64, first_gb, nr, end - L.PAGE_SIZE) + 8
    assert (leaf_lo, leaf_hi) == (0x0800_0000, 0x0880_0000)
    assert leaf_hi - leaf_lo == 8 * L.MB
    sec_lo = second_va(L.VLPT_LOOP_SLOT, 64, first_gb, nr, L.GUEST_RAM_BASE)
    sec_hi = second_va(L.VLPT_LOOP_SLOT, 64, first_gb, nr, end - L.SECOND_SIZE) + 8
    assert (sec_lo, sec_hi) == (0x0FE4_0000, 0x0FE4_4000)
    assert sec_hi - sec_lo == 16 * 1024
    ipa = 0x1_2345_6000
    assert third_va(64, first_gb, nr, ipa) == 0x0851_A2B0
    assert second_va(L.VLPT_LOOP_SLOT, 64, first_gb, nr, ipa) == 0x0FE4_28D0


@given(
    st.integers(L.VLPT_FIRST_SLOT, L.VLPT_LOOP_SLOT - 1),
    st.integers(0, 1000),
    st.data(),
)
def test_leaf_view_is_linear_and_index_split(
    first_slot: int, first_gb: int, data: st.DataObject
) -> None:
    nr = data.draw(st.integers(1, L.VLPT_LOOP_SLOT - first_slot))
    ipa = data.draw(st.integers(first_gb << 30, ((first_gb + nr) << 30) - 1))
    va = third_va(first_slot, first_gb, nr, ipa)
    # The same address from the walk's point of view: slot, L3 index = p2m i2, offset = i3 * 8.
    slot = first_slot + (ipa >> 30) - first_gb
    assert va >> 21 == slot
    assert (va >> 12) & 511 == (ipa >> 21) & 511
    assert va & 0xFFF == ((ipa >> 12) & 511) * 8
    sva = second_va(L.VLPT_LOOP_SLOT, first_slot, first_gb, nr, ipa)
    assert sva >> 21 == L.VLPT_LOOP_SLOT
    assert (sva >> 12) & 511 == slot
    assert sva & 0xFFF == ((ipa >> 21) & 511) * 8
    assert loop_page_va(L.VLPT_LOOP_SLOT, slot) == sva & ~0xFFF


@pytest.mark.parametrize(
    "args",
    [
        (64, 2, 4, 0x8000_0000 - 1),  # below the run
        (64, 2, 4, 0x1_8000_0000),  # just past the run
        (63, 2, 1, 0x8000_0000),  # slot below the window
        (127, 2, 2, 0x8000_0000),  # run past the window
    ],
)
def test_third_va_bad_input(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(RangeError, match=r"0x|slot"):
        third_va(*args)


def test_gb_span_bad_input() -> None:
    with pytest.raises(RangeError, match="size=0x0"):
        gb_span(L.GUEST_RAM_BASE, 0)
    assert slots_for_ram(L.GUEST_RAM_BASE, 1) == 1
    assert slots_for_ram(L.GUEST_RAM_BASE + L.GB - 4096, 8192) == 2


@given(
    first_slot=st.integers(L.VLPT_FIRST_SLOT, L.VLPT_END_SLOT - 2),
    first_gb=st.integers(0, 1000),
    data=st.data(),
)
def test_view_bases_give_the_same_addresses_as_third_and_second_va(
    first_slot: int, first_gb: int, data: st.DataObject
) -> None:
    nr = data.draw(st.integers(1, L.VLPT_END_SLOT - 1 - first_slot))
    ipa = data.draw(st.integers(first_gb << 30, ((first_gb + nr) << 30) - 1))
    leaf_base, second_base = view_bases(L.VLPT_LOOP_SLOT, first_slot, first_gb)
    assert leaf_base + (ipa >> 12) * 8 == third_va(first_slot, first_gb, nr, ipa)
    assert second_base + (ipa >> 30) * 4096 + ((ipa >> 21) & 511) * 8 == second_va(
        L.VLPT_LOOP_SLOT, first_slot, first_gb, nr, ipa
    )


def test_view_bases_refuse_a_slot_outside_the_window() -> None:
    with pytest.raises(RangeError, match="slot 63"):
        view_bases(L.VLPT_LOOP_SLOT, 63, 0)
    with pytest.raises(RangeError, match="first_gb"):
        view_bases(L.VLPT_LOOP_SLOT, 64, -1)
