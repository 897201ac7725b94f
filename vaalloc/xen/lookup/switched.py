"""The ``switched`` p2m lookup: Ian's context-switched VLPT, made correct on SMP.

Ian Campbell's message puts the *running* domain's p2m first-level entries into fixed
``xen_second`` slots and rewrites them at every context switch to or from a log-dirty domain,
with the TLB maintenance that makes the rewrite safe. This module models that design so it can
be measured against the per-domain window (:mod:`vaalloc.xen.lookup.partitioned`) and the
``map_domain_page`` walk (:mod:`vaalloc.xen.lookup.walk`).

**Per-CPU sub-windows.** ``xen_second`` pages 0-1 are shared by every CPU (Xen 4.3 arm32), so
one global window cannot show two running domains at once: CPU 0 running log-dirty domain A and
CPU 1 running log-dirty domain B would overwrite each other's slots. A correct C version needs
one window per CPU: either a per-CPU copy of ``xen_second`` page 0, or, as modelled here, a
fixed per-CPU sub-window of the shared 128MB hole. CPU ``c`` owns slots
``[64 + c * W, 64 + (c + 1) * W)`` with ``W = capacity`` (default ``63 // cpus``); the loop slot
127 stays global. The per-switch cost (slot writes, TLB maintenance) is the same either way.
Only CPU ``c`` dereferences its sub-window, so a switch needs *local* maintenance only; entries
another CPU may have cached speculatively for ``c``'s sub-window are never used by it.

**What a switch costs** (``prev`` -> ``next`` on one CPU; ``n(x)`` = slots a domain spans,
``gb_span``; plain = not log-dirty):

=====================  ==========================  =========================================
 switch                 xen_second writes           TLB maintenance (local)
=====================  ==========================  =========================================
 plain -> plain         0                           none
 plain -> log-dirty     n(next)                     none (the slots were invalid)
 log-dirty -> plain     n(prev)                     flush prev's valid translations
 log-dirty -> log-dirty max(n(prev), n(next))       flush prev's valid translations
=====================  ==========================  =========================================

The loop slot is never rewritten: one loop entry serves every slot, but its *alias* pages
(``loop_va + s * 4KB``, the second-level view of slot ``s``) change translation with the slot and
are flushed with it. "prev's valid translations" are, per slot that held a table: the leaf-view
pages whose p2m level-2 entry is a table (up to 512) and the slot's alias page. Three modes:

* ``"va"``: one ``TLBIMVAH`` per valid page; finding them reads the slot's p2m level-2 table
  (512 reads, counted as ``switch_scan_reads``). Exact, but up to 513 operations per GB.
* ``"all"``: one ``TLBIALLH``: every hyp entry of the CPU goes, Xen's own text, data and heap
  included; the refills show up as TLB misses of whatever Xen touches next (the workload
  touches a modelled Xen working set, :mod:`vaalloc.studies.workload`).
* ``"auto"``: ``"va"`` when at most ``ceiling`` pages need flushing (Linux's
  ``tlb_single_page_flush_ceiling`` idea, 33 by default), else ``"all"``.

``lazy=True`` (``switched-lazy``) leaves the window alone when a log-dirty domain gives way
to a plain one: the CPU keeps showing the last log-dirty domain it ran, so a CPU alternating
between one migrating guest and plain guests never rewrites a slot after the first time; only a
switch to a *different* log-dirty domain pays. The stale view is harmless (Xen dereferences it
only for that domain's faults) and stays exact (p2m changes update every CPU showing it).

No break-before-make: only the switching CPU uses its sub-window, and it touches no window VA
between the rewrite and the flush. Changes of a tracked domain's p2m (new tables, splits, frees)
update every CPU where the domain is installed, with broadcast per-VA flushes (the change may be
made on any CPU), as the partitioned VLPT does.
"""

from __future__ import annotations

from vaalloc.errors import InvariantError, OutOfSpace, RangeError
from vaalloc.lpae._checks import check_bool
from vaalloc.lpae.descriptor import is_table
from vaalloc.xen.domain import Domain
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.layout import (
    FIRST_SHIFT,
    LPAE_ENTRIES,
    PAGE_SHIFT,
    SECOND_SHIFT,
    VLPT_DOMAIN_SLOTS,
    VLPT_FIRST_SLOT,
    VLPT_LOOP_SLOT,
)
from vaalloc.xen.lookup.base import P2MLookup, leaf_view_page, slot_pages, slot_value
from vaalloc.xen.vlptmath import gb_span, view_bases

