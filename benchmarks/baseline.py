"""Measure today's code side by side with the code of an earlier revision, in one run.

A speed target is judged as a ratio to the code it replaces, measured on the same machine in the
same minutes (the machine is shared and noisy; absolute figures drift, ratios much less).  The
earlier code is not kept as a second copy in the tree: :func:`materialize` extracts the
``vaalloc`` package of a git revision (``git archive``) into ``benchmarks/.baseline/REV`` once,
and :func:`run` calls a measurement function in a fresh interpreter whose ``vaalloc`` is either
that copy or this checkout.  Benchmarks alternate the two, run after run, and report medians.

:data:`REVISION` is the main branch before the one-access-path redesign (issue 10).  Without git
(a source tarball) the baseline is skipped with a printed note.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

#: A benchmark row: (name, target or 0 for none, whether higher is better).
Row = tuple[str, float, bool]

ROOT = Path(__file__).resolve().parent.parent
#: The revision today's code is compared with: main before the redesign of issues 10 and 11.
REVISION = "860740a"
_CACHE = Path(__file__).resolve().parent / ".baseline"


def legacy_allocator(revision: str = REVISION) -> Any:
    """``RangeAllocator`` as it was at ``revision`` (index v1), importable beside today's in one
    interpreter (the allocator benchmark runs both on the same operations, batch by batch):
    the ``vaalloc/alloc`` package of that revision, extracted once into
    ``benchmarks/.baseline/REV/legacy/legacy_alloc_REV`` with its ``vaalloc.alloc`` imports
    renamed (its
    ``vaalloc.errors`` imports stay: the error classes are shared).  Raises LookupError when git
    or the revision is not available here."""
    import importlib

    package = f"legacy_alloc_{revision}"
    target = _CACHE / revision / "legacy" / package
    if not (target / "__init__.py").exists():
        root = materialize(revision)
        if root is None:
            raise LookupError(f"revision {revision} of vaalloc is not available (no git history)")
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted((root / "vaalloc" / "alloc").glob("*.py")):
            text = source.read_text().replace("vaalloc.alloc", package)
            (target / source.name).write_text(text)
    parent = str(target.parent)
    if parent not in sys.path:
        sys.path.append(parent)
    return importlib.import_module(package).RangeAllocator


def materialize(revision: str = REVISION) -> Path | None:
    """The directory holding ``vaalloc`` as it was at ``revision`` (extracted on first use), or
    None when git or the revision is not available here."""
    target = _CACHE / revision
    if (target / "vaalloc" / "__init__.py").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", revision, "vaalloc"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return target


def run(module: str, function: str, args: list[Any], baseline: Path | None) -> Any:
    """``module.function(*args)`` in a fresh interpreter; its ``vaalloc`` comes from
    ``baseline`` (a :func:`materialize` directory) or, with None, from this checkout.  The
    function returns JSON-able data."""
    paths = [str(ROOT)] if baseline is None else [str(baseline), str(ROOT)]
    code = (
        "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
        f"from benchmarks.{module} import {function} as f; "
        "print(json.dumps(f(*json.loads(sys.argv[2]))))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(paths), json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{module}.{function} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def side_by_side(
    module: str, function: str, args: list[Any], runs: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """``runs`` rounds of ``module.function(*args)``, today's code then the baseline's in each
    (so a burst of load on the shared machine hits both alike): ``(now, before)``; ``before``
    is empty, with a printed note, when the baseline cannot be had."""
    base = materialize()
    if base is None:
        print("(no git checkout here: the baseline column is skipped)")
    now: list[dict[str, float]] = []
    before: list[dict[str, float]] = []
    for _ in range(runs):
        now.append(run(module, function, args, None))
        if base is not None:
            before.append(run(module, function, args, base))
    return now, before


def short(value: float) -> str:
    """A figure in a few characters (``1.23M``, ``456k``, ``0.123``); ``-`` for NaN."""
    if value != value:
        return "-"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    return f"{value:.3g}"


def report(rows: list[Row], now: list[dict[str, float]], before: list[dict[str, float]]) -> None:
    """Print each row's median now and before, their ratio (how many times better today's code
    is) and the verdict against the target."""
    width = max(len(name) for name, _, _ in rows) + 2
    head = f"{'measure':{width}} {'now':>10} {'before':>10} {'ratio':>7} {'target':>10} {'ok':>4}"
    print(head)
    print("-" * len(head))
    for name, target, higher in rows:
        value = statistics.median(r[name] for r in now)
        old = statistics.median(r[name] for r in before) if before else float("nan")
        ratio = (value / old if higher else old / value) if before and value else float("nan")
        met = value >= target if higher else value <= target
        verdict = "" if not target else ("yes" if met else "NO")
        shown = "" if not target else (">= " if higher else "<= ") + short(target)
        print(
            f"{name:{width}} {short(value):>10} {short(old):>10} {ratio:>6.2f}x "
            f"{shown:>10} {verdict:>4}"
        )
    print(f"\nratio: how many times better today's code is than revision {REVISION}")
