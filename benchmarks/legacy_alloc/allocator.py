"""The generic range allocator: one instance hands out runs of granules from ``[start, end)``.

Design (what a C port keeps):

* the **bitmap** (:class:`~vaalloc.alloc.bitmap.ChunkedBitmap`) is the ground truth, one bit per
  granule, set = in use.  It is sparse, so the range may be 2**36 granules;
* the **free-extent index** (:class:`~vaalloc.alloc.extents.FreeIndex`) lists every hole and
  answers placement searches in O(log n) of the number of holes; ``check()`` proves it agrees
  with the bitmap;
* ``_live`` maps each allocation's first unit to its length, because with ``guard=False`` two
  allocations may touch and the bitmap alone cannot tell where one ends.

Units: inside the instance every position is a *unit* (a granule number).  Generic instances
use absolute granule numbers (``va // granule``), so ``align``/``phase``/``nocross`` are
absolute, as in vmem.  :meth:`RangeAllocator.xen_vmap` instances use bit numbers relative to
the region base, as Xen's bitmap does, so their alignment is index-relative, as in Xen.

Locking: one ``threading.Lock`` per instance, taken by every public call.  ``carve`` takes the
parent's lock only; ``release`` takes the child's, then the parent's (always child before
parent, so two threads cannot deadlock).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import attrs

from benchmarks.legacy_alloc.bitmap import ChunkedBitmap
from benchmarks.legacy_alloc.errors import InUse, Unsupported
from benchmarks.legacy_alloc.extents import FreeIndex, fit_in
from benchmarks.legacy_alloc.policies import (
    BEST_FIT,
    FIRST_FIT,
    INSTANT_FIT,
    POLICIES,
    XEN_VMAP,
    check_int,
    check_power_of_two,
)
from benchmarks.legacy_alloc.xenvmap import XenGeometry, xen_align, xen_geometry
from vaalloc.errors import (
    AlignmentError,
    InvalidFree,
    InvariantError,
    OutOfSpace,
    RangeError,
    SnapshotError,
)

__all__ = ["SNAPSHOT_FORMAT", "AllocStats", "RangeAllocator"]

#: The ``format`` field of every snapshot this version writes and accepts.
SNAPSHOT_FORMAT = "vaalloc.RangeAllocator/1"


@attrs.frozen
class AllocStats:
    """A consistent picture of one instance, in granules (``live``/``holes`` are counts).

    ``used`` counts every granule whose bit is set: allocations, reservations, carved children
    and, in Xen mode, the bitmap's own pages.  ``used + free == total`` always.
    """

    total: int
    used: int
    free: int
    largest_free: int
    live: int
    holes: int


class RangeAllocator:
    """Hands out and takes back runs of granules inside ``[start, end)``.

    ``start``/``end`` are byte addresses, multiples of ``granule`` (a power of two), with
    ``0 <= start < end``.  ``policy`` is ``"first-fit"``, ``"best-fit"`` or ``"instant-fit"``.
    With ``guard=True`` one free granule stays between any two allocations (Xen's vmap does the
    same so that an overrun faults); none is needed at the ends of the range.  ``name`` appears
    in every error message.

    Construction is O(1) and memory is proportional to what is allocated and fragmented, never
    to the size of the range.

    Raises:
        RangeError: a bound is not an int, negative, or ``end <= start``.
        AlignmentError: ``granule`` is not a power of two or a bound is not a multiple of it.
        ValueError (RangeError): unknown ``policy``.
    """

    __slots__ = (
        "__weakref__",
        "_bitmap",
        "_children",
        "_end",
        "_granule",
        "_guard",
        "_hi",
        "_index",
        "_label",
        "_live",
        "_lo",
        "_lock",
        "_name",
        "_origin",
        "_parent",
        "_policy",
        "_released",
        "_search",
        "_start",
        "_used",
        "_vm_low",
        "_xen",
    )

    def __init__(
        self,
        start: int,
        end: int,
        granule: int = 4096,
        policy: str = FIRST_FIT,
        guard: bool = True,
        name: str | None = None,
    ) -> None:
        self._setup(start, end, granule, policy, guard, name, xen=False)

    # -- construction -----------------------------------------------------------------------

    def _setup(
        self,
        start: int,
        end: int,
        granule: int,
        policy: str,
        guard: bool,
        name: str | None,
        *,
        xen: bool,
    ) -> None:
        label = name if isinstance(name, str) else f"RangeAllocator@{start!r}"
        who = f"allocator {label!r}"
        granule = check_power_of_two(granule, "granule", who)
        start = check_int(start, "start", who)
        end = check_int(end, "end", who)
        if start < 0 or end <= start:
            raise RangeError(f"{who}: range [{start:#x}, {end:#x}) is empty or negative")
        if start % granule or end % granule:
            raise AlignmentError(
                f"{who}: range [{start:#x}, {end:#x}) is not aligned to granule {granule:#x}"
            )
        if not isinstance(guard, bool):
            raise RangeError(f"{who}: guard must be a bool, got {guard!r}")
        if name is not None and not isinstance(name, str):
            raise RangeError(f"{who}: name must be a str or None, got {name!r}")
        if not xen and policy not in POLICIES:
            raise RangeError(f"{who}: unknown policy {policy!r}; expected one of {POLICIES}")
        self._name = label
        self._label = who
        self._start = start
        self._end = end
        self._granule = granule
        self._policy = XEN_VMAP if xen else policy
        self._guard = True if xen else guard
        self._parent: RangeAllocator | None = None
        self._released = False
        self._lock = threading.Lock()
        self._live: dict[int, int] = {}
        self._used = 0  # set bits, kept in step with the bitmap so stats() is O(1)
        self._children: dict[int, RangeAllocator] = {}
        self._bitmap = ChunkedBitmap()
        if xen:
            geo = xen_geometry((end - start) // granule, granule)
            self._xen: XenGeometry | None = geo
            self._origin = start // granule
            self._lo = geo.vm_low
            self._hi = geo.vm_end
            self._vm_low = geo.vm_low
            self._bitmap.set_run(0, geo.vm_low)  # the bitmap's own pages (bitmap_fill)
            self._used = geo.vm_low
            self._index = self._new_index(geo.vm_low, geo.vm_top)
            if geo.vm_low < geo.vm_top:
                self._index.add(geo.vm_low, geo.vm_top)
        else:
            self._xen = None
            self._origin = 0
            self._lo = start // granule
            self._hi = end // granule
            self._vm_low = 0
            self._index = self._new_index(self._lo, self._hi)
            self._index.add(self._lo, self._hi)
        self._bind_search()

    def _bind_search(self) -> None:
        """Bind the policy's search to the current index (again after every restore)."""
        self._search = {
            FIRST_FIT: self._index.first_fit,
            XEN_VMAP: self._index.first_fit,
            BEST_FIT: self._index.best_fit,
            INSTANT_FIT: self._index.instant_fit,
        }[self._policy]

    def _new_index(self, lo: int, hi: int) -> FreeIndex:
        return FreeIndex(
            lo,
            hi,
            guard=self._guard,
            guard_at_lo=self._xen is not None,
            use_classes=self._policy != BEST_FIT,
            use_by_len=self._policy == BEST_FIT,
            max_length=self._hi - self._lo,
        )

    @classmethod
    def xen_vmap(
        cls, start: int, end: int, granule: int = 4096, name: str = "vmap"
    ) -> RangeAllocator:
        """An instance whose ``alloc``/``free`` place exactly as Xen's ``vm_alloc``/``vm_free``.

        The rules (xen/common/vmap.c, Xen 4.23-dev; see docs/allocator.md for why each exists):
        the bitmap occupies the region's first ``ceil(bits / 8 / granule)`` pages, marked used;
        ``vm_top`` starts at the bits one bitmap page covers and grows by one page
        (``granule * 8`` bits) whenever nothing fits below it; alignment applies to the bit
        index relative to ``start`` and a non-power-of-two ``align`` uses its lowest set bit;
        the candidate start skips the first free bit of every hole (a guard before) and a fit
        needs ``start + nr < next_used_bit`` (a guard after) except at ``vm_top`` where
        ``<=`` suffices.  For ``[0x10000000, 0x40000000)`` ``vm_low`` is 6, ``vm_top`` 32768
        and the first ``alloc(1)`` returns ``0x10007000``.

        Each operation costs O(log n) in the number of holes (the search is Xen's first fit,
        answered by the free-extent index instead of a bitmap walk).  ``phase``, ``nocross``,
        ``min_addr``, ``max_addr`` and ``reserve`` are not part of Xen's interface and raise
        :class:`~vaalloc.alloc.errors.Unsupported`.  A failed ``alloc`` changes nothing here,
        while Xen leaves ``vm_top`` grown to ``vm_end``; placement is the same either way,
        because ``vm_top`` only bounds the last hole.

        Raises:
            RangeError, AlignmentError: as the constructor.
        """
        self: RangeAllocator = _XenVmapAllocator.__new__(_XenVmapAllocator)
        self._setup(start, end, granule, XEN_VMAP, True, name, xen=True)
        return self

    # -- read-only properties ---------------------------------------------------------------

    @property
    def start(self) -> int:
        """First byte address of the range."""
        return self._start

    @property
    def end(self) -> int:
        """First byte address past the range."""
        return self._end

    @property
    def granule(self) -> int:
        """Bytes per granule (the allocation unit)."""
        return self._granule

    @property
    def name(self) -> str:
        """The instance's name, used in every error message."""
        return self._name

    @property
    def policy(self) -> str:
        """``"first-fit"``, ``"best-fit"``, ``"instant-fit"`` or ``"xen-vmap"``."""
        return self._policy

    @property
    def guard(self) -> bool:
        """Whether a free granule is kept between allocations."""
        return self._guard

    @property
    def parent(self) -> RangeAllocator | None:
        """The instance this one was carved from, or None."""
        return self._parent

    @property
    def released(self) -> bool:
        """True once :meth:`release` has returned this carved range to its parent."""
        return self._released

    @property
    def vm_low(self) -> int:
        """Xen's ``vm_low`` (a bit index; search hint, lowest known clear bit).

        Raises Unsupported on a non-Xen instance."""
        self._require_xen("vm_low")
        return self._vm_low

    @property
    def vm_top(self) -> int:
        """Xen's ``vm_top`` (bits covered by the mapped bitmap pages).

        Raises Unsupported on a non-Xen instance."""
        self._require_xen("vm_top")
        return self._index.hi

    @property
    def vm_end(self) -> int:
        """Xen's ``vm_end`` (bits in the region).  Raises Unsupported on a non-Xen instance."""
        geo = self._require_xen("vm_end")
        return geo.vm_end

    def _require_xen(self, what: str) -> XenGeometry:
        if self._xen is None:
            raise Unsupported(f"{self._who()}: {what} exists only on xen_vmap instances")
        return self._xen

    def _who(self) -> str:
        return self._label

    def __repr__(self) -> str:
        return (
            f"RangeAllocator({self._start:#x}, {self._end:#x}, granule={self._granule:#x}, "
            f"policy={self._policy!r}, guard={self._guard}, name={self._name!r})"
        )

    # -- allocation -------------------------------------------------------------------------

    def alloc(
        self,
        nr: int,
        align: int = 1,
        *,
        phase: int = 0,
        nocross: int = 0,
        min_addr: int | None = None,
        max_addr: int | None = None,
    ) -> int:
        """Allocate ``nr`` granules and return the byte address of the first.

        Constraints (vmem's ``vmem_xalloc``), all in granules and absolute: the returned
        ``va`` has ``(va // granule - phase) % align == 0``; the run does not cross a multiple
        of ``nocross`` granules (0 = no constraint); it lies inside ``[min_addr, max_addr)``
        (bytes, ``max_addr`` exclusive).  The policy picks among the runs that satisfy them.

        Cost: O(log n) in the number of holes for an unconstrained request; see
        :mod:`vaalloc.alloc.extents` for the constrained cases.

        Raises:
            RangeError: ``nr`` < 1 or not an int; ``min_addr``/``max_addr`` outside the range
                or ``min_addr >= max_addr``; the instance was released.
            AlignmentError: ``align``/``nocross`` not a power of two, ``phase`` not in
                ``[0, align)``, an address bound not granule-aligned, or ``nr`` cannot fit
                between two ``nocross`` boundaries with this align/phase.
            OutOfSpace: no free run satisfies the request now.
            Unsupported: a constraint other than ``align`` on a xen_vmap instance.
        """
        lock = self._lock
        lock.acquire()  # explicit acquire/release: half the cost of "with" on CPython
        try:
            return self._alloc_locked(nr, align, phase, nocross, min_addr, max_addr)
        finally:
            lock.release()

    def _alloc_locked(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        min_addr: int | None,
        max_addr: int | None,
    ) -> int:
        """:meth:`alloc` with the lock held (also used by :meth:`carve`)."""
        if nr.__class__ is not int or nr < 1:
            raise RangeError(f"{self._label}: nr={nr!r} must be an int of at least 1")
        if align.__class__ is not int or align != 1:
            align = check_power_of_two(align, "align", self._label)
        if self._released:
            raise RangeError(f"{self._label} was released; it manages nothing")
        if phase or nocross:
            self._check_phase_nocross(nr, align, phase, nocross)
        lo_u = hi_u = None
        if min_addr is not None or max_addr is not None:
            lo_u, hi_u = self._window(min_addr, max_addr)
        index = self._index
        u = self._search(nr, align, phase, nocross, lo_u, hi_u)
        if u < 0:
            raise OutOfSpace(
                f"{self._label}: no free run of nr={nr} granules (align={align}, "
                f"phase={phase}, nocross={nocross}, min_addr={min_addr!r}, "
                f"max_addr={max_addr!r})"
            )
        index.take(index.found, u, u + nr)
        self._bitmap.set_run(u, nr)
        self._live[u] = nr
        self._used += nr
        return u * self._granule

    def _check_phase_nocross(self, nr: int, align: int, phase: object, nocross: object) -> None:
        who = self._label
        phase = check_int(phase, "phase", who, error=AlignmentError)
        if not 0 <= phase < align:
            raise AlignmentError(f"{who}: phase={phase} must be in [0, align={align})")
        if nocross:
            nocross = check_power_of_two(nocross, "nocross", who)
            if phase % min(align, nocross) + nr > nocross:
                raise AlignmentError(
                    f"{who}: nr={nr} with align={align} phase={phase} can never fit "
                    f"between nocross={nocross} boundaries"
                )
        elif nocross.__class__ is not int:
            raise AlignmentError(f"{who}: nocross must be an int, got {nocross!r}")

    def _window(self, min_addr: int | None, max_addr: int | None) -> tuple[int | None, int | None]:
        who = self._who()
        g = self._granule
        lo = self._start if min_addr is None else check_int(min_addr, "min_addr", who)
        hi = self._end if max_addr is None else check_int(max_addr, "max_addr", who)
        if lo % g or hi % g:
            raise AlignmentError(
                f"{who}: min_addr={min_addr!r}/max_addr={max_addr!r} not granule aligned"
            )
        if not self._start <= lo < hi <= self._end:
            raise RangeError(
                f"{who}: window [min_addr={lo:#x}, max_addr={hi:#x}) is empty or outside "
                f"[{self._start:#x}, {self._end:#x})"
            )
        return (None if min_addr is None else lo // g), (None if max_addr is None else hi // g)

    def _take(self, u: int, nr: int, s: int) -> None:
        """Mark ``[u, u + nr)`` used: split its hole ``[s, e)``, set the bits, record the run.

        Precondition: the run lies in the hole starting at ``s`` and respects the guards (the
        search or ``reserve`` proved it).  Cannot fail, so a failed call never gets this far.
        """
        self._index.take(s, u, u + nr)
        self._bitmap.set_run(u, nr)
        self._live[u] = nr
        self._used += nr

    def _hole_start(self, u: int) -> int:
        """Start of the hole that contains the free unit ``u`` (u - 1 is free)."""
        floor = self._lo
        s = self._bitmap.prev_set(u - 1, floor) + 1
        return s

    def _xen_alloc(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        min_addr: int | None,
        max_addr: int | None,
    ) -> int:
        """``vm_alloc`` (see :meth:`xen_vmap`)."""
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
        u = index.first_fit(nr, align, 0, 0, None, None)
        if u < 0:
            u = self._xen_grow(nr, align)
        # vm_alloc: "if ( start <= vm_low + 2 ) vm_low = bit;" (bit = start + nr)
        if u <= self._vm_low + 2:
            self._vm_low = u + nr
        index.take(index.found, u, u + nr)
        self._bitmap.set_run(u, nr)
        self._live[u] = nr
        self._used += nr
        return (u + self._origin) * self._granule

    def _xen_grow(self, nr: int, align: int) -> int:
        """Nothing fits below ``vm_top``: grow it as Xen does, one bitmap page at a time, until
        the last hole holds the request; or raise OutOfSpace, changing nothing.

        Interior holes do not change when ``vm_top`` grows, so only the last hole (touching
        ``vm_top``) can start to fit; Xen's restarted scan finds exactly that hole.
        """
        geo = self._xen
        assert geo is not None
        index = self._index
        top = index.hi
        tail = index.end_to_start.get(top, top)
        u = (tail + align) & ~(align - 1)  # skip the hole's first bit, then align up
        need = u + nr
        if need > geo.vm_end or top >= geo.vm_end:
            raise OutOfSpace(
                f"{self._who()}: no free run of nr={nr} granules (align={align}); "
                f"vm_top={top} vm_end={geo.vm_end}"
            )
        pages = -(-(need - top) // geo.step)
        index.set_hi(min(top + pages * geo.step, geo.vm_end))
        index.found = tail
        return u

    def reserve(self, va: int, nr: int) -> int:
        """Allocate exactly ``[va, va + nr * granule)`` (guards honoured); return ``va``.

        For ranges fixed by hardware or firmware (a device window, Xen's own image).  The run
        is then a live allocation like any other: ``free(va)`` returns it.  O(log n).

        Raises:
            AlignmentError: ``va`` not granule-aligned.
            RangeError: ``nr`` < 1, or the run is not inside the range.
            OutOfSpace: part of the run (or a guard granule it needs) is in use.
            Unsupported: on a xen_vmap instance (Xen has no such call).
        """
        with self._lock:
            who = self._who()
            if self._released:
                raise RangeError(f"{who} was released; it manages nothing")
            if self._xen is not None:
                raise Unsupported(f"{who}: reserve() is not part of Xen's vmap interface")
            u = self._unit(va, "va")
            nr = check_int(nr, "nr", who)
            if nr < 1:
                raise RangeError(f"{who}: nr={nr} must be at least 1 granule")
            if u + nr > self._hi:
                raise RangeError(f"{who}: [{va:#x}, +{nr} granules) runs past {self._end:#x}")
            if self._bitmap.test(u):
                raise OutOfSpace(f"{who}: va={va:#x} is already in use")
            s = self._hole_start(u)
            e = self._index.start_to_end[s]
            us, ue = self._index.usable(s, e)
            if fit_in(max(us, u), ue, nr, 1, 0, 0) != u:
                raise OutOfSpace(
                    f"{who}: [{va:#x}, +{nr} granules) overlaps a live run or its guard granule"
                )
            self._take(u, nr, s)
            return va

    def _unit(self, va: object, what: str) -> int:
        """Unit number of the byte address ``va`` after validation (inside the range)."""
        who = self._who()
        v = check_int(va, what, who)
        if v % self._granule:
            raise AlignmentError(f"{who}: {what}={v:#x} is not granule aligned")
        if not self._start <= v < self._end:
            raise RangeError(f"{who}: {what}={v:#x} is outside [{self._start:#x}, {self._end:#x})")
        return v // self._granule - self._origin

    # -- free -------------------------------------------------------------------------------

    def free(self, va: int) -> int:
        """Free the live allocation that starts at ``va`` and return its size in granules.

        O(log n): the run's length comes from the live table, its neighbours from the index's
        end/start dicts (O(1) coalescing).  On a xen_vmap instance ``vm_low`` moves exactly as
        ``vm_free`` moves it (down to the start of the hole just below ``va``).

        Raises:
            InvalidFree: ``va`` is not the start of a live allocation (a double free, an
                address inside a run, outside the range, misaligned, or a carved child's range,
                which must be given back with the child's :meth:`release`).
        """
        lock = self._lock
        lock.acquire()
        try:
            if va.__class__ is not int:
                raise InvalidFree(f"{self._label}: cannot free {va!r}: not an address")
            g = self._granule
            u = va // g - self._origin
            if va % g or u not in self._live:
                raise InvalidFree(f"{self._label}: {va:#x} is not the start of a live allocation")
            if self._children and u in self._children:
                raise InvalidFree(
                    f"{self._label}: {va:#x} is carved by child {self._children[u].name!r}; "
                    "call its release()"
                )
            return self._give_back(u)
        finally:
            lock.release()

    def _give_back(self, u: int) -> int:
        nr = self._live.pop(u)
        self._used -= nr
        index = self._index
        if u < self._vm_low and self._xen is not None:
            # vm_free: vm_low drops to the first bit of the zero run holding u - 1.
            self._vm_low = index.end_to_start[u]
        index.give(u, u + nr)
        self._bitmap.clear_run(u, nr)
        return nr

    def size(self, va: int) -> int:
        """Granules of the live allocation starting at ``va``.  O(1).

        Raises InvalidFree if ``va`` is not the start of a live allocation."""
        with self._lock:
            who = self._who()
            if isinstance(va, bool) or not isinstance(va, int) or va % self._granule:
                raise InvalidFree(f"{who}: {va!r} is not the start of a live allocation")
            nr = self._live.get(va // self._granule - self._origin)
            if nr is None:
                raise InvalidFree(f"{who}: {va:#x} is not the start of a live allocation")
            return nr

    def allocations(self) -> Iterator[tuple[int, int]]:
        """Live runs as ``(va, nr)``, ascending (carved children included).  O(k log k)."""
        with self._lock:
            items = sorted(self._live.items())
        g = self._granule
        o = self._origin
        return iter([((u + o) * g, nr) for u, nr in items])

    # -- carving ----------------------------------------------------------------------------

    def carve(
        self,
        nr: int,
        align: int = 1,
        name: str | None = None,
        policy: str | None = None,
        guard: bool | None = None,
    ) -> RangeAllocator:
        """Allocate ``nr`` granules here and return a child allocator over them (vmem's import).

        The child has the same granule; ``policy`` and ``guard`` default to this instance's
        (first-fit for a xen_vmap parent).  The child's range stays allocated here until
        ``child.release()``.  Cost: one ``alloc``.

        Raises: as :meth:`alloc`, and as the constructor for ``policy``/``name``.
        """
        child_policy = policy if policy is not None else self._policy
        if child_policy == XEN_VMAP:
            child_policy = FIRST_FIT
        child_guard = self._guard if guard is None else guard
        if child_policy not in POLICIES:
            raise RangeError(f"{self._who()}: unknown policy {child_policy!r} for carve")
        if not isinstance(child_guard, bool):
            raise RangeError(f"{self._who()}: guard must be a bool, got {guard!r}")
        if name is not None and not isinstance(name, str):
            raise RangeError(f"{self._who()}: name must be a str or None, got {name!r}")
        with self._lock:  # allocate and register as one step: nobody sees a half-made carve
            if self._xen is not None:
                va = self._xen_alloc(nr, align, 0, 0, None, None)
            else:
                va = self._alloc_locked(nr, align, 0, 0, None, None)
            child = RangeAllocator(
                va,
                va + nr * self._granule,
                self._granule,
                child_policy,
                child_guard,
                name if name is not None else f"{self._name}/carve@{va:#x}",
            )
            child._parent = self
            self._children[va // self._granule - self._origin] = child
            return child

    def children(self) -> list[RangeAllocator]:
        """Live carved children, by address (for walking a carve tree).  O(c log c)."""
        with self._lock:
            return [self._children[u] for u in sorted(self._children)]

    def release(self) -> None:
        """Give this carved range back to the parent, whole.  The instance is dead afterwards.

        Raises:
            RangeError: this instance was not carved, or was already released.
            InUse: it still has live allocations (or carved children of its own).
        """
        with self._lock:
            who = self._who()
            parent = self._parent
            if parent is None:
                raise RangeError(f"{who} was not carved from a parent; nothing to release to")
            if self._released:
                raise RangeError(f"{who} was already released")
            if self._live:
                raise InUse(
                    f"{who} still has {len(self._live)} live allocation(s); free them first"
                )
            with parent._lock:
                u = self._start // parent._granule - parent._origin
                del parent._children[u]
                parent._give_back(u)
            self._released = True

    # -- inspection -------------------------------------------------------------------------

    def stats(self) -> AllocStats:
        """Totals in granules (see :class:`AllocStats`).  O(1) plus the largest-hole lookup
        (O(log n) for best-fit, the members of the top size class otherwise).

        ``used`` comes from a counter kept beside the bitmap (``check()`` compares them)."""
        with self._lock:
            total = (self._end - self._start) // self._granule
            used = self._used
            index = self._index
            largest = index.largest()
            holes = len(index.start_to_end)
            geo = self._xen
            if geo is not None and index.hi < geo.vm_end:
                # Past vm_top nothing is allocated yet: the last hole really runs to vm_end.
                tail = index.end_to_start.get(index.hi)
                largest = max(largest, geo.vm_end - (index.hi if tail is None else tail))
                if tail is None:
                    holes += 1
            return AllocStats(
                total=total,
                used=used,
                free=total - used,
                largest_free=largest,
                live=len(self._live),
                holes=holes,
            )

    def check(self) -> None:
        """Prove that the bitmap, the index and the live table agree and every invariant holds.

        O(n + chunks).  Checks: live runs are exactly the set bits (plus Xen's bitmap pages),
        they do not overlap and keep their guards, the index's holes are exactly the maximal
        clear runs, its size classes / head tree / length list are consistent, and in Xen mode
        ``vm_low``/``vm_top`` obey Xen's invariants.

        Raises:
            InvariantError: naming the first inconsistency found.
        """
        with self._lock:
            problem = self._find_problem()
        if problem is not None:
            raise InvariantError(f"{self._who()}: {problem}")

    def _find_problem(self) -> str | None:
        problem = self._bitmap.check() or self._index.check()
        if problem:
            return problem
        if self._used != self._bitmap.popcount():
            return f"used counter {self._used} differs from the bitmap's population"
        geo = self._xen
        lo, top = self._lo, self._index.hi
        expect: list[tuple[int, int]] = []
        if geo is not None and geo.vm_low:
            expect.append((0, geo.vm_low))
        prev_end = lo if geo is not None else None  # Xen: a guard after the bitmap pages
        for u, nr in sorted(self._live.items()):
            if nr < 1 or u < lo or u + nr > top:
                return f"live run [{u}, {u + nr}) outside [{lo}, {top})"
            if prev_end is not None and u < prev_end:
                return f"live run at {u} overlaps the previous run"
            if self._guard and prev_end is not None and u == prev_end:
                return f"live run at {u} has no guard granule before it"
            prev_end = u + nr
            if expect and expect[-1][1] == u:
                expect[-1] = (expect[-1][0], u + nr)
            else:
                expect.append((u, u + nr))
        if list(self._bitmap.runs()) != expect:
            return "set bits of the bitmap differ from the live runs"
        holes: list[tuple[int, int]] = []
        cursor = lo
        for s, e in expect:
            if e <= lo:
                continue
            if s > cursor:
                holes.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < top:
            holes.append((cursor, top))
        if list(self._index.holes()) != holes:
            return "free-extent index differs from the bitmap's clear runs"
        for u in self._children:
            if u not in self._live:
                return f"carved child at unit {u} has no live run"
        if geo is not None:
            return self._xen_problem(geo, holes)
        return None

    def _xen_problem(self, geo: XenGeometry, holes: list[tuple[int, int]]) -> str | None:
        top = self._index.hi
        first_top = xen_geometry(geo.vm_end, self._granule).vm_top
        if not (top == geo.vm_end or (top - first_top) % geo.step == 0) or top < first_top:
            return f"vm_top={top} is not a reachable value"
        vm_low = self._vm_low
        if not geo.vm_low <= vm_low <= top:
            return f"vm_low={vm_low} outside [{geo.vm_low}, {top}]"
        starts = {s for s, _ in holes}
        if vm_low != top and vm_low not in starts:
            return f"vm_low={vm_low} is neither vm_top nor the start of a hole"
        for s, e in holes:
            if e <= vm_low and e - s > 2:
                return f"hole [{s}, {e}) below vm_low is longer than two guard bits"
        return None

    # -- snapshot / restore -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The instance's state as a JSON-safe dict (ints, strs, bools, lists).

        Format ``vaalloc.RangeAllocator/1``: the configuration (``start``, ``end``,
        ``granule``, ``policy``, ``guard``, ``name``), ``allocations`` as ``[va, nr]`` pairs
        (ascending, carved children excluded), ``carves`` as ``[va, nr, child name]``, and for
        a xen_vmap instance ``xen: {vm_low, vm_top}``.  Children's own state is in their own
        snapshots.  O(k log k) in live runs.
        """
        with self._lock:
            g, o = self._granule, self._origin
            allocs = []
            carves = []
            for u, nr in sorted(self._live.items()):
                child = self._children.get(u)
                if child is None:
                    allocs.append([(u + o) * g, nr])
                else:
                    carves.append([(u + o) * g, nr, child.name])
            snap: dict[str, Any] = {
                "format": SNAPSHOT_FORMAT,
                "name": self._name,
                "start": self._start,
                "end": self._end,
                "granule": g,
                "policy": self._policy,
                "guard": self._guard,
                "allocations": allocs,
                "carves": carves,
            }
            if self._xen is not None:
                snap["xen"] = {"vm_low": self._vm_low, "vm_top": self._index.hi}
            return snap

    def restore(self, snap: object) -> None:
        """Replace the state with ``snap`` (from :meth:`snapshot` of an instance with the same
        configuration).  Everything is validated and a fresh bitmap and index are built before
        anything is swapped in, so a rejected snapshot changes nothing.  O(k log k).

        The carves listed must be exactly this instance's live children (children are separate
        objects that a snapshot cannot recreate).

        Raises:
            SnapshotError: wrong type or format, a configuration mismatch, runs that overlap,
                miss their guards, leave the range, or Xen fields that Xen could not reach.
        """
        with self._lock:
            state = self._validate_snapshot(snap)
            self._bitmap, self._index, self._live, self._vm_low = state
            self._used = self._bitmap.popcount()
            self._bind_search()

    def _validate_snapshot(
        self, snap: object
    ) -> tuple[ChunkedBitmap, FreeIndex, dict[int, int], int]:
        who = self._who()

        def bad(why: str) -> SnapshotError:
            return SnapshotError(f"{who}: cannot restore snapshot: {why}")

        if not isinstance(snap, dict):
            raise bad(f"expected a dict, got {type(snap).__name__}")
        keys = {
            "format",
            "name",
            "start",
            "end",
            "granule",
            "policy",
            "guard",
            "allocations",
            "carves",
        }
        if self._xen is not None:
            keys.add("xen")
        if set(snap) != keys:
            raise bad(f"keys {sorted(map(str, snap))} differ from {sorted(keys)}")
        if snap["format"] != SNAPSHOT_FORMAT:
            raise bad(f"format {snap['format']!r} is not {SNAPSHOT_FORMAT!r}")
        mine = {
            "name": self._name,
            "start": self._start,
            "end": self._end,
            "granule": self._granule,
            "policy": self._policy,
            "guard": self._guard,
        }
        for key, want in mine.items():
            got = snap[key]
            if type(got) is not type(want) or got != want:
                raise bad(f"{key}={got!r} does not match this instance's {want!r}")
        runs = self._snapshot_runs(snap["allocations"], "allocations", 2, bad)
        carves = self._snapshot_runs(snap["carves"], "carves", 3, bad)
        want_carves = sorted((u, self._live[u], c.name) for u, c in self._children.items())
        if [(u, nr, nm) for u, nr, nm in carves] != want_carves:
            raise bad("carves differ from this instance's live children")
        live: dict[int, int] = {}
        for u, nr, _ in runs + carves:
            if u in live:
                raise bad(f"two runs start at unit {u}")
            live[u] = nr
        return self._build_state(live, snap.get("xen"), bad)

    def _snapshot_runs(
        self, raw: object, what: str, width: int, bad: Any
    ) -> list[tuple[int, int, str]]:
        if not isinstance(raw, list):
            raise bad(f"{what} is not a list")
        out: list[tuple[int, int, str]] = []
        g = self._granule
        for item in raw:
            if not isinstance(item, list) or len(item) != width:
                raise bad(f"{what} entry {item!r} is not a list of {width}")
            va, nr = item[0], item[1]
            label = item[2] if width == 3 else ""
            if any(isinstance(x, bool) or not isinstance(x, int) for x in (va, nr)):
                raise bad(f"{what} entry {item!r} has a non-int address or size")
            if not isinstance(label, str):
                raise bad(f"{what} entry {item!r} has a non-str name")
            if va % g or nr < 1 or va < self._start or va + nr * g > self._end:
                raise bad(f"{what} entry {item!r} is misaligned, empty or outside the range")
            out.append((va // g - self._origin, nr, label))
        return out

    def _build_state(
        self, live: dict[int, int], xen: object, bad: Any
    ) -> tuple[ChunkedBitmap, FreeIndex, dict[int, int], int]:
        geo = self._xen
        vm_low = 0
        top = self._hi
        if geo is not None:
            if not isinstance(xen, dict) or set(xen) != {"vm_low", "vm_top"}:
                raise bad("xen must be a dict with vm_low and vm_top")
            vm_low, top = xen["vm_low"], xen["vm_top"]
            for v in (vm_low, top):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise bad(f"xen field {v!r} is not an int")
            if not 0 < top <= geo.vm_end:
                raise bad(f"vm_top={top} outside (0, {geo.vm_end}]")
        lo = self._lo
        bitmap = ChunkedBitmap()
        if geo is not None:
            bitmap.set_run(0, geo.vm_low)
        index = self._new_index(lo, top)
        cursor = lo
        prev_end = None
        for u in sorted(live):
            nr = live[u]
            if u < lo or u + nr > top:
                raise bad(f"run at unit {u} (+{nr}) lies outside [{lo}, {top})")
            if prev_end is not None and u < prev_end:
                raise bad(f"run at unit {u} overlaps the previous run")
            if self._guard and (
                (prev_end is not None and u == prev_end) or (geo is not None and u == lo)
            ):
                raise bad(f"run at unit {u} has no guard granule before it")
            if u > cursor:
                index.add(cursor, u)
            bitmap.set_run(u, nr)
            cursor = prev_end = u + nr
        if cursor < top:
            index.add(cursor, top)
        state = (bitmap, index, live, vm_low)
        saved = (self._bitmap, self._index, self._live, self._vm_low, self._used)
        self._bitmap, self._index, self._live, self._vm_low = state
        self._used = bitmap.popcount()
        try:
            problem = self._find_problem()
        finally:
            self._bitmap, self._index, self._live, self._vm_low, self._used = saved
        if problem is not None:
            raise bad(problem)
        return state


class _XenVmapAllocator(RangeAllocator):
    """What :meth:`RangeAllocator.xen_vmap` returns: ``alloc`` is ``vm_alloc``.

    A subclass rather than a branch so that neither mode pays for the other's check on the
    hot path.
    """

    __slots__ = ()

    def alloc(
        self,
        nr: int,
        align: int = 1,
        *,
        phase: int = 0,
        nocross: int = 0,
        min_addr: int | None = None,
        max_addr: int | None = None,
    ) -> int:
        """``vm_alloc(nr, align)``: see :meth:`RangeAllocator.xen_vmap` for the rules.

        O(log n) in the number of holes.  Raises OutOfSpace when Xen returns NULL (changing
        nothing), RangeError/AlignmentError for bad ``nr``/``align``, and Unsupported for
        ``phase``, ``nocross``, ``min_addr`` or ``max_addr``.
        """
        lock = self._lock
        lock.acquire()
        try:
            return self._xen_alloc(nr, align, phase, nocross, min_addr, max_addr)
        finally:
            lock.release()
