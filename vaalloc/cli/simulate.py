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

``strategy`` picks how the fault handler finds p2m entries (:mod:`vaalloc.xen.lookup`; the
default is the per-domain VLPT).  Each round reports what the ledger counted: pages sent, guest
writes, faults, VLPT reads, ``map_domain_page`` calls, ``xen_second`` slot writes (all of them
at enable with the per-domain VLPT, none at context switch), context switches, TLB maintenance,
and stale TLB hits (0: the detector walks the tables on every TLB hit when ``stale_check`` is
on).

"""

from __future__ import annotations

import argparse
import json
import math
import random
from typing import Any

import attrs

from vaalloc.cli._args import integer, parse_size, positive
from vaalloc.cli._progress import ProgressBar
from vaalloc.errors import RangeError

__all__ = ["Scenario", "register", "run_scenario"]


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {text!r}")
    return value


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
    superpages: bool = False
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
        doms.append(xen.create_domain(sc.ram, superpages=sc.superpages))
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


def _check(sc: Scenario) -> None:
    """Refuse a scenario the model cannot run, before building anything."""
    from vaalloc.xen.layout import GUEST_RAM_BASE, VLPT_DOMAIN_SLOTS
    from vaalloc.xen.vlptmath import slots_for_ram

    for name in ("domains", "cpus", "vcpus", "bandwidth", "max_rounds"):
        if getattr(sc, name) < 1:
            raise RangeError(f"{name}={getattr(sc, name)} must be at least 1")
    if sc.rate < 0 or sc.stop_pages < 0:
        raise RangeError(f"rate={sc.rate} and stop_pages={sc.stop_pages} must be >= 0")
    if sc.ram <= 0 or sc.ram % (2 << 20):
        raise RangeError(f"ram={sc.ram:#x} must be a positive multiple of 2MB")
    need = sc.domains * slots_for_ram(GUEST_RAM_BASE, sc.ram)
    if sc.strategy == "partitioned" and need > VLPT_DOMAIN_SLOTS:
        raise RangeError(
            f"{sc.domains} domains of {sc.ram >> 20}MB need {need} VLPT slots; the window "
            f"has {VLPT_DOMAIN_SLOTS} (one slot per GB of guest RAM)"
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
            entry.update(vlpt_first_slot=run.first_slot, vlpt_slots=run.nr, vlpt_va=f"{run.va:#x}")
        domains.append(entry)
    return {
        "scenario": attrs.asdict(sc),
        "strategy": xen.lookup.name,
        "domains": domains,
        "rounds": rounds,
        "totals": totals,
        "converged": converged,
    }


_COLUMNS = (
    ("round", "round", 5),
    ("kind", "kind", 13),
    ("pages_sent", "pages sent", 10),
    ("writes", "writes", 8),
    ("faults", "faults", 8),
    ("vlpt_reads", "VLPT reads", 10),
    ("map_domain_page", "map pages", 9),
    ("xen_second_writes", "slot writes", 11),
    ("context_switches", "switches", 8),
    ("context_switch_slot_writes", "switch slots", 12),
    ("tlbi", "TLBI", 7),
    ("stale_tlb_hits", "stale hits", 10),
    ("dirty", "dirty after", 11),
)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary: the scenario, each domain's VLPT slots, the round table."""
    sc = report["scenario"]
    gb = sc["ram"] / (1 << 30)
    lines = [
        f"{sc['domains']} domains x {gb:g}GB, {sc['cpus']} CPUs, {sc['vcpus']} vCPUs each, "
        f"{sc['rate']} writes/vCPU/slice, {sc['bandwidth']} pages/slice per domain, "
        f"seed {sc['seed']}; p2m lookup strategy {report['strategy']}",
    ]
    for d in report["domains"]:
        if "vlpt_first_slot" not in d:
            continue
        last = d["vlpt_first_slot"] + d["vlpt_slots"] - 1
        lines.append(
            f"  d{d['domid']}: VLPT slots {d['vlpt_first_slot']}..{last} at {d['vlpt_va']}"
        )
    lines.append("")
    lines.append(" ".join(f"{title:>{w}}" for _, title, w in _COLUMNS))
    rows = [*report["rounds"], {"round": "total", "kind": "", **report["totals"], "dirty": ""}]
    for r in rows:
        lines.append(" ".join(f"{r.get(key, 0)!s:>{w}}" for key, _, w in _COLUMNS))
    stale = "not checked" if not sc["stale_check"] else str(report["totals"]["stale_tlb_hits"])
    verdict = "converged" if report["converged"] else "did not converge"
    lines.append("")
    lines.append(
        f"{verdict} after {len(report['rounds']) - 1} pre-copy rounds; stale TLB hits: {stale}"
    )
    return "\n".join(lines)


def _simulate(args: argparse.Namespace) -> int:
    sc = Scenario(
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
    bar = ProgressBar(enabled=False if args.quiet else None)
    report = run_scenario(sc, bar)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _count(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``simulate`` to the command's sub-parsers."""
    d = Scenario()
    p = sub.add_parser(
        "simulate",
        help="migrate log-dirty domains on the Xen model and report the costs per round",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--domains", type=positive, default=d.domains, help="number of guests")
    p.add_argument("--ram", type=parse_size, default=d.ram, help="RAM per guest (e.g. 2G)")
    p.add_argument("--cpus", type=positive, default=d.cpus, help="physical CPUs")
    p.add_argument("--vcpus", type=positive, default=d.vcpus, help="vCPUs per guest")
    p.add_argument("--rate", type=_count, default=d.rate, help="writes per vCPU per slice")
    p.add_argument("--hot", type=_fraction, default=d.hot, help="hot set, share of RAM")
    p.add_argument("--hot-share", type=_fraction, default=d.hot_share, help="writes to it")
    p.add_argument(
        "--bandwidth", type=positive, default=d.bandwidth, help="pages sent per slice per guest"
    )
    p.add_argument("--stop-pages", type=_count, default=d.stop_pages, help="dirty pages to stop at")
    p.add_argument("--max-rounds", type=positive, default=d.max_rounds, help="pre-copy rounds")
    p.add_argument("--superpages", action="store_true", help="map guest RAM with 2MB blocks")
    p.add_argument(
        "--no-stale-check", action="store_true", help="skip the stale-TLB detector (faster)"
    )
    p.add_argument(
        "--strategy",
        default=d.strategy,
        help="p2m lookup strategy of the fault handler (partitioned, switched, walk, ...)",
    )
    p.add_argument("--check", action="store_true", help="check the whole model at the end")
    p.add_argument("--seed", type=integer, default=d.seed, help="random seed")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_simulate)
