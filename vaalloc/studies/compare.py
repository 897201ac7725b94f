"""Run one workload under several p2m lookup strategies and price what each one did.

The model counts events (:mod:`vaalloc.xen.ledger`); this module turns counts into cycles with
a **weighted sum** whose weights are documented in :data:`WEIGHT_NOTES` and can be overridden
(``weights={"tlbi:TLBIALLH": 200}``). Raw counts are always kept beside the cycles, so a reader
who distrusts a weight can redo the sum; the answer docs/strategies.md gives is stated in
counts first. Counters absent from the weights cost 0: either they are the same for every
strategy (``faults``, ``context_switches``) or they aggregate others (``tlbi``,
``context_switch_slot_writes``, ``context_switch_tlbi``) and would be counted twice.

Entry points: :func:`run_strategy` (one workload, one strategy), :func:`compare` (several),
:func:`sweep` (over switch rate, number of log-dirty domains and window capacity) and
:func:`crossovers` (where the winner changes along the switch-rate axis).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from vaalloc.errors import RangeError
from vaalloc.studies.workload import Workload, run_workload, teardown
from vaalloc.xen import LOOKUPS, Xen
from vaalloc.xen.ledger import COUNTERS

__all__ = [
    "ARM32",
    "ARM64",
    "DEFAULT_WEIGHTS",
    "EXTRA_COUNTERS",
    "WEIGHT_NOTES",
    "Crossover",
    "Result",
    "SweepPoint",
    "compare",
    "cost",
    "crossovers",
    "parse_weights",
    "run_strategy",
    "sweep",
    "totals",
    "winner",
]

#: Strategies a 32-bit ARM Xen can use, and the one a 64-bit Xen with a direct map adds.
ARM32 = ("partitioned", "switched", "switched-va", "switched-lazy", "walk", "hybrid")
ARM64 = ("walk64",)

#: Strategies that exist on one sub-architecture only: never compared with each other.
_ONLY_ON = {"walk": "arm32", "walk64": "arm64"}

#: Counters this module's strategies and workload add to the ledger's :data:`COUNTERS`.
EXTRA_COUNTERS: dict[str, str] = {
    "switch_scan_reads": "p2m level-2 entries read at switch to find VAs to flush (switched-va)",
    "domheap_unmaps": "unmap_domain_page calls (walk)",
    "directmap_maps": "map_domain_page on arm64: direct-map address arithmetic (walk64)",
    "walk_p2m_reads": "p2m entries read by the software walk (walk, walk64)",
    "walk_p2m_writes": "p2m leaves written back by the software walk (walk, walk64)",
    "xen_hot_tlb_misses": "hyp TLB misses of Xen's own code/data (refills after flushes)",
    "xen_hot_walk_reads": "descriptor reads of those refills",
    "fallback_walks": "domains the hybrid strategy served by the walk (window full)",
}

_READ = 20.0  # a descriptor or p2m entry read that misses L1 and hits L2 (Cortex-A15 class)
_PTE_WRITE = 25.0  # write_pte: a 64-bit store followed by a DSB

#: Default cycles per counted event. Assumptions (a Cortex-A15-class core; see WEIGHT_NOTES):
#: the numbers are deliberately round, the docs show which conclusions survive changing them.
DEFAULT_WEIGHTS: dict[str, float] = {
    "hyp_walk_reads": _READ,
    "hyp_tlb_misses": 10.0,
    "xen_hot_walk_reads": _READ,
    "xen_hot_tlb_misses": 10.0,
    "guest_tlb_misses": 2 * _READ,
    "vlpt_reads": _READ,
    "vlpt_writes": _READ,
    "walk_p2m_reads": _READ,
    "walk_p2m_writes": _READ,
    "switch_scan_reads": 3.0,
    "xen_second_writes": _PTE_WRITE,
    "xen_pte_writes": _PTE_WRITE,
    "p2m_pte_writes": 10.0,
    "map_domain_page": 30.0,
    "domheap_unmaps": 15.0,
    "directmap_maps": 1.0,
    "tlbi:TLBIMVAH": 15.0,
    "tlbi:TLBIMVAHIS": 60.0,
    "tlbi:TLBIALLH": 50.0,
    "tlbi:TLBIALLHIS": 150.0,
    "tlbi:TLBIALL": 50.0,
    "tlbi:TLBIALLIS": 150.0,
}

#: Why each default weight is what it is.
WEIGHT_NOTES: dict[str, str] = {
    "hyp_walk_reads": "one descriptor read by the table walker, L2 cache hit",
    "hyp_tlb_misses": "walk start-up beyond its reads",
    "xen_hot_walk_reads": "as hyp_walk_reads (Xen's own pages)",
    "xen_hot_tlb_misses": "as hyp_tlb_misses",
    "guest_tlb_misses": "a stage-2 refill, two descriptor reads",
    "vlpt_reads": "p2m entries are rarely in L1: L2 hit",
    "vlpt_writes": "as vlpt_reads",
    "walk_p2m_reads": "as vlpt_reads",
    "walk_p2m_writes": "as vlpt_reads",
    "switch_scan_reads": "sequential scan: one L2 line fill per 8 entries",
    "xen_second_writes": "write_pte: store + DSB",
    "xen_pte_writes": "write_pte: store + DSB",
    "p2m_pte_writes": "mostly bulk stores (enable, clean); barriers are paid by the TLBI",
    "map_domain_page": "IRQ save/restore, hash probe, refcount (its PTE write and TLBI apart)",
    "domheap_unmaps": "read-modify-write of the slot's refcount",
    "directmap_maps": "address arithmetic",
    "tlbi:TLBIMVAH": "local by-VA invalidate, its share of the batch's DSB/ISB",
    "tlbi:TLBIMVAHIS": "broadcast: every core must acknowledge",
    "tlbi:TLBIALLH": "local full hyp invalidate (the refills are counted apart)",
    "tlbi:TLBIALLHIS": "broadcast full hyp invalidate",
    "tlbi:TLBIALL": "local invalidate of one VMID",
    "tlbi:TLBIALLIS": "broadcast invalidate of one VMID",
}


def _known(name: str) -> bool:
    return name in COUNTERS or name in EXTRA_COUNTERS or name.startswith("tlbi:")


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``"name=cycles,name=cycles"`` into weights (overrides of the defaults).

    Raises RangeError for a ``text`` that is not a str, a malformed item, an unknown counter
    name or a negative weight.
    """
    if not isinstance(text, str):
        raise RangeError(f"parse_weights({text!r}): expected a str")
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not _known(name):
            raise RangeError(f"weight {item!r}: expected counter=cycles with a known counter")
        try:
            cycles = float(value)
        except ValueError:
            raise RangeError(f"weight {item!r}: {value!r} is not a number") from None
        if not cycles >= 0 or math.isinf(cycles):
            raise RangeError(f"weight {item!r}: expected a finite number >= 0")
        out[name] = cycles
    return out


