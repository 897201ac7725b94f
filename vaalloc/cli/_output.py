"""Text output shared by the sub-commands: tables with a units row, plurals, chart writing.

The rules every sub-command follows (docs/design.md, "The command"): results on stdout,
everything else (progress, warnings, "chart written", errors) on stderr; a table names its
columns with the keys of the JSON output and gives each column its unit in a second header
row; addresses are hex in text and integers in JSON; sizes are printed by
:func:`~vaalloc.cli._args.format_size`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vaalloc.cli.plot import ChartError

__all__ = ["plural", "table", "warn", "write_chart_or_fail"]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 domain"``, ``"3 domains"``; ``many`` for irregular plurals (``"switches"``)."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def table(
    header: Sequence[str],
    second: Sequence[str] | None,
    rows: Sequence[Sequence[object]],
    *,
    left: int = 1,
    align: str | None = None,
) -> str:
    """Right-aligned columns under a header row and an optional second header row (the
    units, or the kind of each column); the first ``left`` columns are left-aligned (names),
    or ``align`` gives each column's alignment (``"l"`` or ``"r"``).  Cells are printed with
    ``str``."""
    align = align or "l" * left + "r" * (len(header) - left)
    heads = [header] if second is None else [header, second]
    cells = [*[list(map(str, h)) for h in heads], *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [
            cell.ljust(w) if align[i] == "l" else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def warn(command: str, message: str) -> None:
    """One warning line on stderr: ``vaalloc CMD: warning: MESSAGE``."""
    print(f"vaalloc {command}: warning: {message}", file=sys.stderr, flush=True)


def write_chart_or_fail(command: str, path: Path | None, draw: Callable[[Path], Path]) -> int:
    """Write the chart the user asked for with ``--chart`` (``draw(path)``), after the
    results are printed: 0 when written (or not asked for), 1 after one line on stderr when
    it cannot be (no matplotlib, a bad directory, no permission): the results stay printed."""
    if path is None:
        return 0
    sys.stdout.flush()
    try:
        written = draw(path)
    except ChartError as exc:
        print(f"vaalloc {command}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"vaalloc {command}: chart written to {written}", file=sys.stderr, flush=True)
    return 0
