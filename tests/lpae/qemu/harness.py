"""Ask QEMU's ARM MMU (through unicorn 2.1.4) how it translates an address.

This is the reference side of the differential tests in this package: given the physical
frames that hold some translation tables, a regime and a root, :class:`QemuMMU` reports what
QEMU's table walker (``get_phys_addr_lpae`` in QEMU 5.0, which unicorn 2.1.4 embeds) does with
a virtual address: the physical address it reaches, or the fault kind and level it reports.

How it is driven (each point was found by experiment; see the tests in ``test_harness.py``):

* **The walker under test never runs our code.**  The stub runs at the highest exception level
  (AArch32 Monitor mode; AArch64 EL3) with that level's MMU off, so its own fetches are flat and
  independent of the tables under test.  Security state is Non-secure (SCR.NS = 1), as a
  hypervisor or kernel sees it; on AArch64 SCR_EL3.RW and HCR_EL2.RW make EL2 and EL1 AArch64
  (without RW, QEMU walks EL1's tables with the AArch32 walker).
* **Data accesses are address-translation instructions**, which run the same
  ``get_phys_addr`` as a load or store and write the result to PAR: ATS1HR/ATS1HW (ARMv7 hyp
  regime, Xen's HTTBR), ATS12NSOPR/OPW/OUR/OUW with stage 2 off (ARMv7 PL1&0), AT S1E1R/W,
  S1E0R/W, S1E2R/W (AArch64).  PAR gives the output address or the long-descriptor fault
  status (FST: kind and level).  Loads themselves cannot be used: the load instruction would
  have to be fetched through the tables under test.
* **Instruction fetches are exception returns to the address under test** (MOVS PC, LR from
  Monitor into Hyp/SVC/User mode; ERET from EL3 into EL2h/EL1h/EL0t), stopping before the
  instruction executes.  A prefetch abort reaches unicorn's interrupt hook (number 3) and is
  not delivered to the guest.  On AArch32 unicorn exposes the exception syndrome
  (``UC_ARM_REG_ESR``), whose IFSC gives kind and level.  On AArch64 it exposes none (ESR_EL*
  is only written when an exception is delivered), so an AArch64 fetch fault takes its kind
  and level from the read walk of the same address: QEMU's walk does not depend on the access
  type until the permission check, so a read fault is the fetch's fault, and a fetch refused
  after a successful read walk is a permission fault at the leaf's level
  (``QemuOutcome.derived`` says so).
* **Unicorn artefact:** stopping at a page-aligned address makes unicorn translate the page
  *before* it (it sizes the empty stop block as 0 bytes and QEMU checks its "last byte"), so a
  fetch probe at a page-aligned VA stops at VA + 4, in the same 4KB page.
* Unicorn does not expose which bank of an AArch32 register an address-translation operation
  wrote from Monitor mode: QEMU writes PAR's Secure copy (the current state is Secure in
  Monitor mode) even with SCR.NS = 1, so the harness reads that copy.
* Physical memory: each populated frame is mapped at its PA, and so is a zero page behind
  every ``0b11`` descriptor's address (where a walk may read next), so memory the model holds
  as zeros also reads as zeros in QEMU (an unmapped PA would be an external abort instead).

* **Stage 2** is driven alone (regime ``"s2"``: EL1's stage 1 off, so the address is the IPA;
  AArch32 can only present a 32-bit IPA that way) or behind an EL1&0 stage 1
  (``QemuMMU(stage1, stage2)``: ATS12NSO* / AT S12E*, HCR.VM = 1).  PAR.S and PAR.PTW give the
  faulting stage and S1PTW.  Two-stage fetch faults are only partly known: on AArch32 the
  exception class tells a PL1 fetch's stage-1 fault (EC 0x21, taken at PL1) from a stage-2 one
  (EC 0x20, taken to Hyp); on AArch64 a fetch fault is ``"unknown"`` unless the read walk
  failed in the stage-1 walk itself.

QEMU departs from the architecture in ways the tests keep out of the comparison:
no address-size faults (output addresses are masked to 40 bits on AArch32, 48 on AArch64),
a block descriptor at a level where the granule allows none (level 0 with 4KB, levels 0-1
with 16KB/64KB) is walked as a block, the low bits of a
block's output address (RES0) are ORed into the result, PXN/PXNTable are ignored in the ARMv7
hyp regime (where the architecture makes PXN RES0 anyway), and a stage-2 fault on a stage-1
table read is reported as a translation fault at the stage-1 level (``do_fault`` overwrites the
stage-2 fault's kind and level; PAR.S and PAR.PTW are right).  A stage-2 input wider than the
CPU's PA range (44 bits on the Cortex-A72) always faults in QEMU, so the harness refuses it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from unicorn import UC_ARCH_ARM, UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc, UcError
from unicorn import arm64_const as a64
from unicorn import arm_const as a32
from unicorn.unicorn_const import (
    UC_CTL_IO_WRITE,
    UC_CTL_TLB_FLUSH,
    UC_ERR_FETCH_UNMAPPED,
    UC_PROT_ALL,
)

__all__ = [
    "HARNESS_PA",
    "QemuMMU",
    "QemuOutcome",
    "Regime",
    "decode_fsc",
    "qemu_translate",
]

Access = Literal["read", "write", "exec"]
PAGE = 0x1000

HARNESS_PA = 0x1000
"""Physical page holding the stub (below 4GB: AArch32 Monitor mode runs it with its MMU off).
Frames under test must not use it; vaalloc's RAM starts at 2GB by default."""

