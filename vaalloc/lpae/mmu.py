"""An MMU: translation regimes, a TLB in front of the walker, TLB maintenance, counters.

One :class:`MMU` models one CPU's view: the hyp regime (HTTBR/TTBR0_EL2, Xen's own tables),
and the guest regime (VTTBR with a VMID for stage 2, optionally a guest stage 1 with an
ASID).  Accesses by virtual address go through the :class:`~vaalloc.lpae.tlb.TLB`; a miss
walks the tables in :class:`~vaalloc.lpae.memory.PhysicalMemory` with the compiled walker and
caches the leaf.  Nothing snoops table writes: an entry stays until a TLB maintenance
operation removes it or it is evicted, so code that forgets a flush sees stale translations,
as it would on hardware.  The opt-in stale detector (``stale_check=True``) re-walks on every
hit and records each hit whose cached answer differs from what the tables now say.

Maintenance operations take their architectural names (:data:`TLBI_OPS`).  The inner-shareable
forms (``...IS``) act on every MMU joined with :meth:`MMU.join` (the CPUs of one system);
the others act on this MMU only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import attrs

from vaalloc.errors import AlignmentError, RangeError
from vaalloc.lpae.descriptor import S1Attrs, S2Attrs
from vaalloc.lpae.fastwalk import LeafFn, leaf_fn
from vaalloc.lpae.geometry import ARMV7_S1, ARMV7_S1_PL1, ARMV7_S2_40, Format
from vaalloc.lpae.memory import PhysicalMemory
from vaalloc.lpae.tlb import TLB, TLBEntry, hyp_key
from vaalloc.lpae.walk import (
    ACCESS_BITS,
    Fault,
    FaultError,
    Geometry,
    Translation,
    geometry_of,
    permissions,
    walk,
    walk_two_stage,
)

__all__ = ["MMU", "TLBI_OPS", "StaleHit"]

_NAMES: dict[int, Literal["read", "write", "exec"]] = {1: "read", 2: "write", 4: "exec"}
_HIERARCHICAL = 0xF << 59  # PXNTable, XNTable, APTable


@attrs.frozen
class StaleHit:
    """A TLB hit whose cached answer no longer matches the tables.

    va: the address looked up; regime: ``"hyp"`` or ``"guest"``; vmid/asid: the guest tags
    (None for hyp); access: the access made; cached_pa: the output address the TLB gave;
    cached_perm: its permissions as ``"rwx"`` letters; current: what a fresh walk says now
    (a Translation or a Fault).
    """

    va: int
    regime: str
    vmid: int | None
    asid: int | None
    access: str
    cached_pa: int
    cached_perm: str
    current: Translation | Fault


def _perm_letters(mask: int) -> str:
    return "".join(c if mask & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4)))


@attrs.frozen
class _Regime:
    root: int
    fmt: Format
    geo: Geometry
    shifts: tuple[int, ...]  # leaf block sizes, smallest first (probe order)
    tag: int  # VMID (stage 2) or ASID (guest stage 1); 0 for hyp
    leaf: LeafFn  # the compiled walker of fmt


def _regime(mem: PhysicalMemory, root: int, fmt: Format, tag: int, what: str) -> _Regime:
    if not isinstance(fmt, Format):
        raise RangeError(f"MMU.{what}: {fmt!r} is not a Format")
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < mem.limit:
        raise RangeError(f"MMU.{what}: table base {root!r} outside physical memory")
    if root % 8:
        raise AlignmentError(f"MMU.{what}: table base {root:#x} is not 8-byte aligned")
    if root >> fmt.oa_bits:
        raise RangeError(f"MMU.{what}: table base {root:#x} beyond {fmt.name}'s output size")
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < 1 << 16:
        raise RangeError(f"MMU.{what}: tag {tag!r} is not a 16-bit VMID/ASID")
    geo = geometry_of(fmt)
    shifts = tuple(sorted(fmt.shifts[level] for level in fmt.levels if fmt.can_block(level)))
    return _Regime(root, fmt, geo, shifts, tag, leaf_fn(geo))


class MMU:
    """One CPU's MMU and TLB over ``mem``.

    ``tlb`` defaults to ``TLB(512)``; ``TLB(0)`` turns caching off.  ``stale_check`` enables
    the stale-entry detector (a walk per hit: slow, for tests).  Configure regimes with
    :meth:`set_hyp`, :meth:`set_stage2`, :meth:`set_stage1`; translate and access memory with
    the ``hyp_*`` and ``guest_*`` methods; maintain the TLB with :meth:`tlbi`.
    """

    def __init__(
        self, mem: PhysicalMemory, tlb: TLB | None = None, *, stale_check: bool = False
    ) -> None:
        self.mem = mem
        self.tlb = TLB() if tlb is None else tlb
        self._stale_check = stale_check
        self.stale_hits: list[StaleHit] = []
        self._hyp: _Regime | None = None
        self._s2: _Regime | None = None
        self._s1: _Regime | None = None
        self._domain: list[MMU] = [self]
        self._tlb_get = self.tlb.entries.get
        self._lru = self.tlb.lru
        self._hyp_probe: tuple[int, ...] = ()  # block sizes (shifts) of cached hyp entries
        self._hyp_page_shift = 12  # the hyp format's page size, probed first
        self._hyp_blocks = False  # whether hyp block (not page) entries may be cached
        # True when a hit needs no bookkeeping beyond the counter (FIFO, no stale detector).
        self._plain = not stale_check and not self._lru
        # Hot counters are plain attributes; :attr:`counters` presents them with the rest.
        self.hits = 0
        self.misses = 0  # every miss is one walk (faults are not cached, so they miss too)
        self.walk_reads = 0
        self._counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"MMU(tlb={self.tlb!r}, hits={self.hits}, misses={self.misses})"

    @property
    def stale_check(self) -> bool:
        """Whether every TLB hit is re-walked and compared (see :class:`StaleHit`)."""
        return self._stale_check

    @stale_check.setter
    def stale_check(self, enabled: bool) -> None:
        self._stale_check = bool(enabled)
        self._plain = not self._stale_check and not self._lru

    # -- configuration ----------------------------------------------------------------------

    def set_hyp(self, httbr: int, fmt: Format = ARMV7_S1) -> None:
        """Point the hyp regime at the tables rooted at ``httbr`` (HTTBR / TTBR0_EL2).
        Writing the base register does not flush the TLB, as on hardware (hyp entries carry
        no tag, so switching tables without TLBIALLH leaves the old entries visible).
        Raises RangeError for a stage-2 format or a bad base."""
        if fmt.stage != 1 or fmt.regime != "el2":
            raise RangeError(f"MMU.set_hyp: {fmt.name} is not a hyp (EL2) stage-1 format")
        self._hyp = _regime(self.mem, httbr, fmt, 0, "set_hyp")
        self._hyp_page_shift = fmt.page_shift
        self._hyp_blocks = any(shift != fmt.page_shift for shift in self._hyp_probe)

    def set_stage2(self, vttbr: int, vmid: int = 0, fmt: Format = ARMV7_S2_40) -> None:
        """Select the guest's stage 2: tables at ``vttbr`` tagged ``vmid`` (VTTBR.BADDR and
        VMID).  The guest's stage 1 is left as it was (off unless :meth:`set_stage1`).
        Raises RangeError for a stage-1 format, a bad base or VMID."""
        if fmt.stage != 2:
            raise RangeError(f"MMU.set_stage2: {fmt.name} is not a stage-2 format")
        self._s2 = _regime(self.mem, vttbr, fmt, vmid, "set_stage2")

    def set_stage1(self, ttbr0: int | None, asid: int = 0, fmt: Format | None = None) -> None:
        """Turn the guest's stage 1 on (tables at IPA ``ttbr0``, current ``asid``) or off
        (``ttbr0=None``).  ``fmt`` defaults to ARMv7 PL1&0 LPAE.  Raises RangeError."""
        if ttbr0 is None:
            self._s1 = None
            return
        chosen = ARMV7_S1_PL1 if fmt is None else fmt
        if chosen.stage != 1 or chosen.regime != "el1&0":
            raise RangeError(f"MMU.set_stage1: {chosen.name} is not an EL1&0 stage-1 format")
        if not 0 <= ttbr0 < 1 << 48 or ttbr0 % 8:
            raise RangeError(f"MMU.set_stage1: ttbr0 {ttbr0!r} is not a table address")
        if not 0 <= asid < 1 << 16:
            raise RangeError(f"MMU.set_stage1: asid {asid!r} is not a 16-bit ASID")
        geo = geometry_of(chosen)
        shifts = tuple(sorted(chosen.shifts[lv] for lv in chosen.levels if chosen.can_block(lv)))
        self._s1 = _Regime(ttbr0, chosen, geo, shifts, asid, leaf_fn(geo))

    def join(self, other: MMU) -> None:
        """Put ``other`` in this MMU's inner-shareable domain: ``...IS`` maintenance on any
        member reaches all members (the CPUs of one system)."""
        if other._domain is self._domain:
            return
        merged = self._domain + [m for m in other._domain if m not in self._domain]
        for mmu in merged:
            mmu._domain = merged

    @property
    def vmid(self) -> int | None:
        """The current VMID (from :meth:`set_stage2`), or None."""
        return None if self._s2 is None else self._s2.tag

    @property
    def asid(self) -> int | None:
        """The current guest ASID (from :meth:`set_stage1`), or None when stage 1 is off."""
        return None if self._s1 is None else self._s1.tag

    # -- counters ---------------------------------------------------------------------------

    @property
    def walks(self) -> int:
        """Table walks performed: one per TLB miss (a fault is never cached, so every faulting
        access walks again)."""
        return self.misses

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot: ``walks``, ``walk_reads`` (descriptors read by walks), ``hits``,
        ``misses``, ``evictions``, ``stale_hits``, and ``tlbi:<op>`` per maintenance op."""
        out = {
            "walks": self.walks,
            "walk_reads": self.walk_reads,
            "hits": self.hits,
            "misses": self.misses,
            "evictions": self.tlb.evictions,
            "stale_hits": len(self.stale_hits),
        }
        out.update(self._counts)
        return out

    def reset_counters(self) -> None:
        """Zero every counter (the TLB contents are kept)."""
        self.hits = self.misses = self.walk_reads = 0
        self.tlb.evictions = 0
        self._counts.clear()
        self.stale_hits.clear()

    # -- hyp regime -------------------------------------------------------------------------

    def _need_hyp(self, va: int, what: str) -> _Regime:
        hyp = self._hyp
        if hyp is None:
            raise RangeError(f"{self!r}.{what}: no hyp regime (call set_hyp first)")
        if isinstance(va, bool) or not isinstance(va, int) or not 0 <= va < hyp.geo.ia_reg_limit:
            raise RangeError(f"{self!r}.{what}: {va!r} is not a hyp virtual address")
        return hyp

    def hyp_pa(self, va: int, access: str = "read", _bits: dict[str, int] = ACCESS_BITS) -> int:
        """Translate hyp VA ``va`` through the TLB: the PA, or FaultError (stage 1).

        The hot path the Xen model uses: a hit on a page entry is one dict lookup and builds
        no object; block entries, LRU bookkeeping, the stale detector and misses take
        :meth:`_hyp_pa_slow`.  A miss walks with the compiled walker and caches the leaf.
        Raises RangeError for a bad VA/access or when no hyp regime is set."""
        try:
            entry = self._tlb_get(((va >> self._hyp_page_shift) << 6) | self._hyp_page_shift)
        except TypeError:
            entry = None  # not an integer: the slow path reports it
        if entry is None:
            if not self._hyp_blocks:  # no block entries cached: nothing else to probe
                return self._hyp_miss(va, _bits.get(access, 0), access)
        elif self._plain and entry[1] & _bits.get(access, 0):
            self.hits += 1
            return entry[0] | (va & entry[9])
        return self._hyp_pa_slow(va, access)

    def _hyp_pa_slow(self, va: int, access: str) -> int:
        a = ACCESS_BITS.get(access, 0)
        get = self._tlb_get
        try:
            for shift in self._hyp_probe:
                key = ((va >> shift) << 6) | shift
                entry = get(key)
                if entry is not None:
                    return self._hyp_hit_checked(va, key, entry, a, access)
        except TypeError:
            pass  # not an integer: the miss path reports it
        return self._hyp_miss(va, a, access)

    def _hyp_hit_checked(self, va: int, key: int, entry: TLBEntry, a: int, access: str) -> int:
        hyp = self._need_hyp(va, "hyp_pa")
        if not a:
            raise RangeError(f"{self!r}.hyp_pa: access {access!r} is not read/write/exec")
        self.hits += 1
        if self._lru:
            self.tlb.entries.move_to_end(key)
        if self.stale_check:
            self._check_hyp_hit(hyp, va, entry, access)
        if entry[1] & a:
            return entry[0] | (va & entry[9])
        raise FaultError(Fault("permission", entry[2], va, access=_NAMES[a]))

    def _hyp_miss(self, va: int, a: int, access: str) -> int:
        hyp = self._hyp
        if hyp is None or not a or va.__class__ is not int or not 0 <= va < hyp.geo.ia_reg_limit:
            self._need_hyp(va, "hyp_pa")
            raise RangeError(f"{self!r}.hyp_pa: access {access!r} is not read/write/exec")
        geo = hyp.geo
        self.misses += 1
        desc, level, tbl, kind = hyp.leaf(self.mem.storage, hyp.root, va)
        if va < geo.ia_limit:
            self.walk_reads += level - geo.start + 1
        if kind:
            raise FaultError(Fault(kind, level, va, access=_NAMES[a]))  # type: ignore[arg-type]
        shift = geo.shifts[level]
        low = (1 << shift) - 1
        if tbl & _HIERARCHICAL:
            mask = permissions(geo, desc, tbl) & 7
        else:
            mask = geo.lut[((desc >> 6) & 3) | ((desc >> 52) & 4) | ((desc >> 50) & 8)] & 7
        base = desc & geo.addr_mask & ~low
        entry: TLBEntry = (base, mask, level, desc, shift, -1, -1, -1, False, low)
        tlb = self.tlb
        if tlb.capacity:
            tlb.insert(((va >> shift) << 6) | shift, entry)
            if shift not in self._hyp_probe:
                self._hyp_probe = tuple(sorted((*self._hyp_probe, shift)))
                self._hyp_blocks = shift != self._hyp_page_shift or self._hyp_blocks
        if mask & a:
            return base | (va & low)
        raise FaultError(Fault("permission", level, va, access=_NAMES[a]))

    def hyp_translate(self, va: int, access: str = "read") -> Translation | Fault:
        """Translate hyp VA ``va`` through the TLB, as a Translation or a Fault.  On a miss the
        Translation carries the walk's descriptor reads; on a hit ``reads`` is empty (no
        memory was read).  Raises RangeError for a bad VA/access or no hyp regime."""
        hyp = self._need_hyp(va, "hyp_translate")
        hits_before = self.hits
        try:
            pa = self.hyp_pa(va, access)
        except FaultError as error:
            return error.fault
        if self.hits == hits_before:  # a miss: report the walk in full
            return walk(self.mem, hyp.fmt, hyp.root, va, access)
        for shift in hyp.shifts:
            entry = self.tlb.entries.get(hyp_key(va, shift))
            if entry is not None:
                return Translation(
                    va=va,
                    pa=pa,
                    level=entry[2],
                    descriptor=entry[3],
                    block_size=1 << entry[4],
                    readable=bool(entry[1] & 1),
                    writable=bool(entry[1] & 2),
                    executable=bool(entry[1] & 4),
                    attrs=S1Attrs.from_descriptor(entry[3]),
                    reads=(),
                )
        raise AssertionError("a TLB hit left no entry")  # pragma: no cover

    def hyp_read64(self, va: int) -> int:
        """Read the 64-bit word at hyp VA ``va`` (8-aligned) through the TLB.
        Raises FaultError, AlignmentError, RangeError."""
        if va & 7:
            raise AlignmentError(f"{self!r}.hyp_read64: {va:#x} is not 8-byte aligned")
        pa = self.hyp_pa(va, "read")
        words = self.mem.storage.get(pa >> 12)
        return 0 if words is None else words[(pa >> 3) & 511]

    def hyp_write64(self, va: int, value: int) -> None:
        """Write a 64-bit word at hyp VA ``va`` through the TLB.  Raises as hyp_read64."""
        if va & 7:
            raise AlignmentError(f"{self!r}.hyp_write64: {va:#x} is not 8-byte aligned")
        self.mem.write64(self.hyp_pa(va, "write"), value)

    def hyp_read32(self, va: int) -> int:
        """Read the 32-bit word at hyp VA ``va`` (4-aligned).  Raises as hyp_read64."""
        return self.mem.read32(self.hyp_pa(va, "read"))

    def hyp_write32(self, va: int, value: int) -> None:
        """Write a 32-bit word at hyp VA ``va`` (4-aligned).  Raises as hyp_read64."""
        self.mem.write32(self.hyp_pa(va, "write"), value)

    def _check_hyp_hit(self, hyp: _Regime, va: int, entry: TLBEntry, access: str) -> None:
        current = walk(self.mem, hyp.fmt, hyp.root, va, access)
        cached_pa = entry[0] | (va & entry[9])
        self._compare(va, "hyp", None, None, access, cached_pa, entry[1], current)

    def _compare(
        self,
        va: int,
        regime: str,
        vmid: int | None,
        asid: int | None,
        access: str,
        cached_pa: int,
        mask: int,
        current: Translation | Fault,
    ) -> None:
        """Record a StaleHit when the TLB's answer to this access (the output address, or a
        permission refusal) differs from what a fresh walk answers now."""
        allowed = bool(mask & ACCESS_BITS[access])
        if isinstance(current, Translation):
            if allowed and current.pa == cached_pa:
                return
        elif not allowed and current.kind == "permission":
            return
        letters = _perm_letters(mask)
        self.stale_hits.append(
            StaleHit(va, regime, vmid, asid, access, cached_pa, letters, current)
        )

    # -- guest regime -----------------------------------------------------------------------

    def _need_s2(self, what: str) -> _Regime:
        if self._s2 is None:
            raise RangeError(f"{self!r}.{what}: no stage 2 (call set_stage2 first)")
        return self._s2

    def guest_translate(
        self, va: int, access: str = "read", user: bool = False
    ) -> Translation | Fault:
        """Translate a guest address through the TLB: stage 1 (if on) then stage 2.

        With stage 1 off, ``va`` is the IPA.  Faults say which stage (and S1PTW for a
        stage-2 fault on a stage-1 table read).  A hit returns a Translation with empty
        ``reads``.  Raises RangeError for a bad address/access or when no stage 2 is set."""
        hits_before = self.hits
        try:
            pa, entry = self._guest_lookup(va, access, user)
        except FaultError as error:
            return error.fault
        s1 = self._s1
        s2 = self._need_s2("guest_translate")
        if self.hits == hits_before:  # a miss: report the walk in full
            if s1 is None:
                return walk(self.mem, s2.fmt, s2.root, va, access)
            return walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, access, user)
        stage = 2 if s1 is None else 1
        mask = entry[1] >> 3 if user else entry[1]
        if entry[5] >= 0:
            mask &= entry[5]
        attrs_: S1Attrs | S2Attrs = (
            S2Attrs.from_descriptor(entry[3]) if s1 is None else S1Attrs.from_descriptor(entry[3])
        )
        return Translation(
            va=va,
            pa=pa,
            level=entry[2],
            descriptor=entry[3],
            block_size=1 << entry[4],
            readable=bool(mask & 1),
            writable=bool(mask & 2),
            executable=bool(mask & 4),
            attrs=attrs_,
            reads=(),
            stage=stage,
            ipa=None if s1 is None else entry[7] | (va & ((1 << entry[4]) - 1)),
        )

    def guest_pa(
        self, va: int, access: str = "read", user: bool = False, _bits: dict[str, int] = ACCESS_BITS
    ) -> int:
        """The PA of guest address ``va`` through the TLB, or FaultError.  Raises RangeError.

        The hot path for a guest with stage 1 off (a p2m-only guest): a hit costs one dict
        lookup per leaf size and builds no object."""
        s2 = self._s2
        if self._s1 is None and s2 is not None and not user and self._plain:
            page = s2.shifts[0]
            try:
                entry = self._tlb_get((2, s2.tag, page, va >> page))
            except TypeError:
                entry = None  # not an integer: the full path reports it
            if entry is not None and entry[1] & _bits.get(access, 0):
                self.hits += 1
                return entry[0] | (va & entry[9])
        if self._s1 is None and s2 is not None and not user and not self._stale_check:
            a = _bits.get(access, 0)
            get = self._tlb_get
            try:
                for shift in s2.shifts if self.tlb.capacity else ():
                    key = (2, s2.tag, shift, va >> shift)
                    entry = get(key)
                    if entry is not None:
                        if entry[1] & a:
                            self.hits += 1
                            if self._lru:
                                self.tlb.entries.move_to_end(key)
                            return entry[0] | (va & entry[9])
                        break  # a refusal: the full path reports it
                else:
                    if a and va.__class__ is int and 0 <= va < s2.geo.ia_reg_limit:
                        return self._s2_miss(s2, va, a)
            except TypeError:
                pass  # not an integer: the full path reports it
        return self._guest_lookup(va, access, user)[0]

    def _s2_miss(self, s2: _Regime, va: int, a: int) -> int:
        """Stage-2-only TLB miss: walk, cache, check (the lean twin of :meth:`_guest_miss`)."""
        geo = s2.geo
        self.misses += 1
        desc, level, _tbl, kind = s2.leaf(self.mem.storage, s2.root, va)
        if va < geo.ia_limit:
            self.walk_reads += level - geo.start + 1
        if kind:
            fault = Fault(kind, level, va, stage=2, ipa=va, access=_NAMES[a])  # type: ignore[arg-type]
            raise FaultError(fault)
        shift = geo.shifts[level]
        low = (1 << shift) - 1
        mask = geo.lut[((desc >> 6) & 3) | ((desc >> 52) & 4)]
        base = desc & geo.addr_mask & ~low
        if self.tlb.capacity:
            entry: TLBEntry = (base, mask | mask << 3, level, desc, shift, -1, -1, -1, False, low)
            self.tlb.insert((2, s2.tag, shift, va >> shift), entry)
        if mask & a:
            return base | (va & low)
        raise FaultError(Fault("permission", level, va, stage=2, ipa=va, access=_NAMES[a]))

    def guest_read64(self, va: int, user: bool = False) -> int:
        """Read the 64-bit word at guest address ``va``.  Raises FaultError/RangeError."""
        return self.mem.read64(self.guest_pa(va, "read", user))

    def guest_write64(self, va: int, value: int, user: bool = False) -> None:
        """Write the 64-bit word at guest address ``va``.  Raises FaultError/RangeError."""
        self.mem.write64(self.guest_pa(va, "write", user), value)

    def _guest_lookup(self, va: int, access: str, user: bool) -> tuple[int, TLBEntry]:
        s2 = self._need_s2("guest_translate")
        s1 = self._s1
        a = ACCESS_BITS.get(access)
        if a is None:
            raise RangeError(f"{self!r}: access {access!r} is not read/write/exec")
        first = s2 if s1 is None else s1
        if isinstance(va, bool) or not isinstance(va, int) or not 0 <= va < first.geo.ia_reg_limit:
            raise RangeError(f"{self!r}: {va!r} is not a guest address of {first.fmt.name}")
        if user and s1 is None:
            raise RangeError(f"{self!r}: user=True needs a guest stage 1")
        entries = self.tlb.entries
        for shift in first.shifts:
            keys = (
                [TLB.s2_key(s2.tag, va, shift)]
                if s1 is None
                else [
                    TLB.guest_key(s2.tag, s1.tag, va, shift),
                    TLB.guest_key(s2.tag, -1, va, shift),
                ]
            )
            for key in keys:
                entry = entries.get(key)
                if entry is not None:
                    if self._lru:  # FIFO replacement ignores hits
                        entries.move_to_end(key)
                    self.hits += 1
                    if self.stale_check:
                        self._check_guest_hit(va, entry, access, user)
                    return self._guest_permit(va, entry, a, user), entry
        entry = self._guest_miss(s2, s1, va, a, user)
        return self._guest_permit(va, entry, a, user), entry

    def _guest_permit(self, va: int, entry: TLBEntry, a: int, user: bool) -> int:
        mask = entry[1] >> 3 if user else entry[1]
        name = _NAMES[a]
        stage1_on = entry[5] >= 0
        if not mask & a:
            stage = 1 if stage1_on else 2
            ipa = None if stage1_on else va
            raise FaultError(Fault("permission", entry[2], va, stage=stage, ipa=ipa, access=name))
        offset = va & ((1 << entry[4]) - 1)
        if stage1_on and not entry[5] & a:
            ipa = entry[7] | offset
            raise FaultError(Fault("permission", entry[6], va, stage=2, ipa=ipa, access=name))
        return entry[0] | offset

    def _guest_miss(self, s2: _Regime, s1: _Regime | None, va: int, a: int, user: bool) -> TLBEntry:
        self.misses += 1
        if s1 is None:
            desc, level, _tbl, kind = s2.leaf(self.mem.storage, s2.root, va)
            if va < s2.geo.ia_limit:
                self.walk_reads += level - s2.geo.start + 1
            if kind:
                fault = Fault(kind, level, va, stage=2, ipa=va, access=_NAMES[a])  # type: ignore[arg-type]
                raise FaultError(fault)
            shift = s2.geo.shifts[level]
            low = (1 << shift) - 1
            base = desc & s2.geo.addr_mask & ~low
            mask = permissions(s2.geo, desc, 0)
            entry: TLBEntry = (base, mask | mask << 3, level, desc, shift, -1, -1, -1, False, low)
            self.tlb.insert(TLB.s2_key(s2.tag, va, shift), entry)
            return entry
        # Two stages: walk for reading (a permission refusal is decided from the entry).
        result = walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, "read", user)
        if isinstance(result, Fault) and result.kind == "permission":
            result = walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, "exec", user)
        if isinstance(result, Fault) and result.kind == "permission":
            result = walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, "write", user)
        if isinstance(result, Fault):
            self.walk_reads += result.level + 1
            raise FaultError(attrs.evolve(result, access=_NAMES[a]))
        assert result.s2 is not None and result.ipa is not None
        self.walk_reads += len(result.reads) * (1 + len(s2.fmt.levels)) + len(result.s2.reads)
        s2t = result.s2
        shift = min(s1.geo.shifts[result.level], s2.geo.shifts[s2t.level])
        low = (1 << shift) - 1
        s1mask = permissions(s1.geo, result.descriptor, _table_bits(result))
        s2mask = permissions(s2.geo, s2t.descriptor, 0)
        ng = bool(result.descriptor & (1 << 11))
        entry = (
            result.pa & ~low,
            s1mask,
            result.level,
            result.descriptor,
            shift,
            s2mask,
            s2t.level,
            result.ipa & ~low,
            ng,
            low,
        )
        self.tlb.insert(TLB.guest_key(s2.tag, s1.tag if ng else -1, va, shift), entry)
        return entry

    def _check_guest_hit(self, va: int, entry: TLBEntry, access: str, user: bool) -> None:
        s2 = self._need_s2("guest_translate")
        s1 = self._s1
        if s1 is None:
            current: Translation | Fault = walk(self.mem, s2.fmt, s2.root, va, access)
        else:
            current = walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, access, user)
        mask = entry[1] >> 3 if user else entry[1]
        if entry[5] >= 0:
            mask &= entry[5]
        cached_pa = entry[0] | (va & entry[9])
        asid = None if s1 is None else s1.tag
        self._compare(va, "guest", s2.tag, asid, access, cached_pa, mask & 7, current)

    # -- maintenance ------------------------------------------------------------------------

    def tlbi(
        self,
        op: str,
        addr: int | None = None,
        *,
        asid: int | None = None,
        vmid: int | None = None,
    ) -> int:
        """Perform TLB maintenance operation ``op`` (an architectural name, see
        :data:`TLBI_OPS`) with its address operand ``addr`` (VA, or IPA for the IPAS2 forms)
        and, where the operation takes them, ``asid``; ``vmid`` defaults to the current one.
        Returns how many entries were removed (over the shareable domain for ``IS`` forms).
        Raises RangeError for an unknown op or a missing/unexpected operand."""
        spec = TLBI_OPS.get(op)
        if spec is None:
            raise RangeError(f"{self!r}.tlbi: unknown operation {op!r}")
        needs_addr, needs_asid, inner_shareable, action = spec
        if needs_addr != (addr is not None):
            raise RangeError(f"{self!r}.tlbi({op!r}): address operand {addr!r}")
        if needs_asid and asid is None:
            asid = self.asid
            if asid is None:
                raise RangeError(f"{self!r}.tlbi({op!r}): needs an ASID")
        targets = self._domain if inner_shareable else [self]
        removed = 0
        for mmu in targets:
            removed += action(mmu, addr, asid, vmid)
        key = f"tlbi:{op}"
        self._counts[key] = self._counts.get(key, 0) + 1
        return removed

    def _current_vmid(self, vmid: int | None) -> int:
        chosen = self.vmid if vmid is None else vmid
        if chosen is None:
            raise RangeError(f"{self!r}: operation needs a VMID (set_stage2 or vmid=)")
        return chosen


