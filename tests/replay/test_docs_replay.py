"""docs/replay.md tells the truth: its Python runs, and its console sessions are what the command
prints today (run again here, on the captured files)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "replay.md").read_text()


def test_python_blocks_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT)  # the examples read tests/data/ as the docs do
    blocks = re.findall(r"```python\n(.*?)```", PAGE, flags=re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "docs/replay.md", "exec"), {"__name__": "docs"})


SESSIONS = re.findall(r"```console\n\$ (.*?)\n(.*?)```", PAGE, flags=re.DOTALL)


@pytest.mark.parametrize(("command", "output"), SESSIONS, ids=[c for c, _ in SESSIONS])
def test_console_sessions_are_current(command: str, output: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    assert argv[:2] == ["vaalloc", "replay"]
    if "--chart" in argv:  # draw the chart somewhere else, under the same name
        i = argv.index("--chart") + 1
        chart = argv[i]
        argv[i] = str(tmp_path / chart)
        pytest.importorskip("matplotlib")
    proc = subprocess.run(
        [sys.executable, "-m", "vaalloc.cli", *argv[1:]],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    got = proc.stdout.replace(str(tmp_path) + os.sep, "")
    assert got == output
