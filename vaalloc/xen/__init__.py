"""The Xen-on-ARM32 model: Xen's memory map and tables, vmap, domheap, domains and their p2m,
the per-domain VLPT window, log-dirty tracking, context switch and the cost ledger.

Start with :class:`Xen`; docs/vlpt.md explains the VLPT arithmetic and the log-dirty path.
"""

from __future__ import annotations

from vaalloc.xen.domain import Domain
from vaalloc.xen.ledger import COUNTERS, Ledger
from vaalloc.xen.system import Xen
from vaalloc.xen.vlpt import P2MLookup, PartitionedVLPT, SlotRun

__all__ = ["COUNTERS", "Domain", "Ledger", "P2MLookup", "PartitionedVLPT", "SlotRun", "Xen"]