__all__ = ["FLUSH_MODES", "SwitchedVLPT"]

#: Context-switch flush modes of :class:`SwitchedVLPT` (see the module docstring).
FLUSH_MODES = ("va", "all", "auto")

#: Default page count above which ``"auto"`` flushes the whole hyp TLB.
DEFAULT_CEILING = 33


class SwitchedVLPT(P2MLookup):
    """One VLPT window per CPU, holding the running log-dirty domain's p2m; rewritten at switch.

    ``flush`` is one of :data:`FLUSH_MODES` (default ``"all"``, the cheaper under the default
    cost weights, see docs/strategies.md); ``capacity`` is the sub-window size in slots (1GB
    of IPA each; default ``63 // cpus``); ``ceiling`` is the ``"auto"`` threshold in pages;
    ``lazy`` keeps a log-dirty domain's view when a plain domain follows it.

    A domain spanning more than ``capacity`` gigabytes cannot be tracked: :meth:`reserve`
    raises OutOfSpace. Raises RangeError for a bad mode, capacity or ceiling.
    """

    name = "switched"

    def __init__(
        self,
        core: Hypervisor,
        *,
        flush: str = "all",
        capacity: int | None = None,
        ceiling: int = DEFAULT_CEILING,
        lazy: bool = False,
    ) -> None:
        cpus = check_core(core, "SwitchedVLPT").cpus
        cap = VLPT_DOMAIN_SLOTS // cpus if capacity is None else capacity
        check_bool(lazy, "SwitchedVLPT", "lazy")
        if not isinstance(flush, str) or flush not in FLUSH_MODES:
            raise RangeError(f"SwitchedVLPT(flush={flush!r}): expected one of {FLUSH_MODES}")
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise RangeError(f"SwitchedVLPT(capacity={capacity!r}): expected a positive int")
        if cap * cpus > VLPT_DOMAIN_SLOTS:
            raise RangeError(
                f"SwitchedVLPT(capacity={cap}): {cpus} CPUs x {cap} slots exceed the "
                f"{VLPT_DOMAIN_SLOTS} window slots"
            )
        if isinstance(ceiling, bool) or not isinstance(ceiling, int) or ceiling < 0:
            raise RangeError(f"SwitchedVLPT(ceiling={ceiling!r}): expected an int >= 0")
        self.core = core
        self.flush = flush
        self.capacity = cap
        self.ceiling = ceiling
        self.lazy = lazy
        self.name = ("switched" if flush == "all" else f"switched-{flush}") + (
            "-lazy" if lazy else ""
        )
        # installed[cpu]: the log-dirty domain whose p2m the CPU's sub-window shows, or None.
        # Invariant: installed[cpu] is current[cpu] when that domain is log-dirty; otherwise
        # None (eager) or None or a live log-dirty domain that ran there last (lazy).
        self.installed: list[Domain | None] = [None] * cpus
        # Per CPU: (leaf_base, second_base) of the installed domain, so that
        # third_va = leaf_base + (ipa >> 12) * 8 and
        # second_va = second_base + (ipa >> 30) * 4KB + ((ipa >> 21) & 511) * 8.
        self._bases: list[tuple[int, int]] = [(0, 0)] * cpus

    # --- arithmetic -------------------------------------------------------------------------
    def base_slot(self, cpu: int) -> int:
        """First ``xen_second`` slot of ``cpu``'s sub-window. O(1). Raises RangeError for a
        bad CPU."""
        self.core.check_cpu(cpu)
        return VLPT_FIRST_SLOT + cpu * self.capacity

    def third_va(self, cpu: int, d: Domain, ipa: int) -> int:
        """Hyp VA (on ``cpu``) of the p2m leaf of ``ipa``. Raises RangeError for a bad CPU or
        domain, unless ``d`` is installed there and ``ipa`` lies in its RAM."""
        self._need_installed(cpu, d, ipa)
        return self._bases[cpu][0] + ((ipa >> PAGE_SHIFT) << 3)

    def second_va(self, cpu: int, d: Domain, ipa: int) -> int:
        """Hyp VA (on ``cpu``) of the p2m level-2 entry of ``ipa`` (through the loop slot).
        Raises as :meth:`third_va`."""
        self._need_installed(cpu, d, ipa)
        return self._second_va(cpu, ipa)

    def _second_va(self, cpu: int, ipa: int) -> int:
        return (
            self._bases[cpu][1]
            + ((ipa >> FIRST_SHIFT) << PAGE_SHIFT)
            + (((ipa >> SECOND_SHIFT) & 511) << 3)
        )

    def _need_installed(self, cpu: int, d: Domain, ipa: int) -> None:
        self.core.check_cpu(cpu)
        self.core.check_domain(d)
        if self.installed[cpu] is not d:
            raise RangeError(f"switched VLPT: cpu {cpu}'s window does not show domain {d.domid}")
        if not d.in_ram(ipa):
            raise RangeError(f"switched VLPT: IPA {ipa:#x} outside {d!r}'s RAM")

    @staticmethod
    def span(d: Domain | None) -> int:
        """Slots ``d`` needs (0 for None): one per gigabyte its RAM touches. Raises RangeError
        for anything but a Domain or None."""
        if d is not None and not isinstance(d, Domain):
            raise RangeError(f"SwitchedVLPT.span({d!r}): expected a Domain or None")
        return 0 if d is None else gb_span(d.ram_base, d.ram_size)[1]

    # --- hooks ------------------------------------------------------------------------------
    def reserve(self, d: Domain) -> None:
        """Refuse (OutOfSpace, nothing changed) a domain wider than a sub-window."""
        nr = self.span(d)
        if nr > self.capacity:
            raise OutOfSpace(
                f"switched VLPT: domain {d.domid} spans {nr} GB of IPA; a per-CPU window "
                f"holds {self.capacity}"
            )

    def on_enable(self, d: Domain) -> None:
        """Install ``d`` on every CPU currently running it (no flush: slots were invalid)."""
        for cpu, running in enumerate(self.core.current):
            if running is d:
                self._rewrite(cpu, self.installed[cpu], d, local=True)

    def on_disable(self, d: Domain) -> None:
        """Remove ``d`` from every CPU showing it (broadcast flush: any CPU may disable)."""
        for cpu, shown in enumerate(self.installed):
            if shown is d:
                self._rewrite(cpu, d, None, local=False)

    def on_context_switch(self, cpu: int, prev: Domain | None, next_: Domain | None) -> None:
        """Rewrite ``cpu``'s sub-window when a log-dirty domain leaves or arrives (see the
        module docstring for the exact counts); nothing between two plain domains."""
        old = self.installed[cpu]
        new = next_ if next_ is not None and next_.logdirty else None
        if old is new or (new is None and self.lazy):
            return
        self._rewrite(cpu, old, new, local=True)

    def on_p2m_change(self, d: Domain, level: int, ipa: int, old: int, new: int) -> None:
        """Keep every CPU showing ``d`` equal to its p2m; broadcast-flush VAs that changed."""
        rel = (ipa >> FIRST_SHIFT) - (d.ram_base >> FIRST_SHIFT)
        if not 0 <= rel < self.span(d):  # outside the gigabytes of d's RAM: no slot shows it
            return
        for cpu, shown in enumerate(self.installed):
            if shown is not d:
                continue
            slot = VLPT_FIRST_SLOT + cpu * self.capacity + rel
            pt = self.core.pagetables
            if level == 1:
                value = slot_value(d, ipa >> FIRST_SHIFT, new)
                was = pt.read_second(slot)
                pt.write_second(slot, value)
                if is_table(was):
                    for va in self._valid_pages(slot, was):
                        self._tlbi(cpu, "TLBIMVAHIS", va)
            elif level == 2 and is_table(old):
                va = leaf_view_page(slot, ipa)
                self._tlbi(cpu, "TLBIMVAHIS", va)

    # --- the switch itself ------------------------------------------------------------------
    def _rewrite(self, cpu: int, old: Domain | None, new: Domain | None, *, local: bool) -> None:
        """Make ``cpu``'s sub-window show ``new`` instead of ``old``; flush what was valid.

        Writes ``max(span(old), span(new))`` slots: ``new``'s first-level entries (0 where
        not a table) over the first ``span(new)``, zeros over the rest of ``old``'s.
        """
        pt = self.core.pagetables
        base = self.base_slot(cpu)
        nr_old, nr_new = self.span(old), self.span(new)
        first_gb = 0 if new is None else new.ram_base >> FIRST_SHIFT
        stale: list[tuple[int, int]] = []  # (slot, old entry) of slots that held a table
        for k in range(max(nr_old, nr_new)):
            slot = base + k
            was = pt.read_second(slot) if k < nr_old else 0
            value = 0
            if new is not None and k < nr_new:
                gb = first_gb + k
                value = slot_value(new, gb, new.stage2.read_l1(gb << FIRST_SHIFT))
            pt.write_second(slot, value)
            if is_table(was):
                stale.append((slot, was))
        self.installed[cpu] = new
        if new is not None:
            self._bases[cpu] = view_bases(VLPT_LOOP_SLOT, base, first_gb)
        if stale:
            self._flush_stale(cpu, stale, local)

    def _valid_pages(self, slot: int, old_l1: int) -> list[int]:
        """:func:`~vaalloc.xen.lookup.base.slot_pages`, its 512 reads of the level-2 table
        counted as ``switch_scan_reads``."""
        self.core.ledger.add("switch_scan_reads", LPAE_ENTRIES)
        return slot_pages(self.core.mem, slot, old_l1)

    def _flush_stale(self, cpu: int, stale: list[tuple[int, int]], local: bool) -> None:
        suffix = "" if local else "IS"
        if self.flush == "all":
            self._tlbi(cpu, "TLBIALLH" + suffix)
            return
        pages = [va for slot, was in stale for va in self._valid_pages(slot, was)]
        if self.flush == "auto" and len(pages) > self.ceiling:
            self._tlbi(cpu, "TLBIALLH" + suffix)
            return
        for va in pages:
            self._tlbi(cpu, "TLBIMVAH" + suffix, va)

    def _tlbi(self, cpu: int, op: str, va: int | None = None) -> None:
        """Issue ``op`` on ``cpu``'s MMU (``...IS`` forms reach every CPU) and count it."""
        mmu = self.core.mmus[cpu]
        if va is None:
            mmu.tlbi(op)
        else:
            mmu.tlbi(op, va)
        self.core.ledger.tlbi(op)

    # --- the handler's accesses -------------------------------------------------------------
    def read_second(self, cpu: int, d: Domain, ipa: int) -> int:
        """Read the level-2 entry through ``cpu``'s loop view (``d`` must run on ``cpu``)."""
        if self.installed[cpu] is not d:
            self._need_installed(cpu, d, ipa)
        self.core.ledger.counts["vlpt_reads"] += 1
        return self.core.hyp_read(cpu, self._second_va(cpu, ipa))

    def read_leaf(self, cpu: int, d: Domain, ipa: int) -> int:
        """Read the leaf through ``cpu``'s leaf view (``d`` must run on ``cpu``)."""
        if self.installed[cpu] is not d:
            self._need_installed(cpu, d, ipa)
        self.core.ledger.counts["vlpt_reads"] += 1
        va = self._bases[cpu][0] + ((ipa >> PAGE_SHIFT) << 3)
        return self.core.hyp_read(cpu, va)

    def write_leaf(self, cpu: int, d: Domain, ipa: int, value: int) -> None:
        """Write the leaf through ``cpu``'s leaf view (``d`` must run on ``cpu``)."""
        if self.installed[cpu] is not d:
            self._need_installed(cpu, d, ipa)
        self.core.ledger.counts["vlpt_writes"] += 1
        va = self._bases[cpu][0] + ((ipa >> PAGE_SHIFT) << 3)
        self.core.hyp_write(cpu, va, value)

    # --- checks -----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise InvariantError unless every CPU shows exactly its running log-dirty domain
        (slots equal to its first-level entries, the rest of the window empty)."""
        pt = self.core.pagetables
        want: dict[int, int] = {s: 0 for s in range(VLPT_FIRST_SLOT, VLPT_LOOP_SLOT)}
        for cpu, shown in enumerate(self.installed):
            running = self.core.current[cpu]
            expected = running if running is not None and running.logdirty else None
            kept = self.lazy and expected is None and (shown is None or shown.logdirty)
            if shown is not expected and not kept:
                raise InvariantError(f"cpu {cpu}: window shows {shown!r}, runs {running!r}")
            if shown is None:
                continue
            first_gb = shown.ram_base >> FIRST_SHIFT
            for k in range(self.span(shown)):
                l1 = shown.stage2.read_l1((first_gb + k) << FIRST_SHIFT)
                want[self.base_slot(cpu) + k] = l1 if is_table(l1) else 0
        for slot, value in want.items():
            have = pt.read_second(slot)
            if have != value:
                raise InvariantError(f"xen_second[{slot}] = {have:#x}, want {value:#x}")