def _weights(overrides: Mapping[str, float] | None) -> dict[str, float]:
    if overrides is not None and not isinstance(overrides, Mapping):
        raise RangeError(f"weights={overrides!r}: expected a mapping of counter names to cycles")
    weights = dict(DEFAULT_WEIGHTS)
    for name, value in (overrides or {}).items():
        if not _known(name):
            raise RangeError(f"weights: unknown counter {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise RangeError(f"weights: {name}={value!r}, expected a number >= 0")
        weights[name] = float(value)
    return weights


def cost(counts: Mapping[str, int], weights: Mapping[str, float] | None = None) -> float:
    """Cycles of ``counts`` under ``weights`` (defaults overridden by the given ones):
    ``sum(weights[k] * counts[k])``. Raises RangeError for an unknown or negative weight, or
    ``counts`` that are not a mapping of names to ints."""
    if not isinstance(counts, Mapping) or not all(
        isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool)
        for k, n in counts.items()
    ):
        raise RangeError(f"cost({counts!r}): expected a mapping of counter names to ints")
    w = _weights(weights)
    return sum(w.get(name, 0.0) * n for name, n in counts.items())


@attrs.frozen
class Result:
    """One strategy on one workload.

    ``counts``: the ledger after the run (names as ``xen.ledger.counts``); ``switch_counts``,
    ``migration_counts``: the parts spent in context switches and in migration bookkeeping;
    ``cycles``: the weighted total; ``stats``: writes, rounds, pages sent, refusals.
    ``supported`` is False when an enable was refused (window too small): the run then did
    not track every domain it should have and is not comparable.
    """

    strategy: str
    counts: dict[str, int]
    switch_counts: dict[str, int]
    migration_counts: dict[str, int]
    stats: dict[str, float]
    weights: dict[str, float]

    @property
    def faults(self) -> int:
        """Log-dirty write faults taken."""
        return self.counts.get("faults", 0)

    @property
    def switches(self) -> int:
        """Context switches done."""
        return self.counts.get("context_switches", 0)

    @property
    def supported(self) -> bool:
        """True unless the strategy refused to track a domain."""
        return self.stats.get("refused", 0) == 0

    @property
    def cycles(self) -> float:
        """Weighted cost of everything counted."""
        return cost(self.counts, self.weights)

    @property
    def switch_cycles(self) -> float:
        """Weighted cost of the context switches (and the refills right after them)."""
        return cost(self.switch_counts, self.weights)

    @property
    def migration_cycles(self) -> float:
        """Weighted cost of migration bookkeeping (enable, peek/clean, disable)."""
        return cost(self.migration_counts, self.weights)

    @property
    def per_fault(self) -> float:
        """Cycles per write fault, context switches amortised over the faults they serve:
        ``(cycles - migration_cycles) / faults`` (inf without faults). Migration bookkeeping
        (write-protecting all RAM at enable, cleaning) is left out: it is nearly the same
        for every strategy and would only dilute the differences; it stays in ``cycles``."""
        if not self.faults:
            return math.inf
        return (self.cycles - self.migration_cycles) / self.faults

    @property
    def handler_per_fault(self) -> float:
        """Cycles outside switches and migration bookkeeping, per fault (inf without
        faults): the fault handler's own cost, TLB misses included."""
        if not self.faults:
            return math.inf
        return (self.cycles - self.migration_cycles - self.switch_cycles) / self.faults

    @property
    def per_switch(self) -> float:
        """Switch cycles per context switch (0 without switches)."""
        return self.switch_cycles / self.switches if self.switches else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: raw counts beside cycles (inf becomes None)."""

        def num(x: float) -> float | None:
            return None if math.isinf(x) else round(x, 2)

        return {
            "strategy": self.strategy,
            "supported": self.supported,
            "cycles": num(self.cycles),
            "per_fault": num(self.per_fault),
            "handler_per_fault": num(self.handler_per_fault),
            "migration_cycles": num(self.migration_cycles),
            "per_switch": num(self.per_switch),
            "counts": dict(sorted(self.counts.items())),
            "switch_counts": dict(sorted(self.switch_counts.items())),
            "migration_counts": dict(sorted(self.migration_counts.items())),
            "stats": self.stats,
        }


def _check_workload(workload: object) -> None:
    if not isinstance(workload, Workload):
        raise RangeError(f"workload={workload!r}: expected a Workload")


def _all_of(values: Any, kinds: Any, what: str) -> list[Any]:
    """``values`` as a list, RangeError unless it is an iterable (not a str) of ``kinds``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise RangeError(f"{what}: {values!r} is not a sequence")
    items = list(values)
    if not all(isinstance(v, kinds) for v in items):
        raise RangeError(f"{what}: {values!r} holds a value of the wrong type")
    return items


