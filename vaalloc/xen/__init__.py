"""The Xen-on-ARM32 model: Xen's memory map and tables, vmap, domheap, domains and their p2m,
the p2m lookup strategies (the per-domain VLPT window first), log-dirty tracking, context switch
and the cost ledger.

Layers inside the package (each imports only those before it; import-linter checks it):
``layout``/``ledger``/``vlptmath`` (constants and arithmetic), ``pagetables``/``p2m``/``domain``
(tables in memory), ``hypervisor`` (the core: memory, tables, CPUs, flushes), ``vmap``/``domheap``
(Xen's mappings), ``lookup`` (the strategies), ``logdirty``/``sched``, and ``system`` (the
:class:`Xen` facade). Start with :class:`Xen`; docs/vlpt.md explains the VLPT arithmetic and
the log-dirty path, docs/design.md the architecture.
"""

from __future__ import annotations

from vaalloc.xen.domain import Domain
from vaalloc.xen.hypervisor import Hypervisor
from vaalloc.xen.ledger import COUNTERS, Ledger
from vaalloc.xen.lookup import LOOKUPS, P2MLookup, PartitionedVLPT, SlotRun
from vaalloc.xen.system import Xen

__all__ = [
    "COUNTERS",
    "LOOKUPS",
    "Domain",
    "Hypervisor",
    "Ledger",
    "P2MLookup",
    "PartitionedVLPT",
    "SlotRun",
    "Xen",
]
