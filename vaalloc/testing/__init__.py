"""vaalloc.testing: fuzz your own allocator or page-table walker against vaalloc.

Needs hypothesis (``pip install vaalloc[testing]``); ``import vaalloc`` never imports this
package.  See docs/testing.md ("Fuzz your port").

* :mod:`vaalloc.testing.strategies`: regions, requests and op traces shaped to reach
  exhaustion, Xen's bitmap growth and the last granule;
* :class:`DifferentialAllocatorMachine`: subclass it, name the policy, return an adapter
  (``alloc(nr, align) -> address | None``, ``free(address) -> granules``), and every step is
  checked against :class:`vaalloc.alloc.RangeAllocator`;
* :mod:`vaalloc.testing.walk`: random raw translation tables and :func:`check_walker`, which
  compares your walker's translation or fault (kind and level) with vaalloc's;
* :mod:`vaalloc.testing.fuzz`: the campaigns that ``vaalloc fuzz`` runs;
* :mod:`vaalloc.testing.reference`: plain reference ports (Xen's vmap, the generic policies).
"""

from __future__ import annotations

try:
    import hypothesis  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("vaalloc.testing needs hypothesis: pip install 'vaalloc[testing]'") from exc

from vaalloc.testing.alloc import (
    AllocatorAdapter,
    DifferentialAllocatorMachine,
    PortMismatch,
    RunStats,
    reference_allocator,
)
from vaalloc.testing.reference import IntervalModel, PlainXenVmap
from vaalloc.testing.strategies import AllocOp, Region, alloc_requests, op_traces, regions
from vaalloc.testing.walk import (
    RawTables,
    WalkMismatch,
    check_walker,
    raw_tables,
    walk_cases,
    walker_test,
)

__all__ = [
    "AllocOp",
    "AllocatorAdapter",
    "DifferentialAllocatorMachine",
    "IntervalModel",
    "PlainXenVmap",
    "PortMismatch",
    "RawTables",
    "Region",
    "RunStats",
    "WalkMismatch",
    "alloc_requests",
    "check_walker",
    "op_traces",
    "raw_tables",
    "reference_allocator",
    "regions",
    "walk_cases",
    "walker_test",
]
