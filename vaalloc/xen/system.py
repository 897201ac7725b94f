"""The Xen-on-ARM32 system: memory, Xen's tables, CPUs with MMUs, domains, VLPT, log-dirty.

``Xen(cpus=2)`` boots a model hypervisor: it allocates Xen's own tables in a fresh
:class:`~vaalloc.lpae.PhysicalMemory`, gives every CPU an :class:`~vaalloc.lpae.MMU` whose hyp
regime (HTTBR) points at that CPU's ``xen_pgtable``, and installs the VLPT loop slot. Everything
the model does afterwards is real memory traffic: dump ``xen.mem.frames()`` into an emulator,
point a Cortex-A15's HTTBR at ``xen.httbr(cpu)`` and the reads agree with ``xen.read_va``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vaalloc.errors import (
    AlignmentError,
    InvariantError,
    LogDirtyError,
    MappingError,
    OutOfSpace,
    RangeError,
)
from vaalloc.lpae import FaultError, PhysicalMemory
from vaalloc.lpae._checks import check_bool, check_int
from vaalloc.lpae.mmu import MMU, StaleHit
from vaalloc.xen.domain import Domain
from vaalloc.xen.domheap import Domheap
from vaalloc.xen.hypervisor import Hypervisor, check_config
from vaalloc.xen.layout import (
    GUEST_RAM_BASE,
    HYP_VA_END,
    MAX_VMID,
    MB,
    P2M_IPA_BITS,
    P2M_ROOT_PAGES,
    PAGE_SIZE,
)
from vaalloc.xen.ledger import Ledger
from vaalloc.xen.logdirty import LogDirty
from vaalloc.xen.lookup import LookupFactory, P2MLookup, PartitionedVLPT, lookup_factory
from vaalloc.xen.p2m import P2M
from vaalloc.xen.pagetables import XenPageTables
from vaalloc.xen.sched import context_switch
from vaalloc.xen.vmap import Vmap

__all__ = ["Xen"]

_ACCESS_NAMES = {1: "read", 2: "write"}


def _hex(value: object) -> str:
    return f"{value:#x}" if type(value) is int else repr(value)


def _check_hyp_va(va: object, what: str) -> None:
    """A hyp VA the boundary accepts: an int below 4GB, 8-byte aligned."""
    if type(va) is not int or not 0 <= va < HYP_VA_END:
        raise RangeError(f"{what}: {_hex(va)} is not a 32-bit hyp virtual address")
    if va & 7:
        raise AlignmentError(f"{what}: hyp VA {va:#x} is not 8-byte aligned")


class Xen:
    """A model Xen 4.3 on ``cpus`` ARMv7 CPUs with LPAE: the facade over the core
    (:class:`~vaalloc.xen.hypervisor.Hypervisor`) and its subsystems.

    Keyword arguments: ``pa_bits`` of physical memory (40), ``xenheap_size`` mapped at 1GB
    (8MB), ``tlb_entries`` per CPU TLB (512), ``stale_check`` (False: when True every TLB hit
    is checked against a fresh walk and stale hits are recorded in ``mmu.stale_hits``),
    ``lookup``: the p2m lookup strategy, a name of :data:`vaalloc.xen.lookup.LOOKUPS`
    (``"partitioned"``, the default) or a factory ``f(core, capacity=None)``; ``capacity``: the
    strategy's window size in slots (None: the whole window).

    Raises RangeError for a bad CPU count or option (a wrong type included), naming it;
    OutOfSpace when ``pa_bits`` leaves too little RAM for Xen's own tables.
    """

    def __init__(
        self,
        cpus: int = 2,
        *,
        pa_bits: int = 40,
        xenheap_size: int = 8 * MB,
        tlb_entries: int = 512,
        stale_check: bool = False,
        lookup: str | LookupFactory = "partitioned",
        capacity: int | None = None,
    ) -> None:
        check_config(
            "Xen",
            cpus=cpus,
            pa_bits=pa_bits,
            xenheap_size=xenheap_size,
            tlb_entries=tlb_entries,
            stale_check=stale_check,
        )
        if capacity is not None:
            check_int(capacity, "Xen", "capacity", 1)
        factory = lookup_factory(lookup)
        self.core = Hypervisor(
            cpus,
            pa_bits=pa_bits,
            xenheap_size=xenheap_size,
            tlb_entries=tlb_entries,
            stale_check=stale_check,
        )
        self._next_domid = 1
        self._vmids: set[int] = set()
        self.lookup: P2MLookup = factory(self.core, capacity=capacity)
        self.logdirty = LogDirty(self.core, self.lookup)
        self.vmap_area = Vmap(self.core)
        self.domheap = Domheap(self.core)
        self.boot_frames = self.mem.frames_in_use

    # --- the core's state, as the facade shows it ------------------------------------------------
    @property
    def mem(self) -> PhysicalMemory:
        """The physical memory holding every table and frame."""
        return self.core.mem

    @property
    def ledger(self) -> Ledger:
        """The cost ledger every layer counts into."""
        return self.core.ledger

    @property
    def pagetables(self) -> XenPageTables:
        """Xen's own hyp page tables."""
        return self.core.pagetables

    @property
    def mmus(self) -> list[MMU]:
        """One MMU (and TLB) per CPU."""
        return self.core.mmus

    @property
    def current(self) -> list[Domain | None]:
        """The domain each CPU runs (None: idle)."""
        return self.core.current

    @property
    def domains(self) -> dict[int, Domain]:
        """The live domains by domid."""
        return self.core.domains

    @property
    def cpus(self) -> int:
        """Number of CPUs."""
        return self.core.cpus

    @property
    def vlpt(self) -> PartitionedVLPT:
        """The VLPT (the lookup strategy when it is ``partitioned``)."""
        if not isinstance(self.lookup, PartitionedVLPT):
            raise RangeError(f"lookup strategy {self.lookup.name!r} has no VLPT window")
        return self.lookup

    def check_cpu(self, cpu: int) -> None:
        """Raise RangeError unless ``cpu`` names a CPU of this system."""
        self.core.check_cpu(cpu)

    def check_domain(self, d: Domain) -> None:
        """Raise RangeError unless ``d`` is a live domain of this Xen."""
        self.core.check_domain(d)

    def httbr(self, cpu: int) -> int:
        """PA of ``cpu``'s first-level hyp table (what its HTTBR holds). Raises RangeError
        for a bad CPU."""
        self.core.check_cpu(cpu)
        return self.core.httbr(cpu)

    def read_va(self, cpu: int, va: int) -> int:
        """Read the 64-bit word at hyp VA ``va`` on ``cpu`` through its MMU and TLB.

        Counts ``hyp_tlb_misses`` and ``hyp_walk_reads``. Raises RangeError for a bad CPU and
        ``vaalloc.lpae.FaultError`` (a VAAllocError, ``.fault`` says why) if ``va`` does not
        translate for a read, AlignmentError for a VA that is not 8-byte aligned.
        """
        self.core.check_cpu(cpu)
        _check_hyp_va(va, "read_va")
        return self.core.hyp_read(cpu, va)

    def write_va(self, cpu: int, va: int, value: int) -> None:
        """Write a 64-bit word at hyp VA ``va`` on ``cpu`` (through its MMU). Raises like
        :meth:`read_va` (a permission fault for a read-only mapping)."""
        self.core.check_cpu(cpu)
        _check_hyp_va(va, "write_va")
        if type(value) is not int or not 0 <= value < 1 << 64:
            raise RangeError(f"write_va: value {value!r} is not a 64-bit unsigned integer")
        self.core.hyp_write(cpu, va, value)

    def flush_guest_all(self, d: Domain) -> None:
        """TLBIALLIS for ``d``'s VMID on every CPU (see :meth:`Hypervisor.flush_guest_all`).
        Raises RangeError for a domain that is not live."""
        self.core.check_domain(d)
        self.core.flush_guest_all(d)

    # --- domains ------------------------------------------------------------------------------
    def create_domain(self, ram: int, *, superpages: bool = False) -> Domain:
        """Create a domain with ``ram`` bytes of RAM at IPA 0x80000000; return it.

        The p2m maps RAM with 4KB pages, or with 2MB blocks where a whole aligned 2MB fits when
        ``superpages``. Frames come in 2MB-aligned runs. A domain that cannot fit is refused
        at once (O(1), before any frame is taken), naming the domain it would have been and
        its size. Raises RangeError for a size that is not a positive multiple of 4KB or does
        not fit the 40-bit IPA space, or a ``superpages`` that is not a bool; OutOfSpace when
        VMIDs or physical memory run out. Nothing changes when it raises.
        """
        if isinstance(ram, bool) or not isinstance(ram, int) or ram <= 0 or ram % PAGE_SIZE:
            raise RangeError(f"create_domain(ram={_hex(ram)}): expected a positive multiple of 4KB")
        check_bool(superpages, "create_domain", "superpages")
        domid = self._next_domid
        if GUEST_RAM_BASE + ram > 1 << P2M_IPA_BITS:
            raise RangeError(
                f"create_domain(ram={ram:#x}): domain d{domid} does not fit the 40-bit IPA "
                f"space (RAM from {GUEST_RAM_BASE:#x}, at most "
                f"{(1 << P2M_IPA_BITS) - GUEST_RAM_BASE:#x} bytes)"
            )
        vmid = next((v for v in range(1, MAX_VMID + 1) if v not in self._vmids), None)
        if vmid is None:
            raise OutOfSpace(
                f"create_domain(ram={ram:#x}): domain d{domid}: all {MAX_VMID} VMIDs in use"
            )
        gbs = ((GUEST_RAM_BASE + ram - 1) >> 30) - (GUEST_RAM_BASE >> 30) + 1
        need = P2M_ROOT_PAGES + P2M.populate_frames(GUEST_RAM_BASE, ram, superpages, new_l2=gbs)
        free = self.mem.frames_free
        if need > free:
            raise OutOfSpace(
                f"create_domain(ram={ram:#x}): domain d{domid} needs {need} frames "
                f"({need * PAGE_SIZE:#x} bytes of RAM and p2m tables), {free} are free"
            )
        stage2 = P2M(self.mem, self.ledger, name=f"d{domid}.p2m")
        try:
            stage2.populate(GUEST_RAM_BASE, ram, superpages)
        except OutOfSpace as error:  # RAM too fragmented for 2MB runs: say who wanted it
            stage2.free()
            raise OutOfSpace(f"create_domain(ram={ram:#x}): domain d{domid}: {error}") from None
        except BaseException:
            stage2.free()
            raise
        d = Domain(domid, vmid, GUEST_RAM_BASE, ram, superpages, stage2)
        stage2.on_change = lambda level, ipa, old, new: self.lookup.on_p2m_change(
            d, level, ipa, old, new
        )
        self._next_domid += 1
        self._vmids.add(vmid)
        self.domains[domid] = d
        return d

    def destroy_domain(self, d: Domain) -> None:
        """Destroy ``d``: every frame it held returns to the allocator, its VMID is flushed.

        Raises LogDirtyError while log-dirty is on (disable first), RangeError for a dead
        domain; nothing changes then.
        """
        self.check_domain(d)
        if d.logdirty:
            raise LogDirtyError(f"destroy_domain: domain {d.domid} is in log-dirty mode")
        for cpu in range(self.cpus):
            if self.current[cpu] is d:
                context_switch(self.core, self.lookup, cpu, None)
        self.core.flush_guest_all(d)  # the VMID will be reused
        d.stage2.free()
        self._vmids.discard(d.vmid)
        del self.domains[d.domid]
        d.alive = False

    def context_switch(self, cpu: int, d: Domain | None) -> None:
        """Run ``d`` (None: idle) on ``cpu``; see :func:`vaalloc.xen.sched.context_switch`.
        Raises RangeError for a bad CPU or a domain that is not live (nothing changed)."""
        context_switch(self.core, self.lookup, cpu, d)

    # --- p2m changes --------------------------------------------------------------------------
    def p2m_populate(self, d: Domain, ipa: int, size: int) -> None:
        """Give ``d`` fresh RAM at ``[ipa, ipa + size)`` inside its RAM range (2MB aligned).

        While log-dirty is on the new leaves are clean (write-protected). New p2m tables are
        reported to the VLPT. All or nothing (see :meth:`P2M.populate`). Raises RangeError
        for a dead domain or a bad range, MappingError for a range already populated,
        OutOfSpace when the frames run out (refused at once when RAM cannot hold them);
        nothing changed then.
        """
        self.check_domain(d)
        self._check_range(d, ipa, size, "p2m_populate")
        d.stage2.populate(ipa, size, d.superpages, logdirty=d.logdirty)

    def p2m_depopulate(self, d: Domain, ipa: int, size: int) -> None:
        """Take RAM ``[ipa, ipa + size)`` (2MB aligned) away from ``d`` (balloon out).

        Frees its frames and emptied tables, flushes the guest TLB for ``d``'s VMID and the
        hyp VAs of the VLPT that changed. Dirty frames in the range are dropped from the dirty
        set. Raises RangeError / MappingError (nothing changed).
        """
        self.check_domain(d)
        self._check_range(d, ipa, size, "p2m_depopulate")
        d.stage2.depopulate(ipa, size)
        self.core.flush_guest_all(d)
        lo, hi = ipa >> 12, (ipa + size) >> 12
        d.dirty = {g for g in d.dirty if not lo <= g < hi}

    @staticmethod
    def _check_range(d: Domain, ipa: object, size: object, what: str) -> None:
        first = check_int(ipa, what, "ipa")
        size = check_int(size, what, "size", 1)
        if not (d.in_ram(first) and d.in_ram(first + size - 1)):
            raise RangeError(f"{what}: [{ipa:#x}, +{size:#x}) outside {d!r}'s RAM")

    # --- guest accesses ----------------------------------------------------------------------
    #
    # One path: the boundary checks the arguments once (_enter), _access translates through the
    # CPU's stage-2 lookup and takes the log-dirty fault and its one retry. guest_write,
    # guest_read and guest_write_many are that path with different boundaries.

    def _enter(self, d: Domain, cpu: int, ipas: Sequence[object], what: str) -> Domain | None:
        """The boundary of every guest access: check ``d``, ``cpu`` and each of ``ipas`` (all
        before anything changes), then run ``d`` on ``cpu`` if there is an access to make.
        Returns the domain that ran before (to switch back to if an access fails). Raises
        RangeError."""
        core = self.core
        if type(cpu) is not int or not 0 <= cpu < len(core.mmus):
            core.check_cpu(cpu)
        if d.__class__ is not Domain or core.domains.get(d.domid) is not d:
            core.check_domain(d)
        lo, hi = d.ram_base, d.ram_base + d.ram_size
        for ipa in ipas:
            if type(ipa) is not int or not lo <= ipa < hi:
                raise RangeError(f"{what}: IPA {_hex(ipa)} outside {d!r}'s RAM")
        prev = core.current[cpu]
        if prev is not d and ipas:
            context_switch(core, self.lookup, cpu, d)
        return prev

    def _leave(self, d: Domain, cpu: int, prev: Domain | None) -> None:
        """A failed access leaves the CPU running what it ran."""
        if prev is not d:
            context_switch(self.core, self.lookup, cpu, prev)

    def _access(self, d: Domain, ipa: int, cpu: int, access: int) -> int:
        """Translate guest ``d``'s access at ``ipa`` (1 read, 2 write) on ``cpu``, which runs
        ``d``: the PA. A write refused by a log-dirty leaf takes the fault path and is retried
        once. Counts ``guest_tlb_misses`` (the CPU's misses minus the handler's hyp ones) and
        ``faults``. Raises MappingError for a real fault (no mapping, a read-only page)."""
        mmu = self.core.mmus[cpu]
        lookup = mmu.guest_lookup  # d runs on cpu with stage 1 off: never None here
        assert lookup is not None
        misses = mmu.misses
        try:
            pa = lookup(ipa, access)
        except FaultError as error:
            self._count_guest_misses(mmu, misses, 0)
            raise self._fault_error(d, ipa, cpu, access, error) from error
        if pa >= 0:
            if mmu.misses != misses:
                self.core.ledger.counts["guest_tlb_misses"] += mmu.misses - misses
            return pa
        # Refused by the leaf's permissions: the log-dirty write fault, or a real one.
        counts = self.core.ledger.counts
        hyp = counts["hyp_tlb_misses"]
        try:
            if access != 2 or not d.logdirty:
                raise self._refused(d, ipa, cpu, access)
            counts["faults"] += 1
            self.logdirty.handle_fault(cpu, d, ipa)
            # The handler ended with TLBIALL for d's VMID on this CPU: the retry walks.
            pa = lookup(ipa, access)
            if pa < 0:
                raise self._refused(d, ipa, cpu, access)
        except FaultError as error:
            raise self._fault_error(d, ipa, cpu, access, error) from error
        finally:  # the CPU's misses, less the handler's own hyp misses
            self._count_guest_misses(mmu, misses, counts["hyp_tlb_misses"] - hyp)
        return pa

    def _count_guest_misses(self, mmu: MMU, before: int, hyp: int) -> None:
        guest = mmu.misses - before - hyp
        if guest:
            self.core.ledger.counts["guest_tlb_misses"] += guest

    @staticmethod
    def _fault_error(d: Domain, ipa: int, cpu: int, access: int, error: FaultError) -> MappingError:
        f = error.fault
        return MappingError(
            f"d{d.domid} {_ACCESS_NAMES[access]} at IPA {ipa:#x} on cpu {cpu}: "
            f"stage-{f.stage} {f.kind} fault at level {f.level}"
        )

    def _refused(self, d: Domain, ipa: int, cpu: int, access: int) -> MappingError:
        entry = self.core.mmus[cpu].stage2_entry(ipa)
        level = "?" if entry is None else entry.level
        return MappingError(
            f"d{d.domid} {_ACCESS_NAMES[access]} at IPA {ipa:#x} on cpu {cpu}: "
            f"stage-2 permission fault at level {level}"
        )

    def guest_write(self, d: Domain, ipa: int, cpu: int = 0, value: int | None = None) -> int:
        """Guest ``d`` writes at ``ipa`` on ``cpu``; return the PA written.

        Switches ``cpu`` to ``d`` if needed, translates through stage 2 on that CPU's MMU, and
        takes the log-dirty fault path when the page is write-protected. With ``value`` None
        only the access path is modelled (no data stored, so writing all of a 4GB guest does
        not materialise 4GB of frames); otherwise the 64-bit ``value`` is stored at the
        8-byte-aligned PA. Raises RangeError for a bad domain, CPU, IPA (outside guest RAM) or
        value, MappingError on a real fault; a call that raises changes nothing.
        """
        if value is not None and (type(value) is not int or not 0 <= value < 1 << 64):
            raise RangeError(f"guest_write: value {value!r} is not a 64-bit unsigned integer")
        prev = self._enter(d, cpu, (ipa,), "guest_write")
        try:
            pa = self._access(d, ipa, cpu, 2)
        except BaseException:
            self._leave(d, cpu, prev)
            raise
        if value is not None:
            self.core.mem.store64(pa & ~7, value)
        return pa

    def guest_write_many(self, d: Domain, ipas: Iterable[int], cpu: int = 0) -> list[int]:
        """``[guest_write(d, ipa, cpu) for ipa in ipas]`` with the arguments checked once:
        the same PAs and exactly the state the single calls leave (dirty set, ledger, TLBs,
        memory). Every IPA is checked before any access, so a bad one changes nothing; a real
        fault (MappingError) stops the batch where it happens, as the loop would. Raises as
        :meth:`guest_write`."""
        try:
            batch = ipas if isinstance(ipas, (list, tuple)) else list(ipas)
        except TypeError:
            raise RangeError(f"guest_write_many: ipas={ipas!r} is not an iterable") from None
        prev = self._enter(d, cpu, batch, "guest_write_many")
        access = self._access
        out: list[int] = []
        try:
            for ipa in batch:
                out.append(access(d, ipa, cpu, 2))
        except BaseException:
            if not out:  # as the first single call would: the CPU runs what it ran
                self._leave(d, cpu, prev)
            raise
        return out

    def guest_read(self, d: Domain, ipa: int, cpu: int = 0) -> int:
        """Guest ``d`` reads the 64-bit word at ``ipa`` (8-byte aligned down) on ``cpu``.
        Raises as :meth:`guest_write`."""
        prev = self._enter(d, cpu, (ipa,), "guest_read")
        try:
            pa = self._access(d, ipa, cpu, 1)
        except BaseException:
            self._leave(d, cpu, prev)
            raise
        return self.core.mem.load64(pa & ~7)

    # --- Xen's own mappings --------------------------------------------------------------------
    def vmap(self, mfns: list[int]) -> int:
        """Map frames in the vmap area (see :meth:`Vmap.vmap`). Raises RangeError for a bad
        list of frames, OutOfSpace when VA or frames run out (nothing changed)."""
        return self.vmap_area.vmap(mfns)

    def vunmap(self, va: int) -> int:
        """Unmap a vmap allocation (see :meth:`Vmap.vunmap`). Raises InvalidFree for a ``va``
        that is not the start of a live vmap allocation (nothing changed)."""
        return self.vmap_area.vunmap(va)

    def vmalloc(self, size: int) -> int:
        """Allocate and map fresh frames (see :meth:`Vmap.vmalloc`). Raises RangeError for a
        size that is not a positive int, OutOfSpace when frames or VA run out (nothing
        changed)."""
        return self.vmap_area.vmalloc(size)

    def vfree(self, va: int) -> None:
        """Free a vmalloc allocation (see :meth:`Vmap.vfree`). Raises InvalidFree for a
        ``va`` that is not a live vmalloc allocation (nothing changed)."""
        self.vmap_area.vfree(va)

    def map_domain_page(self, cpu: int, mfn: int) -> int:
        """Map ``mfn`` in ``cpu``'s domheap (see :meth:`Domheap.map_domain_page`). Raises
        RangeError for a bad CPU or MFN, OutOfSpace when every slot is busy."""
        return self.domheap.map_domain_page(cpu, mfn)

    def unmap_domain_page(self, cpu: int, va: int) -> None:
        """Release a domheap mapping (see :meth:`Domheap.unmap_domain_page`). Raises
        RangeError for a bad CPU, InvalidFree for a ``va`` with no reference."""
        self.domheap.unmap_domain_page(cpu, va)

    # --- checks --------------------------------------------------------------------------------
    def stale_hits(self) -> list[StaleHit]:
        """Every stale TLB hit recorded by any CPU's MMU (needs ``stale_check=True``)."""
        return [hit for mmu in self.mmus for hit in mmu.stale_hits]

    def check(self) -> None:
        """Raise InvariantError if Xen's tables, the VLPT or a domain is inconsistent (its
        p2m, its dirty set, its split reserve)."""
        self.core.pagetables.check()
        check = getattr(self.lookup, "check", None)
        if check is not None:
            check()
        for d in self.domains.values():
            if d.logdirty and d.dirty != self.logdirty.scan(d):
                raise InvariantError(f"d{d.domid}: dirty set differs from the p2m types")
            d.p2m.check()
            blocks = d.stage2.tracked_blocks() if d.logdirty else 0
            if d.stage2.split_reserve < blocks:
                raise InvariantError(
                    f"d{d.domid}: {d.stage2.split_reserve} split frames reserved for "
                    f"{blocks} log-dirty blocks: a write fault could run out of memory"
                )
