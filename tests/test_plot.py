"""The shared chart writer of the command (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from vaalloc.cli.plot import ChartError, Panel, Series, chart_path, write_chart
from vaalloc.errors import VAAllocError

SERIES = (Series("a", [1, 2, 3], [3.0, float("nan"), 1.0]), Series("b", [1, 2], [1, 2], step=True))


@pytest.mark.parametrize(
    ("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")]
)
def test_format_follows_the_suffix(tmp_path: Path, suffix: str, magic: bytes) -> None:
    out = write_chart(
        tmp_path / f"c{suffix}",
        title="t",
        xlabel="x",
        panels=[Panel("y", SERIES, markers=[(2, "m")])],
    )
    assert out.read_bytes().startswith(magic)


def test_unwritable_path_is_one_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ChartError, match="cannot write chart") as info:
        write_chart(
            tmp_path / "missing" / "c.png", title="t", xlabel="x", panels=[Panel("y", SERIES)]
        )
    assert isinstance(info.value, VAAllocError)
    assert not (tmp_path / "missing").exists()


def test_unknown_suffix_refused_before_any_work() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="suffix"):
        chart_path("chart.jpg")
    assert chart_path("out/c.SVG") == Path("out/c.SVG")
    with pytest.raises(ChartError):
        Series("bad", [1, 2], [1])


# --- the strips of the layout map ----------------------------------------------------------
def test_strips_draw_cells_ticks_and_a_legend(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    from vaalloc.cli.plot import Cell, Strip, write_strips

    strip = Strip(
        "a window",
        [Cell(0, 4, "d1", group="d1"), Cell(4, 6, "", group="d2"), Cell(6, 8, "free")],
        ticks=[(0, "0x0"), (8, "0x8000")],
    )
    out = write_strips(
        tmp_path / "s.svg",
        title="strips",
        strips=[strip],
        legend=[("d1", "d1: slots 0..3"), ("d2", "d2: slots 4..5"), (None, "d3: does not fit")],
    )
    texts = [t.text for t in ET.parse(out).getroot().iter("{http://www.w3.org/2000/svg}text")]
    for text in ("strips", "a window", "d1", "free", "0x0", "0x8000", "d3: does not fit"):
        assert text in texts, text


def test_a_cell_must_have_a_width() -> None:
    from vaalloc.cli.plot import Cell

    with pytest.raises(ChartError, match="not after start"):
        Cell(3, 3)


def test_the_same_chart_is_the_same_file(tmp_path: Path) -> None:
    for suffix in (".svg", ".pdf", ".png"):
        a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        for path in (a, b):
            write_chart(path, title="t", xlabel="x", panels=[Panel("y", SERIES)])
        assert a.read_bytes() == b.read_bytes(), suffix


def test_no_chart_is_drawn_by_hand() -> None:
    """Issue 13, item 2: the PNG encoder with its bitmap font and the SVG writer are gone;
    matplotlib draws every chart."""
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "vaalloc"
    assert importlib.util.find_spec("vaalloc.cli.chart") is None
    for path in root.rglob("*.py"):
        text = path.read_text()
        for sign in ("IHDR", "zlib", "<svg", "<rect", "struct.pack"):
            assert sign not in text, (path, sign)
