"""Benchmark of the range allocator (issue 2): ``python3 -m benchmarks alloc``.

Workload, a fragmented steady state: fill the region to ~60 % with runs of 1-16 granules, free
every other run, then time 20 000 operations alternating ``alloc`` (1-64 granules, align 1-8)
and ``free`` of a random live run.  The same seeded sequence drives

* ``xen_vmap``: vaalloc's O(log n) reproduction of Xen's vm_alloc/vm_free, and
* ``plain``: the line-by-line port of Xen's loop (tests/reference/xen_vmap_plain.py),

side by side at 2**14, 2**16, 196608 (Xen ARM32's 768 MiB VMAP) and 2**20 granules, and checks
that both return the same addresses.  The plain port walks the bitmap, which makes it slow: it
times only the first ``PLAIN_OPS[size]`` operations (the ratio compares both implementations on
those same operations), and its fragmented starting state is copied bit for bit from the fast
one (bitmap, vm_low, vm_top) instead of being rebuilt by 60k of its own allocations.
Then the three generic policies run the same workload (their own placement, so their own
sequence), and tracemalloc measures the free-extent index's memory per hole.

Targets (2-core machine): >= 100k ops/s at every size, >= 25x the plain port at 196608,
per-op cost growing <= 1.5x from 2**14 to 2**20.  Figures are medians of ``RUNS`` runs.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.reference.xen_vmap_plain import PlainXenVmap
from vaalloc.alloc import RangeAllocator
from vaalloc.alloc.extents import FreeIndex
from vaalloc.errors import OutOfSpace

SIZES = (1 << 14, 1 << 16, 196608, 1 << 20)
OPS = 20_000
PLAIN_OPS = {1 << 14: 2_000, 1 << 16: 1_000, 196608: 500, 1 << 20: 200}
RUNS = 5
PLAIN_RUNS = 3
POLICY_RUNS = 3
GRANULE = 4096
BASE = 0x1000_0000

Alloc = Callable[[int, int], "int | None"]
Free = Callable[[int], None]


def fragment(alloc: Alloc, free: Free, granules: int, rnd: random.Random) -> list[int]:
    """Fill to ~60 % with runs of 1-16 granules, then free every other run."""
    runs: list[int] = []
    used = 0
    while used < granules * 6 // 10:
        nr = rnd.randint(1, 16)
        va = alloc(nr, 1)
        if va is None:
            break
        runs.append(va)
        used += nr
    for va in runs[::2]:
        free(va)
    return runs[1::2]


def make_ops(seed: int, n: int) -> list[tuple[int, int, float]]:
    """The operation list: (nr, align, pick) per step; even steps alloc, odd steps free the
    live run at index ``int(pick * len(live))``."""
    rnd = random.Random(seed)
    return [(rnd.randint(1, 64), rnd.randint(1, 8), rnd.random()) for _ in range(n)]


def run_ops(
    alloc: Alloc, free: Free, live: list[int], ops: list[tuple[int, int, float]]
) -> tuple[float, list[int | None], int]:
    """Time the op list; return (seconds, alloc results, failed allocs)."""
    results: list[int | None] = []
    failed = 0
    t0 = time.perf_counter()
    for i, (nr, align, pick) in enumerate(ops):
        if i & 1 and live:
            j = int(pick * len(live))
            va = live[j]
            live[j] = live[-1]  # O(1) removal of a random element
            live.pop()
            free(va)
        else:
            va = alloc(nr, align)
            results.append(va)
            if va is None:
                failed += 1
            else:
                live.append(va)
    return time.perf_counter() - t0, results, failed


def fast_ops(granules: int) -> tuple[Alloc, Free, RangeAllocator]:
    a = RangeAllocator.xen_vmap(BASE, BASE + granules * GRANULE)

    def alloc(nr: int, align: int) -> int | None:
        try:
            return a.alloc(nr, align)
        except OutOfSpace:
            return None

    return alloc, a.free, a


def plain_ops(granules: int) -> tuple[Alloc, Free, PlainXenVmap]:
    p = PlainXenVmap(granules, GRANULE)

    def alloc(nr: int, align: int) -> int | None:
        bit = p.vm_alloc(nr, align)
        return None if bit is None else BASE + bit * GRANULE

    def free(va: int) -> None:
        p.vm_free((va - BASE) // GRANULE)

    return alloc, free, p


def plain_copy(a: RangeAllocator, granules: int) -> tuple[Alloc, Free, PlainXenVmap]:
    """The plain port in exactly the state of the xen_vmap instance ``a``."""
    alloc, free, p = plain_ops(granules)
    p.vm_top = a.vm_top
    p.vm_low = a.vm_low
    p._ensure(p.vm_top)
    for va, nr in a.allocations():  # the bitmap pages are already set by vm_init_type
        first = (va - BASE) // GRANULE
        for bit in range(first, first + nr):
            p.set_bit(bit)
    if sum(w.bit_count() for w in p.bitmap) != a.stats().used:
        raise SystemExit("plain_copy: the copied bitmap differs")
    return alloc, free, p


def policy_ops(granules: int, policy: str) -> tuple[Alloc, Free, RangeAllocator]:
    a = RangeAllocator(BASE, BASE + granules * GRANULE, GRANULE, policy, True)

    def alloc(nr: int, align: int) -> int | None:
        try:
            # Generic align is a power of two: use the same rule as Xen (lowest set bit).
            return a.alloc(nr, align & -align)
        except OutOfSpace:
            return None

    return alloc, a.free, a


def one_run(
    factory: Callable[[int], tuple[Alloc, Free, object]], granules: int, seed: int, nops: int
) -> tuple[float, list[int | None], int]:
    alloc, free, _ = factory(granules)
    live = fragment(alloc, free, granules, random.Random(seed))
    return run_ops(alloc, free, live, make_ops(seed + 1, nops))


def plain_run(granules: int, seed: int, nops: int) -> tuple[float, list[int | None], int]:
    """Fragment with the fast implementation, copy the state into the plain port, time it."""
    alloc, free, a = fast_ops(granules)
    live = fragment(alloc, free, granules, random.Random(seed))
    p_alloc, p_free, _ = plain_copy(a, granules)
    return run_ops(p_alloc, p_free, live, make_ops(seed + 1, nops))


def index_bytes_per_hole(granules: int) -> tuple[float, int]:
    """tracemalloc: bytes of a FreeIndex rebuilt from a fragmented xen_vmap's holes."""
    alloc, free, a = fast_ops(granules)
    live = fragment(alloc, free, granules, random.Random(7))
    run_ops(alloc, free, live, make_ops(8, OPS))
    holes = list(a._index.holes())
    lo, hi = a._index.lo, a._index.hi
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = FreeIndex(
        lo, hi, guard=True, guard_at_lo=True, use_classes=True, use_by_len=False, max_length=hi
    )
    for s, e in holes:
        idx.add(s + 0, e + 0)  # fresh int objects, as a live allocator's holes have
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / max(len(holes), 1), len(holes)


