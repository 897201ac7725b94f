"""``vaalloc compare``: the thread's open question, measured: which p2m lookup costs least.

One run prints a table per strategy (raw ledger counts beside cycles); ``--sweep`` runs every
strategy over switch rates x log-dirty domain counts x window capacities, prints the cycles per
write fault at each point, the winner and the crossovers, and writes a chart per series
(``STEM.svg`` and ``STEM.png``). ``--json`` prints the same data as JSON, counts under the
ledger's names (``xen_second_writes``, ``tlbi:TLBIALLH``, ...).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from vaalloc.cli._args import integer, positive
from vaalloc.studies.compare import Result, SweepPoint, crossovers, winner

__all__ = ["register"]

_DEFAULT = "partitioned,switched,switched-va,switched-lazy,walk,walk64,hybrid"
MB = 1 << 20


def _names(text: str) -> list[str]:
    """Parse a comma-separated list of strategy names (checked by the library)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"no strategy in {text!r}")
    return names


def _floats(text: str) -> list[float]:
    """Parse a comma-separated list of positive numbers."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers: {text!r}")
    return values


def _ints(text: str) -> list[int]:
    """Parse a comma-separated list of integers >= 0."""
    try:
        values = [int(v, 0) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 0: {text!r}")
    return values


def _capacities(text: str) -> list[int | None]:
    """Parse capacities: integers, or ``max`` for the whole window."""
    out: list[int | None] = []
    for item in (v.strip() for v in text.split(",")):
        if item == "max":
            out.append(None)
        elif item:
            out.append(positive(item))
    if not out:
        raise argparse.ArgumentTypeError(f"no capacity in {text!r}")
    return out


def _unit(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected 0..1: {text!r}")
    return value


def _workload_kw(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "domains": args.domains,
        "ram": args.ram * MB,
        "write_rate": args.write_rate,
        "superpages": args.superpages,
        "pcpus": args.pcpus,
        "duration_ms": args.duration,
        "seed": args.seed,
    }


def _compare(args: argparse.Namespace) -> int:
    """Run the comparison (one point, or the sweep) and print it."""
    from vaalloc.studies import compare as cmp
    from vaalloc.studies.workload import Workload

    weights = cmp.parse_weights(args.weights) if args.weights else None
    if args.sweep:
        return _sweep(args, weights)
    workload = Workload.standard(
        logdirty=args.logdirty, switch_rate=args.switch_rate, **_workload_kw(args)
    )
    results = cmp.compare(
        workload,
        args.strategies,
        capacity=args.capacity,
        weights=weights,
        tlb_entries=args.tlb_entries,
    )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    print(
        f"{args.pcpus} pCPUs, {args.domains} domains of {args.ram}MB ({args.logdirty} migrating), "
        f"{args.switch_rate:g} switches/s/pCPU, {args.duration:g} ms, seed {args.seed}"
    )
    print(format_table(results))
    best = cmp.winner(results)
    print(f"\ncheapest per write fault: {best.strategy if best else 'none'}")
    return 0


def _sweep(args: argparse.Namespace, weights: dict[str, float] | None) -> int:
    from vaalloc.cli.chart import sweep_charts, write_chart
    from vaalloc.studies import compare as cmp

    points = cmp.sweep(
        args.strategies,
        rates=args.rates,
        logdirty=args.logdirty_counts,
        capacities=args.capacities,
        weights=weights,
        **_workload_kw(args),
    )
    written: list[str] = []
    if args.chart:
        charts = sweep_charts(points)
        for (ld, cap), chart in charts.items():
            stem = args.chart
            if len(charts) > 1:
                stem += f"-ld{ld}-cap{'max' if cap is None else cap}"
            written += [str(p) for p in write_chart(chart, stem)]
    if args.json:
        print(
            json.dumps(
                {
                    "points": [
                        {
                            "switch_rate": p.switch_rate,
                            "logdirty": p.logdirty,
                            "capacity": p.capacity,
                            "results": [r.as_dict() for r in p.results],
                        }
                        for p in points
                    ],
                    "crossovers": [
                        {
                            "logdirty": c.logdirty,
                            "capacity": c.capacity,
                            "below": c.below,
                            "above": c.above,
                            "rate": round(c.rate, 1),
                        }
                        for c in cmp.crossovers(points)
                    ],
                    "charts": written,
                },
                indent=2,
            )
        )
        return 0
    print(format_sweep(points))
    for path in written:
        print(f"wrote {path}")
    return 0


# --- text output: the study returns numbers, the command lays them out --------------------
_COLUMNS = (
    ("faults", "faults"),
    ("context_switches", "switches"),
    ("context_switch_slot_writes", "sw_slots"),
    ("context_switch_tlbi", "sw_tlbi"),
    ("xen_second_writes", "x2_wr"),
    ("map_domain_page", "mdp"),
    ("tlbi", "tlbi"),
    ("hyp_tlb_misses", "hyp_miss"),
    ("xen_hot_tlb_misses", "xen_miss"),
)


def format_table(results: Sequence[Result]) -> str:
    """A text table: raw counts, then cycles per fault, per switch, and the total."""
    head = "strategy      " + "".join(f"{label:>10}" for _, label in _COLUMNS)
    head += f"{'cyc/fault':>11}{'handler':>9}{'cyc/switch':>11}{'Mcycles':>9}"
    lines = [head]
    for r in results:
        row = f"{r.strategy:<14}" + "".join(f"{r.counts.get(k, 0):>10}" for k, _ in _COLUMNS)
        if not r.supported:
            row += f"{'(window too small: ' + str(int(r.stats['refused'])) + ' refused)':>40}"
        else:
            row += (
                f"{r.per_fault:>11.0f}{r.handler_per_fault:>9.0f}{r.per_switch:>11.0f}"
                f"{r.cycles / 1e6:>9.2f}"
            )
        lines.append(row)
    return "\n".join(lines)


def format_sweep(points: Sequence[SweepPoint]) -> str:
    """Cycles per fault for each point and strategy, the winner, then the crossovers."""
    if not points:
        return "(empty sweep)"
    names = [r.strategy for r in points[0].results]
    head = f"{'ld':>3} {'cap':>4} {'rate/s':>7} " + "".join(f"{n:>14}" for n in names)
    lines = ["cycles per write fault (context switches amortised over faults)", head]
    for p in points:
        cells = "".join(
            f"{(f'{r.per_fault:.0f}' if r.supported and r.faults else 'n/a'):>14}"
            for r in p.results
        )
        best = winner(p.results)
        cap = "max" if p.capacity is None else str(p.capacity)
        lines.append(
            f"{p.logdirty:>3} {cap:>4} {p.switch_rate:>7g} {cells}  "
            f"-> {best.strategy if best else 'none'}"
        )
    cross = crossovers(points)
    lines.append("")
    if not cross:
        lines.append("no crossover in the swept range")
    for c in cross:
        cap = "max" if c.capacity is None else str(c.capacity)
        lines.append(
            f"ld={c.logdirty} cap={cap}: {c.below} cheaper below ~{c.rate:.0f} switches/s/pCPU, "
            f"{c.above} above (between {c.rate_lo:g} and {c.rate_hi:g})"
        )
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare`` to the command's sub-parsers."""
    p = sub.add_parser(
        "compare", help="measure the p2m lookup strategies (VLPT, switched, walk) on a workload"
    )
    p.add_argument("--strategies", type=_names, default=_names(_DEFAULT), help=f"[{_DEFAULT}]")
    p.add_argument("--pcpus", type=positive, default=2, help="physical CPUs [2]")
    p.add_argument("--domains", type=positive, default=4, help="guests, one vCPU each [4]")
    p.add_argument("--logdirty", type=integer, default=2, help="guests migrating [2]")
    p.add_argument("--ram", type=positive, default=32, help="guest RAM in MB, 2MB multiple [32]")
    p.add_argument("--write-rate", type=float, default=20.0, help="guest writes per ms [20]")
    p.add_argument("--superpages", type=_unit, default=0.0, help="share of 2MB p2m blocks [0]")
    p.add_argument("--switch-rate", type=float, default=1000.0, help="switches/s/pCPU [1000]")
    p.add_argument("--duration", type=float, default=100.0, help="simulated ms [100]")
    p.add_argument("--seed", type=int, default=0, help="random seed [0]")
    p.add_argument("--capacity", type=positive, default=None, help="window slots [all]")
    p.add_argument("--tlb-entries", type=positive, default=512, help="TLB entries per CPU")
    p.add_argument("--weights", default="", help="cycle weights, e.g. tlbi:TLBIALLH=200,...")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--sweep", action="store_true", help="sweep rates x log-dirty x capacity")
    p.add_argument("--rates", type=_floats, default=[10.0, 100.0, 1000.0, 10000.0])
    p.add_argument("--logdirty-counts", type=_ints, default=[1, 2], help="for --sweep")
    p.add_argument("--capacities", type=_capacities, default=[None], help="e.g. max,8,2")
    p.add_argument("--chart", default="vaalloc-sweep", help="chart path stem ('' for none)")
    p.set_defaults(func=_compare)
