"""``vaalloc fuzz``: run the built-in differential state machines (vaalloc.testing.fuzz).

Exit status 0 with a line per target as it finishes and a summary; 1 with the shrunk
reproducer of the first failure; 2 for bad options or when hypothesis is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from vaalloc.cli._args import Choice, Count, Number, add_command, add_seed
from vaalloc.cli._output import plural, warn
from vaalloc.cli._progress import ProgressBar

if TYPE_CHECKING:
    from vaalloc.testing.fuzz import CampaignResult

__all__ = ["register"]

# Kept here (not imported from vaalloc.testing) so that `vaalloc --help` works without
# hypothesis; tests check that it equals vaalloc.testing.fuzz.TARGETS.
TARGET_NAMES = (
    "alloc-first-fit",
    "alloc-best-fit",
    "alloc-instant-fit",
    "xen-vmap",
    "pagetable-armv7-s1",
    "pagetable-armv7-s2",
    "pagetable-aarch64-s1",
    "pagetable-aarch64-s2",
    "walk-armv7-s1",
)
DEFAULT_EXAMPLES = 100  # vaalloc.testing.fuzz.DEFAULT_EXAMPLES (checked by the tests)
MAX_JOBS = 64


def _plan(args: argparse.Namespace, targets: list[str]) -> str:
    procs = plural(args.jobs, "process", "processes")
    if args.seconds is not None:
        share = args.seconds * args.jobs / len(targets)
        return (
            f"fuzzing {plural(len(targets), 'target')} for {args.seconds:g} s in all "
            f"({share:.3g} s of process time each) on {procs}, seeds from {args.seed}"
        )
    examples = args.examples or DEFAULT_EXAMPLES
    return (
        f"fuzzing {plural(len(targets), 'target')}, {plural(examples, 'example')} each, "
        f"on {procs}, seed {args.seed}"
    )


def _fuzz(args: argparse.Namespace) -> int:
    """Run the chosen targets with the budget; print a line per target and a summary, or the
    first reproducer."""
    try:
        from vaalloc.testing.fuzz import run_campaigns
    except ImportError:
        print(
            "vaalloc fuzz: needs hypothesis: pip install -e '.[testing]' from a checkout, "
            "or pip install 'vaalloc[testing]'",
            file=sys.stderr,
        )
        return 2
    chosen = args.target or ["all"]
    targets = list(TARGET_NAMES) if "all" in chosen else list(dict.fromkeys(chosen))
    examples = None if args.seconds is not None else (args.examples or DEFAULT_EXAMPLES)
    cpus = os.cpu_count() or 1
    if args.jobs > cpus:
        warn("fuzz", f"--jobs {args.jobs} on a machine with {plural(cpus, 'CPU')}")
    if not args.json:
        print(_plan(args, targets), flush=True)
    bar = ProgressBar(enabled=False if args.quiet else None)
    t0 = time.monotonic()
    finished: list[CampaignResult] = []

    def tick() -> None:
        if args.seconds is not None:
            elapsed = min(time.monotonic() - t0, args.seconds)
            bar.update("fuzz", int(elapsed * 1000), int(args.seconds * 1000))
        else:
            bar.update("fuzz", len(finished), len(targets))

    def on_example(target: str, n: int) -> None:
        if args.seconds is not None:
            tick()
        else:
            bar.update(target, n, examples or 1)

    def on_result(r: CampaignResult) -> None:
        finished.append(r)
        bar.close()
        if not args.json:
            _show(r)

    results = run_campaigns(
        targets,
        examples=examples,
        seconds=args.seconds,
        seed=args.seed,
        jobs=args.jobs,
        on_result=on_result,
        on_example=on_example,
        on_tick=tick,
    )
    bar.close()
    failed = any(r.failure is not None for r in results)
    if args.json:
        report = {
            "ok": not failed,
            "seed": args.seed,
            "jobs": args.jobs,
            "examples": examples,
            "seconds": args.seconds,
            "targets": [r.as_dict() for r in results],
        }
        print(json.dumps(report, indent=2))
    elif not failed:
        total = sum(r.examples for r in results)
        steps = sum(r.steps for r in results)
        first, last = min(r.seed for r in results), max(r.last_seed for r in results)
        seeds = f"seed {first}" if first == last else f"seeds {first}..{last}"
        print(
            f"all {plural(len(results), 'target')} agree: {plural(total, 'example')}, "
            f"{plural(steps, 'step')} in {time.monotonic() - t0:.1f} s, {seeds}"
        )
    return 1 if failed else 0


def _show(r: CampaignResult) -> None:
    status = "ok" if r.failure is None else "FAILED"
    seeds = f"seed {r.seed}" if r.seed == r.last_seed else f"seeds {r.seed}..{r.last_seed}"
    discarded = f" (+{r.discarded} discarded)" if r.discarded else ""
    print(
        f"{r.target:<21} {status:<6} {r.examples:>7} examples{discarded:<17} "
        f"{r.steps:>8} steps {r.seconds:>8.2f} s  {seeds}",
        flush=True,
    )
    if r.failure is not None:
        print(f"\nreproducer (seed {r.failing_seed}, found after {r.found_after} examples):")
        print(r.failure)
        print(
            f"\nrun it again: vaalloc fuzz --target {r.target} "
            f"--examples {r.failing_examples} --seed {r.failing_seed}",
            flush=True,
        )


_EPILOG = """\
targets:
  alloc-first-fit, alloc-best-fit, alloc-instant-fit
                        the range allocator's policies against a brute-force interval model
  xen-vmap              RangeAllocator.xen_vmap against Xen's vm_alloc loop, statement by
                        statement (vm_low and vm_top compared after every step)
  pagetable-armv7-s1, pagetable-armv7-s2, pagetable-aarch64-s1, pagetable-aarch64-s2
                        PageTable map/unmap/protect and walks against a dict of pages
  walk-armv7-s1         the walk of random raw tables against a plain ARMv7 hyp walker

