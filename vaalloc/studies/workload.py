"""A seeded workload for comparing p2m lookup strategies: CPUs, guests, a scheduler, migrations.

What it models, and why each part is there:

* **Domains** (:class:`DomainSpec`): RAM, vCPUs, a guest write rate (writes per ms of vCPU run
  time), a hot/cold working set (a share ``hot_share`` of writes lands in a hot set covering
  ``working_set`` of RAM, in 2MB-aligned clusters as real working sets are; the rest anywhere),
  and a share of RAM mapped by 2MB superpages (the others split to 4KB pages at build time).
  Only the *first* write to a page after a clean faults, so the hot/cold split sets the fault
  rate of each pre-copy round.
* **Scheduler**: vCPUs are spread round-robin over the pCPUs and each pCPU runs its queue in
  time slices of ``1000 / switch_rate`` ms, so ``switch_rate`` is the context-switch rate per
  pCPU (a slice boundary between two vCPUs of one domain is not a domain switch, and costs no
  strategy anything; the ledger's ``context_switches`` counts the real ones).
* **Pre-copy migration** of the domains marked ``migrate``: log-dirty on, then rounds: each
  round sends the pages dirtied in the previous one (``peek(clean=True)``) at ``bandwidth``
  pages per ms (the first round sends all RAM); a round lasts at least ``round_ms_min``. The
  migration converges when fewer than ``stop_pages`` are dirty or after ``max_rounds``, then
  stops (log-dirty off). With ``restart`` a new migration of the domain starts at once, so the
  number of log-dirty domains stays constant over the run (a steady state to measure).
* **Xen's own working set**: every fault and every switch touches ``xen_hot_pages`` pages of
  Xen's image through the CPU's hyp MMU, as Xen's code and data would be. A full hyp TLB flush
  therefore costs the refills it causes, measured by the TLB model as ``xen_hot_tlb_misses``
  and ``xen_hot_walk_reads``, not estimated.

Everything random comes from one ``random.Random(seed)``: the same workload and strategy give
the same counts. :func:`run_workload` drives a :class:`~vaalloc.xen.Xen` built by the caller.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from vaalloc.errors import OutOfSpace, RangeError
from vaalloc.xen import Xen
from vaalloc.xen.layout import PAGE_SHIFT, PAGE_SIZE, SECOND_SIZE, XEN_VIRT_START
from vaalloc.xen.pagetables import XEN_IMAGE_PAGES

if TYPE_CHECKING:
    from vaalloc.xen import Domain

__all__ = ["DomainSpec", "RunStats", "Workload", "run_workload", "teardown"]

MB = 1 << 20
_PAGES_PER_CHUNK = SECOND_SIZE >> PAGE_SHIFT


def _unit(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise RangeError(f"{type(instance).__name__}.{attribute.name}={value!r}: expected 0..1")


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RangeError(f"{type(instance).__name__}.{attribute.name}={value!r}: expected > 0")


def _count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RangeError(f"{type(instance).__name__}.{attribute.name}={value!r}: expected >= 1")


def _flag(instance: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise RangeError(f"{type(instance).__name__}.{attribute.name}={value!r}: expected a bool")


def _int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RangeError(f"{type(instance).__name__}.{attribute.name}={value!r}: expected an int")


def _specs(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(s, DomainSpec) for s in value):
        raise RangeError(f"Workload.domains={value!r}: expected a tuple of DomainSpec")


def _ram(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % SECOND_SIZE:
        raise RangeError(f"DomainSpec.ram={value!r}: expected a positive multiple of 2MB")


@attrs.frozen
class DomainSpec:
    """One guest of a :class:`Workload`. Raises RangeError for a value out of range.

    ``ram`` bytes (multiple of 2MB); ``vcpus``; ``write_rate`` guest writes per ms of run
    time; ``working_set`` share of RAM that is hot; ``hot_share`` share of writes going to it;
    ``superpages`` share of 2MB chunks left as 2MB p2m blocks; ``migrate``: log-dirty on.
    """

    ram: int = attrs.field(default=32 * MB, validator=_ram)
    vcpus: int = attrs.field(default=1, validator=_count)
    write_rate: float = attrs.field(default=20.0, validator=_positive)
    working_set: float = attrs.field(default=0.1, validator=_unit)
    hot_share: float = attrs.field(default=0.9, validator=_unit)
    superpages: float = attrs.field(default=0.0, validator=_unit)
    migrate: bool = attrs.field(default=False, validator=_flag)


@attrs.frozen
class Workload:
    """A whole scenario (see the module docstring). Raises RangeError for a bad value.

    ``pcpus``; ``domains``; ``switch_rate`` time slices per second per pCPU; ``duration_ms``
    simulated; ``seed``; ``bandwidth`` pages sent per ms; ``round_ms_min``; ``max_rounds``;
    ``stop_pages``; ``restart``; ``xen_hot_pages`` (0..64, Xen image pages touched per fault
    and switch).
    """

    pcpus: int = attrs.field(default=2, validator=_count)
    domains: tuple[DomainSpec, ...] = attrs.field(
        default=(DomainSpec(migrate=True), DomainSpec()), validator=_specs
    )
    switch_rate: float = attrs.field(default=100.0, validator=_positive)
    duration_ms: float = attrs.field(default=100.0, validator=_positive)
    seed: int = attrs.field(default=0, validator=_int)
    bandwidth: float = attrs.field(default=100.0, validator=_positive)
    round_ms_min: float = attrs.field(default=5.0, validator=_positive)
    max_rounds: int = attrs.field(default=30, validator=_count)
    stop_pages: int = attrs.field(default=50, validator=_count)
    restart: bool = attrs.field(default=True, validator=_flag)
    xen_hot_pages: int = attrs.field(default=16, validator=_int)

    def __attrs_post_init__(self) -> None:
        if not self.domains:
            raise RangeError("Workload.domains: expected at least one domain")
        if not 0 <= self.xen_hot_pages <= XEN_IMAGE_PAGES:
            raise RangeError(
                f"Workload.xen_hot_pages={self.xen_hot_pages!r}: expected 0..{XEN_IMAGE_PAGES}"
            )

    @property
    def slice_ms(self) -> float:
        """Length of a time slice in ms."""
        return 1000.0 / self.switch_rate

    @classmethod
    def standard(
        cls,
        *,
        domains: int = 4,
        logdirty: int = 1,
        switch_rate: float = 100.0,
        ram: int = 32 * MB,
        write_rate: float = 20.0,
        superpages: float = 0.0,
        **kw: object,
    ) -> Workload:
        """``domains`` identical guests (``ram``, ``write_rate``, ``superpages`` share), the
        first ``logdirty`` of them migrating, one vCPU each (so every pCPU alternates between
        guests); ``kw`` are other :class:`Workload` fields. Raises RangeError."""
        if isinstance(domains, bool) or not isinstance(domains, int) or domains < 1:
            raise RangeError(f"Workload.standard: domains={domains!r}, expected >= 1")
        if (
            isinstance(logdirty, bool)
            or not isinstance(logdirty, int)
            or not 0 <= logdirty <= domains
        ):
            raise RangeError(f"Workload.standard: logdirty={logdirty} not in 0..{domains}")
        specs = tuple(
            DomainSpec(ram=ram, write_rate=write_rate, superpages=superpages, migrate=i < logdirty)
            for i in range(domains)
        )
        return cls(domains=specs, switch_rate=switch_rate, **kw)  # type: ignore[arg-type]


@attrs.define
class RunStats:
    """What happened in one run besides the ledger: guest writes issued, pre-copy rounds,
    pages sent, migrations completed, enables refused (OutOfSpace), simulated ms, and the
    ledger growth by phase: ``switch_counts`` (context switches and Xen's working-set touch
    right after them), ``migration_counts`` (enable, peek/clean, disable); the rest of the
    ledger is the guests running (writes and their faults). ``build_counts`` is what building
    the domains cost; the ledger is reset after the build, so it holds the run only."""

    writes: int = 0
    rounds: int = 0
    pages_sent: int = 0
    migrations: int = 0
    refused: int = 0
    sim_ms: float = 0.0
    switch_counts: Counter[str] = attrs.field(factory=Counter)
    migration_counts: Counter[str] = attrs.field(factory=Counter)
    build_counts: Counter[str] = attrs.field(factory=Counter)


@attrs.define
class _Migration:
    d: Domain
    round: int = 0
    deadline: float = 0.0
    tracking: bool = False


class _Guest:
    """A built domain with its page chooser."""

    def __init__(self, d: Domain, spec: DomainSpec, rng: random.Random) -> None:
        self.d = d
        self.spec = spec
        chunks = d.ram_size // SECOND_SIZE
        nr_hot = max(1, round(chunks * spec.working_set))
        self.hot_chunks = sorted(rng.sample(range(chunks), nr_hot))
        self.pages = d.ram_size >> PAGE_SHIFT

    def pick(self, rng: random.Random) -> int:
        """IPA of the next write."""
        if rng.random() < self.spec.hot_share:
            chunk = self.hot_chunks[rng.randrange(len(self.hot_chunks))]
            page = chunk * _PAGES_PER_CHUNK + rng.randrange(_PAGES_PER_CHUNK)
        else:
            page = rng.randrange(self.pages)
        return self.d.ram_base + page * PAGE_SIZE


def _build(xen: Xen, spec: DomainSpec, rng: random.Random) -> Domain:
    """Create a domain with ``spec.superpages`` of its 2MB chunks left as blocks."""
    d = xen.create_domain(ram=spec.ram, superpages=spec.superpages > 0)
    if 0 < spec.superpages < 1:
        chunks = list(range(d.ram_base, d.ram_end, SECOND_SIZE))
        keep = round(len(chunks) * spec.superpages)
        for chunk in sorted(rng.sample(chunks, len(chunks) - keep)):
            d.stage2.split_block(chunk)
        xen.flush_guest_all(d)  # break-before-make of the splits
    return d


def _touch_xen(xen: Xen, cpu: int, pages: int) -> None:
    """Xen's own code and data on ``cpu``: ``pages`` reads through the hyp MMU."""
    if not pages:
        return
    mmu = xen.mmus[cpu]
    misses, reads = mmu.misses, mmu.walk_reads
    for i in range(pages):
        mmu.hyp_read64(XEN_VIRT_START + i * PAGE_SIZE)
    if mmu.misses != misses:
        counts = xen.ledger.counts
        counts["xen_hot_tlb_misses"] += mmu.misses - misses
        counts["xen_hot_walk_reads"] += mmu.walk_reads - reads


