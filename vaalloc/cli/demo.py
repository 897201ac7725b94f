"""``vaalloc demo``: one request stream placed by every allocator policy and by Xen's vm_alloc."""

from __future__ import annotations

import argparse
import json
import random

from vaalloc.cli._args import integer, positive

__all__ = ["register"]

_POLICIES = ("first-fit", "best-fit", "instant-fit")


def _demo(args: argparse.Namespace) -> int:
    """Show the allocator at work: the same request stream placed by each policy and by Xen."""
    from vaalloc.alloc import RangeAllocator

    start, end = args.start, args.end
    rng = random.Random(args.seed)
    # One request stream for every allocator: allocate, then free every other run, then allocate
    # again, which is where the policies differ (they see the same holes).
    first = [rng.randint(1, 8) for _ in range(args.ops)]
    second = [rng.randint(1, 8) for _ in range(args.ops // 2)]
    allocators = {p: RangeAllocator(start, end, policy=p, guard=True, name=p) for p in _POLICIES}
    allocators["xen_vmap"] = RangeAllocator.xen_vmap(start, end)
    results: dict[str, dict[str, object]] = {}
    for label, a in allocators.items():
        live = [a.alloc(nr) for nr in first]
        for va in live[::2]:
            a.free(va)
        placed = [a.alloc(nr) for nr in second]
        a.check()
        st = a.stats()
        results[label] = {
            "first_placements": [hex(v) for v in placed[:4]],
            "used": st.used,
            "free": st.free,
            "largest_free": st.largest_free,
            "live": st.live,
            "holes": st.holes,
        }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"range [{start:#x}, {end:#x}), 4KB granules, guard pages on; seed {args.seed}")
    print(f"{args.ops} allocations of 1-8 granules, every other one freed, {len(second)} more\n")
    header = f"{'allocator':<12} {'used':>7} {'free':>8} {'largest':>8} {'live':>5} {'holes':>5}"
    print(header + "  first placements after the frees")
    for label, r in results.items():
        placements = " ".join(str(x) for x in r["first_placements"])  # type: ignore[attr-defined]
        print(
            f"{label:<12} {r['used']:>7} {r['free']:>8} {r['largest_free']:>8} "
            f"{r['live']:>5} {r['holes']:>5}  {placements}"
        )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the command's sub-parsers."""
    demo = sub.add_parser("demo", help="place one request stream with every allocator policy")
    demo.add_argument("--start", type=integer, default=0x1000_0000, help="range start (bytes)")
    demo.add_argument("--end", type=integer, default=0x4000_0000, help="range end (bytes)")
    demo.add_argument("--ops", type=positive, default=2000, help="allocations in the first pass")
    demo.add_argument("--seed", type=int, default=1, help="random seed")
    demo.add_argument("--json", action="store_true", help="machine-readable output")
    demo.set_defaults(func=_demo)
