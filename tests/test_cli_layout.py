"""``vaalloc layout``: the slot map is the one the Xen model installs, the numbers for a 4GB
guest follow from the arithmetic, the SVG is well formed, and bad sizes end in one line."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import vaalloc.cli as cli
from vaalloc.cli import layout
from vaalloc.xen import Xen

GB, MB = 1 << 30, 1 << 20


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run through the real entry point whether or not the command list has it yet."""
    if layout not in cli._COMMANDS:
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, layout))


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["layout", "--json", *argv]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_slot_map_is_what_the_xen_model_installs(capsys: pytest.CaptureFixture[str]) -> None:
    sizes = [3 * GB, 64 * MB, GB + 2 * MB]
    vlpt = _json(capsys, "3G", "64M", f"{GB + 2 * MB}")["vlpt"]
    xen = Xen(cpus=1)
    for ram, shown in zip(sizes, vlpt["domains"], strict=True):
        d = xen.create_domain(ram, superpages=True)  # 2MB blocks: cheap to build
        xen.logdirty.enable(d)
        run = xen.vlpt.run(d)
        assert (shown["first_slot"], shown["last_slot"]) == (
            run.first_slot,
            run.first_slot + run.nr - 1,
        )
        assert shown["leaf_view"][0] == xen.vlpt.third_va(d, d.ram_base)
        assert shown["second_view"][0] == xen.vlpt.second_va(d, d.ram_base)
        last = d.ram_end - 4096
        assert shown["leaf_view"][1] == xen.vlpt.third_va(d, last) + 8
        assert shown["second_view"][1] == xen.vlpt.second_va(d, last) + 8
    used = sum(d["last_slot"] - d["first_slot"] + 1 for d in vlpt["domains"])
    assert sum(b - a + 1 for a, b in vlpt["free"]) == 63 - used


def test_memory_map_tiles_the_32bit_space(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(capsys)["memory_map"]
    assert rows[0]["start"] == 0 and rows[-1]["end"] == 1 << 32
    for a, b in itertools.pairwise(rows):
        assert a["end"] == b["start"]
    window = next(r for r in rows if r["name"] == "VLPT window")
    assert (window["start"], window["end"], window["slots"]) == (128 * MB, 256 * MB, [64, 127])


def test_a_4gb_guest_needs_8mb_of_leaf_view_and_16kb_of_second_view(
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = _json(capsys, "4G")["vlpt"]["domains"][0]
    leaf = d["leaf_view"][1] - d["leaf_view"][0]
    second = d["second_view"][1] - d["second_view"][0]
    assert leaf == (4 * GB // 4096) * 8  # one 8-byte leaf per 4KB page
    assert second == (4 * GB // (2 * MB)) * 8  # one 8-byte level-2 entry per 2MB
    assert cli.main(["layout", "4G"]) == 0
    out = capsys.readouterr().out
    assert "leaf view   0x08000000-0x08800000 (8MB)" in out
    assert "(16KB in 4 pages)" in out and "loop slot 127 at 0x0fe00000" in out


def test_domains_that_do_not_fit_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    vlpt = _json(capsys, "40G", "30G", "20G")["vlpt"]
    placed = [d["placed"] for d in vlpt["domains"]]
    assert placed == [True, False, True]
    assert "needs 30 slots, largest free run 23" in vlpt["domains"][1]["reason"]
    assert cli.main(["layout", "40G", "30G"]) == 0
    assert "d2:   30GB RAM" in capsys.readouterr().out


def test_svg_draws_every_slot_and_the_legend(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "layout.svg"
    assert cli.main(["layout", "4G", "1G", "--svg", str(path)]) == 0
    assert f"SVG written to {path}" in capsys.readouterr().out
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    ns = "{http://www.w3.org/2000/svg}"
    texts = " ".join(t.text or "" for t in root.iter(f"{ns}text"))
    assert "d1 4GB: slots 64..67" in texts and "d2 1GB: slots 68..68" in texts
    assert "loop slot 127 at 0x0fe00000" in texts
    fills = [r.get("fill") for r in root.iter(f"{ns}rect") if r.get("height") == "34.0"]
    assert len(fills) == 64  # one cell per slot of the window
    assert fills[-1] == "#333333"  # the loop slot
    assert len({fills[0], fills[4], fills[5]}) == 3  # d1, d2, free


@pytest.mark.parametrize(
    "argv",
    [["0x1001"], ["2X"], ["2T"], ["1G", "--svg", "/nonexistent-dir/x.svg"]],
)
def test_bad_input_ends_in_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    try:
        status = cli.main(["layout", *argv])
    except SystemExit as exc:
        status = int(str(exc.code))
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vaalloc layout")
