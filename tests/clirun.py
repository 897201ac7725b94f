"""Run the ``vaalloc`` command as a user does: a new process, its exit status, stdout, stderr.

The child imports this checkout's ``vaalloc`` (the repository root leads its PYTHONPATH), so
the tests check the code under test whatever is installed."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env(*front: Path) -> dict[str, str]:
    """The environment of a child: ``front`` directories, then the checkout, on PYTHONPATH."""
    paths = [str(p) for p in (*front, ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "100"}


def vaalloc(
    *args: str, cwd: Path | None = None, front: tuple[Path, ...] = (), timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``python -m vaalloc ARGS`` in ``cwd``; never raises for a non-zero status."""
    return subprocess.run(
        [sys.executable, "-m", "vaalloc", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
        env=env(*front),
    )


def on_terminal(*args: str, cwd: Path | None = None, timeout: float = 180) -> tuple[int, str, str]:
    """``python -m vaalloc ARGS`` with stderr on a pseudo-terminal (what a user at a shell
    sees), stdout on a pipe; returns (status, stdout, what was drawn on the terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaalloc", *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=cwd,
        env=env(),
    )
    os.close(slave)
    drawn = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return status, out, drawn.decode(errors="replace")


def first_stderr_line(*args: str, within: float = 30) -> str:
    """Start ``python -m vaalloc ARGS``, return the first line it writes on stderr (or "" if
    none comes ``within`` seconds), and kill it: for runs that would take minutes."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaalloc", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env(),
    )
    assert proc.stderr is not None
    line = b""
    try:
        deadline = time.monotonic() + within
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 0.2)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 1)
                if not chunk:
                    break
                line += chunk
    finally:
        proc.kill()
        proc.wait()
    return line.decode()
