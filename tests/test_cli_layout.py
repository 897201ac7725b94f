"""``vaalloc layout``: the slot map is the one the Xen model installs, the numbers for a 4GB
guest follow from the arithmetic, the chart (matplotlib) draws what the text says, a guest that
does not fit is a non-zero exit, and bad sizes end in one line.

Issue 13's items tested here: 1 and 2 (the chart through matplotlib, written only where asked),
5 (sizes in the largest exact unit, plurals, JSON addresses as integers) and 8 (exit status 1
for "does not fit")."""

from __future__ import annotations

import itertools
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import vaalloc.cli as cli
from tests.clirun import vaalloc as run
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
    assert "leaf_view    0x08000000-0x08800000 (8M, read by third_va)" in out
    assert "(16K in 4 pages, read by second_va)" in out and "loop slot 127 at 0x0fe00000" in out


def test_text_names_are_the_json_names(capsys: pytest.CaptureFixture[str]) -> None:
    data = _json(capsys, "3G")
    assert cli.main(["layout", "3G"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[2].split()
    assert header == list(data["memory_map"][0])  # name start end size slots mapped_by
    assert lines[3].split() == ["hyp", "VA", "hyp", "VA", "xen_second"]  # the units row
    d = data["vlpt"]["domains"][0]
    assert isinstance(d["leaf_view"][0], int)  # integers in JSON, hex in text
    assert f"leaf_view    {d['leaf_view'][0]:#010x}" in "\n".join(lines)


@pytest.mark.parametrize(
    ("size", "shown"), [("3G", "ram 3G"), ("1536M", "ram 1536M"), (f"{GB + 2 * MB}", "ram 1026M")]
)
def test_sizes_in_the_largest_exact_unit(
    capsys: pytest.CaptureFixture[str], size: str, shown: str
) -> None:
    assert cli.main(["layout", size]) == 0
    assert f"  d1: {shown}, ipa 0x80000000-" in capsys.readouterr().out


def test_one_free_slot_is_one_slot(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", "62G"]) == 0
    out = capsys.readouterr().out
    assert "free slots: 126 (1 slot, 1G of guest RAM)" in out
    assert cli.main(["layout", "1G"]) == 0
    assert "(4K in 1 page, read by second_va)" in capsys.readouterr().out


# --- item 8: "does not fit" is not a success ---------------------------------------------------
def test_a_guest_that_does_not_fit_is_exit_status_1() -> None:
    proc = run("layout", "64G")
    assert proc.returncode == 1
    assert "d1: ram 64G, ipa 0x80000000-0x1080000000: does not fit" in proc.stdout
    assert "free slots: 64..126 (63 slots, 63G of guest RAM)" in proc.stdout  # all printed
    assert proc.stderr == "vaalloc layout: 1 guest d1 (64G) does not fit the VLPT window\n"
    assert run("layout", "63G").returncode == 0


def test_domains_that_do_not_fit_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["layout", "--json", "40G", "30G", "20G"]) == 1
    vlpt = json.loads(capsys.readouterr().out)["vlpt"]
    placed = [d["placed"] for d in vlpt["domains"]]
    assert placed == [True, False, True]
    assert "needs 30 slots, largest free run 23" in vlpt["domains"][1]["reason"]
    assert cli.main(["layout", "40G", "30G"]) == 1
    out, err = capsys.readouterr()
    assert "d2: ram 30G, ipa 0x80000000-0x800000000: does not fit" in out
    assert "1 guest d2 (30G) does not fit" in err


# --- items 1 and 2: the chart -----------------------------------------------------------------
def _svg_texts(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_the_chart_draws_the_map_the_slots_and_the_legend(tmp_path: Path) -> None:
    path = tmp_path / "layout.svg"
    proc = run("layout", "4G", "1G", "--chart", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"vaalloc layout: chart written to {path}\n"
    assert "free slots: 69..126" in proc.stdout  # the text came first, whole
    svg = path.read_text()
    assert "<dc:title>Matplotlib v" in svg  # matplotlib drew it
    texts = _svg_texts(path)
    assert any(t.startswith("d1 4G: slots 64..67, leaf_view 0x08000000-0x08800000") for t in texts)
    assert any(t.startswith("d2 1G: slots 68..68") for t in texts)
    assert any(t.startswith("loop slot 127 at 0x0fe00000") for t in texts)
    for region in ("frametable", "vmap", "xenheap", "domheap", "VLPT"):
        assert region in texts
    for address in ("0x08000000", "0x10000000", "0x100000000"):
        assert address in texts  # the region boundaries are labelled
    assert {"64", "72", "120", "127"} <= set(texts)  # slot numbers under the window


def test_a_guest_that_does_not_fit_is_drawn_and_still_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "layout.png"
    proc = run("layout", "40G", "30G", "--chart", str(path))
    assert proc.returncode == 1
    assert path.read_bytes().startswith(b"\x89PNG")
    assert proc.stderr.splitlines() == [
        f"vaalloc layout: chart written to {path}",
        "vaalloc layout: 1 guest d2 (30G) does not fit the VLPT window",
    ]


def test_no_file_unless_asked_and_a_bad_path_keeps_the_text(tmp_path: Path) -> None:
    proc = run("layout", "4G", cwd=tmp_path)
    assert proc.returncode == 0 and list(tmp_path.iterdir()) == []
    bad = run("layout", "4G", "--chart", "/nonexistent-dir/x.svg")
    assert bad.returncode == 1
    assert "free slots: 68..126" in bad.stdout
    (line,) = bad.stderr.splitlines()
    assert line.startswith("vaalloc layout: cannot write chart '/nonexistent-dir/x.svg': ")


@pytest.mark.parametrize("argv", [["0x1001"], ["2X"], ["2T"], ["1G", "--chart", "x.gif"]])
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
