"""Xen's core: the state every subsystem of the model shares, and nothing above it.

:class:`Hypervisor` is what Xen's ``xen/arch/arm/mm.c`` and ``setup.c`` give the rest of the
hypervisor: physical memory, Xen's own page tables, one MMU (and TLB) per CPU with its hyp
regime pointing at that CPU's ``xen_pgtable``, which domain each CPU runs, the live domains, the
cost ledger, and the primitives everything else is written in: reads and writes through a Xen
virtual address (``hyp_read`` / ``hyp_write``) and the TLB maintenance Xen issues.

The subsystems (vmap, domheap, the p2m lookup strategies, log-dirty, context switch) each take
this core and never the :class:`~vaalloc.xen.system.Xen` facade, so the model's import graph
is a tree: core below subsystems below the facade (checked by import-linter in CI).
"""

from __future__ import annotations

from vaalloc.errors import RangeError
from vaalloc.lpae import ARMV7_S1, ARMV7_S2_40, MMU, TLB, PhysicalMemory
from vaalloc.lpae._checks import check_bool, check_int
from vaalloc.xen.domain import Domain
from vaalloc.xen.layout import SECOND_SIZE, XENHEAP_VIRT_END, XENHEAP_VIRT_START
from vaalloc.xen.ledger import Ledger
from vaalloc.xen.pagetables import XenPageTables

__all__ = ["Hypervisor", "check_config", "check_core"]

#: The most CPUs a model Xen has (each gets its own first-level table and dommap).
MAX_CPUS = 32


def check_config(
    what: str,
    *,
    cpus: int,
    pa_bits: int,
    xenheap_size: int,
    tlb_entries: int,
    stale_check: bool,
) -> None:
    """Check a Xen's configuration at the public boundary (``what``: the call to name):
    ``cpus`` an int in 1..32, ``pa_bits`` an int in 32..52, ``xenheap_size`` an int multiple
    of 2MB up to 1GB, ``tlb_entries`` an int >= 0, ``stale_check`` a bool. Raises RangeError
    naming the argument and its value."""
    check_int(cpus, what, "cpus", 1, MAX_CPUS + 1)
    check_int(pa_bits, what, "pa_bits", 32, 53)
    check_int(xenheap_size, what, "xenheap_size", 0, XENHEAP_VIRT_END - XENHEAP_VIRT_START + 1)
    if xenheap_size % SECOND_SIZE:
        raise RangeError(f"{what}: xenheap_size={xenheap_size:#x} is not a multiple of 2MB")
    check_int(tlb_entries, what, "tlb_entries", 0)
    check_bool(stale_check, what, "stale_check")


def check_core(core: object, what: str) -> Hypervisor:
    """``core`` if it is a :class:`Hypervisor`; raises RangeError naming ``what`` (the
    subsystem being built on it) otherwise."""
    if not isinstance(core, Hypervisor):
        raise RangeError(f"{what}(core={core!r}): expected a Hypervisor")
    return core


