"""The QEMU harness itself, proved on hand-written raw descriptors.

Every expectation here is an architecture fact about the descriptors written (independent of
vaalloc), so a failure means the harness drives QEMU wrongly (or QEMU changed), not that the
model is wrong.
"""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("unicorn", reason="unicorn (test extra) is needed to run QEMU's MMU")

from tests.lpae.qemu.harness import HARNESS_PA, QemuMMU, Regime, qemu_translate

AF = 1 << 10
AP_RO = 1 << 7
AP_USER = 1 << 6
PXN = 1 << 53
XN = 1 << 54
TABLE = 0b11
BLOCK = 0b01
PAGE = 0b11

# Table frames (all in vaalloc's default RAM, above 2GB) and output frames.
T0, T1, T2, T3 = 0x8000_4000, 0x8000_1000, 0x8000_2000, 0x8000_3000
OUT = 0x9000_0000

REGIMES = {
    "armv7-hyp": Regime("armv7", "el2", 32),
    "armv7-pl1": Regime("armv7", "el1&0", 32),
    "aarch64-el1-48": Regime("aarch64", "el1&0", 48),
    "aarch64-el1-39": Regime("aarch64", "el1&0", 39),
    "aarch64-el2-48": Regime("aarch64", "el2", 48),
}


def frames_of(entries: dict[int, int]) -> list[tuple[int, bytes]]:
    """Frames holding 64-bit ``entries`` (pa -> value), zero elsewhere."""
    frames: dict[int, bytearray] = {}
    for pa, value in entries.items():
        frame = frames.setdefault(pa & ~0xFFF, bytearray(0x1000))
        frame[pa & 0xFFF : (pa & 0xFFF) + 8] = struct.pack("<Q", value)
    return [(pa, bytes(data)) for pa, data in frames.items()]


def start_level(regime: Regime) -> int:
    return 0 if regime.arch == "aarch64" and regime.ia_bits > 39 else 1


def build(
    regime: Regime,
    l3: dict[int, int],
    l2: dict[int, int] | None = None,
    l1: dict[int, int] | None = None,
) -> tuple[list[tuple[int, bytes]], int]:
    """Tables covering VA [0, 1GB) through L1[0] -> T2 -> T3 (L0[0] -> T1 first when the walk
    starts at level 0); ``l1``/``l2``/``l3`` add entries by index.  Returns (frames, root)."""
    entries = {T1: T2 | TABLE, T2: T3 | TABLE}
    for index, value in (l1 or {}).items():
        entries[T1 + 8 * index] = value
    for index, value in (l2 or {}).items():
        entries[T2 + 8 * index] = value
    for index, value in l3.items():
        entries[T3 + 8 * index] = value
    if start_level(regime) == 0:
        entries[T0] = T1 | TABLE
        return frames_of(entries), T0
    return frames_of(entries), T1


@pytest.fixture(scope="module", params=sorted(REGIMES))
def regime(request: pytest.FixtureRequest) -> Regime:
    return REGIMES[request.param]


@pytest.fixture(scope="module")
def mmu(regime: Regime) -> QemuMMU:
    return QemuMMU(regime)


def test_pages_blocks_and_their_output_addresses(mmu: QemuMMU, regime: Regime) -> None:
    frames, root = build(
        regime,
        l3={1: OUT | AF | PAGE, 2: (OUT + 0x5000) | AF | PAGE},
        l2={1: (OUT + 0x20_0000) | AF | BLOCK},
        l1={1: 0x4000_0000 | AF | BLOCK},
    )
    mmu.load(frames, root)
    assert mmu.translate(0x1ABC).pa == OUT + 0xABC
    assert mmu.translate(0x2008, "write").pa == OUT + 0x5008
    assert mmu.translate(0x2F_FFF8).pa == OUT + 0x2F_FFF8  # inside the 2MB block
    assert mmu.translate(0x7654_3210).pa == 0x7654_3210  # inside the 1GB block at 1GB
    assert mmu.translate(0x1000, "exec").ok


