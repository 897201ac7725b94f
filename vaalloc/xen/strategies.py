"""The p2m lookup strategies by name, and how to put one into a :class:`~vaalloc.xen.Xen`.

``Xen(lookup=...)`` knows only ``"partitioned"`` today; :func:`make_xen` boots a Xen and swaps
its lookup for any strategy here *before any domain exists*, which is the one moment the swap
is safe (the old strategy holds no state yet; the loop slot is installed by Xen's tables, not
by the strategy). Every strategy implements :class:`vaalloc.xen.vlpt.P2MLookup`.

==============  ===========================================================================
 name            strategy
==============  ===========================================================================
 partitioned     per-domain runs of window slots, installed at enable (vlpt.py)
 switched        per-CPU window rewritten at switch, full hyp flush (TLBIALLH)
 switched-va     the same, one TLBIMVAH per page that was valid
 switched-auto   per-VA up to 33 pages, else TLBIALLH
 switched-lazy   switched, but a plain domain following a log-dirty one leaves the window
 walk            map_domain_page walk per lookup, arm32 domheap (p2mwalk.py)
 walk64          the same walk over arm64's direct map
 hybrid          partitioned while the window has room, walk for the domains that do not fit
==============  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vaalloc.errors import RangeError
from vaalloc.xen.p2mwalk import DirectMapWalk, DomheapWalk
from vaalloc.xen.switched import SwitchedVLPT
from vaalloc.xen.system import Xen
from vaalloc.xen.vlpt import P2MLookup, PartitionedVLPT

__all__ = ["STRATEGIES", "install_lookup", "make_lookup", "make_xen"]

Factory = Callable[..., P2MLookup]


def _switched(flush: str, lazy: bool = False) -> Factory:
    def make(xen: Xen, *, capacity: int | None = None) -> P2MLookup:
        return SwitchedVLPT(xen, flush=flush, capacity=capacity, lazy=lazy)

    return make


def _partitioned(xen: Xen, *, capacity: int | None = None) -> P2MLookup:
    lookup = PartitionedVLPT(xen)
    limit_window(lookup, capacity)
    return lookup


def _walk(xen: Xen, *, capacity: int | None = None) -> P2MLookup:
    return DomheapWalk(xen)


def _walk64(xen: Xen, *, capacity: int | None = None) -> P2MLookup:
    return DirectMapWalk(xen)


def _hybrid(xen: Xen, *, capacity: int | None = None) -> P2MLookup:
    from vaalloc.xen.hybrid import HybridLookup

    return HybridLookup(xen, capacity=capacity)


#: name -> factory ``f(xen, capacity=None)``. ``capacity`` is the window size in slots: the
#: partitioned window's usable slots (default 63), a switched CPU's sub-window (default
#: 63 // cpus); the walks ignore it.
STRATEGIES: dict[str, Factory] = {
    "partitioned": _partitioned,
    "switched": _switched("all"),
    "switched-va": _switched("va"),
    "switched-auto": _switched("auto"),
    "switched-lazy": _switched("all", lazy=True),
    "walk": _walk,
    "walk64": _walk64,
    "hybrid": _hybrid,
}


def limit_window(lookup: PartitionedVLPT, capacity: int | None) -> None:
    """Shrink a fresh partitioned window to ``capacity`` usable slots by reserving the rest
    (the highest ones below the loop). None keeps all 63. Raises RangeError outside 1..63."""
    if capacity is None:
        return
    total = lookup.window.stats().free
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= total:
        raise RangeError(f"partitioned capacity {capacity!r}: expected 1..{total} slots")
    if capacity < total:
        first_unused = lookup.window.start + capacity * lookup.window.granule
        lookup.window.reserve(first_unused, total - capacity)


def make_lookup(xen: Xen, name: str, **options: Any) -> P2MLookup:
    """Build strategy ``name`` for ``xen`` (options: ``capacity``). Raises RangeError for an
    unknown name or bad option."""
    factory = STRATEGIES.get(name)
    if factory is None:
        raise RangeError(f"unknown lookup strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    return factory(xen, **options)


def install_lookup(xen: Xen, lookup: P2MLookup) -> None:
    """Make ``lookup`` the p2m lookup of ``xen``, which must have no domain yet.

    Re-bases ``xen.boot_frames`` (a strategy may allocate tables, e.g. arm64's direct map) so
    leak checks keep working. Raises RangeError if a domain exists (state would be lost) or
    ``lookup`` belongs to another Xen.
    """
    if xen.domains:
        raise RangeError(f"install_lookup: {len(xen.domains)} domain(s) exist; swap at boot only")
    if getattr(lookup, "xen", xen) is not xen:
        raise RangeError(f"install_lookup: {lookup.name} was built for another Xen")
    xen.lookup = lookup
    xen.boot_frames = xen.mem.frames_in_use


def make_xen(strategy: str, cpus: int = 2, *, capacity: int | None = None, **kw: Any) -> Xen:
    """Boot ``Xen(cpus, **kw)`` with lookup strategy ``strategy`` (a name of
    :data:`STRATEGIES`). Raises RangeError for a bad name or option."""
    xen = Xen(cpus, **kw)
    install_lookup(xen, make_lookup(xen, strategy, capacity=capacity))
    return xen
