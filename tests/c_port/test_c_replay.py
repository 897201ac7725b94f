"""The C replay in examples/c_port/ ports Xen's vmap placement and the VLPT arithmetic and
checks them against the vectors: it must pass on fresh vectors, catch a wrong one, count its
checks as ``vaalloc vectors`` does, and never pass a file that proves nothing (issue 13, item 9:
an empty, comment-only, malformed or mismatched file is exit status 2)."""

from __future__ import annotations

import json
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
    summary = dict(re.findall(r"^(\S+): (\d+) checks, 0 failed$", proc.stdout, re.MULTILINE))
    assert len(summary) == 3
    # The replay counts what the manifest says each file holds (as `vaalloc vectors` prints).
    manifest = json.loads((vectors / "manifest.json").read_text())["files"]
    assert {Path(f).name: int(n) for f, n in summary.items()} == {
        f.name: manifest[f.name]["checks"] for f in files
    }
    assert int(summary[str(vectors / "alloc-xen_vmap.txt")]) == 3 + 3 * 300
    assert int(summary[str(vectors / "vlpt.txt")]) == 2 * 200


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


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("alloc 1 1 0x10007000 6 32768\n", "malformed record"),  # an op before the allocator
        ("allocator xen_vmap 0x1000 0x2000 0 1 1 1\n", "malformed record"),  # granule 0
        ("allocator xen_vmap 0x2000 0x1000 0x1000 1 1 1\n", "malformed record"),  # end < start
        ("third 64 2 1 -0x1000 0x8000000\n", "malformed record"),  # a negative number
        ("third 64 2 1 0x99999999999999999999 -\n", "malformed record"),  # overflows 64 bits
        ("third 64 2 1 0x80000000 0x8000000 " + "1 " * 300 + "\n", "line too long"),
        ("second 126 64 2 1 0x80000000 0xfe40000\n", "loop slot 126, but vaalloc_xen.h"),
        ("", "no checks"),  # an empty file proves nothing
        ("# only a comment\n\n", "no checks"),
    ],
)
def test_c_replay_refuses_what_proves_nothing(
    built: tuple[Path, Path], tmp_path: Path, text: str, says: str
) -> None:
    _, binary = built
    bad = tmp_path / "bad.txt"
    bad.write_text(text)
    proc = _replay(binary, bad)
    assert proc.returncode == 2, proc.stdout
    assert says in proc.stdout


def test_c_replay_of_dev_null_fails(built: tuple[Path, Path]) -> None:
    _, binary = built
    proc = _replay(binary, Path("/dev/null"))
    assert proc.returncode == 2
    assert proc.stdout == "/dev/null: 0 checks, 0 failed (no checks: empty file?)\n"


def test_one_bad_file_among_good_ones_fails_the_run(built: tuple[Path, Path]) -> None:
    vectors, binary = built
    proc = _replay(binary, vectors / "vlpt.txt", Path("/dev/null"))
    assert proc.returncode == 2
    assert f"{vectors / 'vlpt.txt'}: 400 checks, 0 failed" in proc.stdout