budget: --examples N gives every target N examples; --seconds S is the budget of the whole
run, split evenly across the targets. --jobs N runs N processes: with --seconds each target is
fuzzed by N of them at once, each on its own seeds (seed, seed+N, ...), so the run still takes
S seconds and each target gets N times the time; with --examples the targets are spread over
the processes and the run is the same as with one.

A campaign on several machines is several --seed ranges: a run uses the seeds from --seed up
(each line shows the range it used); give each machine a --seed far from the others', e.g.
machine k: --seed k*1000000.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fuzz`` to the command's sub-parsers."""
    p = add_command(
        sub,
        "fuzz",
        help="fuzz vaalloc's allocators, page tables and walks against reference models",
        description="""
        Fuzz vaalloc against plain reference implementations with hypothesis state machines
        (the ones vaalloc.testing offers for your own port). Prints a line per target as it
        finishes (examples, steps, seconds, seeds) and a summary, and exits 0; on the first
        failure, prints the shrunk reproducer and the command that runs it again, and exits
        1. The same seed and --examples give the same run.
        """,
        epilog=_EPILOG,
    )
    p.add_argument(
        "--target",
        action="append",
        type=Choice((*TARGET_NAMES, "all"), "target"),
        metavar="NAME",
        help="what to fuzz, repeatable: a target listed below or all (default: all)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--examples",
        type=Count(1, 10_000_000, "hours per target; use --seconds for long campaigns"),
        default=None,
        metavar="N",
        help=f"examples per target (default: {DEFAULT_EXAMPLES})",
    )
    budget.add_argument(
        "--seconds",
        type=Number(0, 30 * 24 * 3600, "30 days"),
        default=None,
        metavar="S",
        help="wall-clock budget of the whole run, split across the targets",
    )
    add_seed(p, 0, "first seed")
    p.add_argument(
        "--jobs",
        type=Count(1, MAX_JOBS),
        default=1,
        metavar="N",
        help="processes to fuzz with",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_fuzz, target=None)
