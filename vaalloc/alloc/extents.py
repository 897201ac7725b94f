"""The extent index: every run and every hole of one allocator window, for O(1) placement.

Layout (what a C port keeps)
============================

``runs``: one dict, position -> packed ``(nr, next, prev)``
    A *boundary tag* per allocated run, keyed by its first unit: its length and the first
    units of the runs after and before it in address order (vmem's segment list, with the free
    segments left implicit).  The hole after run ``p`` is ``[p + nr, next)``, empty when the
    two runs touch.  The three fields are packed in one int,
    ``(next - u) | (u - prev) << W | nr << 2W``, ``W`` bits per distance (enough for any in
    the window) and the length on top: a run shorter than 64 units in a window of up to 2**26
    units is one 32-byte int (two 30-bit digits), against 64 bytes for a 3-tuple.  Two
    sentinel tags close the list, so that no operation needs a special case at either end:

    * the *floor* ``[floor, lo)`` ends where the window starts: a virtual one-unit run for a
      generic instance, the pages of Xen's bitmap in Xen mode;
    * the *top*, an empty run at the window top (``next`` is itself).

    A hole is named by the run before it (its *id* ``p``); ids sort as the holes do.

``freelists``: one sorted list of hole ids per *bucket*
    A hole goes on the free list of its usable length (guards removed, see below) if it can
    hold a unit.  Size classes are one per exact length below 64, then eight per power of two
    (TLSF's second-level split): :func:`size_class`.  An exact class is split further into
    eight buckets by the *colour* of the hole, ``usable start % 8``: every hole of bucket
    ``(length, colour)`` holds a request of ``align <= 8`` at the same offset, so a bucket
    either fits whole or not at all, and a first fit becomes one ``min`` over bucket heads
    instead of a walk over near misses.  A free list is a plain sorted ``list`` up to
    :data:`SHORT` entries, a sorted ``array('q')`` up to :data:`PROMOTE` (a bisection reads
    the array, not one scattered int object per probe), then a :class:`BlockList` of bounded
    blocks (memmoves of at most 8 KiB).  Best-fit instances file ``(usable length, id)``
    packed in one int in the classes of 64 and more, so that such a class sorts by length
    first (those lists stay lists: the packed value may pass 64 bits).

Heads, in three levels, each the minimum of the level below (``INF`` when empty):
    ``list_head[b]`` (bucket ``b``), ``class_head[k]`` (over the eight colours of an exact
    class; the one bucket of a larger class), ``group_min[g]`` (over 16 classes), plus
    ``class_mask`` (bit ``k`` set when class ``k`` is non-empty).  The lowest hole among
    all classes ``>= k`` is two builtin ``min()`` calls over at most 16 and C/16 entries.

Guards: with ``guard`` on, a hole ``[s, e)`` offers the usable interval ``[us, ue)``:
``us = s + 1`` unless ``s`` is the window bottom ``lo`` and ``lead_guard`` is off (nothing
sits below a generic range; Xen's bitmap pages do), ``ue = e - 1`` unless ``e`` is the
window top.

Searches take constraints in *units*: ``nr`` units starting at ``c`` with
``(c - phase) % align == 0``, not crossing a multiple of ``nocross`` (0 = none), inside
``[lo_addr, hi_addr)``, and return ``(id, start)`` or None.  A hole of usable length at least
``G = nr + max(align, nocross) - 1`` always holds such a run; a hole shorter than ``nr`` never
does; the ones between are *near misses*, decided by bucket colour when ``align <= 8``, and
otherwise tested one by one in address order, stopping at the best candidate so far.

Every operation's cost is in one table, in docs/allocator.md ("Complexity").
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from itertools import chain, islice
from operator import itemgetter
from typing import TypeAlias

__all__ = [
    "EXACT",
    "INF",
    "BlockList",
    "ExtentIndex",
    "class_lower_bound",
    "fit_in",
    "size_class",
]

#: Usable lengths below this have a size class of their own (and eight colour buckets).
EXACT = 64
COLOURS = 8  # buckets per exact class: usable start % 8
_COLOUR_SHIFT = 3
_BIG = EXACT * COLOURS - EXACT  # bucket of class k >= EXACT is k + _BIG
_FIRST_BIG = EXACT * COLOURS  # the first bucket of a class >= EXACT
_GROUP_SHIFT = 4  # classes per group of the head minimum: 16
#: A free list longer than this becomes an array of int64 (a list of short ones is cheaper).
SHORT = 64
#: A free list longer than this becomes a BlockList (a memmove stays within 8 KiB).
PROMOTE = 1024
#: BlockList blocks hold up to 2 * BLOCK entries and are split in two beyond that.
BLOCK = 512
#: Larger than any unit number: the head of an empty free list, class or group.
INF = 1 << 127

#: A free list: a sorted list while short, an array of int64 once longer (a list where best
#: fit's packed entries may not fit 64 bits), blocks once long.
FreeList: TypeAlias = "array[int] | list[int] | BlockList"


def size_class(length: int) -> int:
    """Size class of a usable length (>= 1): exact below 64, then 8 classes per power of two."""
    if length < EXACT:
        return length
    bl = length.bit_length()
    return EXACT + 8 * (bl - 7) + ((length >> (bl - 4)) & 7)


def class_lower_bound(k: int) -> int:
    """Smallest length in class ``k`` (inverse of :func:`size_class`)."""
    if k < EXACT:
        return k
    bl, sub = divmod(k - EXACT, 8)
    return (8 + sub) << (bl + 3)


def ceil_class(length: int) -> int:
    """The lowest class whose every member is at least ``length`` long."""
    k = size_class(length)
    return k + 1 if class_lower_bound(k) < length else k


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


def _colour_getters() -> tuple[
    list[itemgetter[tuple[int, ...]] | None], list[list[itemgetter[tuple[int, ...]]]]
]:
    """Tables that turn "which colours of an exact class hold this request" into one C call.

    ``NEAR[align | phase]`` picks, from the ``(align - 1) * 8`` bucket heads of lengths
    ``nr .. nr + align - 2`` (the near misses of a first fit), those whose colour leaves room:
    a hole of length ``nr + d`` and colour ``r`` holds the request iff
    ``(phase - r) % align <= d``.  ``FITS[align | phase][d]`` picks the colours of one length
    ``nr + d`` that fit (best fit).  ``align | phase`` is a unique index since ``phase <
    align``; only ``align`` 2, 4, 8 occur (``align`` 1 has no near misses).
    """
    near: list[itemgetter[tuple[int, ...]] | None] = [None] * 16
    fits: list[list[itemgetter[tuple[int, ...]]]] = [[] for _ in range(16)]
    for align in (2, 4, 8):
        for phase in range(align):
            near[align | phase] = itemgetter(
                *[
                    d * COLOURS + r
                    for d in range(align - 1)
                    for r in range(COLOURS)
                    if (phase - r) % align <= d
                ]
            )
            for d in range(align - 1):
                ok = [r for r in range(COLOURS) if (phase - r) % align <= d]
                # itemgetter of one index returns the item, not a 1-tuple: repeat it.
                fits[align | phase].append(itemgetter(*(ok if len(ok) > 1 else ok * 2)))
    return near, fits


NEAR, FITS = _colour_getters()


def _entries_from(fl: FreeList, x: int) -> Iterator[int]:
    """The entries of ``fl`` from the last one below ``x`` on (the hole holding ``x`` may be
    named by a run below it)."""
    if fl.__class__ is not BlockList:
        assert not isinstance(fl, BlockList)
        i = bisect_left(fl, x)
        return islice(fl, i - 1 if i else 0, None)
    assert isinstance(fl, BlockList)
    return fl.entries_from(x)


class BlockList:
    """A sorted list of ints cut into blocks of at most ``2 * BLOCK`` entries.

    For a free list with very many holes: an insert or delete near the front (first fit
    works at low addresses) moves one block, not the whole list.  Invariant: ``blocks`` are
    non-empty sorted lists in ascending order and ``firsts[i] == blocks[i][0]``.
    """

    __slots__ = ("blocks", "firsts")

    def __init__(self, items: list[int]) -> None:
        self.blocks = [items[i : i + BLOCK] for i in range(0, len(items), BLOCK)]
        self.firsts = [block[0] for block in self.blocks]

    def __len__(self) -> int:
        return sum(map(len, self.blocks))

    def __iter__(self) -> Iterator[int]:
        return chain.from_iterable(self.blocks)

    def add(self, x: int) -> None:
        """Insert ``x``.  O(log n) + a memmove of one block."""
        firsts = self.firsts
        i = bisect_right(firsts, x) - 1
        if i < 0:
            i = 0
            firsts[0] = x
        block = self.blocks[i]
        insort(block, x)
        if len(block) > 2 * BLOCK:
            upper = block[BLOCK:]
            del block[BLOCK:]
            self.blocks.insert(i + 1, upper)
            firsts.insert(i + 1, upper[0])

    def remove(self, x: int) -> None:
        """Delete ``x``, which must be present.  O(log n) + a memmove of one block."""
        firsts = self.firsts
        blocks = self.blocks
        i = bisect_right(firsts, x) - 1
        block = blocks[i]
        del block[bisect_left(block, x)]
        if not block:
            del blocks[i]
            del firsts[i]
            return
        firsts[i] = block[0]
        if len(block) < BLOCK // 2 and i + 1 < len(blocks):
            # Merge a thin block into its successor so that blocks stay few.
            nxt = blocks[i + 1]
            if len(block) + len(nxt) <= 2 * BLOCK:
                block.extend(nxt)
                del blocks[i + 1]
                del firsts[i + 1]

    def entries_from(self, x: int) -> Iterator[int]:
        """Entries from the last one below ``x`` on (all of them if none is below)."""
        blocks = self.blocks
        i = bisect_left(self.firsts, x)  # blocks[:i] start below x
        if i == 0:
            return chain.from_iterable(blocks)
        i -= 1  # the last block starting below x holds x's predecessor
        block = blocks[i]
        j = bisect_left(block, x)  # >= 1, since block[0] < x
        return chain(islice(block, j - 1, None), chain.from_iterable(islice(blocks, i + 1, None)))

    def problem(self) -> str | None:
        """The first broken invariant, or None."""
        if not self.blocks:
            return "empty block list"
        flat = list(self)
        if flat != sorted(flat):
            return "block list out of order"
        if any(not b or len(b) > 2 * BLOCK for b in self.blocks):
            return "block list has an empty or oversized block"
        if self.firsts != [b[0] for b in self.blocks]:
            return "block list firsts are stale"
        return None


class ExtentIndex:
    """The runs and holes of one window ``[lo, top)`` (see the module docstring).

    ``floor`` is the first unit of the floor sentinel ``[floor, lo)``.  ``by_length`` files
    holes by (usable length, id), for best fit.  ``max_length`` bounds the usable length of
    any hole the window will ever hold (it sizes the class tables).  Not thread-safe by
    itself: the owning allocator holds its lock around every call.
    """

    __slots__ = (
        "_field_mask",
        "_len_shift",
        "_peak",
        "_w",
        "_w2",
        "by_length",
        "class_head",
        "class_mask",
        "floor",
        "freelists",
        "group_min",
        "guard",
        "holes",
        "lead",
        "list_head",
        "lo",
        "nclasses",
        "runs",
        "slack",
        "slack_lo",
        "top",
    )

    def __init__(
        self,
        lo: int,
        top: int,
        *,
        floor: int,
        guard: bool,
        lead_guard: bool,
        by_length: bool,
        max_length: int,
    ) -> None:
        if not floor < lo <= top:
            raise ValueError(f"extent index needs floor < lo <= top, got {floor}, {lo}, {top}")
        self.lo = lo
        self.top = top
        self.floor = floor
        #: Units a guard takes from a hole's interior end / its start (0 or 1).
        self.guard = 1 if guard else 0
        #: Units a guard takes from a hole starting at lo (Xen: the bitmap pages sit below).
        self.lead = 1 if guard and lead_guard else 0
        #: The longest interior hole that holds nothing (its guards eat it), at lo / elsewhere.
        self.slack_lo = self.guard + self.lead
        self.slack = 2 * self.guard
        self.by_length = by_length
        ngroups = (size_class(max(max_length, EXACT)) >> _GROUP_SHIFT) + 1
        self.nclasses = ngroups << _GROUP_SHIFT
        nlists = self.nclasses + _BIG
        self.freelists: list[FreeList | None] = [None] * nlists
        self.list_head = [INF] * nlists
        self.class_head = [INF] * self.nclasses
        self.group_min = [INF] * (ngroups + 1)  # + a sentinel, so group_min[g + 1:] is never empty
        self.class_mask = 0
        # Best fit, classes >= 64: entry = usable length << _len_shift | (id - floor).
        self._len_shift = (max(max_length, top) - floor + 2).bit_length()
        # Tag fields are W bits wide: W holds any length or distance the window will see.
        self._w = (max(top, lo + max_length) - floor + 2).bit_length()
        self._w2 = 2 * self._w
        self._field_mask = (1 << self._w) - 1
        self.runs: dict[int, int] = {
            floor: self.pack(floor, lo - floor, top, floor),
            top: self.pack(top, 0, top, floor),
        }
        self.holes = 0
        self._peak = 0  # the most tags seen since the dict was last sized (see give)
        if lo < top:
            self.holes = 1
            self._hole(floor, lo, top, True)

    @classmethod
    def build(
        cls,
        lo: int,
        top: int,
        runs: list[tuple[int, int]],
        *,
        floor: int,
        guard: bool,
        lead_guard: bool,
        by_length: bool,
        max_length: int,
    ) -> ExtentIndex:
        """An index holding ``runs`` (``(start, nr)``, ascending, disjoint, inside
        ``[lo, top)``; the caller validated them).  O(k log k)."""
        index = cls(
            lo,
            top,
            floor=floor,
            guard=guard,
            lead_guard=lead_guard,
            by_length=by_length,
            max_length=max_length,
        )
        p = floor
        for u, nr in runs:
            index.take(p, u, nr)
            p = u
        return index

    # -- the free lists ----------------------------------------------------------------------

    def _hole(self, p: int, s: int, e: int, insert: bool) -> None:
        """Put the hole ``[s, e)`` named ``p`` on its free list (``insert``) or take it off.

        One call per hole change (the allocator's hottest code): the bucket arithmetic and
        the three head levels are written out here once.  A hole that cannot hold a unit
        (a guard remnant) is on no list.
        """
        us = s + (self.lead if s == self.lo else self.guard)
        length = (e if e == self.top else e - self.guard) - us
        if length <= 0:
            return
        x = p
        packed = False  # best fit's (length, id) entries
        if length < EXACT:
            k = length
            b = length << _COLOUR_SHIFT | us & (COLOURS - 1)
        else:
            k = size_class(length)
            b = k + _BIG
            if self.by_length:  # lengths differ inside the class: sort by length first
                x = length << self._len_shift | (p - self.floor)
                packed = True
        freelists = self.freelists
        fl = freelists[b]
        list_head = self.list_head
        if insert:
            if fl is None:
                freelists[b] = [x]
            elif fl.__class__ is BlockList:
                fl.add(x)
            else:
                insort(fl, x)  # type: ignore[arg-type]
                n = len(fl)
                if n > SHORT:
                    if n > PROMOTE:
                        freelists[b] = BlockList(list(fl))
                    elif fl.__class__ is list and not packed:
                        # int64 values instead of pointers to int objects: a bisection reads
                        # the array itself, not one scattered object per probe.  (Best fit's
                        # packed entries may not fit 64 bits: they stay a list.)
                        freelists[b] = array("q", fl)
            if x < list_head[b]:
                list_head[b] = x
                class_head = self.class_head
                old = class_head[k]
                if x < old:
                    class_head[k] = x
                    if old == INF:  # the class was empty
                        self.class_mask |= 1 << k
                    g = k >> _GROUP_SHIFT
                    if x < self.group_min[g]:
                        self.group_min[g] = x
            return
        if fl.__class__ is BlockList:
            fl.remove(x)
            head = fl.firsts[0] if fl.firsts else INF
        else:
            del fl[bisect_left(fl, x)]  # type: ignore[arg-type,union-attr]
            head = fl[0] if fl else INF  # type: ignore[index]
        if head == INF:
            freelists[b] = None
        if list_head[b] == x:
            list_head[b] = head
            class_head = self.class_head
            if class_head[k] == x:
                if k < EXACT:
                    base = k << _COLOUR_SHIFT
                    head = min(list_head[base : base + COLOURS])
                class_head[k] = head
                if head == INF:
                    self.class_mask &= ~(1 << k)
                g = k >> _GROUP_SHIFT
                if self.group_min[g] == x:
                    base = g << _GROUP_SHIFT
                    self.group_min[g] = min(class_head[base : base + (1 << _GROUP_SHIFT)])

    # -- runs --------------------------------------------------------------------------------

    def take(self, p: int, u: int, nr: int) -> None:
        """Allocate ``[u, u + nr)`` inside the hole after run ``p``.

        Precondition (the search or the caller's check proved it): the run lies in that hole
        and keeps its guards.  Touches three tags (``p``, ``u``, the next run) and at most
        three free lists.
        """
        runs = self.runs
        w = self._w
        v = runs[p]
        s = p + (v >> self._w2)
        e = p + (v & self._field_mask)
        self._hole(p, s, e, False)
        runs[p] = v - (e - u)  # p's next: e -> u
        runs[u] = (e - u) | (u - p) << w | nr << self._w2
        runs[e] -= (u - p) << w  # e's prev: p -> u
        holes = self.holes - 1
        if s < u:
            holes += 1
            if u - s > (self.slack if s != self.lo else self.slack_lo):
                self._hole(p, s, u, True)  # not a guard remnant
        t = u + nr
        if t < e:
            holes += 1
            if e - t > (self.slack if e != self.top else self.guard):
                self._hole(u, t, e, True)  # not a guard remnant
        self.holes = holes

    def give(self, u: int) -> int:
        """Free the run starting at ``u`` (a live run: the caller checked) and return its
        length; the hole it leaves merges with its neighbours.  Touches three tags."""
        runs = self.runs
        w = self._w
        mask = self._field_mask
        v = runs.pop(u)
        nr = v >> self._w2
        n = u + (v & mask)
        p = u - (v >> w & mask)
        vp = runs[p]
        s = p + (vp >> self._w2)
        t = u + nr
        holes = self.holes + 1
        if s < u:
            holes -= 1
            if u - s > (self.slack if s != self.lo else self.slack_lo):
                self._hole(p, s, u, False)  # not a guard remnant
        if t < n:
            holes -= 1
            if n - t > (self.slack if n != self.top else self.guard):
                self._hole(u, t, n, False)  # not a guard remnant
        runs[p] = vp + (n - u)  # p's next: u -> n
        runs[n] += (u - p) << w  # n's prev: u -> p
        self._hole(p, s, n, True)
        self.holes = holes
        size = len(runs)
        if not size & 255:  # sampled every 256 sizes: the bookkeeping costs one test a free
            if size > self._peak:
                self._peak = size
            elif size < self._peak * 5 >> 3:
                # A CPython dict never shrinks on delete: once 3/8 of the runs are gone, copy
                # it into a table sized for what is left (O(k), amortised O(1) per free).
                self.runs = dict(runs)
                self._peak = size
        return nr

    def set_top(self, top: int) -> None:
        """Move the window top up to ``top`` (Xen's ``vm_top`` growth): the top sentinel moves
        and the hole touching it is re-filed (its end gains no guard at the top)."""
        runs = self.runs
        old = self.top
        last = old - (runs.pop(old) >> self._w & self._field_mask)
        nr_l, _, before = self.unpack(last)
        s = last + nr_l
        if top < s:
            raise ValueError(f"window top {top} below the last run's end {s}")
        if s < old:
            self._hole(last, s, old, False)
        elif s < top:
            self.holes += 1
        self.top = top
        runs[top] = self.pack(top, 0, top, last)
        runs[last] = self.pack(last, nr_l, top, before)
        if s < top:
            self._hole(last, s, top, True)

    def pack(self, u: int, nr: int, nxt: int, prev: int) -> int:
        """The tag of a run at ``u`` of ``nr`` units between the runs at ``prev`` and
        ``nxt``."""
        return (nxt - u) | (u - prev) << self._w | nr << self._w2

    def unpack(self, u: int) -> tuple[int, int, int]:
        """``(nr, next, prev)`` of the tag at ``u`` (KeyError if there is none)."""
        v = self.runs[u]
        mask = self._field_mask
        return v >> self._w2, u + (v & mask), u - (v >> self._w & mask)

    def length(self, u: int) -> int:
        """Length of the run at ``u`` (KeyError if no run starts there)."""
        return self.runs[u] >> self._w2

    def tags(self) -> Iterator[tuple[int, int]]:
        """Every tag as ``(start, nr)``, sentinels included, in dict order (linked or not:
        check() builds the bitmap from these)."""
        w2 = self._w2
        for u, v in self.runs.items():
            yield u, v >> w2

    def run_before(self, u: int) -> int:
        """Start of the run before the run at ``u`` (the floor for the first run)."""
        return u - (self.runs[u] >> self._w & self._field_mask)

    def hole_after(self, p: int) -> tuple[int, int]:
        """The hole ``[s, e)`` after run ``p`` (empty when ``s == e``)."""
        v = self.runs[p]
        return p + (v >> self._w2), p + (v & self._field_mask)

    def usable(self, p: int) -> tuple[int, int]:
        """Usable interval ``[us, ue)`` of the hole after run ``p`` (guards removed)."""
        s, e = self.hole_after(p)
        return s + (self.lead if s == self.lo else self.guard), (
            e if e == self.top else e - self.guard
        )

    def live(self) -> Iterator[tuple[int, int]]:
        """Live runs ``(start, nr)`` in address order (the sentinels excluded).  O(k)."""
        top = self.top
        u = self.unpack(self.floor)[1]
        while u != top:
            nr, nxt, _ = self.unpack(u)
            yield u, nr
            u = nxt

    def gaps(self) -> Iterator[tuple[int, int, int]]:
        """Every hole as ``(id, s, e)`` in address order, guard remnants included.  O(k)."""
        top = self.top
        p = self.floor
        while p != top:
            nr, nxt, _ = self.unpack(p)
            if p + nr < nxt:
                yield p, p + nr, nxt
            p = nxt

    # -- searches ----------------------------------------------------------------------------

    def _start_in(self, p: int, align: int, phase: int) -> int:
        """Lowest start with ``(start - phase) % align == 0`` in the hole after ``p``."""
        s = p + (self.runs[p] >> self._w2)
        us = s + (self.lead if s == self.lo else self.guard)
        return us + ((phase - us) & (align - 1))

    def _suffix_min(self, k: int) -> int:
        """Lowest hole id among classes ``>= k`` (INF if none)."""
        if k >= self.nclasses:
            return INF
        g = k >> _GROUP_SHIFT
        a = min(self.class_head[k : (g + 1) << _GROUP_SHIFT])
        b = min(self.group_min[g + 1 :])
        return a if a < b else b

    def _colour_min(self, k: int, nr: int, align: int, phase: int) -> int:
        """Lowest hole of exact class ``k`` (``nr <= k < EXACT``) that holds ``nr`` units at
        ``align``/``phase`` (``align <= 8``), INF if none.  Every hole of one (length, colour)
        bucket holds the request at the same offset, so the bucket heads decide: all colours
        fit once the slack ``k - nr`` reaches ``align - 1``, else ``FITS`` picks those that do.
        """
        base = k << _COLOUR_SHIFT
        heads = self.list_head[base : base + COLOURS]
        d = k - nr
        if align == 1 or d >= align - 1:
            return min(heads)
        fitting: tuple[int, ...] = FITS[align | phase][d](heads)
        return min(fitting)

    def _lists_of(self, k: int) -> range:
        """Bucket numbers of class ``k``."""
        if k < EXACT:
            return range(k << _COLOUR_SHIFT, (k + 1) << _COLOUR_SHIFT)
        return range(k + _BIG, k + _BIG + 1)

    def first_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> tuple[int, int] | None:
        """``(id, start)`` of the lowest run satisfying every constraint, or None."""
        g = nr + align - 1
        if g < EXACT and align <= COLOURS and not nocross and lo_addr is None and hi_addr is None:
            # The common case (and every Xen call): holes of length >= g always fit, near
            # misses (lengths nr .. g - 1) fit by colour: one min over <= 28 bucket heads.
            grp = g >> _GROUP_SHIFT
            best = min(self.class_head[g : (grp + 1) << _GROUP_SHIFT])
            other = min(self.group_min[grp + 1 :])
            if other < best:
                best = other
            if align > 1:
                base = nr << _COLOUR_SHIFT
                pick = NEAR[align | phase]
                assert pick is not None
                near = min(pick(self.list_head[base : base + ((align - 1) << _COLOUR_SHIFT)]))
                if near < best:
                    best = near
            if best == INF:
                return None
            s = best + (self.runs[best] >> self._w2)
            us = s + (self.lead if s == self.lo else self.guard)
            return best, us + ((phase - us) & (align - 1))
        if lo_addr is not None:
            return self._scan(nr, align, phase, nocross, lo_addr, hi_addr, lowest=True)
        return self._first_fit_near(nr, align, phase, nocross, hi_addr)

    def _first_fit_near(
        self, nr: int, align: int, phase: int, nocross: int, hi_addr: int | None
    ) -> tuple[int, int] | None:
        """First fit from the guaranteed classes' lowest hole, then the near misses below it
        (``align > 8``, ``nocross``, ``max_addr`` or ``G >= 64``): exact ones decided by colour
        when ``align <= 8`` without nocross or window, the others tested one by one."""
        k0 = ceil_class(nr + max(align, nocross) - 1)
        best = self._suffix_min(k0)
        best_c = -1
        if best != INF:
            us, ue = self.usable(best)
            if hi_addr is not None and ue > hi_addr:
                ue = hi_addr
            best_c = fit_in(us, ue, nr, align, phase, nocross)
            if best_c < 0:
                # Only possible when clipped by hi_addr: every later hole lies beyond it.
                best = INF if hi_addr is None else hi_addr
        stop = best if hi_addr is None or best < hi_addr else hi_addr
        by_colour = align <= COLOURS and not nocross and hi_addr is None
        k = size_class(nr)
        mask = (self.class_mask >> k) & ((1 << max(k0 - k, 0)) - 1)
        while mask:
            low = (mask & -mask).bit_length() - 1
            k += low
            mask >>= low
            if by_colour and k < EXACT:
                # An exact near miss with align <= 8: decided by colour, as in the fast path.
                x = self._colour_min(k, nr, align, phase)
                if x < stop:
                    stop = best = x
                    best_c = self._start_in(x, align, phase)
            else:
                for b in self._lists_of(k):
                    fl = self.freelists[b]
                    if fl is None or self.list_head[b] >= stop:
                        continue
                    for p in fl:
                        if p >= stop:
                            break
                        us, ue = self.usable(p)
                        if hi_addr is not None and ue > hi_addr:
                            ue = hi_addr
                        c = fit_in(us, ue, nr, align, phase, nocross)
                        if c >= 0:
                            stop, best, best_c = p, p, c
                            break
            mask >>= 1
            k += 1
        return (best, best_c) if best_c >= 0 else None

    def _scan(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
        *,
        lowest: bool,
    ) -> tuple[int, int] | None:
        """Search every non-empty class from ``size_class(nr)`` up, from ``lo_addr``.

        ``lowest`` True: the lowest fitting start overall (first fit with a window).  False:
        the lowest fitting start of the lowest class that has one (instant-fit's fallback).
        """
        lo_w = self.floor if lo_addr is None else lo_addr
        hi_w = INF if hi_addr is None else hi_addr
        best = INF
        best_c = -1
        k = size_class(nr)
        mask = self.class_mask >> k
        while mask:
            low = (mask & -mask).bit_length() - 1
            k += low
            mask >>= low
            for b in self._lists_of(k):
                fl = self.freelists[b]
                if fl is None:
                    continue
                for p in _entries_from(fl, lo_w):
                    if p >= best or p >= hi_w:
                        break
                    us, ue = self.usable(p)
                    if ue <= lo_w:
                        continue
                    c = fit_in(max(us, lo_w), min(ue, hi_w), nr, align, phase, nocross)
                    if c >= 0:
                        best, best_c = p, c
                        break
            if best_c >= 0 and not lowest:
                return best, best_c
            mask >>= 1
            k += 1
        return (best, best_c) if best_c >= 0 else None

    def instant_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> tuple[int, int] | None:
        """vmem's instant fit: the lowest hole of the smallest non-empty class whose every hole
        is guaranteed to fit; failing that (or with an address window), the lowest fitting
        hole of the lowest class that has one."""
        if lo_addr is None and hi_addr is None:
            k0 = ceil_class(nr + max(align, nocross) - 1)
            above = self.class_mask >> k0
            if above:
                p = self.class_head[k0 + (above & -above).bit_length() - 1]
                us, ue = self.usable(p)
                return p, fit_in(us, ue, nr, align, phase, nocross)
        return self._scan(nr, align, phase, nocross, lo_addr, hi_addr, lowest=False)

    def best_fit(
        self,
        nr: int,
        align: int,
        phase: int,
        nocross: int,
        lo_addr: int | None,
        hi_addr: int | None,
    ) -> tuple[int, int] | None:
        """The lowest start inside the smallest hole (by usable length: what it holds once
        its guards are kept; then by address) that holds the request, or None.  Needs an
        index built ``by_length``."""
        by_colour = lo_addr is None and hi_addr is None and not nocross and align <= COLOURS
        lo_w = self.floor if lo_addr is None else lo_addr
        hi_w = INF if hi_addr is None else hi_addr
        k = size_class(nr)
        mask = self.class_mask >> k
        while mask:
            low = (mask & -mask).bit_length() - 1
            k += low
            mask >>= low
            if by_colour and k < EXACT:
                x = self._colour_min(k, nr, align, phase)
                if x != INF:
                    return x, self._start_in(x, align, phase)
            else:
                best = INF
                best_c = -1
                for b in self._lists_of(k):
                    fl = self.freelists[b]
                    if fl is None:
                        continue
                    # (length, id) order: the first hole that fits is the best in its list.
                    for x in fl:
                        p = self.entry_id(x, b)
                        if p >= best or p >= hi_w:
                            if k < EXACT:
                                break  # one length per list: ids only grow from here
                            continue
                        us, ue = self.usable(p)
                        if ue <= lo_w:
                            continue
                        c = fit_in(max(us, lo_w), min(ue, hi_w), nr, align, phase, nocross)
                        if c >= 0:
                            best, best_c = p, c
                            break
                if best_c >= 0:
                    return best, best_c
            mask >>= 1
            k += 1
        return None

    def hole_holding(self, u: int) -> int | None:
        """Id of the hole on a free list that contains unit ``u``, or None (``u`` is in use,
        or in a guard remnant, which holds nothing).  O(C log n): one bisection per free list
        (a scan of the list for best fit, whose lists sort by length)."""
        for b, fl in enumerate(self.freelists):
            if fl is None:
                continue
            if self.by_length and b >= _FIRST_BIG:
                candidates: Iterator[int] = iter(fl)
            else:
                candidates = islice(_entries_from(fl, u + 1), 1)  # the last id <= u
            for x in candidates:
                p = self.entry_id(x, b)
                s, e = self.hole_after(p)
                if s <= u < e:
                    return p
        return None

    # -- inspection --------------------------------------------------------------------------

    def entry_id(self, x: int, b: int) -> int:
        """The hole id entry ``x`` of free list ``b`` names (best fit packs the length in
        front of the id in the lists of classes >= 64, whose members' lengths differ)."""
        if not self.by_length or b < _FIRST_BIG:
            return x
        return (x & ((1 << self._len_shift) - 1)) + self.floor

    def largest(self) -> int:
        """Length of the longest hole (guard remnants included), 0 if there is none.

        The longest hole's usable length is within two units of the longest usable length,
        so only the holes of the top classes are read; when every hole is a guard remnant
        (no class is non-empty) every hole is.
        """
        if not self.class_mask:
            return max((e - s for _, s, e in self.gaps()), default=0)
        top_k = self.class_mask.bit_length() - 1
        top = max(e - s for _, s, e in self._holes_of(top_k))
        if top <= 4:  # remnants (raw length <= 2) may be the longest
            return max(e - s for _, s, e in self.gaps())
        best = top
        for k in range(size_class(max(top - 4, 1)), top_k):
            for _, s, e in self._holes_of(k):
                best = max(best, e - s)
        return best

    def _holes_of(self, k: int) -> Iterator[tuple[int, int, int]]:
        for b in self._lists_of(k):
            fl = self.freelists[b]
            if fl is not None:
                for x in fl:
                    p = self.entry_id(x, b)
                    s, e = self.hole_after(p)
                    yield p, s, e

    def filing(self, s: int, e: int) -> tuple[int, int, int] | None:
        """``(class, bucket, usable length)`` of the hole ``[s, e)``, or None for a remnant."""
        us = s + (self.lead if s == self.lo else self.guard)
        length = (e if e == self.top else e - self.guard) - us
        if length <= 0:
            return None
        if length < EXACT:
            return length, length << _COLOUR_SHIFT | us & (COLOURS - 1), length
        k = size_class(length)
        return k, k + _BIG, length

    def problem(self) -> str | None:
        """Describe the first broken invariant of the tags, free lists and heads, or None."""
        problem = self._links_problem()
        if problem is None:
            problem = self._lists_problem()
        return problem

    def _links_problem(self) -> str | None:
        runs = self.runs
        top = self.top
        if top not in runs or self.floor not in runs:
            return "a sentinel tag is missing"
        if self.length(self.floor) != self.lo - self.floor or self.length(top) != 0:
            return "a sentinel tag has the wrong length"
        seen = 1
        p = self.floor
        holes = 0
        while p != top:
            nr, nxt, _ = self.unpack(p)
            if nxt not in runs:
                return f"run at {p} links to {nxt}, which has no tag"
            if self.unpack(nxt)[2] != p:
                return f"run at {nxt} does not link back to {p}"
            if nr < 1 or p + nr > nxt:
                return f"run [{p}, {p + nr}) overlaps the next run at {nxt}"
            if self.guard and p + nr == nxt and nxt != top and (p != self.floor or self.lead):
                return f"run at {nxt} has no guard unit before it"
            holes += p + nr < nxt
            seen += 1
            if seen > len(runs):
                return "the run list loops"
            p = nxt
        if seen != len(runs):
            return f"{len(runs) - seen} tag(s) are not on the run list"
        if holes != self.holes:
            return f"hole counter {self.holes} differs from the {holes} holes"
        return None

    def _lists_problem(self) -> str | None:
        want: dict[int, list[int]] = {}
        for p, s, e in self.gaps():
            filed = self.filing(s, e)
            if filed is not None:
                _, b, length = filed
                x = p
                if self.by_length and b >= _FIRST_BIG:
                    x = length << self._len_shift | (p - self.floor)
                want.setdefault(b, []).append(x)
        present = [b for b, fl in enumerate(self.freelists) if fl is not None]
        if present != sorted(want):
            return "the non-empty free lists differ from the holes' buckets"
        want_head = [INF] * len(self.freelists)
        for b in present:
            fl = self.freelists[b]
            if isinstance(fl, BlockList):
                problem = fl.problem()
                if problem:
                    return f"free list {b}: {problem}"
            got = list(fl) if fl is not None else []
            if got != sorted(want[b]):
                return f"free list {b} disagrees with the holes"
            want_head[b] = got[0]
        if self.list_head != want_head:
            return "a free-list head is stale"
        heads = want_head
        want_class = [
            min(heads[k << _COLOUR_SHIFT : (k + 1) << _COLOUR_SHIFT])
            if k < EXACT
            else heads[k + _BIG]
            for k in range(self.nclasses)
        ]
        if self.class_head != want_class:
            return "a class head is stale"
        mask = sum(1 << k for k, head in enumerate(want_class) if head != INF)
        if mask != self.class_mask:
            return "non-empty class mask is stale"
        group = 1 << _GROUP_SHIFT
        want_groups = [min(want_class[i : i + group]) for i in range(0, self.nclasses, group)]
        if self.group_min != [*want_groups, INF]:
            return "a group minimum is stale"
        return None
