"""Charts for the command, drawn with matplotlib (the optional extra ``vaalloc[plot]``).

Why matplotlib and not a hand-made writer: a chart is read by a person deciding something (where
switched overtakes the walk, which policy keeps the most contiguous space); axes, ticks, legends,
log scales and fonts are what a plotting library is for, and matplotlib is the one every engineer
already has.  It stays optional: the library itself never draws, and every sub-command prints all
of its results without it.

The contract each sub-command keeps (see docs/design.md, "The command"):

* a chart is drawn only where asked (``--chart FILE``); the format comes from the suffix
  (``.png``, ``.svg``, ``.pdf``), checked by :func:`chart_path` before any work starts;
* it is written *after* the results are printed, so a chart that cannot be written (no
  matplotlib, a missing directory, no permission) loses nothing: the command prints one line
  (:class:`ChartError`) and exits non-zero.

Only ``matplotlib.figure.Figure`` is used, never ``pyplot``: no global state, no GUI backend, safe
in a test process and in threads.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from vaalloc.errors import VAAllocError

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "ChartError",
    "Panel",
    "Series",
    "available",
    "chart_path",
    "write_chart",
]

#: Suffixes a chart may have, and the matplotlib format each selects.
FORMATS: dict[str, str] = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

#: What to tell a user who asked for a chart without the extra installed.
INSTALL_HINT = (
    "charts need matplotlib: pip install -e '.[plot]' from a checkout, "
    "or pip install 'vaalloc[plot]'"
)


class ChartError(VAAllocError):
    """A chart could not be drawn or written (no matplotlib, a bad path, an I/O error)."""


@attrs.frozen
class Series:
    """One line of a chart: ``label`` in the legend, points ``(x[i], y[i])``.

    Non-finite points (``nan``, ``inf``: a strategy that does not apply at that x) are left
    out of the line rather than drawn at the edge of the axes."""

    label: str
    x: tuple[float, ...] = attrs.field(converter=tuple)
    y: tuple[float, ...] = attrs.field(converter=tuple)
    step: bool = False  # draw as a staircase (a quantity that holds until the next event)

    def __attrs_post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ChartError(f"series {self.label!r}: {len(self.x)} x values, {len(self.y)} y")


@attrs.frozen
class Panel:
    """One set of axes: its y label, its lines, and optional vertical markers ``(x, text)``."""

    ylabel: str
    series: tuple[Series, ...] = attrs.field(converter=tuple)
    ylog: bool = False
    markers: tuple[tuple[float, str], ...] = attrs.field(default=(), converter=tuple)


def available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra is installed)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def chart_path(text: str) -> Path:
    """argparse type of ``--chart FILE``: the path, once its suffix names a known format.

    Raises argparse.ArgumentTypeError (one line, exit status 2) for another suffix, so a typo
    is refused before a long run rather than after it."""
    path = Path(text)
    if path.suffix.lower() not in FORMATS:
        raise argparse.ArgumentTypeError(
            f"chart {text!r}: the suffix must be one of {', '.join(FORMATS)}"
        )
    return path


def write_chart(
    path: Path,
    *,
    title: str,
    xlabel: str,
    panels: Sequence[Panel],
    xlog: bool = False,
) -> Path:
    """Draw ``panels`` stacked over one shared x axis and write them to ``path``.

    Returns the path written.  Raises ChartError (nothing written) when matplotlib is missing,
    the suffix is not a known format, or the file cannot be written."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ChartError(f"chart {str(path)!r}: the suffix must be one of {', '.join(FORMATS)}")
    if not panels:
        raise ChartError(f"chart {str(path)!r}: nothing to draw")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ChartError(f"no chart written to {str(path)!r}: {INSTALL_HINT}") from None
    fig = Figure(figsize=(8.0, 2.2 + 2.6 * len(panels)), dpi=110, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        _draw_panel(ax, panel, xlog)
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    try:
        fig.savefig(path, format=fmt)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ChartError(f"cannot write chart {str(path)!r}: {reason}") from None
    return path


def _draw_panel(ax: Any, panel: Panel, xlog: bool) -> None:
    for series in panel.series:
        points = [
            (x, y)
            for x, y in zip(series.x, series.y, strict=True)
            if math.isfinite(x) and math.isfinite(y) and (not panel.ylog or y > 0)
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if series.step:
            ax.step(xs, ys, where="post", label=series.label, linewidth=1.4)
        else:
            ax.plot(
                xs,
                ys,
                label=series.label,
                marker="o" if len(xs) <= 30 else None,
                markersize=3.5,
                linewidth=1.6,
            )
    for x, text in panel.markers:
        ax.axvline(x, color="0.55", linestyle=":", linewidth=1.0)
        ax.annotate(
            text,
            (x, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            color="0.35",
            ha="right",
            va="top",
        )
    if xlog:
        ax.set_xscale("log")
    if panel.ylog:
        ax.set_yscale("log")
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, which="major", color="0.9")
    if any(s.label for s in panel.series):
        ax.legend(fontsize=8, loc="best", frameon=False)
