"""Translation formats: the geometry of one translation regime as a value.

A :class:`Format` says everything a walker needs that, on hardware, lives in TCR/HTCR/VTCR:
which stage it is, the input and output address sizes, the translation granule, the level the
walk starts at and how many tables are concatenated at that level.  Everything else (level
shifts, index masks, block sizes) is derived from those in one place, so the 4KB, 16KB and
64KB granules share one piece of code.

Geometry of the long-descriptor (LPAE / VMSAv8-64) format with a granule of ``2**g`` bytes:

* a table holds ``2**(g-3)`` 8-byte descriptors, so each level resolves ``stride = g - 3``
  bits of the input address;
* level ``l`` (0..3) resolves input bits ``[g + stride*(3-l) + stride - 1 : g + stride*(3-l)]``;
  with 4KB that is 47:39, 38:30, 29:21, 20:12 (shifts 39/30/21/12);
* the start level resolves whatever is left above it: between 1 and ``stride`` bits at stage 1,
  and up to ``stride + 4`` bits at stage 2, where up to 16 tables are concatenated into one
  physically contiguous root (ARMv7 40-bit IPA: 10 bits at level 1 = two 4KB pages).

The formats the project needs are module constants (:data:`ARMV7_S1`, :data:`ARMV7_S2_40`,
:data:`AARCH64_S1_48`); :func:`aarch64_s1` and :func:`aarch64_s2` build the others.
"""

from __future__ import annotations

from typing import Literal

import attrs

from vaalloc.errors import RangeError
from vaalloc.lpae._checks import check_int

__all__ = [
    "AARCH64_S1_48",
    "AARCH64_S1_48_EL2",
    "AARCH64_S2_PA_RANGES",
    "ARMV7_S1",
    "ARMV7_S1_PL1",
    "ARMV7_S2_40",
    "Format",
    "aarch64_s1",
    "aarch64_s2",
    "armv7_s2",
]

Regime = Literal["el2", "el1&0", "s2"]
Arch = Literal["armv7", "aarch64"]

# VTCR_EL2.PS / TCR_EL1.IPS encoding of an output size, and its inverse.
_PS_ENCODING = {32: 0, 36: 1, 40: 2, 42: 3, 44: 4, 48: 5}
# TCR.TG0 encoding of a granule.
_TG0_ENCODING = {4096: 0, 65536: 1, 16384: 2}
# Shareability / cacheability Xen programs into HTCR/VTCR/TCR: inner shareable, WBWA both ways.
_SH0_IS_WBWA = (3 << 12) | (1 << 10) | (1 << 8)
_TCR_RES1 = 1 << 31


def _log2(value: int) -> int:
    return value.bit_length() - 1