# Long-descriptor fault status codes (DFSC/IFSC/PAR.FST bits 5:2 with the level in 1:0).
_FSC_KINDS = {
    0b0000: "address-size",
    0b0001: "translation",
    0b0010: "access-flag",
    0b0011: "permission",
    0b0101: "external-abort-on-walk",
}

EXCP_PREFETCH_ABORT = 3  # QEMU's exception number, passed to UC_HOOK_INTR


def decode_fsc(fsc: int) -> tuple[str, int | None]:
    """(kind, level) of a 6-bit long-descriptor fault status code; unknown codes give
    ``("fsc:0x..", None)`` so a test fails with the raw value in its message."""
    kind = _FSC_KINDS.get(fsc >> 2)
    if kind is None:
        return (f"fsc:{fsc:#x}", None)
    return (kind, fsc & 3)


@dataclass(frozen=True)
class Regime:
    """A stage-1 translation regime QEMU is asked to walk.

    arch: ``"armv7"`` (Cortex-A15, LPAE) or ``"aarch64"`` (Cortex-A72).
    el: ``"el2"`` (ARMv7 hyp / HTTBR, AArch64 EL2 / TTBR0_EL2), ``"el1&0"`` (ARMv7 PL1&0 with
      TTBCR.EAE=1 and TTBR0 covering the space; AArch64 EL1&0 through TTBR0_EL1) or ``"s2"``
      (stage 2 alone, VTTBR/VTCR, with the EL1 stage 1 off so the input address is the IPA).
    ia_bits: input size: 32 - T0SZ on ARMv7 (stage 2: signed T0SZ, 40 - 32 = 8 for 40 bits),
      64 - T0SZ on AArch64.
    granule: translation granule (AArch64 may use 16KB/64KB; ARMv7 is 4KB only).
    oa_bits: TCR.IPS / TCR_EL2.PS / VTCR.PS (AArch64; QEMU 5.0 checks none of them).
    start_level: stage 2 only: the level VTCR.SL0 selects (stage 1 derives it from T0SZ).
    """

    arch: Literal["armv7", "aarch64"]
    el: Literal["el2", "el1&0", "s2"]
    ia_bits: int
    granule: int = PAGE
    oa_bits: int = 48
    start_level: int = 1

    @classmethod
    def from_format(cls, fmt: Any) -> Regime:
        """The regime of a ``vaalloc.lpae.Format`` (stage 1 only)."""
        return cls(fmt.arch, fmt.regime, fmt.ia_bits, fmt.granule, fmt.oa_bits, fmt.start_level)

    @property
    def t0sz(self) -> int:
        return (32 if self.arch == "armv7" else 64) - self.ia_bits

    @property
    def has_user(self) -> bool:
        return self.el == "el1&0"

    @property
    def first_level(self) -> int:
        """The level QEMU starts the walk at (stage 1: ``4 - (ia_bits - 4) // stride``)."""
        if self.el == "s2":
            return self.start_level
        return 4 - (self.ia_bits - 4) // (self.granule.bit_length() - 4)

    @property
    def vtcr(self) -> int:
        """VTCR / VTCR_EL2 for this stage-2 geometry (inner shareable write-back walks)."""
        sl0 = (2 if self.granule == PAGE else 3) - self.start_level
        value = (1 << 31) | _TCR_WALK_ATTRS | (sl0 << 6)
        if self.arch == "armv7":
            t0sz = (32 - self.ia_bits) & 0xF
            return value | ((t0sz >> 3) << 4) | t0sz  # S (bit 4) repeats T0SZ's sign
        return value | (_PS[self.oa_bits] << 16) | (_TG0[self.granule] << 14) | self.t0sz


