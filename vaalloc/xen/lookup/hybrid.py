"""The ``hybrid`` p2m lookup: the partitioned VLPT while it has room, the walk as fallback.

The partitioned window holds 63GB of guest IPA at once (63 slots of 1GB). A domain whose run
of slots does not fit would make ``logdirty.enable`` fail with OutOfSpace; here it falls back
to the ``map_domain_page`` walk (:class:`vaalloc.xen.lookup.walk.DomheapWalk`) instead, and keeps
it until log-dirty is disabled. Domains that got slots pay the VLPT's costs (none at switch),
the others the walk's (three map/unmap pairs per fault). No context switch ever writes a slot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaalloc.errors import OutOfSpace
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.lookup.base import P2MLookup
from vaalloc.xen.lookup.partitioned import PartitionedVLPT, limit_window
from vaalloc.xen.lookup.walk import DomheapWalk

if TYPE_CHECKING:
    from vaalloc.xen.domain import Domain

__all__ = ["HybridLookup"]


class HybridLookup(P2MLookup):
    """Partitioned VLPT for the domains that fit its window, walk for the rest.

    ``capacity`` limits the window's usable slots (default all 63). ``walked`` holds the
    domids using the walk. Raises RangeError for a bad capacity.
    """

    name = "hybrid"

    def __init__(self, core: Hypervisor, *, capacity: int | None = None) -> None:
        self.core = check_core(core, "HybridLookup")
        self.vlpt = PartitionedVLPT(core)
        limit_window(self.vlpt, capacity)
        self.walk = DomheapWalk(core)
        self.walked: set[int] = set()

    def _for(self, d: Domain) -> P2MLookup:
        return self.walk if d.domid in self.walked else self.vlpt

    def reserve(self, d: Domain) -> None:
        """Take window slots for ``d`` if a run fits, else choose the walk (never raises
        OutOfSpace)."""
        try:
            self.vlpt.reserve(d)
        except OutOfSpace:
            self.walked.add(d.domid)
            self.core.ledger.add("fallback_walks")

    def on_enable(self, d: Domain) -> None:
        """Install ``d``'s slots (nothing for a walked domain)."""
        self._for(d).on_enable(d)

    def on_disable(self, d: Domain) -> None:
        """Remove ``d``'s slots or forget its walk."""
        self._for(d).on_disable(d)
        self.walked.discard(d.domid)

    def on_p2m_change(self, d: Domain, level: int, ipa: int, old: int, new: int) -> None:
        """Forward to the strategy serving ``d``."""
        self._for(d).on_p2m_change(d, level, ipa, old, new)

    def read_second(self, cpu: int, d: Domain, ipa: int) -> int:
        """The level-2 entry, through the window or the walk."""
        return self._for(d).read_second(cpu, d, ipa)

    def read_leaf(self, cpu: int, d: Domain, ipa: int) -> int:
        """The leaf, through the window or the walk."""
        return self._for(d).read_leaf(cpu, d, ipa)

    def write_leaf(self, cpu: int, d: Domain, ipa: int, value: int) -> None:
        """Store the leaf, through the window or the walk."""
        self._for(d).write_leaf(cpu, d, ipa, value)

    def release(self, cpu: int) -> None:
        """See :meth:`DomheapWalk.release`. Raises RangeError for a bad CPU."""
        self.walk.release(cpu)

    def check(self) -> None:
        """Check both halves (see :meth:`PartitionedVLPT.check`, :meth:`DomheapWalk.check`)."""
        self.vlpt.check()
        self.walk.check()
