"""An MMU: translation regimes, a TLB in front of the walker, TLB maintenance, counters.

One :class:`MMU` models one CPU's view: the hyp regime (HTTBR/TTBR0_EL2, Xen's own tables),
and the guest regime (VTTBR with a VMID for stage 2, optionally a guest stage 1 with an
ASID).  Accesses by virtual address go through the :class:`~vaalloc.lpae.tlb.TLB`; a miss
walks the tables in :class:`~vaalloc.lpae.memory.PhysicalMemory` and caches the leaf.  Nothing
snoops table writes: an entry stays until a TLB maintenance operation removes it or it is
evicted, so code that forgets a flush sees stale translations, as it would on hardware.  The
opt-in stale detector (``stale_check=True``) re-walks on every hit and records each hit whose
cached answer differs from what the tables now say.

**One access path per regime.**  The two single-stage regimes (hyp, and a guest with stage 1
off) each have one generated lookup, built when the regime is configured
(:mod:`vaalloc.lpae.regime`): TLB probe, walk, fill and permission verdict in one function.
Every access of that regime goes through it: :meth:`MMU.hyp_pa`, ``hyp_read64`` and the other
hyp accessors; :meth:`MMU.guest_pa`, :meth:`MMU.stage2_pa` (the verdict without an exception,
for a hypervisor's abort handler) and the batch :meth:`MMU.guest_pa_many`; and the
``*_translate`` calls that explain an answer.  A guest with stage 1 on takes the two-stage path
(:meth:`MMU.guest_pa` and friends again), a readable walk of both stages.

Maintenance operations take their architectural names (:data:`TLBI_OPS`).  The inner-shareable
forms (``...IS``) act on every MMU joined with :meth:`MMU.join` (the CPUs of one system);
the others act on this MMU only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Final, Literal

import attrs

from vaalloc.errors import AlignmentError, RangeError
from vaalloc.lpae._checks import shown
from vaalloc.lpae.descriptor import NG, S1Attrs, S2Attrs
from vaalloc.lpae.geometry import ARMV7_S1, ARMV7_S1_PL1, ARMV7_S2_40, Format
from vaalloc.lpae.memory import PhysicalMemory
from vaalloc.lpae.regime import REFUSED, Lookup, Regime, build_lookup
from vaalloc.lpae.tlb import GUEST, HYP, S2, TLB, TLBEntry, tlb_key
from vaalloc.lpae.walk import (
    ACCESS_BITS,
    Fault,
    FaultError,
    Translation,
    walk,
    walk_two_stage,
)

__all__ = ["MMU", "REFUSED", "TLBI_OPS", "StaleHit"]

_NAMES: dict[int, Literal["read", "write", "exec"]] = {1: "read", 2: "write", 4: "exec"}
_READ: Final = 1
_WRITE: Final = 2


@attrs.frozen
class StaleHit:
    """A TLB hit whose cached answer no longer matches the tables.

    va: the address looked up; regime: ``"hyp"`` or ``"guest"``; vmid/asid: the guest tags
    (None for hyp); access: the access made; cached_pa: the output address the TLB gave;
    cached_perm: its permissions as ``"rwx"`` letters; current: what a fresh walk says now
    (a Translation or a Fault).
    A plain record: its constructor raises nothing and checks nothing.
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


def _check_base(mem: PhysicalMemory, root: object, fmt: Format, what: str) -> int:
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < mem.limit:
        raise RangeError(f"MMU.{what}: table base {shown(root)} outside physical memory")
    if root % 8:
        raise AlignmentError(f"MMU.{what}: table base {root:#x} is not 8-byte aligned")
    if root >> fmt.oa_bits:
        raise RangeError(f"MMU.{what}: table base {root:#x} beyond {fmt.name}'s output size")
    return root


def _check_tag(tag: object, what: str, name: str) -> int:
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < 1 << 16:
        raise RangeError(f"MMU.{what}: {name} {tag!r} is not a 16-bit {name.upper()}")
    return tag