@dataclass(frozen=True)
class QemuOutcome:
    """What QEMU did with one access.

    pa: output address (data accesses that translated), else None.  Fetches report no PA.
    fault: None on success, else ``"translation"``, ``"access-flag"``, ``"permission"``,
      ``"address-size"``, ``"external-abort-on-walk"``, ``"fsc:0x.."``, or ``"unknown"`` (an
      AArch64 two-stage fetch fault whose cause the read walk cannot tell).
    level: the level the fault status reports.
    raw: PAR (data) or the exception syndrome (AArch32 fetch); 0 for other fetches.
    derived: True for an AArch64 fetch fault whose kind and level come from the read walk.
    stage: the stage that faulted (PAR.S for data; the regime's stage for fetches); None when
      QEMU's report does not say (a two-stage fetch fault seen only as "permission").
    s1ptw: the fault happened on a stage-1 table read translated by stage 2 (PAR.PTW, or ISS
      bit 7 of an AArch32 syndrome); None when unknown.
    """

    va: int
    access: Access
    user: bool
    pa: int | None
    fault: str | None
    level: int | None
    raw: int
    derived: bool = False
    stage: int | None = 1
    s1ptw: bool | None = False

    @property
    def ok(self) -> bool:
        return self.fault is None


# -- stubs --------------------------------------------------------------------------------
# One 16-byte slot per operation: the operation, ISB, then the stop address (slot + 8).
_SLOT = 0x10
_STOP = 0x08

_A32_NOP = bytes.fromhex("00f020e3")
_A32_ISB = bytes.fromhex("6ff07ff5")
_A32_SLOTS = {
    ("el2", "read", False): bytes.fromhex("180f87ee"),  # mcr p15, 4, r0, c7, c8, 0  ATS1HR
    ("el2", "write", False): bytes.fromhex("380f87ee"),  # mcr p15, 4, r0, c7, c8, 1  ATS1HW
    ("el1&0", "read", False): bytes.fromhex("980f07ee"),  # mcr p15, 0, r0, c7, c8, 4  ATS12NSOPR
    ("el1&0", "write", False): bytes.fromhex("b80f07ee"),  # ... c7, c8, 5  ATS12NSOPW
    ("el1&0", "read", True): bytes.fromhex("d80f07ee"),  # ... c7, c8, 6  ATS12NSOUR
    ("el1&0", "write", True): bytes.fromhex("f80f07ee"),  # ... c7, c8, 7  ATS12NSOUW
    ("s2", "read", False): bytes.fromhex("980f07ee"),  # ATS12NSOPR, stage 1 off
    ("s2", "write", False): bytes.fromhex("b80f07ee"),  # ATS12NSOPW, stage 1 off
}
_A32_RETURN = bytes.fromhex("0ef0b0e1")  # movs pc, lr

_A64_NOP = bytes.fromhex("1f2003d5")
_A64_ISB = bytes.fromhex("df3f03d5")
_A64_SLOTS = {
    ("el1&0", "read", False): bytes.fromhex("007808d5"),  # at s1e1r, x0
    ("el1&0", "write", False): bytes.fromhex("207808d5"),  # at s1e1w, x0
    ("el1&0", "read", True): bytes.fromhex("407808d5"),  # at s1e0r, x0
    ("el1&0", "write", True): bytes.fromhex("607808d5"),  # at s1e0w, x0
    ("el2", "read", False): bytes.fromhex("00780cd5"),  # at s1e2r, x0
    ("el2", "write", False): bytes.fromhex("20780cd5"),  # at s1e2w, x0
    ("s2", "read", False): bytes.fromhex("80780cd5"),  # at s12e1r, x0 (stage 1 off)
    ("s2", "write", False): bytes.fromhex("a0780cd5"),  # at s12e1w, x0 (stage 1 off)
    ("s12", "read", False): bytes.fromhex("80780cd5"),  # at s12e1r, x0
    ("s12", "write", False): bytes.fromhex("a0780cd5"),  # at s12e1w, x0
    ("s12", "read", True): bytes.fromhex("c0780cd5"),  # at s12e0r, x0
    ("s12", "write", True): bytes.fromhex("e0780cd5"),  # at s12e0w, x0
}
_A64_RETURN = bytes.fromhex("e0039fd6")  # eret


