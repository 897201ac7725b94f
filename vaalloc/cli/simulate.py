"""``vaalloc simulate``: live-migration pre-copy of several log-dirty domains on the Xen model.

The scenario: ``domains`` guests of ``ram`` bytes each run ``vcpus`` virtual CPUs on ``cpus``
physical CPUs, scheduled round robin in time slices (so context switches happen whenever there
are more vCPUs than CPUs).  Every guest is migrated at once, in pre-copy rounds:

* round 0 enables log-dirty on every guest and sends all of its RAM;
* while a round sends pages, the guests keep running: a round lasts
  ``ceil(pages_to_send / bandwidth)`` slices, and in each slice every running vCPU makes
  ``rate`` writes, ``hot_share`` of them to a hot working set of ``hot`` x RAM, the rest
  anywhere; the first write to a clean page takes the log-dirty fault;
* at the end of a round ``logdirty.peek(clean=True)`` gives the pages to send next;
* when every guest has at most ``stop_pages`` dirty pages (or after ``max_rounds``), the guests
  are paused and the last dirty pages sent (stop-and-copy).

``superpages`` is the share of each guest's 2MB chunks mapped by a 2MB p2m block (the first
write to one splits it); ``strategy`` picks how the fault handler finds p2m entries
(:mod:`vaalloc.xen.lookup`; the default is the per-domain VLPT).  Each round reports what the
ledger counted: pages sent, guest writes, faults, VLPT reads, ``map_domain_page`` calls,
``xen_second`` slot writes (all of them at enable with the per-domain VLPT, none at context
switch), context switches, TLB maintenance, and stale TLB hits (0: the detector walks the
tables on every TLB hit when ``stale_check`` is on).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from typing import Any

import attrs

from vaalloc.cli._args import (
    Choice,
    Count,
    add_command,
    add_domains,
    add_ram,
    add_seed,
    add_superpages,
    format_size,
    fraction,
)
from vaalloc.cli._output import plural, table, warn
from vaalloc.cli._progress import ProgressBar
from vaalloc.errors import RangeError

__all__ = ["Scenario", "format_report", "register", "run_scenario"]


@attrs.frozen
class Scenario:
    """What ``vaalloc simulate`` runs (see the module docstring for the meaning of each)."""

    domains: int = 3
    ram: int = 2 << 30
    cpus: int = 4
    vcpus: int = 2
    rate: int = 100
    hot: float = 0.02
    hot_share: float = 0.9
    bandwidth: int = 16384
    stop_pages: int = 256
    max_rounds: int = 8
    superpages: float = 0.0
    stale_check: bool = True
    seed: int = 1
    strategy: str = "partitioned"
    check: bool = False


_ROUND_COUNTERS = (
    "faults",
    "spurious_faults",
    "vlpt_reads",
    "xen_second_writes",
    "context_switches",
    "context_switch_slot_writes",
    "tlbi",
    "superpage_splits",
    "map_domain_page",
)


def run_scenario(sc: Scenario, progress: ProgressBar | None = None) -> dict[str, Any]:
    """Run the pre-copy scenario ``sc`` on a fresh :class:`vaalloc.xen.Xen`; return a
    JSON-ready report: ``scenario``, ``domains`` (each with its VLPT slot run), ``rounds``
    (per round: ``pages_sent``, ``writes``, ``slices``, ``dirty`` left after it, the
    ledger counters that grew, ``stale_tlb_hits``), ``totals`` and ``converged``.

    Reproducible for a seed.  Cost: O(RAM) to build and write-protect the p2m tables plus
    O(writes); ``check`` adds an O(RAM) consistency check of the whole model at the end.
    Raises RangeError for a bad scenario, OutOfSpace when the VLPT window cannot hold every
    domain's slots (the window holds 63GB of guest RAM), InvariantError when ``check`` finds
    the model inconsistent; nothing is left half done, since everything lives in the fresh
    model.
    """
    from vaalloc.xen import Xen

    _check(sc)
    bar = progress or ProgressBar(enabled=False)
    rng = random.Random(sc.seed)
    xen = Xen(sc.cpus, lookup=sc.strategy, stale_check=sc.stale_check)
    doms = []
    for k in range(sc.domains):
        bar.update("creating domains", k, sc.domains, force=True)
        doms.append(_create(xen, sc, rng))
    pages = sc.ram >> 12
    hot_pages = max(1, int(pages * sc.hot))
    hot_base = {d.domid: rng.randrange(pages - hot_pages + 1) for d in doms}
    vcpus = [(d, v) for d in doms for v in range(sc.vcpus)]
    to_send = {d.domid: pages for d in doms}
    rounds: list[dict[str, Any]] = []
    slice_no = 0
    converged = False
    for rnd in range(sc.max_rounds + 1):
        final = converged or rnd == sc.max_rounds
        before = xen.ledger.snapshot()
        stale_before = len(xen.stale_hits())
        if rnd == 0:
            for d in doms:
                xen.logdirty.enable(d)
        slices = 0 if final else math.ceil(max(to_send.values()) / sc.bandwidth)
        writes = 0
        for s in range(slices):
            bar.update(f"pre-copy round {rnd}", s, slices)
            writes += _run_slice(xen, vcpus, slice_no, sc, rng, hot_base, hot_pages)
            slice_no += 1
        dirty = {d.domid: len(xen.logdirty.peek(d, clean=True)) for d in doms}
        grew = xen.ledger.since(before)
        rounds.append(
            {
                "round": rnd,
                "kind": "stop-and-copy" if final else "pre-copy",
                "pages_sent": sum(to_send.values()),
                "slices": slices,
                "writes": writes,
                "dirty": sum(dirty.values()),
                **{name: grew.get(name, 0) for name in _ROUND_COUNTERS},
                "stale_tlb_hits": len(xen.stale_hits()) - stale_before,
            }
        )
        if final:
            break
        to_send = dirty
        converged = all(n <= sc.stop_pages for n in dirty.values())
    bar.close()
    if sc.check:  # O(RAM): every table, slot and dirty set against the p2m
        xen.check()
    return _report(xen, sc, doms, rounds, converged)


def _create(xen: Any, sc: Scenario, rng: random.Random) -> Any:
    """A guest of ``sc.ram`` with ``sc.superpages`` of its 2MB chunks left as 2MB blocks (the
    others split to 4KB pages, chosen by ``rng``), as :mod:`vaalloc.studies.workload` builds
    its guests."""
    from vaalloc.xen.layout import SECOND_SIZE

    d = xen.create_domain(sc.ram, superpages=sc.superpages > 0)
    if 0 < sc.superpages < 1:
        chunks = list(range(d.ram_base, d.ram_end, SECOND_SIZE))
        keep = round(len(chunks) * sc.superpages)
        for chunk in sorted(rng.sample(chunks, len(chunks) - keep)):
            d.stage2.split_block(chunk)
        xen.flush_guest_all(d)  # break-before-make of the splits
    return d


def _check(sc: Scenario) -> None:
    """Refuse a scenario the model cannot run, before building anything."""
    from vaalloc.xen.layout import GUEST_RAM_BASE, VLPT_DOMAIN_SLOTS
    from vaalloc.xen.vlptmath import slots_for_ram

    for name in ("domains", "cpus", "vcpus", "bandwidth", "max_rounds"):
        if getattr(sc, name) < 1:
            raise RangeError(f"{name}={getattr(sc, name)} must be at least 1")
    if sc.rate < 0 or sc.stop_pages < 0 or sc.seed < 0:
        raise RangeError(
            f"rate={sc.rate}, stop_pages={sc.stop_pages} and seed={sc.seed} must be >= 0"
        )
    if not 0 <= sc.superpages <= 1:
        raise RangeError(f"superpages={sc.superpages} must be a share from 0 to 1")
    if sc.ram <= 0 or sc.ram % (2 << 20):
        raise RangeError(f"ram={sc.ram:#x} must be a positive multiple of 2M")
    need = sc.domains * slots_for_ram(GUEST_RAM_BASE, sc.ram)
    if sc.strategy == "partitioned" and need > VLPT_DOMAIN_SLOTS:
        raise RangeError(
            f"{plural(sc.domains, 'domain')} of {format_size(sc.ram)} need {need} VLPT slots; "
            f"the window has {VLPT_DOMAIN_SLOTS} (one slot per GB of guest RAM)"
        )


def _run_slice(
    xen: Any,
    vcpus: list[tuple[Any, int]],
    slice_no: int,
    sc: Scenario,
    rng: random.Random,
    hot_base: dict[int, int],
    hot_pages: int,
) -> int:
    """One time slice: place vCPUs on CPUs round robin, switch where needed, make the writes."""
    running = min(sc.cpus, len(vcpus))
    pages = sc.ram >> 12
    writes = 0
    for cpu in range(running):
        d, _ = vcpus[(slice_no * running + cpu) % len(vcpus)]
        if xen.current[cpu] is not d:
            xen.context_switch(cpu, d)
        base = d.ram_base
        hb = hot_base[d.domid]
        for _ in range(sc.rate):
            if rng.random() < sc.hot_share:
                page = hb + rng.randrange(hot_pages)
            else:
                page = rng.randrange(pages)
            xen.guest_write(d, base + (page << 12), cpu)
            writes += 1
    return writes


def _report(
    xen: Any, sc: Scenario, doms: list[Any], rounds: list[dict[str, Any]], converged: bool
) -> dict[str, Any]:
    totals: dict[str, int] = {}
    for r in rounds:
        for key, value in r.items():
            if key not in ("round", "kind", "dirty") and isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    domains = []
    runs = getattr(xen.lookup, "runs", {})  # strategies with per-domain window slots
    for d in doms:
        entry: dict[str, Any] = {"domid": d.domid, "ram": sc.ram}
        run = runs.get(d.domid)
        if run is not None:
            entry.update(vlpt_first_slot=run.first_slot, vlpt_slots=run.nr, vlpt_va=run.va)
        domains.append(entry)
    return {
        "scenario": attrs.asdict(sc),
        "strategy": xen.lookup.name,
        "domains": domains,
        "rounds": rounds,
        "totals": totals,
        "converged": converged,
    }


# Each row of the text table: the JSON key of a round, and its unit.
_ROWS = (
    ("pages_sent", "pages"),
    ("slices", "slices"),
    ("writes", "writes"),
    ("faults", "faults"),
    ("spurious_faults", "faults"),
    ("vlpt_reads", "reads"),
    ("map_domain_page", "calls"),
    ("xen_second_writes", "PTE writes"),
    ("context_switches", "switches"),
    ("context_switch_slot_writes", "PTE writes"),
    ("tlbi", "TLBIs"),
    ("superpage_splits", "splits"),
    ("stale_tlb_hits", "hits"),
    ("dirty", "pages"),
)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary: the scenario, each domain's VLPT slots, then one row per
    JSON key of a round (with its unit) and one column per round, and the verdict."""
    sc = report["scenario"]
    nr_vcpus = sc["domains"] * sc["vcpus"]
    running = min(sc["cpus"], nr_vcpus)
    lines = [
        f"{plural(sc['domains'], 'domain')} x {format_size(sc['ram'])} RAM, "
        f"{plural(sc['vcpus'], 'vCPU')} each: {plural(nr_vcpus, 'vCPU')} on "
        f"{plural(sc['cpus'], 'pCPU')}, {running} running per time slice",
        f"{plural(sc['rate'], 'write')} per vCPU per slice, {plural(sc['bandwidth'], 'page')} "
        f"sent per slice per domain, superpages {sc['superpages']:g}, seed {sc['seed']}, "
        f"p2m lookup strategy {report['strategy']}",
    ]
    for d in report["domains"]:
        if "vlpt_first_slot" not in d:
            continue
        last = d["vlpt_first_slot"] + d["vlpt_slots"] - 1
        lines.append(
            f"  d{d['domid']}: VLPT slots {d['vlpt_first_slot']}..{last} at {d['vlpt_va']:#010x}"
        )
    rounds = report["rounds"]
    header = ["round", "unit", *(str(r["round"]) for r in rounds), "total"]
    kinds = ["kind", "", *(r["kind"] for r in rounds), ""]
    rows = []
    for key, unit in _ROWS:
        total = "" if key == "dirty" else report["totals"].get(key, 0)
        rows.append([key, unit, *(r.get(key, 0) for r in rounds), total])
    lines += ["", table(header, kinds, rows, left=2)]
    stale = "not checked" if not sc["stale_check"] else str(report["totals"]["stale_tlb_hits"])
    verdict = "converged" if report["converged"] else "did not converge"
    pre_copy = len(rounds) - 1
    lines.append("")
    lines.append(f"{verdict} after {plural(pre_copy, 'pre-copy round')}; stale TLB hits: {stale}")
    return "\n".join(lines)