def _charge(
    counts: Mapping[str, int], into: Counter[str], action: Callable[..., None], *args: object
) -> None:
    """Run ``action(*args)`` and add the ledger's growth during it to ``into``."""
    before = dict(counts)
    action(*args)
    for key, value in counts.items():
        grown = value - before.get(key, 0)
        if grown:
            into[key] += grown


class _Runner:
    def __init__(self, xen: Xen, w: Workload) -> None:
        if xen.cpus != w.pcpus:
            raise RangeError(f"run_workload: Xen has {xen.cpus} CPUs, workload {w.pcpus}")
        if xen.domains:
            raise RangeError("run_workload: expected a Xen without domains")
        self.xen = xen
        self.w = w
        self.rng = random.Random(w.seed)
        self.stats = RunStats()
        self.guests = [_Guest(_build(xen, s, self.rng), s, self.rng) for s in w.domains]
        # Building is the same for every strategy: keep it out of the run's ledger.
        self.stats.build_counts.update(xen.ledger.snapshot())
        xen.ledger.reset()
        vcpus = [g for g in self.guests for _ in range(g.spec.vcpus)]
        self.queues: list[list[_Guest]] = [vcpus[c :: w.pcpus] for c in range(w.pcpus)]
        self.next_in_queue = [0] * w.pcpus
        self.migrations = [_Migration(g.d) for g in self.guests if g.spec.migrate]
        self.carry = [0.0] * len(self.guests)

    def start_migration(self, m: _Migration, now: float) -> None:
        try:
            self.xen.logdirty.enable(m.d)
        except OutOfSpace:
            self.stats.refused += 1
            m.tracking = False
            m.deadline = now + self.w.round_ms_min  # retry later
            return
        m.tracking = True
        m.round = 1
        m.deadline = now + max(self.w.round_ms_min, (m.d.ram_size >> PAGE_SHIFT) / self.w.bandwidth)
        self.stats.pages_sent += m.d.ram_size >> PAGE_SHIFT

    def advance_migration(self, m: _Migration, now: float) -> None:
        if not m.tracking:
            self.start_migration(m, now)
            return
        dirty = self.xen.logdirty.peek(m.d, clean=True)
        self.stats.rounds += 1
        self.stats.pages_sent += len(dirty)
        if len(dirty) < self.w.stop_pages or m.round >= self.w.max_rounds:
            self.xen.logdirty.disable(m.d)
            self.stats.migrations += 1
            m.tracking = False
            if self.w.restart:
                self.start_migration(m, now)
            else:
                m.deadline = float("inf")
            return
        m.round += 1
        m.deadline = now + max(self.w.round_ms_min, len(dirty) / self.w.bandwidth)

    def switch(self, cpu: int, d: Domain) -> None:
        """Context switch ``cpu`` to ``d``; Xen's own code and data run on the way."""
        self.xen.context_switch(cpu, d)
        _touch_xen(self.xen, cpu, self.w.xen_hot_pages)

    def run_slice(self, cpu: int, g: _Guest, slice_ms: float) -> None:
        xen, rng = self.xen, self.rng
        index = self.guests.index(g)
        expected = g.spec.write_rate * slice_ms + self.carry[index]
        n = int(expected)
        self.carry[index] = expected - n  # keeps the mean rate exact over many slices
        counts = xen.ledger.counts
        hot = self.w.xen_hot_pages
        for _ in range(n):
            faults = counts["faults"]
            xen.guest_write(g.d, g.pick(rng), cpu=cpu)
            if counts["faults"] != faults:
                _touch_xen(xen, cpu, hot)
        self.stats.writes += n

    def run(self) -> RunStats:
        w, xen = self.w, self.xen
        slice_ms = w.slice_ms
        counts, into = xen.ledger.counts, self.stats.migration_counts
        for m in self.migrations:
            _charge(counts, into, self.start_migration, m, 0.0)
        now = 0.0
        while now < w.duration_ms:
            length = min(slice_ms, w.duration_ms - now)
            for cpu, queue in enumerate(self.queues):
                if not queue:
                    continue
                g = queue[self.next_in_queue[cpu] % len(queue)]
                self.next_in_queue[cpu] += 1
                if xen.current[cpu] is not g.d:
                    _charge(xen.ledger.counts, self.stats.switch_counts, self.switch, cpu, g.d)
                self.run_slice(cpu, g, length)
            now += length
            for m in self.migrations:
                if now >= m.deadline:
                    _charge(counts, into, self.advance_migration, m, now)
        self.stats.sim_ms = now
        return self.stats


