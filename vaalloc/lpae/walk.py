"""The translation table walk, following the architecture's steps.

The steps are those of the ARM ARM pseudocode (``AArch64.TranslationTableWalk``, and
``AArch32.TranslationTableWalkLD`` for LPAE), in the same order, with the same fault kinds and
levels:

1. *Input range.*  An input address with bits set at or above the configured input size
   (``fmt.ia_bits``, i.e. 64 - T0SZ) is a **translation** fault, reported at level 0 by AArch64
   and at level 1 by AArch32 ("AArch32 reports this as a level 1 fault"); QEMU agrees ("the gap
   between the two regions is a Translation fault").  It is not an address-size fault: those are
   about *output* addresses.
2. *Descriptor fetch* at the start level: ``root + index * 8`` (the root may be several
   concatenated tables at stage 2).  In a two-stage regime this address is an IPA and is itself
   translated by stage 2; a fault there is a **stage-2** fault with ``s1ptw=True``.
3. *Decode.*  bit 0 clear: **translation** fault at this level.  At level 3, ``0b11`` is a page
   and ``0b01`` is a translation fault.  Above level 3, ``0b11`` is a table: an address beyond
   the output size in it is an **address-size** fault at this level, otherwise the stage-1
   table attributes (APTable, XNTable, PXNTable) are accumulated and the walk goes one level
   down.  ``0b01`` is a block, a **translation** fault where the granule allows no block
   (level 0 with 4KB, level 1 with 16KB/64KB).
4. *Leaf.*  Output address beyond the output size: **address-size** fault at the leaf's level.
   AF = 0: **access-flag** fault (no hardware AF update is modelled).  Then permissions, with
   the table restrictions folded in: **permission** fault at the leaf's level.

The walk is a fixed number of descriptor reads: nothing remembers where it has been, so tables
with loops (an entry pointing at its own table or an ancestor) are walked like any other, which
is what the VLPT relies on.  A descriptor is interpreted by the level it is *read at*: a stage-2
table descriptor (``0b11``) met by a stage-1 walker at level 3 is a page.

Permissions (ARM ARM "Access permissions"; QEMU ``get_S1prot``/``get_S2prot`` agree):

* Stage 1, EL1&0 / PL1&0 regime: AP[2:1] 00 = privileged RW; 01 = RW at both levels;
  10 = privileged RO; 11 = RO at both.  APTable[1] forces read-only, APTable[0] forbids
  unprivileged access (clears AP[1]); XNTable/PXNTable force XN/PXN below.  On AArch64 XN is
  UXN (unprivileged execute: EL0 may execute memory it cannot read), and privileged execution
  is refused from memory writable by EL0.  On AArch32 an instruction fetch also needs read
  permission at that level.
* Stage 1, hyp (EL2 / ARMv7 HTTBR) regime: one privilege level.  AP[1] selects nothing (the
  ARMv7 ARM makes it SBO and ARMv8 RES1; any value gives the same answer): AP[2] alone decides
  read-only, APTable[0] and PXN/PXNTable are ignored, XN/XNTable apply.  ``user=True`` is
  refused for this regime (no unprivileged accesses exist in it).
* Stage 2: S2AP[0] read, S2AP[1] write, XN (bit 54).  On ARMv7 an instruction fetch also needs
  S2AP read; on AArch64 XN alone decides.  Stage-2 table descriptors carry no attributes.

Not modelled (documented in docs/lpae.md): hardware AF/dirty management, SCTLR.WXN/UWXN,
PAN, the contiguous hint (stored, walked as individual entries), 52-bit addresses, the TTBR1
half of the EL1&0 VA space, Secure state (NS/NSTable are stored, not used).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs

from vaalloc.errors import RangeError, VAAllocError
from vaalloc.lpae._checks import check_bool, shown
from vaalloc.lpae.descriptor import S1Attrs, S2Attrs
from vaalloc.lpae.geometry import Format
from vaalloc.lpae.memory import PhysicalMemory

__all__ = [
    "ACCESS_BITS",
    "Fault",
    "FaultError",
    "Translation",
    "walk",
    "walk_two_stage",
]

Access = Literal["read", "write", "exec"]
FaultKind = Literal["translation", "access-flag", "permission", "address-size"]

ACCESS_BITS: dict[str, int] = {"read": 1, "write": 2, "exec": 4}
R, W, X = 1, 2, 4


@attrs.frozen
class Fault:
    """Why a translation failed, as the architecture reports it (the FSC of ESR/HSR/DFSR).

    kind: ``"translation"``, ``"access-flag"``, ``"permission"`` or ``"address-size"``.
    level: the level (0-3) at which the walk stopped.
    va: the input address of the access (VA, or IPA for a stage-2-only access).
    stage: 1 or 2 (which stage faulted in a two-stage translation).
    s1ptw: True when a stage-2 fault happened on a stage-1 table read (HSR.S1PTW).
    ipa: for a stage-2 fault, the IPA that stage 2 was translating (HPFAR), else None.
    access: the access that was attempted.

    A plain record (what the walker reports): its constructor raises nothing and checks
    nothing.
    """

    kind: FaultKind
    level: int
    va: int
    stage: int = 1
    s1ptw: bool = False
    ipa: int | None = None
    access: Access = "read"

    def __str__(self) -> str:
        where = f"stage {self.stage}" + (" (S1PTW)" if self.s1ptw else "")
        ipa = "" if self.ipa is None else f", ipa {self.ipa:#x}"
        return f"{self.kind} fault, level {self.level}, {where}, {self.access} {self.va:#x}{ipa}"


class FaultError(VAAllocError):
    """A memory access by virtual address faulted; ``.fault`` says how (a :class:`Fault`).

    Raised by calls that return a value rather than a Fault (``translate_pa``,
    ``MMU.hyp_read64``...), so a caller can catch it like a data abort."""

    def __init__(self, fault: Fault, where: str = "") -> None:
        self.fault = fault
        super().__init__(f"{where}: {fault}" if where else str(fault))


@attrs.frozen
class Translation:
    """A successful translation.

    va: the input address; pa: the output address (for a two-stage walk, the final PA).
    level: level of the leaf descriptor (stage 1's in a two-stage walk).
    descriptor: the raw 64-bit leaf descriptor.
    block_size: bytes the leaf maps (4KB page, 2MB/1GB block...).
    readable/writable/executable: effective permissions for the privilege asked about, with
      table restrictions folded in (two-stage: stage 1 and stage 2 combined).
    attrs: the leaf's attribute template (S1Attrs or S2Attrs) as stored (no table bits).
    reads: ``(descriptor_pa, value)`` for every descriptor read, in order (two-stage: stage-1
      table reads are reported at the PA stage 2 gave them; stage-2 reads are in ``s2``).
    stage: 1 or 2: the stage of the format walked (2 for a stage-2-only walk).
    ipa: the intermediate address in a two-stage walk, else None.
    s2: the stage-2 Translation of ``ipa`` in a two-stage walk, else None.

    A plain record (what the walker reports): its constructor raises nothing and checks
    nothing.
    """

    va: int
    pa: int
    level: int
    descriptor: int
    block_size: int
    readable: bool
    writable: bool
    executable: bool
    attrs: S1Attrs | S2Attrs
    reads: tuple[tuple[int, int], ...]
    stage: int = 1
    ipa: int | None = None
    s2: Translation | None = None

    def allows(self, access: str) -> bool:
        """True when ``access`` ("read", "write", "exec") is permitted. Raises RangeError for
        any other access."""
        allowed = {"read": self.readable, "write": self.writable, "exec": self.executable}
        if not isinstance(access, str) or access not in allowed:
            raise RangeError(f"Translation.allows({access!r}): expected read, write or exec")
        return allowed[access]


# -- per-format constants -------------------------------------------------------------------


class Geometry:
    """Constants the hot loop needs, computed once per Format (see :func:`geometry_of`).

    ``permissions(desc, tbl)`` is the permission mask of a leaf (see :func:`permission_lines`,
    the one place the rule is written), compiled for this format."""

    __slots__ = (
        "addr_mask",
        "first_block",
        "fmt",
        "ia_limit",
        "ia_reg_limit",
        "leaf_perms",
        "leaf_shifts",
        "lut",
        "oa_excess",
        "out_of_range_level",
        "permissions",
        "root_mask",
        "shifts",
        "stage1",
        "start",
        "table_mask",
    )

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.shifts = fmt.shifts
        self.start = fmt.start_level
        self.root_mask = fmt.root_entries - 1
        self.table_mask = fmt.entries_per_table - 1
        self.addr_mask = fmt.addr_mask
        self.oa_excess = ((1 << 48) - 1) & ~((1 << fmt.oa_bits) - 1)
        self.ia_limit = 1 << fmt.ia_bits
        self.ia_reg_limit = 1 << fmt.ia_reg_bits
        self.first_block = fmt.first_block_level
        self.stage1 = fmt.stage == 1
        self.out_of_range_level = 0 if fmt.arch == "aarch64" else 1
        self.lut = _permission_lut(fmt)
        #: log2 of every leaf size the format can map, smallest first (TLB probe order).
        self.leaf_shifts = tuple(sorted(fmt.shifts[lv] for lv in fmt.levels if fmt.can_block(lv)))
        source = "def permissions(d, tbl):\n" + "\n".join(permission_lines(self, "    "))
        namespace: dict[str, object] = {"LUT": self.lut}
        exec(compile(source + "\n    return m\n", f"<permissions {fmt.name}>", "exec"), namespace)
        self.permissions: Callable[[int, int], int] = namespace["permissions"]  # type: ignore[assignment]
        #: The masks of leaves reached without table restrictions, keyed by the leaf's raw
        #: permission bits (``d & LEAF_PERM_BITS``): the same rule, precomputed, so that the
        #: generated walkers decide with one AND and one dict probe.
        self.leaf_perms = {bits: self.permissions(bits, 0) for bits in _bit_subsets(self)}


_GEOMETRIES: dict[Format, Geometry] = {}


def geometry_of(fmt: Format) -> Geometry:
    """The cached :class:`Geometry` of ``fmt``."""
    geo = _GEOMETRIES.get(fmt)
    if geo is None:
        geo = _GEOMETRIES[fmt] = Geometry(fmt)
    return geo


def _permission_lut(fmt: Format) -> tuple[int, ...]:
    """Permission masks indexed by the folded leaf bits.

    Stage 1 index: AP[2:1] (bits 1:0) | XN << 2 | PXN << 3 -> privileged R/W/X mask in bits
    2:0, unprivileged in bits 5:3.  Stage 2 index: S2AP | XN << 2 -> R/W/X mask in bits 2:0.
    """
    table: list[int] = []
    if fmt.stage == 2:
        for index in range(8):
            s2ap, xn = index & 3, index >> 2 & 1
            mask = (R if s2ap & 1 else 0) | (W if s2ap & 2 else 0)
            if not xn and (fmt.arch == "aarch64" or s2ap & 1):
                mask |= X
            table.append(mask)
        return tuple(table)
    for index in range(16):
        ap, xn, pxn = index & 3, index >> 2 & 1, index >> 3 & 1
        ro = bool(ap & 2)
        if fmt.regime == "el2":
            priv = R | (0 if ro else W) | (0 if xn else X)
            table.append(priv)
            continue
        user_r = bool(ap & 1)
        user_w = ap == 1
        priv = R | (0 if ro else W)
        user = (R if user_r else 0) | (W if user_w else 0)
        if fmt.arch == "aarch64":
            if not xn:
                user |= X  # UXN only: EL0 may execute what it cannot read
            if not pxn and not user_w:
                priv |= X  # no EL1 execution from EL0-writable memory
        else:
            if not xn and user_r:
                user |= X
            if not xn and not pxn:
                priv |= X
        table.append(priv | user << 3)
    return tuple(table)


#: The leaf bits the permissions depend on: AP[2:1] (S2AP at stage 2), PXN, XN.
LEAF_PERM_BITS = (3 << 6) | (1 << 53) | (1 << 54)


def _bit_subsets(geo: Geometry) -> list[int]:
    bits = [1 << b for b in range(64) if LEAF_PERM_BITS >> b & 1]
    return [sum(b for i, b in enumerate(bits) if n >> i & 1) for n in range(1 << len(bits))]


def permission_lines(geo: Geometry, indent: str, *, tables: bool = True) -> list[str]:
    """Python source that sets ``m`` to the permission mask (privileged R/W/X in bits 2:0,
    unprivileged in 5:3) of the leaf descriptor ``d`` reached through table descriptors whose
    bits OR to ``tbl``: the one place the rule is written down.  The reference walk runs it
    compiled as ``geo.permissions``; the generated walkers and the MMU's lookups paste it in
    (``tables=False`` where the caller already knows no table restricted anything).

    The leaf bits fold into an index of ``geo.lut`` (:func:`_permission_lut`): AP[2:1] in bits
    1:0, XN in bit 2 and, at stage 1, PXN in bit 3.  At stage 1 the tables restrict below
    them: APTable[1] forces read-only, APTable[0] forbids unprivileged access, XNTable and
    PXNTable force XN and PXN.  Stage-2 table descriptors carry no attributes.  Without tables
    the answer is one probe of ``geo.leaf_perms`` (bound as ``PERMS``), computed from this
    rule."""
    if not tables:
        return [f"{indent}m = PERMS[d & {LEAF_PERM_BITS}]"]
    if not geo.stage1:
        return [f"{indent}m = LUT[((d >> 6) & 3) | ((d >> 52) & 4)]"]
    return [
        f"{indent}ap = (d >> 6) & 3",
        f"{indent}x = ((d >> 52) & 4) | ((d >> 50) & 8)",  # XN -> bit 2, PXN -> bit 3
        f"{indent}if tbl:",
        f"{indent}    if tbl >> 62 & 1:",  # APTable[1]: read-only below
        f"{indent}        ap |= 2",
        f"{indent}    if tbl >> 61 & 1:",  # APTable[0]: no unprivileged access below
        f"{indent}        ap &= 2",
        f"{indent}    x |= ((tbl >> 58) & 4) | ((tbl >> 56) & 8)",  # XNTable, PXNTable
        f"{indent}m = LUT[ap | x]",
    ]


def permissions(geo: Geometry, desc: int, tbl: int) -> int:
    """Permission mask (privileged bits 2:0, unprivileged 5:3) of leaf ``desc`` reached through
    table descriptors whose bits OR to ``tbl`` (see :func:`permission_lines`).  O(1)."""
    return geo.permissions(desc, tbl)


def leaf_pa(geo: Geometry, desc: int, level: int, va: int) -> int:
    """Output address of ``va`` through leaf ``desc`` at ``level``: the descriptor's address
    bits above the block size (lower bits in a block are RES0 and ignored) plus ``va``'s
    offset inside the block."""
    low = (1 << geo.shifts[level]) - 1
    return (desc & geo.addr_mask & ~low) | (va & low)


def _check_input(geo: Geometry, va: int, where: str) -> None:
    if isinstance(va, bool) or not isinstance(va, int) or not 0 <= va < geo.ia_reg_limit:
        raise RangeError(
            f"{where}: address {shown(va)} is not a {geo.fmt.ia_reg_bits}-bit input address "
            f"of format {geo.fmt.name}"
        )


def _access_bit(access: str, where: str) -> int:
    bit = ACCESS_BITS.get(access) if isinstance(access, str) else None
    if bit is None:
        raise RangeError(f"{where}: access {access!r} is not 'read', 'write' or 'exec'")
    return bit


def _check_user(geo: Geometry, user: bool, where: str) -> None:
    check_bool(user, where, "user")
    if user and geo.fmt.regime != "el1&0":
        raise RangeError(f"{where}: user=True, but format {geo.fmt.name} has no unprivileged level")


def _check_tables(
    mem: PhysicalMemory, fmt: Format, root: int, where: str, *, ipa: bool = False
) -> None:
    """``ipa``: the root is an intermediate address (a stage-1 walk under stage 2)."""
    if not isinstance(mem, PhysicalMemory):
        raise RangeError(f"{where}: mem={mem!r} is not a PhysicalMemory")
    if not isinstance(fmt, Format):
        raise RangeError(f"{where}: fmt={fmt!r} is not a Format")
    limit = 1 << 64 if ipa else mem.limit
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < limit:
        raise RangeError(f"{where}: root {shown(root)} is not an address of {mem!r}")
    if root % 8:
        raise RangeError(f"{where}: root {root:#x} is not 8-byte aligned")


# -- the full walk --------------------------------------------------------------------------

PtwTranslate = Callable[[int], "int | Fault"]


def walk(
    mem: PhysicalMemory,
    fmt: Format,
    root: int,
    va: int,
    access: str = "read",
    user: bool = False,
    *,
    ptw: PtwTranslate | None = None,
) -> Translation | Fault:
    """Walk ``va`` through the tables at ``root`` in ``mem`` (a PhysicalMemory), step by step.

    Returns a :class:`Translation` with every descriptor read, or a :class:`Fault`.  ``ptw``,
    when given, translates each descriptor address before it is read (stage 2 under a stage-1
    walk) and returns a PA (an 8-aligned int below 2**52) or the stage-2 Fault to report; anything
    else it returns is a RangeError.  O(levels).
    Raises RangeError for a ``mem`` that is not a PhysicalMemory, a ``fmt`` that is not a
    Format, a root that is not an 8-aligned address of ``mem``, an address wider than the
    format's register, an unknown access, a ``user`` that is not a bool or is True in a regime
    with one privilege level, a ``ptw`` that is not callable.
    """
    _check_tables(mem, fmt, root, "walk", ipa=ptw is not None)
    if ptw is not None and not callable(ptw):
        raise RangeError(f"walk: ptw={ptw!r} is not callable")
    geo = geometry_of(fmt)
    where = f"walk({fmt.name})"
    _check_input(geo, va, where)
    access_bit = _access_bit(access, where)
    _check_user(geo, user, where)
    frames = mem.storage
    acc: Access = access  # type: ignore[assignment]
    stage = fmt.stage
    if va >= geo.ia_limit:
        return Fault("translation", geo.out_of_range_level, va, stage=stage, access=acc)
    reads: list[tuple[int, int]] = []
    level = geo.start
    slot = root + (((va >> geo.shifts[level]) & geo.root_mask) << 3)
    tbl = 0
    while True:
        if ptw is not None:
            translated = ptw(slot)
            if isinstance(translated, Fault):
                return attrs.evolve(translated, va=va, s1ptw=True, access=acc)
            if translated.__class__ is not int or not 0 <= translated < 1 << 52 or translated & 7:
                raise RangeError(
                    f"{where}: ptw({slot:#x}) returned {translated!r}, not a PA or a Fault"
                )
            slot = translated
        words = frames.get(slot >> 12)
        desc: int = 0 if words is None else words[(slot >> 3) & 511]
        reads.append((slot, desc))
        if not desc & 1 or (level == 3 and not desc & 2):
            return Fault("translation", level, va, stage=stage, access=acc)
        if level < 3 and desc & 2:
            if desc & geo.oa_excess:
                return Fault("address-size", level, va, stage=stage, access=acc)
            tbl |= desc
            level += 1
            slot = (desc & geo.addr_mask) + (((va >> geo.shifts[level]) & geo.table_mask) << 3)
            continue
        if level < geo.first_block:
            return Fault("translation", level, va, stage=stage, access=acc)
        break
    if desc & geo.oa_excess:
        return Fault("address-size", level, va, stage=stage, access=acc)
    if not desc & 0x400:
        return Fault("access-flag", level, va, stage=stage, access=acc)
    mask = permissions(geo, desc, tbl if geo.stage1 else 0)
    if user:
        mask >>= 3
    if not mask & access_bit:
        return Fault("permission", level, va, stage=stage, access=acc)
    template: S1Attrs | S2Attrs = (
        S1Attrs.from_descriptor(desc) if geo.stage1 else S2Attrs.from_descriptor(desc)
    )
    return Translation(
        va=va,
        pa=leaf_pa(geo, desc, level, va),
        level=level,
        descriptor=desc,
        block_size=1 << geo.shifts[level],
        readable=bool(mask & R),
        writable=bool(mask & W),
        executable=bool(mask & X),
        attrs=template,
        reads=tuple(reads),
        stage=stage,
    )


def walk_two_stage(
    mem: PhysicalMemory,
    s1_fmt: Format,
    s1_root: int,
    s2_fmt: Format,
    s2_root: int,
    va: int,
    access: str = "read",
    user: bool = False,
) -> Translation | Fault:
    """Translate ``va`` through stage 1 (tables addressed by IPA) and then stage 2.

    Each stage-1 descriptor address is translated by stage 2 as a read; a stage-2 fault there
    is reported with ``stage=2, s1ptw=True``.  The stage-1 output (IPA) is then translated by
    stage 2 with the requested access; a fault is reported with ``stage=2`` and its ``ipa``.
    The result's permissions are those of both stages together.  O(levels1 * levels2).
    Raises RangeError as :func:`walk` (for either stage's tables).
    """
    for fmt in (s1_fmt, s2_fmt):
        if not isinstance(fmt, Format):
            raise RangeError(f"walk_two_stage: {fmt!r} is not a Format")
    if s1_fmt.stage != 1 or s2_fmt.stage != 2:
        raise RangeError(f"walk_two_stage({s1_fmt.name}, {s2_fmt.name}): stages must be 1 and 2")
    _check_tables(mem, s2_fmt, s2_root, "walk_two_stage")
    _check_tables(mem, s1_fmt, s1_root, "walk_two_stage", ipa=True)

    def ptw(ipa: int) -> int | Fault:
        if ipa >> s2_fmt.ia_bits:
            level = 0 if s2_fmt.arch == "aarch64" else 1
            return Fault("translation", level, va, stage=2, ipa=ipa)
        result = walk(mem, s2_fmt, s2_root, ipa, "read")
        if isinstance(result, Fault):
            return attrs.evolve(result, ipa=ipa)
        return result.pa

    first = walk(mem, s1_fmt, s1_root, va, access, user, ptw=ptw)
    if isinstance(first, Fault):
        return first
    ipa = first.pa
    acc: Access = access  # type: ignore[assignment]
    if ipa >> s2_fmt.ia_bits:
        level = 0 if s2_fmt.arch == "aarch64" else 1
        return Fault("translation", level, va, stage=2, ipa=ipa, access=acc)
    second = walk(mem, s2_fmt, s2_root, ipa, access)
    if isinstance(second, Fault):
        return attrs.evolve(second, va=va, ipa=ipa, access=acc)
    return attrs.evolve(
        first,
        pa=second.pa,
        readable=first.readable and second.readable,
        writable=first.writable and second.writable,
        executable=first.executable and second.executable,
        ipa=ipa,
        s2=second,
    )
