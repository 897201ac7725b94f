"""The p2m lookup strategies: how the log-dirty fault handler reaches a guest's p2m entries.

One registry, :data:`LOOKUPS`, maps a strategy's name to its factory; ``Xen(lookup=NAME)`` builds
that strategy at boot (or takes a factory of your own: any callable ``f(core, capacity=None)``
returning a :class:`P2MLookup`). Every strategy implements :class:`P2MLookup`.

==============  ===========================================================================
 name            strategy
==============  ===========================================================================
 partitioned     per-domain runs of window slots, installed at enable (partitioned.py)
 switched        per-CPU window rewritten at switch, full hyp flush (TLBIALLH)
 switched-va     the same, one TLBIMVAH per page that was valid
 switched-auto   per-VA up to 33 pages, else TLBIALLH
 switched-lazy   switched, but a plain domain following a log-dirty one leaves the window
 walk            map_domain_page walk per lookup, arm32 domheap (walk.py)
 walk64          the same walk over arm64's direct map
 hybrid          partitioned while the window has room, walk for the domains that do not fit
==============  ===========================================================================

``capacity`` is the window size in slots: the partitioned window's usable slots (default 63),
a switched CPU's sub-window (default 63 // cpus); the walks ignore it.
"""

from __future__ import annotations

from typing import Protocol

from vaalloc.errors import RangeError
from vaalloc.xen.hypervisor import Hypervisor
from vaalloc.xen.lookup.base import P2MLookup
from vaalloc.xen.lookup.hybrid import HybridLookup
from vaalloc.xen.lookup.partitioned import PartitionedVLPT, SlotRun, limit_window, new_window
from vaalloc.xen.lookup.switched import FLUSH_MODES, SwitchedVLPT
from vaalloc.xen.lookup.walk import DirectMapWalk, DomheapWalk

__all__ = [
    "FLUSH_MODES",
    "LOOKUPS",
    "DirectMapWalk",
    "DomheapWalk",
    "HybridLookup",
    "LookupFactory",
    "P2MLookup",
    "PartitionedVLPT",
    "SlotRun",
    "SwitchedVLPT",
    "lookup_factory",
    "new_window",
]


class LookupFactory(Protocol):
    """What builds a strategy for a booting Xen: ``factory(core, capacity=None)``."""

    def __call__(self, core: Hypervisor, *, capacity: int | None = None) -> P2MLookup: ...


def _partitioned(core: Hypervisor, *, capacity: int | None = None) -> P2MLookup:
    lookup = PartitionedVLPT(core)
    limit_window(lookup, capacity)
    return lookup


def _switched(flush: str, lazy: bool = False) -> LookupFactory:
    def make(core: Hypervisor, *, capacity: int | None = None) -> P2MLookup:
        return SwitchedVLPT(core, flush=flush, capacity=capacity, lazy=lazy)

    return make


def _walk(core: Hypervisor, *, capacity: int | None = None) -> P2MLookup:
    return DomheapWalk(core)


def _walk64(core: Hypervisor, *, capacity: int | None = None) -> P2MLookup:
    return DirectMapWalk(core)


def _hybrid(core: Hypervisor, *, capacity: int | None = None) -> P2MLookup:
    return HybridLookup(core, capacity=capacity)


#: Strategy name -> factory, the one registry (see the module docstring for what each is).
LOOKUPS: dict[str, LookupFactory] = {
    "partitioned": _partitioned,
    "switched": _switched("all"),
    "switched-va": _switched("va"),
    "switched-auto": _switched("auto"),
    "switched-lazy": _switched("all", lazy=True),
    "walk": _walk,
    "walk64": _walk64,
    "hybrid": _hybrid,
}


def lookup_factory(lookup: object) -> LookupFactory:
    """The factory ``lookup`` names (a key of :data:`LOOKUPS`), or ``lookup`` itself when it is
    a callable. Raises RangeError for anything else, naming the choices."""
    if isinstance(lookup, str):
        factory = LOOKUPS.get(lookup)
        if factory is not None:
            return factory
    elif callable(lookup):
        return lookup
    raise RangeError(f"lookup={lookup!r}: expected one of {', '.join(LOOKUPS)} or a factory")
