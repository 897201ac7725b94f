"""``vaalloc fuzz``: a summary and status 0 when vaalloc agrees with its reference models,
status 1 and the shrunk reproducer when a target fails, one-line errors for bad options."""

from __future__ import annotations

import argparse
import json

import pytest

from vaalloc.cli import fuzz as fuzz_cli
from vaalloc.testing import DifferentialAllocatorMachine, IntervalModel, Region
from vaalloc.testing.fuzz import TARGETS


def run(argv: list[str]) -> int:
    """The sub-command as `vaalloc` runs it (the lead wires it into vaalloc.cli._COMMANDS)."""
    parser = argparse.ArgumentParser(prog="vaalloc")
    fuzz_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fuzz", *argv])
    status: int = args.func(args)
    return status


def test_target_names_are_the_campaigns() -> None:
    assert list(fuzz_cli.TARGET_NAMES) == list(TARGETS)


def test_summary_per_target(capsys: pytest.CaptureFixture[str]) -> None:
    status = run(["--target", "xen-vmap", "--target", "pagetable-armv7-s2", "--examples", "5"])
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["xen-vmap", "ok"] and "examples" in lines[0]
    assert lines[1].split()[:2] == ["pagetable-armv7-s2", "ok"]
    assert "all 2 target(s) agree" in lines[-1] and "seed 0" in lines[-1]


def test_json_output_is_machine_readable_and_seeded(capsys: pytest.CaptureFixture[str]) -> None:
    runs = []
    for _ in range(2):
        assert run(["--target", "alloc-best-fit", "--examples", "5", "--seed", "9", "--json"]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    (result,) = runs[0]["targets"]
    assert runs[0]["ok"] is True and result["target"] == "alloc-best-fit"
    assert result["examples"] >= 5 and result["steps"] > 0 and result["failure"] is None
    # Same seed, same budget: the same examples and steps.
    assert runs[1]["targets"][0]["steps"] == result["steps"]


def test_seconds_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--target", "alloc-first-fit", "--seconds", "0.3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["targets"][0]
    assert result["seconds"] >= 0.3


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
    status = run(["--target", "alloc-first-fit", "--target", "xen-vmap", "--seed", "2"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED" in out.splitlines()[0]
    assert "xen-vmap" not in out  # the run stops at the first failing target
    assert "reproducer (seed 2, found after" in out
    assert "state.setup(region=Region(" in out and "PortMismatch: alloc(" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "nope"],
        ["--examples", "0"],
        ["--seconds", "-1"],
        ["--examples", "3", "--seconds", "1"],
    ],
)
def test_bad_options_are_one_line_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    assert exc.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
