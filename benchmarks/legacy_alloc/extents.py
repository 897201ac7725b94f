"""The free-extent index: every hole of the bitmap, indexed for O(log n) placement searches.

A *hole* is a maximal run of clear bits ``[s, e)`` inside the managed window ``[lo, hi)``.
Guard granules shrink what a hole can hold: its *usable* interval is ``[us, ue)`` with

* ``us = s + 1`` when guards are on and something may sit just below ``s`` (always in Xen mode,
  where the bitmap pages sit below the first hole; never at ``lo`` otherwise);
* ``ue = e - 1`` when guards are on and ``e`` is not the top of the window (``hi``: the range end,
  or Xen's ``vm_top``, where no guard is needed).

Structures (all kept in step by :meth:`FreeIndex.add` / :meth:`FreeIndex.remove`):

``start_to_end`` / ``end_to_start``
    dicts, so that coalescing on free finds both neighbours in O(1).
size classes
    holes with a usable length of at least one granule go into the sorted list (by start) of
    their *size class*: one class per exact length below 64 granules, then eight classes per
    power of two (TLSF-style).  ``mask`` has bit ``k`` set when class ``k`` is non-empty.  A
    class is a plain sorted ``list`` (C-level bisect/insort; the memmove is bounded because the
    list is promoted) until it holds 4096 holes (a memmove of at most 32 KiB), then a
    ``SortedList`` (O(log n)).
class heads
    each class's lowest hole start, and the minimum of each group of 16 classes; the lowest
    start among all classes ``>= k`` (a suffix minimum) is two ``min()`` over at most 16 and
    C/16 entries, C being the number of classes (at most 528; 177 for 2**20 granules).  In C
    this would be a 64-bit "non-empty" mask per group and a tiny segment tree; in CPython two
    builtin ``min()`` calls over short lists are cheaper than a Python-level tree walk.
``by_len``
    for best-fit only: a sorted list of ``(usable length, start)`` of the holes that can hold
    at least one granule.

Searches take constraints in *units* (granule numbers; the allocator chooses the origin):
``nr`` units starting at ``c`` with ``(c - phase) % align == 0``, not crossing a multiple of
``nocross`` (0 = no constraint), inside ``[lo_addr, hi_addr)``.  A hole whose usable length is
at least ``G = nr + max(align, nocross) - 1`` always holds such a run (any ``G``-long interval
holds a valid start of every period); a hole shorter than ``nr`` never does.  Holes in between
are *near misses*: whether they fit depends on where they start, so the search tests them one by
one in address order and stops as soon as it passes the best candidate found so far.

Complexities (n = holes, C = size classes, m = near-miss holes tested before the answer):

=================================  ====================================================
first-fit, no ``lo_addr``          O(C/16 + m log n)  (m = 0 when align = nocross = 1)
first-fit with ``lo_addr``         O(C log n + m)
best-fit                           O(log n + m'), m' = holes skipped (near misses, or
                                   outside ``[lo_addr, hi_addr)``)
instant-fit, no ``lo/hi_addr``     O(1 + log n)  (vmem's guaranteed-fit freelist)
instant-fit fallback / window      O(C log n + m)
add / remove a hole                O(log n + 16)  (memmove <= 32 KiB below 4096 holes)
=================================  ====================================================
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from itertools import islice
from typing import TypeAlias

from sortedcontainers import SortedList

#: A size class's hole starts: a plain sorted list while small, a SortedList once large.
Members: TypeAlias = "list[int] | SortedList"

__all__ = ["FreeIndex", "class_lower_bound", "fit_in", "size_class"]

_EXACT = 64  # lengths below this have a class of their own
_GROUP_SHIFT = 4
_GROUP = 1 << _GROUP_SHIFT  # classes per group of the two-level head minimum
# A class holds a plain sorted list (C-level bisect/insort, a memmove bounded by this size)
# until it reaches this many holes, then a SortedList (O(log n)).  SortedList is itself a list
# of such lists (of about a thousand entries); skipping its per-call bookkeeping for the
# classes that fit in one list halves the cost of the allocator's hottest path.
_PROMOTE = 4096
_INF = 1 << 127  # larger than any unit number


def size_class(length: int) -> int:
    """Size class of a usable length (>= 1): exact below 64, then 8 classes per power of two."""
    if length < _EXACT:
        return length
    bl = length.bit_length()
    return _EXACT + 8 * (bl - 7) + ((length >> (bl - 4)) & 7)


def class_lower_bound(k: int) -> int:
    """Smallest length in class ``k`` (inverse of :func:`size_class`)."""
    if k < _EXACT:
        return k
    bl, sub = divmod(k - _EXACT, 8)
    return (8 + sub) << (bl + 3)


def fit_in(us: int, ue: int, nr: int, align: int, phase: int, nocross: int) -> int:
    """Lowest start ``c`` in ``[us, ue - nr]`` meeting align/phase/nocross, or -1.

    ``align`` and ``nocross`` are powers of two (``nocross`` 0 = none).  O(1): at most one
    move past a ``nocross`` boundary is needed, because every window of ``nocross`` units
    offers its valid starts at the same offsets.
    """
    c = us + ((phase - us) & (align - 1))
    if nocross and (c ^ (c + nr - 1)) >= nocross:
        boundary = (c | (nocross - 1)) + 1
        c = boundary + ((phase - boundary) & (align - 1))
        if (c ^ (c + nr - 1)) >= nocross:
            return -1
    return c if c + nr <= ue else -1


class FreeIndex:
    """Index of the holes of one allocator window (see the module docstring).

    Not thread-safe by itself: the owning allocator holds its lock around every call.
    """

    __slots__ = (
        "_group_min",
        "_heads",
        "_ncls",
        "by_len",
        "classes",
        "end_to_start",
        "found",
        "guard",
        "guard_at_lo",
        "hi",
        "lo",
        "mask",
        "start_to_end",
        "use_classes",
    )

    def __init__(
        self,
        lo: int,
        hi: int,
        *,
        guard: bool,
        guard_at_lo: bool,
        use_classes: bool,
        use_by_len: bool,
        max_length: int,
    ) -> None:
        self.lo = lo
        self.hi = hi
        self.guard = guard
        self.guard_at_lo = guard_at_lo
        self.start_to_end: dict[int, int] = {}
        self.end_to_start: dict[int, int] = {}
        self.use_classes = use_classes
        ngroups = (size_class(max(max_length, 1)) >> _GROUP_SHIFT) + 1
        self._ncls = ngroups << _GROUP_SHIFT
        # Class heads in two levels: _heads[k] is the lowest start in class k, _group_min[g]
        # the lowest of _heads over group g (16 classes), plus a trailing _INF sentinel.  A
        # suffix minimum is then two C-level min() calls over short slices.
        self._heads = [_INF] * self._ncls
        self._group_min = [_INF] * (ngroups + 1)
        self.classes: list[Members | None] = [None] * self._ncls
        self.mask = 0
        self.by_len: SortedList | None = SortedList() if use_by_len else None
        #: Start of the hole holding the last successful search's answer.
        self.found = -1

    # -- geometry ----------------------------------------------------------------------------

    def usable(self, s: int, e: int) -> tuple[int, int]:
        """Usable interval ``[us, ue)`` of the hole ``[s, e)`` (guards removed)."""
        if not self.guard:
            return s, e
        us = s + 1 if (self.guard_at_lo or s != self.lo) else s
        ue = e - 1 if e != self.hi else e
        return us, ue

    def _class_of(self, s: int, e: int) -> int:
        """Size class of the hole ``[s, e)`` by usable length, or -1 if it holds nothing."""
        if self.guard:
            length = e - s - (e != self.hi) - (self.guard_at_lo or s != self.lo)
        else:
            length = e - s
        if length < _EXACT:
            return length if length > 0 else -1
        bl = length.bit_length()
        return _EXACT + 8 * (bl - 7) + ((length >> (bl - 4)) & 7)

    # -- maintenance -------------------------------------------------------------------------

    def add(self, s: int, e: int) -> None:
        """Insert the hole ``[s, e)``; the caller guarantees it is maximal and new."""
        self.start_to_end[s] = e
        self.end_to_start[e] = s
        if self.by_len is not None:
            self._len_add(s, e)
        if self.use_classes:
            self._class_add(s, e)

    def _class_add(self, s: int, e: int) -> None:
        # Inlined _class_of: this is the allocator's hottest path.
        if self.guard:
            length = e - s - (e != self.hi) - (self.guard_at_lo or s != self.lo)
        else:
            length = e - s
        if length < _EXACT:
            if length <= 0:
                return
            k = length
        else:
            bl = length.bit_length()
            k = _EXACT + 8 * (bl - 7) + ((length >> (bl - 4)) & 7)
        sl = self.classes[k]
        if sl is None:
            self.classes[k] = [s]
        elif isinstance(sl, list):
            insort(sl, s)
            if len(sl) > _PROMOTE:
                self.classes[k] = SortedList(sl)
        else:
            sl.add(s)
        if s < self._heads[k]:
            self.mask |= 1 << k
            self._set_head(k, s)

    def remove(self, s: int) -> int:
        """Remove the hole starting at ``s`` and return its end."""
        e = self.start_to_end.pop(s)
        del self.end_to_start[e]
        if self.by_len is not None:
            self._len_remove(s, e)
        if self.use_classes:
            self._class_remove(s, e)
        return e

    def _class_remove(self, s: int, e: int) -> None:
        # _class_of inlined, as in _class_add (every alloc and free removes a hole): keep the
        # two copies and _class_of in step.
        if self.guard:
            length = e - s - (e != self.hi) - (self.guard_at_lo or s != self.lo)
        else:
            length = e - s
        if length < _EXACT:
            if length <= 0:
                return
            k = length
        else:
            bl = length.bit_length()
            k = _EXACT + 8 * (bl - 7) + ((length >> (bl - 4)) & 7)
        sl = self.classes[k]
        assert sl is not None
        if isinstance(sl, list):
            del sl[bisect_left(sl, s)]
        else:
            sl.remove(s)
        if self._heads[k] == s:
            if sl:
                self._set_head(k, sl[0])
            else:
                self.mask &= ~(1 << k)
                self._set_head(k, _INF)

    def _usable_len(self, s: int, e: int) -> int:
        if not self.guard:
            return e - s
        return e - s - (e != self.hi) - (self.guard_at_lo or s != self.lo)

    def _len_add(self, s: int, e: int) -> None:
        length = self._usable_len(s, e)
        if length > 0:
            assert self.by_len is not None
            self.by_len.add((length, s))

    def _len_remove(self, s: int, e: int) -> None:
        length = self._usable_len(s, e)
        if length > 0:
            assert self.by_len is not None
            self.by_len.remove((length, s))

    def take(self, s: int, u: int, end: int) -> None:
        """Carve the run ``[u, end)`` out of the hole starting at ``s``: the hole is removed
        and what is left on either side is re-inserted.  One call instead of three."""
        s_to_e = self.start_to_end
        e = s_to_e.pop(s)
        e_to_s = self.end_to_start
        del e_to_s[e]
        by_len = self.by_len
        if by_len is not None:
            self._len_remove(s, e)
        classes = self.use_classes
        if classes:
            self._class_remove(s, e)
        if s < u:
            s_to_e[s] = u
            e_to_s[u] = s
            if by_len is not None:
                self._len_add(s, u)
            # A one- or two-granule guard remnant holds nothing when guards are on: skip the
            # call (the common case, since searches place a run right after the guard).
            if classes and (not self.guard or u - s > 1 + (self.guard_at_lo or s != self.lo)):
                self._class_add(s, u)
        if end < e:
            s_to_e[end] = e
            e_to_s[e] = end
            if by_len is not None:
                self._len_add(end, e)
            if classes:
                self._class_add(end, e)

    def give(self, u: int, end: int) -> None:
        """Return the run ``[u, end)`` to the index, merging it with the holes on either side
        (found in O(1) through the end/start dicts)."""
        s_to_e = self.start_to_end
        e_to_s = self.end_to_start
        by_len = self.by_len
        classes = self.use_classes
        s = e_to_s.pop(u, None)
        if s is None:
            s = u
        else:
            del s_to_e[s]
            if by_len is not None:
                self._len_remove(s, u)
            if classes and (not self.guard or u - s > 1 + (self.guard_at_lo or s != self.lo)):
                self._class_remove(s, u)
        e = s_to_e.pop(end, None)
        if e is None:
            e = end
        else:
            del e_to_s[e]
            if by_len is not None:
                self._len_remove(end, e)
            if classes:
                self._class_remove(end, e)
        s_to_e[s] = e
        e_to_s[e] = s
        if by_len is not None:
            self._len_add(s, e)
        if classes:
            self._class_add(s, e)

    def set_hi(self, hi: int) -> None:
        """Move the window top (Xen's ``vm_top`` growth), re-indexing the hole touching it."""
        old = self.hi
        tail = self.end_to_start.get(old)
        if tail is not None:
            self.remove(tail)
        self.hi = hi
        if hi > old:
            self.add(old if tail is None else tail, hi)
        elif tail is not None:
            self.add(tail, old)

    def _set_head(self, k: int, value: int) -> None:
        # Invariant: _group_min[g] == min(_heads[16g : 16g + 16]).
        heads = self._heads
        old = heads[k]
        heads[k] = value
        g = k >> _GROUP_SHIFT
        gmin = self._group_min
        if value < gmin[g]:
            gmin[g] = value
        elif old == gmin[g]:
            base = g << _GROUP_SHIFT
            gmin[g] = min(heads[base : base + _GROUP])

    def _suffix_min(self, k: int) -> int:
        """Lowest hole start among classes ``>= k``."""
        g = k >> _GROUP_SHIFT
        a = min(self._heads[k : (g + 1) << _GROUP_SHIFT])
        b = min(self._group_min[g + 1 :])
        return a if a < b else b

    # -- searches ----------------------------------------------------------------------------

    def guaranteed(self, nr: int, align: int, nocross: int) -> int:
        """Usable length from which every hole holds the request."""
        return nr + max(align, nocross) - 1

    def first_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> int:
        """Lowest start of a run satisfying every constraint, or -1.  Needs size classes."""
        if lo_addr is not None:
            return self._windowed(nr, align, phase, nocross, lo_addr, hi_addr, lowest=True)
        g = nr + align - 1
        if not nocross and hi_addr is None and g < _EXACT and g < self._ncls:
            return self._first_fit_small(nr, align, phase, g)
        g = nr + (align if align > nocross else nocross) - 1
        k0 = size_class(g)
        if class_lower_bound(k0) < g:
            k0 += 1  # class k0 mixes lengths below g: treat it as a near miss
        best = self._suffix_min(k0) if k0 < self._ncls else _INF
        best_c = -1
        if best != _INF:
            us, ue = self.usable(best, self.start_to_end[best])
            if hi_addr is not None and ue > hi_addr:
                ue = hi_addr
            best_c = fit_in(us, ue, nr, align, phase, nocross)
            self.found = best
            if best_c < 0:
                # Only possible when clipped by hi_addr: every later hole lies beyond it.
                best = hi_addr if hi_addr is not None else _INF
        stop = best if hi_addr is None or best < hi_addr else hi_addr
        mask = self.mask >> (k := size_class(nr))
        s_to_e = self.start_to_end
        while mask and k < k0:
            if mask & 1:
                sl = self.classes[k]
                assert sl is not None
                if sl[0] < stop:
                    for s in sl:
                        if s >= stop:
                            break
                        us, ue = self.usable(s, s_to_e[s])
                        if hi_addr is not None and ue > hi_addr:
                            ue = hi_addr
                        c = fit_in(us, ue, nr, align, phase, nocross)
                        if c >= 0:
                            stop = s
                            best_c = c
                            self.found = s
                            break
            mask >>= 1
            k += 1
        return best_c

    def _first_fit_small(self, nr: int, align: int, phase: int, g: int) -> int:
        """First fit when every class involved is exact (``g = nr + align - 1 < 64``) and
        there is no nocross or window: the common case, written out for speed.

        Classes ``>= g`` are guaranteed; classes ``nr .. g - 1`` are the near misses.
        """
        grp = g >> _GROUP_SHIFT
        best = min(self._heads[g : (grp + 1) << _GROUP_SHIFT])
        other = min(self._group_min[grp + 1 :])
        if other < best:
            best = other
        best_c = -1
        mask = align - 1
        if best != _INF:
            us = best + 1 if self.guard and (self.guard_at_lo or best != self.lo) else best
            best_c = us + ((phase - us) & mask)
            self.found = best
        if g > nr:
            present = self.mask
            s_to_e = self.start_to_end
            classes = self.classes
            for k in range(nr, g):
                if not (present >> k) & 1:
                    continue
                sl = classes[k]
                assert sl is not None
                if sl[0] >= best:
                    continue
                for s in sl:
                    if s >= best:
                        break
                    us, ue = self.usable(s, s_to_e[s])
                    c = us + ((phase - us) & mask)
                    if c + nr <= ue:
                        best, best_c = s, c
                        self.found = s
                        break
        return best_c

    def best_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> int:
        """Lowest start inside the smallest hole (by usable length, i.e. what it can hold once
        its guards are kept; then by address) that holds the request, or -1.  Needs
        ``by_len``."""
        by_len = self.by_len
        assert by_len is not None
        lo_a = -1 if lo_addr is None else lo_addr
        hi_a = _INF if hi_addr is None else hi_addr
        for _length, s in by_len.irange((nr, -1)):
            e = self.start_to_end[s]
            if e <= lo_a or s >= hi_a:
                continue
            us, ue = self.usable(s, e)
            if us < lo_a:
                us = lo_a
            if ue > hi_a:
                ue = hi_a
            c = fit_in(us, ue, nr, align, phase, nocross)
            if c >= 0:
                self.found = s
                return c
        return -1

    def instant_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> int:
        """vmem's instant fit: the lowest hole of the smallest non-empty class whose every hole
        is guaranteed to fit; failing that (or with an address window), the lowest fitting hole
        of the lowest class that has one.  Returns the start or -1."""
        if lo_addr is None and hi_addr is None:
            g = self.guaranteed(nr, align, nocross)
            k0 = size_class(g)
            if class_lower_bound(k0) < g:
                k0 += 1
            above = self.mask >> k0
            if above:
                k = k0 + ((above & -above).bit_length() - 1)
                sl = self.classes[k]
                assert sl is not None
                s = sl[0]
                us, ue = self.usable(s, self.start_to_end[s])
                self.found = s
                return fit_in(us, ue, nr, align, phase, nocross)
        return self._windowed(nr, align, phase, nocross, lo_addr, hi_addr, lowest=False)

    def _windowed(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
        *,
        lowest: bool,
    ) -> int:
        """Search every non-empty class from ``size_class(nr)`` up, from ``lo_addr``.

        ``lowest`` True: the lowest fitting start overall (first-fit).  False: the lowest
        fitting start of the lowest class that has one (instant-fit fallback).
        """
        lo_a = self.lo if lo_addr is None else lo_addr
        hi_a = _INF if hi_addr is None else hi_addr
        best_s = _INF
        best_c = -1
        k = size_class(nr)
        mask = self.mask >> k
        s_to_e = self.start_to_end
        while mask:
            if mask & 1:
                sl = self.classes[k]
                assert sl is not None
                # The hole holding lo_a may start below it: step back one to include it.
                i = bisect_left(sl, lo_a) if isinstance(sl, list) else sl.bisect_left(lo_a)
                if i:
                    i -= 1
                for s in islice(sl, i, None) if isinstance(sl, list) else sl.islice(i):
                    if s >= best_s or s >= hi_a:
                        break
                    e = s_to_e[s]
                    if e <= lo_a:
                        continue
                    us, ue = self.usable(s, e)
                    if us < lo_a:
                        us = lo_a
                    if ue > hi_a:
                        ue = hi_a
                    c = fit_in(us, ue, nr, align, phase, nocross)
                    if c >= 0:
                        best_s, best_c = s, c
                        break
                if best_c >= 0 and not lowest:
                    self.found = best_s
                    return best_c
            mask >>= 1
            k += 1
        self.found = best_s
        return best_c

    # -- inspection --------------------------------------------------------------------------

    def holes(self) -> Iterator[tuple[int, int]]:
        """Every hole as ``(start, end)``, ascending.  O(n log n)."""
        for s in sorted(self.start_to_end):
            yield s, self.start_to_end[s]

    def largest(self) -> int:
        """Largest raw hole length (0 if none), for stats().

        The largest raw hole has a usable length within two (guard) granules of the largest
        usable length, so only the holes of the top size classes are examined: O(log n) plus
        those holes.  When no hole can hold a granule (all are guard remnants) every hole is
        examined.
        """
        s_to_e = self.start_to_end
        if not s_to_e:
            return 0
        starts: list[int] = []
        if self.by_len:
            top = int(self.by_len[-1][0])
            starts = [int(s) for _, s in self.by_len.irange((top - 2, -1))]
        elif self.mask:
            k = self.mask.bit_length() - 1
            sl = self.classes[k]
            assert sl is not None
            top = max(self._usable_len(s, s_to_e[s]) for s in sl)
            while k > 0 and class_lower_bound(k + 1) - 1 >= top - 2:
                members = self.classes[k]
                if members is not None:
                    starts.extend(members)
                k -= 1
        else:
            top = 0
        if top <= 2:  # guard remnants (usable <= 0, in no class) may be the largest
            return max(e - s for s, e in s_to_e.items())
        return max(s_to_e[s] - s for s in starts)

    def check(self) -> str | None:
        """Describe the first broken invariant of the index structures, or return None."""
        if len(self.end_to_start) != len(self.start_to_end):
            return "end_to_start and start_to_end differ in size"
        prev_end = None
        for s, e in self.holes():
            if not self.lo <= s < e <= self.hi:
                return f"hole [{s}, {e}) outside window [{self.lo}, {self.hi})"
            if self.end_to_start.get(e) != s:
                return f"end_to_start misses hole [{s}, {e})"
            if prev_end is not None and s <= prev_end:
                return f"hole [{s}, {e}) touches or overlaps the previous one"
            prev_end = e
        if self.by_len is not None:
            want = sorted(
                (self._usable_len(s, e), s)
                for s, e in self.start_to_end.items()
                if self._usable_len(s, e) > 0
            )
            if list(self.by_len) != want:
                return "by_len disagrees with the holes"
        if self.use_classes:
            want_classes: dict[int, list[int]] = {}
            for s, e in self.start_to_end.items():
                us, ue = self.usable(s, e)
                if ue > us:
                    want_classes.setdefault(size_class(ue - us), []).append(s)
            mask = 0
            for k, sl in enumerate(self.classes):
                got = list(sl) if sl is not None else []
                if got != sorted(want_classes.get(k, [])):
                    return f"size class {k} disagrees with the holes"
                if got:
                    mask |= 1 << k
                if self._heads[k] != (got[0] if got else _INF):
                    return f"head of class {k} is stale"
            if mask != self.mask:
                return "non-empty class mask is stale"
            for g in range(len(self._group_min) - 1):
                base = g << _GROUP_SHIFT
                if self._group_min[g] != min(self._heads[base : base + _GROUP]):
                    return f"group minimum {g} is stale"
            if self._group_min[-1] != _INF:
                return "group minimum sentinel overwritten"
        return None
