"""The thread's open question, measured: per-domain VLPT slots vs. slots rewritten at every
context switch vs. a map_domain_page walk per lookup, on one seeded workload.

Run: python examples/strategy_comparison.py
"""

from __future__ import annotations

from vaalloc.studies.compare import ARM32, compare, winner
from vaalloc.studies.workload import Workload

# Four 32MB guests on two CPUs, two of them migrating, 1000 context switches per second per CPU.
workload = Workload.standard(domains=4, logdirty=2, switch_rate=1000.0, duration_ms=40.0, seed=7)
results = compare(workload, ARM32)
print(f"{'strategy':<14}{'faults':>8}{'switch slot writes':>20}{'cycles/fault':>14}")
for r in results:
    slots = r.counts.get("context_switch_slot_writes", 0)
    print(f"{r.strategy:<14}{r.faults:>8}{slots:>20}{r.per_fault:>14.0f}")

by_name = {r.strategy: r for r in results}
assert len({r.faults for r in results}) == 1  # the same writes fault under every strategy
assert by_name["partitioned"].counts.get("context_switch_slot_writes", 0) == 0
assert by_name["switched"].counts.get("context_switch_slot_writes", 0) > 0
assert by_name["walk"].counts.get("map_domain_page", 0) > 0
best = winner(results)
assert best is not None
print(f"\ncheapest per write fault here: {best.strategy} ({best.per_fault:.0f} cycles/fault)")
