"""``vaalloc replay`` run as a user runs it: a process, its exit status, its stdout and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vaalloc.replay import DEFAULT_POLICIES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
VMALLOCINFO = DATA / "vmallocinfo-6.18.44.txt"
FTRACE = DATA / "ftrace-vmalloc-6.18.44.txt"


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaalloc.cli", "replay", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=120,
    )


def test_snapshot_text_report() -> None:
    proc = run(str(VMALLOCINFO))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "/proc/vmallocinfo snapshot, 398 records replayed, 0 skipped" in out
    assert "hashed" in out and "by size only" in out
    assert "region vmap-arm32 [0x10000000, 0x40000000), 768MB" in out
    rows = [
        ln.split()[0]
        for ln in out.splitlines()
        if ln.split()[:1] and ln.split()[0] in DEFAULT_POLICIES
    ]
    assert rows == list(DEFAULT_POLICIES)
    assert "most contiguous space at the end:" in out
    assert proc.stderr == ""


def test_json_has_the_issues_keys_and_integers() -> None:
    proc = run(str(FTRACE), "--json", "--region", "window-128M")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert list(doc)[:5] == ["format", "records", "skipped", "region", "results"]
    assert doc["format"] == "ftrace" and doc["region"] == {
        "name": "window-128M",
        "start": 0x0800_0000,
        "end": 0x1000_0000,
    }
    assert [r["policy"] for r in doc["results"]] == list(DEFAULT_POLICIES)
    for r in doc["results"]:
        assert list(r)[:8] == [
            "policy",
            "failed",
            "mismatches",
            "peak_used_bytes",
            "largest_free_bytes",
            "holes",
            "fragmentation",
            "first_failure",
        ]
        assert all(isinstance(r[k], int) for k in ("failed", "peak_used_bytes", "holes"))
        # The traced addresses are x86_64's, outside the 128MB window: nothing to compare.
        assert r["mismatches"] is None


def test_ftrace_in_its_own_window_compares_placements() -> None:
    proc = run(str(FTRACE), "--policy", "linux-vmalloc,first-fit", "--json")
    doc = json.loads(proc.stdout)
    assert doc["region"]["name"] == "trace"
    linux = doc["results"][0]
    assert linux["policy"] == "linux-vmalloc" and linux["purges"] == 1
    assert isinstance(linux["mismatches"], int) and linux["first_mismatch"]["line"] > 0
    text = run(str(FTRACE), "--policy", "linux-vmalloc").stdout
    assert "first placement that differs at record 1 (line" in text
    assert "traced 0xffffc9" in text  # addresses in hex


def test_policy_and_region_options() -> None:
    proc = run(str(VMALLOCINFO), "--policy", "xen-vmap", "--policy", "best-fit:noguard",
               "--region", "0x10000000:0x18000000", "--json")  # fmt: skip
    doc = json.loads(proc.stdout)
    assert [r["policy"] for r in doc["results"]] == ["xen_vmap", "best-fit:noguard"]
    assert (doc["region"]["start"], doc["region"]["end"]) == (0x1000_0000, 0x1800_0000)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--region", "0x2000:0x1000"], "argument --region: region '0x2000:0x1000'"),
        (["--region", "vmap"], "argument --region: not a region: 'vmap'"),
        (["--region", "0x1001:0x2000"], "region [0x1001, 0x2000) is not aligned"),
        (["--policy", "worst-fit"], "argument --policy: unknown policy 'worst-fit'"),
        (["--chart", "c.jpg"], "argument --chart: chart 'c.jpg': the suffix must be"),
        (["--page-size", "12K"], "argument --page-size: 12K is not a page size"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], message: str) -> None:
    proc = run(str(VMALLOCINFO), *argv)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr.strip().splitlines()[-1]
    assert proc.stdout == ""


def test_a_malformed_file_is_one_line_with_its_line_number(tmp_path: Path) -> None:
    bad = tmp_path / "vmallocinfo"
    good = VMALLOCINFO.read_text().splitlines()
    bad.write_text("\n".join([*good[:5], "0xdead-0xbeef not-a-size caller", *good[5:]]) + "\n")
    proc = run(str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"vaalloc replay: {bad}: line 6: not a /proc/vmallocinfo line")
    missing = run(str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_this_machines_vmallocinfo_in_one_command() -> None:
    if not Path("/proc/vmallocinfo").exists():
        pytest.skip("not a Linux machine")
    proc = run("/proc/vmallocinfo")
    assert proc.returncode == 0, proc.stderr
    assert "/proc/vmallocinfo: /proc/vmallocinfo snapshot" in proc.stdout


def test_chart_after_the_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "replay.png"
    proc = run(str(FTRACE), "--region", "window-128M", "--chart", str(chart))
    assert proc.returncode == 0, proc.stderr
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert proc.stdout.splitlines()[-1] == f"wrote chart {chart}"


def test_unwritable_chart_keeps_the_results(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    proc = run(str(VMALLOCINFO), "--chart", str(tmp_path / "no" / "dir" / "c.svg"))
    assert proc.returncode == 1
    assert "most contiguous space" in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("vaalloc replay: cannot write chart")


def test_without_matplotlib_the_results_come_and_the_hint(tmp_path: Path) -> None:
    # A matplotlib that cannot be imported, first on the path.
    fake = tmp_path / "nompl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    proc = run(
        str(VMALLOCINFO),
        "--chart",
        str(tmp_path / "c.png"),
        env={"PYTHONPATH": f"{tmp_path / 'nompl'}{os.pathsep}{ROOT}"},
    )
    assert proc.returncode == 1
    assert "most contiguous space" in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert "pip install" in line and "[plot]" in line
    assert not (tmp_path / "c.png").exists()


def test_record_then_replay_the_recording(tmp_path: Path) -> None:
    out = tmp_path / "trace.json"
    first = run(str(FTRACE), "--record", str(out), "--json")
    assert first.returncode == 0, first.stderr
    again = run(str(out), "--json")
    a, b = json.loads(first.stdout), json.loads(again.stdout)
    assert b["format"] == "vaalloc-json"
    assert b["region"] == a["region"]

    # The same results; only the line numbers differ (the JSON trace numbers its records).
    def lines_dropped(doc: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for r in doc["results"]:
            r = dict(r)
            for key in ("first_mismatch", "first_failure"):
                if r[key] is not None:
                    r[key] = {k: v for k, v in r[key].items() if k != "line"}
            out.append(r)
        return out

    assert lines_dropped(b) == lines_dropped(a)
    bad = run(str(FTRACE), "--record", str(tmp_path / "no" / "t.json"))
    assert bad.returncode == 1 and "cannot write trace" in bad.stderr
    assert "most contiguous space" in bad.stdout
