"""The Xen-on-ARM32 system: memory, Xen's tables, CPUs with MMUs, domains, VLPT, log-dirty.

``Xen(cpus=2)`` boots a model hypervisor: it allocates Xen's own tables in a fresh
:class:`~vaalloc.lpae.PhysicalMemory`, gives every CPU an :class:`~vaalloc.lpae.MMU` whose hyp
regime (HTTBR) points at that CPU's ``xen_pgtable``, and installs the VLPT loop slot. Everything
the model does afterwards is real memory traffic: dump ``xen.mem.frames()`` into an emulator,
point a Cortex-A15's HTTBR at ``xen.httbr(cpu)`` and the reads agree with ``xen.read_va``.
"""

from __future__ import annotations

from vaalloc.errors import InvariantError, LogDirtyError, MappingError, OutOfSpace, RangeError
from vaalloc.lpae import Fault, FaultError, PhysicalMemory
from vaalloc.lpae.mmu import MMU, StaleHit
from vaalloc.xen.domain import Domain
from vaalloc.xen.domheap import Domheap
from vaalloc.xen.fastpath import s2_fill, s2_probe
from vaalloc.xen.hypervisor import Hypervisor
from vaalloc.xen.layout import GUEST_RAM_BASE, MAX_VMID, MB, P2M_IPA_BITS, PAGE_SIZE
from vaalloc.xen.ledger import Ledger
from vaalloc.xen.logdirty import LogDirty
from vaalloc.xen.lookup import LookupFactory, P2MLookup, PartitionedVLPT, lookup_factory
from vaalloc.xen.p2m import P2M
from vaalloc.xen.pagetables import XenPageTables
from vaalloc.xen.sched import context_switch
from vaalloc.xen.vmap import Vmap

__all__ = ["Xen"]


