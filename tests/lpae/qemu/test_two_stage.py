"""vaalloc's two-stage walk (``walk_two_stage``) against QEMU's, on random tables.

A guest's stage-1 tables (ARMv7 PL1&0 / AArch64 EL1&0) are addressed by IPA; stage 2 maps the
IPAs of the frames holding them onto themselves (identity, as a hypervisor maps guest RAM)
with random stage-2 attributes per page, so some stage-1 table reads take a stage-2 fault
(reported with S1PTW), and maps the guest's output IPAs to other PAs.  Both models translate
the same VAs for every access and privilege.

Compared: the output PA (data accesses), or the fault kind, level, stage and S1PTW.  QEMU 5.0
departs from the architecture on a stage-2 fault met by a stage-1 table read: it reports it
as a translation fault at the stage-1 walk's level (its ``do_fault`` overwrites the stage-2
fault's kind and level), so there only "stage 2, S1PTW" is compared.  What QEMU cannot say is
not compared: on AArch64 (where unicorn exposes no syndrome) a fetch fault is only known to
be a fault unless the read walk of the same address failed in the stage-1 walk itself (then
the fetch failed the same way);
on AArch32 an unprivileged fetch's stage-1 and stage-2 faults carry the same exception class.
The exclusions of ``test_differential`` apply to both stages.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("unicorn", reason="unicorn (test extra) is needed to run QEMU's MMU")

from hypothesis import given
from hypothesis import strategies as st

from tests.lpae.qemu.harness import QemuMMU, QemuOutcome, Regime
from tests.lpae.qemu.test_differential import (
    _PAGE_PA,
    KB4,
    MB2,
    _deepest_slot,
    _patched,
    accesses,
    attrs_strategy,
    excluded,
    patch_strategy,
    va_strategy,
)
from vaalloc.errors import VAAllocError
from vaalloc.lpae import (
    AARCH64_S1_48,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    Fault,
    Format,
    PageTable,
    PhysicalMemory,
    S2Attrs,
    Translation,
    aarch64_s2,
    walk_two_stage,
)
from vaalloc.lpae.walk import walk

PAIRS: dict[str, tuple[Format, Format]] = {
    "armv7-pl1+s2-40": (ARMV7_S1_PL1, ARMV7_S2_40),
    "aarch64-el1-48+s2-40": (AARCH64_S1_48, aarch64_s2(40)),
}
RAM = 0x8000_0000  # where vaalloc allocates the tables' frames
RAM_PAGES = 64  # identity-mapped at stage 2 (more frames than any example allocates)
_OUT_PA = 0xB000_0000  # where stage 2 sends the guest's output IPAs

_MMUS: dict[str, QemuMMU] = {}


def qemu_for(name: str) -> QemuMMU:
    mmu = _MMUS.get(name)
    if mmu is None:
        s1, s2 = PAIRS[name]
        mmu = _MMUS[name] = QemuMMU(Regime.from_format(s1), Regime.from_format(s2))
    return mmu


@st.composite
def scenarios(draw: st.DrawFn, name: str) -> dict[str, Any]:
    s1_fmt, s2_fmt = PAIRS[name]
    mem = PhysicalMemory(pa_bits=40)
    s2 = PageTable(mem, s2_fmt)
    s1 = PageTable(mem, s1_fmt)
    probes: list[int] = []
    for _ in range(draw(st.integers(1, 6))):
        va = draw(va_strategy(s1_fmt, KB4))
        block = draw(st.booleans())
        size = MB2 if block else draw(st.integers(1, 3)) * KB4
        va &= ~(size - 1) if block else ~0
        ipa = _PAGE_PA + (
            draw(st.integers(0, 3)) * MB2 if block else draw(st.integers(0, 63)) * KB4
        )
        try:
            s1.map(va, ipa, size, draw(attrs_strategy(s1_fmt)), replace=True)
        except VAAllocError:
            continue
        probes += [va, va + size - 8]
    for patch in draw(st.lists(patch_strategy(s1_fmt), max_size=3)):
        slot, level = _deepest_slot(s1, patch["va"], patch["level"])
        tables = [pa for _, pa in s1.tables()]
        mem.write64(slot, _patched(patch, mem.read64(slot), level, tables))
        probes.append(patch["va"])
    # Stage 2: the guest's table frames onto themselves, runs of pages with random attributes
    # (mostly readable with AF set, so most walks get through).
    page = 0
    while page < RAM_PAGES:
        run = draw(st.integers(1, 16))
        attrs = draw(attrs_strategy(s2_fmt)) if draw(st.integers(0, 3)) == 0 else S2Attrs()
        s2.map(RAM + page * KB4, RAM + page * KB4, min(run, RAM_PAGES - page) * KB4, attrs)
        page += run
    # ... and the guest's output IPAs to other PAs, pages and 2MB blocks.
    for i in range(4):
        s2.map(_PAGE_PA + i * MB2, _OUT_PA + i * MB2, MB2, draw(attrs_strategy(s2_fmt)))
    probes += draw(st.lists(va_strategy(s1_fmt, KB4), max_size=4))
    limit = 1 << (32 if s1_fmt.arch == "armv7" else 64)
    return {
        "mem": mem,
        "s1": s1,
        "s2": s2,
        "probes": sorted({va for va in probes if va < limit})[:24],
    }


def same(ours: Translation | Fault, theirs: QemuOutcome) -> bool:
    if isinstance(ours, Fault) and ours.s1ptw:
        # QEMU 5.0 overwrites a stage-2 fault met on a stage-1 table read with "translation"
        # at the stage-1 level (get_phys_addr_lpae's do_fault); only S1PTW and the stage are
        # comparable.
        return theirs.s1ptw in (None, True) and theirs.stage in (None, 2) and not theirs.ok
    if isinstance(ours, Fault) and theirs.fault == "unknown":
        return True
    if isinstance(ours, Fault):
        return (
            ours.kind == theirs.fault
            and theirs.level in (None, ours.level)
            and theirs.stage in (None, ours.stage)
            and theirs.s1ptw in (None, ours.s1ptw)
        )
    if theirs.access == "exec":
        return theirs.ok
    return theirs.pa == ours.pa


def two_stage_excluded(name: str, scenario: dict[str, Any], va: int, ours: Any) -> str | None:
    s1_fmt, s2_fmt = PAIRS[name]
    mem, s1, s2 = scenario["mem"], scenario["s1"], scenario["s2"]
    if isinstance(ours, Fault):
        if ours.stage == 2:
            reason = excluded(s2_fmt, mem, s2.root, ours.ipa or 0, ours)
            if reason or ours.s1ptw:
                return reason
            # A stage-2 fault on the stage-1 output: if stage 1 ended in a block with RES0
            # address bits set, QEMU ORed them in and faulted (or not) at another IPA. The
            # stage-1 tables are identity-mapped, so a stage-1-only walk finds that leaf.
            leaf = walk(mem, s1_fmt, s1.root, va, "read")
            return (
                excluded(s1_fmt, mem, s1.root, va, leaf) if isinstance(leaf, Translation) else None
            )
        return excluded(s1_fmt, mem, s1.root, va, ours)
    return excluded(s1_fmt, mem, s1.root, va, ours) or excluded(
        s2_fmt, mem, s2.root, ours.ipa, ours.s2
    )


@pytest.mark.parametrize("name", sorted(PAIRS))
@given(data=st.data())
def test_two_stage_walks_agree_with_qemu(name: str, data: st.DataObject) -> None:
    scenario = data.draw(scenarios(name), label="scenario")
    s1_fmt, s2_fmt = PAIRS[name]
    mem, s1, s2 = scenario["mem"], scenario["s1"], scenario["s2"]
    qemu = qemu_for(name)
    qemu.load(mem.frames(), s1.root, s2_root=s2.root)
    mismatches = []
    for va in scenario["probes"]:
        for access, user in accesses(s1_fmt):
            ours = walk_two_stage(mem, s1_fmt, s1.root, s2_fmt, s2.root, va, access, user)
            if two_stage_excluded(name, scenario, va, ours) is not None:
                continue
            theirs = qemu.translate(va, access, user)  # type: ignore[arg-type]
            if not same(ours, theirs):
                mismatches.append((hex(va), access, "user" if user else "priv", ours, theirs))
    assert not mismatches, "\n".join(map(str, mismatches)) + "\n" + s1.dump() + "\n" + s2.dump()