# The 32-bit ARM Xen of the model gives a guest at most this many vCPUs (MAX_VIRT_CPUS, set by
# the GICv2's eight CPU interfaces).
MAX_VIRT_CPUS = 8
# Past this many guest writes in round 0 alone the run takes minutes (the model makes roughly
# 10^5 writes a second, 10^4 faults a second): say so before starting.
_WARN_WRITES = 10_000_000
# Past this many bytes of level-3 p2m entries, building the guests takes minutes and memory.
_WARN_P2M_BYTES = 256 << 20


def _scenario(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Scenario:
    """The scenario the options describe, cross-checked in the options' own terms."""
    from vaalloc.xen.layout import GUEST_RAM_BASE, VLPT_DOMAIN_SLOTS
    from vaalloc.xen.vlptmath import slots_for_ram

    per_domain = slots_for_ram(GUEST_RAM_BASE, args.ram)
    window = VLPT_DOMAIN_SLOTS // args.cpus  # a switched strategy's window per pCPU
    if args.strategy.startswith("switched") and per_domain > window:
        parser.error(
            f"--ram {format_size(args.ram)} spans {per_domain} GB of IPA (a VLPT slot each); "
            f"--strategy {args.strategy} gives each of the {plural(args.cpus, 'pCPU')} a window "
            f"of {window} slots: use fewer --cpus or smaller guests"
        )
    need = args.domains * per_domain
    if args.strategy == "partitioned" and need > VLPT_DOMAIN_SLOTS:
        parser.error(
            f"--domains {args.domains} x --ram {format_size(args.ram)} need {need} VLPT slots "
            f"(one per GB of guest RAM); the window has {VLPT_DOMAIN_SLOTS}: use fewer or "
            "smaller guests, or --strategy hybrid or walk"
        )
    return Scenario(
        domains=args.domains,
        ram=args.ram,
        cpus=args.cpus,
        vcpus=args.vcpus,
        rate=args.rate,
        hot=args.hot,
        hot_share=args.hot_share,
        bandwidth=args.bandwidth,
        stop_pages=args.stop_pages,
        max_rounds=args.max_rounds,
        superpages=args.superpages,
        stale_check=not args.no_stale_check,
        seed=args.seed,
        strategy=args.strategy,
        check=args.check,
    )


def _warn_if_long(sc: Scenario) -> None:
    pages = sc.ram >> 12
    running = min(sc.cpus, sc.domains * sc.vcpus)
    first_round = math.ceil(pages / sc.bandwidth) * running * sc.rate
    if first_round > _WARN_WRITES:
        warn(
            "simulate",
            f"round 0 alone makes {first_round:,} guest writes (the model makes about 100,000 "
            "a second): lower --rate or raise --bandwidth for a quicker run",
        )
    leaf_bytes = int(sc.domains * pages * (1 - sc.superpages)) * 8
    if leaf_bytes > _WARN_P2M_BYTES:
        warn(
            "simulate",
            f"the guests' 4K p2m entries take {format_size(leaf_bytes)} of model memory and "
            "minutes to build: lower --ram or --domains, or raise --superpages",
        )


def _simulate(args: argparse.Namespace) -> int:
    sc = _scenario(args, args.parser)
    _warn_if_long(sc)
    bar = ProgressBar(enabled=False if args.quiet else None)
    report = run_scenario(sc, bar)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


_STRATEGIES = """p2m lookup strategies (--strategy):
  partitioned    per-domain runs of VLPT window slots, installed at log-dirty enable
  switched       one window per CPU, rewritten at every context switch, then TLBIALLH
  switched-va    the same, one TLBIMVAH per window page that was valid
  switched-auto  per-VA flushes up to 33 pages, else TLBIALLH
  switched-lazy  switched, but a plain domain following a log-dirty one leaves the window
  walk           a map_domain_page walk of the p2m per lookup (arm32 domheap)
  walk64         the same walk over arm64's direct map
  hybrid         partitioned while the window has room, walk for the domains that do not fit
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the command's sub-parsers."""
    from vaalloc.xen import LOOKUPS
    from vaalloc.xen.layout import GUEST_RAM_BASE, P2M_IPA_BITS

    d = Scenario()
    p = add_command(
        sub,
        "simulate",
        help="migrate log-dirty domains on the Xen model and report the costs per round",
        description="""
        Live migration (pre-copy) of several log-dirty guests at once on the Xen-on-ARM32
        model. Round 0 enables log-dirty tracking and sends all RAM; while a round sends
        pages the guests keep running and dirty more; the migration stops when every guest
        has at most --stop-pages dirty pages (or after --max-rounds) and ends with a
        stop-and-copy round.

        Prints, per round, what the cost ledger counted (rows named as in --json): pages
        sent, guest writes, log-dirty faults, VLPT reads, map_domain_page calls, xen_second
        slot writes, context switches, TLB maintenance and stale TLB hits.
        """,
        epilog=_STRATEGIES,
    )
    ram_max = (1 << P2M_IPA_BITS) - GUEST_RAM_BASE
    add_domains(p, d.domains, "number of guests, all migrating")
    add_ram(p, d.ram, "2G or 512M")
    p.add_argument(
        "--cpus",
        metavar="N",
        type=Count(1, 32, "the model's limit"),
        default=d.cpus,
        help="physical CPUs",
    )
    p.add_argument(
        "--vcpus",
        metavar="N",
        type=Count(1, MAX_VIRT_CPUS, "Xen on ARM32 gives a guest at most 8 vCPUs, the GICv2 limit"),
        default=d.vcpus,
        help="vCPUs per guest; all of them take turns on the physical CPUs",
    )
    p.add_argument(
        "--rate",
        metavar="N",
        type=Count(0, 1_000_000, "a vCPU's time slice holds far fewer page writes"),
        default=d.rate,
        help="guest writes per vCPU per time slice",
    )
    p.add_argument(
        "--hot", metavar="SHARE", type=fraction, default=d.hot, help="hot working set, share of RAM"
    )
    p.add_argument(
        "--hot-share",
        metavar="SHARE",
        type=fraction,
        default=d.hot_share,
        help="share of writes to the hot set",
    )
    p.add_argument(
        "--bandwidth",
        metavar="PAGES",
        type=Count(1, ram_max >> 12, "more than a guest's pages"),
        default=d.bandwidth,
        help="pages sent per time slice per guest",
    )
    p.add_argument(
        "--stop-pages",
        metavar="PAGES",
        type=Count(0),
        default=d.stop_pages,
        help="stop-and-copy once every guest has at most this many dirty pages",
    )
    p.add_argument(
        "--max-rounds",
        metavar="N",
        type=Count(1, 1000, "a migration that has not converged by then never will"),
        default=d.max_rounds,
        help="pre-copy rounds at most",
    )
    add_superpages(p, d.superpages)
    p.add_argument(
        "--no-stale-check", action="store_true", help="skip the stale-TLB detector (faster)"
    )
    p.add_argument(
        "--strategy",
        type=Choice(tuple(LOOKUPS), "strategy"),
        default=d.strategy,
        metavar="NAME",
        help="p2m lookup strategy of the fault handler, one of those listed below",
    )
    p.add_argument("--check", action="store_true", help="check the whole model at the end")
    add_seed(p, d.seed)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate, parser=p)