def run_workload(xen: Xen, workload: Workload) -> RunStats:
    """Build ``workload``'s domains in ``xen`` (which must have none and ``workload.pcpus``
    CPUs) and run it. ``xen.ledger`` is reset after the build (build costs go to
    ``RunStats.build_counts``) and then counts the run. Domains are left alive, still
    tracking if their migration was under way (call ``teardown`` to release them).

    Cost: O(writes + faults * xen_hot_pages + switches * xen_hot_pages) model operations.
    Raises RangeError for a ``xen`` that is not a Xen, a ``workload`` that is not a Workload,
    or a mismatched Xen.
    """
    if not isinstance(xen, Xen):
        raise RangeError(f"run_workload(xen={xen!r}): expected a Xen")
    if not isinstance(workload, Workload):
        raise RangeError(f"run_workload(workload={workload!r}): expected a Workload")
    return _Runner(xen, workload).run()


def teardown(xen: Xen, domains: Sequence[Domain] | None = None) -> None:
    """Disable log-dirty on and destroy every domain of ``xen`` (or those given). Raises
    RangeError for a ``xen`` that is not a Xen or a domain that is not one of its live ones
    (checked before any is destroyed)."""
    if not isinstance(xen, Xen):
        raise RangeError(f"teardown(xen={xen!r}): expected a Xen")
    if domains is not None and (
        isinstance(domains, (str, bytes)) or not isinstance(domains, Sequence)
    ):
        raise RangeError(f"teardown(domains={domains!r}): expected a sequence of domains")
    chosen = list(xen.domains.values()) if domains is None else list(domains)
    for d in chosen:
        xen.check_domain(d)
    if len({id(d) for d in chosen}) != len(chosen):
        raise RangeError("teardown: a domain is given twice")
    for d in chosen:
        if d.logdirty:
            xen.logdirty.disable(d)
        xen.destroy_domain(d)
