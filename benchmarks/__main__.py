"""Run vaalloc's benchmarks: ``python3 -m benchmarks [alloc|lpae|xen ...] [--OPTION ...]``.

Each ``bench_<name>.py`` beside this file is a plain script that prints its own table of medians
(with the ratios it is judged by, measured side by side in the same run).  With no argument every
benchmark runs, one after the other, so they do not compete for the machine's cores.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    # Names pick benchmarks; options (``--quick``, ``--runs 3``) go to each one's own parser.
    options = argv[next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv)) :]
    wanted = argv[: len(argv) - len(options)] or available
    unknown = [w for w in wanted if w not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    for name in wanted:
        print(f"\n=== benchmarks/bench_{name}.py ===", flush=True)
        sys.argv = [str(HERE / f"bench_{name}.py"), *options]
        runpy.run_path(str(HERE / f"bench_{name}.py"), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
