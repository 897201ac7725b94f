"""``vaalloc fuzz``: run the built-in differential state machines (vaalloc.testing.fuzz).

Exit status 0 with a summary per target (examples, steps, time); 1 with the shrunk reproducer
of the first failure; 2 for bad options or when hypothesis is not installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from vaalloc.cli._args import positive

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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"seconds must be positive: {text!r}")
    return value


def _fuzz(args: argparse.Namespace) -> int:
    """Run each chosen target with the budget; print a summary or the first reproducer."""
    try:
        from vaalloc.testing.fuzz import run_campaign
    except ImportError:
        print("vaalloc fuzz: needs hypothesis (pip install 'vaalloc[testing]')", file=sys.stderr)
        return 2
    chosen = args.target or ["all"]
    targets = list(TARGET_NAMES) if "all" in chosen else list(dict.fromkeys(chosen))
    examples = None if args.seconds is not None else args.examples
    results = []
    for target in targets:
        result = run_campaign(target, examples=examples, seconds=args.seconds, seed=args.seed)
        results.append(result)
        if not args.json:
            _show(result)
        if result.failure is not None:
            break
    failed = any(r.failure is not None for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "targets": [r.as_dict() for r in results]}, indent=2))
    elif not failed:
        total = sum(r.examples for r in results)
        print(f"all {len(results)} target(s) agree: {total} examples, seed {args.seed}")
    return 1 if failed else 0


def _show(r: CampaignResult) -> None:
    status = "ok" if r.failure is None else "FAILED"
    counts = f"{r.examples:>6} examples {r.steps:>8} steps {r.seconds:>8.2f} s"
    print(f"{r.target:<22} {status:<6} {counts}")
    if r.failure is not None:
        print(f"\nreproducer (seed {r.seed}, found after {r.found_after} examples):")
        print(r.failure)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fuzz`` to the command's sub-parsers."""
    fuzz = sub.add_parser(
        "fuzz", help="fuzz vaalloc's allocators and page tables against reference models"
    )
    fuzz.add_argument(
        "--target",
        action="append",
        choices=[*TARGET_NAMES, "all"],
        help="what to fuzz (repeatable; default: all)",
    )
    budget = fuzz.add_mutually_exclusive_group()
    budget.add_argument("--examples", type=positive, default=100, help="examples per target")
    budget.add_argument("--seconds", type=_seconds, default=None, help="seconds per target")
    fuzz.add_argument("--seed", type=int, default=0, help="random seed (same seed, same run)")
    fuzz.add_argument("--json", action="store_true", help="machine-readable output")
    fuzz.set_defaults(func=_fuzz, target=None)