def _stub(
    slots: dict[tuple[str, str, bool], bytes], isb: bytes, nop: bytes, ret: bytes
) -> tuple[bytes, dict[tuple[str, str, bool], int], int]:
    code = bytearray()
    offsets: dict[tuple[str, str, bool], int] = {}
    for key, insn in slots.items():
        offsets[key] = len(code)
        code += insn + isb + nop + nop
    ret_offset = len(code)
    code += ret + nop + nop + nop
    return bytes(code), offsets, ret_offset


# AArch32 CPSR modes and the CP15 registers used (cp, is64, sec, crn, crm, opc1, opc2).
_MODE_USR, _MODE_SVC, _MODE_MON, _MODE_HYP = 0x10, 0x13, 0x16, 0x1A
_AIF = 0x1C0  # asynchronous aborts, IRQ and FIQ masked
_CP_SCR = (15, 0, 0, 1, 1, 0, 0)
_CP_HCR = (15, 0, 0, 1, 1, 4, 0)
_CP_HSCTLR = (15, 0, 0, 1, 0, 4, 0)
_CP_HTCR = (15, 0, 0, 2, 0, 4, 2)
_CP_HMAIR0 = (15, 0, 0, 10, 2, 4, 0)
_CP_HMAIR1 = (15, 0, 0, 10, 2, 4, 1)
_CP_HTTBR = (15, 1, 0, 0, 2, 4, 0)
_CP_SCTLR_NS = (15, 0, 0, 1, 0, 0, 0)
_CP_TTBCR_NS = (15, 0, 0, 2, 0, 0, 2)
_CP_MAIR0_NS = (15, 0, 0, 10, 2, 0, 0)
_CP_MAIR1_NS = (15, 0, 0, 10, 2, 0, 1)
_CP_TTBR0_NS = (15, 1, 0, 0, 2, 0, 0)
_CP_PAR_S = (15, 1, 1, 0, 7, 0, 0)
_CP_VTCR = (15, 0, 0, 2, 1, 4, 2)
_CP_VTTBR = (15, 1, 0, 0, 2, 6, 0)

# AArch64 system registers (crn, crm, op0, op1, op2).
_SR_SCR_EL3 = (1, 1, 3, 6, 0)
_SR_HCR_EL2 = (1, 1, 3, 4, 0)
_SR_SCTLR_EL1 = (1, 0, 3, 0, 0)
_SR_SCTLR_EL2 = (1, 0, 3, 4, 0)
_SR_TCR_EL1 = (2, 0, 3, 0, 2)
_SR_TCR_EL2 = (2, 0, 3, 4, 2)
_SR_MAIR_EL1 = (10, 2, 3, 0, 0)
_SR_MAIR_EL2 = (10, 2, 3, 4, 0)
_SR_TTBR0_EL1 = (2, 0, 3, 0, 0)
_SR_TTBR0_EL2 = (2, 0, 3, 4, 0)
_SR_VTCR_EL2 = (2, 1, 3, 4, 2)
_SR_VTTBR_EL2 = (2, 1, 3, 4, 0)
_SR_SPSR_EL3 = (4, 0, 3, 6, 0)
_SR_ELR_EL3 = (4, 0, 3, 6, 1)
_PSTATE_EL3H = 0x3CD
_SPSR_EL = {"el2": 0x3C9, "el1": 0x3C5, "el0": 0x3C0}  # DAIF masked, EL2h / EL1h / EL0t

_SCTLR_M = 1 << 0
_SCTLR_A = 1 << 1
_SCTLR_WXN = 1 << 19
_SCTLR_UWXN = 1 << 20
_TCR_WALK_ATTRS = (3 << 12) | (1 << 10) | (1 << 8)  # inner shareable, write-back walks
# Every AttrIndx selects Normal write-back memory, so no access depends on memory type.
_MAIR32_NORMAL = 0xFFFF_FFFF
_MAIR64_NORMAL = (1 << 64) - 1
_TG0 = {4096: 0, 65536: 1, 16384: 2}
_PS = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5}


