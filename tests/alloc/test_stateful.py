"""Stateful tests: each policy against the brute-force reference model (tests/alloc/model.py).

Every step compares the exact address chosen with the model's, every failed call must leave
the snapshot unchanged, and ``check()`` plus the statistics are invariants.
"""

from __future__ import annotations

import json

import hypothesis.strategies as st
from hypothesis import assume
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from tests.alloc.model import Model
from vaalloc.alloc import InUse, RangeAllocator
from vaalloc.errors import AlignmentError, InvalidFree, OutOfSpace, RangeError

GRANULE = 4096
ALIGNS = st.sampled_from([1, 1, 1, 2, 4, 8, 16])
NOCROSS = st.sampled_from([0, 0, 0, 8, 16, 64])


class AllocatorMachine(RuleBasedStateMachine):
    """One allocator of a given policy against :class:`Model`."""

    policy = "first-fit"
    runs = Bundle("runs")
    kids = Bundle("kids")

    @initialize(
        base=st.integers(0, 40),
        size=st.integers(1, 260),
        guard=st.booleans(),
    )
    def setup(self, base: int, size: int, guard: bool) -> None:
        self.a = RangeAllocator(
            base * GRANULE, (base + size) * GRANULE, GRANULE, self.policy, guard, name="sm"
        )
        self.m = Model(base, base + size, self.policy, guard)

    def unchanged_after(self, call, *errors):  # type: ignore[no-untyped-def]
        before = self.a.snapshot()
        try:
            call()
        except errors:
            assert self.a.snapshot() == before, "a failed call changed the state"
            return True
        return False

    @rule(
        target=runs,
        nr=st.integers(1, 24) | st.integers(25, 300),
        align=ALIGNS,
        phase_seed=st.integers(0, 15),
        nocross=NOCROSS,
        window=st.none()
        | st.tuples(
            st.integers(0, 260), st.integers(1, 260), st.sampled_from(["both", "min", "max"])
        ),
    )
    def alloc(self, nr, align, phase_seed, nocross, window):  # type: ignore[no-untyped-def]
        phase = phase_seed % align if phase_seed < 8 else 0
        lo = hi = None
        kwargs = {}
        if window is not None:
            lo = min(self.m.lo + window[0], self.m.hi - 1)
            hi = min(lo + window[1], self.m.hi)
            if window[2] == "min":
                hi = None
                kwargs = {"min_addr": lo * GRANULE}
            elif window[2] == "max":
                lo = None
                kwargs = {"max_addr": hi * GRANULE}
            else:
                kwargs = {"min_addr": lo * GRANULE, "max_addr": hi * GRANULE}
        if nocross and phase % min(align, nocross) + nr > nocross:
            failed = self.unchanged_after(
                lambda: self.a.alloc(nr, align, phase=phase, nocross=nocross, **kwargs),
                AlignmentError,
            )
            assert failed
            return None
        want = self.m.place(nr, align, phase, nocross, lo, hi)
        if want is None:
            assert self.unchanged_after(
                lambda: self.a.alloc(nr, align, phase=phase, nocross=nocross, **kwargs),
                OutOfSpace,
            )
            return None
        va = self.a.alloc(nr, align, phase=phase, nocross=nocross, **kwargs)
        assert va == want * GRANULE, (va // GRANULE, want)
        assert (va // GRANULE - phase) % align == 0
        self.m.take(want, nr)
        return va

    @rule(va=consumes(runs))
    def free(self, va):  # type: ignore[no-untyped-def]
        if va is None:
            return
        assert self.a.size(va) == self.m.live[va // GRANULE]
        assert self.a.free(va) == self.m.give(va // GRANULE)

    @rule(offset=st.integers(-2, 300))
    def free_bad(self, offset):  # type: ignore[no-untyped-def]
        u = self.m.lo + offset
        assume(u not in self.m.live)
        assert self.unchanged_after(lambda: self.a.free(u * GRANULE), InvalidFree)

    @rule(target=runs, offset=st.integers(0, 259), nr=st.integers(1, 12))
    def reserve(self, offset, nr):  # type: ignore[no-untyped-def]
        u = self.m.lo + offset
        assume(u < self.m.hi)
        if u + nr > self.m.hi:
            assert self.unchanged_after(lambda: self.a.reserve(u * GRANULE, nr), RangeError)
            return None
        if not self.m.valid(u, nr, 1, 0, 0, self.m.lo, self.m.hi):
            assert self.unchanged_after(lambda: self.a.reserve(u * GRANULE, nr), OutOfSpace)
            return None
        assert self.a.reserve(u * GRANULE, nr) == u * GRANULE
        self.m.take(u, nr)
        return u * GRANULE

    @rule(target=kids, nr=st.integers(1, 40), align=ALIGNS, child_guard=st.booleans())
    def carve(self, nr, align, child_guard):  # type: ignore[no-untyped-def]
        want = self.m.place(nr, align)
        if want is None:
            assert self.unchanged_after(
                lambda: self.a.carve(nr, align, guard=child_guard), OutOfSpace
            )
            return None
        child = self.a.carve(nr, align, name=f"kid@{want}", guard=child_guard)
        assert (child.start, child.end) == (want * GRANULE, (want + nr) * GRANULE)
        assert child.parent is self.a and child.policy == self.policy
        self.m.take(want, nr)
        # The parent refuses to free a carved range directly.
        assert self.unchanged_after(lambda: self.a.free(child.start), InvalidFree)
        # Use the child a little: it is a full allocator of its own.
        sub = Model(want, want + nr, self.policy, child_guard)
        for n in (1, 2, 3):
            w = sub.place(n)
            if w is None:
                continue
            assert child.alloc(n) == w * GRANULE
            sub.take(w, n)
        child.check()
        if sub.live:
            assert self.unchanged_after(child.release, InUse)
            for u in list(sub.live):
                child.free(u * GRANULE)
        return child

    @rule(child=consumes(kids))
    def release(self, child):  # type: ignore[no-untyped-def]
        if child is None:
            return
        child.release()
        assert child.released
        self.m.give(child.start // GRANULE)
        assert self.unchanged_after(child.release, RangeError)

    @rule()
    def snapshot_roundtrip(self) -> None:
        snap = self.a.snapshot()
        self.a.restore(json.loads(json.dumps(snap)))
        assert self.a.snapshot() == snap

    @invariant()
    def consistent(self) -> None:
        if not hasattr(self, "a"):
            return
        self.a.check()
        stats = self.a.stats()
        used = sum(self.m.live.values())
        holes = self.m.holes()
        assert stats.used == used
        assert stats.free == stats.total - used == len(self.m.used) - used
        assert stats.live == len(self.m.live)
        assert stats.holes == len(holes)
        assert stats.largest_free == max((e - s for s, e in holes), default=0)
        assert [(va // GRANULE, nr) for va, nr in self.a.allocations()] == sorted(
            self.m.live.items()
        )


class FirstFitMachine(AllocatorMachine):
    policy = "first-fit"


class BestFitMachine(AllocatorMachine):
    policy = "best-fit"


class InstantFitMachine(AllocatorMachine):
    policy = "instant-fit"


TestFirstFit = FirstFitMachine.TestCase
TestBestFit = BestFitMachine.TestCase
TestInstantFit = InstantFitMachine.TestCase
