"""Xen's ``vm_alloc``/``vm_free`` (xen/common/vmap.c) over the generic allocator.

:class:`XenVmapAllocator` is what :meth:`RangeAllocator.xen_vmap
<vaalloc.alloc.RangeAllocator.xen_vmap>` returns.  It overrides the generic allocator's hooks
with Xen's rules and nothing else; the search itself is the extent index's first fit.

Geometry (``vm_init_type()``, Xen 4.23-dev, commit c447b7308b1330ec6dcfef37220736c28f41daa0,
file last changed by 19772b670426), in granules = bitmap bits, relative to the region start:

* ``vm_end``: granules in the region, one bitmap bit each;
* ``vm_low``: pages the *whole* bitmap needs, ``PFN_UP((vm_end + 7) / 8)``; those first pages of
  the region hold the bitmap itself and are marked used (``bitmap_fill``): the generic
  allocator's used prefix ``[0, vm_low)``, with a guard unit after it;
* ``vm_top``: bits covered by the bitmap pages mapped at boot, ``PFN_UP((vm_low + 7) / 8)`` pages
  of ``PAGE_SIZE * 8`` bits each.  ``vm_alloc`` maps one more page (``PAGE_SIZE * 8`` more bits)
  each time nothing fits below ``vm_top``, capping ``vm_top`` at ``vm_end``: the generic
  allocator's lazily grown window top.

Placement: Xen's loop is a first fit over holes in address order in which a hole starting at
the free bit ``s`` offers ``[s + 1, next_used - 1)`` (``[s + 1, vm_top)`` for the last hole),
aligned on the bit index: exactly the extent index's first fit with guards on, a guard after
the prefix and units counted from the region start.  ``vm_low`` is Xen's search hint; it never
changes a placement, and is kept exactly as Xen keeps it.

One deliberate difference: Xen does not cap the *initial* ``vm_top`` at ``vm_end``, so a region
smaller than one bitmap page's reach (32768 granules with 4 KiB pages) would let ``vm_alloc``
hand out addresses past the region's end.  Xen never builds such a region; vaalloc caps
``vm_top`` at ``vm_end`` so that it cannot happen (the plain reference port does the same).
"""

from __future__ import annotations

from typing import Any

import attrs

from vaalloc.alloc.allocator import Bad, RangeAllocator
from vaalloc.alloc.errors import Unsupported
from vaalloc.alloc.extents import ExtentIndex
from vaalloc.alloc.policies import XEN_VMAP, check_int
from vaalloc.errors import AlignmentError, OutOfSpace, RangeError

__all__ = ["XenGeometry", "XenVmapAllocator", "xen_align", "xen_geometry"]


@attrs.frozen
class XenGeometry:
    """Boot-time values of one Xen vmap region, in bitmap bits (= granules)."""

    vm_end: int
    vm_low: int
    vm_top: int
    step: int


def _pfn_up(nbytes: int, page: int) -> int:
    return (nbytes + page - 1) // page