def _check_strategies(strategies: Iterable[str]) -> list[str]:
    if isinstance(strategies, (str, bytes)) or not isinstance(strategies, Iterable):
        raise RangeError(f"strategies={strategies!r}: expected a sequence of strategy names")
    names = list(strategies)
    for name in names:
        if not isinstance(name, str) or name not in LOOKUPS:
            raise RangeError(f"unknown strategy {name!r}; expected one of {', '.join(LOOKUPS)}")
    if not names:
        raise RangeError("compare: no strategy given")
    return names


def run_strategy(
    workload: Workload,
    strategy: str,
    *,
    capacity: int | None = None,
    weights: Mapping[str, float] | None = None,
    tlb_entries: int = 512,
) -> Result:
    """Run ``workload`` on a fresh Xen using ``strategy``; return its :class:`Result`.

    ``capacity``: window slots (see :data:`vaalloc.xen.lookup.LOOKUPS`). Raises
    RangeError for a ``workload`` that is not a Workload, an unknown strategy, bad capacity
    or weight. Deterministic for a seed.
    """
    _check_workload(workload)
    _check_strategies([strategy])
    w = _weights(weights)
    xen = Xen(workload.pcpus, lookup=strategy, capacity=capacity, tlb_entries=tlb_entries)
    stats = run_workload(xen, workload)
    counts = {k: v for k, v in xen.ledger.counts.items() if v}
    teardown(xen)
    plain = attrs.asdict(stats, filter=lambda a, _: not a.name.endswith("_counts"))
    return Result(
        strategy=strategy,
        counts=counts,
        switch_counts=dict(stats.switch_counts),
        migration_counts=dict(stats.migration_counts),
        stats=plain,
        weights=w,
    )


