"""``vaalloc replay FILE``: replay a real workload into each policy and show where each runs out.

FILE is a /proc/vmallocinfo snapshot ("vaalloc replay /proc/vmallocinfo" reads this machine's),
the ftrace text of Linux's vmalloc events (the trace file of tracefs after enabling
events/vmalloc/*), or a vaalloc JSON trace; the format is detected.  The records are placed by
each policy side by side (default: first-fit, best-fit, instant-fit, xen_vmap, linux-vmalloc) in
the region: by default where the trace was recorded when it says (ftrace), else Xen ARM32's
768MB VMAP.  Per policy: failures and the first one, peak use, and at the end and at peak the
largest free run, the holes and the fragmentation; where the trace has addresses, how many
placements differ from the traced ones.  See docs/replay.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vaalloc.cli._args import Size, add_command, parse_size
from vaalloc.cli._progress import ProgressBar

__all__ = ["format_replay", "register"]

_LONG = 20_000  # records from which the progress bar is worth drawing


class _PageSize(Size):
    """``--page-size``: a size that is a page Linux has (4K, 16K or 64K)."""

    def __call__(self, text: str) -> int:
        size = super().__call__(text)
        if size not in (4096, 16384, 65536):
            raise argparse.ArgumentTypeError(f"{text} is not a page size (4K, 16K or 64K)")
        return size


def _address(text: str) -> int:
    """An address or size in bytes: decimal, ``0x`` hex, or with a K/M/G suffix (1G)."""
    try:
        return int(text.strip(), 0)
    except ValueError:
        return parse_size(text)


def _region(text: str) -> Any:
    """``--region``: a preset name, or ``START:END`` (bytes, ``0x`` hex or sizes like 1G)."""
    from vaalloc.replay import REGIONS, region_from

    preset = REGIONS.get(text) or REGIONS.get(text.lower())
    if preset is not None:
        return preset
    start, sep, end = text.partition(":")
    if not sep:
        names = ", ".join(REGIONS)
        raise argparse.ArgumentTypeError(f"not a region: {text!r} (START:END, or one of {names})")
    try:
        lo, hi = _address(start), _address(end)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a region: {text!r} (START:END in bytes, e.g. 0x10000000:0x40000000)"
        ) from None
    if lo < 0 or hi <= lo:
        raise argparse.ArgumentTypeError(f"region {text!r}: END must be above START")
    return region_from(lo, hi)


def _policies(text: str) -> list[str]:
    """``--policy``: one name or a comma-separated list (checked by the engine)."""
    from vaalloc.errors import RangeError
    from vaalloc.replay import policy_names

    names = [n.strip() for n in text.split(",") if n.strip()]
    try:
        return list(policy_names(names))
    except RangeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def human(n: int) -> str:
    """Bytes in binary units, one decimal where it matters: 20KB, 750.2MB, 32TB."""
    for unit, shift in (("TB", 40), ("GB", 30), ("MB", 20), ("KB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n}B"


_FORMATS = {
    "vmallocinfo": "/proc/vmallocinfo snapshot",
    "ftrace": "ftrace of the vmalloc events",
    "vaalloc-json": "vaalloc JSON trace",
}


def format_replay(result: Any) -> str:
    """The text report: what was replayed where, one row per policy, the first failures and
    mismatches, and which policies keep the most contiguous space."""
    trace, region = result.trace, result.region
    lines = [
        f"{trace.source}: {_FORMATS.get(trace.format, trace.format)}, {result.records} records "
        f"replayed, {result.skipped} skipped"
    ]
    lines += [f"  {note}" for note in result.notes]
    where = region.description or (
        "the window the trace was recorded in" if region.name == "trace" else "given by --region"
    )
    how = "allocation windows honoured" if result.windows else "replayed by size"
    lines.append(
        f"region {region}, {human(region.size)}, {human(trace.page_size)} pages: {where}; {how}"
    )
    lines.append("")
    mm = result.compared
    head = f"{'policy':<18} {'failed':>6}" + (f" {'mismatch':>8}" if mm else "")
    head += f" {'peak used':>9}   {'end: used':>9} {'largest':>9} {'holes':>6} {'frag':>5}"
    head += f"   {'peak: largest':>13} {'holes':>6} {'frag':>5}"
    lines.append(head)
    for r in result.results:
        row = f"{r.policy:<18} {r.failed:>6}" + (f" {r.mismatches:>8}" if mm else "")
        row += f" {human(r.peak.used_bytes):>9}   {human(r.end.used_bytes):>9}"
        row += f" {human(r.end.largest_free_bytes):>9} {r.end.holes:>6} "
        row += f"{r.end.fragmentation:>5.3f}   {human(r.peak.largest_free_bytes):>13} "
        row += f"{r.peak.holes:>6} {r.peak.fragmentation:>5.3f}"
        lines.append(row)
    lines.append("")
    for r in result.results:
        f = r.first_failure
        if f is not None:
            lines.append(
                f"{r.policy}: first failure at record {f.record} (line {f.line}): "
                f"{human(f.size)} aligned to {human(f.align)}; {r.failed} in all"
            )
    for r in result.results:
        m = r.first_mismatch
        if m is not None:
            traced = "a failure" if m.traced is None else f"{m.traced:#x}"
            placed = "failed" if m.placed is None else f"placed {m.placed:#x}"
            lines.append(
                f"{r.policy}: first placement that differs at record {m.record} "
                f"(line {m.line}): traced {traced}, {placed}"
            )
    best = max(r.end.largest_free_bytes for r in result.results)
    winners = [r.policy for r in result.results if r.end.largest_free_bytes == best]
    lines.append(
        f"most contiguous space at the end: {', '.join(winners)} ({human(best)} in one run)"
    )
    fewest = min(r.failed for r in result.results)
    if fewest != max(r.failed for r in result.results):
        ok = [r.policy for r in result.results if r.failed == fewest]
        lines.append(f"fewest failures: {', '.join(ok)} ({fewest})")
    return "\n".join(lines)


def _chart(result: Any, path: Path) -> Path:
    """Free space and largest free run over the trace, one line per policy."""
    from vaalloc.cli.plot import Panel, Series, write_chart

    unit, shift = ("TB", 40) if result.region.size >= 64 << 40 else ("GB", 30)
    if result.region.size < 64 << 30:
        unit, shift = "MB", 20
    scale = float(1 << shift)

    # Policies whose curves coincide share one line and one legend entry ("=" the same, "≈"
    # within 1% of the panel's span at 99% of the points: a line drawn over another would hide
    # it), the same in both panels so that a colour means the same policies throughout.
    tol = {}
    for column in (1, 2):
        values = [p[column] for r in result.results for p in r.series]
        tol[column] = max(result.trace.page_size, (max(values) - min(values)) // 100)
    groups: list[tuple[Any, list[str]]] = []
    for r in result.results:
        for rep, names in groups:
            apart = sum(
                abs(a[1] - b[1]) > tol[1] or abs(a[2] - b[2]) > tol[2]
                for a, b in zip(rep.series, r.series, strict=True)
            )
            if apart * 100 <= len(r.series):
                names.append(("= " if rep.series == r.series else "≈ ") + r.policy)
                break
        else:
            groups.append((r, [r.policy]))

    def lines(column: int) -> list[Series]:
        return [
            Series(
                " ".join(names),
                [p[0] for p in rep.series],
                [p[column] / scale for p in rep.series],
                step=True,
            )
            for rep, names in groups
        ]

    # Any: the attrs converters of Panel leave mypy an unbound type variable to match.
    free: Any = lines(1)
    largest: Any = lines(2)
    markers: Any = [
        (float(r.first_failure.record), f"{r.policy} fails")
        for r in result.results
        if r.first_failure is not None
    ]
    return write_chart(
        path,
        title=f"{Path(result.trace.source).name} in {result.region}",
        xlabel="records replayed",
        panels=[
            Panel(f"free space ({unit})", free, markers=markers),
            Panel(f"largest free run ({unit})", largest),
        ],
    )


def _replay(args: argparse.Namespace) -> int:
    from vaalloc.cli.plot import ChartError
    from vaalloc.replay import DEFAULT_POLICIES, TraceError, read_trace, replay, write_trace

    trace = read_trace(args.file, page_size=args.page_size)
    policies = [p for group in args.policies for p in group] if args.policies else None
    quiet = args.quiet or len(trace.records) < _LONG
    bar = ProgressBar(enabled=False if quiet else None)

    def progress(policy: str, done: int, total: int) -> None:
        bar.update(f"replaying {policy}", done, total)

    result = replay(trace, args.region, policies or DEFAULT_POLICIES, progress=progress)
    bar.close()
    print(json.dumps(result.as_dict(), indent=2) if args.json else format_replay(result))
    status = 0
    if args.record is not None:
        try:
            write_trace(trace, args.record)
            if not args.json:
                print(f"wrote trace {args.record} ({len(trace.records)} records)")
        except TraceError as exc:
            print(f"vaalloc replay: {exc}", file=sys.stderr)
            status = 1
    if args.chart is not None:
        try:
            written = _chart(result, args.chart)
            if not args.json:
                print(f"wrote chart {written}")
        except ChartError as exc:
            print(f"vaalloc replay: {exc}", file=sys.stderr)
            status = 1
    return status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay`` to the command's sub-parsers."""
    from vaalloc.cli.plot import chart_path
    from vaalloc.replay import DEFAULT_POLICIES, REGIONS

    p = add_command(
        sub,
        "replay",
        help="replay /proc/vmallocinfo, an ftrace of the vmalloc events or a vaalloc trace "
        "into each policy",
        description=(__doc__ or "").split("\n\n", 1)[1],
    )
    p.add_argument("file", metavar="FILE", help="the trace (e.g. /proc/vmallocinfo)")
    p.add_argument(
        "--region",
        type=_region,
        default=None,
        metavar="START:END|" + "|".join(REGIONS),
        help="where to replay (default: where the trace was recorded, else vmap-arm32)",
    )
    p.add_argument(
        "--policy",
        dest="policies",
        type=_policies,
        action="append",
        metavar="P",
        help="policy to replay into, repeatable or comma-separated; first-fit:noguard etc. for "
        f"no guard page (default: {','.join(DEFAULT_POLICIES)})",
    )
    p.add_argument(
        "--page-size",
        metavar="SIZE",
        type=_PageSize(4096, 1 << 16, "the kernel's page: 4K, 16K or 64K"),
        default=4096,
        help="page size of a text trace",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--chart",
        type=chart_path,
        default=None,
        metavar="FILE",
        help="draw a chart (.png/.svg/.pdf)",
    )
    p.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="also write the trace as a vaalloc JSON trace",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_replay)