def _table_bits(t: Translation) -> int:
    """OR of the table descriptors a walk went through (hierarchical attributes)."""
    bits = 0
    for _, desc in t.reads[:-1]:
        bits |= desc
    return bits


TlbiAction = Callable[[MMU, int | None, int | None, int | None], int]


def _all_hyp(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_hyp()


def _hyp_va(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_hyp(addr)


def _all_guests(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest()


def _vmid_all(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest(vmid=mmu._current_vmid(vmid))


def _vmid_stage1(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest(vmid=mmu._current_vmid(vmid), stage2=False)


def _ipa(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest(vmid=mmu._current_vmid(vmid), va=addr, combined=False)


def _va_asid(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest(vmid=mmu._current_vmid(vmid), va=addr, asid=asid, stage2=False)


def _va_all_asids(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest(vmid=mmu._current_vmid(vmid), va=addr, stage2=False)


def _asid(mmu: MMU, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return mmu.tlb.invalidate_guest(
        vmid=mmu._current_vmid(vmid), asid=asid, stage2=False, keep_global=True
    )


def _ops() -> dict[str, tuple[bool, bool, bool, TlbiAction]]:
    # name: (takes an address, takes an ASID, inner shareable, action)
    base: dict[str, tuple[bool, bool, TlbiAction]] = {
        # AArch32 (ARMv7 with the Virtualization Extensions, and ARMv8 AArch32)
        "TLBIALLH": (False, False, _all_hyp),
        "TLBIMVAH": (True, False, _hyp_va),
        "TLBIMVALH": (True, False, _hyp_va),
        "TLBIALLNSNH": (False, False, _all_guests),
        "TLBIALL": (False, False, _vmid_all),
        "TLBIMVA": (True, True, _va_asid),
        "TLBIMVAL": (True, True, _va_asid),
        "TLBIMVAA": (True, False, _va_all_asids),
        "TLBIMVAAL": (True, False, _va_all_asids),
        "TLBIASID": (False, True, _asid),
        "TLBIIPAS2": (True, False, _ipa),
        "TLBIIPAS2L": (True, False, _ipa),
        # AArch64
        "TLBI ALLE2": (False, False, _all_hyp),
        "TLBI VAE2": (True, False, _hyp_va),
        "TLBI VALE2": (True, False, _hyp_va),
        "TLBI ALLE1": (False, False, _all_guests),
        "TLBI VMALLS12E1": (False, False, _vmid_all),
        "TLBI VMALLE1": (False, False, _vmid_stage1),
        "TLBI VAE1": (True, True, _va_asid),
        "TLBI VALE1": (True, True, _va_asid),
        "TLBI VAAE1": (True, False, _va_all_asids),
        "TLBI VAALE1": (True, False, _va_all_asids),
        "TLBI ASIDE1": (False, True, _asid),
        "TLBI IPAS2E1": (True, False, _ipa),
        "TLBI IPAS2LE1": (True, False, _ipa),
    }
    ops: dict[str, tuple[bool, bool, bool, TlbiAction]] = {}
    for name, (addr, asid, action) in base.items():
        ops[name] = (addr, asid, False, action)
        ops[name + "IS"] = (addr, asid, True, action)
    return ops


TLBI_OPS: dict[str, tuple[bool, bool, bool, TlbiAction]] = _ops()
"""Maintenance operations by architectural name: ``(takes an address, takes an ASID, inner
shareable, action)``.  Every name also exists with the ``IS`` suffix (broadcast to the MMUs
joined with :meth:`MMU.join`).  What each removes:

* TLBIALLH / TLBI ALLE2: every hyp entry.  TLBIMVAH, TLBIMVALH / TLBI VAE2, VALE2: hyp entries
  covering the VA (any block size; the "last level" forms are treated as the full ones).
* TLBIALLNSNH / TLBI ALLE1: every guest entry of every VMID.
* TLBIALL (from hyp, ARMv7 semantics) / TLBI VMALLS12E1: every guest entry of the VMID,
  combined and stage-2-only.  TLBI VMALLE1: the VMID's combined (stage-1) entries only.
* TLBIMVA / TLBI VAE1: entries of the VMID covering the VA with the ASID, or global.
  TLBIMVAA / TLBI VAAE1: any ASID.  TLBIASID / TLBI ASIDE1: the ASID's non-global entries.
* TLBIIPAS2 / TLBI IPAS2E1: the VMID's stage-2-only entries covering the IPA (combined entries
  are untouched: follow with TLBIALL / VMALLE1, as the architecture requires).
"""
