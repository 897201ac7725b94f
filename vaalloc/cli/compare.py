"""``vaalloc compare``: the thread's open question, measured: which p2m lookup costs least.

One run prints one column per strategy: the raw ledger counts of the run, then the cycles they
cost (per write fault, per context switch, in all); ``--sweep`` runs every strategy over switch
rates x log-dirty domain counts x window capacities and prints the cycles per write fault at
each point, the winner and the crossovers; ``--chart FILE`` also draws the sweep.  ``--json``
prints the same data under the same names (the ledger's counter names, ``per_fault``...).

The study itself (:mod:`vaalloc.studies.compare`) returns numbers only; this module checks the
options in the user's terms, reports progress, and lays the numbers out.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vaalloc.cli._args import (
    Choice,
    Count,
    ListOf,
    Number,
    add_command,
    add_domains,
    add_ram,
    add_seed,
    add_superpages,
    format_size,
)
from vaalloc.cli._output import plural, table, warn, write_chart_or_fail
from vaalloc.cli._progress import ProgressBar
from vaalloc.cli.plot import Panel, Series, chart_path
from vaalloc.studies.compare import Result, SweepPoint, crossovers, winner

__all__ = ["LEGEND", "format_sweep", "format_table", "register", "sweep_chart"]

_DEFAULT = ("partitioned", "switched", "switched-va", "switched-lazy", "walk", "walk64", "hybrid")
MB = 1 << 20

# The rows of the one-point table: a counter of the ledger (JSON ``counts.NAME``) or a cost
# (JSON ``NAME``), its unit, and what it is.  --help and docs/command.md print this legend.
_COUNT_ROWS = (
    ("faults", "faults", "log-dirty write faults (same for every strategy)"),
    ("context_switches", "switches", "context switches between domains"),
    ("context_switch_slot_writes", "PTE writes", "xen_second slots written by context switches"),
    ("context_switch_tlbi", "TLBIs", "TLB maintenance issued by context switches"),
    ("xen_second_writes", "PTE writes", "xen_second writes in all (enable, switch, p2m)"),
    ("map_domain_page", "calls", "map_domain_page calls (the walks)"),
    ("tlbi", "TLBIs", "TLB maintenance operations in all"),
    ("hyp_tlb_misses", "misses", "hyp TLB misses of reads through a Xen VA"),
    ("xen_hot_tlb_misses", "misses", "hyp TLB refills of Xen's own code and data"),
)
_COST_ROWS = (
    ("per_fault", "cycles/fault", "cycles per fault, switches amortised over faults"),
    ("handler_per_fault", "cycles/fault", "the fault handler's own cycles per fault"),
    ("per_switch", "cycles/switch", "cycles per context switch"),
    ("cycles", "cycles", "everything counted, weighted (--weights)"),
)
_SWEEP_COLUMNS = (
    ("logdirty", "domains", "log-dirty (migrating) domains"),
    ("capacity", "slots", "window slots the strategies may use (max: all)"),
    ("switch_rate", "switches/s/pCPU", "context switches per second per pCPU"),
    ("STRATEGY", "cycles/fault", "per_fault of each strategy (n/a: window full)"),
    ("winner", "", "the supported strategy with the lowest per_fault"),
)


def _legend() -> str:
    width = max(len(n) for n, _, _ in (*_COUNT_ROWS, *_COST_ROWS, *_SWEEP_COLUMNS))
    lines = ["rows of the table, units in its second column"]
    lines.append("(JSON: counts.NAME for the counts, NAME for the costs):")
    lines += [f"  {n:<{width}}  {what}" for n, _, what in (*_COUNT_ROWS, *_COST_ROWS)]
    lines += ["", "columns of --sweep, units in its second header row"]
    lines.append("(JSON: points[].NAME, points[].results[].per_fault):")
    lines += [f"  {n:<{width}}  {what}" for n, _, what in _SWEEP_COLUMNS]
    lines += [
        "",
        "Cycles are a weighted sum of the counts (the default weights and their reasons:",
        "docs/strategies.md); the counts do not depend on the weights.",
    ]
    return "\n".join(lines)


#: The legend of the table and the sweep, as ``vaalloc compare --help`` prints it.
LEGEND = _legend()

# Model throughput is about 35,000 guest writes a second: past this many in all, say so.
_WARN_WRITES = 5_000_000


# --- checks in the options' terms, before any work ------------------------------------------
def _check(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from vaalloc.xen.layout import VLPT_DOMAIN_SLOTS

    counts = args.logdirty_counts if args.sweep else [args.logdirty]
    option = "--logdirty-counts" if args.sweep else "--logdirty"
    for ld in counts:
        if ld > args.domains:
            parser.error(f"{option} {ld} is more than --domains {args.domains}")
    caps = args.capacities if args.sweep else [args.capacity]
    for cap in caps:
        if cap is None:
            continue
        switched = [s for s in args.strategies if s.startswith("switched")]
        if switched and cap * args.pcpus > VLPT_DOMAIN_SLOTS:
            parser.error(
                f"capacity {cap} x --pcpus {args.pcpus} is more than the window's "
                f"{VLPT_DOMAIN_SLOTS} slots: {switched[0]} gives each pCPU its own sub-window"
            )
    if args.chart is not None and not args.sweep:
        parser.error("--chart draws the sweep: add --sweep")
    points = len(args.rates) * len(args.logdirty_counts) * len(args.capacities)
    runs = len(args.strategies) * (points if args.sweep else 1)
    writes = min(args.pcpus, args.domains) * args.write_rate * args.duration * runs
    if writes > _WARN_WRITES:
        warn(
            "compare",
            f"{plural(runs, 'run')} of about {writes / runs:,.0f} guest writes each (the model "
            "makes about 35,000 a second): lower --duration or --write-rate for a quicker answer",
        )


def _workload_kw(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "domains": args.domains,
        "ram": args.ram,
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

    _check(args, args.parser)
    bar = ProgressBar(enabled=False if args.quiet else None)
    if args.sweep:
        return _sweep(args, bar)
    workload = Workload.standard(
        logdirty=args.logdirty, switch_rate=args.switch_rate, **_workload_kw(args)
    )
    results: list[Result] = []
    for k, name in enumerate(args.strategies):
        bar.update(f"strategy {name}", k, len(args.strategies), force=True)
        results += cmp.compare(
            workload,
            [name],
            capacity=args.capacity,
            weights=args.weights,
            tlb_entries=args.tlb_entries,
        )
    bar.close()
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    print(
        f"{plural(args.pcpus, 'pCPU')}, {plural(args.domains, 'domain')} x "
        f"{format_size(args.ram)} RAM ({args.logdirty} migrating), "
        f"{args.switch_rate:g} switches/s/pCPU, {args.duration:g} ms simulated, "
        f"seed {args.seed}\n"
    )
    print(format_table(results))
    best = cmp.winner(results)
    print(f"\ncheapest per write fault: {best.strategy if best else 'none'}")
    return 0


def _sweep(args: argparse.Namespace, bar: ProgressBar) -> int:
    from vaalloc.studies import compare as cmp

    grid = [
        (cap, ld, rate)
        for cap in args.capacities
        for ld in args.logdirty_counts
        for rate in args.rates
    ]
    points: list[SweepPoint] = []
    for k, (cap, ld, rate) in enumerate(grid):
        bar.update(f"sweep point {k + 1}/{len(grid)}", k, len(grid), force=True)
        points += cmp.sweep(
            args.strategies,
            rates=[rate],
            logdirty=[ld],
            capacities=[cap],
            weights=args.weights,
            **_workload_kw(args),
        )
    bar.close()
    if args.json:
        print(json.dumps(_sweep_json(points), indent=2))
    else:
        print(format_sweep(points))
    return write_chart_or_fail("compare", args.chart, lambda path: sweep_chart(points, path))


def _sweep_json(points: Sequence[SweepPoint]) -> dict[str, Any]:
    return {
        "points": [
            {
                "switch_rate": p.switch_rate,
                "logdirty": p.logdirty,
                "capacity": p.capacity,
                "winner": _winner_name(p),
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
                "rate_lo": c.rate_lo,
                "rate_hi": c.rate_hi,
            }
            for c in crossovers(points)
        ],
    }


def _winner_name(p: SweepPoint) -> str | None:
    best = winner(p.results)
    return best.strategy if best else None


# --- text: the study returns numbers, the command lays them out ---------------------------
def _cost(value: float) -> str:
    return "n/a" if math.isinf(value) else f"{value:.0f}"


def format_table(results: Sequence[Result]) -> str:
    """One column per strategy; a row per count (named as in the JSON ``counts``) and per cost
    (``per_fault``, ``handler_per_fault``, ``per_switch``, ``cycles``), each with its unit.
    A strategy whose window was too small shows ``n/a`` costs and a note under the table."""
    header = ["name", "unit", *(r.strategy for r in results)]
    rows: list[list[object]] = []
    for key, unit, _ in _COUNT_ROWS:
        rows.append([key, unit, *(r.counts.get(key, 0) for r in results)])
    for key, unit, _ in _COST_ROWS:
        rows.append(
            [key, unit, *(_cost(getattr(r, key)) if r.supported else "n/a" for r in results)]
        )
    lines = [table(header, None, rows, left=2)]
    for r in results:
        if not r.supported:
            refused = int(r.stats.get("refused", 0))
            lines.append(
                f"{r.strategy}: window too small, {plural(refused, 'log-dirty enable')} "
                "refused: its costs are not comparable (raise --capacity)"
            )
    return "\n".join(lines)


def format_sweep(points: Sequence[SweepPoint]) -> str:
    """Cycles per fault for each point and strategy, the winner, then the crossovers."""
    if not points:
        return "(empty sweep)"
    names = [r.strategy for r in points[0].results]
    header = ["logdirty", "capacity", "switch_rate", *names, "winner"]
    units = ["domains", "slots", "switches/s/pCPU", *["cycles/fault"] * len(names), ""]
    rows = []
    for p in points:
        cells = [_cost(r.per_fault) if r.supported and r.faults else "n/a" for r in p.results]
        cap = "max" if p.capacity is None else str(p.capacity)
        rows.append([p.logdirty, cap, f"{p.switch_rate:g}", *cells, _winner_name(p) or "none"])
    lines = [
        "cycles per write fault (per_fault: context switches amortised over the faults)",
        "",
        table(header, units, rows, left=0),
        "",
    ]
    cross = crossovers(points)
    if not cross:
        lines.append("no crossover in the swept range")
    for c in cross:
        cap = "max" if c.capacity is None else str(c.capacity)
        lines.append(
            f"logdirty {c.logdirty}, capacity {cap}: {c.below} cheaper below "
            f"~{c.rate:.0f} switches/s/pCPU, {c.above} above "
            f"(between {c.rate_lo:g} and {c.rate_hi:g})"
        )
    return "\n".join(lines)


def sweep_chart(points: Sequence[SweepPoint], path: Path) -> Path:
    """Draw the sweep to ``path`` (format from the suffix): one panel per (log-dirty domains,
    capacity) series, cycles per write fault against the switch rate (log scale), one line per
    strategy (a log y scale when the costs span more than 4x), a dotted marker where the
    winner changes.  Raises ChartError."""
    from vaalloc.cli.plot import write_chart

    series: dict[tuple[int, int | None], list[SweepPoint]] = {}
    for p in points:
        series.setdefault((p.logdirty, p.capacity), []).append(p)
    panels = []
    for (ld, cap), pts in series.items():
        pts = sorted(pts, key=lambda p: p.switch_rate)
        names = [r.strategy for r in pts[0].results]
        lines = [
            Series(
                name,
                [p.switch_rate for p in pts],
                [_per_fault(p.result(name)) for p in pts],
            )
            for name in names
        ]
        markers = [
            (c.rate, f"{c.below} → {c.above} ~{c.rate:.0f}/s")
            for c in crossovers(pts)
            if _wins(pts, c.rate_lo, c.below) and _wins(pts, c.rate_hi, c.above)
        ]
        where = f"{plural(ld, 'log-dirty domain')}, window {'max' if cap is None else cap}"
        values = [y for line in lines for y in line.y if math.isfinite(y) and y > 0]
        # Switched strategies grow tenfold with the switch rate while the others stay within a
        # few percent of each other: a log scale keeps both readable.
        ylog = bool(values) and max(values) > 4 * min(values)
        label = f"cycles per write fault{' (log)' if ylog else ''}\n({where})"
        panels.append(Panel(label, lines, ylog=ylog, markers=markers))
    return write_chart(
        path,
        title="vaalloc compare --sweep: p2m lookup cost per write fault",
        xlabel="context switches per second per pCPU (switch_rate, log scale)",
        panels=panels,
        xlog=True,
    )


def _per_fault(r: Result) -> float:
    return r.per_fault if r.supported and r.faults else math.nan


def _wins(points: Sequence[SweepPoint], rate: float, name: str) -> bool:
    return any(p.switch_rate == rate and _winner_name(p) == name for p in points)


# --- options -----------------------------------------------------------------------------
def _weights(text: str) -> dict[str, float]:
    from vaalloc.errors import RangeError
    from vaalloc.studies.compare import parse_weights

    try:
        return parse_weights(text)
    except RangeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Capacity:
    """A window capacity in slots, or ``max`` (the whole window, JSON ``null``)."""

    def __init__(self, slots: Count) -> None:
        self.slots = slots

    def __call__(self, text: str) -> int | None:
        return None if text.strip() == "max" else self.slots(text)

    def show(self, value: int | None) -> str:
        return "max" if value is None else str(value)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``compare`` to the command's sub-parsers."""
    from vaalloc.xen import LOOKUPS
    from vaalloc.xen.layout import VLPT_DOMAIN_SLOTS

    p = add_command(
        sub,
        "compare",
        help="measure the p2m lookup strategies (VLPT, switched, walk) on one workload",
        description="""
        Run one seeded workload (guests on physical CPUs, some of them migrating under
        log-dirty tracking) once per p2m lookup strategy on the Xen-on-ARM32 model, and print
        what each one cost: ledger counts, then cycles per write fault, per context switch and
        in all. --sweep repeats it over switch rates x log-dirty domain counts x window
        capacities and prints the cheapest strategy at each point and where the order of two
        strategies flips; --chart FILE draws the sweep.

        Strategies: partitioned, switched, switched-va, switched-auto, switched-lazy, walk,
        walk64, hybrid (vaalloc simulate --help describes each).
        """,
        epilog=LEGEND,
    )
    slots = Count(1, VLPT_DOMAIN_SLOTS, "the VLPT window has 63 slots for domains")
    p.add_argument(
        "--strategies",
        type=ListOf(Choice(tuple(LOOKUPS), "strategy")),
        default=list(_DEFAULT),
        metavar="NAME,...",
        help="strategies to run, in this order",
    )
    p.add_argument(
        "--pcpus",
        type=Count(1, 32, "the model's limit"),
        default=2,
        metavar="N",
        help="physical CPUs",
    )
    add_domains(p, 4, "guests, one vCPU each")
    p.add_argument(
        "--logdirty",
        type=Count(0),
        default=2,
        metavar="N",
        help="guests migrating (at most --domains)",
    )
    add_ram(p, 32 * MB, "32M or 1G")
    p.add_argument(
        "--write-rate",
        type=Number(0, 1e6),
        default=20.0,
        metavar="PER_MS",
        help="guest writes per ms of vCPU time",
    )
    add_superpages(p, 0.0)
    p.add_argument(
        "--switch-rate",
        type=Number(0, 1e6),
        default=1000.0,
        metavar="PER_S",
        help="time slices per second per pCPU (the sweep takes --rates)",
    )
    p.add_argument(
        "--duration",
        type=Number(0, 1e7),
        default=100.0,
        metavar="MS",
        help="simulated time, ms",
    )
    add_seed(p, 0)
    p.add_argument(
        "--capacity",
        type=slots,
        default=None,
        metavar="SLOTS",
        help="window slots the strategies may use (default: the whole window)",
    )
    p.add_argument(
        "--tlb-entries",
        type=Count(1, 1 << 16, "far more than any Cortex-A TLB"),
        default=512,
        metavar="N",
        help="TLB entries per CPU",
    )
    p.add_argument(
        "--weights",
        type=_weights,
        default=None,
        metavar="NAME=CYCLES,...",
        help="override cycle weights, e.g. tlbi:TLBIALLH=200,hyp_walk_reads=40",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--sweep", action="store_true", help="sweep rates x log-dirty x capacities")
    p.add_argument(
        "--rates",
        type=ListOf(Number(0, 1e6)),
        default=[10.0, 100.0, 1000.0, 10000.0],
        metavar="PER_S,...",
        help="switch rates of the sweep, switches/s/pCPU",
    )
    p.add_argument(
        "--logdirty-counts",
        type=ListOf(Count(0)),
        default=[1, 2],
        metavar="N,...",
        help="log-dirty domain counts of the sweep",
    )
    p.add_argument(
        "--capacities",
        type=ListOf(_Capacity(slots)),
        default=[None],
        metavar="SLOTS,...",
        help="window capacities of the sweep, slots or max, e.g. max,8,2",
    )
    p.add_argument(
        "--chart",
        type=chart_path,
        default=None,
        metavar="FILE",
        help="also draw the sweep to FILE (.png, .svg or .pdf; needs matplotlib)",
    )
    p.set_defaults(func=_compare, parser=p)
