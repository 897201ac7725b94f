"""docs/design.md's promise, checked against QEMU's Cortex-A15 (through unicorn): dump the model's
memory into the emulator, point HTTBR at ``xen.httbr(cpu)``, and the VLPT addresses translate
where the model says, to the p2m entries themselves."""

from __future__ import annotations

import pytest

from tests.lpae.qemu.harness import QemuMMU, Regime
from vaalloc.lpae import ARMV7_S1, Translation
from vaalloc.xen import Xen
from vaalloc.xen import layout as L

MB = 1 << 20
GB = 1 << 30


@pytest.fixture(scope="module")
def system() -> Xen:
    xen = Xen(cpus=2)
    small = xen.create_domain(ram=6 * MB, superpages=True)
    big = xen.create_domain(ram=GB + 4 * MB)  # two slots
    xen.logdirty.enable(small)
    xen.logdirty.enable(big)
    xen.guest_write(small, small.ram_base + 2 * MB + 0x7000)  # splits a superpage
    xen.guest_write(big, big.ram_base + GB + 0x3000, cpu=1)
    return xen


@pytest.mark.parametrize("cpu", [0, 1])
def test_qemu_reads_the_vlpt_like_the_model(system: Xen, cpu: int) -> None:
    xen = system
    qemu = QemuMMU(Regime.from_format(ARMV7_S1))
    qemu.load(xen.mem.frames(), xen.httbr(cpu))
    checked = 0
    for d in xen.domains.values():
        for ipa in range(d.ram_base, d.ram_end, 2 * MB):
            for probe in (ipa, ipa + 0x7000):
                entry_l2 = xen.mem.read64(d.p2m.entry_pa(probe, 2))
                sva = xen.vlpt.second_va(d, probe)
                out = qemu.translate(sva, "read")
                assert out.ok and out.pa is not None
                assert xen.mem.read64(out.pa) == entry_l2 == xen.read_va(cpu, sva)
                t = d.p2m.walk(probe)
                assert isinstance(t, Translation)
                tva = xen.vlpt.third_va(d, probe)
                out = qemu.translate(tva, "write")  # Xen writes the leaf through this VA
                if t.level == 3:
                    assert out.ok and out.pa is not None
                    assert xen.mem.read64(out.pa) == t.descriptor == xen.read_va(cpu, tva)
                else:  # a 2MB block read at hyp level 3 is invalid
                    assert (out.fault, out.level) == ("translation", 3)
                checked += 1
    assert checked > 500
    # An unused window slot faults at level 2 in both.
    unused = (L.VLPT_LOOP_SLOT - 1) << 21
    out = qemu.translate(unused, "read")
    assert (out.fault, out.level) == ("translation", 2)