class QemuMMU:
    """One unicorn CPU set up to walk one regime; reuse it across tables with :meth:`load`.

    ``load(frames, root)`` replaces physical memory and the root; ``translate(va, access,
    user)`` returns a :class:`QemuOutcome`.  Cost: creation ~ms; load ~ O(frames);
    translate ~ one short emulation run (tens of microseconds).
    """

    def __init__(self, regime: Regime, stage2: Regime | None = None) -> None:
        if regime.arch == "armv7" and regime.el != "s2" and not 31 <= regime.ia_bits <= 32:
            # T0SZ 0..1 starts the walk at level 1 (4 or 2 root entries); T0SZ >= 2 starts it
            # at level 2, a geometry vaalloc's AArch32 stage-1 formats do not have.
            raise ValueError(f"{regime}: ARMv7 LPAE stage 1 is driven with T0SZ 0..1")
        if regime.arch == "armv7" and regime.granule != PAGE:
            raise ValueError(f"{regime}: AArch32 LPAE has only the 4KB granule")
        if regime.arch == "aarch64" and not 16 <= regime.t0sz <= 39:
            raise ValueError(f"{regime}: QEMU 5.0 clamps T0SZ to 16..39")
        if regime.arch == "aarch64" and regime.el == "s2" and regime.ia_bits > 44:
            # Cortex-A72's PA range is 44 bits: QEMU faults every walk of a wider IPA.
            raise ValueError(f"{regime}: a stage-2 input wider than the CPU's 44-bit PA range")
        if stage2 is not None and (
            regime.el != "el1&0" or stage2.el != "s2" or stage2.arch != regime.arch
        ):
            raise ValueError(f"{regime} + {stage2}: two stages are EL1&0 stage 1 and a stage 2")
        self.regime = regime
        self.stage2 = stage2
        self._mapped: list[tuple[int, int]] = []
        self._root = 0
        self._intr: tuple[int, int] | None = None
        if regime.arch == "armv7":
            self._uc = Uc(UC_ARCH_ARM, UC_MODE_ARM, a32.UC_CPU_ARM_CORTEX_A15)
            code, self._slots, self._ret = _stub(_A32_SLOTS, _A32_ISB, _A32_NOP, _A32_RETURN)
        else:
            self._uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM, a64.UC_CPU_ARM64_A72)
            code, self._slots, self._ret = _stub(_A64_SLOTS, _A64_ISB, _A64_NOP, _A64_RETURN)
        self._uc.mem_map(HARNESS_PA, PAGE, UC_PROT_ALL)
        self._uc.mem_write(HARNESS_PA, code)
        self._uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        if regime.arch == "armv7":
            self._setup_armv7()
            if stage2 is not None:
                self._cp(_CP_HCR, 1)  # VM: ATS12NSO* and PL1 fetches go through stage 2
                self._cp(_CP_VTCR, stage2.vtcr)
        else:
            self._setup_aarch64()
            if stage2 is not None:
                self._cp(_SR_HCR_EL2, (1 << 31) | 1)  # RW, VM
                self._cp(_SR_VTCR_EL2, stage2.vtcr)

    # -- CPU set-up -------------------------------------------------------------------------

    def _cp(self, reg: tuple[int, ...], value: int | None = None) -> int:
        uc = self._uc
        if self.regime.arch == "armv7":
            if value is None:
                return int(uc.reg_read(a32.UC_ARM_REG_CP_REG, reg))
            uc.reg_write(a32.UC_ARM_REG_CP_REG, (*reg, value))
        else:
            if value is None:
                return int(uc.reg_read(a64.UC_ARM64_REG_CP_REG, reg))
            uc.reg_write(a64.UC_ARM64_REG_CP_REG, (*reg, value))
        return value

    def _enter_monitor(self) -> None:
        # Unicorn refuses a CPSR write that enters Monitor mode from SVC/Hyp (QEMU's
        # bad_mode_switch), but switches banks freely out of User mode.
        self._uc.reg_write(a32.UC_ARM_REG_CPSR, _AIF | _MODE_USR)
        self._uc.reg_write(a32.UC_ARM_REG_CPSR, _AIF | _MODE_MON)

    def _enter_el3(self) -> None:
        self._uc.reg_write(a64.UC_ARM64_REG_PSTATE, _PSTATE_EL3H)
        # A system-register write makes unicorn rebuild QEMU's cached hflags for EL3.
        self._cp(_SR_SCR_EL3, 0x401)  # NS | RW: lower levels Non-secure and AArch64

    def _setup_armv7(self) -> None:
        r = self.regime
        self._enter_monitor()
        self._cp(_CP_SCR, 0x1)  # NS: the regimes walked are the Non-secure ones
        self._cp(_CP_HCR, 1 if r.el == "s2" else 0)  # VM: stage 2 behind ATS12NSO*
        if r.el == "s2":
            self._cp(_CP_VTCR, r.vtcr)
            sctlr = self._cp(_CP_SCTLR_NS)
            self._cp(_CP_SCTLR_NS, sctlr & ~_SCTLR_M)  # stage 1 off: the VA is the IPA
        elif r.el == "el2":
            self._cp(_CP_HTCR, (1 << 31) | _TCR_WALK_ATTRS | r.t0sz)
            self._cp(_CP_HMAIR0, _MAIR32_NORMAL)
            self._cp(_CP_HMAIR1, _MAIR32_NORMAL)
            sctlr = self._cp(_CP_HSCTLR)
            self._cp(_CP_HSCTLR, (sctlr | _SCTLR_M) & ~(_SCTLR_A | _SCTLR_WXN))
        else:
            self._cp(_CP_TTBCR_NS, (1 << 31) | _TCR_WALK_ATTRS | r.t0sz)  # EAE, T1SZ = 0
            self._cp(_CP_MAIR0_NS, _MAIR32_NORMAL)
            self._cp(_CP_MAIR1_NS, _MAIR32_NORMAL)
            sctlr = self._cp(_CP_SCTLR_NS)
            self._cp(_CP_SCTLR_NS, (sctlr | _SCTLR_M) & ~(_SCTLR_A | _SCTLR_WXN | _SCTLR_UWXN))

    def _setup_aarch64(self) -> None:
        r = self.regime
        self._enter_el3()
        self._cp(_SR_HCR_EL2, (1 << 31) | (1 if r.el == "s2" else 0))  # RW (EL1 AArch64), VM
        tcr = _TCR_WALK_ATTRS | (_TG0[r.granule] << 14) | r.t0sz
        if r.el == "s2":
            self._cp(_SR_VTCR_EL2, r.vtcr)
            sctlr = self._cp(_SR_SCTLR_EL1)
            self._cp(_SR_SCTLR_EL1, sctlr & ~_SCTLR_M)  # stage 1 off: the VA is the IPA
        elif r.el == "el2":
            self._cp(_SR_TCR_EL2, tcr | (1 << 31) | (1 << 23) | (_PS[r.oa_bits] << 16))
            self._cp(_SR_MAIR_EL2, _MAIR64_NORMAL)
            sctlr = self._cp(_SR_SCTLR_EL2)
            self._cp(_SR_SCTLR_EL2, (sctlr | _SCTLR_M) & ~(_SCTLR_A | _SCTLR_WXN))
        else:
            self._cp(_SR_TCR_EL1, tcr | (1 << 23) | (_PS[r.oa_bits] << 32))  # EPD1: no TTBR1
            self._cp(_SR_MAIR_EL1, _MAIR64_NORMAL)
            sctlr = self._cp(_SR_SCTLR_EL1)
            self._cp(_SR_SCTLR_EL1, (sctlr | _SCTLR_M) & ~(_SCTLR_A | _SCTLR_WXN))

    # -- memory -----------------------------------------------------------------------------

    @property
    def _pa_mask(self) -> int:
        # QEMU keeps descriptor address bits 39:12 on AArch32 and 47:12 on AArch64.
        bits = 40 if self.regime.arch == "armv7" else 48
        return ((1 << bits) - 1) & ~(self.regime.granule - 1)

    def load(
        self, frames: Iterable[tuple[int, bytes]], root: int, s2_root: int | None = None
    ) -> None:
        """Make ``frames`` ((pa, data) with 4KB-aligned pa, data a multiple of 4KB) the whole
        physical memory and ``root`` the table base (``s2_root`` the stage-2 base when the CPU
        was built with two stages); flush QEMU's TLB.

        Raises ValueError when a frame or a descriptor's next-level address lands on the
        harness page."""
        uc = self._uc
        for start, size in self._mapped:
            uc.mem_unmap(start, size)
        self._mapped = []
        contents: dict[int, bytes] = {}
        for pa, data in frames:
            if pa % PAGE or len(data) % PAGE:
                raise ValueError(f"frame {pa:#x} (+{len(data):#x}) is not 4KB-aligned")
            for off in range(0, len(data), PAGE):
                contents[pa + off] = bytes(data[off : off + PAGE])
        pages = set(contents)
        granule = self.regime.granule
        for data in contents.values():
            for (word,) in struct.iter_unpack("<Q", data):
                if word & 3 == 3:  # a table (or page) descriptor: a walk may read there
                    target = word & self._pa_mask
                    pages.update(range(target, target + granule, PAGE))
        # Roots, with room for up to 16 concatenated stage-2 tables.
        for base in (root, s2_root):
            if base is not None:
                start = base & ~(PAGE - 1)
                pages.update(range(start, start + 16 * max(granule, PAGE), PAGE))
        if HARNESS_PA in pages:
            raise ValueError(f"the tables use the harness page {HARNESS_PA:#x}")
        for start, size in _runs(sorted(pages)):
            uc.mem_map(start, size, UC_PROT_ALL)
            self._mapped.append((start, size))
        for pa, data in contents.items():
            uc.mem_write(pa, data)
        self._root = root
        if self.regime.arch == "armv7":
            self._enter_monitor()
            base = {"el2": _CP_HTTBR, "el1&0": _CP_TTBR0_NS, "s2": _CP_VTTBR}[self.regime.el]
            self._cp(base, root)
            if self.stage2 is not None:
                self._cp(_CP_VTTBR, _required(s2_root))
        else:
            self._enter_el3()
            base = {"el2": _SR_TTBR0_EL2, "el1&0": _SR_TTBR0_EL1, "s2": _SR_VTTBR_EL2}
            self._cp(base[self.regime.el], root)
            if self.stage2 is not None:
                self._cp(_SR_VTTBR_EL2, _required(s2_root))
        uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)

    # -- translation ------------------------------------------------------------------------

    def _on_interrupt(self, uc: Uc, intno: int, user_data: object) -> None:
        syndrome = 0
        if self.regime.arch == "armv7":
            syndrome = int(uc.reg_read(a32.UC_ARM_REG_ESR))
        self._intr = (intno, syndrome)
        uc.emu_stop()

    def translate(self, va: int, access: Access = "read", user: bool = False) -> QemuOutcome:
        """What QEMU does with a ``access`` of ``va`` (``user``: unprivileged)."""
        if user and not self.regime.has_user:
            raise ValueError(f"{self.regime}: no unprivileged accesses in this regime")
        if self.regime.el == "s2" and self.regime.arch == "armv7" and va >> 32:
            # With stage 1 off the IPA is the 32-bit VA: the rest of the IPA space is unreachable.
            raise ValueError(f"IPA {va:#x}: an AArch32 stage-2 probe must be below 4GB")
        if access == "exec":
            return self._fetch(va, user)
        if access not in ("read", "write"):
            raise ValueError(f"access {access!r}")
        return self._at(va, access, user)

    def _at(self, va: int, access: Access, user: bool) -> QemuOutcome:
        uc = self._uc
        el = self.regime.el
        if self.stage2 is not None and self.regime.arch == "aarch64":
            el = "s12"  # AT S12E*: stage 1 and stage 2 (S1E* would stop at the IPA)
        start = HARNESS_PA + self._slots[(el, access, user)]
        self._intr = None
        if self.regime.arch == "armv7":
            self._enter_monitor()
            uc.reg_write(a32.UC_ARM_REG_R0, va)
            uc.emu_start(start, start + _STOP)
            par = self._cp(_CP_PAR_S)
            pa_mask = ((1 << 40) - 1) & ~0xFFF
        else:
            self._enter_el3()
            uc.reg_write(a64.UC_ARM64_REG_X0, va)
            uc.emu_start(start, start + _STOP)
            par = int(uc.reg_read(a64.UC_ARM64_REG_PAR_EL1))
            pa_mask = ((1 << 48) - 1) & ~0xFFF
        if self._intr is not None:
            raise RuntimeError(f"unexpected exception {self._intr} running the AT stub")
        if par & 1:
            kind, level = decode_fsc((par >> 1) & 0x3F)
            stage = 2 if par >> 9 & 1 else 1  # PAR.S
            s1ptw = bool(par >> 8 & 1)  # PAR.PTW
            return QemuOutcome(va, access, user, None, kind, level, par, False, stage, s1ptw)
        pa = (par & pa_mask) | (va & 0xFFF)
        return QemuOutcome(va, access, user, pa, None, None, par)

    def _fetch(self, va: int, user: bool) -> QemuOutcome:
        uc = self._uc
        # An instruction address is word-aligned; fetch permission is per page.  Stopping at a
        # page-aligned address makes unicorn translate the previous page too: step past it.
        probe = va & ~3
        if probe % PAGE == 0:
            probe += 4
        self._intr = None
        if self.regime.arch == "armv7":
            # Stage 2 alone: the fetch comes from PL1 with its stage 1 off.
            mode = _MODE_HYP if self.regime.el == "el2" else (_MODE_USR if user else _MODE_SVC)
            self._enter_monitor()
            uc.reg_write(a32.UC_ARM_REG_LR, probe)
            uc.reg_write(a32.UC_ARM_REG_SPSR, _AIF | mode)
        else:
            el = "el2" if self.regime.el == "el2" else ("el0" if user else "el1")
            self._enter_el3()
            self._cp(_SR_ELR_EL3, probe)
            self._cp(_SR_SPSR_EL3, _SPSR_EL[el])
        start = HARNESS_PA + self._ret
        try:
            uc.emu_start(start, probe)
        except UcError as err:
            # Translated and executable, but nothing backs the PA in the emulator.
            if err.errno != UC_ERR_FETCH_UNMAPPED:
                raise
            return QemuOutcome(va, "exec", user, None, None, None, 0)
        if self._intr is None:
            return QemuOutcome(va, "exec", user, None, None, None, 0)
        intno, syndrome = self._intr
        stage = 2 if self.regime.el == "s2" else 1
        if intno != EXCP_PREFETCH_ABORT:
            raise RuntimeError(f"fetch at {probe:#x}: unexpected exception {intno}")
        if self.regime.arch == "armv7":
            kind, level = decode_fsc(syndrome & 0x3F)
            s1ptw = bool(syndrome >> 7 & 1)  # ISS.S1PTW
            fetch_stage: int | None = stage
            if self.stage2 is not None:
                # A stage-2 fault goes to Hyp (EC 0x20, "from a lower level"); a stage-1 fault
                # of a PL1 fetch stays at PL1 (EC 0x21).  A PL0 fetch is 0x20 either way.
                same_level = syndrome >> 26 == 0x21
                fetch_stage = 2 if s1ptw else (1 if same_level else (None if user else 2))
            return QemuOutcome(
                va, "exec", user, None, kind, level, syndrome, False, fetch_stage, s1ptw
            )
        # AArch64: no syndrome; the read walk of the same address decides kind and level.
        read = self._at(va, "read", user)
        walk_fault = not read.ok and read.fault != "permission" and (read.stage == 1 or read.s1ptw)
        if self.stage2 is not None and not walk_fault:
            # The stage-1 walk got through: the fetch failed on stage-1 execute permission, or
            # later in stage 2.  Only "it faulted" is known.
            return QemuOutcome(va, "exec", user, None, "unknown", None, 0, True, None, None)
        if read.ok:
            level = self._leaf_level(va)
            return QemuOutcome(va, "exec", user, None, "permission", level, 0, True, stage)
        if read.fault == "permission":
            # Unprivileged read refused: the walk itself succeeded, privileged read says where.
            level = self._leaf_level(va)
            return QemuOutcome(va, "exec", user, None, "permission", level, 0, True, stage)
        return QemuOutcome(
            va, "exec", user, None, read.fault, read.level, 0, True, read.stage, read.s1ptw
        )

    def _leaf_level(self, va: int) -> int:
        """Level of the leaf QEMU reaches for ``va``, found by walking the tables in the
        emulator's memory the way QEMU does (used only to give an AArch64 permission fault
        on a fetch its level, which unicorn does not report)."""
        r = self.regime
        stride = r.granule.bit_length() - 4
        page_shift = stride + 3
        level = r.first_level
        table = self._root & self._pa_mask
        index_bits = r.ia_bits - (page_shift + stride * (3 - level))
        while True:
            shift = page_shift + stride * (3 - level)
            index = (va >> shift) & ((1 << index_bits) - 1)
            (desc,) = struct.unpack("<Q", self._uc.mem_read(table + index * 8, 8))
            if level == 3 or desc & 3 != 3:
                return level
            table = desc & self._pa_mask
            level += 1
            index_bits = stride


def _required(value: int | None) -> int:
    if value is None:
        raise ValueError("this CPU walks two stages: load() needs s2_root")
    return value


def _runs(pages: list[int]) -> Iterable[tuple[int, int]]:
    """Coalesce sorted page addresses into (start, size) runs."""
    start = prev = None
    for page in pages:
        if start is None:
            start = prev = page
        elif page == prev + PAGE:  # type: ignore[operator]
            prev = page
        else:
            yield start, prev + PAGE - start  # type: ignore[operator]
            start = prev = page
    if start is not None:
        yield start, prev + PAGE - start  # type: ignore[operator]


def qemu_translate(
    frames: Iterable[tuple[int, bytes]],
    regime: Regime,
    root: int,
    va: int,
    access: Access = "read",
    user: bool = False,
) -> QemuOutcome:
    """One-shot form of :class:`QemuMMU`: build a CPU for ``regime``, load ``frames`` with
    ``root`` and translate ``va``.  Prefer a reused QemuMMU when asking many questions."""
    mmu = QemuMMU(regime)
    mmu.load(frames, root)
    return mmu.translate(va, access, user)