def test_invalid_entry_faults_at_the_level_it_sits(mmu: QemuMMU, regime: Regime) -> None:
    frames, root = build(regime, l3={1: OUT | AF | PAGE, 2: OUT | AF | 0b01})
    mmu.load(frames, root)
    for va, level in [(0x3000, 3), (0x2000, 3), (0x40_0000, 2), (0x4000_0000 * 2, 1)]:
        for access in ("read", "write", "exec"):
            outcome = mmu.translate(va, access)
            assert (outcome.fault, outcome.level) == ("translation", level), (hex(va), access)
    if start_level(regime) == 0:
        outcome = mmu.translate(1 << 39)
        assert (outcome.fault, outcome.level) == ("translation", 0)


@pytest.mark.parametrize(
    "small",
    [
        Regime("armv7", "el2", 31),
        Regime("armv7", "el1&0", 31),
        Regime("aarch64", "el1&0", 48),
        Regime("aarch64", "el1&0", 39),
        Regime("aarch64", "el2", 42),
    ],
    ids=str,
)
def test_input_beyond_t0sz_is_a_translation_fault(small: Regime) -> None:
    frames, root = build(small, l3={1: OUT | AF | PAGE})
    assert qemu_translate(frames, small, root, 0x1000).pa == OUT
    outcome = qemu_translate(frames, small, root, 1 << small.ia_bits)
    level = 0 if small.arch == "aarch64" else 1
    assert (outcome.fault, outcome.level) == ("translation", level)


def test_access_flag_read_only_and_execute_never(mmu: QemuMMU, regime: Regime) -> None:
    # AArch64 EL1&0: XN is UXN, privileged execution is refused by PXN.
    never = XN | (PXN if regime.has_user else 0)
    frames, root = build(
        regime,
        l3={1: OUT | PAGE, 2: OUT | AF | AP_RO | PAGE, 3: OUT | AF | never | PAGE},
        l2={1: OUT | BLOCK},  # 2MB block, AF = 0
    )
    mmu.load(frames, root)
    for access in ("read", "write", "exec"):
        no_af = mmu.translate(0x1000, access)
        assert (no_af.fault, no_af.level) == ("access-flag", 3)
        block = mmu.translate(0x20_0000, access)
        assert (block.fault, block.level) == ("access-flag", 2)
    assert mmu.translate(0x2000, "read").pa == OUT
    written = mmu.translate(0x2000, "write")
    assert (written.fault, written.level) == ("permission", 3)
    assert mmu.translate(0x2000, "exec").ok
    assert mmu.translate(0x3000, "write").ok
    refused = mmu.translate(0x3000, "exec")
    assert (refused.fault, refused.level) == ("permission", 3)


def test_user_and_privileged_permissions(regime: Regime) -> None:
    if not regime.has_user:
        with pytest.raises(ValueError, match="unprivileged"):
            QemuMMU(regime).translate(0, "read", user=True)
        return
    mmu = QemuMMU(regime)
    frames, root = build(
        regime,
        l3={
            1: OUT | AF | PAGE,
            2: OUT | AF | AP_USER | PAGE,
            3: OUT | AF | AP_USER | AP_RO | PXN | PAGE,
        },
    )
    mmu.load(frames, root)
    assert mmu.translate(0x1000, "read", user=True).fault == "permission"
    assert mmu.translate(0x2000, "write", user=True).pa == OUT
    assert mmu.translate(0x3000, "write", user=True).fault == "permission"
    assert mmu.translate(0x3000, "exec", user=True).ok
    assert mmu.translate(0x3000, "exec").fault == "permission"  # PXN
    # Privileged execution of EL0-writable memory: refused on AArch64 only.
    assert mmu.translate(0x2000, "exec").ok == (regime.arch == "armv7")
    # EL0 may execute what it cannot read on AArch64 (UXN only); AArch32 needs read access.
    assert mmu.translate(0x1000, "exec", user=True).ok == (regime.arch == "aarch64")


