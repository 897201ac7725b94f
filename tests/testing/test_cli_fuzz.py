"""``vaalloc fuzz``: a line per target as it finishes and a summary, status 0 when vaalloc agrees
with its reference models; status 1 and the shrunk reproducer when a target fails; one-line
errors for bad options.

Issue 13, item 7: ``--seconds`` is the budget of the whole run, split across the targets; a
line comes out as each target finishes; ``--examples N`` reports N (what docs/testing.md
says); ``--jobs N`` spreads targets and seeds over N processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clirun import ROOT, env, on_terminal
from tests.clirun import vaalloc as run
from vaalloc.cli import fuzz as fuzz_cli
from vaalloc.cli import main
from vaalloc.testing import DifferentialAllocatorMachine, IntervalModel, Region
from vaalloc.testing.fuzz import DEFAULT_EXAMPLES, TARGETS


def test_target_names_and_default_are_the_library_s() -> None:
    assert list(fuzz_cli.TARGET_NAMES) == list(TARGETS)
    assert fuzz_cli.DEFAULT_EXAMPLES == DEFAULT_EXAMPLES


def test_a_line_per_target_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fuzz", "--target", "xen-vmap", "--target", "pagetable-armv7-s2", "--examples", "5"]
    status = main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0] == "fuzzing 2 targets, 5 examples each, on 1 process, seed 0"
    assert lines[1].split()[:4] == ["xen-vmap", "ok", "5", "examples"]
    assert lines[2].split()[:4] == ["pagetable-armv7-s2", "ok", "5", "examples"]
    assert lines[3].startswith("all 2 targets agree: 10 examples, ") and "seed 0" in lines[3]


def test_examples_reported_are_the_examples_asked_for() -> None:
    """docs/testing.md: "every target, 100 examples each"; hypothesis' discarded ones apart."""
    proc = run("fuzz", "--target", "xen-vmap", "--json")  # hypothesis discards a few here
    assert proc.returncode == 0, proc.stderr
    (target,) = json.loads(proc.stdout)["targets"]
    assert target["examples"] == 100 and target["discarded"] > 0
    doc = (ROOT / "docs" / "testing.md").read_text()
    assert "vaalloc fuzz                                   # every target, 100 examples each" in doc


def test_json_output_is_machine_readable_and_seeded(capsys: pytest.CaptureFixture[str]) -> None:
    runs = []
    for _ in range(2):
        argv = ["fuzz", "--target", "alloc-best-fit", "--examples", "5", "--seed", "9", "--json"]
        assert main(argv) == 0
        runs.append(json.loads(capsys.readouterr().out))
    (result,) = runs[0]["targets"]
    assert runs[0]["ok"] is True and result["target"] == "alloc-best-fit"
    assert result["examples"] == 5 and result["steps"] > 0 and result["failure"] is None
    assert (result["seed"], result["last_seed"]) == (9, 9)
    # Same seed, same budget: the same examples and steps.
    assert runs[1]["targets"][0]["steps"] == result["steps"]


def test_seconds_is_the_budget_of_the_whole_run() -> None:
    budget = 4.5  # for all nine targets: half a second each (it was 4.5 s *each* before)
    start = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "vaalloc", "fuzz", "--seconds", str(budget)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert child.stdout is not None
    arrivals = []
    for line in child.stdout:
        arrivals.append((time.monotonic() - start, line.rstrip("\n")))
    assert child.wait(timeout=120) == 0
    wall = time.monotonic() - start
    plan, *targets, summary = [line for _, line in arrivals]
    assert plan.startswith(f"fuzzing 9 targets for {budget:g} s in all (0.5 s of process time")
    assert [line.split()[0] for line in targets] == list(TARGETS)
    assert all(line.split()[1] == "ok" for line in targets)
    assert summary.startswith("all 9 targets agree: ")
    spent = sum(float(line.split(" s  seed")[0].split()[-1]) for line in targets)
    assert spent <= budget * 1.5, spent  # each target got its share, not the whole budget
    assert wall < budget * 2 + 10, wall  # (interpreter start-up and imports on top)
    # A line comes out as its target finishes, not all at the end.
    first_line_at = arrivals[1][0]
    assert first_line_at < wall - budget / 2, (first_line_at, wall)


def test_jobs_spread_targets_and_seeds_over_processes() -> None:
    proc = run("fuzz", "--target", "walk-armv7-s1", "--seconds", "2", "--jobs", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(proc.stdout)["targets"]
    # Two processes fuzzed the target at once, on seeds 0, 2, 4... and 1, 3, 5...
    assert result["seed"] == 0 and result["last_seed"] >= 1
    assert result["examples"] > 5


def test_jobs_with_examples_give_the_same_run(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fuzz", "--target", "xen-vmap", "--target", "walk-armv7-s1", "--examples", "8"]
    argv += ["--seed", "4", "--json"]
    one = run(*argv)
    two = run(*argv, "--jobs", "2")
    assert one.returncode == two.returncode == 0, one.stderr + two.stderr

    def work(proc: subprocess.CompletedProcess[str]) -> dict[str, tuple[int, int]]:
        return {
            t["target"]: (t["examples"], t["steps"]) for t in json.loads(proc.stdout)["targets"]
        }

    assert work(one) == work(two)


def test_progress_on_a_terminal() -> None:
    status, out, drawn = on_terminal("fuzz", "--target", "xen-vmap", "--examples", "30")
    assert status == 0
    assert "xen-vmap" in drawn and "%" in drawn
    assert "all 1 target agree: 30 examples" in out


class OffByOne(IntervalModel):
    """A port that places every run one granule too high."""

    def alloc(self, nr: int, align: int) -> int | None:
        va = super().alloc(nr, 1)
        return None if va is None else va + self.granule


class Broken(DifferentialAllocatorMachine):
    policy = "first-fit"

    def make_adapter(self, region: Region) -> IntervalModel:
        return OffByOne(region.start, region.end, region.granule, "first-fit")


def test_a_failing_target_exits_1_with_the_reproducer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(TARGETS, "alloc-first-fit", lambda: type("B", (Broken,), {}))
    argv = ["fuzz", "--target", "alloc-first-fit", "--target", "xen-vmap", "--seed", "2"]
    status = main(argv)
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED" in out.splitlines()[1]
    assert "xen-vmap" not in out.split("\n", 1)[1]  # the run stops at the first failing target
    assert "reproducer (seed 2, found after" in out
    assert "state.setup(region=Region(" in out and "PortMismatch: alloc(" in out
    assert "run it again: vaalloc fuzz --target alloc-first-fit --examples 100 --seed 2" in out


def test_a_failure_in_a_timed_run_says_how_to_run_the_batch_again(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(TARGETS, "alloc-first-fit", lambda: type("B", (Broken,), {}))
    assert main(["fuzz", "--target", "alloc-first-fit", "--seconds", "5", "--seed", "7"]) == 1
    out = capsys.readouterr().out
    again = next(line for line in out.splitlines() if line.startswith("run it again: "))
    _, _, command = again.partition("run it again: vaalloc ")
    assert main(command.split()) == 1  # the same batch fails again
    assert "PortMismatch" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "nope"],
        ["--examples", "0"],
        ["--seconds", "-1"],
        ["--examples", "3", "--seconds", "1"],
        ["--jobs", "0"],
        ["--jobs", "65"],
        ["--seed", "-1"],
    ],
)
def test_bad_options_are_one_line_errors(argv: list[str], tmp_path: Path) -> None:
    proc = run("fuzz", *argv, timeout=30)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("vaalloc fuzz: error: argument ")
