"""Benchmark of the Xen model's log-dirty path (issues 4 and 10).

Per run: create a 4GB domain (4KB pages), enable log-dirty, take one guest write fault on every
page (1M faults, in a scattered order, spread over two CPUs) with single ``xen.guest_write``
calls, then peek/clean all 1M dirty pages; and, on a 1GB guest, the same faults through the
batch ``xen.guest_write_many``, one batch per CPU's half.  Each run is a fresh interpreter,
alternating today's code with the code before the redesign (:mod:`benchmarks.baseline`; it has
no batch, so its column is the single calls the batch replaces).

Targets on a 2-core machine: enable <= 2 s, peek/clean of 1M pages <= 1.5 s (issue 4); write
faults >= 50k/s one ``guest_write`` at a time on the 4GB guest, and >= 100k/s through
``guest_write_many`` on the 1GB guest (issue 10).

    python3 -m benchmarks xen            (--runs N, --quick for an eighth of the faults)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

GB = 1 << 30

#: (row, target, higher is better) in print order.
ROWS: list[tuple[str, float, bool]] = [
    ("create 4GB domain (s)", 0.0, False),
    ("enable log-dirty, 4GB (s)", 2.0, False),
    ("faults/s, guest_write, 4GB scattered", 50_000.0, True),
    ("peek/clean of the dirty pages (s)", 1.5, False),
    ("faults/s, guest_write_many, 1GB", 100_000.0, True),
    ("ledger: TLB maintenance ops per fault", 0.0, False),
    ("ledger: VLPT reads per fault", 0.0, False),
    ("python loop (ns/iteration)", 0.0, False),
]


def _scattered(n: int) -> list[int]:
    """A permutation of range(n) that jumps across the whole range (stride coprime to n)."""
    stride = 1_000_003
    while n % stride == 0 or stride % 2 == 0:
        stride += 2
    return [(i * stride) % n for i in range(n)]


def _calibrate() -> float:
    start = time.perf_counter()
    x = 0
    for i in range(1_000_000):
        x += i
    return (time.perf_counter() - start) * 1e3


def measure(fraction: int, cpus: int) -> dict[str, float]:
    """One run of every row in this interpreter (today's ``vaalloc`` or the baseline's)."""
    from vaalloc.xen import Xen

    out: dict[str, float] = {ROWS[7][0]: _calibrate()}
    xen = Xen(cpus=cpus)
    start = time.perf_counter()
    d = xen.create_domain(ram=4 * GB)
    out[ROWS[0][0]] = time.perf_counter() - start
    start = time.perf_counter()
    xen.logdirty.enable(d)
    out[ROWS[1][0]] = time.perf_counter() - start
    pages = d.ram_size >> 12
    order = _scattered(pages)[: pages // fraction]
    base = d.ram_base
    write = xen.guest_write
    before = xen.ledger.snapshot()
    start = time.perf_counter()
    for i, page in enumerate(order):
        write(d, base + (page << 12), i % cpus)
    out[ROWS[2][0]] = len(order) / (time.perf_counter() - start)
    cost = xen.ledger.since(before)
    assert cost["faults"] == len(order)
    out[ROWS[5][0]] = cost.get("tlbi", 0) / len(order)
    out[ROWS[6][0]] = cost.get("vlpt_reads", 0) / len(order)
    start = time.perf_counter()
    dirty = xen.logdirty.peek(d, clean=True)
    out[ROWS[3][0]] = time.perf_counter() - start
    assert len(dirty) == len(order)

    xen = Xen(cpus=cpus)
    d = xen.create_domain(ram=1 * GB)
    xen.logdirty.enable(d)
    pages = d.ram_size >> 12
    ipas = [d.ram_base + (page << 12) for page in _scattered(pages)[: pages // fraction]]
    halves = [ipas[cpu::cpus] for cpu in range(cpus)]
    many = getattr(xen, "guest_write_many", None)
    start = time.perf_counter()
    for cpu, batch in enumerate(halves):
        if many is not None:
            many(d, batch, cpu)
        else:  # the baseline: the single calls the batch replaces
            for ipa in batch:
                xen.guest_write(d, ipa, cpu)
    out[ROWS[4][0]] = len(ipas) / (time.perf_counter() - start)
    assert xen.ledger.counts["faults"] == len(ipas)
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks import baseline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="an eighth of the faults")
    args = ap.parse_args(sys.argv[1:])
    fraction = 8 if args.quick else 1
    print(__doc__.split("\n\n")[0])
    now, before = baseline.side_by_side("bench_xen", "measure", [fraction, args.cpus], args.runs)
    share = "all" if fraction == 1 else f"1/{fraction} of the"
    print(f"{args.cpus} CPUs, {share} pages faulted; medians of {args.runs} runs\n")
    baseline.report(ROWS, now, before)


if __name__ == "__main__":
    main()
