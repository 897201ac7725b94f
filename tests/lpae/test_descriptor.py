"""Descriptors: every 64-bit value survives decode/encode; fields sit where docs/design.md says."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaalloc.errors import RangeError, VAAllocError
from vaalloc.lpae import S1Attrs, S1Descriptor, S2Attrs, S2Descriptor

u64 = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(u64)
def test_s1_decode_encode_is_identity(value: int) -> None:
    assert S1Descriptor.decode(value).encode() == value


@given(u64)
def test_s2_decode_encode_is_identity(value: int) -> None:
    assert S2Descriptor.decode(value).encode() == value


@pytest.mark.parametrize("bit", range(64))
def test_every_single_bit_round_trips_and_lands_in_one_field(bit: int) -> None:
    for cls in (S1Descriptor, S2Descriptor):
        decoded = cls.decode(1 << bit)
        assert decoded.encode() == 1 << bit
        nonzero = [name for name, v in attrs.asdict(decoded).items() if v]
        assert len(nonzero) == 1


def test_stage1_field_positions() -> None:
    d = S1Descriptor.decode(
        1
        | 2
        | (5 << 2)
        | (1 << 5)
        | (2 << 6)
        | (3 << 8)
        | (1 << 10)
        | (1 << 11)
        | 0x12_3456_7000
        | (1 << 52)
        | (1 << 53)
        | (1 << 54)
        | (0xA << 55)
        | (1 << 59)
        | (1 << 60)
        | (2 << 61)
        | (1 << 63)
    )
    assert (d.valid, d.table, d.attr_indx, d.ns, d.ap, d.sh, d.af, d.ng) == (1, 1, 5, 1, 2, 3, 1, 1)
    assert d.address == 0x12_3456_7000
    assert (d.contiguous, d.pxn, d.xn, d.sw) == (1, 1, 1, 0xA)
    assert (d.pxn_table, d.xn_table, d.ap_table, d.ns_table) == (1, 1, 2, 1)


def test_stage2_field_positions_and_xen_perm_mask() -> None:
    # Xen's P2M_PERM_MASK = 0x00400000000000C0: S2AP (bits 7:6) and XN (bit 54).
    d = S2Descriptor.decode(0x0040_0000_0000_00C0)
    assert (d.s2ap, d.xn) == (3, 1)
    assert S2Descriptor(s2ap=3, xn=1).encode() == 0x0040_0000_0000_00C0
    d = S2Descriptor.decode((0xF << 2) | (1 << 10) | (0x9 << 55) | 0xFF_FFFF_F000)
    assert (d.mem_attr, d.af, d.sw, d.address) == (0xF, 1, 0x9, 0xFF_FFFF_F000)


@pytest.mark.parametrize("bad", [-1, 1 << 64, True, "3"])
def test_decode_rejects_non_64_bit_values(bad: object) -> None:
    with pytest.raises(RangeError, match="64-bit"):
        S1Descriptor.decode(bad)  # type: ignore[arg-type]


def test_field_overflow_is_a_typed_error_naming_the_field() -> None:
    with pytest.raises(VAAllocError, match="ap"):
        S1Descriptor(ap=4)
    with pytest.raises(VAAllocError, match="address"):
        S2Descriptor(address=0x1001)
    with pytest.raises(VAAllocError, match="sw"):
        S2Attrs(sw=16)


@given(u64)
def test_attrs_templates_keep_exactly_the_leaf_attribute_bits(value: int) -> None:
    s1 = S1Attrs.from_descriptor(value)
    assert s1.bits == value & ((0x3FF << 2) | (0x7F << 52))
    assert S1Attrs.from_descriptor(s1.bits) == s1
    s2 = S2Attrs.from_descriptor(value)
    s2_mask = (0xF << 2) | (3 << 6) | (3 << 8) | (1 << 10) | (1 << 52) | (1 << 54) | (0xF << 55)
    assert s2.bits == value & s2_mask
