"""vaalloc's walker against QEMU's, on random tables built with vaalloc's PageTable.

Each example maps pages, 2MB and 1GB blocks with random attributes (AF, AP, XN, PXN), then
patches descriptors in memory the way tools do: invalid entries (with junk in the ignored
bits) at every level, AF cleared, the reserved level-3 encoding, table attributes (APTable,
XNTable, PXNTable), and loops (a table entry pointing at its own table, an ancestor or any
other table, as the VLPT does).  The frames are copied into the emulator and the same virtual
addresses are translated by both, for every access kind and privilege: the outcome (output
address, or fault kind and level) must be the same.

Kept out of the comparison, because QEMU 5.0 (unicorn 2.1.4) departs from the architecture
there and vaalloc follows the architecture:

* address-size faults: QEMU raises none (it masks descriptor addresses to 40/48 bits);
* a block descriptor at a level the granule does not allow (level 0 with 4KB; levels 0 and 1
  with 16KB and 64KB): QEMU walks it as a block, the architecture makes it a translation
  fault;
* a block whose output address has bits set below the block size (RES0; a 2MB-block table
  read at level 1 through a loop makes them): QEMU ORs them into the output address.

An example whose addresses all fall in those cases still checks the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest

pytest.importorskip("unicorn", reason="unicorn (test extra) is needed to run QEMU's MMU")

from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from tests.lpae.qemu.harness import QemuMMU, QemuOutcome, Regime
from vaalloc.errors import VAAllocError
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
)

GB, MB2, KB4 = 1 << 30, 1 << 21, 1 << 12

FORMATS: dict[str, Format] = {
    "armv7-hyp": ARMV7_S1,
    "armv7-pl1": ARMV7_S1_PL1,
    "aarch64-el1-48": AARCH64_S1_48,
    "aarch64-el1-39": aarch64_s1(39),
    "aarch64-el2-48": AARCH64_S1_48_EL2,
    # Stage 2 alone (the p2m formats the VLPT reads), driven with the EL1 stage 1 off so the
    # address is the IPA.  AArch32 can only present a 32-bit IPA that way: the ARMv7 probes
    # stay below 4GB (the first four entries of the first concatenated root page).
    "armv7-s2-40": ARMV7_S2_40,
    "aarch64-s2-40": aarch64_s2(40),
    "aarch64-s2-44": aarch64_s2(44),
    # The other granules (QEMU 5.0 walks them whatever the CPU's ID registers say).
    "aarch64-el1-48-16k": aarch64_s1(48, granule=16384),
    "aarch64-el1-48-64k": aarch64_s1(48, granule=65536),
    "aarch64-s2-40-64k": aarch64_s2(40, granule=65536),
}

# Where addresses are drawn from: a few 1GB regions per format (distinct level-0 entries and
# the top of the range included), and inside them a few 2MB and 4KB slots at both ends, so that
# mappings share tables and meet at table boundaries.
#
# Units are the format's: a level-1 entry's span (1GB with 4KB pages), a level-2 entry's span
# (2MB) and the page.  Level-1 slots: first, second, middle (a level-0 boundary when there is a
# level 0) and last; level-2 and page slots: 0, 1, 2 and the last entry of their table.


def _slots(count: int) -> tuple[int, ...]:
    return tuple(sorted({0, 1, count // 2, count - 1} & set(range(count))))


# Output addresses: pages and level-2 blocks from 2.5GB, level-1 blocks from 4GB, clear of
# the frames vaalloc allocates tables from (upwards of 2GB) and of the harness page.
_PAGE_PA = 0xA000_0000
_GB_PA = 4 * GB

_MMUS: dict[str, QemuMMU] = {}


def qemu_for(name: str) -> QemuMMU:
    """One emulator per format for the whole module (creating one costs milliseconds)."""
    mmu = _MMUS.get(name)
    if mmu is None:
        mmu = _MMUS[name] = QemuMMU(Regime.from_format(FORMATS[name]))
    return mmu


@cache
def va_strategy(fmt: Format, align: int) -> st.SearchStrategy[int]:
    """Addresses aligned to ``align`` (a page, a level-2 or a level-1 span of ``fmt``)."""
    ia_bits = 32 if fmt.arch == "armv7" else fmt.ia_bits  # AArch32 stage 2: 32-bit probes
    l1, l2, page = fmt.block_size(1), fmt.block_size(2), fmt.granule
    entries = fmt.entries_per_table
    return st.builds(
        lambda a, b, c: (a * l1 + b * l2 + c * page) % (1 << ia_bits),  # when l1 > the input
        st.sampled_from(_slots(max(1, (1 << ia_bits) // l1))),
        st.sampled_from(_slots(entries)) if align < l1 else st.just(0),
        st.sampled_from(_slots(entries)) if align < l2 else st.just(0),
    )


@cache
def attrs_strategy(fmt: Format) -> st.SearchStrategy[S1Attrs | S2Attrs]:
    if fmt.stage == 2:
        return st.builds(
            S2Attrs,
            mem_attr=st.integers(0, 15),
            s2ap=st.integers(0, 3),
            af=st.booleans(),
            xn=st.booleans(),
            sw=st.integers(0, 15),
            contiguous=st.just(False),
        )
    return st.builds(
        S1Attrs,
        attr_indx=st.integers(0, 7),
        ap=st.integers(0, 3),
        af=st.booleans(),
        ng=st.booleans(),
        pxn=st.booleans(),
        xn=st.booleans(),
        sw=st.integers(0, 15),
        contiguous=st.just(False),
    )


@st.composite
def scenarios(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A PageTable with random mappings and raw patches, and the addresses to probe."""
    fmt = FORMATS[name]
    mem = PhysicalMemory(pa_bits=40)
    pt = PageTable(mem, fmt)
    probes: list[int] = []
    page, l2, l1 = fmt.granule, fmt.block_size(2), fmt.block_size(1)
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["page", "page", "block2", "block1"]))
        if kind == "block1" and not fmt.can_block(1):
            kind = "block2"  # 16KB/64KB: no level-1 blocks
        attrs = draw(attrs_strategy(fmt))
        if kind == "page":
            va = draw(va_strategy(fmt, page))
            size = draw(st.integers(1, 3)) * page
            pa = _PAGE_PA + draw(st.integers(0, 255)) * page
        elif kind == "block2":
            va = draw(va_strategy(fmt, l2))
            size = l2
            pa = _PAGE_PA + draw(st.integers(0, 3)) * l2
        else:
            va = draw(va_strategy(fmt, l1))
            size = l1
            pa = _GB_PA + draw(st.integers(0, 3)) * l1
        try:
            pt.map(va, pa, size, attrs, replace=True)
        except VAAllocError:
            continue  # e.g. a run crossing the top of the input range
        probes += [va, va + size - 8, va + draw(st.integers(0, size - 1))]
    mapped = sorted(set(probes))
    patches = draw(st.lists(patch_strategy(fmt), max_size=5))
    for patch in patches:
        va, level = patch["va"], patch["level"]
        if mapped and patch["on_mapping"]:
            va = mapped[patch["target"] % len(mapped)]  # an entry the walk reaches
        probes.append(va)
        slot, level = _deepest_slot(pt, va, level)
        old = mem.read64(slot)
        tables = [pa for _, pa in pt.tables()]
        new = _patched(patch, old, level, tables)
        mem.write64(slot, new)
        if new != old:
            event(f"patched: {patch['kind']}")
        # Addresses under the patched entry, reached through it (e.g. through a loop).
        span = fmt.block_size(level)
        base = va & ~(span - 1)
        probes += [base + off * (span // 512) for off in patch["offsets"]]
    probes += draw(st.lists(va_strategy(fmt, page), max_size=4))
    limit = 1 << (32 if fmt.arch == "armv7" else 64)  # AArch32 addresses are 32-bit
    return {"mem": mem, "pt": pt, "probes": sorted({va for va in probes if va < limit})[:32]}


def _deepest_slot(pt: PageTable, va: int, level: int) -> tuple[int, int]:
    """The descriptor slot the walk of ``va`` reads at ``level``, or at the deepest level above
    it that the walk reaches (where it stops on a block or an invalid entry)."""
    for lvl in range(level, pt.fmt.start_level, -1):
        try:
            return pt.entry_pa(va, lvl), lvl
        except VAAllocError:
            continue
    return pt.entry_pa(va, pt.fmt.start_level), pt.fmt.start_level


@cache
def patch_strategy(fmt: Format) -> st.SearchStrategy[dict[str, Any]]:
    return _patch(fmt)


@st.composite
def _patch(draw: st.DrawFn, fmt: Format) -> dict[str, Any]:
    kinds = ["invalid", "clear-af", "set-af", "reserved", "loop", "loop", "table", "table"]
    kind = draw(st.sampled_from(kinds))
    top = 2 if kind == "table" else 3  # table attributes live in table descriptors
    return {
        "kind": kind,
        "va": draw(va_strategy(fmt, fmt.granule)),
        "level": draw(st.integers(fmt.start_level, top)),
        "junk": draw(st.integers(0, (1 << 64) - 1)),
        "target": draw(st.integers(0, 1 << 16)),
        "table_bits": draw(st.integers(0, 15)) << 59,  # PXNTable, XNTable, APTable[1:0]
        "af": draw(st.booleans()),
        "on_mapping": draw(st.integers(0, 3)) > 0,
        "offsets": draw(st.lists(st.integers(0, 511), min_size=1, max_size=3)),
    }


def _patched(patch: dict[str, Any], old: int, level: int, tables: list[int]) -> int:
    kind = patch["kind"]
    if kind == "invalid":
        return patch["junk"] & ~1  # bit 0 clear: invalid whatever the rest holds
    if kind == "clear-af":
        return old & ~(1 << 10)
    if kind == "set-af":
        return old | (1 << 10)
    if kind == "reserved":
        return (old & ~2) | 1 if level == 3 else old  # 0b01 at level 3
    if kind == "table":
        # APTable/XNTable/PXNTable on a table descriptor (ignored on a leaf... by level)
        return old | patch["table_bits"] if old & 3 == 3 and level < 3 else old
    # loop: point the entry at one of the tables (its own, an ancestor or any other): a table
    # descriptor above level 3, a page mapping a table frame at level 3 (the VLPT view).
    target = tables[patch["target"] % len(tables)]
    return target | 0b11 | (1 << 10 if patch["af"] else 0) | patch["table_bits"]


def descriptor_at(fmt: Format, mem: PhysicalMemory, root: int, va: int, level: int) -> int | None:
    """The descriptor the walk of ``va`` reads at ``level``, or None if it stops above."""
    table = root
    for current in range(fmt.start_level, level + 1):
        entries = fmt.root_entries if current == fmt.start_level else fmt.entries_per_table
        desc = mem.read64(table + (((va >> fmt.shifts[current]) & (entries - 1)) << 3))
        if current == level:
            return desc
        if desc & 3 != 3:
            return None
        table = desc & fmt.addr_mask
    return None


def excluded(fmt: Format, mem: PhysicalMemory, root: int, va: int, ours: Any) -> str | None:
    """Why ``va`` is kept out of the comparison (a QEMU departure), or None."""
    if isinstance(ours, Fault):
        if ours.kind == "address-size":
            return "address-size fault (QEMU raises none)"
        if ours.kind == "translation" and ours.level < fmt.first_block_level:
            desc = descriptor_at(fmt, mem, root, va, ours.level)
            if desc is not None and desc & 3 == 1:
                return "block at a level the granule forbids (QEMU walks it)"
        return None
    low = ours.descriptor & fmt.addr_mask & (ours.block_size - 1)
    if low:
        return "block with RES0 address bits set (QEMU ORs them in)"
    return None


def same(ours: Translation | Fault | int, theirs: QemuOutcome) -> bool:
    """Same outcome: same fault kind and level, or both translate (to the same PA for data;
    a fetch reports no PA).  ``ours`` may be a bare PA (``PageTable.translate_pa``)."""
    if isinstance(ours, Fault):
        return (ours.kind, ours.level, ours.stage) == (theirs.fault, theirs.level, theirs.stage)
    if theirs.access == "exec":
        return theirs.ok
    return theirs.pa == (ours if isinstance(ours, int) else ours.pa)


def lean(pt: PageTable, va: int, access: str, user: bool) -> int | Fault:
    """The lean path (``translate_pa``, used by the MMU's hot loops): a PA or the Fault."""
    try:
        return pt.translate_pa(va, access, user)
    except FaultError as err:
        return err.fault


def accesses(fmt: Format) -> Iterator[tuple[str, bool]]:
    for user in (False, True) if fmt.regime == "el1&0" else (False,):
        for access in ("read", "write", "exec"):
            yield access, user


def note(what: str) -> None:
    """A hypothesis statistics event, when running under hypothesis."""
    if currently_in_test_context():
        event(what)


def check(name: str, scenario: dict[str, Any]) -> None:
    fmt = FORMATS[name]
    mem, pt = scenario["mem"], scenario["pt"]
    qemu = qemu_for(name)
    qemu.load(mem.frames(), pt.root)
    compared = 0
    mismatches = []
    for va in scenario["probes"]:
        for access, user in accesses(fmt):
            ours = pt.walk(va, access, user=user)
            why = excluded(fmt, mem, pt.root, va, ours)
            if why is not None:
                note(f"excluded: {why}")
                continue
            theirs = qemu.translate(va, access, user)  # type: ignore[arg-type]
            compared += 1
            who = "user" if user else "priv"
            if not same(ours, theirs):
                mismatches.append(("walk", hex(va), access, who, ours, theirs))
            quick = lean(pt, va, access, user)
            if not same(quick, theirs):
                mismatches.append(("translate_pa", hex(va), access, who, quick, theirs))
    note(f"compared {min(compared // 20 * 20, 200)}+ accesses")
    assert not mismatches, "\n".join(map(str, mismatches)) + "\n" + pt.dump()


@pytest.mark.parametrize("name", sorted(FORMATS))
@given(data=st.data())
def test_walks_agree_with_qemu(name: str, data: st.DataObject) -> None:
    check(name, data.draw(scenarios(name), label="scenario"))


STAGE1 = sorted(name for name, fmt in FORMATS.items() if fmt.stage == 1 and fmt.granule == KB4)


@pytest.mark.parametrize("name", STAGE1)
def test_every_table_attribute_combination_agrees_with_qemu(name: str) -> None:
    """APTable, XNTable and PXNTable, all 16 combinations, on the table descriptor of each
    level above a page, a 2MB block and a 1GB block, with leaves of every AP and XN/PXN.
    Exhaustive where the random test samples."""
    fmt = FORMATS[name]
    for level in range(fmt.start_level, 3):
        for bits in range(16):
            mem = PhysicalMemory(pa_bits=40)
            pt = PageTable(mem, fmt)
            probes = []
            for i, (ap, xn, pxn) in enumerate(
                (ap, xn, pxn) for ap in range(4) for xn in (False, True) for pxn in (False, True)
            ):
                attrs = S1Attrs(ap=ap, xn=xn, pxn=pxn)
                pt.map((i + 1) * KB4, _PAGE_PA + i * KB4, KB4, attrs)
                pt.map((i + 1) * MB2 * 2, _PAGE_PA + i * MB2 * 2, MB2, attrs)
                probes += [(i + 1) * KB4, (i + 1) * MB2 * 2]
            pt.map(GB, _GB_PA, GB, S1Attrs(ap=1))
            probes.append(GB + 0x1234)
            for va in (KB4, 2 * MB2):
                slot = pt.entry_pa(va, level)
                mem.write64(slot, mem.read64(slot) | bits << 59)
            if level < 1:
                slot = pt.entry_pa(GB, level)
                mem.write64(slot, mem.read64(slot) | bits << 59)
            check(name, {"mem": mem, "pt": pt, "probes": probes})
