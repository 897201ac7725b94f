"""``vaalloc vectors DIR``: writes the files the manifest lists, prints the same manifest, stays
quiet on stderr when not on a terminal, and refuses a bad directory or a huge count in one line.

Issue 13's items tested here: 6 (``--ops 100000000`` refused at once) and 9 (checks counted as a
replay compares them; the C replay's own count is checked in tests/c_port/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vaalloc.cli as cli
from tests.clirun import vaalloc
from vaalloc.cli import vectors

SMALL = ["--ops", "30", "--walks", "5", "--vlpt", "10"]


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run through the real entry point whether or not the command list has it yet."""
    if vectors not in cli._COMMANDS:
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, vectors))


def test_writes_every_file_of_the_manifest(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "v" / "nested"
    assert cli.main(["vectors", str(out), *SMALL, "--seed", "3", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert printed == {"directory": str(out), **on_disk}
    assert on_disk["seed"] == 3
    assert set(on_disk["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    # A check is an expected value a replay compares: the boot state's vm_low, vm_top and
    # vm_end, then the result, vm_low and vm_top of each op; one per result for a policy.
    assert on_disk["files"]["alloc-xen_vmap.txt"]["checks"] == 3 + 3 * 30
    assert on_disk["files"]["alloc-xen_vmap.json"]["checks"] == 3 + 3 * 30
    assert on_disk["files"]["alloc-first-fit.json"]["checks"] == 30
    assert on_disk["files"]["vlpt.json"]["checks"] == 2 * 10
    assert on_disk["files"]["walk-armv7-s1-hyp.json"]["checks"] == 5
    assert "#define VAALLOC_VLPT_LOOP_SLOT 127ULL" in (out / "vaalloc_xen.h").read_text()


def test_text_summary_and_no_progress_off_a_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["vectors", str(tmp_path), *SMALL]) == 0
    out, err = capsys.readouterr()
    assert "alloc-xen_vmap-grow.txt" in out and "examples/c_port" in out
    assert err == ""


@pytest.mark.parametrize("argv", [["--ops", "0"], ["--walks", "x"], ["FILE"]])
def test_bad_input_ends_in_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    target = tmp_path / "file"
    target.write_text("not a directory")
    args = [str(target)] if argv == ["FILE"] else [str(tmp_path / "out"), *argv]
    try:
        status = cli.main(["vectors", *args])
    except SystemExit as exc:
        status = int(str(exc.code))
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vaalloc vectors")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "cap"), [("--ops", 1_000_000), ("--walks", 1_000_000), ("--vlpt", 1_000_000)]
)
def test_a_huge_count_is_refused_before_any_file_is_written(
    tmp_path: Path, option: str, cap: int
) -> None:
    proc = vaalloc("vectors", str(tmp_path / "out"), option, "100000000", timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"vaalloc vectors: error: argument {option}: 100000000 is more than {cap} "
        "(the files would run to gigabytes)"
    )
    assert not (tmp_path / "out").exists()


def test_the_summary_counts_in_words(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["vectors", str(tmp_path), "--ops", "1", "--walks", "1", "--vlpt", "1"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert ["alloc-first-fit.json", "alloc", "1", "check"] in lines
    assert ["alloc-xen_vmap.txt", "alloc-text", "6", "checks"] in lines
