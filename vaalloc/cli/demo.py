"""``vaalloc demo``: one request stream placed by every allocator policy and by Xen's vm_alloc."""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from vaalloc.cli._args import Address, Count, add_command, add_seed, format_size
from vaalloc.cli._output import table
from vaalloc.cli._progress import ProgressBar
from vaalloc.errors import OutOfSpace

__all__ = ["register", "run_demo"]

_POLICIES = ("first-fit", "best-fit", "instant-fit")
GRANULE = 4096
MAX_RUN = 8  # granules per request, at most


def max_ops(start: int, end: int) -> int:
    """The most first-pass allocations that always fit ``[start, end)``: every request may
    take ``MAX_RUN`` granules plus a guard, and Xen's bitmap pages come off the top.  (The
    second pass usually fits too; :func:`run_demo` says when it does not.)"""
    granules = (end - start) // GRANULE
    bitmap_pages = -(-granules // (8 * GRANULE))
    return max(0, (granules - bitmap_pages) // (MAX_RUN + 1))


def run_demo(
    start: int, end: int, ops: int, seed: int, progress: ProgressBar | None = None
) -> dict[str, dict[str, Any]]:
    """Place one seeded request stream with every policy and with ``xen_vmap``: ``ops``
    allocations of 1 to 8 granules, every other one freed, then ``ops // 2`` more; return, per
    allocator, the first placements after the frees (integers) and its final statistics.
    Raises OutOfSpace when the range cannot hold them (always when ``ops`` is more than
    :func:`max_ops`, sometimes below it: the holes left by the frees may be too small)."""
    from vaalloc.alloc import RangeAllocator

    bar = progress or ProgressBar(enabled=False)
    rng = random.Random(seed)
    # One request stream for every allocator: allocate, then free every other run, then allocate
    # again, which is where the policies differ (they see the same holes).
    first = [rng.randint(1, MAX_RUN) for _ in range(ops)]
    second = [rng.randint(1, MAX_RUN) for _ in range(ops // 2)]
    allocators = {p: RangeAllocator(start, end, policy=p, guard=True, name=p) for p in _POLICIES}
    allocators["xen_vmap"] = RangeAllocator.xen_vmap(start, end)
    results: dict[str, dict[str, Any]] = {}
    for k, (label, a) in enumerate(allocators.items()):
        bar.update(f"allocator {label}", k, len(allocators), force=True)
        live = [a.alloc(nr) for nr in first]
        for va in live[::2]:
            a.free(va)
        placed = [a.alloc(nr) for nr in second]
        a.check()
        st = a.stats()
        results[label] = {
            "first_placements": placed[:4],
            "used": st.used,
            "free": st.free,
            "largest_free": st.largest_free,
            "live": st.live,
            "holes": st.holes,
        }
    bar.close()
    return results


def _demo(args: argparse.Namespace) -> int:
    """Show the allocator at work: the same request stream placed by each policy and by Xen."""
    start, end = args.start, args.end
    if end <= start:
        args.parser.error(f"--end {end:#x} must be above --start {start:#x}")
    cap = max_ops(start, end)
    if args.ops > cap:
        args.parser.error(
            f"--ops {args.ops} is more than {cap}: [{start:#x}, {end:#x}) holds "
            f"{(end - start) // GRANULE} granules, and each request may take up to "
            f"{MAX_RUN} and a guard granule"
        )
    bar = ProgressBar(enabled=False if args.quiet else None)
    try:
        results = run_demo(start, end, args.ops, args.seed, bar)
    except OutOfSpace:
        bar.close()
        args.parser.error(
            f"--ops {args.ops}: [{start:#x}, {end:#x}) filled up before the second pass was "
            "placed (the holes the frees left were too small): use fewer --ops or a larger "
            "range"
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"range [{start:#x}, {end:#x}) ({format_size(end - start)}), 4K granules, "
        f"guard granules on; seed {args.seed}"
    )
    print(
        f"{args.ops} allocations of 1-{MAX_RUN} granules, every other one freed, "
        f"{args.ops // 2} more\n"
    )
    header = ["allocator", "used", "free", "largest_free", "live", "holes", "first_placements"]
    units = ["", "granules", "granules", "granules", "runs", "holes", "addresses"]
    rows = [
        [
            label,
            r["used"],
            r["free"],
            r["largest_free"],
            r["live"],
            r["holes"],
            " ".join(f"{v:#x}" for v in r["first_placements"]),
        ]
        for label, r in results.items()
    ]
    print(table(header, units, rows, align="lrrrrrl"))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the command's sub-parsers."""
    p = add_command(
        sub,
        "demo",
        help="place one request stream with every allocator policy and with Xen's vm_alloc",
        description="""
        Place one seeded request stream (--ops allocations of 1 to 8 granules of 4K, every
        other one freed, then half as many again) with each policy of the range allocator
        (first-fit, best-fit, instant-fit, guard granules on) and with Xen's vm_alloc
        placement (xen_vmap), and print how each one left the range: granules used and free,
        the largest free run, live runs, holes, and the first placements after the frees.
        """,
    )
    p.add_argument(
        "--start",
        type=Address(GRANULE),
        default=0x1000_0000,
        metavar="ADDR",
        help="range start, 4K-aligned",
    )
    p.add_argument(
        "--end",
        type=Address(GRANULE, 1 << 32),
        default=0x4000_0000,
        metavar="ADDR",
        help="range end (exclusive), 4K-aligned, in the 32-bit hyp VA space",
    )
    p.add_argument(
        "--ops",
        type=Count(1),
        default=2000,
        metavar="N",
        help="allocations in the first pass (at most what the range holds)",
    )
    add_seed(p, 1)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_demo, parser=p)
