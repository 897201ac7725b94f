"""Formats: geometry and register values from docs/design.md's hardware facts and Xen's tables."""

from __future__ import annotations

import pytest

from vaalloc.errors import RangeError
from vaalloc.lpae import (
    AARCH64_S1_48,
    AARCH64_S2_PA_RANGES,
    ARMV7_S1,
    ARMV7_S2_40,
    aarch64_s1,
    aarch64_s2,
    armv7_s2,
)


def test_4k_granule_shape() -> None:
    for fmt in (ARMV7_S1, ARMV7_S2_40, AARCH64_S1_48):
        assert fmt.shifts == (39, 30, 21, 12)
        assert fmt.entries_per_table == 512
        assert [fmt.block_size(level) for level in (1, 2, 3)] == [1 << 30, 1 << 21, 1 << 12]
        assert not fmt.can_block(0) and fmt.can_block(1) and fmt.can_block(2)


def test_armv7_formats() -> None:
    assert (ARMV7_S1.start_level, ARMV7_S1.root_entries, ARMV7_S1.levels) == (1, 4, (1, 2, 3))
    assert ARMV7_S1.regime == "el2" and ARMV7_S1.oa_bits == 40
    assert ARMV7_S2_40.vtcr == 0x80003558
    assert (ARMV7_S2_40.t0sz, ARMV7_S2_40.sl0) == (-8, 1)
    assert (ARMV7_S2_40.root_entries, ARMV7_S2_40.root_pages, ARMV7_S2_40.root_bytes) == (
        1024,
        2,
        8192,
    )
    # SL0 = 0 (start at level 2) is legal for a 32-bit IPA: T0SZ 0, 4 concatenated tables.
    low = armv7_s2(32, start_level=2)
    assert (low.vtcr & 0xFF, low.root_pages) == (0x00, 4)


# pa bits, T0SZ, root order (log2 concatenated pages), SL0: docs/design.md's table, from Xen.
XEN_ROWS = [
    (32, 32, 0, 1),
    (36, 28, 0, 1),
    (40, 24, 1, 1),
    (42, 22, 3, 1),
    (44, 20, 0, 2),
    (48, 16, 0, 2),
]


@pytest.mark.parametrize(("pa_bits", "t0sz", "root_order", "sl0"), XEN_ROWS)
def test_aarch64_stage2_rows_match_xen(pa_bits: int, t0sz: int, root_order: int, sl0: int) -> None:
    fmt = AARCH64_S2_PA_RANGES[pa_bits]
    assert (fmt.t0sz, fmt.sl0) == (t0sz, sl0)
    assert fmt.root_pages == 1 << root_order
    vtcr = fmt.vtcr
    assert (vtcr & 0x3F, (vtcr >> 6) & 3, (vtcr >> 14) & 3) == (t0sz, sl0, 0)
    assert (vtcr >> 16) & 7 == [32, 36, 40, 42, 44, 48].index(pa_bits)
    assert aarch64_s2(pa_bits) == fmt


@pytest.mark.parametrize(
    ("va_bits", "start"), [(48, 0), (42, 0), (40, 0), (39, 1), (31, 1), (30, 2)]
)
def test_aarch64_stage1_start_level_follows_t0sz(va_bits: int, start: int) -> None:
    fmt = aarch64_s1(va_bits)
    assert fmt.start_level == start and fmt.t0sz == 64 - va_bits
    assert 2 <= fmt.root_entries <= 512


def test_16k_and_64k_granules_share_the_geometry_code() -> None:
    g16 = aarch64_s1(48, granule=16384)
    assert g16.shifts == (47, 36, 25, 14) and g16.start_level == 0 and g16.root_entries == 2
    assert g16.first_block_level == 2
    g64 = aarch64_s1(48, granule=65536)
    assert g64.shifts[1:] == (42, 29, 16) and g64.start_level == 1 and g64.root_entries == 64
    s2 = aarch64_s2(40, granule=65536)
    assert (s2.start_level, s2.sl0, (s2.vtcr >> 14) & 3) == (2, 1, 1)


def test_impossible_formats_are_refused() -> None:
    with pytest.raises(RangeError):
        aarch64_s2(41)
    with pytest.raises(RangeError):
        aarch64_s1(49)
    with pytest.raises(RangeError):
        armv7_s2(40, start_level=2)  # 19 bits at level 2 would need 128 concatenated tables
    with pytest.raises(RangeError):
        ARMV7_S1.vtcr  # noqa: B018 - a stage-1 format has no VTCR
