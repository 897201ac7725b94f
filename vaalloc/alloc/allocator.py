"""The generic range allocator: one instance hands out runs of granules from ``[start, end)``.

Design (what a C port keeps):

* the **extent index** (:class:`~vaalloc.alloc.extents.ExtentIndex`) holds one boundary tag
  per allocated run (its length and its neighbours in address order, in one dict keyed by
  position) and files every hole on the free list of its size class and colour; placement
  searches cost O(1) in the common case (see that module);
* the **bitmap** (:class:`~vaalloc.alloc.bitmap.ChunkedBitmap`, one bit per granule, set = in
  use) is the ground truth the semantics are written in (Xen's vm_alloc walks one).  It is not
  kept on the alloc/free path: the run tags *are* its run-length encoding, and
  :meth:`RangeAllocator.bitmap` builds it from them on demand, bit for bit; ``check()`` builds
  it and proves that the index's holes are exactly its clear runs.

Units: inside the instance every position is a *unit*, a granule number counted from the
instance's origin.  Generic instances count from 0 (``va // granule``), so ``align``/``phase``/
``nocross`` are absolute, as in vmem.

Window: units ``[lo, top)`` are indexed; ``[first, lo)`` is a used prefix the allocator owns
itself (empty for a generic instance) and ``[top, hi)`` is free but not yet indexed (a window
that grows lazily; ``top == hi`` for a generic instance).  Xen's vmap (the subclass in
:mod:`vaalloc.alloc.xenvmap`) uses both: the bitmap pages, and ``vm_top``.

Hooks a subclass overrides (documented where defined): ``_alloc_locked``, ``_release_run``,
``_bind_search``, ``_free_extents``, ``_mode_problem``, ``_snapshot_extra``,
``_restore_extra``, ``_install_extra`` and the ``vm_*`` properties.  A subclass registers
itself for a policy name (``class X(RangeAllocator, policy="..."``) so that the factory
classmethods find it without this module importing it (an import cycle, which the
import-linter contracts forbid).

Locking: one ``threading.Lock`` per instance, taken by every public call.  ``carve`` takes the
parent's lock only; ``release`` takes the child's, then (in the parent's ``reclaim``) the
parent's: always child before parent, so two threads cannot deadlock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import attrs

from vaalloc.alloc.bitmap import ChunkedBitmap
from vaalloc.alloc.errors import InUse, Unsupported
from vaalloc.alloc.extents import ExtentIndex, fit_in
from vaalloc.alloc.policies import (
    BEST_FIT,
    FIRST_FIT,
    INSTANT_FIT,
    POLICIES,
    XEN_VMAP,
    carve_policy,
    check_int,
    check_power_of_two,
)
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

#: The keys every snapshot has (a subclass may add its own, see ``_snapshot_extra``).
_SNAPSHOT_KEYS = frozenset(
    {"format", "name", "start", "end", "granule", "policy", "guard", "allocations", "carves"}
)

#: Raises SnapshotError with the reason (used while validating a snapshot).
Bad = Callable[[str], SnapshotError]


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
        "_children",
        "_end",
        "_first",
        "_floor",
        "_granule",
        "_guard",
        "_hi",
        "_index",
        "_label",
        "_lead_guard",
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
    )

    #: Factories of the policies that have a class of their own, by policy name: filled by
    #: ``__init_subclass__`` when their module is imported (``vaalloc.alloc`` imports them).
    _variants: ClassVar[dict[str, Callable[..., RangeAllocator]]] = {}

    def __init_subclass__(cls, *, policy: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if policy is not None:
            RangeAllocator._variants[policy] = cls

    def __init__(
        self,
        start: int,
        end: int,
        granule: int = 4096,
        policy: str = FIRST_FIT,
        guard: bool = True,
        name: str | None = None,
    ) -> None:
        self._configure(start, end, granule, policy, guard, name)
        if policy not in POLICIES:
            raise RangeError(
                f"{self._label}: unknown policy {policy!r}; expected one of {POLICIES}"
            )
        lo = start // granule
        self._open(origin=0, first=lo, lo=lo, top=end // granule, hi=end // granule)

    # -- construction -----------------------------------------------------------------------

    def _configure(
        self, start: int, end: int, granule: int, policy: str, guard: bool, name: str | None
    ) -> None:
        """Validate and set the configuration every instance has."""
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
        self._name = label
        self._label = who
        self._start = start
        self._end = end
        self._granule = granule
        self._policy = policy
        self._guard = guard
        self._parent: RangeAllocator | None = None
        self._released = False
        self._lock = threading.Lock()
        self._children: dict[int, RangeAllocator] = {}

    def _open(
        self, *, origin: int, first: int, lo: int, top: int, hi: int, lead_guard: bool = False
    ) -> None:
        """Lay the window out (units counted from ``origin``): ``[first, lo)`` is a used prefix
        the allocator owns (a subclass's; generic instances have none), ``[lo, top)`` is
        indexed, ``[top, hi)`` is free but not indexed yet.  ``lead_guard``: a guard unit is
        kept after the prefix."""
        self._origin = origin
        self._first = first
        self._lo = lo
        self._hi = hi
        # The floor sentinel ends at lo: the prefix, or a virtual unit just below the range.
        self._floor = first if first < lo else lo - 1
        self._lead_guard = lead_guard
        self._used = lo - first
        self._index = self._new_index(top, [])
        self._bind_search()

    def _new_index(self, top: int, runs: list[tuple[int, int]]) -> ExtentIndex:
        return ExtentIndex.build(
            self._lo,
            top,
            runs,
            floor=self._floor,
            guard=self._guard,
            lead_guard=self._lead_guard,
            by_length=self._policy == BEST_FIT,
            max_length=self._hi - self._lo,
        )

    def _bind_search(self) -> None:
        """Hook: bind the policy's search to the current index (again after every restore)."""
        index = self._index
        self._search = {
            FIRST_FIT: index.first_fit,
            BEST_FIT: index.best_fit,
            INSTANT_FIT: index.instant_fit,
            XEN_VMAP: index.first_fit,  # what XenVmapAllocator._alloc_locked searches with
        }[self._policy]

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

        Each operation costs O(1) (the search is Xen's first fit, answered by the extent
        index instead of a bitmap walk).  ``phase``, ``nocross``, ``min_addr``, ``max_addr``
        and ``reserve`` are not part of Xen's interface and raise
        :class:`~vaalloc.alloc.errors.Unsupported`.  A failed ``alloc`` changes nothing here,
        while Xen leaves ``vm_top`` grown to ``vm_end``; placement is the same either way,
        because ``vm_top`` only bounds the last hole.  The class is
        :class:`vaalloc.alloc.xenvmap.XenVmapAllocator`.

        Raises:
            RangeError, AlignmentError: as the constructor.
        """
        return RangeAllocator._variants[XEN_VMAP](start, end, granule, name)

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
        raise self._no_such("vm_low")

    @property
    def vm_top(self) -> int:
        """Xen's ``vm_top`` (bits covered by the mapped bitmap pages).

        Raises Unsupported on a non-Xen instance."""
        raise self._no_such("vm_top")

    @property
    def vm_end(self) -> int:
        """Xen's ``vm_end`` (bits in the region).  Raises Unsupported on a non-Xen instance."""
        raise self._no_such("vm_end")

    def _no_such(self, what: str) -> Unsupported:
        return Unsupported(f"{self._label}: {what} exists only on xen_vmap instances")

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

        Cost: O(1) for ``align <= 8`` without other constraints; see
        :mod:`vaalloc.alloc.extents` for the others.

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
        """Hook: :meth:`alloc` with the lock held (also what :meth:`carve` allocates with)."""
        if nr.__class__ is not int or nr < 1:
            raise RangeError(f"{self._label}: nr={nr!r} must be an int of at least 1")
        if align.__class__ is not int or align < 1 or align & (align - 1):
            align = check_power_of_two(align, "align", self._label)  # raises: says why
        if self._released:
            raise RangeError(f"{self._label} was released; it manages nothing")
        if phase or nocross:
            self._check_phase_nocross(nr, align, phase, nocross)
        lo_u = hi_u = None
        if min_addr is not None or max_addr is not None:
            lo_u, hi_u = self._window(min_addr, max_addr)
        found = self._search(nr, align, phase, nocross, lo_u, hi_u)
        if found is None:
            raise OutOfSpace(
                f"{self._label}: no free run of nr={nr} granules (align={align}, "
                f"phase={phase}, nocross={nocross}, min_addr={min_addr!r}, "
                f"max_addr={max_addr!r})"
            )
        p, u = found
        self._index.take(p, u, nr)
        self._used += nr
        return (u + self._origin) * self._granule

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
        who = self._label
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
        o = self._origin
        return (None if min_addr is None else lo // g - o), (
            None if max_addr is None else hi // g - o
        )

    def reserve(self, va: int, nr: int) -> int:
        """Allocate exactly ``[va, va + nr * granule)`` (guards honoured); return ``va``.

        For ranges fixed by hardware or firmware (a device window, Xen's own image).  The run
        is then a live allocation like any other: ``free(va)`` returns it.  O(C log n): the
        hole holding ``va`` is looked up in each free list (C size classes; O(n) for best-fit,
        whose lists sort by length).

        Raises:
            AlignmentError: ``va`` not granule-aligned.
            RangeError: ``nr`` < 1, or the run is not inside the range.
            OutOfSpace: part of the run (or a guard granule it needs) is in use.
            Unsupported: on a xen_vmap instance (Xen has no such call).
        """
        with self._lock:
            who = self._label
            if self._released:
                raise RangeError(f"{who} was released; it manages nothing")
            u = self._unit(va, "va")
            nr = check_int(nr, "nr", who)
            if nr < 1:
                raise RangeError(f"{who}: nr={nr} must be at least 1 granule")
            if u + nr > self._hi:
                raise RangeError(f"{who}: [{va:#x}, +{nr} granules) runs past {self._end:#x}")
            index = self._index
            p = index.hole_holding(u)
            if p is None:
                raise OutOfSpace(f"{who}: va={va:#x} is in use (or a guard granule)")
            us, ue = index.usable(p)
            if fit_in(max(us, u), ue, nr, 1, 0, 0) != u:
                raise OutOfSpace(
                    f"{who}: [{va:#x}, +{nr} granules) overlaps a live run or its guard granule"
                )
            index.take(p, u, nr)
            self._used += nr
            return va

    def _unit(self, va: object, what: str) -> int:
        """Unit number of the byte address ``va`` after validation (inside the range)."""
        who = self._label
        v = check_int(va, what, who)
        if v % self._granule:
            raise AlignmentError(f"{who}: {what}={v:#x} is not granule aligned")
        if not self._start <= v < self._end:
            raise RangeError(f"{who}: {what}={v:#x} is outside [{self._start:#x}, {self._end:#x})")
        return v // self._granule - self._origin

    # -- free -------------------------------------------------------------------------------

    def free(self, va: int) -> int:
        """Free the live allocation that starts at ``va`` and return its size in granules.

        O(1): the run's tag gives its length and both neighbours, so the hole it leaves merges
        with theirs at once.  On a xen_vmap instance ``vm_low`` moves exactly as ``vm_free``
        moves it (down to the start of the hole just below ``va``).

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
            if va % g or not self._lo <= u < self._index.top or u not in self._index.runs:
                self._refuse_if_released("free", InvalidFree)
                raise InvalidFree(f"{self._label}: {va:#x} is not the start of a live allocation")
            if self._children and u in self._children:
                raise InvalidFree(
                    f"{self._label}: {va:#x} is carved by child {self._children[u].name!r}; "
                    "call its release()"
                )
            return self._release_run(u)
        finally:
            lock.release()

    def _release_run(self, u: int) -> int:
        """Hook: free the live run at unit ``u`` (checked by the caller); return its length."""
        nr = self._index.give(u)
        self._used -= nr
        return nr

    def size(self, va: int) -> int:
        """Granules of the live allocation starting at ``va``.  O(1).

        Raises InvalidFree if ``va`` is not the start of a live allocation."""
        with self._lock:
            who = self._label
            if isinstance(va, bool) or not isinstance(va, int) or va % self._granule:
                raise InvalidFree(f"{who}: {va!r} is not the start of a live allocation")
            u = va // self._granule - self._origin
            if u not in self._index.runs or not self._lo <= u < self._index.top:
                self._refuse_if_released("size", InvalidFree)
                raise InvalidFree(f"{who}: {va:#x} is not the start of a live allocation")
            return self._index.length(u)

    def allocations(self) -> Iterator[tuple[int, int]]:
        """Live runs as ``(va, nr)``, ascending (carved children included).  O(k).

        Raises RangeError on a released instance."""
        with self._lock:
            self._refuse_if_released("allocations")
            items = list(self._index.live())
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
        child_policy = self._carve_policy(policy)
        child_guard = self._guard if guard is None else guard
        if child_policy not in POLICIES:
            raise RangeError(f"{self._label}: unknown policy {child_policy!r} for carve")
        if not isinstance(child_guard, bool):
            raise RangeError(f"{self._label}: guard must be a bool, got {guard!r}")
        if name is not None and not isinstance(name, str):
            raise RangeError(f"{self._label}: name must be a str or None, got {name!r}")
        with self._lock:  # allocate and register as one step: nobody sees a half-made carve
            va = self._alloc_locked(nr, align, 0, 0, None, None)
            child = RangeAllocator(
                va,
                va + nr * self._granule,
                self._granule,
                child_policy,
                child_guard,
                name if name is not None else f"{self._name}/carve@{va:#x}",
            )
            child._parent = self  # a new object of this class: it learns where it came from
            self._children[va // self._granule - self._origin] = child
            return child

    def _carve_policy(self, policy: str | None) -> str:
        """The policy of a child carved with ``policy`` (None: this instance's)."""
        return carve_policy(self._policy if policy is None else policy)

    def children(self) -> list[RangeAllocator]:
        """Live carved children, by address (for walking a carve tree).  O(c log c).

        Raises RangeError on a released instance."""
        with self._lock:
            self._refuse_if_released("children")
            return [self._children[u] for u in sorted(self._children)]

    def release(self) -> None:
        """Give this carved range back to the parent, whole.  The instance is dead afterwards.

        Raises:
            RangeError: this instance was not carved, or was already released.
            InUse: it still has live allocations (or carved children of its own).
        """
        with self._lock:
            who = self._label
            parent = self._parent
            if parent is None:
                raise RangeError(f"{who} was not carved from a parent; nothing to release to")
            if self._released:
                raise RangeError(f"{who} was already released")
            live = len(self._index.runs) - 2  # the two sentinel tags
            if live:
                raise InUse(f"{who} still has {live} live allocation(s); free them first")
            self._released = True  # what the parent's reclaim() checks
            try:
                parent.reclaim(self)
            except BaseException:
                self._released = False  # a failed call changes nothing
                raise

    def _refuse_if_released(self, what: str, error: type[Exception] = RangeError) -> None:
        """A released carved child manages nothing: every further use is refused."""
        if self._released:
            raise error(f"{self._label} was released to its parent; {what}() refused")

    def reclaim(self, child: RangeAllocator) -> int:
        """Take back the range of a released carved child (the parent's half of
        :meth:`release`, which calls it: vmem's release of an import to its source).  Returns
        the granules taken back.  O(1).

        Raises:
            RangeError: ``child`` is not a released child of this instance that is still
                registered here.
        """
        with self._lock:
            u = child.start // self._granule - self._origin
            if self._children.get(u) is not child or not child.released:
                raise RangeError(f"{self._label}: {child!r} is not a released child of mine")
            del self._children[u]
            return self._release_run(u)

    # -- inspection -------------------------------------------------------------------------

    def stats(self) -> AllocStats:
        """Totals in granules (see :class:`AllocStats`).  O(1) plus the largest-hole lookup
        (the holes of the top size classes).

        ``used`` comes from a counter kept beside the tags (``check()`` compares it with the
        bitmap).  Raises RangeError on a released instance."""
        with self._lock:
            self._refuse_if_released("stats")
            total = (self._end - self._start) // self._granule
            largest, holes = self._free_extents()
            return AllocStats(
                total=total,
                used=self._used,
                free=total - self._used,
                largest_free=largest,
                live=len(self._index.runs) - 2,
                holes=holes,
            )

    def _free_extents(self) -> tuple[int, int]:
        """Hook: ``(largest hole, number of holes)`` for :meth:`stats`."""
        return self._index.largest(), self._index.holes

    def bitmap(self) -> ChunkedBitmap:
        """The allocation bitmap, bit for bit: bit ``i`` is unit ``i`` (``va // granule`` for
        a generic instance; the bit index relative to ``start`` in Xen mode, with Xen's bitmap
        pages set), set when in use.  Built from the run tags.  O(k + chunks).
        Raises RangeError on a released instance."""
        with self._lock:
            self._refuse_if_released("bitmap")
            return self._bitmap_of(self._index)

    def _bitmap_of(self, index: ExtentIndex) -> ChunkedBitmap:
        """The set bits of every tag (linked or not, so that check() sees stray tags too),
        clipped to ``[first, top)``."""
        bitmap = ChunkedBitmap()
        first, top = self._first, index.top
        for u, nr in index.tags():
            s, e = max(u, first), min(u + nr, top)
            if s < e:
                bitmap.set_run(s, e - s)
        return bitmap

    def check(self) -> None:
        """Prove that the tags, the free lists and the bitmap agree and every invariant holds.

        O(n + k + c): builds the bitmap from the tags and checks that the index's holes are
        exactly its clear runs, that live runs do not overlap and keep their guards, that the
        free lists, class heads, group minima and class mask are consistent, that the used
        counter is the bitmap's population, and (Xen mode) that ``vm_low``/``vm_top`` obey
        Xen's invariants.

        Raises:
            InvariantError: naming the first inconsistency found.
        """
        with self._lock:
            index = self._index
            problem = self._find_problem(index, self._used) or self._mode_problem(index, None)
        if problem is not None:
            raise InvariantError(f"{self._label}: {problem}")

    def _find_problem(self, index: ExtentIndex, used: int) -> str | None:
        problem = index.problem()
        if problem:
            return problem
        lo, top = self._lo, index.top
        if index.lo != lo or not lo <= top <= self._hi:
            return f"window [{index.lo}, {top}) is not inside [{lo}, {self._hi}]"
        bitmap = self._bitmap_of(index)
        if used != bitmap.popcount():
            return f"used counter {used} differs from the bitmap's population"
        want: list[tuple[int, int]] = []
        cursor = lo
        for s, e in bitmap.runs():
            if e <= lo:
                continue
            if s > cursor:
                want.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < top:
            want.append((cursor, top))
        if [(s, e) for _, s, e in index.gaps()] != want:
            return "free-extent index differs from the bitmap's clear runs"
        for u in self._children:
            if u not in index.runs or not lo <= u < top:
                return f"carved child at unit {u} has no live run"
        return None

    def _mode_problem(self, index: ExtentIndex, state: object) -> str | None:
        """Hook: a subclass's own invariants over ``index`` and its state (None: the live
        state); generic instances have none."""
        return None

    # -- snapshot / restore -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The instance's state as a JSON-safe dict (ints, strs, bools, lists).

        Format ``vaalloc.RangeAllocator/1``: the configuration (``start``, ``end``,
        ``granule``, ``policy``, ``guard``, ``name``), ``allocations`` as ``[va, nr]`` pairs
        (ascending, carved children excluded), ``carves`` as ``[va, nr, child name]``, and for
        a xen_vmap instance ``xen: {vm_low, vm_top}``.  Children's own state is in their own
        snapshots.  O(k).
        """
        with self._lock:
            self._refuse_if_released("snapshot")
            g, o = self._granule, self._origin
            allocs = []
            carves = []
            for u, nr in self._index.live():
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
            snap.update(self._snapshot_extra())
            return snap

    def _snapshot_extra(self) -> dict[str, Any]:
        """Hook: a subclass's own snapshot fields (generic instances have none)."""
        return {}

    def restore(self, snap: object) -> None:
        """Replace the state with ``snap`` (from :meth:`snapshot` of an instance with the same
        configuration).  Everything is validated and a fresh index is built and checked before
        anything is swapped in, so a rejected snapshot changes nothing.  O(k log k).

        The carves listed must be exactly this instance's live children (children are separate
        objects that a snapshot cannot recreate).

        Raises:
            SnapshotError: wrong type or format, a configuration mismatch, runs that overlap,
                miss their guards, leave the range, or Xen fields that Xen could not reach.
        """
        with self._lock:
            self._refuse_if_released("restore")
            index, used, state = self._validate_snapshot(snap)
            self._index = index
            self._used = used
            self._install_extra(state)
            self._bind_search()

    def _restore_extra(self, snap: dict[str, Any], bad: Bad) -> tuple[int, object]:
        """Hook: validate a subclass's own snapshot fields; return the window top they give
        and the state to install (generic: the range end, no state)."""
        return self._hi, None

    def _install_extra(self, state: object) -> None:
        """Hook: install the state :meth:`_restore_extra` returned."""

    def _validate_snapshot(self, snap: object) -> tuple[ExtentIndex, int, object]:
        who = self._label

        def bad(why: str) -> SnapshotError:
            return SnapshotError(f"{who}: cannot restore snapshot: {why}")

        if not isinstance(snap, dict):
            raise bad(f"expected a dict, got {type(snap).__name__}")
        keys = _SNAPSHOT_KEYS | set(self._snapshot_extra())
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
        sizes = dict(self._index.live())
        want_carves = sorted((u, sizes[u], c.name) for u, c in self._children.items())
        if carves != want_carves:
            raise bad("carves differ from this instance's live children")
        live: dict[int, int] = {}
        for u, nr, _ in runs + carves:
            if u in live:
                raise bad(f"two runs start at unit {u}")
            live[u] = nr
        top, state = self._restore_extra(snap, bad)
        index = self._build_index(live, top, bad)
        used = self._lo - self._first + sum(live.values())
        problem = self._find_problem(index, used) or self._mode_problem(index, state)
        if problem is not None:
            raise bad(problem)
        return index, used, state

    def _snapshot_runs(
        self, raw: object, what: str, width: int, bad: Bad
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

    def _build_index(self, live: dict[int, int], top: int, bad: Bad) -> ExtentIndex:
        """A fresh index holding ``live`` inside ``[lo, top)``, after checking that the runs
        are inside, disjoint and keep their guards."""
        lo = self._lo
        runs = sorted(live.items())
        prev_end = None
        for u, nr in runs:
            if u < lo or u + nr > top:
                raise bad(f"run at unit {u} (+{nr}) lies outside [{lo}, {top})")
            if prev_end is not None and u < prev_end:
                raise bad(f"run at unit {u} overlaps the previous run")
            if self._guard and (u == prev_end or (self._lead_guard and u == lo)):
                raise bad(f"run at unit {u} has no guard granule before it")
            prev_end = u + nr
        return self._new_index(top, runs)
