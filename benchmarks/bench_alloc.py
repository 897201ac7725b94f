"""Benchmark of the range allocator (issues 2 and 11): ``python3 -m benchmarks alloc``.

Workload, a fragmented steady state: fill the region to ~60 % with runs of 1-16 granules (or
with a fixed number of runs, for the large rows), free every other run, then time batches of
operations alternating ``alloc`` (1-64 granules, align 1-8) and ``free`` of a random live run.
Every row runs today's allocator (index v2) and the first one (index v1: ``vaalloc.alloc`` of
revision 860740a, extracted from git by :func:`benchmarks.baseline.legacy_allocator`) side by
side on the same seeded operations and checks that both
return the same addresses; the peer, ``tlsfallocator`` (sebbbi's OffsetAllocator in C++, the
``bench`` extra), runs the same sizes (it is not first-fit and has no alignment: speed only).

Times are CPU seconds of this process (``time.process_time``: the machine is shared, and a
descheduled process is not a slower allocator), medians of ``BATCHES`` batches of ``OPS``
operations on one state per row.  Memory is tracemalloc's count of everything the allocator
holds (the whole instance), divided by its live allocations and by its holes.
``python3 -m benchmarks alloc --quick`` runs every section small (a smoke run, not figures).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baseline import legacy_allocator
from tests.reference.xen_vmap_plain import PlainXenVmap
from vaalloc.alloc import RangeAllocator
from vaalloc.errors import OutOfSpace

GRANULE = 4096
BASE = 0x1000_0000
OPS = 10_000
BATCHES = 7
SIZES = (1 << 14, 196608, 1 << 20, 1 << 30)
HUGE = 1 << 30
MEMORY_LIVE = (1_000, 10_000, 100_000, 1_000_000)
#: Issue 11's targets, ops/s (and growth, bytes).
TARGET_SMALL, TARGET_ANY, TARGET_1E5, TARGET_1E6 = 150_000, 120_000, 100_000, 80_000
TARGET_BEST, TARGET_INSTANT, TARGET_GROWTH, TARGET_BYTES = 100_000, 150_000, 1.5, 200

Op = tuple[int, int, float]

#: Index v1, the allocator as it was before issue 11 (see the module docstring).
try:
    LegacyAllocator: Any = legacy_allocator()
except LookupError as error:  # a tarball without git history: nothing to compare with
    raise SystemExit(f"bench_alloc: {error}; run it from a git checkout") from None


def make(impl: type, policy: str, granules: int) -> Any:
    """An allocator of ``impl`` (today's or the legacy class) for ``policy`` over the region."""
    end = BASE + granules * GRANULE
    if policy == "xen_vmap":
        return impl.xen_vmap(BASE, end)
    return impl(BASE, end, GRANULE, policy, True)


def fill(a: Any, granules: int, rnd: random.Random, runs: int | None = None) -> list[int]:
    """Fill to ~60 % (or with ``runs`` runs) of 1-16 granules, then free every other run;
    return the live addresses."""
    vas: list[int] = []
    used = 0
    limit = granules * 6 // 10
    while used < limit and (runs is None or len(vas) < runs):
        nr = rnd.randint(1, 16)
        try:
            vas.append(a.alloc(nr, 1))
        except OutOfSpace:
            break
        used += nr
    for va in vas[::2]:
        a.free(va)
    return vas[1::2]


def make_ops(seed: int, n: int) -> list[Op]:
    """(nr, align, pick) per step; even steps alloc, odd steps free the live run at index
    ``int(pick * len(live))``."""
    rnd = random.Random(seed)
    return [(rnd.randint(1, 64), rnd.randint(1, 8), rnd.random()) for _ in range(n)]


def run_ops(a: Any, live: list[int], ops: list[Op], xen: bool) -> tuple[float, list[int | None]]:
    """Run the ops; return (CPU seconds, alloc results).  A generic instance gets the align
    rounded to its lowest set bit (Xen's rule; generic align is a power of two)."""
    results: list[int | None] = []
    alloc, free = a.alloc, a.free
    t0 = time.process_time()
    for i, (nr, align, pick) in enumerate(ops):
        if i & 1 and live:
            j = int(pick * len(live))
            va = live[j]
            live[j] = live[-1]  # O(1) removal of a random element
            live.pop()
            free(va)
        else:
            try:
                va = alloc(nr, align if xen else align & -align)
            except OutOfSpace:
                results.append(None)
                continue
            results.append(va)
            live.append(va)
    return time.process_time() - t0, results


Config = tuple[str, int, "int | None"]  # policy, granules, runs filled (None: to ~60 %)


def speeds(
    configs: list[Config], seed: int, batches: int, ops: int
) -> dict[Config, tuple[float, float]]:
    """ops/s of today's allocator and the legacy one for each config, one state each, medians
    of ``batches`` batches run round-robin over every state (so that all of a section's
    figures, and the ratios between them, see the same machine); placements must be
    identical."""
    states = []
    for policy, granules, runs in configs:
        for impl in (RangeAllocator, LegacyAllocator):
            a = make(impl, policy, granules)
            states.append((a, fill(a, granules, random.Random(seed), runs), policy == "xen_vmap"))
    times: list[list[float]] = [[] for _ in states]
    for b in range(batches):
        batch = make_ops(seed + 1 + b, ops)
        order = range(len(states)) if b % 2 == 0 else reversed(range(len(states)))
        results: dict[int, list[int | None]] = {}
        for k in order:
            a, live, xen = states[k]
            t, results[k] = run_ops(a, live, batch, xen)
            times[k].append(t)
        for c, config in enumerate(configs):
            if results[2 * c] != results[2 * c + 1]:
                raise SystemExit(f"MISMATCH: v2 and v1 placed differently ({config})")
    rates = [ops / statistics.median(t) for t in times]
    return {config: (rates[2 * c], rates[2 * c + 1]) for c, config in enumerate(configs)}


def speed(
    policy: str, granules: int, runs: int | None, seed: int, batches: int, ops: int
) -> tuple[float, float]:
    """(v2, v1) ops/s for one config (see :func:`speeds`)."""
    return speeds([(policy, granules, runs)], seed, batches, ops)[policy, granules, runs]


def peer_speed(granules: int, runs: int | None, seed: int, batches: int, ops: int) -> float:
    """ops/s of tlsfallocator's OffsetAllocator on the same sizes (no alignment)."""
    import TLSFAllocator

    nodes = 4 * (runs if runs is not None else granules // 8) + 4096
    a = TLSFAllocator.OffsetAllocator(min(granules, (1 << 32) - 1), nodes)
    rnd = random.Random(seed)
    held = []
    used = 0
    while used < granules * 6 // 10 and (runs is None or len(held) < runs):
        nr = rnd.randint(1, 16)
        h = a.allocate(nr)
        if h.offset == 0xFFFF_FFFF:
            break
        held.append(h)
        used += nr
    for h in held[::2]:
        a.free(h)
    live = held[1::2]
    times = []
    for b in range(batches):
        batch = make_ops(seed + 1 + b, ops)
        allocate, free = a.allocate, a.free
        t0 = time.process_time()
        for i, (nr, _align, pick) in enumerate(batch):
            if i & 1 and live:
                j = int(pick * len(live))
                h = live[j]
                live[j] = live[-1]
                live.pop()
                free(h)
            else:
                h = allocate(nr)
                if h.offset != 0xFFFF_FFFF:
                    live.append(h)
        times.append(time.process_time() - t0)
    return ops / statistics.median(times)


def have_peer() -> bool:
    try:
        import TLSFAllocator  # noqa: F401
    except ImportError:
        return False
    return True


def memory_region(live_target: int) -> int:
    """Granules of the region the memory rows use for ``live_target`` live runs."""
    return 1 << (64 * live_target - 1).bit_length()


def memory(impl: type, policy: str, live_target: int) -> tuple[float, float, float, float]:
    """tracemalloc bytes of one whole allocator per live allocation and per hole at
    ``live_target`` live runs, twice: right after filling 2N runs of 1-16 granules and freeing
    every other ("filled"), then after N more alloc/free operations of 1-16 granules ("steady",
    the state a long-lived allocator is in).  The region is the power of two of at least 64N
    granules (about three times what the fill uses).  Returns (filled per live, filled per
    hole, steady per live, steady per hole)."""
    rnd = random.Random(7)
    ops = [(rnd.randint(1, 16), 1, rnd.random()) for _ in range(live_target)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    granules = memory_region(live_target)
    a = make(impl, policy, granules)
    live = fill(a, granules, random.Random(8), 2 * live_target)
    out = []
    for churn in (False, True):
        if churn:
            run_ops(a, live, ops, policy == "xen_vmap")
        held = sys.getsizeof(live) + sum(sys.getsizeof(va) for va in live)  # the benchmark's
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - base - held
        stats = a.stats()
        out += [size / stats.live, size / stats.holes]
    tracemalloc.stop()
    return out[0], out[1], out[2], out[3]


def bitmap_upkeep(
    granules: int, runs: int | None, seed: int, ops: int
) -> tuple[float, float, float]:
    """What keeping the bitmap on the hot path would cost, against building it on demand.

    Replays the bit runs that ``ops`` operations set and clear (recorded from a v2 xen_vmap
    instance) on a ChunkedBitmap holding the same state, as the alloc and free paths would
    have to: returns (ns of bitmap upkeep per op, ns per v2 op, ms to build the bitmap from
    the tags with ``bitmap()``).
    """
    a = make(RangeAllocator, "xen_vmap", granules)
    live = fill(a, granules, random.Random(seed), runs)
    batch = make_ops(seed + 1, ops)
    t0 = time.process_time()
    bitmap = a.bitmap()
    build = time.process_time() - t0
    events: list[tuple[bool, int, int]] = []
    alloc, free = a.alloc, a.free
    t0 = time.process_time()
    for i, (nr, align, pick) in enumerate(batch):
        if i & 1 and live:
            j = int(pick * len(live))
            va = live[j]
            live[j] = live[-1]
            live.pop()
            u = (va - BASE) // GRANULE
            events.append((False, u, free(va)))
        else:
            try:
                va = alloc(nr, align)
            except OutOfSpace:
                continue
            live.append(va)
            events.append((True, (va - BASE) // GRANULE, nr))
    op_time = time.process_time() - t0
    set_run, clear_run = bitmap.set_run, bitmap.clear_run
    t0 = time.process_time()
    for is_set, u, nr in events:
        if is_set:
            set_run(u, nr)
        else:
            clear_run(u, nr)
    upkeep = time.process_time() - t0
    if bitmap.popcount() != a.stats().used:
        raise SystemExit("bitmap_upkeep: the replayed bitmap differs from the allocator's")
    return upkeep / ops * 1e9, op_time / ops * 1e9, build * 1e3


def plain_ratio(granules: int, nops: int, seed: int) -> tuple[float, float]:
    """xen_vmap against the line-by-line port of Xen's loop on the same ops, the plain port
    starting from a state copied bit for bit (its own fill would take minutes)."""
    a = make(RangeAllocator, "xen_vmap", granules)
    live = fill(a, granules, random.Random(seed), None)
    p = PlainXenVmap(granules, GRANULE)
    p.vm_top, p.vm_low = a.vm_top, a.vm_low
    p._ensure(p.vm_top)
    for va, nr in a.allocations():
        first = (va - BASE) // GRANULE
        for bit in range(first, first + nr):
            p.set_bit(bit)

    class Plain:
        def alloc(self, nr: int, align: int) -> int:
            bit = p.vm_alloc(nr, align)
            if bit is None:
                raise OutOfSpace("plain port: vm_alloc returned NULL")
            return BASE + bit * GRANULE

        def free(self, va: int) -> None:
            p.vm_free((va - BASE) // GRANULE)

    batch = make_ops(seed + 1, nops)
    plain_live = list(live)
    tp, rp = run_ops(Plain(), plain_live, batch, True)
    tf, rf = run_ops(a, live, batch, True)
    if rp != rf:
        raise SystemExit(f"MISMATCH between xen_vmap and the plain port at {granules}")
    return nops / tf, nops / tp


# -- the report ---------------------------------------------------------------------------


def _k(x: float) -> str:
    return f"{x / 1000:,.0f}k"


def _row(label: str, old: float, new: float, target: float, higher: bool = True) -> None:
    met = new >= target if higher else new <= target
    if higher:
        cells = f"{_k(old):>10} {_k(new):>10} {new / old:>6.2f}x {'>= ' + _k(target):>9}"
    else:
        cells = f"{old:>9.2f}x {new:>9.2f}x {'':>7} {'<= ' + str(target) + 'x':>9}"
    print(f"{label:<46} {cells}  {'met' if met else 'MISSED'}", flush=True)


def main(argv: list[str]) -> None:
    quick = "--quick" in argv or os.environ.get("VAALLOC_BENCH_QUICK") == "1"
    batches, ops = (2, 1_000) if quick else (BATCHES, OPS)
    sizes = (1 << 12, 1 << 14) if quick else SIZES[:3]
    huge_live = (1_000, 2_000) if quick else (100_000, 1_000_000)
    mem_live = (500, 1_000) if quick else MEMORY_LIVE
    print(__doc__.split("\n\n")[0])
    load = os.getloadavg()[0]
    note = " [quick: a smoke run, not figures]" if quick else ""
    print(f"CPU time, medians of {batches} batches of {ops} ops; load {load:.1f} (2 cores){note}")
    peer = have_peer()
    if not peer:
        print("note: tlsfallocator is not installed (pip install '.[bench]'): no peer row")

    rows: dict[tuple[str, str], tuple[float, float]] = {}
    print(f"\n{'measure':<46} {'v1 today':>10} {'v2 now':>10} {'v2/v1':>7} {'target':>9}")
    for policy in ("xen_vmap", "first-fit"):
        # The last column: the region grows to 2**30 granules, the work stays that of 2**20.
        same_work = 2 * len(
            fill(make(RangeAllocator, policy, sizes[-1]), sizes[-1], random.Random(100))
        )
        configs: list[Config] = [(policy, g, None) for g in sizes] + [(policy, HUGE, same_work)]
        got = speeds(configs, 100, batches, ops)
        for (_, granules, runs), (new, old) in got.items():
            key = str(granules) if runs is None else "huge"
            rows[policy, key] = (new, old)
            label = f"{granules} granules" if runs is None else "2^30 granules (same fill)"
            target = TARGET_SMALL if granules == sizes[0] else TARGET_ANY
            _row(f"{policy} ops/s at {label}", old, new, target)
    for policy in ("xen_vmap", "first-fit"):
        small, big = rows[policy, str(sizes[0])], rows[policy, str(sizes[-1])]
        _row(
            f"{policy} cost growth {sizes[0]} -> {sizes[-1]}",
            small[1] / big[1],
            small[0] / big[0],
            TARGET_GROWTH,
            higher=False,
        )
    for live, target in zip(huge_live, (TARGET_1E5, TARGET_1E6), strict=True):
        configs = [(policy, HUGE, 2 * live) for policy in ("first-fit", "xen_vmap")]
        for (policy, _, _), (new, old) in speeds(configs, 200, max(3, batches - 2), ops).items():
            rows[policy, f"live{live}"] = (new, old)
            _row(f"{policy} ops/s, 2^30 granules, {live:,} live", old, new, target)
    configs = [(policy, sizes[-1], None) for policy in ("best-fit", "instant-fit")]
    for (policy, _, _), (new, old) in speeds(configs, 100, batches, ops).items():
        rows[policy, str(sizes[-1])] = (new, old)
        target = TARGET_BEST if policy == "best-fit" else TARGET_INSTANT
        _row(f"{policy} ops/s at {sizes[-1]} granules", old, new, target)

    print(
        f"\nmemory (tracemalloc, whole allocator): bytes per live allocation / per hole; "
        f"target <= {TARGET_BYTES} per live; region 2^{memory_region(mem_live[0]).bit_length() - 1}"
        f"..2^{memory_region(mem_live[-1]).bit_length() - 1} granules"
    )
    print(
        f"{'live':>9} {'policy':<12} {'v1 filled':>11} {'v2 filled':>11} {'v1 steady':>11} "
        f"{'v2 steady':>11}"
    )
    for live in mem_live:
        for policy in ("xen_vmap", "first-fit", "best-fit"):
            if policy != "xen_vmap" and live > 100_000:
                continue  # tracemalloc makes a million-run fill slow: one policy there
            v1 = memory(LegacyAllocator, policy, live)
            v2 = memory(RangeAllocator, policy, live)
            cells = [f"{v[i]:.0f}/{v[i + 1]:.0f}" for i in (0, 2) for v in (v1, v2)]
            print(f"{live:>9,} {policy:<12} " + " ".join(f"{c:>11}" for c in cells), flush=True)

    if peer:
        print("\npeer: tlsfallocator (OffsetAllocator, C++ TLSF; no alignment, not first-fit)")
        print(f"{'state':<32} {'peer ops/s':>11} {'v2 xen_vmap':>12} {'peer / v2':>10}")
        for label, granules, runs, key in (
            (f"{sizes[0]} granules", sizes[0], None, str(sizes[0])),
            (f"{sizes[-1]} granules", sizes[-1], None, str(sizes[-1])),
            (f"2^30, {huge_live[0]:,} live", HUGE, 2 * huge_live[0], f"live{huge_live[0]}"),
            (f"2^30, {huge_live[1]:,} live", HUGE, 2 * huge_live[1], f"live{huge_live[1]}"),
        ):
            rate = peer_speed(granules, runs, 100 if runs is None else 200, batches, ops)
            ours = rows["xen_vmap", key][0]
            print(f"{label:<32} {_k(rate):>11} {_k(ours):>12} {rate / ours:>9.1f}x", flush=True)

    print("\nthe bitmap: kept on the alloc/free path (v1) or built from the tags on demand (v2)")
    for label, granules, runs in (
        (f"{sizes[-1]} granules", sizes[-1], None),
        (f"2^30, {huge_live[0]:,} live", HUGE, 2 * huge_live[0]),
    ):
        upkeep, per_op, build = bitmap_upkeep(granules, runs, 300, ops)
        print(
            f"{label:<28} upkeep {upkeep:4.0f} ns/op = {upkeep / per_op:4.0%} of a v2 op "
            f"({per_op:,.0f} ns); bitmap() builds it in {build:.1f} ms"
        )

    granules, nops = (1 << 14, 200) if quick else (196608, 500)
    fast, plain = plain_ratio(granules, nops, 100)
    print(
        f"\nxen_vmap against the plain port of vm_alloc at {granules} granules, first {nops} "
        f"ops: {_k(fast)} vs {plain:,.0f} ops/s = {fast / plain:,.0f}x (issue 2: >= 25x)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
