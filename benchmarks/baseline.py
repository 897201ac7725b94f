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
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The revision today's code is compared with: main before the redesign of issues 10 and 11.
REVISION = "860740a"
_CACHE = Path(__file__).resolve().parent / ".baseline"


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
