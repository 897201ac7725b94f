"""docs/testing.md: the ctypes example runs as written, against the C port it documents."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testing.cport import C_PORT, COMPILER
from vaalloc.vectors import c_header

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")
def test_the_ctypes_example_runs_as_written(tmp_path: Path) -> None:
    (tmp_path / "vaalloc_xen.h").write_text(c_header())
    lib = tmp_path / "libvmap.so"
    assert COMPILER is not None
    build = [COMPILER, "-std=c99", "-Wall", "-Wextra", "-O2", "-fPIC", "-shared", "-I"]
    subprocess.run(
        [*build, str(tmp_path), "-o", str(lib), str(C_PORT / "vmap_lib.c")],
        check=True,
        capture_output=True,
    )
    (example,) = [b for b in python_blocks() if "class CVmapMachine" in b]
    (tmp_path / "test_my_vmap.py").write_text(example)
    env = {**os.environ, "VMAP_LIB": str(lib)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_my_vmap.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout


def test_the_walker_example_is_valid_python() -> None:
    (block,) = [b for b in python_blocks() if "walker_test(my_walker" in b]
    compile(block, "docs/testing.md", "exec")
