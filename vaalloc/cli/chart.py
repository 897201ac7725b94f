"""Line charts of a strategy sweep, as SVG and PNG, with no plotting dependency.

Why by hand: vaalloc's runtime dependencies are sortedcontainers and attrs only, and a chart of
a few lines with a log x axis does not justify matplotlib. SVG is text; PNG is written with
``zlib`` and ``struct`` from the standard library (signature, IHDR, one IDAT of unfiltered RGB
rows, IEND) after rasterising the same drawing into a pixel buffer: Bresenham lines, filled
squares for markers, and a built-in 5x7 bitmap font (lower case, digits, a little punctuation)
for labels. Same layout, same colours in both formats.

:func:`render_svg` / :func:`render_png` draw a :class:`Chart`; :func:`sweep_charts` builds one
chart per (log-dirty domains, capacity) series of a sweep: cycles per write fault against
context switches per second per pCPU.
"""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from vaalloc.errors import RangeError

if TYPE_CHECKING:
    from vaalloc.studies.compare import SweepPoint

__all__ = ["Chart", "encode_png", "render_png", "render_svg", "sweep_charts", "write_chart"]

WIDTH, HEIGHT = 720, 440
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 170, 40, 50  # plot margins (legend on the right)
_COLOURS = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
    (140, 86, 75),
    (127, 127, 127),
)
_BLACK = (0, 0, 0)
_GREY = (200, 200, 200)
_WHITE = (255, 255, 255)

Point = tuple[float, float]


@attrs.frozen
class Chart:
    """Lines to draw: ``series`` maps a label to its (x, y) points (x > 0, log axis)."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, tuple[Point, ...]]

    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) over all finite points; RangeError if there is none."""
        pts = [p for s in self.series.values() for p in s if _finite(p)]
        if not pts:
            raise RangeError(f"chart {self.title!r}: no finite point to draw")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ymax = max(ys) * 1.08 or 1.0
        xmin, xmax = min(xs), max(xs)
        if xmin == xmax:
            xmin, xmax = xmin / 2, xmax * 2
        return xmin, xmax, 0.0, ymax


def _finite(p: Point) -> bool:
    return p[0] > 0 and math.isfinite(p[0]) and math.isfinite(p[1])


class _Frame:
    """Data -> pixel transform of a chart (log x, linear y)."""

    def __init__(self, chart: Chart) -> None:
        self.xmin, self.xmax, self.ymin, self.ymax = chart.bounds()
        self.w = WIDTH - _LEFT - _RIGHT
        self.h = HEIGHT - _TOP - _BOTTOM

    def px(self, x: float) -> float:
        lo, hi = math.log10(self.xmin), math.log10(self.xmax)
        return _LEFT + (math.log10(x) - lo) / (hi - lo) * self.w

    def py(self, y: float) -> float:
        return _TOP + self.h - (y - self.ymin) / (self.ymax - self.ymin) * self.h

    def xticks(self) -> list[float]:
        lo, hi = math.floor(math.log10(self.xmin)), math.ceil(math.log10(self.xmax))
        return [10.0**e for e in range(lo, hi + 1) if self.xmin <= 10.0**e <= self.xmax]

    def yticks(self) -> list[float]:
        step = 10 ** math.floor(math.log10(self.ymax / 4))
        for mult in (1, 2, 5, 10):
            if self.ymax / (step * mult) <= 6:
                step *= mult
                break
        return [i * step for i in range(int(self.ymax / step) + 1)]


def _label(v: float) -> str:
    return f"{v:g}" if v < 1e5 else f"{v:.0e}"


# --- SVG ----------------------------------------------------------------------------------------
def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]},{c[1]},{c[2]})"


