"""``vaalloc vectors DIR``: write the golden vectors a C port replays (see :mod:`vaalloc.vectors`).

The files: allocator op traces with expected results for every policy and for Xen's
``vm_alloc`` (JSON, and text for the Xen ones), page walks with expected outcomes per
translation format, VLPT address computations (JSON and text), a C header with the layout
constants and VLPT macros, and ``manifest.json``.  ``examples/c_port/`` replays them in C.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaalloc.cli._args import integer, positive
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
        checks = f"{info['checks']:>6} checks" if info["checks"] else ""
        print(f"  {name:<34} {info['kind']:<11} {checks}")
    print(f"replay in C: examples/c_port/ (cc -I {out} ... replay.c)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``vectors`` to the command's sub-parsers."""
    p = sub.add_parser(
        "vectors",
        help="write golden vectors (JSON, text, a C header) for a port to replay",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("dir", help="directory to write (created if missing)")
    p.add_argument("--seed", type=integer, default=1, help="random seed")
    p.add_argument("--ops", type=positive, default=400, help="ops per allocator trace")
    p.add_argument("--walks", type=positive, default=200, help="walks per format")
    p.add_argument("--vlpt", type=positive, default=400, help="VLPT cases")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_vectors)