class Xen:
    """A model Xen 4.3 on ``cpus`` ARMv7 CPUs with LPAE: the facade over the core
    (:class:`~vaalloc.xen.hypervisor.Hypervisor`) and its subsystems.

    Keyword arguments: ``pa_bits`` of physical memory (40), ``xenheap_size`` mapped at 1GB
    (8MB), ``tlb_entries`` per CPU TLB (512), ``stale_check`` (False: when True every TLB hit
    is checked against a fresh walk and stale hits are recorded in ``mmu.stale_hits``),
    ``lookup``: the p2m lookup strategy, a name of :data:`vaalloc.xen.lookup.LOOKUPS`
    (``"partitioned"``, the default) or a factory ``f(core, capacity=None)``; ``capacity``: the
    strategy's window size in slots (None: the whole window).

    Raises RangeError for a bad CPU count or option.
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
        if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 32:
            raise RangeError(f"Xen(cpus={cpus!r}): expected 1..32 CPUs")
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
        """PA of ``cpu``'s first-level hyp table (what its HTTBR holds)."""
        self.core.check_cpu(cpu)
        return self.core.httbr(cpu)

    def read_va(self, cpu: int, va: int) -> int:
        """Read the 64-bit word at hyp VA ``va`` on ``cpu`` through its MMU and TLB.

        Counts ``hyp_tlb_misses`` and ``hyp_walk_reads``. Raises RangeError for a bad CPU and
        ``vaalloc.lpae.FaultError`` (a VAAllocError, ``.fault`` says why) if ``va`` does not
        translate for a read.
        """
        self.core.check_cpu(cpu)
        return self.core.hyp_read(self.core.mmus[cpu], va)

    def write_va(self, cpu: int, va: int, value: int) -> None:
        """Write a 64-bit word at hyp VA ``va`` on ``cpu`` (through its MMU). Raises like
        :meth:`read_va` (a permission fault for a read-only mapping)."""
        self.core.check_cpu(cpu)
        self.core.hyp_write(self.core.mmus[cpu], va, value)

    def flush_guest_all(self, d: Domain) -> None:
        """TLBIALLIS for ``d``'s VMID on every CPU (see :meth:`Hypervisor.flush_guest_all`)."""
        self.core.check_domain(d)
        self.core.flush_guest_all(d)

    # --- domains ------------------------------------------------------------------------------
    def create_domain(self, ram: int, *, superpages: bool = False) -> Domain:
        """Create a domain with ``ram`` bytes of RAM at IPA 0x80000000; return it.

        The p2m maps RAM with 4KB pages, or with 2MB blocks where a whole aligned 2MB fits when
        ``superpages``. Frames come in 2MB-aligned runs. Raises RangeError for a size that is
        not a positive multiple of 4KB or does not fit the 40-bit IPA space, OutOfSpace when
        VMIDs or physical memory run out (nothing leaked).
        """
        if isinstance(ram, bool) or not isinstance(ram, int) or ram <= 0 or ram % PAGE_SIZE:
            shown = f"{ram:#x}" if isinstance(ram, int) else repr(ram)
            raise RangeError(f"create_domain(ram={shown}): expected a positive multiple of 4KB")
        if GUEST_RAM_BASE + ram > 1 << P2M_IPA_BITS:
            raise RangeError(f"create_domain(ram={ram:#x}): beyond the 40-bit IPA space")
        vmid = next((v for v in range(1, MAX_VMID + 1) if v not in self._vmids), None)
        if vmid is None:
            raise OutOfSpace(f"create_domain: all {MAX_VMID} VMIDs in use")
        domid = self._next_domid
        stage2 = P2M(self.mem, self.ledger, name=f"d{domid}.p2m")
        try:
            stage2.populate(GUEST_RAM_BASE, ram, superpages)
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
        """Run ``d`` (None: idle) on ``cpu``; see :func:`vaalloc.xen.sched.context_switch`."""
        context_switch(self.core, self.lookup, cpu, d)

    # --- p2m changes --------------------------------------------------------------------------
    def p2m_populate(self, d: Domain, ipa: int, size: int) -> None:
        """Give ``d`` fresh RAM at ``[ipa, ipa + size)`` inside its RAM range (2MB aligned).

        While log-dirty is on the new leaves are clean (write-protected). New p2m tables are
        reported to the VLPT. Raises RangeError / MappingError (nothing changed).
        """
        self.check_domain(d)
        if not (d.in_ram(ipa) and d.in_ram(ipa + size - 1)) or size <= 0:
            raise RangeError(f"p2m_populate: [{ipa:#x}, +{size:#x}) outside {d!r}'s RAM")
        d.stage2.populate(ipa, size, d.superpages, logdirty=d.logdirty)

    def p2m_depopulate(self, d: Domain, ipa: int, size: int) -> None:
        """Take RAM ``[ipa, ipa + size)`` (2MB aligned) away from ``d`` (balloon out).

        Frees its frames and emptied tables, flushes the guest TLB for ``d``'s VMID and the
        hyp VAs of the VLPT that changed. Dirty frames in the range are dropped from the dirty
        set. Raises RangeError / MappingError (nothing changed).
        """
        self.check_domain(d)
        if not (d.in_ram(ipa) and d.in_ram(ipa + size - 1)) or size <= 0:
            raise RangeError(f"p2m_depopulate: [{ipa:#x}, +{size:#x}) outside {d!r}'s RAM")
        d.stage2.depopulate(ipa, size)
        self.core.flush_guest_all(d)
        lo, hi = ipa >> 12, (ipa + size) >> 12
        d.dirty = {g for g in d.dirty if not lo <= g < hi}

    # --- guest accesses ----------------------------------------------------------------------
    def _guest_access(self, d: Domain, ipa: int, cpu: int, access: str) -> int:
        # The common case first, checked in the fewest operations: a live domain already
        # running on a valid CPU, an int IPA in its RAM, the lean path.
        if (
            type(cpu) is int
            and 0 <= cpu < len(self.current)
            and self.current[cpu] is d
            and type(ipa) is int
            and d.ram_base <= ipa < d.ram_base + d.ram_size
            and self.domains.get(d.domid) is d
            and not self.mmus[cpu].stale_check
        ):
            try:
                return self._access_fast(self.mmus[cpu], d, ipa, cpu, access)
            except FaultError as error:
                raise self._mapping_error(d, ipa, cpu, access, error) from error
        self.check_domain(d)
        self.check_cpu(cpu)
        if isinstance(ipa, bool) or not isinstance(ipa, int) or not d.in_ram(ipa):
            shown = f"{ipa:#x}" if isinstance(ipa, int) else repr(ipa)
            raise RangeError(f"guest access at IPA {shown} outside {d!r}'s RAM")
        prev = self.current[cpu]
        if prev is not d:
            context_switch(self.core, self.lookup, cpu, d)
        try:
            return self._translate_or_fault(d, ipa, cpu, access)
        except BaseException:
            if prev is not d:  # a failed access leaves the CPU as it found it
                context_switch(self.core, self.lookup, cpu, prev)
            raise

    def _translate_or_fault(self, d: Domain, ipa: int, cpu: int, access: str) -> int:
        """Translate a guest access on ``cpu``, taking the log-dirty fault path if needed."""
        mmu = self.mmus[cpu]
        try:
            if not mmu.stale_check:
                return self._access_fast(mmu, d, ipa, cpu, access)
            counts = self.ledger.counts
            misses = mmu.misses - counts["hyp_tlb_misses"]
            try:  # the stale detector lives in MMU.guest_pa
                return self._access_via_mmu(mmu, d, ipa, cpu, access)
            finally:
                # The MMU counts hyp and guest misses together; the hyp ones are in the ledger.
                counts["guest_tlb_misses"] += mmu.misses - counts["hyp_tlb_misses"] - misses
        except FaultError as error:
            raise self._mapping_error(d, ipa, cpu, access, error) from error

    @staticmethod
    def _mapping_error(
        d: Domain, ipa: int, cpu: int, access: str, error: FaultError
    ) -> MappingError:
        f = error.fault
        return MappingError(
            f"d{d.domid} {access} at IPA {ipa:#x} on cpu {cpu}: stage-{f.stage} "
            f"{f.kind} fault at level {f.level}"
        )

    def _access_via_mmu(self, mmu: MMU, d: Domain, ipa: int, cpu: int, access: str) -> int:
        try:
            return mmu.guest_pa(ipa, access)
        except FaultError as error:
            fault = error.fault
            if fault.kind != "permission" or access != "write" or not d.logdirty:
                raise
        self.ledger.counts["faults"] += 1
        self.logdirty.handle_fault(cpu, d, ipa)
        return mmu.guest_pa(ipa, access)

    def _access_fast(self, mmu: MMU, d: Domain, ipa: int, cpu: int, access: str) -> int:
        """The lean path (see :mod:`vaalloc.xen.fastpath`); counts like the MMU path."""
        bit = 2 if access == "write" else 1
        counts = self.ledger.counts
        misses = mmu.misses - counts["hyp_tlb_misses"]
        try:
            entry = s2_probe(mmu, ipa) or s2_fill(mmu, ipa, access)
            if not entry[1] & bit:
                if bit != 2 or not d.logdirty:
                    raise FaultError(Fault("permission", entry[2], ipa, stage=2, ipa=ipa))
                counts["faults"] += 1
                self.logdirty.handle_fault(cpu, d, ipa)
                # The handler ended with TLBIALL(IS) for d's VMID on this CPU, so the retried
                # access cannot hit: it walks (a probe would only confirm the miss).
                entry = s2_fill(mmu, ipa, access)
                if not entry[1] & bit:
                    raise FaultError(Fault("permission", entry[2], ipa, stage=2, ipa=ipa))
            return entry[0] | (ipa & ((1 << entry[4]) - 1))
        finally:
            counts["guest_tlb_misses"] += mmu.misses - counts["hyp_tlb_misses"] - misses

    def guest_write(self, d: Domain, ipa: int, cpu: int = 0, value: int | None = None) -> int:
        """Guest ``d`` writes at ``ipa`` on ``cpu``; return the PA written.

        Switches ``cpu`` to ``d`` if needed, translates through stage 2 on that CPU's MMU, and
        takes the log-dirty fault path when the page is write-protected. With ``value`` None
        only the access path is modelled (no data stored, so writing all of a 4GB guest does
        not materialise 4GB of frames); otherwise the 64-bit ``value`` is stored at the
        8-byte-aligned PA. Raises RangeError outside guest RAM, MappingError on a real fault.
        """
        pa = self._guest_access(d, ipa, cpu, "write")
        if value is not None:
            self.mem.write64(pa & ~7, value)
        return pa

    def guest_read(self, d: Domain, ipa: int, cpu: int = 0) -> int:
        """Guest ``d`` reads the 64-bit word at ``ipa`` (8-byte aligned down) on ``cpu``."""
        pa = self._guest_access(d, ipa, cpu, "read")
        value: int = self.mem.read64(pa & ~7)
        return value

    # --- Xen's own mappings --------------------------------------------------------------------
    def vmap(self, mfns: list[int]) -> int:
        """Map frames in the vmap area (see :meth:`Vmap.vmap`)."""
        return self.vmap_area.vmap(mfns)

    def vunmap(self, va: int) -> int:
        """Unmap a vmap allocation (see :meth:`Vmap.vunmap`)."""
        return self.vmap_area.vunmap(va)

    def vmalloc(self, size: int) -> int:
        """Allocate and map fresh frames (see :meth:`Vmap.vmalloc`)."""
        return self.vmap_area.vmalloc(size)

    def vfree(self, va: int) -> None:
        """Free a vmalloc allocation (see :meth:`Vmap.vfree`)."""
        self.vmap_area.vfree(va)

    def map_domain_page(self, cpu: int, mfn: int) -> int:
        """Map ``mfn`` in ``cpu``'s domheap (see :meth:`Domheap.map_domain_page`)."""
        return self.domheap.map_domain_page(cpu, mfn)

    def unmap_domain_page(self, cpu: int, va: int) -> None:
        """Release a domheap mapping (see :meth:`Domheap.unmap_domain_page`)."""
        self.domheap.unmap_domain_page(cpu, va)

    # --- checks --------------------------------------------------------------------------------
    def stale_hits(self) -> list[StaleHit]:
        """Every stale TLB hit recorded by any CPU's MMU (needs ``stale_check=True``)."""
        return [hit for mmu in self.mmus for hit in mmu.stale_hits]

    def check(self) -> None:
        """Raise InvariantError if Xen's tables, the VLPT or a domain is inconsistent."""
        self.core.pagetables.check()
        check = getattr(self.lookup, "check", None)
        if check is not None:
            check()
        for d in self.domains.values():
            if d.logdirty and d.dirty != self.logdirty.scan(d):
                raise InvariantError(f"d{d.domid}: dirty set differs from the p2m types")
