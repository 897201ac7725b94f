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
    power of two (TLSF-style).  ``mask`` has bit ``k`` set when class ``k`` is non-empty.
head tree
    a small segment tree over classes holding each class's lowest hole start; the lowest start
    among all classes ``>= k`` (a suffix minimum) costs O(log C), C being the number of classes
    (at most 528, about 180 for 2**20 granules).
``by_len``
    for best-fit only: a sorted list of ``(raw length, start)``.

Searches take constraints in *units* (granule numbers; the allocator chooses the origin):
``nr`` units starting at ``c`` with ``(c - phase) % align == 0``, not crossing a multiple of
``nocross`` (0 = no constraint), inside ``[lo_addr, hi_addr)``.  A hole whose usable length is
at least ``G = nr + max(align, nocross) - 1`` always holds such a run (any ``G``-long interval
holds a valid start of every period); a hole shorter than ``nr`` never does.  Holes in between
are *near misses*: whether they fit depends on where they start, so the search tests them one by
one in address order and stops as soon as it passes the best candidate found so far.

Complexities (n = holes, C = size classes, m = near-miss holes tested before the answer):

=================================  ====================================================
first-fit, no ``lo_addr``          O(log C + m log n)  (m = 0 when align = nocross = 1)
first-fit with ``lo_addr``         O(C log n + m)
best-fit                           O(log n + m'), m' = holes skipped (near misses, or
                                   outside ``[lo_addr, hi_addr)``)
instant-fit, no ``lo/hi_addr``     O(log C + log n)  (vmem's guaranteed-fit freelist)
instant-fit fallback / window      O(C log n + m)
add / remove a hole                O(log n + log C)
=================================  ====================================================
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedList

__all__ = ["FreeIndex", "class_lower_bound", "fit_in", "size_class"]

_EXACT = 64  # lengths below this have a class of their own
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
        "_heads_size",
        "_tree",
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
        ncls = size_class(max(max_length, 1)) + 1
        size = 1
        while size < ncls:
            size <<= 1
        self._heads_size = size
        self._tree = [_INF] * (2 * size)
        self.classes: list[SortedList | None] = [None] * size
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

    # -- maintenance -------------------------------------------------------------------------

    def add(self, s: int, e: int) -> None:
        """Insert the hole ``[s, e)``; the caller guarantees it is maximal and new."""
        self.start_to_end[s] = e
        self.end_to_start[e] = s
        if self.by_len is not None:
            self.by_len.add((e - s, s))
        if not self.use_classes:
            return
        us, ue = self.usable(s, e)
        if ue <= us:
            return
        k = size_class(ue - us)
        sl = self.classes[k]
        if sl is None:
            sl = self.classes[k] = SortedList()
        sl.add(s)
        self.mask |= 1 << k
        leaf = k + self._heads_size
        if s < self._tree[leaf]:
            self._set_head(leaf, s)

    def remove(self, s: int) -> int:
        """Remove the hole starting at ``s`` and return its end."""
        e = self.start_to_end.pop(s)
        del self.end_to_start[e]
        if self.by_len is not None:
            self.by_len.remove((e - s, s))
        if not self.use_classes:
            return e
        us, ue = self.usable(s, e)
        if ue <= us:
            return e
        k = size_class(ue - us)
        sl = self.classes[k]
        assert sl is not None
        sl.remove(s)
        leaf = k + self._heads_size
        if self._tree[leaf] == s:
            if sl:
                self._set_head(leaf, sl[0])
            else:
                self.mask &= ~(1 << k)
                self._set_head(leaf, _INF)
        return e

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

    def _set_head(self, node: int, value: int) -> None:
        # Invariant: tree[i] == min(tree[2i], tree[2i+1]) for internal nodes.
        tree = self._tree
        tree[node] = value
        node >>= 1
        while node:
            a = tree[2 * node]
            b = tree[2 * node + 1]
            m = a if a < b else b
            if tree[node] == m:
                break
            tree[node] = m
            node >>= 1

    def _suffix_min(self, k: int) -> int:
        """Lowest hole start among classes ``>= k``."""
        tree = self._tree
        node = k + self._heads_size
        best = tree[node]
        while node > 1:
            if not node & 1:
                v = tree[node + 1]
                if v < best:
                    best = v
            node >>= 1
        return best

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
        g = nr + (align if align > nocross else nocross) - 1
        k0 = size_class(g)
        if class_lower_bound(k0) < g:
            k0 += 1  # class k0 mixes lengths below g: treat it as a near miss
        best = self._suffix_min(k0) if k0 < self._heads_size else _INF
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

    def best_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> int:
        """Lowest start inside the smallest hole (raw length, then address) that holds the
        request, or -1.  Needs ``by_len``."""
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
                i = sl.bisect_left(lo_a)
                if i:
                    i -= 1
                for s in sl.islice(i):
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
        """Largest raw hole length (0 if none).  O(n) worst case; used by stats()."""
        if self.by_len is not None:
            return int(self.by_len[-1][0]) if self.by_len else 0
        if self.mask:
            k = self.mask.bit_length() - 1
            sl = self.classes[k]
            assert sl is not None
            return max(self.start_to_end[s] - int(s) for s in sl)
        return max((e - s for s, e in self.start_to_end.items()), default=0)

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
            want = sorted((e - s, s) for s, e in self.start_to_end.items())
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
                head = got[0] if got else _INF
                if self._tree[k + self._heads_size] != head:
                    return f"head tree leaf for class {k} is stale"
            if mask != self.mask:
                return "non-empty class mask is stale"
            for node in range(self._heads_size - 1, 0, -1):
                if self._tree[node] != min(self._tree[2 * node], self._tree[2 * node + 1]):
                    return f"head tree node {node} is not the min of its children"
        return None
