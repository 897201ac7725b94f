"""The walk: architectural steps, fault kinds and levels, permissions, loops, fast walkers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vaalloc.errors import RangeError
from vaalloc.lpae import (
    AARCH64_S1_48,
    AARCH64_S1_48_EL2,
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    Fault,
    FaultError,
    Format,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S2Attrs,
    Translation,
    aarch64_s1,
    aarch64_s2,
    armv7_s2,
)
from vaalloc.lpae.fastwalk import leaf_fn, translate_fn
from vaalloc.lpae.walk import geometry_of, walk

AF = 1 << 10
PAGE = 3
BLOCK = 1


def manual(fmt: Format, tables: int = 4) -> tuple[PhysicalMemory, list[int]]:
    """Memory plus ``tables`` table addresses (the first is the root) for hand-written tables."""
    mem = PhysicalMemory(48 if fmt.arch == "aarch64" else 40)
    stride = max(fmt.root_bytes, fmt.granule)
    return mem, [0x8000_0000 + i * stride for i in range(tables)]


def put(mem: PhysicalMemory, table: int, index: int, value: int) -> None:
    mem.write64(table + 8 * index, value)


def must_translate(result: Translation | Fault) -> Translation:
    assert isinstance(result, Translation), result
    return result


def must_fault(result: Translation | Fault, kind: str, level: int) -> Fault:
    assert isinstance(result, Fault), result
    assert (result.kind, result.level) == (kind, level)
    return result


# -- fault kinds and levels -------------------------------------------------------------------


def test_translation_faults_at_each_level_of_armv7_s1() -> None:
    mem, (root, l2, l3, _) = manual(ARMV7_S1)
    must_fault(walk(mem, ARMV7_S1, root, 0x4020_3000), "translation", 1)
    put(mem, root, 1, l2 | 3)
    must_fault(walk(mem, ARMV7_S1, root, 0x4020_3000), "translation", 2)
    put(mem, l2, 1, l3 | 3)
    must_fault(walk(mem, ARMV7_S1, root, 0x4020_3000), "translation", 3)
    put(mem, l3, 3, 0x9000_0000 | BLOCK | AF)  # 0b01 at level 3 is invalid
    must_fault(walk(mem, ARMV7_S1, root, 0x4020_3000), "translation", 3)
    put(mem, l3, 3, 0x9000_0000 | PAGE | AF)
    t = must_translate(walk(mem, ARMV7_S1, root, 0x4020_3ABC))
    assert (t.pa, t.level, t.block_size) == (0x9000_0ABC, 3, 4096)
    assert [pa for pa, _ in t.reads] == [root + 8, l2 + 8, l3 + 24]


def test_access_flag_fault_at_the_leaf_level() -> None:
    mem, (root, l2, _, _) = manual(ARMV7_S1)
    put(mem, root, 0, l2 | 3)
    put(mem, l2, 5, 0x9000_0000 | BLOCK)  # AF = 0
    must_fault(walk(mem, ARMV7_S1, root, 5 << 21), "access-flag", 2)


def test_address_size_faults_for_table_and_leaf_output_beyond_40_bits() -> None:
    mem, (root, l2, _, _) = manual(ARMV7_S1)
    put(mem, root, 0, (1 << 40) | l2 | 3)
    must_fault(walk(mem, ARMV7_S1, root, 0), "address-size", 1)
    put(mem, root, 0, l2 | 3)
    put(mem, l2, 0, (1 << 44) | 0x20_0000 | BLOCK | AF)
    must_fault(walk(mem, ARMV7_S1, root, 0), "address-size", 2)
    # AArch64 with IPS = 40 bits: same rule, level 0 table.
    fmt = aarch64_s1(48, oa_bits=40)
    mem, (root, l1, _, _) = manual(fmt)
    put(mem, root, 0, (1 << 41) | l1 | 3)
    must_fault(walk(mem, fmt, root, 0), "address-size", 0)


def test_input_beyond_the_configured_size_is_a_translation_fault() -> None:
    # AArch64 reports it at level 0 even when the walk would start at level 1.
    for fmt in (AARCH64_S1_48, aarch64_s1(39)):
        mem, (root, *_) = manual(fmt)
        must_fault(walk(mem, fmt, root, 1 << fmt.ia_bits), "translation", 0)
    # AArch32 reports it at level 1 ("AArch32 reports this as a level 1 fault").
    fmt = armv7_s2(32, start_level=2)
    mem, (root, *_) = manual(fmt)
    must_fault(walk(mem, fmt, root, 1 << 33), "translation", 1)
    # Wider than the input register itself is not an address at all.
    with pytest.raises(RangeError):
        walk(mem, ARMV7_S1, root, 1 << 32)


def test_block_where_the_granule_allows_none_is_a_translation_fault() -> None:
    mem, (root, *_) = manual(AARCH64_S1_48)
    put(mem, root, 0, BLOCK | AF)
    must_fault(walk(mem, AARCH64_S1_48, root, 0x1000), "translation", 0)
    fmt16 = aarch64_s1(48, granule=16384)
    mem, (root, l1, *_) = manual(fmt16)
    put(mem, root, 0, l1 | 3)
    put(mem, l1, 0, BLOCK | AF)  # 16KB granule: no level-1 block without 52-bit addresses
    must_fault(walk(mem, fmt16, root, 0), "translation", 1)


def test_block_low_address_bits_are_ignored() -> None:
    mem, (root, l2, *_) = manual(ARMV7_S1)
    put(mem, root, 0, l2 | 3)
    put(mem, l2, 1, 0x9000_0000 | 0x1F_F000 | BLOCK | AF)  # RES0 bits 20:12 set
    assert must_translate(walk(mem, ARMV7_S1, root, 0x20_0010)).pa == 0x9000_0010


# -- permissions ------------------------------------------------------------------------------


def leaf_perms(fmt: Format, desc: int, table_bits: int = 0, user: bool = False) -> str:
    """r/w/x letters the walk grants for a level-2 block ``desc`` under a table with bits."""
    mem, (root, l2, *_) = manual(fmt)
    top = fmt.start_level
    table = root
    for level in range(top, 2):  # link down to level 2, table bits on the first link
        nxt = l2 if level == 1 else 0x8010_0000 + level * 0x1000
        put(mem, table, 0, nxt | 3 | (table_bits if level == top else 0))
        table = nxt
    put(mem, table, 0, 0x9000_0000 | desc | BLOCK | AF)
    out = ""
    for letter, access in (("r", "read"), ("w", "write"), ("x", "exec")):
        result = walk(mem, fmt, root, 0x1000, access, user)
        out += letter if isinstance(result, Translation) else "-"
        if isinstance(result, Fault):
            assert (result.kind, result.level) == ("permission", 2)
    return out


AP = {0: 0, 1: 1 << 6, 2: 2 << 6, 3: 3 << 6}
XN, PXN = 1 << 54, 1 << 53


def test_hyp_regime_has_no_user_split_and_ignores_pxn() -> None:
    # AP[1] selects nothing in the hyp regime: AP=00 and AP=01 are both RW, 10/11 RO.
    assert [leaf_perms(ARMV7_S1, AP[ap]) for ap in range(4)] == ["rwx", "rwx", "r-x", "r-x"]
    assert leaf_perms(ARMV7_S1, PXN) == "rwx"
    assert leaf_perms(ARMV7_S1, XN) == "rw-"
    assert leaf_perms(AARCH64_S1_48_EL2, AP[2] | PXN) == "r-x"
    with pytest.raises(RangeError, match="unprivileged"):
        walk(PhysicalMemory(), ARMV7_S1, 0x8000_0000, 0, "read", True)


def test_pl1_regime_user_and_privileged_permissions() -> None:
    fmt = ARMV7_S1_PL1
    assert [leaf_perms(fmt, AP[ap]) for ap in range(4)] == ["rwx", "rwx", "r-x", "r-x"]
    assert [leaf_perms(fmt, AP[ap], user=True) for ap in range(4)] == ["---", "rwx", "---", "r-x"]
    assert leaf_perms(fmt, PXN) == "rw-" and leaf_perms(fmt, PXN, user=True) == "---"
    assert leaf_perms(fmt, AP[1] | PXN, user=True) == "rwx"


def test_aarch64_el1_execute_rules() -> None:
    fmt = AARCH64_S1_48
    # EL0-writable memory is never executable at EL1; EL0 may execute what it cannot read.
    assert leaf_perms(fmt, AP[1]) == "rw-"
    assert leaf_perms(fmt, AP[0], user=True) == "--x"
    assert leaf_perms(fmt, AP[0] | XN, user=True) == "---"
    assert (
        leaf_perms(fmt, AP[3] | PXN) == "r--" and leaf_perms(fmt, AP[3] | PXN, user=True) == "r-x"
    )


def test_hierarchical_table_attributes() -> None:
    ap_table_ro, ap_table_no_el0 = 1 << 62, 1 << 61
    xn_table, pxn_table = 1 << 60, 1 << 59
    fmt = ARMV7_S1_PL1
    assert leaf_perms(fmt, AP[1], ap_table_ro) == "r-x"
    assert leaf_perms(fmt, AP[1], ap_table_no_el0, user=True) == "---"
    assert leaf_perms(fmt, AP[1], ap_table_no_el0) == "rwx"
    assert leaf_perms(fmt, AP[1], xn_table, user=True) == "rw-"
    assert (
        leaf_perms(fmt, AP[1], pxn_table) == "rw-"
        and leaf_perms(fmt, AP[1], pxn_table, True) == "rwx"
    )
    # hyp: APTable[1] applies, APTable[0] and PXNTable mean nothing, XNTable applies
    assert leaf_perms(ARMV7_S1, 0, ap_table_ro | ap_table_no_el0 | pxn_table) == "r-x"
    assert leaf_perms(ARMV7_S1, 0, xn_table) == "rw-"


def test_stage2_permissions() -> None:
    s2ap = {s: s << 6 for s in range(4)}
    assert [leaf_perms(ARMV7_S2_40, s2ap[s]) for s in range(4)] == ["---", "r-x", "-w-", "rwx"]
    aarch64 = aarch64_s2(40)
    assert [leaf_perms(aarch64, s2ap[s]) for s in range(4)] == ["--x", "r-x", "-wx", "rwx"]
    assert leaf_perms(ARMV7_S2_40, s2ap[3] | XN) == "rw-"
    # stage-2 table descriptors carry no attributes
    assert leaf_perms(ARMV7_S2_40, s2ap[3], (1 << 62) | (1 << 60)) == "rwx"


# -- loops and the VLPT trick -----------------------------------------------------------------


def test_a_loop_to_the_root_walks_like_any_table() -> None:
    mem, (root, l2, l3, _) = manual(ARMV7_S1)
    put(mem, root, 0, l2 | 3)
    put(mem, l2, 0, l3 | 3)
    put(mem, l3, 7, 0x9000_0000 | PAGE | AF)
    put(mem, root, 3, root | 3 | AF)  # slot 3 points back at the root
    # VA 0xC000_0000 + 0x0000_0000: level 1 slot 3 -> root as L2, slot 0 -> l2 read as L3:
    # l2's entry 0 is a table descriptor (0b11): at level 3 that is a page mapping l3.
    t = walk(mem, ARMV7_S1, root, 0xC000_0000)
    assert isinstance(t, Fault) and t.kind == "access-flag"  # l2 entry 0 has AF = 0
    put(mem, l2, 0, l3 | 3 | AF)
    t = must_translate(walk(mem, ARMV7_S1, root, 0xC000_0038))
    assert (t.level, t.pa) == (3, l3 + 0x38)
    assert mem.read64(t.pa) == 0x9000_0000 | PAGE | AF  # the l3 entry, read through the loop
    # The loop slot seen from itself: root read as a level-3 table maps the root's own page.
    t = must_translate(walk(mem, ARMV7_S1, root, 0xC000_0000 + (3 << 21) + (3 << 12)))
    assert t.pa == root and mem.read64(t.pa + 24) == root | 3 | AF


def test_stage2_table_entry_read_by_the_hyp_walker_is_a_page() -> None:
    mem = PhysicalMemory(40)
    p2m = PageTable(mem, ARMV7_S2_40, table_attrs=AF | (0xF << 2) | (3 << 6) | (3 << 8))
    p2m.map(0x8000_0000, 0x1_0000_0000, 0x1000, S2Attrs())
    xen = PageTable(mem, ARMV7_S1)
    xen.map(0, 0x9000_0000, 0x1000, S1Attrs())  # creates xen's level-2 table
    second = mem.read64(xen.root) & ((1 << 40) - 0x1000)
    # Plant the VLPT slot: xen_second[64] -> the p2m root page (first 512 entries).
    mem.write64(second + 64 * 8, p2m.root | 3 | AF)
    slot_va = 64 << 21
    first_level_entry = p2m.entry_pa(0x8000_0000, 1)
    page = must_translate(xen.walk(slot_va + ((0x8000_0000 >> 30) << 12)))
    assert page.level == 3 and page.pa == mem.read64(first_level_entry) & ~0xFFF
    # ... and the p2m's level-2 table entry for the IPA, read at the hyp VA.
    assert mem.read64(page.pa + ((0x8000_0000 >> 21) & 511) * 8) == mem.read64(
        p2m.entry_pa(0x8000_0000, 2)
    )
    # Without AF in the p2m table entry the VLPT view takes an access-flag fault.
    mem.write64(first_level_entry, mem.read64(first_level_entry) & ~AF)
    must_fault(xen.walk(slot_va + (2 << 12)), "access-flag", 3)


# -- the compiled walkers agree with the reference walk ---------------------------------------

FORMATS = [
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    AARCH64_S1_48,
    AARCH64_S1_48_EL2,
    aarch64_s1(39),
    aarch64_s1(48, oa_bits=40),
    aarch64_s2(40),
    aarch64_s2(44),
    aarch64_s1(47, granule=16384),
    aarch64_s1(48, granule=65536),
    aarch64_s1(42, granule=65536, regime="el2"),
]
INDICES = [0, 1, 2, 3]
UPPER = (0xF << 59) | (0x7F << 52)  # table attributes, software bits, XN/PXN/contiguous
LOWER = 0xFFC


@st.composite
def random_tables(draw: st.DrawFn) -> tuple[Format, PhysicalMemory, int, list[int]]:
    fmt = draw(st.sampled_from(FORMATS))
    mem, tables = manual(fmt, 4)
    for table in tables:
        for index in INDICES:
            kind = draw(st.sampled_from(["invalid", "table", "table", "leaf", "leaf", "wide"]))
            bits = draw(st.integers(0, (1 << 64) - 1)) & (UPPER | LOWER)
            if kind == "invalid":
                value = bits & ~1
            elif kind == "table":
                value = draw(st.sampled_from(tables)) | 3 | bits
            elif kind == "leaf":
                address = draw(st.integers(0, (1 << 30) - 1)) & fmt.addr_mask
                value = address | draw(st.sampled_from([1, 3])) | bits
            else:  # an address beyond the output size (bits 51:48 are ignored at 48 bits)
                top = draw(st.integers(fmt.oa_bits, 47)) if fmt.oa_bits < 48 else 48
                value = (1 << top) | draw(st.sampled_from(tables)) | 3 | bits
            put(mem, table, index, value)
    vas = []
    for _ in range(12):
        va = draw(st.integers(0, fmt.granule - 1))
        for level in fmt.levels:
            va |= draw(st.sampled_from(INDICES)) << fmt.shifts[level]
        vas.append(va)
    if fmt.ia_bits < fmt.ia_reg_bits:
        vas.append(1 << fmt.ia_bits)
    return fmt, mem, tables[0], vas


@given(random_tables(), st.sampled_from(["read", "write", "exec"]), st.booleans())
def test_compiled_walkers_agree_with_the_reference(
    case: tuple[Format, PhysicalMemory, int, list[int]], access: str, user: bool
) -> None:
    fmt, mem, root, vas = case
    user = user and fmt.regime == "el1&0"
    geo = geometry_of(fmt)
    bit = {"read": 1, "write": 2, "exec": 4}[access]
    for va in vas:
        expected = walk(mem, fmt, root, va, access, user)
        desc, level, _tbl, kind = leaf_fn(geo)(mem._frames, root, va)
        try:
            got: int | Fault = translate_fn(geo)(mem._frames, root, va, bit, user)
        except FaultError as error:
            got = error.fault
        if isinstance(expected, Fault):
            assert got == expected
            if expected.kind != "permission":
                assert (kind, level) == (expected.kind, expected.level)
        else:
            assert got == expected.pa
            assert (kind, level, desc) == ("", expected.level, expected.descriptor)