def compare(
    workload: Workload,
    strategies: Sequence[str] = ARM32 + ARM64,
    *,
    capacity: int | None = None,
    weights: Mapping[str, float] | None = None,
    tlb_entries: int = 512,
) -> list[Result]:
    """:func:`run_strategy` for each of ``strategies`` on the same workload and seed. Raises
    as :func:`run_strategy`, before running any."""
    _check_workload(workload)
    names = _check_strategies(strategies)
    _weights(weights)
    return [
        run_strategy(workload, s, capacity=capacity, weights=weights, tlb_entries=tlb_entries)
        for s in names
    ]


def winner(results: Sequence[Result]) -> Result | None:
    """The supported result with the lowest :attr:`Result.per_fault` (None if none is).
    Raises RangeError for ``results`` that are not Results."""
    results = _all_of(results, Result, "winner")
    ok = [r for r in results if r.supported and r.faults]
    return min(ok, key=lambda r: r.per_fault) if ok else None


@attrs.frozen
class SweepPoint:
    """The results at one (switch rate, log-dirty domains, capacity) point."""

    switch_rate: float
    logdirty: int
    capacity: int | None
    results: tuple[Result, ...]

    def result(self, strategy: str) -> Result:
        """The result of ``strategy``; RangeError if it was not run."""
        for r in self.results:
            if r.strategy == strategy:
                return r
        raise RangeError(f"strategy {strategy!r} not in this sweep point")


