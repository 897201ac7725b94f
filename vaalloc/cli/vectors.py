"""``vaalloc vectors DIR``: write the golden vectors a C port replays (see :mod:`vaalloc.vectors`).

The files: allocator op traces with expected results for every policy and for Xen's
``vm_alloc`` (JSON, and text for the Xen ones), page walks with expected outcomes per
translation format, VLPT address computations (JSON and text), a C header with the layout
constants and VLPT macros, and ``manifest.json``.  ``examples/c_port/`` replays them in C and
counts its checks as the manifest does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaalloc.cli._args import Count, add_command, add_seed
from vaalloc.cli._output import plural
from vaalloc.cli._progress import ProgressBar
from vaalloc.errors import RangeError

__all__ = ["register"]


def _vectors(args: argparse.Namespace) -> int:
    from vaalloc.vectors import write_vectors

    out = Path(args.dir)
    if out.exists() and not out.is_dir():
        raise RangeError(f"{args.dir} exists and is not a directory")
    bar = ProgressBar(enabled=False if args.quiet else None)
    try:
        manifest = write_vectors(
            out,
            seed=args.seed,
            ops=args.ops,
            walks=args.walks,
            vlpt=args.vlpt,
            progress=lambda label, done, total: bar.update(label, done, total, force=True),
        )
    except OSError as exc:
        raise RangeError(f"cannot write vectors to {args.dir}: {exc.strerror}") from None
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"directory": str(out), **manifest}, indent=2))
        return 0
    print(f"golden vectors (format {manifest['format']}, seed {manifest['seed']}) in {out}/")
    for name, info in manifest["files"].items():
        checks = plural(info["checks"], "check") if info["checks"] else ""
        print(f"  {name:<34} {info['kind']:<11} {checks:>12}".rstrip())
    print(f"replay in C: examples/c_port/ (cc -I {out} ... replay.c)")
    return 0


# Past these the files run to gigabytes and the writing to many minutes (20,000 ops take about
# 2 s and 13M on disk); a port needs far fewer to be trusted.
MAX_OPS = 1_000_000
MAX_CASES = 1_000_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``vectors`` to the command's sub-parsers."""
    p = add_command(
        sub,
        "vectors",
        help="write golden vectors (JSON, text, a C header) for a port to replay",
        description="""
        Write into DIR what vaalloc computes, for a port that cannot import it to check
        itself against: allocator op traces with the expected result of every op for each
        policy and for Xen's vm_alloc (JSON, and text for the Xen ones), page walks with
        their expected translation or fault per format, VLPT address computations, a C
        header with the layout constants and the VLPT macros, and manifest.json with the
        number of checks in each file. examples/c_port/replay.c replays the text files and
        counts its checks the same way.
        """,
    )
    size_cap = "the files would run to gigabytes"
    p.add_argument("dir", metavar="DIR", help="directory to write (created if missing)")
    add_seed(p, 1)
    p.add_argument(
        "--ops",
        type=Count(1, MAX_OPS, size_cap),
        default=400,
        metavar="N",
        help="ops per allocator trace",
    )
    p.add_argument(
        "--walks",
        type=Count(1, MAX_CASES, size_cap),
        default=200,
        metavar="N",
        help="walks per translation format",
    )
    p.add_argument(
        "--vlpt",
        type=Count(1, MAX_CASES, size_cap),
        default=400,
        metavar="N",
        help="VLPT address cases",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_vectors)
