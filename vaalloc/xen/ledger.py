"""The cost ledger: named counters of what the Xen model spent.

The thread's open question ("it may be that this is something which we can only resolve by
measuring") is about *counts*, not Python seconds: how many ``xen_second`` writes a context
switch costs, how many TLB maintenance operations a fault needs, how many memory reads a p2m
lookup takes.  Every layer of :mod:`vaalloc.xen` adds to one :class:`Ledger` so strategies can
be compared on the same workload.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from vaalloc.errors import RangeError

__all__ = ["COUNTERS", "Ledger"]

#: The counters every strategy reports, with what each one counts.
COUNTERS: dict[str, str] = {
    "xen_second_writes": "descriptor writes into the shared xen_second table (VLPT slots, loop)",
    "xen_pte_writes": "descriptor writes into Xen's other tables (vmap, domheap, xenheap)",
    "p2m_pte_writes": "descriptor writes into a domain's p2m (log-dirty, splits, builds)",
    "vlpt_reads": "p2m entries the fault handler read through a Xen virtual address",
    "vlpt_writes": "p2m entries the fault handler wrote through a Xen virtual address",
    "hyp_tlb_misses": "hyp (Xen) TLB misses taken by reads through a Xen virtual address",
    "hyp_walk_reads": "descriptor reads done by the hyp walker on those misses",
    "guest_tlb_misses": "guest stage-2 TLB misses on guest accesses",
    "faults": "stage-2 permission faults taken by guest writes",
    "spurious_faults": "faults found already resolved (another CPU got there first)",
    "superpage_splits": "2MB p2m blocks split into 512 pages by the fault handler",
    "context_switches": "calls of context_switch",
    "context_switch_slot_writes": "xen_second writes done by context switches",
    "context_switch_tlbi": "TLB maintenance operations done by context switches",
    "map_domain_page": "map_domain_page calls",
}


#: ``op -> "tlbi:" + op``, made once per name (the fault path counts a TLBIALL per fault).
_TLBI_NAMES: dict[str, str] = {}


class Ledger:
    """A bag of named, monotonically increasing counters.

    ``counts`` is a ``collections.defaultdict(int)``, so an unknown name reads as 0 (a
    ``defaultdict`` rather than a ``Counter``: its ``+=`` costs half as much, and the fault
    path counts a dozen things per fault).  TLB
    maintenance is counted as ``"tlbi:<architectural name>"`` (one per operation *issued*; a
    broadcast ``...IS`` operation counts once however many CPUs it reaches).
    """

    def __init__(self) -> None:
        self.counts: defaultdict[str, int] = defaultdict(int)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` (an int >= 0: counters only grow) to counter ``name`` (a str). O(1).
        Raises RangeError otherwise."""
        if name.__class__ is not str or n.__class__ is not int or n < 0:
            raise RangeError(f"Ledger.add({name!r}, {n!r}): expected a name and an int >= 0")
        self.counts[name] += n

    def tlbi(self, op: str, n: int = 1) -> None:
        """Count ``n`` TLB maintenance operations named ``op`` (e.g. ``"TLBIMVAHIS"``).
        Raises RangeError for an ``op`` that is not a str or an ``n`` that is not an int >= 0."""
        if op.__class__ is not str or n.__class__ is not int or n < 0:
            raise RangeError(f"Ledger.tlbi({op!r}, {n!r}): expected a name and an int >= 0")
        name = _TLBI_NAMES.get(op)
        if name is None:
            name = _TLBI_NAMES[op] = "tlbi:" + op
        counts = self.counts
        counts[name] += n
        counts["tlbi"] += n

    def snapshot(self) -> dict[str, int]:
        """A copy of every non-zero counter (for before/after comparisons)."""
        return {k: v for k, v in self.counts.items() if v}

    def since(self, before: Mapping[str, int]) -> dict[str, int]:
        """The counters that grew since ``before`` (a :meth:`snapshot`), with their growth.
        Raises RangeError for a ``before`` that is not a mapping of names to ints."""
        if not isinstance(before, Mapping) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in before.items()
        ):
            raise RangeError(f"Ledger.since({before!r}): expected a snapshot()")
        return {k: v - before.get(k, 0) for k, v in self.counts.items() if v != before.get(k, 0)}

    @contextmanager
    def measure(self) -> Iterator[dict[str, int]]:
        """Context manager yielding a dict filled, on exit, with the growth inside the block."""
        before = self.snapshot()
        delta: dict[str, int] = {}
        try:
            yield delta
        finally:
            delta.update(self.since(before))

    def reset(self) -> None:
        """Zero every counter."""
        self.counts.clear()

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()) if v)
        return f"Ledger({body})"