def sweep(
    strategies: Sequence[str],
    *,
    rates: Sequence[float] = (10, 100, 1000, 3000),
    logdirty: Sequence[int] = (1, 2),
    capacities: Sequence[int | None] = (None,),
    domains: int = 4,
    weights: Mapping[str, float] | None = None,
    **workload: Any,
) -> list[SweepPoint]:
    """Run every strategy at every point of rates x logdirty x capacities.

    The workload at each point is ``Workload.standard(domains=..., logdirty=..,
    switch_rate=.., **workload)`` with the same seed, so points differ only where asked.
    Cost: len(rates) * len(logdirty) * len(capacities) * len(strategies) runs. Raises
    RangeError for a bad strategy, value or weight (checked before the first run).
    """
    names = _check_strategies(strategies)
    _weights(weights)
    for label, values, kinds in (
        ("rates", rates, (int, float)),
        ("logdirty", logdirty, (int,)),
        ("capacities", capacities, (int, type(None))),
    ):
        items = _all_of(values, kinds, f"sweep({label}=...)")
        if not items or any(isinstance(v, bool) for v in items):
            raise RangeError(f"sweep: {label}={values!r}: expected a non-empty sequence")
        if label == "rates" and not all(v > 0 for v in items):
            raise RangeError(f"sweep: rates={values!r}: expected rates > 0")
    points: list[SweepPoint] = []
    for cap in capacities:
        for ld in logdirty:
            for rate in rates:
                w = Workload.standard(domains=domains, logdirty=ld, switch_rate=rate, **workload)
                results = compare(w, names, capacity=cap, weights=weights)
                points.append(SweepPoint(float(rate), ld, cap, tuple(results)))
    return points


@attrs.frozen
class Crossover:
    """Strategies ``a`` and ``b`` swap places between ``rate_lo`` and ``rate_hi`` (switches
    per second per pCPU); ``rate`` is the log-linear interpolation of the crossing."""

    logdirty: int
    capacity: int | None
    a: str
    b: str
    rate_lo: float
    rate_hi: float
    rate: float
    below: str  # cheaper below the crossing
    above: str  # cheaper above it


def crossovers(points: Sequence[SweepPoint]) -> list[Crossover]:
    """Every place along the switch-rate axis where two supported strategies swap order by
    :attr:`Result.per_fault`, for each (log-dirty domains, capacity) series. The arm32 walk
    and the arm64 walk are not compared with each other (no Xen has both). Raises RangeError
    for ``points`` that are not SweepPoints."""
    points = _all_of(points, SweepPoint, "crossovers")
    series: dict[tuple[int, int | None], list[SweepPoint]] = {}
    for p in points:
        series.setdefault((p.logdirty, p.capacity), []).append(p)
    out: list[Crossover] = []
    for (ld, cap), pts in series.items():
        pts = sorted(pts, key=lambda p: p.switch_rate)
        names = [r.strategy for r in pts[0].results]
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                arch_a, arch_b = _ONLY_ON.get(a), _ONLY_ON.get(b)
                if arch_a and arch_b and arch_a != arch_b:
                    continue
                out.extend(_crossings(pts, ld, cap, a, b))
    return out


def _crossings(
    pts: Sequence[SweepPoint], ld: int, cap: int | None, a: str, b: str
) -> list[Crossover]:
    found: list[Crossover] = []
    for lo, hi in itertools.pairwise(pts):
        ra, rb, ha, hb = lo.result(a), lo.result(b), hi.result(a), hi.result(b)
        if not all(r.supported and r.faults for r in (ra, rb, ha, hb)):
            continue
        d_lo, d_hi = ra.per_fault - rb.per_fault, ha.per_fault - hb.per_fault
        if d_lo == 0 or d_hi == 0 or (d_lo < 0) == (d_hi < 0):
            continue
        x_lo, x_hi = math.log(lo.switch_rate), math.log(hi.switch_rate)
        x = x_lo + (x_hi - x_lo) * d_lo / (d_lo - d_hi)
        below, above = (a, b) if d_lo < 0 else (b, a)
        found.append(
            Crossover(ld, cap, a, b, lo.switch_rate, hi.switch_rate, math.exp(x), below, above)
        )
    return found


def totals(results: Iterable[Result]) -> Counter[str]:
    """Sum of the raw counts of ``results`` (for reports). Raises RangeError for ``results``
    that are not Results."""
    results = _all_of(results, Result, "totals")
    out: Counter[str] = Counter()
    for r in results:
        out.update(r.counts)
    return out