def render_svg(chart: Chart) -> str:
    """The chart as an SVG document (a string). Raises RangeError if it has no point."""
    f = _Frame(chart)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{_esc(chart.title)}'
        "</text>",
    ]
    bottom, right = _TOP + f.h, _LEFT + f.w
    for x in f.xticks():
        X = f.px(x)
        out.append(f'<line x1="{X:.1f}" y1="{_TOP}" x2="{X:.1f}" y2="{bottom}" stroke="#ccc"/>')
        out.append(f'<text x="{X:.1f}" y="{bottom + 16}" text-anchor="middle">{_label(x)}</text>')
    for y in f.yticks():
        Y = f.py(y)
        out.append(f'<line x1="{_LEFT}" y1="{Y:.1f}" x2="{right}" y2="{Y:.1f}" stroke="#ccc"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{Y + 4:.1f}" text-anchor="end">{_label(y)}</text>')
    out.append(
        f'<rect x="{_LEFT}" y="{_TOP}" width="{f.w}" height="{f.h}" fill="none" stroke="black"/>'
    )
    out.append(
        f'<text x="{_LEFT + f.w / 2}" y="{HEIGHT - 12}" text-anchor="middle">'
        f"{_esc(chart.xlabel)}</text>"
    )
    out.append(
        f'<text x="16" y="{_TOP + f.h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {_TOP + f.h / 2})">{_esc(chart.ylabel)}</text>'
    )
    for i, (name, pts) in enumerate(chart.series.items()):
        colour = _rgb(_COLOURS[i % len(_COLOURS)])
        coords = [(f.px(x), f.py(y)) for x, y in pts if _finite((x, y))]
        if coords:
            path = " ".join(f"{X:.1f},{Y:.1f}" for X, Y in coords)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for X, Y in coords:
            out.append(
                f'<rect x="{X - 3:.1f}" y="{Y - 3:.1f}" width="6" height="6" fill="{colour}"/>'
            )
        ly = _TOP + 10 + i * 18
        out.append(
            f'<line x1="{right + 12}" y1="{ly}" x2="{right + 36}" y2="{ly}" stroke="{colour}" '
            'stroke-width="3"/>'
        )
        out.append(f'<text x="{right + 42}" y="{ly + 4}">{_esc(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --- PNG ----------------------------------------------------------------------------------------
# 5x7 glyphs: 7 rows of 5 bits (bit 4 = leftmost column), two hex digits per row.
_FONT_HEX = {
    "0": "0e11131519110e",
    "1": "040c040404040e",
    "2": "0e11010204081f",
    "3": "1f02040201110e",
    "4": "02060a121f0202",
    "5": "1f101e0101110e",
    "6": "0608101e11110e",
    "7": "1f010204080808",
    "8": "0e11110e11110e",
    "9": "0e11110f01020c",
    "a": "00000e010f110f",
    "b": "1010161911111e",
    "c": "00000e1010110e",
    "d": "01010d1311110f",
    "e": "00000e111f100e",
    "f": "0609081c080808",
    "g": "000f11110f010e",
    "h": "10101619111111",
    "i": "04000c0404040e",
    "j": "0200060202120c",
    "k": "10101214181412",
    "l": "0c04040404040e",
    "m": "00001a15151111",
    "n": "00001619111111",
    "o": "00000e1111110e",
    "p": "00001e111e1010",
    "q": "00000d130f0101",
    "r": "00001619101010",
    "s": "00000e100e011e",
    "t": "08081c08080906",
    "u": "0000111111130d",
    "v": "00001111110a04",
    "w": "0000111115150a",
    "x": "0000110a040a11",
    "y": "000011110f010e",
    "z": "00001f0204081f",
    "-": "0000001f000000",
    ".": "00000000000c0c",
    "/": "00010204081000",
    "(": "02040808080402",
    ")": "08040202020408",
    "=": "00001f001f0000",
    ":": "000c0c000c0c00",
    ",": "000000000c0408",
    "_": "0000000000001f",
    "+": "0004041f040400",
    " ": "00000000000000",
    "%": "18190204081303",
    "~": "00000815020000",
}


def _glyph(ch: str) -> list[int]:
    text = _FONT_HEX.get(ch.lower(), _FONT_HEX["."])
    return [int(text[i : i + 2], 16) for i in range(0, 14, 2)]


class _Canvas:
    """An RGB pixel buffer with the few drawing operations the chart needs."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.px = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.px[i : i + 3] = bytes(c)

    def rect(self, x: int, y: int, w: int, h: int, c: tuple[int, int, int]) -> None:
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.dot(xx, yy, c)

    def line(self, x0: int, y0: int, x1: int, y1: int, c: tuple[int, int, int], t: int = 1) -> None:
        """Bresenham, ``t`` pixels thick (a t x t square per step)."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.rect(x0 - t // 2, y0 - t // 2, t, t, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, s: str, c: tuple[int, int, int], anchor: str = "start") -> None:
        """Draw ``s`` with its baseline-ish top at ``y``; anchor start/middle/end."""
        width = len(s) * 6
        x -= {"start": 0, "middle": width // 2, "end": width}[anchor]
        for k, ch in enumerate(s):
            for row, bits in enumerate(_glyph(ch)):
                for col in range(5):
                    if bits >> (4 - col) & 1:
                        self.dot(x + k * 6 + col, y + row, c)

    def vtext(self, x: int, y: int, s: str, c: tuple[int, int, int]) -> None:
        """Draw ``s`` rotated 90 degrees counter-clockwise, centred on ``y``."""
        y += len(s) * 6 // 2
        for k, ch in enumerate(s):
            for row, bits in enumerate(_glyph(ch)):
                for col in range(5):
                    if bits >> (4 - col) & 1:
                        self.dot(x + row, y - k * 6 - col, c)


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """A PNG file of ``width`` x ``height`` 8-bit RGB pixels (row-major ``rgb``).

    Raises RangeError if ``rgb`` has the wrong length. O(pixels).
    """
    if len(rgb) != width * height * 3 or width <= 0 or height <= 0:
        raise RangeError(f"encode_png: {len(rgb)} bytes for {width}x{height} RGB")
    stride = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def render_png(chart: Chart) -> bytes:
    """The chart as PNG bytes (same layout as :func:`render_svg`). Raises RangeError."""
    f = _Frame(chart)
    cv = _Canvas(WIDTH, HEIGHT)
    bottom, right = _TOP + f.h, _LEFT + f.w
    cv.text(WIDTH // 2, 12, chart.title, _BLACK, "middle")
    for x in f.xticks():
        X = round(f.px(x))
        cv.line(X, _TOP, X, bottom, _GREY)
        cv.text(X, bottom + 8, _label(x), _BLACK, "middle")
    for y in f.yticks():
        Y = round(f.py(y))
        cv.line(_LEFT, Y, right, Y, _GREY)
        cv.text(_LEFT - 6, Y - 3, _label(y), _BLACK, "end")
    for a, b, c, d in (
        (_LEFT, _TOP, right, _TOP),
        (_LEFT, bottom, right, bottom),
        (_LEFT, _TOP, _LEFT, bottom),
        (right, _TOP, right, bottom),
    ):
        cv.line(a, b, c, d, _BLACK)
    cv.text(_LEFT + f.w // 2, HEIGHT - 18, chart.xlabel, _BLACK, "middle")
    cv.vtext(10, _TOP + f.h // 2, chart.ylabel, _BLACK)
    for i, (name, pts) in enumerate(chart.series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        coords = [(round(f.px(x)), round(f.py(y))) for x, y in pts if _finite((x, y))]
        for (x0, y0), (x1, y1) in itertools.pairwise(coords):
            cv.line(x0, y0, x1, y1, colour, 2)
        for X, Y in coords:
            cv.rect(X - 3, Y - 3, 6, 6, colour)
        ly = _TOP + 10 + i * 18
        cv.line(right + 12, ly, right + 36, ly, colour, 3)
        cv.text(right + 42, ly - 3, name, _BLACK)
    return encode_png(WIDTH, HEIGHT, bytes(cv.px))


def write_chart(chart: Chart, stem: str | Path) -> list[Path]:
    """Write ``stem.svg`` and ``stem.png``; return both paths. Raises RangeError, OSError."""
    stem = Path(stem)
    svg, png = stem.with_suffix(".svg"), stem.with_suffix(".png")
    svg.write_text(render_svg(chart), encoding="utf-8")
    png.write_bytes(render_png(chart))
    return [svg, png]


def sweep_charts(points: Sequence[SweepPoint]) -> dict[tuple[int, int | None], Chart]:
    """One chart per (log-dirty domains, capacity) series of a sweep: cycles per write fault
    (switches amortised) against switches per second per pCPU. Unsupported points (window
    too small) and points without faults are left out of their line."""
    charts: dict[tuple[int, int | None], Chart] = {}
    groups: dict[tuple[int, int | None], list[SweepPoint]] = {}
    for p in points:
        groups.setdefault((p.logdirty, p.capacity), []).append(p)
    for (ld, cap), pts in groups.items():
        pts = sorted(pts, key=lambda p: p.switch_rate)
        series: dict[str, tuple[Point, ...]] = {}
        for r in pts[0].results:
            line = []
            for p in pts:
                res = p.result(r.strategy)
                if res.supported and res.faults:
                    line.append((p.switch_rate, res.per_fault))
            series[r.strategy] = tuple(line)
        window = "all slots" if cap is None else f"{cap} slots"
        charts[(ld, cap)] = Chart(
            title=f"cycles per write fault, {ld} log-dirty domain(s), window {window}",
            xlabel="context switches per second per pCPU",
            ylabel="cycles per write fault",
            series=series,
        )
    return charts