def xen_geometry(granules: int, page_size: int) -> XenGeometry:
    """What ``vm_init_type`` computes for a region of ``granules`` pages of ``page_size``."""
    vm_end = granules
    vm_low = _pfn_up((vm_end + 7) // 8, page_size)
    nr = _pfn_up((vm_low + 7) // 8, page_size)
    step = page_size * 8
    vm_top = min(nr * step, vm_end)
    return XenGeometry(vm_end=vm_end, vm_low=min(vm_low, vm_end), vm_top=vm_top, step=step)


def xen_align(align: int) -> int:
    """Xen's alignment rule: 0 means 1; a non-power-of-two uses its lowest set bit
    (``ISOLATE_LSB``).  ``align`` must be >= 0."""
    if align == 0:
        return 1
    return align & -align


class XenVmapAllocator(RangeAllocator, policy=XEN_VMAP):
    """A :class:`RangeAllocator` whose ``alloc``/``free`` are Xen's ``vm_alloc``/``vm_free``.

    Build it with :meth:`RangeAllocator.xen_vmap` (or this constructor, same arguments).
    Units are bit indices relative to ``start``; the used prefix is the bitmap's pages, the
    window top is ``vm_top``.  Raises as the generic constructor.
    """

    __slots__ = ("_geometry", "_vm_low")

    def __init__(self, start: int, end: int, granule: int = 4096, name: str = "vmap") -> None:
        self._configure(start, end, granule, XEN_VMAP, True, name)
        geo = xen_geometry((end - start) // granule, granule)
        self._geometry = geo
        self._vm_low = geo.vm_low
        self._open(
            origin=start // granule,
            first=0,
            lo=geo.vm_low,
            top=geo.vm_top,
            hi=geo.vm_end,
            lead_guard=True,  # the bitmap pages are used: a guard bit follows them
        )

    # -- Xen's hints ------------------------------------------------------------------------

    @property
    def vm_low(self) -> int:
        """Xen's ``vm_low`` (a bit index; search hint, lowest known clear bit)."""
        return self._vm_low

    @property
    def vm_top(self) -> int:
        """Xen's ``vm_top`` (bits covered by the mapped bitmap pages)."""
        return self._index.top

    @property
    def vm_end(self) -> int:
        """Xen's ``vm_end`` (bits in the region)."""
        return self._geometry.vm_end

    # -- vm_alloc / vm_free -----------------------------------------------------------------

    def _alloc_locked(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        min_addr: int | None,
        max_addr: int | None,
    ) -> int:
        """``vm_alloc(nr, align)``: see :meth:`RangeAllocator.xen_vmap` for the rules.

        O(1).  Raises OutOfSpace when Xen returns NULL (changing nothing),
        RangeError/AlignmentError for bad ``nr``/``align``, and Unsupported for ``phase``,
        ``nocross``, ``min_addr`` or ``max_addr``.
        """
        who = self._label
        if phase or nocross or min_addr is not None or max_addr is not None:
            raise Unsupported(
                f"{who}: xen_vmap supports only nr and align (phase={phase!r}, "
                f"nocross={nocross!r}, min_addr={min_addr!r}, max_addr={max_addr!r})"
            )
        if nr.__class__ is not int or nr < 1:
            raise RangeError(f"{who}: nr={nr!r} must be an int of at least 1")
        if align.__class__ is not int:
            align = check_int(align, "align", who, error=AlignmentError)
        if align & (align - 1) or align <= 0:
            if align < 0:
                raise AlignmentError(f"{who}: align={align} is negative")
            align = xen_align(align)
        index = self._index
        found = index.first_fit(nr, align, 0, 0, None, None)
        if found is None:
            found = self._grow(nr, align)
        p, u = found
        # vm_alloc: "if ( start <= vm_low + 2 ) vm_low = bit;" (bit = start + nr)
        if u <= self._vm_low + 2:
            self._vm_low = u + nr
        index.take(p, u, nr)
        self._used += nr
        return (u + self._origin) * self._granule

    def _grow(self, nr: int, align: int) -> tuple[int, int]:
        """Nothing fits below ``vm_top``: grow it as Xen does, one bitmap page at a time, until
        the last hole holds the request; or raise OutOfSpace, changing nothing.

        Interior holes do not change when ``vm_top`` grows, so only the last hole (touching
        ``vm_top``) can start to fit; Xen's restarted scan finds exactly that hole, and the
        pages it maps on the way are computed at once.
        """
        geo = self._geometry
        index = self._index
        top = index.top
        last = index.run_before(top)
        tail, _ = index.hole_after(last)  # == top when the last run ends at vm_top
        u = (tail + align) & ~(align - 1)  # skip the hole's first bit, then align up
        need = u + nr
        if need > geo.vm_end or top >= geo.vm_end:
            raise OutOfSpace(
                f"{self._label}: no free run of nr={nr} granules (align={align}); "
                f"vm_top={top} vm_end={geo.vm_end}"
            )
        pages = -(-(need - top) // geo.step)
        index.set_top(min(top + pages * geo.step, geo.vm_end))
        return last, u

    def _release_run(self, u: int) -> int:
        if u < self._vm_low:
            # vm_free: vm_low drops to the first bit of the zero run holding u - 1.
            self._vm_low, _ = self._index.hole_after(self._index.run_before(u))
        nr = self._index.give(u)  # the generic _release_run, written out: the hot path
        self._used -= nr
        return nr

    def reserve(self, va: int, nr: int) -> int:
        """Not part of Xen's vmap interface.

        Raises:
            Unsupported: always.
        """
        raise Unsupported(f"{self._label}: reserve() is not part of Xen's vmap interface")

    # -- inspection -------------------------------------------------------------------------

    def _free_extents(self) -> tuple[int, int]:
        largest, holes = super()._free_extents()
        index = self._index
        if index.top < self._hi:
            # Past vm_top nothing is allocated yet: the last hole really runs to vm_end.
            tail, end = index.hole_after(index.run_before(index.top))
            largest = max(largest, self._hi - tail)
            if tail == end:
                holes += 1
        return largest, holes

    def _mode_problem(self, index: ExtentIndex, state: object) -> str | None:
        """Xen's invariants: ``vm_top`` a value Xen can reach, ``vm_low`` a hole start (or
        ``vm_top``) with only guard-sized holes below it (rule 5 of docs/allocator.md)."""
        geo = self._geometry
        vm_low = self._vm_low if state is None else state
        assert isinstance(vm_low, int)
        top = index.top
        first_top = geo.vm_top
        if not (top == geo.vm_end or (top - first_top) % geo.step == 0) or top < first_top:
            return f"vm_top={top} is not a reachable value"
        if not geo.vm_low <= vm_low <= top:
            return f"vm_low={vm_low} outside [{geo.vm_low}, {top}]"
        holes = [(s, e) for _, s, e in index.gaps()]
        if vm_low != top and vm_low not in {s for s, _ in holes}:
            return f"vm_low={vm_low} is neither vm_top nor the start of a hole"
        for s, e in holes:
            if e <= vm_low and e - s > 2:
                return f"hole [{s}, {e}) below vm_low is longer than two guard bits"
        return None

    # -- snapshot / restore -----------------------------------------------------------------

    def _snapshot_extra(self) -> dict[str, Any]:
        return {"xen": {"vm_low": self._vm_low, "vm_top": self._index.top}}

    def _restore_extra(self, snap: dict[str, Any], bad: Bad) -> tuple[int, object]:
        xen = snap["xen"]
        if not isinstance(xen, dict) or set(xen) != {"vm_low", "vm_top"}:
            raise bad("xen must be a dict with vm_low and vm_top")
        vm_low, top = xen["vm_low"], xen["vm_top"]
        for v in (vm_low, top):
            if isinstance(v, bool) or not isinstance(v, int):
                raise bad(f"xen field {v!r} is not an int")
        if not self._lo <= top <= self._hi:
            raise bad(f"vm_top={top} outside [{self._lo}, {self._hi}]")
        return top, vm_low

    def _install_extra(self, state: object) -> None:
        assert isinstance(state, int)
        self._vm_low = state
