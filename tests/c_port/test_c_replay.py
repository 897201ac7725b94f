"""The C replay in examples/c_port/ ports Xen's vmap placement and the VLPT arithmetic and
checks them against the vectors: it must pass on fresh vectors and catch a wrong one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vaalloc.vectors import write_vectors

SOURCE = Path(__file__).resolve().parents[2] / "examples" / "c_port" / "replay.c"
COMPILER = shutil.which("cc") or shutil.which("gcc")

pytestmark = pytest.mark.skipif(COMPILER is None, reason="no C compiler on this machine")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Vectors (seed 5) and the replay binary built against their header."""
    root = tmp_path_factory.mktemp("c_port")
    vectors = root / "vectors"
    write_vectors(vectors, seed=5, ops=300, walks=5, vlpt=200)
    binary = root / "replay"
    assert COMPILER is not None
    subprocess.run(
        [
            COMPILER,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-I",
            str(vectors),
            "-o",
            str(binary),
            str(SOURCE),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return vectors, binary


def _replay(binary: Path, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *map(str, files)], capture_output=True, text=True, check=False, timeout=60
    )


def test_c_replay_matches_every_expected_result(built: tuple[Path, Path]) -> None:
    vectors, binary = built
    files = [*sorted(vectors.glob("alloc-xen_vmap*.txt")), vectors / "vlpt.txt"]
    assert len(files) == 3
    proc = _replay(binary, *files)
    assert proc.returncode == 0, proc.stdout
    summary = re.findall(r": (\d+) checks, (\d+) failed", proc.stdout)
    assert len(summary) == 3
    # alloc: 3 checks per op plus 3 at boot; vlpt: one per line (plus the loop slot check).
    assert [int(c) for c, _ in summary[:2]] == [3 * 300 + 3] * 2
    assert int(summary[2][0]) == 200 * 3
    assert all(int(f) == 0 for _, f in summary)


@pytest.mark.parametrize(
    ("name", "pattern", "replace"),
    [
        ("alloc-xen_vmap.txt", r"^(alloc \d+ \d+ 0x)([0-9a-f]+)", "address"),
        ("alloc-xen_vmap-grow.txt", r"^(alloc \d+ \d+ 0x[0-9a-f]+ )(\d+)", "vm_low"),
        ("vlpt.txt", r"^(third \d+ \d+ \d+ 0x[0-9a-f]+ 0x)([0-9a-f]+)", "third"),
    ],
)
def test_c_replay_reports_a_wrong_expectation(
    built: tuple[Path, Path], tmp_path: Path, name: str, pattern: str, replace: str
) -> None:
    vectors, binary = built
    lines = (vectors / name).read_text().splitlines()
    target = next(i for i, line in enumerate(lines) if re.match(pattern, line))

    def bump(m: re.Match[str]) -> str:
        value = int(m.group(2), 16 if "0x" in m.group(1)[-2:] else 10)
        shown = f"{value + 0x1000:x}" if "0x" in m.group(1)[-2:] else str(value + 1)
        return m.group(1) + shown

    lines[target] = re.sub(pattern, bump, lines[target])
    broken = tmp_path / name
    broken.write_text("\n".join(lines) + "\n")
    proc = _replay(binary, broken)
    assert proc.returncode == 1, (replace, proc.stdout)
    assert f"{broken}:{target + 1}:" in proc.stdout


def test_c_replay_refuses_a_malformed_file(built: tuple[Path, Path], tmp_path: Path) -> None:
    _, binary = built
    bad = tmp_path / "bad.txt"
    bad.write_text("alloc 1 1 0x10007000 6 32768\n")  # an op before any allocator record
    proc = _replay(binary, bad)
    assert proc.returncode == 2
    assert "malformed" in proc.stdout
