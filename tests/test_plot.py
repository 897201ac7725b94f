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