def test_loops_are_walked_like_any_other_table(mmu: QemuMMU, regime: Regime) -> None:
    # L3[5] maps its own table as a page (the VLPT view of a table).  L2[3] points at the L2
    # table itself, so VAs under it read L2's entries as level-3 descriptors; L2[6] points at
    # its parent (L1), read the same way.  L2[4] is a table descriptor with AF set: read as a
    # page through the loop it maps T3.
    frames, root = build(
        regime,
        l3={1: OUT | AF | PAGE, 5: T3 | AF | PAGE},
        l2={2: OUT | AF | BLOCK, 3: T2 | TABLE, 4: T3 | AF | TABLE, 6: T1 | TABLE},
    )
    mmu.load(frames, root)
    assert mmu.translate(0x5010).pa == T3 + 0x10
    assert mmu.translate(0x80_1008).pa == OUT + 8  # L2[4] as a table: T3[1]
    assert mmu.translate(0x60_4010).pa == T3 + 0x10  # L2[4] read as a level-3 page
    no_af = mmu.translate(0x60_0000)  # L2[0] = T3 | TABLE read as a page: AF = 0
    assert (no_af.fault, no_af.level) == ("access-flag", 3)
    block = mmu.translate(0x60_2000)  # L2[2] is 0b01: reserved at level 3
    assert (block.fault, block.level) == ("translation", 3)
    ancestor = mmu.translate(0xC0_0000)  # L1[0] = T2 | TABLE read as a page: AF = 0
    assert (ancestor.fault, ancestor.level) == ("access-flag", 3)
    empty = mmu.translate(0xC0_3000)  # L1[3] is empty
    assert (empty.fault, empty.level) == ("translation", 3)


def test_fetch_at_a_page_boundary_needs_only_its_own_page(mmu: QemuMMU, regime: Regime) -> None:
    frames, root = build(regime, l3={1: OUT | AF | PAGE})
    mmu.load(frames, root)
    assert mmu.translate(0x1000, "exec").ok  # page 0 is unmapped
    assert mmu.translate(0x2000, "exec").fault == "translation"


def test_load_replaces_memory_and_flushes_the_tlb(mmu: QemuMMU, regime: Regime) -> None:
    frames, root = build(regime, l3={1: OUT | AF | PAGE})
    mmu.load(frames, root)
    assert mmu.translate(0x1000, "exec").ok
    never = XN | (PXN if regime.has_user else 0)
    frames, root = build(regime, l3={1: OUT | AF | never | PAGE})
    mmu.load(frames, root)
    assert mmu.translate(0x1000, "exec").fault == "permission"
    frames, root = build(regime, l3={})
    mmu.load(frames, root)
    assert mmu.translate(0x1000, "exec").fault == "translation"


def test_tables_on_the_harness_page_are_refused(regime: Regime) -> None:
    frames, root = build(regime, l3={1: HARNESS_PA | PAGE})
    with pytest.raises(ValueError, match="harness page"):
        QemuMMU(regime).load(frames, root)


S2_ROOT = 0x8000_8000  # two concatenated 4KB pages, 8KB-aligned (40-bit IPA, level 1)
S2_RW, S2_RO, S2_WO = 3 << 6, 1 << 6, 2 << 6


