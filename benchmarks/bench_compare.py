"""Benchmark of ``vaalloc compare`` (issue 5): how fast the model runs each lookup strategy.

Per run: the default ``vaalloc compare`` workload (2 pCPUs, 4 guests of 32MB, 2 migrating,
1000 switches/s/pCPU, 100 simulated ms) under each strategy. Prints, per strategy, the median
wall time of ``--runs`` runs, the model's write faults per second of wall time, and beside it
the *modelled* costs (counts per fault, which do not depend on this machine). Ratios to the
partitioned VLPT are measured side by side in the same run.

Target on a 2-core machine: one comparison point (six strategies) <= 10 s, so a default sweep
(4 rates x 2 log-dirty counts) stays near a minute.

    python benchmarks/bench_compare.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from vaalloc.studies.compare import run_strategy
from vaalloc.studies.workload import Workload

STRATEGIES = ("partitioned", "switched", "switched-va", "walk", "walk64", "hybrid")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    workload = Workload.standard(domains=4, logdirty=2, switch_rate=1000)
    times: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    last = {}
    for _ in range(args.runs):
        for s in STRATEGIES:  # interleaved, so machine noise hits every strategy alike
            t = time.perf_counter()
            last[s] = run_strategy(workload, s)
            times[s].append(time.perf_counter() - t)
    base = statistics.median(times["partitioned"])
    print(f"median of {args.runs} runs; default compare workload; seed {workload.seed}")
    print(
        f"{'strategy':<13}{'wall s':>8}{'x part.':>9}{'faults/s':>10}"
        f"{'maps/fault':>11}{'tlbi/fault':>11}{'miss/fault':>11}{'cyc/fault':>10}"
    )
    total = 0.0
    for s in STRATEGIES:
        wall = statistics.median(times[s])
        total += wall
        r = last[s]
        f = max(r.faults, 1)
        maps = r.counts.get("map_domain_page", 0) + r.counts.get("directmap_maps", 0)
        misses = r.counts.get("hyp_tlb_misses", 0) + r.counts.get("xen_hot_tlb_misses", 0)
        print(
            f"{s:<13}{wall:>8.2f}{wall / base:>9.2f}{r.faults / wall:>10.0f}"
            f"{maps / f:>11.2f}{r.counts.get('tlbi', 0) / f:>11.2f}{misses / f:>11.2f}"
            f"{r.per_fault:>10.0f}"
        )
    verdict = "meets" if total <= 10 else "MISSES"
    print(f"\none comparison point: {total:.1f} s ({verdict} the <= 10 s target)")


if __name__ == "__main__":
    main()
