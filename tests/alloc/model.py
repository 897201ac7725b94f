"""A deliberately simple reference model of one generic allocator: a set of live runs.

Placement is decided by brute force over every candidate start (the ranges used in tests are
small), independently of the allocator's free-extent index.  The one thing shared with the code
under test is :func:`vaalloc.alloc.extents.size_class`, because instant-fit's choice is defined
by its size classes.
"""

from __future__ import annotations

from vaalloc.alloc.extents import class_lower_bound, size_class


class Model:
    """Live runs in units (granule numbers) over ``[lo, hi)``."""

    def __init__(self, lo: int, hi: int, policy: str, guard: bool) -> None:
        self.lo, self.hi, self.policy, self.guard = lo, hi, policy, guard
        self.live: dict[int, int] = {}
        self.used = bytearray(hi - lo)

    # -- bookkeeping -------------------------------------------------------------------------

    def take(self, u: int, nr: int) -> None:
        assert all(not self.used[i - self.lo] for i in range(u, u + nr))
        for i in range(u, u + nr):
            self.used[i - self.lo] = 1
        self.live[u] = nr

    def give(self, u: int) -> int:
        nr = self.live.pop(u)
        for i in range(u, u + nr):
            self.used[i - self.lo] = 0
        return nr

    def is_used(self, u: int) -> bool:
        return bool(self.used[u - self.lo])

    def holes(self) -> list[tuple[int, int]]:
        out = []
        s = None
        for u in range(self.lo, self.hi + 1):
            free = u < self.hi and not self.is_used(u)
            if free and s is None:
                s = u
            elif not free and s is not None:
                out.append((s, u))
                s = None
        return out

    # -- placement ---------------------------------------------------------------------------

    def valid(
        self, c: int, nr: int, align: int, phase: int, nocross: int, lo: int, hi: int
    ) -> bool:
        """Whether ``[c, c + nr)`` is a legal placement (constraints, free, guards)."""
        if c < max(lo, self.lo) or c + nr > min(hi, self.hi):
            return False
        if (c - phase) % align:
            return False
        if nocross and c // nocross != (c + nr - 1) // nocross:
            return False
        if any(self.is_used(i) for i in range(c, c + nr)):
            return False
        if self.guard:
            if c > self.lo and self.is_used(c - 1):
                return False
            if c + nr < self.hi and self.is_used(c + nr):
                return False
        return True

    def place(
        self,
        nr: int,
        align: int = 1,
        phase: int = 0,
        nocross: int = 0,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int | None:
        """The start the policy must choose, or None when nothing fits."""
        lo_w = self.lo if lo is None else lo
        hi_w = self.hi if hi is None else hi
        fits = {}  # hole -> lowest valid start in it
        for s, e in self.holes():
            for c in range(s, e - nr + 1):
                if self.valid(c, nr, align, phase, nocross, lo_w, hi_w):
                    fits[(s, e)] = c
                    break
        if not fits:
            return None
        if self.policy == "first-fit":
            return min(fits.values())
        if self.policy == "best-fit":  # smallest usable length, then lowest address
            return min((self.usable_len(s, e), c) for (s, e), c in fits.items())[1]
        return self._instant(fits, nr, align, nocross, lo is None and hi is None)

    def usable_len(self, s: int, e: int) -> int:
        if not self.guard:
            return e - s
        return e - s - (s != self.lo) - (e != self.hi)

    def _instant(
        self, fits: dict[tuple[int, int], int], nr: int, align: int, nocross: int, free_window: bool
    ) -> int:
        if free_window:
            g = nr + max(align, nocross) - 1
            k0 = size_class(g)
            if class_lower_bound(k0) < g:
                k0 += 1
            guaranteed = [
                (size_class(self.usable_len(s, e)), s, e)
                for s, e in self.holes()
                if self.usable_len(s, e) > 0 and size_class(self.usable_len(s, e)) >= k0
            ]
            if guaranteed:
                _, s, e = min(guaranteed)
                return fits[(s, e)]
        return min((size_class(self.usable_len(s, e)), c) for (s, e), c in fits.items())[1]