@pytest.mark.parametrize("arch", ["armv7", "aarch64"])
def test_stage2_alone(arch: str) -> None:
    regime = Regime(arch, "s2", 40, oa_bits=40, start_level=1)  # type: ignore[arg-type]
    frames = frames_of(
        {
            S2_ROOT: T2 | TABLE,
            S2_ROOT + 8: 0x1_0000_0000 | AF | S2_RW | BLOCK,  # IPA 1GB -> PA 4GB, 1GB block
            T2: T3 | TABLE,
            T3 + 8: OUT | AF | S2_RW | PAGE,
            T3 + 16: OUT | AF | S2_RO | PAGE,
            T3 + 24: OUT | AF | S2_WO | PAGE,
            T3 + 32: OUT | AF | S2_RW | XN | PAGE,
            T3 + 40: OUT | S2_RW | PAGE,
        }
    )
    mmu = QemuMMU(regime)
    mmu.load(frames, S2_ROOT)
    assert mmu.translate(0x1010).pa == OUT + 0x10
    assert mmu.translate(0x4000_1234, "write").pa == 0x1_0000_1234
    ro = mmu.translate(0x2000, "write")
    assert (ro.fault, ro.level, ro.stage) == ("permission", 3, 2)
    assert mmu.translate(0x3000, "write").ok
    assert (mmu.translate(0x3000).fault, mmu.translate(0x3000).stage) == ("permission", 2)
    # An instruction fetch needs S2AP read on AArch32; on AArch64 XN alone decides.
    assert mmu.translate(0x3000, "exec").ok == (arch == "aarch64")
    assert mmu.translate(0x4000, "exec").fault == "permission"
    no_af = mmu.translate(0x5000, "exec")
    assert (no_af.fault, no_af.level, no_af.stage) == ("access-flag", 3, 2)
    empty = mmu.translate(0x8000_0000)
    assert (empty.fault, empty.level, empty.stage) == ("translation", 1, 2)
    if arch == "armv7":
        with pytest.raises(ValueError, match="below 4GB"):
            mmu.translate(1 << 32)


def test_address_translation_reaches_what_a_load_reads() -> None:
    """The harness asks AT instructions where an access goes; check on AArch64 EL1 that a real
    load (fetched through TTBR1 from a page the tables under test do not touch) reads the word
    at the PA that AT reported, and takes a data abort where AT reports a fault."""
    from unicorn import arm64_const as a64

    regime = REGIMES["aarch64-el1-48"]
    code_pa, code_va = 0xC000_0000, 0xFFFF_0000_0000_0000
    t1_l0, t1_l1 = 0x8100_0000, 0x8100_1000
    data = {OUT: 0, OUT + 0x1000: 0, OUT + 0x20_0000: 0}  # page, page, inside a 2MB block
    entries = {pa + off: pa + off for pa in data for off in range(0, 0x1000, 8)}
    entries[code_pa] = 0xD503201FF9400001  # ldr x1, [x0]; nop
    entries[t1_l0] = t1_l1 | TABLE
    entries[t1_l1] = code_pa | AF | BLOCK  # 1GB block holding the code page
    tables, root = build(
        regime,
        l3={1: OUT | AF | PAGE, 2: (OUT + 0x1000) | AF | PAGE, 3: OUT | PAGE},
        l2={1: OUT | AF | BLOCK},
    )
    frames = tables + frames_of(entries)
    mmu = QemuMMU(regime)
    mmu.load(frames, root)
    uc = mmu._uc
    tcr_el1, ttbr1_el1 = (2, 0, 3, 0, 2), (2, 0, 3, 0, 1)
    tcr = mmu._cp(tcr_el1)
    mmu._cp(tcr_el1, (tcr & ~(1 << 23)) | (16 << 16) | (2 << 30))  # EPD1=0, T1SZ=16, TG1=4KB
    mmu._cp(ttbr1_el1, t1_l0)
    seen = 0
    for va in (0x1008, 0x2FF8, 0x20_0010, 0x3000, 0x4000):
        at = mmu.translate(va, "read")
        mmu._enter_el3()
        mmu._cp((4, 0, 3, 6, 1), code_va)  # ELR_EL3
        mmu._cp((4, 0, 3, 6, 0), 0x3C5)  # SPSR_EL3: EL1h
        uc.reg_write(a64.UC_ARM64_REG_X0, va)
        uc.reg_write(a64.UC_ARM64_REG_X1, 0xDEAD)
        mmu._intr = None
        uc.emu_start(HARNESS_PA + mmu._ret, code_va + 4)
        if at.ok:
            assert mmu._intr is None
            assert uc.reg_read(a64.UC_ARM64_REG_X1) == at.pa  # the word stored at each PA
            seen += 1
        else:
            assert mmu._intr is not None and mmu._intr[0] == 4  # data abort
    assert seen == 3
