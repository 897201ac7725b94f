"""``vaalloc vectors DIR``: writes the files the manifest lists, prints the same manifest, stays
quiet on stderr when not on a terminal, and refuses a bad directory in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import vaalloc.cli as cli
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
    assert on_disk["files"]["alloc-xen_vmap.txt"]["checks"] == 30
    assert on_disk["files"]["vlpt.json"]["checks"] == 2 * 10
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