def main() -> None:
    print(__doc__.split("\n\n")[0])
    print(f"medians of {RUNS} runs (plain port: {PLAIN_RUNS} runs of its first ops, below)\n")
    header = (
        f"{'granules':>9} {'xen_vmap ops/s':>15} {'us/op':>7} {'failed':>7} "
        f"{'plain ops':>9} {'plain ops/s':>12} {'fast, same ops':>15} {'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    per_op: dict[int, float] = {}
    ratios: dict[int, float] = {}
    for granules in SIZES:
        fast_t = []
        fast_head_t = []
        plain_t = []
        failed = 0
        nplain = PLAIN_OPS[granules]
        for r in range(RUNS):
            t, _, failed = one_run(fast_ops, granules, 100 + r, OPS)
            fast_t.append(t)
            th, res_head, _ = one_run(fast_ops, granules, 100 + r, nplain)
            fast_head_t.append(th)
            if r < PLAIN_RUNS:
                tp, res_plain, _ = plain_run(granules, 100 + r, nplain)
                plain_t.append(tp)
                if res_plain != res_head:
                    raise SystemExit(f"MISMATCH between xen_vmap and the plain port at {granules}")
        fast = statistics.median(fast_t)
        head = statistics.median(fast_head_t)
        plain = statistics.median(plain_t)
        per_op[granules] = fast / OPS
        ratios[granules] = plain / head
        print(
            f"{granules:>9} {OPS / fast:>15,.0f} {fast / OPS * 1e6:>7.2f} {failed:>7} "
            f"{nplain:>9} {nplain / plain:>12,.0f} {nplain / head:>15,.0f} {plain / head:>6.1f}x"
        )
    growth = per_op[SIZES[-1]] / per_op[SIZES[0]]
    print(f"\nper-op cost growth 2^14 -> 2^20: {growth:.2f}x (target <= 1.5x)")
    print(f"ratio at 196608: {ratios[196608]:.1f}x (target >= 25x)")
    print(f"slowest xen_vmap size: {1 / max(per_op.values()):,.0f} ops/s (target >= 100k)")

    print(
        f"\ngeneric policies, same workload (guard=True, align rounded to its lowest set bit), "
        f"medians of {POLICY_RUNS} runs"
    )
    header = f"{'granules':>9} " + " ".join(
        f"{p:>14}" for p in ("first-fit", "best-fit", "instant-fit")
    )
    print(header + "   (ops/s)")
    print("-" * len(header))
    for granules in SIZES:
        cells = []
        for policy in ("first-fit", "best-fit", "instant-fit"):
            times = [
                one_run(lambda g, p=policy: policy_ops(g, p), granules, 100 + r, OPS)[0]
                for r in range(POLICY_RUNS)
            ]
            cells.append(f"{OPS / statistics.median(times):>14,.0f}")
        print(f"{granules:>9} " + " ".join(cells))

    print("\nfree-extent index memory (tracemalloc, index rebuilt from a fragmented xen_vmap)")
    for granules in SIZES:
        per_hole, holes = index_bytes_per_hole(granules)
        print(f"{granules:>9} granules: {holes:>7} holes, {per_hole:6.0f} bytes/hole")


if __name__ == "__main__":
    main()
