"""The ``vaalloc`` command: sub-commands run; bad options end in one line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vaalloc.cli import main


def test_demo_json_reports_every_allocator_consistently(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--ops", "200", "--seed", "7", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"first-fit", "best-fit", "instant-fit", "xen_vmap"}
    granules = (0x4000_0000 - 0x1000_0000) // 4096
    for row in report.values():
        assert row["used"] + row["free"] == granules
        assert row["live"] == 200
        assert 0 < row["largest_free"] <= row["free"]


def test_demo_is_reproducible_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    main(["demo", "--ops", "100", "--seed", "3", "--json"])
    first = capsys.readouterr().out
    main(["demo", "--ops", "100", "--seed", "3", "--json"])
    assert capsys.readouterr().out == first


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--ops", "0"],
        ["demo", "--ops", "many"],
        ["demo", "--start", "0x1000", "--end", "0x1000"],
        ["demo", "--start", "0x1001"],
        ["no-such-command"],
    ],
)
def test_bad_options_end_in_one_line_and_nonzero_status(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vaalloc.cli", *argv], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(("vaalloc", "usage"))


def test_a_closed_pipe_is_not_an_error() -> None:
    # ``vaalloc layout | head -1``: the reader leaves early; the command must end quietly.
    # The read end is closed before the child has started, so its first write meets EPIPE.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaalloc.cli", "layout", "4G"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err