class MMU:
    """One CPU's MMU and TLB over ``mem``.

    ``tlb`` defaults to ``TLB(512)``; ``TLB(0)`` turns caching off.  ``stale_check`` enables
    the stale-entry detector (a walk per hit: slow, for tests).  Configure regimes with
    :meth:`set_hyp`, :meth:`set_stage2`, :meth:`set_stage1`; translate and access memory with
    the ``hyp_*`` and ``guest_*`` methods; maintain the TLB with :meth:`tlbi`.

    Counters (plain attributes, also in :attr:`counters`): ``hits``, ``misses`` (every miss is
    one walk: faults are never cached, so a faulting access walks every time) and
    ``walk_reads`` (descriptors read by those walks).  ``domain`` lists the MMUs that this
    one's inner-shareable maintenance reaches (itself included; see :meth:`join`).

    ``hyp_lookup`` and ``guest_lookup`` (read them, never assign them) are the current
    regimes' lookups, ``lookup(addr, access_bit) -> PA or REFUSED`` (see
    :mod:`vaalloc.lpae.regime`), for a caller that checked its arguments once and makes many
    accesses (the Xen model): :meth:`hyp_pa` / :meth:`stage2_pa` without their checks, the
    refusal returned.  ``access_bit`` is 1 (read), 2 (write) or 4 (exec) and the address an
    int.  They are None while there is no such regime (``guest_lookup`` also while the
    guest's stage 1 is on) and are replaced by every ``set_*`` call and a change of
    :attr:`stale_check`: read them again after one.

    Raises RangeError when ``mem`` is not a PhysicalMemory or ``tlb`` not a TLB.
    """

    __slots__ = (
        "_counts",
        "_hyp",
        "_s1",
        "_s2",
        "_stale_check",
        "domain",
        "guest_lookup",
        "hits",
        "hyp_lookup",
        "mem",
        "misses",
        "stale_hits",
        "tlb",
        "walk_reads",
    )

    def __init__(
        self, mem: PhysicalMemory, tlb: TLB | None = None, *, stale_check: bool = False
    ) -> None:
        if not isinstance(mem, PhysicalMemory):
            raise RangeError(f"MMU(mem={mem!r}): expected a PhysicalMemory")
        if tlb is not None and not isinstance(tlb, TLB):
            raise RangeError(f"MMU(tlb={tlb!r}): expected a TLB")
        if not isinstance(stale_check, bool):
            raise RangeError(f"MMU(stale_check={stale_check!r}): expected a bool")
        self.mem = mem
        self.tlb = TLB() if tlb is None else tlb
        self._stale_check = stale_check
        self.stale_hits: list[StaleHit] = []
        self._hyp: Regime | None = None
        self._s2: Regime | None = None
        self._s1: Regime | None = None
        self.hyp_lookup: Lookup | None = None
        self.guest_lookup: Lookup | None = None
        self.domain: list[MMU] = [self]
        self.hits = 0
        self.misses = 0
        self.walk_reads = 0
        self._counts: defaultdict[str, int] = defaultdict(int)

    def __repr__(self) -> str:
        return f"MMU(tlb={self.tlb!r}, hits={self.hits}, misses={self.misses})"

    @property
    def stale_check(self) -> bool:
        """Whether every TLB hit is re-walked and compared (see :class:`StaleHit`).
        Setting it rebuilds the lookups (the detector is compiled in or out).  Raises
        RangeError for a value that is not a bool."""
        return self._stale_check

    @stale_check.setter
    def stale_check(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise RangeError(f"MMU.stale_check = {enabled!r}: expected a bool")
        self._stale_check = enabled
        for regime in (self._hyp, self._s2):
            if regime is not None:
                self._bind(regime)
        if self._hyp is not None:
            self.hyp_lookup = self._hyp.lookup
        self._rebind_guest()

    # -- configuration ----------------------------------------------------------------------

    def _bind(self, regime: Regime) -> None:
        """(Re)build ``regime``'s lookup for this MMU's TLB and detector setting."""
        check = self._hit_checker(regime) if self._stale_check else None
        regime.lookup, regime.lookup_many = build_lookup(regime, self.mem, self.tlb, self, check)

    def _rebind_guest(self) -> None:
        s2 = self._s2
        self.guest_lookup = s2.lookup if s2 is not None and self._s1 is None else None

    def set_hyp(self, httbr: int, fmt: Format = ARMV7_S1) -> None:
        """Point the hyp regime at the tables rooted at ``httbr`` (HTTBR / TTBR0_EL2).
        Writing the base register does not flush the TLB, as on hardware (hyp entries carry
        no tag, so switching tables without TLBIALLH leaves the old entries visible).
        Raises RangeError for a format that is not hyp stage 1, or a bad base."""
        if not isinstance(fmt, Format) or fmt.stage != 1 or fmt.regime != "el2":
            raise RangeError(f"MMU.set_hyp: {fmt!r} is not a hyp (EL2) stage-1 format")
        regime = Regime(fmt, _check_base(self.mem, httbr, fmt, "set_hyp"), HYP, 0)
        self._bind(regime)
        self._hyp = regime
        self.hyp_lookup = regime.lookup

    def set_stage2(self, vttbr: int, vmid: int = 0, fmt: Format = ARMV7_S2_40) -> None:
        """Select the guest's stage 2: tables at ``vttbr`` tagged ``vmid`` (VTTBR.BADDR and
        VMID).  The guest's stage 1 is left as it was (off unless :meth:`set_stage1`).
        Cost: one closure (the regime's lookup is compiled once per format).
        Raises RangeError for a format that is not stage 2, a bad base or VMID."""
        if not isinstance(fmt, Format) or fmt.stage != 2:
            raise RangeError(f"MMU.set_stage2: {fmt!r} is not a stage-2 format")
        root = _check_base(self.mem, vttbr, fmt, "set_stage2")
        regime = Regime(fmt, root, S2, _check_tag(vmid, "set_stage2", "vmid"))
        self._bind(regime)
        self._s2 = regime
        self._rebind_guest()

    def set_stage1(self, ttbr0: int | None, asid: int = 0, fmt: Format | None = None) -> None:
        """Turn the guest's stage 1 on (tables at IPA ``ttbr0``, current ``asid``) or off
        (``ttbr0=None``).  ``fmt`` defaults to ARMv7 PL1&0 LPAE.  Raises RangeError."""
        if ttbr0 is None:
            self._s1 = None
            self._rebind_guest()
            return
        chosen = ARMV7_S1_PL1 if fmt is None else fmt
        if not isinstance(chosen, Format) or chosen.stage != 1 or chosen.regime != "el1&0":
            raise RangeError(f"MMU.set_stage1: {chosen!r} is not an EL1&0 stage-1 format")
        if isinstance(ttbr0, bool) or not isinstance(ttbr0, int) or not 0 <= ttbr0 < 1 << 48:
            raise RangeError(f"MMU.set_stage1: ttbr0 {shown(ttbr0)} is not a table address")
        if ttbr0 % 8:
            raise AlignmentError(f"MMU.set_stage1: ttbr0 {ttbr0:#x} is not 8-byte aligned")
        self._s1 = Regime(chosen, ttbr0, GUEST, _check_tag(asid, "set_stage1", "asid"))
        self._rebind_guest()

    def join(self, other: MMU) -> None:
        """Put ``other`` in this MMU's inner-shareable domain: ``...IS`` maintenance on any
        member reaches all members (the CPUs of one system).  Raises RangeError if ``other``
        is not an MMU."""
        if not isinstance(other, MMU):
            raise RangeError(f"MMU.join({other!r}): expected an MMU")
        if other.domain is self.domain:
            return
        merged = self.domain + [m for m in other.domain if m not in self.domain]
        for mmu in merged:
            mmu.domain = merged

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
        out.update((f"tlbi:{op}", n) for op, n in self._counts.items())
        return out

    def reset_counters(self) -> None:
        """Zero every counter (the TLB contents are kept)."""
        self.hits = self.misses = self.walk_reads = 0
        self.tlb.evictions = 0
        self._counts.clear()
        self.stale_hits.clear()

    # -- the boundary: argument checks, once per public call ---------------------------------

    def _access(self, access: object, what: str) -> int:
        bit = ACCESS_BITS.get(access) if isinstance(access, str) else None
        if bit is None:
            raise RangeError(f"{self!r}.{what}: access {access!r} is not read/write/exec")
        return bit

    def _need(self, regime: Regime | None, what: str, call: str) -> Regime:
        if regime is None:
            name = {"set_hyp": "hyp regime", "set_stage2": "stage 2"}[call]
            raise RangeError(f"{self!r}.{what}: no {name} (call {call} first)")
        return regime

    def _run(self, regime: Regime, va: int, a: int, what: str) -> int:
        """``regime``'s lookup of ``va``, TypeError (a non-int address) reported as RangeError."""
        try:
            return regime.lookup(va, a)
        except TypeError:
            raise RangeError(f"{self!r}.{what}: address {va!r} is not an integer") from None

    def _refusal(self, regime: Regime, va: int, a: int) -> FaultError:
        """The permission fault of a refused access, at the level of the leaf that refused it
        (the cached entry, or a fresh walk when caching is off)."""
        entry = self._cached(regime, va)
        if entry is not None:
            level = entry.level
        else:  # caching off: the walk that refused it says where
            level = walk(self.mem, regime.fmt, regime.root, va, _NAMES[a]).level
        stage2 = regime.kind == S2
        fault = Fault(
            "permission",
            level,
            va,
            stage=2 if stage2 else 1,
            ipa=va if stage2 else None,
            access=_NAMES[a],
        )
        return FaultError(fault)

    # -- hyp regime -------------------------------------------------------------------------

    def hyp_pa(self, va: int, access: str = "read", _bits: dict[str, int] = ACCESS_BITS) -> int:
        """Translate hyp VA ``va`` through the TLB: the PA, or FaultError (stage 1).

        A hit costs one dict lookup per probed block size and builds no object.
        Raises RangeError for a bad VA/access or when no hyp regime is set."""
        hyp = self._hyp
        if hyp is not None:
            try:
                pa = hyp.lookup(va, _bits[access])
            except (KeyError, TypeError):
                pass  # a bad address or access: the checked path below reports it
            else:
                if pa >= 0:
                    return pa
                raise self._refusal(hyp, va, _bits[access])
        hyp = self._need(self._hyp, "hyp_pa", "set_hyp")
        a = self._access(access, "hyp_pa")
        pa = self._run(hyp, va, a, "hyp_pa")
        if pa < 0:
            raise self._refusal(hyp, va, a)
        return pa

    def hyp_translate(self, va: int, access: str = "read") -> Translation | Fault:
        """Translate hyp VA ``va`` through the TLB, as a Translation or a Fault.  On a miss the
        Translation carries the walk's descriptor reads; on a hit ``reads`` is empty (no
        memory was read).  Raises RangeError for a bad VA/access or no hyp regime."""
        hyp = self._need(self._hyp, "hyp_translate", "set_hyp")
        a = self._access(access, "hyp_translate")
        return self._translate(hyp, va, a, "hyp_translate")

    def _translate(self, regime: Regime, va: int, a: int, what: str) -> Translation | Fault:
        hits_before = self.hits
        try:
            pa = self._run(regime, va, a, what)
            if pa < 0:
                raise self._refusal(regime, va, a)
        except FaultError as error:
            return error.fault
        if self.hits == hits_before:  # a miss: report the walk in full
            return walk(self.mem, regime.fmt, regime.root, va, _NAMES[a])
        entry = self._cached(regime, va)
        assert entry is not None, "a TLB hit left no entry"
        return self._entry_translation(regime, va, pa, entry)

    def _cached(self, regime: Regime, va: int) -> TLBEntry | None:
        """The TLB entry ``regime`` holds for ``va`` (any leaf size), or None; counts nothing."""
        for shift in regime.shifts:
            entry = self.tlb.lookup(regime.key(va, shift))
            if entry is not None:
                return entry
        return None

    @staticmethod
    def _entry_translation(regime: Regime, va: int, pa: int, entry: TLBEntry) -> Translation:
        decode = S2Attrs.from_descriptor if regime.kind == S2 else S1Attrs.from_descriptor
        return Translation(
            va=va,
            pa=pa,
            level=entry.level,
            descriptor=entry.descriptor,
            block_size=1 << entry.shift,
            readable=bool(entry.perm & 1),
            writable=bool(entry.perm & 2),
            executable=bool(entry.perm & 4),
            attrs=decode(entry.descriptor),
            reads=(),
            stage=regime.fmt.stage,
        )

    def _hyp_word(self, va: int, a: int, size: int, what: str) -> int:
        hyp = self._need(self._hyp, what, "set_hyp")
        if va.__class__ is int and va & (size - 1):
            raise AlignmentError(f"{self!r}.{what}: {va:#x} is not {size}-byte aligned")
        pa = self._run(hyp, va, a, what)
        if pa < 0:
            raise self._refusal(hyp, va, a)
        return pa

    def hyp_read64(self, va: int) -> int:
        """Read the 64-bit word at hyp VA ``va`` (8-aligned) through the TLB.
        Raises FaultError, AlignmentError, RangeError."""
        hyp = self._hyp
        if hyp is not None and va.__class__ is int and not va & 7:
            pa = hyp.lookup(va, _READ)
            if pa < 0:
                raise self._refusal(hyp, va, _READ)
            return self.mem.load64(pa)
        return self.mem.load64(self._hyp_word(va, _READ, 8, "hyp_read64"))

    def hyp_write64(self, va: int, value: int) -> None:
        """Write a 64-bit word at hyp VA ``va`` through the TLB.  Raises as hyp_read64, and
        RangeError for a value outside [0, 2**64) (nothing is translated then)."""
        if value.__class__ is not int or not 0 <= value < 1 << 64:
            raise RangeError(f"{self!r}.hyp_write64: {value!r} is not a 64-bit value")
        self.mem.store64(self._hyp_word(va, _WRITE, 8, "hyp_write64"), value)

    def hyp_read32(self, va: int) -> int:
        """Read the 32-bit word at hyp VA ``va`` (4-aligned).  Raises as hyp_read64."""
        return self.mem.read32(self._hyp_word(va, _READ, 4, "hyp_read32"))

    def hyp_write32(self, va: int, value: int) -> None:
        """Write a 32-bit word at hyp VA ``va`` (4-aligned).  Raises as hyp_write64."""
        if value.__class__ is not int or not 0 <= value < 1 << 32:
            raise RangeError(f"{self!r}.hyp_write32: {value!r} is not a 32-bit value")
        self.mem.write32(self._hyp_word(va, _WRITE, 4, "hyp_write32"), value)

    # -- the stale detector -------------------------------------------------------------------

    def _hit_checker(self, regime: Regime) -> Callable[[int, TLBEntry, int], None]:
        name = "hyp" if regime.kind == HYP else "guest"

        def check(va: int, entry: TLBEntry, a: int) -> None:
            current = walk(self.mem, regime.fmt, regime.root, va, _NAMES[a])
            vmid = regime.tag if regime.kind == S2 else None
            cached_pa = entry.base | (va & entry.low)
            self._compare(va, name, vmid, None, _NAMES[a], cached_pa, entry.perm & 7, current)

        return check

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

    def stage2_pa(self, ipa: int, access: str = "read") -> int:
        """The stage-2 translation of ``ipa`` for a guest whose stage 1 is off: the PA, or
        :data:`REFUSED` (-1) when the leaf's permissions refuse ``access``.

        This is the call a hypervisor's stage-2 abort path makes: a permission refusal is an
        answer it acts on (Xen's log-dirty handler), not an error.  Every other fault raises
        FaultError (stage 2, ``ipa`` set).  Counts and caches exactly as :meth:`guest_pa`.
        Raises RangeError for a bad address/access, no stage 2, or a stage 1 that is on."""
        s2 = self._need(self._s2, "stage2_pa", "set_stage2")
        if self._s1 is not None:
            raise RangeError(f"{self!r}.stage2_pa: the guest's stage 1 is on")
        return self._run(s2, ipa, self._access(access, "stage2_pa"), "stage2_pa")

    def stage2_entry(self, ipa: int) -> TLBEntry | None:
        """The TLB entry the current stage 2 would translate ``ipa`` with, or None (not
        cached).  A probe: it counts nothing, refreshes nothing and never walks, so a tool or
        an abort handler can ask which leaf refused an access.  Raises RangeError when no
        stage 2 is set or ``ipa`` is not an int."""
        s2 = self._need(self._s2, "stage2_entry", "set_stage2")
        if isinstance(ipa, bool) or not isinstance(ipa, int):
            raise RangeError(f"{self!r}.stage2_entry: address {ipa!r} is not an integer")
        return self._cached(s2, ipa)

    def guest_pa(
        self, va: int, access: str = "read", user: bool = False, _bits: dict[str, int] = ACCESS_BITS
    ) -> int:
        """The PA of guest address ``va`` through the TLB, or FaultError.  With stage 1 off
        ``va`` is the IPA and this is :meth:`stage2_pa` with the refusal raised.

        A hit costs one dict lookup per probed leaf size and builds no object.
        Raises RangeError for a bad address/access, no stage 2, or ``user=True`` without a
        guest stage 1."""
        lookup = self.guest_lookup
        if lookup is not None and user is False:
            try:
                pa = lookup(va, _bits[access])
            except (KeyError, TypeError):
                pass  # a bad address or access: the checked path below reports it
            else:
                if pa >= 0:
                    return pa
                assert self._s2 is not None
                raise self._refusal(self._s2, va, _bits[access])
        return self._guest_lookup(va, access, user, "guest_pa")[0]

    def guest_pa_many(self, ipas: Iterable[int], access: str = "read") -> list[int]:
        """``[guest_pa(ipa, access) for ipa in ipas]`` for a guest whose stage 1 is off, with
        the arguments checked once, all of them before the first access: the same PAs,
        counters and TLB contents; the first fault raises FaultError (the accesses before it
        are done, as in the loop).  Raises RangeError as :meth:`stage2_pa`, for an ``ipas``
        that is not an iterable of int addresses, or with the guest's stage 1 on (changing
        nothing)."""
        s2 = self._need(self._s2, "guest_pa_many", "set_stage2")
        a = self._access(access, "guest_pa_many")
        if self._s1 is not None:
            raise RangeError(f"{self!r}.guest_pa_many: the guest's stage 1 is on")
        try:
            batch = ipas if isinstance(ipas, (list, tuple)) else list(ipas)
        except TypeError:
            raise RangeError(f"{self!r}.guest_pa_many: {ipas!r} is not an iterable") from None
        limit = s2.geo.ia_reg_limit
        for ipa in batch:
            if ipa.__class__ is not int or not 0 <= ipa < limit:
                raise RangeError(f"{self!r}.guest_pa_many: {shown(ipa)} is not an IPA")
        return s2.lookup_many(batch, a, lambda ipa, a: self._refusal(s2, ipa, a))

    def guest_translate(
        self, va: int, access: str = "read", user: bool = False
    ) -> Translation | Fault:
        """Translate a guest address through the TLB: stage 1 (if on) then stage 2.

        With stage 1 off, ``va`` is the IPA.  Faults say which stage (and S1PTW for a
        stage-2 fault on a stage-1 table read).  A hit returns a Translation with empty
        ``reads``.  Raises RangeError for a bad address/access or when no stage 2 is set."""
        s2 = self._need(self._s2, "guest_translate", "set_stage2")
        if self._s1 is None and not user:
            return self._translate(s2, va, self._access(access, "guest_translate"), "guest")
        hits_before = self.hits
        try:
            pa, entry = self._guest_lookup(va, access, user, "guest_translate")
        except FaultError as error:
            return error.fault
        s1 = self._s1
        assert s1 is not None
        if self.hits == hits_before:  # a miss: report the walk in full
            return walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, access, user)
        mask = entry.perm >> 3 if user else entry.perm
        mask &= entry.s2perm
        return Translation(
            va=va,
            pa=pa,
            level=entry.level,
            descriptor=entry.descriptor,
            block_size=1 << entry.shift,
            readable=bool(mask & 1),
            writable=bool(mask & 2),
            executable=bool(mask & 4),
            attrs=S1Attrs.from_descriptor(entry.descriptor),
            reads=(),
            stage=1,
            ipa=entry.ipa_base | (va & entry.low),
        )

    def guest_read64(self, va: int, user: bool = False) -> int:
        """Read the 64-bit word at guest address ``va`` (8-aligned).  Raises FaultError,
        RangeError, AlignmentError (checked before anything is translated)."""
        if va.__class__ is int and va & 7:
            raise AlignmentError(f"{self!r}.guest_read64: {va:#x} is not 8-byte aligned")
        return self.mem.read64(self.guest_pa(va, "read", user))

    def guest_write64(self, va: int, value: int, user: bool = False) -> None:
        """Write the 64-bit word at guest address ``va`` (8-aligned).  Raises as
        :meth:`guest_read64`, and RangeError for a ``value`` outside [0, 2**64); arguments
        are checked before anything is translated."""
        if value.__class__ is not int or not 0 <= value < 1 << 64:
            raise RangeError(f"{self!r}.guest_write64: {value!r} is not a 64-bit value")
        if va.__class__ is int and va & 7:
            raise AlignmentError(f"{self!r}.guest_write64: {va:#x} is not 8-byte aligned")
        self.mem.write64(self.guest_pa(va, "write", user), value)

    # -- the two-stage path (a guest with stage 1 on) ---------------------------------------------

    def _guest_lookup(
        self, va: int, access: object, user: object, what: str
    ) -> tuple[int, TLBEntry]:
        """The full guest lookup, for the cases the generated stage-2 lookup does not take
        (a guest stage 1, ``user=True``) and for error reporting."""
        s2 = self._need(self._s2, what, "set_stage2")
        s1 = self._s1
        a = self._access(access, what)
        if not isinstance(user, bool):
            raise RangeError(f"{self!r}.{what}: user={user!r} is not a bool")
        if s1 is None:
            if user:
                raise RangeError(f"{self!r}.{what}: user=True needs a guest stage 1")
            pa = self._run(s2, va, a, what)
            if pa < 0:
                raise self._refusal(s2, va, a)
            return pa, _NO_ENTRY  # only guest_pa takes this branch, and it wants the PA
        if isinstance(va, bool) or not isinstance(va, int) or not 0 <= va < s1.geo.ia_reg_limit:
            raise RangeError(f"{self!r}: {shown(va)} is not a guest address of {s1.fmt.name}")
        for shift in s1.shifts:
            for asid in (s1.tag, None):
                key = self._combined_key(s2, va, shift, asid)
                entry = self.tlb.lookup(key)
                if entry is not None:
                    self.tlb.touch(key)  # LRU refreshes; FIFO ignores hits
                    self.hits += 1
                    if self._stale_check:
                        self._check_combined_hit(va, entry, a, user)
                    return self._combined_permit(va, entry, a, user), entry
        entry = self._combined_miss(s2, s1, va, a, user)
        return self._combined_permit(va, entry, a, user), entry

    @staticmethod
    def _combined_key(s2: Regime, va: int, shift: int, asid: int | None) -> int:
        """Key of a combined entry of the current VMID; ``asid`` None for a global one."""
        return tlb_key(GUEST, va, shift, s2.tag, asid)

    def _combined_permit(self, va: int, entry: TLBEntry, a: int, user: bool) -> int:
        mask = entry.perm >> 3 if user else entry.perm
        name = _NAMES[a]
        if not mask & a:
            raise FaultError(Fault("permission", entry.level, va, stage=1, access=name))
        offset = va & entry.low
        if not entry.s2perm & a:
            ipa = entry.ipa_base | offset
            raise FaultError(Fault("permission", entry.s2level, va, stage=2, ipa=ipa, access=name))
        return entry.base | offset

    def _combined_miss(self, s2: Regime, s1: Regime, va: int, a: int, user: bool) -> TLBEntry:
        """Walk both stages for reading (a permission refusal is decided from the entry)."""
        self.misses += 1
        mem = self.mem
        result = walk_two_stage(mem, s1.fmt, s1.root, s2.fmt, s2.root, va, "read", user)
        for retry in ("exec", "write"):
            if isinstance(result, Fault) and result.kind == "permission":
                result = walk_two_stage(mem, s1.fmt, s1.root, s2.fmt, s2.root, va, retry, user)
        if isinstance(result, Fault):
            self.walk_reads += result.level + 1
            raise FaultError(attrs.evolve(result, access=_NAMES[a]))
        s2t = result.s2
        assert s2t is not None and result.ipa is not None
        self.walk_reads += len(result.reads) * (1 + len(s2.fmt.levels)) + len(s2t.reads)
        shift = min(s1.geo.shifts[result.level], s2.geo.shifts[s2t.level])
        low = (1 << shift) - 1
        tables = 0
        for _, desc in result.reads[:-1]:  # the hierarchical attributes of stage 1's tables
            tables |= desc
        entry = TLBEntry(
            base=result.pa & ~low,
            low=low,
            perm=s1.geo.permissions(result.descriptor, tables),
            level=result.level,
            descriptor=result.descriptor,
            shift=shift,
            s2perm=s2.geo.permissions(s2t.descriptor, 0),
            s2level=s2t.level,
            ipa_base=result.ipa & ~low,
        )
        global_entry = not result.descriptor & NG
        self.tlb.insert(self._combined_key(s2, va, shift, None if global_entry else s1.tag), entry)
        return entry

    def _check_combined_hit(self, va: int, entry: TLBEntry, a: int, user: bool) -> None:
        s2 = self._s2
        s1 = self._s1
        assert s2 is not None and s1 is not None
        access = _NAMES[a]
        current = walk_two_stage(self.mem, s1.fmt, s1.root, s2.fmt, s2.root, va, access, user)
        mask = (entry.perm >> 3 if user else entry.perm) & entry.s2perm
        cached_pa = entry.base | (va & entry.low)
        self._compare(va, "guest", s2.tag, s1.tag, access, cached_pa, mask & 7, current)

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
        Raises RangeError for an unknown op or a missing, unexpected or malformed operand."""
        spec = TLBI_OPS.get(op) if op.__class__ is str else None
        if spec is None:
            raise RangeError(f"{self!r}.tlbi: unknown operation {op!r}")
        needs_addr, needs_asid, inner_shareable, needs_vmid, action = spec
        if needs_addr != (addr is not None):
            raise RangeError(f"{self!r}.tlbi({op!r}): address operand {shown(addr)}")
        if addr is not None and (addr.__class__ is not int or not 0 <= addr < 1 << 64):
            raise RangeError(f"{self!r}.tlbi({op!r}): address {shown(addr)} is not a 64-bit one")
        if needs_asid:
            asid = self.asid if asid is None else _check_tag(asid, "tlbi", "asid")
            if asid is None:
                raise RangeError(f"{self!r}.tlbi({op!r}): needs an ASID")
        if vmid is not None and (vmid.__class__ is not int or not 0 <= vmid < 1 << 16):
            _check_tag(vmid, "tlbi", "vmid")  # raises, naming the value
        if not inner_shareable and vmid is not None:  # the fault path's TLBIALL: no loop
            self._counts[op] += 1
            return action(self.tlb, addr, asid, vmid)
        targets = self.domain if inner_shareable else [self]
        if needs_vmid and vmid is None:
            for mmu in targets:
                if mmu.vmid is None:
                    raise RangeError(f"{mmu!r}: {op} needs a VMID (set_stage2 or vmid=)")
        self._counts[op] += 1
        removed = 0
        for mmu in targets:
            removed += action(mmu.tlb, addr, asid, mmu.vmid if vmid is None else vmid)
        return removed


_NO_ENTRY = TLBEntry(0, 0, 0, 0, 0, 0)  # caching off: the answer has no entry to show

#: ``action(tlb, address, asid, vmid) -> entries removed``.
TlbiAction = Callable[[TLB, "int | None", "int | None", "int | None"], int]


def _all_hyp(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_hyp()


def _hyp_va(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_hyp(addr)


def _all_guests(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_guest()


def _vmid_all(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    assert vmid is not None
    return tlb.invalidate_vmid(vmid)


def _vmid_stage1(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_guest(vmid=vmid, stage2=False)


def _ipa(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_guest(vmid=vmid, va=addr, combined=False)


def _va_asid(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_guest(vmid=vmid, va=addr, asid=asid, stage2=False)


def _va_all_asids(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_guest(vmid=vmid, va=addr, stage2=False)


def _asid(tlb: TLB, addr: int | None, asid: int | None, vmid: int | None) -> int:
    return tlb.invalidate_guest(vmid=vmid, asid=asid, stage2=False, keep_global=True)


def _ops() -> dict[str, tuple[bool, bool, bool, bool, TlbiAction]]:
    # name: (takes an address, takes an ASID, acts on one VMID, action)
    base: dict[str, tuple[bool, bool, bool, TlbiAction]] = {
        # AArch32 (ARMv7 with the Virtualization Extensions, and ARMv8 AArch32)
        "TLBIALLH": (False, False, False, _all_hyp),
        "TLBIMVAH": (True, False, False, _hyp_va),
        "TLBIMVALH": (True, False, False, _hyp_va),
        "TLBIALLNSNH": (False, False, False, _all_guests),
        "TLBIALL": (False, False, True, _vmid_all),
        "TLBIMVA": (True, True, True, _va_asid),
        "TLBIMVAL": (True, True, True, _va_asid),
        "TLBIMVAA": (True, False, True, _va_all_asids),
        "TLBIMVAAL": (True, False, True, _va_all_asids),
        "TLBIASID": (False, True, True, _asid),
        "TLBIIPAS2": (True, False, True, _ipa),
        "TLBIIPAS2L": (True, False, True, _ipa),
        # AArch64
        "TLBI ALLE2": (False, False, False, _all_hyp),
        "TLBI VAE2": (True, False, False, _hyp_va),
        "TLBI VALE2": (True, False, False, _hyp_va),
        "TLBI ALLE1": (False, False, False, _all_guests),
        "TLBI VMALLS12E1": (False, False, True, _vmid_all),
        "TLBI VMALLE1": (False, False, True, _vmid_stage1),
        "TLBI VAE1": (True, True, True, _va_asid),
        "TLBI VALE1": (True, True, True, _va_asid),
        "TLBI VAAE1": (True, False, True, _va_all_asids),
        "TLBI VAALE1": (True, False, True, _va_all_asids),
        "TLBI ASIDE1": (False, True, True, _asid),
        "TLBI IPAS2E1": (True, False, True, _ipa),
        "TLBI IPAS2LE1": (True, False, True, _ipa),
    }
    ops: dict[str, tuple[bool, bool, bool, bool, TlbiAction]] = {}
    for name, (addr, asid, vmid, action) in base.items():
        ops[name] = (addr, asid, False, vmid, action)
        ops[name + "IS"] = (addr, asid, True, vmid, action)
    return ops


TLBI_OPS: dict[str, tuple[bool, bool, bool, bool, TlbiAction]] = _ops()
"""Maintenance operations by architectural name: ``(takes an address, takes an ASID, inner
shareable, acts on one VMID, action)``.  Every name also exists with the ``IS`` suffix
(broadcast to the MMUs joined with :meth:`MMU.join`).  What each removes:

* TLBIALLH / TLBI ALLE2: every hyp entry.  TLBIMVAH, TLBIMVALH / TLBI VAE2, VALE2: hyp entries
  covering the VA (any block size; the "last level" forms are treated as the full ones).
* TLBIALLNSNH / TLBI ALLE1: every guest entry of every VMID.
* TLBIALL (from hyp, ARMv7 semantics) / TLBI VMALLS12E1: every guest entry of the VMID,
  combined and stage-2-only, straight from the TLB's per-VMID index.  TLBI VMALLE1: the
  VMID's combined (stage-1) entries only.
* TLBIMVA / TLBI VAE1: entries of the VMID covering the VA with the ASID, or global.
  TLBIMVAA / TLBI VAAE1: any ASID.  TLBIASID / TLBI ASIDE1: the ASID's non-global entries.
* TLBIIPAS2 / TLBI IPAS2E1: the VMID's stage-2-only entries covering the IPA (combined entries
  are untouched: follow with TLBIALL / VMALLE1, as the architecture requires).
"""
