"""Benchmark of ``vaalloc replay`` (issue 14): ``python3 -m benchmarks replay``.

Replay speed in records per second, per policy, on two workloads replayed into Xen ARM32's 768MB
VMAP (the region of the issue's question):

* ``ftrace x100``: the captured trace of this project's machine (tests/data/ftrace-vmalloc-
  6.18.44.txt: kernel stacks, 20KB aligned to 16KB, freed lazily, one purge), its records
  repeated 100 times under fresh keys (139 100 records);
* ``mixed``: 100 000 synthetic records in the proportions of a busier machine: stacks (60 %),
  vmalloc buffers of 2-9 pages (20 %), 8KB ioremaps aligned to 8KB (15 %), 0.5-4MB areas (5 %),
  80 % of the frees lazy, a purge whenever the lazy pages pass 16 384 (lazy_max_pages() of a
  two-CPU machine).

Beside each figure, measured in the same run on the same compiled records, the allocator alone:
the policy's ``alloc``/``free`` calls in a bare loop, no bookkeeping.  Their ratio is what the
engine adds (the guard-page bookkeeping, peak tracking, the chart's samples).  Target: >= 100k
records/s per policy.  Figures are medians of ``RUNS`` runs, engine and bare loop alternating.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attrs

from vaalloc.alloc import RangeAllocator
from vaalloc.alloc.linuxvmalloc import LinuxVmalloc
from vaalloc.errors import OutOfSpace
from vaalloc.replay import (
    DEFAULT_POLICIES,
    VMAP_ARM32,
    Alloc,
    Free,
    Purge,
    Record,
    Trace,
    build_trace,
    read_trace,
    replay,
)
from vaalloc.replay.engine import _compile

RUNS = 5
PAGE = 4096
TARGET = 100_000
ROOT = Path(__file__).resolve().parent.parent


def ftrace_x100() -> Trace:
    base = read_trace(ROOT / "tests" / "data" / "ftrace-vmalloc-6.18.44.txt")
    records: list[Record] = []
    for copy in range(100):
        for rec in base.records:
            if isinstance(rec, Alloc):
                rec = attrs.evolve(rec, key=f"{copy}:{rec.key}", addr=None, vstart=None, vend=None)
            elif isinstance(rec, Free):
                rec = attrs.evolve(rec, key=f"{copy}:{rec.key}")
            records.append(rec)
    return _trace(records, "ftrace x100")


def mixed(n: int = 100_000, seed: int = 1) -> Trace:
    rnd = random.Random(seed)
    records: list[Record] = []
    live: list[tuple[int, int]] = []
    lazy = key = 0
    while len(records) < n:
        if live and rnd.random() < 0.49:
            k, pages = live.pop(rnd.randrange(len(live)))
            is_lazy = rnd.random() < 0.8
            records.append(Free(k, lazy=is_lazy))
            lazy += pages if is_lazy else 0
            if lazy > 16_384:
                records.append(Purge())
                lazy = 0
            continue
        r = rnd.random()
        if r < 0.6:
            pages, align = 5, 16 * 1024
        elif r < 0.8:
            pages, align = rnd.randint(2, 9), 1
        elif r < 0.95:
            pages, align = 3, 8 * 1024
        else:
            pages, align = rnd.choice([129, 257, 513, 1025]), 1
        records.append(Alloc(key, pages * PAGE, align, PAGE))
        live.append((key, pages))
        key += 1
    return _trace(records, "mixed")


def _trace(records: list[Record], name: str) -> Trace:
    return build_trace(
        format="vaalloc-json",
        source=name,
        records=records,
        lines=len(records),
        skipped=0,
        notes=[],
        page_size=PAGE,
        addresses=False,
    )


def bare(policy: str, ops: list[tuple[Any, ...]], nkeys: int) -> float:
    """The policy's own calls for the compiled records, nothing else: seconds."""
    lo, hi = VMAP_ARM32.start, VMAP_ARM32.end
    space: Any
    if policy == "linux-vmalloc":
        space = LinuxVmalloc(lo, hi)
    elif policy == "xen_vmap":
        space = RangeAllocator.xen_vmap(lo, hi)
    else:
        space = RangeAllocator(lo, hi, policy=policy)
    linux = policy == "linux-vmalloc"
    alloc, free = space.alloc, space.free
    lazy_free = space.free_lazy if linux else free
    size_at = 2 if linux else 3
    where = [-1] * nkeys
    started = time.perf_counter()
    for op in ops:
        code = op[0]
        if code == 0:
            try:
                va = alloc(op[size_at], op[4])
            except OutOfSpace:
                if not linux:
                    continue
                space.purge()
                va = alloc(op[size_at], op[4])
            where[op[1]] = va
        elif code == 1:
            va = where[op[1]]
            if va >= 0:
                (lazy_free if op[2] else free)(va)
        elif linux:
            space.purge()
    return time.perf_counter() - started


def main() -> None:
    print(__doc__.split("\n\n")[0])
    print(f"medians of {RUNS} runs; region {VMAP_ARM32}\n")
    workloads = [ftrace_x100(), mixed()]
    header = f"{'policy':<15}" + "".join(
        f" {t.source + ' rec/s':>18} {'alloc alone':>12} {'engine':>7}" for t in workloads
    )
    print(header)
    print("-" * len(header))
    slowest: dict[str, float] = {}
    for policy in DEFAULT_POLICIES:
        cells = []
        for trace in workloads:
            ops, _, nkeys, *_ = _compile(trace, VMAP_ARM32, False)
            engine_t, bare_t = [], []
            for _ in range(RUNS):
                (res,) = replay(trace, VMAP_ARM32, [policy]).results
                engine_t.append(res.seconds)
                bare_t.append(bare(policy, ops, nkeys))
            n = len(trace.records)
            rate = n / statistics.median(engine_t)
            alone = len(ops) / statistics.median(bare_t)
            slowest[policy] = min(slowest.get(policy, rate), rate)
            cells.append(f" {rate:>18,.0f} {alone:>12,.0f} {rate / alone:>6.2f}x")
        print(f"{policy:<15}" + "".join(cells))
    worst = min(slowest, key=lambda p: slowest[p])
    verdict = "met" if slowest[worst] >= TARGET else "MISSED"
    print(
        f"\nslowest: {worst} at {slowest[worst]:,.0f} records/s "
        f"(target >= {TARGET:,} per policy: {verdict})"
    )


if __name__ == "__main__":
    main()