@attrs.frozen
class Format:
    """One translation regime's geometry (what TCR/VTCR would hold), immutable.

    Build it with the module constants or the factories; the constructor validates the
    combination as hardware would (start level able to resolve the input size, concatenation
    only at stage 2) and raises :class:`~vaalloc.errors.RangeError` otherwise.

    Fields:
      name: a label for dumps and error messages.
      arch: ``"armv7"`` (AArch32 long-descriptor, output 40 bits) or ``"aarch64"``.
      stage: 1 or 2.
      regime: ``"el2"`` (hyp: one privilege level, no AP[1] user split, no PXN, no ASIDs),
        ``"el1&0"`` (PL1&0/EL1&0: user/privileged split, PXN, nG/ASID) or ``"s2"``.
      granule: 4096, 16384 or 65536 bytes.
      ia_bits: input address size (VA for stage 1, IPA for stage 2) = 64 - T0SZ.
      oa_bits: output address size (IPS/PS; 40 for AArch32).
      start_level: level of the root table.
    """

    name: str
    arch: Arch
    stage: int
    regime: Regime
    granule: int
    ia_bits: int
    oa_bits: int
    start_level: int
    page_shift: int = attrs.field(init=False)
    stride: int = attrs.field(init=False)
    shifts: tuple[int, int, int, int] = attrs.field(init=False)
    root_entries: int = attrs.field(init=False)
    root_bytes: int = attrs.field(init=False)
    first_block_level: int = attrs.field(init=False)
    ia_reg_bits: int = attrs.field(init=False)
    addr_mask: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise RangeError(f"Format(name={self.name!r}): expected a str")
        if self.arch not in ("armv7", "aarch64"):
            raise RangeError(f"format {self.name!r}: arch={self.arch!r}, expected armv7/aarch64")
        if self.regime not in ("el2", "el1&0", "s2"):
            raise RangeError(f"format {self.name!r}: regime={self.regime!r}, expected el2/el1&0/s2")
        for field in ("stage", "granule", "ia_bits", "oa_bits", "start_level"):
            check_int(getattr(self, field), f"Format({self.name!r})", field)
        if self.granule not in _TG0_ENCODING:
            raise RangeError(f"granule {self.granule:#x} of format {self.name!r} is not 4K/16K/64K")
        if self.arch == "armv7" and self.granule != 4096:
            raise RangeError(f"format {self.name!r}: AArch32 LPAE only has the 4KB granule")
        if self.stage not in (1, 2) or (self.stage == 2) != (self.regime == "s2"):
            raise RangeError(f"format {self.name!r}: stage {self.stage} with regime {self.regime}")
        page_shift = _log2(self.granule)
        stride = page_shift - 3
        shifts = tuple(page_shift + stride * (3 - level) for level in range(4))
        if not 0 <= self.start_level <= 3:
            raise RangeError(f"start level {self.start_level} of format {self.name!r}")
        root_bits = self.ia_bits - shifts[self.start_level]
        # Stage 1 roots resolve 1..stride bits; stage 2 may concatenate up to 16 tables.
        max_root_bits = stride + (4 if self.stage == 2 else 0)
        if not 1 <= root_bits <= max_root_bits:
            raise RangeError(
                f"format {self.name!r}: a {self.ia_bits}-bit input cannot start at level "
                f"{self.start_level} with a {self.granule:#x} granule ({root_bits} root bits)"
            )
        if not 25 <= self.oa_bits <= 48:
            raise RangeError(f"output size {self.oa_bits} of format {self.name!r}")
        setter = object.__setattr__
        setter(self, "page_shift", page_shift)
        setter(self, "stride", stride)
        setter(self, "shifts", shifts)
        setter(self, "root_entries", 1 << root_bits)
        setter(self, "root_bytes", max(self.granule, 8 << root_bits))
        # 52-bit output (where 16K/64K allow level-1 blocks) is not modelled.
        setter(self, "first_block_level", 1 if page_shift == 12 else 2)
        if self.arch == "armv7":
            setter(self, "ia_reg_bits", 32 if self.stage == 1 else 40)
        else:
            setter(self, "ia_reg_bits", 64)
        # Output address field of table/page descriptors: bits[47:page_shift].
        setter(self, "addr_mask", ((1 << 48) - 1) & ~(self.granule - 1))

    # -- derived geometry -------------------------------------------------------------------

    @property
    def levels(self) -> tuple[int, ...]:
        """The levels a walk visits, root first (e.g. ``(1, 2, 3)`` for ARMv7)."""
        return tuple(range(self.start_level, 4))

    def _level(self, level: int, what: str) -> int:
        if level.__class__ is not int or not 0 <= level <= 3:
            raise RangeError(f"{self.name}.{what}: level {level!r} is not 0..3")
        return level

    @property
    def root_pages(self) -> int:
        """Number of concatenated granule-sized tables at the root (1 unless stage 2)."""
        return max(1, self.root_entries * 8 // self.granule)

    @property
    def entries_per_table(self) -> int:
        """Descriptors in one non-root table: ``granule / 8``."""
        return self.granule // 8

    def block_size(self, level: int) -> int:
        """Bytes mapped by one descriptor at ``level`` (1GB/2MB/4KB for the 4KB granule).
        Raises RangeError for a level that is not an int in 0..3."""
        return 1 << self.shifts[self._level(level, "block_size")]

    def can_block(self, level: int) -> bool:
        """True when a leaf may sit at ``level``: a block (levels first_block_level..2) or a
        page (level 3).  A 4KB-granule block at level 0 is a translation fault.
        Raises RangeError for a level that is not an int in 0..3."""
        return self.first_block_level <= self._level(level, "can_block") <= 3

    def index(self, va: int, level: int) -> int:
        """Index of the descriptor for ``va`` in the ``level`` table (root: concatenated).
        Raises RangeError for a ``va`` that is not a non-negative int or a bad level."""
        shift = self.shifts[self._level(level, "index")]
        check_int(va, f"{self.name}.index", "va", 0)
        if level == self.start_level:
            return (va >> shift) & (self.root_entries - 1)
        return (va >> shift) & (self.entries_per_table - 1)

    def table_span(self, level: int) -> int:
        """Bytes of input address one table at ``level`` covers (root: the whole input).
        Raises RangeError for a level that is not an int in 0..3."""
        if self._level(level, "table_span") == self.start_level:
            return 1 << self.ia_bits
        return self.entries_per_table << self.shifts[level]

    @property
    def t0sz(self) -> int:
        """T0SZ as programmed: ``64 - ia_bits`` (AArch64) or ``32 - ia_bits`` (AArch32,
        signed 4-bit at stage 2: -8 for a 40-bit IPA)."""
        if self.arch == "armv7":
            return 32 - self.ia_bits
        return 64 - self.ia_bits

    @property
    def sl0(self) -> int:
        """VTCR.SL0 for this start level (4KB: 0 = level 2, 1 = level 1, 2 = level 0;
        16KB/64KB: 0 = level 3, 1 = level 2, 2 = level 1)."""
        if self.page_shift == 12:
            return 2 - self.start_level
        return 3 - self.start_level

    @property
    def vtcr(self) -> int:
        """The VTCR value that selects this stage-2 geometry, as Xen programs it
        (inner shareable, write-back write-allocate walks).  ARMv7 40-bit IPA: 0x80003558.

        Raises RangeError for a stage-1 format."""
        if self.stage != 2:
            raise RangeError(f"format {self.name!r} is stage 1: it has a TCR, not a VTCR")
        value = _TCR_RES1 | _SH0_IS_WBWA | (self.sl0 << 6)
        if self.arch == "armv7":
            t0sz = self.t0sz & 0xF
            return value | ((t0sz >> 3) << 4) | t0sz  # bit 4 (S) repeats T0SZ's sign bit
        return (
            value
            | (_PS_ENCODING[self.oa_bits] << 16)
            | (_TG0_ENCODING[self.granule] << 14)
            | self.t0sz
        )

    @property
    def tcr(self) -> int:
        """HTCR / TTBCR (EAE=1) or TCR_EL1/TCR_EL2 (TTBR0 half) for this stage-1 geometry.

        Raises RangeError for a stage-2 format."""
        if self.stage != 1:
            raise RangeError(f"format {self.name!r} is stage 2: it has a VTCR, not a TCR")
        value = _SH0_IS_WBWA | (_TG0_ENCODING[self.granule] << 14) | self.t0sz
        if self.arch == "armv7":
            return value | _TCR_RES1  # HTCR bit 31 RES1; TTBCR bit 31 is EAE
        ips = _PS_ENCODING[self.oa_bits]
        if self.regime == "el2":
            return value | _TCR_RES1 | (1 << 23) | (ips << 16)  # TCR_EL2 RES1 bits 31, 23
        return value | (ips << 32) | (1 << 23)  # TCR_EL1: IPS at 34:32, EPD1 = 1 (no TTBR1)

    def __str__(self) -> str:
        return self.name


ARMV7_S1 = Format(
    name="armv7-s1-hyp",
    arch="armv7",
    stage=1,
    regime="el2",
    granule=4096,
    ia_bits=32,
    oa_bits=40,
    start_level=1,
)
"""ARMv7 LPAE stage 1 of the hyp (PL2) regime, as Xen's HTTBR uses it: 32-bit VA, HTCR.T0SZ=0,
root at level 1 with 4 entries (Xen gives it a whole page), 40-bit output."""

ARMV7_S1_PL1 = attrs.evolve(ARMV7_S1, name="armv7-s1-pl1", regime="el1&0")
"""ARMv7 LPAE stage 1 of the PL1&0 regime (TTBCR.EAE=1, T0SZ=T1SZ=0, TTBR0 covers the 4GB):
same geometry as :data:`ARMV7_S1`, but AP[1] grants user access, PXN applies and nG entries
are tagged with the ASID.  This is the regime a guest kernel (or an emulator at PL1) uses."""

ARMV7_S2_40 = Format(
    name="armv7-s2-40",
    arch="armv7",
    stage=2,
    regime="s2",
    granule=4096,
    ia_bits=40,
    oa_bits=40,
    start_level=1,
)
"""ARMv7 stage 2 with a 40-bit IPA, VTCR 0x80003558 (T0SZ=-8, SL0=1): root at level 1, two
concatenated 4KB tables (1024 entries)."""


def armv7_s2(ia_bits: int = 40, start_level: int = 1) -> Format:
    """An ARMv7 stage-2 format for an IPA of ``ia_bits`` (VTCR.T0SZ = 32 - ia_bits, signed)
    starting at ``start_level`` (VTCR.SL0 = 2 - start_level).  Raises RangeError when the
    root would need more than 16 concatenated tables or resolve no bit, or for arguments
    that are not ints."""
    check_int(ia_bits, "armv7_s2", "ia_bits")
    check_int(start_level, "armv7_s2", "start_level")
    return Format(
        name=f"armv7-s2-{ia_bits}-l{start_level}",
        arch="armv7",
        stage=2,
        regime="s2",
        granule=4096,
        ia_bits=ia_bits,
        oa_bits=40,
        start_level=start_level,
    )


def _stage1_start_level(ia_bits: int, granule: int) -> int:
    page_shift = _log2(granule)
    stride = page_shift - 3
    for level in range(4):
        root_bits = ia_bits - (page_shift + stride * (3 - level))
        if 1 <= root_bits <= stride:
            return level
    raise RangeError(f"no stage-1 start level resolves a {ia_bits}-bit VA with {granule:#x} pages")


def aarch64_s1(
    va_bits: int = 48,
    *,
    granule: int = 4096,
    oa_bits: int = 48,
    regime: Literal["el2", "el1&0"] = "el1&0",
) -> Format:
    """AArch64 stage-1 format for the TTBR0 half: T0SZ = 64 - va_bits, the walk starts at the
    level that leaves 1..stride bits for the root (4KB: 48 bits -> level 0, 39 -> level 1).

    ``oa_bits`` is TCR.IPS (an output beyond it is an address-size fault); ``regime`` is
    ``"el1&0"`` (EL0/EL1 split, UXN/PXN, ASIDs) or ``"el2"`` (non-VHE hyp).
    Raises RangeError for an unsupported combination or a non-int argument."""
    check_int(va_bits, "aarch64_s1", "va_bits")
    check_int(granule, "aarch64_s1", "granule")
    check_int(oa_bits, "aarch64_s1", "oa_bits")
    if granule not in _TG0_ENCODING:
        raise RangeError(f"aarch64_s1: granule {granule:#x} is not 4K/16K/64K")
    if regime not in ("el2", "el1&0"):
        raise RangeError(f"aarch64_s1: regime={regime!r}, expected 'el2' or 'el1&0'")
    if not 16 <= 64 - va_bits <= 39 + (0 if granule == 4096 else 8):
        raise RangeError(f"va_bits {va_bits} (T0SZ {64 - va_bits}) out of range")
    if oa_bits not in _PS_ENCODING:
        raise RangeError(f"oa_bits {oa_bits} is not a TCR.IPS size")
    return Format(
        name=f"aarch64-s1-{va_bits}-{granule // 1024}k" + ("-el2" if regime == "el2" else ""),
        arch="aarch64",
        stage=1,
        regime=regime,
        granule=granule,
        ia_bits=va_bits,
        oa_bits=oa_bits,
        start_level=_stage1_start_level(va_bits, granule),
    )


def _stage2_start_level(ia_bits: int, granule: int) -> int:
    # Prefer a level-1 root (what Xen does for every 4KB row), concatenating up to 16 tables;
    # go one level up when that is not enough, down when level 1 resolves nothing.
    page_shift = _log2(granule)
    stride = page_shift - 3
    order = [1, 0, 2, 3]
    for level in order:
        root_bits = ia_bits - (page_shift + stride * (3 - level))
        if 1 <= root_bits <= stride + 4:
            return level
    raise RangeError(f"no stage-2 start level resolves a {ia_bits}-bit IPA with {granule:#x} pages")


def aarch64_s2(
    pa_bits: int = 40,
    *,
    granule: int = 4096,
    ia_bits: int | None = None,
    start_level: int | None = None,
) -> Format:
    """AArch64 stage-2 format: VTCR.PS from ``pa_bits``, T0SZ = 64 - ia_bits (default: the IPA
    is as wide as the PA, as Xen configures it).  The default start level reproduces Xen's
    table for 4KB pages (pa bits, T0SZ, root order, SL0): 32,32,0,1; 36,28,0,1; 40,24,1,1;
    42,22,3,1; 44,20,0,2; 48,16,0,2.  Raises RangeError for an unsupported combination or a
    non-int argument."""
    check_int(pa_bits, "aarch64_s2", "pa_bits")
    check_int(granule, "aarch64_s2", "granule")
    if granule not in _TG0_ENCODING:
        raise RangeError(f"aarch64_s2: granule {granule:#x} is not 4K/16K/64K")
    if ia_bits is not None:
        check_int(ia_bits, "aarch64_s2", "ia_bits", 1, 64)
    if start_level is not None:
        check_int(start_level, "aarch64_s2", "start_level", 0, 4)
    if pa_bits not in _PS_ENCODING:
        raise RangeError(f"pa_bits {pa_bits} is not a VTCR.PS size")
    ia = pa_bits if ia_bits is None else ia_bits
    level = _stage2_start_level(ia, granule) if start_level is None else start_level
    return Format(
        name=f"aarch64-s2-{ia}-{granule // 1024}k-l{level}",
        arch="aarch64",
        stage=2,
        regime="s2",
        granule=granule,
        ia_bits=ia,
        oa_bits=pa_bits,
        start_level=level,
    )


AARCH64_S1_48 = aarch64_s1(48)
"""AArch64 EL1&0 stage 1, 4KB granule, 48-bit VA (T0SZ=16), 4 levels from level 0."""

AARCH64_S1_48_EL2 = aarch64_s1(48, regime="el2")
"""AArch64 EL2 (non-VHE) stage 1, 4KB granule, 48-bit VA: Xen's arm64 hyp tables."""

AARCH64_S2_PA_RANGES: dict[int, Format] = {bits: aarch64_s2(bits) for bits in _PS_ENCODING}
"""AArch64 stage-2 formats (4KB granule) for every VTCR.PS row, keyed by PA bits."""