class Hypervisor:
    """The shared state of one model Xen on ``cpus`` ARMv7 CPUs (see the module docstring).

    ``mem`` (a fresh :class:`~vaalloc.lpae.PhysicalMemory` of ``pa_bits``), ``ledger``,
    ``pagetables`` (Xen's hyp tables, ``xenheap_size`` bytes of xenheap), ``mmus`` (one per
    CPU, ``tlb_entries`` each, all in one inner-shareable domain), ``current`` (the domain each
    CPU runs, None for idle) and ``domains`` (domid -> live domain).

    Raises RangeError for a bad argument (see :func:`check_config`), OutOfSpace when
    ``pa_bits`` leaves too little RAM for Xen's own tables.
    """

    def __init__(
        self,
        cpus: int,
        *,
        pa_bits: int,
        xenheap_size: int,
        tlb_entries: int,
        stale_check: bool,
    ) -> None:
        check_config(
            "Hypervisor",
            cpus=cpus,
            pa_bits=pa_bits,
            xenheap_size=xenheap_size,
            tlb_entries=tlb_entries,
            stale_check=stale_check,
        )
        self.mem = PhysicalMemory(pa_bits=pa_bits)
        self.ledger = Ledger()
        self.pagetables = XenPageTables(self.mem, self.ledger, cpus, xenheap_size)
        self.mmus: list[MMU] = []
        for cpu in range(cpus):
            mmu = MMU(self.mem, tlb=TLB(tlb_entries), stale_check=stale_check)
            mmu.set_hyp(httbr=self.pagetables.pgtable[cpu], fmt=ARMV7_S1)
            if self.mmus:
                self.mmus[0].join(mmu)  # one inner-shareable domain: ...IS ops reach all
            self.mmus.append(mmu)
        self.current: list[Domain | None] = [None] * cpus
        self.domains: dict[int, Domain] = {}

    @property
    def cpus(self) -> int:
        """Number of CPUs."""
        return len(self.mmus)

    # --- checks at the public boundary ---------------------------------------------------------
    def check_cpu(self, cpu: int) -> None:
        """Raise RangeError unless ``cpu`` names a CPU of this system."""
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < len(self.mmus):
            raise RangeError(f"CPU {cpu!r} does not exist (this Xen has {len(self.mmus)})")

    def check_domain(self, d: Domain) -> None:
        """Raise RangeError unless ``d`` is a live domain of this Xen (a destroyed one, or
        another Xen's, is not)."""
        if not isinstance(d, Domain) or self.domains.get(d.domid) is not d:
            state = "" if not isinstance(d, Domain) or d.alive else " (destroyed)"
            raise RangeError(f"{d!r}{state} is not a live domain of this Xen")

    # --- Xen's view of memory ------------------------------------------------------------------
    def httbr(self, cpu: int) -> int:
        """PA of ``cpu``'s first-level hyp table (what its HTTBR holds). Raises RangeError
        for a bad CPU."""
        self.check_cpu(cpu)
        return self.pagetables.pgtable[cpu]

    # The fault handler's VLPT accesses come here, three per fault: each is the CPU's hyp
    # lookup (trusting its arguments: an int, 8-aligned VA below 4GB; the public calls that
    # lead here checked them once) plus the ledger's count of the misses it took.

    def hyp_read(self, cpu: int, va: int) -> int:
        """Read the 64-bit word at hyp VA ``va`` on ``cpu``, through that CPU's TLB and walker.
        Counts ``hyp_tlb_misses`` and ``hyp_walk_reads``. Raises FaultError when ``va`` does not
        translate for a read."""
        return self.mem.load64(self._hyp_pa(cpu, va, 1))

    def hyp_write(self, cpu: int, va: int, value: int) -> None:
        """Write the 64-bit word ``value`` (trusted: 0 <= value < 2**64) at hyp VA ``va`` on
        ``cpu``; counts as :meth:`hyp_read`. Raises FaultError (a permission fault for a
        read-only mapping)."""
        self.mem.store64(self._hyp_pa(cpu, va, 2), value)

    def _hyp_pa(self, cpu: int, va: int, need: int) -> int:
        """PA of hyp VA ``va`` on ``cpu`` for a read (``need`` 1) or write (2), counting the
        walk if the TLB missed; raises the permission fault when it does not translate."""
        mmu = self.mmus[cpu]
        misses, reads = mmu.misses, mmu.walk_reads
        lookup = mmu.hyp_lookup
        assert lookup is not None  # set at boot
        pa = lookup(va, need)
        if mmu.misses != misses:
            counts = self.ledger.counts
            counts["hyp_tlb_misses"] += mmu.misses - misses
            counts["hyp_walk_reads"] += mmu.walk_reads - reads
        if pa < 0:
            mmu.hyp_pa(va, "read" if need == 1 else "write")  # raises the permission fault
        return pa

    # --- TLB maintenance ---------------------------------------------------------------------
    def flush_xen_va(self, va: int) -> None:
        """TLBIMVAHIS: drop hyp translations of ``va`` on every CPU (xen_second is shared)."""
        self.mmus[0].tlbi("TLBIMVAHIS", va)
        self.ledger.tlbi("TLBIMVAHIS")

    def flush_xen_va_local(self, cpu: int, va: int) -> None:
        """TLBIMVAH on ``cpu`` only (per-CPU mappings: the domheap)."""
        self.mmus[cpu].tlbi("TLBIMVAH", va)
        self.ledger.tlbi("TLBIMVAH")

    def flush_guest_all(self, d: Domain) -> None:
        """TLBIALLIS for ``d``'s VMID: its stage-1/2 entries leave every CPU's TLB."""
        self.mmus[0].tlbi("TLBIALLIS", vmid=d.vmid)
        self.ledger.tlbi("TLBIALLIS")

    def flush_guest_local(self, cpu: int, d: Domain) -> None:
        """TLBIALL for ``d``'s VMID on ``cpu`` (ARMv7: no invalidate by IPA exists)."""
        self.mmus[cpu].tlbi("TLBIALL", vmid=d.vmid)
        self.ledger.tlbi("TLBIALL")

    def load_stage2(self, cpu: int, d: Domain) -> None:
        """Load VTTBR (root and VMID of ``d``) on ``cpu``."""
        self.mmus[cpu].set_stage2(vttbr=d.p2m.root, vmid=d.vmid, fmt=ARMV7_S2_40)
