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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from vaalloc.errors import VAAllocError

__all__ = [
    "FORMATS",
    "INSTALL_HINT",
    "Cell",
    "ChartError",
    "Panel",
    "Series",
    "Strip",
    "available",
    "chart_path",
    "write_chart",
    "write_strips",
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


# Typed converters (a bare ``tuple`` converter loses the element type for mypy).
def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(values)


def _labels(values: Iterable[tuple[float, str]]) -> tuple[tuple[float, str], ...]:
    return tuple(values)


@attrs.frozen
class Series:
    """One line of a chart: ``label`` in the legend, points ``(x[i], y[i])``.

    Non-finite points (``nan``, ``inf``: a strategy that does not apply at that x) are left
    out of the line rather than drawn at the edge of the axes."""

    label: str
    x: tuple[float, ...] = attrs.field(converter=_floats)
    y: tuple[float, ...] = attrs.field(converter=_floats)
    step: bool = False  # draw as a staircase (a quantity that holds until the next event)

    def __attrs_post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ChartError(f"series {self.label!r}: {len(self.x)} x values, {len(self.y)} y")


def _series(values: Iterable[Series]) -> tuple[Series, ...]:
    return tuple(values)


@attrs.frozen
class Panel:
    """One set of axes: its y label, its lines, and optional vertical markers ``(x, text)``."""

    ylabel: str
    series: tuple[Series, ...] = attrs.field(converter=_series)
    ylog: bool = False
    markers: tuple[tuple[float, str], ...] = attrs.field(default=(), converter=_labels)


@attrs.frozen
class Cell:
    """One box of a :class:`Strip`, over ``[start, end)`` of the strip's x axis.

    ``label`` is written inside when it fits (lines split on ``\\n``); ``group`` names the
    legend entry, and so the colour, it belongs to (None: an unfilled box); ``colour`` (a
    matplotlib colour) overrides the group's."""

    start: float
    end: float
    label: str = ""
    group: str | None = None
    colour: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.end > self.start:
            raise ChartError(f"cell {self.label!r}: end {self.end} is not after start {self.start}")


def _cells(values: Iterable[Cell]) -> tuple[Cell, ...]:
    return tuple(values)


@attrs.frozen
class Strip:
    """A horizontal bar of :class:`Cell` boxes (a memory map, a run of slots): ``title`` above
    it, ``ticks`` ``(x, text)`` under it."""

    title: str
    cells: tuple[Cell, ...] = attrs.field(converter=_cells)
    ticks: tuple[tuple[float, str], ...] = attrs.field(default=(), converter=_labels)


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
    fig = _figure(path, len(panels), (8.0, 2.2 + 2.6 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        _draw_panel(ax, panel, xlog)
    axes[0].set_title(title)
    axes[-1].set_xlabel(xlabel)
    return _save(fig, path)


def write_strips(
    path: Path,
    *,
    title: str,
    strips: Sequence[Strip],
    legend: Sequence[tuple[str | None, str]] = (),
) -> Path:
    """Draw ``strips`` one under the other and write them to ``path``; ``legend`` lists
    ``(group, text)`` in order under the strips (the colour of each group is given by that
    order; a group of None is an unfilled box: something not drawn).  Returns the path
    written.  Raises ChartError as :func:`write_chart` does."""
    lines = max(1, len(legend))
    fig = _figure(path, len(strips), (10.0, 0.6 + 1.25 * len(strips) + 0.2 * lines))
    colours = _group_colours([g for g, _ in legend if g is not None], strips)
    axes = fig.subplots(len(strips), 1, squeeze=False)[:, 0]
    width_in = 10.0 * 0.94
    for ax, strip in zip(axes, strips, strict=True):
        _draw_strip(ax, strip, colours, width_in)
    fig.suptitle(title, fontsize=11)
    if legend:
        from matplotlib.patches import Patch

        handles = [
            Patch(
                facecolor=colours.get(group, "white") if group else "white",
                edgecolor="0.3",
                label=text,
            )
            for group, text in legend
        ]
        fig.legend(handles=handles, loc="outside lower left", fontsize=7.5, frameon=False, ncols=1)
    return _save(fig, path)


def _figure(path: Path, parts: int, size: tuple[float, float]) -> Any:
    """A fresh Figure for ``path``, once the suffix and matplotlib are known to be good."""
    if path.suffix.lower() not in FORMATS:
        raise ChartError(f"chart {str(path)!r}: the suffix must be one of {', '.join(FORMATS)}")
    if not parts:
        raise ChartError(f"chart {str(path)!r}: nothing to draw")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ChartError(f"no chart written to {str(path)!r}: {INSTALL_HINT}") from None
    return Figure(figsize=size, dpi=110, layout="constrained")


# The same chart gives the same file (a chart kept in git does not change for nothing): no
# dates, fixed SVG ids; and SVG text stays text, so it can be searched, selected and edited.
_METADATA = {"png": None, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def _save(fig: Any, path: Path) -> Path:
    from matplotlib import rc_context

    fmt = FORMATS[path.suffix.lower()]
    try:
        with rc_context({"svg.fonttype": "none", "svg.hashsalt": "vaalloc"}):
            fig.savefig(path, format=fmt, metadata=_METADATA[fmt])
    except OSError as error:
        reason = error.strerror or str(error)
        raise ChartError(f"cannot write chart {str(path)!r}: {reason}") from None
    return path


# A qualitative palette (matplotlib's tab10 without its grey), one colour per legend group.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)


def _group_colours(order: Sequence[str], strips: Sequence[Strip]) -> dict[str, str]:
    """A colour per group: its cells' own colour if they give one, else the next of the
    palette, in legend order, then in order of appearance."""
    explicit = {c.group: c.colour for s in strips for c in s.cells if c.group and c.colour}
    colours: dict[str, str] = {}
    nth = 0
    for group in dict.fromkeys([*order, *(c.group for s in strips for c in s.cells if c.group)]):
        if group in explicit:
            colours[group] = explicit[group]
        else:
            colours[group] = _PALETTE[nth % len(_PALETTE)]
            nth += 1
    return colours


def _draw_strip(ax: Any, strip: Strip, colours: dict[str, str], width_in: float) -> None:
    lo = min(c.start for c in strip.cells)
    hi = max(c.end for c in strip.cells)
    for cell in strip.cells:
        fill = cell.colour or (colours.get(cell.group, "white") if cell.group else "white")
        ax.barh(
            0,
            cell.end - cell.start,
            left=cell.start,
            height=1.0,
            color=fill,
            edgecolor="0.35",
            linewidth=0.8,
        )
        if not cell.label:
            continue
        room = (cell.end - cell.start) / (hi - lo) * width_in  # inches
        longest = max(len(line) for line in cell.label.split("\n"))
        if longest * 0.055 < room:  # about 0.055 in per character at 7 pt
            dark = fill not in ("white", "#ffffff") and _is_dark(fill)
            ax.text(
                (cell.start + cell.end) / 2,
                0,
                cell.label,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    ax.set_xlim(lo, hi)
    ax.set_ylim(-0.5, 0.5)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if strip.ticks:
        ax.set_xticks(
            [x for x, _ in strip.ticks], [t for _, t in strip.ticks], fontsize=6.5, rotation=90
        )
    else:
        ax.set_xticks([])
    ax.set_title(strip.title, fontsize=9, loc="left")


def _plain_numbers() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _: f"{value:g}")


def _is_dark(colour: str) -> bool:
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(colour)
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.5


# Lines that lie on top of each other (two strategies costing the same) must stay visible:
# each series gets its own colour, line style and marker, by its position in the panel, so the
# same series looks the same in every panel even when another one has no point to draw.
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")


def _draw_panel(ax: Any, panel: Panel, xlog: bool) -> None:
    for i, series in enumerate(panel.series):
        style = {"color": f"C{i % 10}", "linestyle": _LINE_STYLES[i % len(_LINE_STYLES)]}
        points = [
            (x, y)
            for x, y in zip(series.x, series.y, strict=True)
            if math.isfinite(x) and math.isfinite(y) and (not panel.ylog or y > 0)
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if series.step:
            ax.step(xs, ys, where="post", label=series.label, linewidth=1.4, **style)
        else:
            ax.plot(
                xs,
                ys,
                label=series.label,
                marker=_MARKERS[i % len(_MARKERS)] if len(xs) <= 30 else None,
                markersize=4,
                markerfacecolor="none",
                linewidth=1.5,
                **style,
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
    # Log axes labelled with plain numbers (1000, not 10^3): what a reader compares with the
    # tables the command prints.
    plain = _plain_numbers()
    if xlog:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plain)
    if panel.ylog:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, which="major", color="0.9")
    if any(s.label for s in panel.series):
        ax.legend(fontsize=8, loc="best", frameon=False)
