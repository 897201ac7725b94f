"""``vaalloc simulate``: the per-round costs obey the VLPT design's exact counts, the run is
reproducible, the progress bar stays off the pipe, and bad options end in one line."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import vaalloc.cli as cli
from vaalloc.cli import simulate
from vaalloc.cli._args import parse_size
from vaalloc.cli._progress import ProgressBar
from vaalloc.cli.simulate import Scenario, run_scenario

SMALL = ["--domains", "2", "--ram", "64M", "--cpus", "2", "--vcpus", "2"]
SMALL += ["--bandwidth", "2048", "--rate", "30", "--quiet"]


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run through the real entry point whether or not the command list has it yet."""
    if simulate not in cli._COMMANDS:
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, simulate))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert cli.main(["simulate", *SMALL, "--json", *argv]) == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


@pytest.mark.parametrize("superpages", [False, True])
def test_rounds_obey_the_partitioned_vlpt_counts(
    capsys: pytest.CaptureFixture[str], superpages: bool
) -> None:
    report = _run(capsys, "--seed", "4", "--check", *(["--superpages"] if superpages else []))
    rounds = report["rounds"]
    pages = (64 << 20) >> 12
    assert rounds[0]["pages_sent"] == 2 * pages
    for prev, cur in itertools.pairwise(rounds):
        assert cur["pages_sent"] == prev["dirty"]  # each round sends what the last one dirtied
    for r in rounds:
        assert r["writes"] == r["slices"] * 2 * 30  # 2 CPUs running, 30 writes each per slice
        assert r["faults"] - r["spurious_faults"] == r["dirty"]  # one fault per page dirtied
        assert r["vlpt_reads"] == 2 * r["faults"]  # level 2 through the loop, then the leaf
        assert r["context_switch_slot_writes"] == 0
        assert r["stale_tlb_hits"] == 0
    assert rounds[0]["xen_second_writes"] == 2  # one slot per 64MB domain, at enable
    assert all(r["xen_second_writes"] == 0 for r in rounds[1:])
    assert rounds[-1]["kind"] == "stop-and-copy" and rounds[-1]["writes"] == 0
    assert report["converged"]
    assert sum(r["context_switches"] for r in rounds) > 0  # 4 vCPUs on 2 CPUs
    assert (rounds[0]["superpage_splits"] > 0) == superpages
    slots = [d["vlpt_first_slot"] for d in report["domains"]]
    assert len(set(slots)) == 2 and all(64 <= s < 127 for s in slots)
    totals = report["totals"]
    assert totals["faults"] == sum(r["faults"] for r in rounds)


def test_same_seed_same_report_other_seed_other_writes(capsys: pytest.CaptureFixture[str]) -> None:
    first = _run(capsys, "--seed", "9")
    assert _run(capsys, "--seed", "9") == first
    other = _run(capsys, "--seed", "10")
    assert [r["dirty"] for r in other["rounds"]] != [r["dirty"] for r in first["rounds"]]


def test_max_rounds_stops_a_run_that_cannot_converge(capsys: pytest.CaptureFixture[str]) -> None:
    report = _run(capsys, "--stop-pages", "0", "--max-rounds", "2", "--hot", "1")
    assert not report["converged"]
    assert [r["kind"] for r in report["rounds"]] == ["pre-copy", "pre-copy", "stop-and-copy"]


def test_text_summary_has_the_round_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["simulate", *SMALL]) == 0
    out, err = capsys.readouterr()
    assert "pages sent" in out and "slot writes" in out and "stale hits" in out
    assert "stale TLB hits: 0" in out
    assert "d1: VLPT slots 64..64 at 0x8000000" in out
    assert err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_nowhere_else() -> None:
    tty = _Terminal()
    run_scenario(
        Scenario(domains=1, ram=32 << 20, cpus=1, vcpus=1, bandwidth=1024, rate=5),
        ProgressBar(stream=tty),
    )
    drawn = tty.getvalue()
    assert "pre-copy round 0" in drawn and "%" in drawn
    assert drawn.endswith("\r")  # erased before the summary
    pipe = io.StringIO()
    bar = ProgressBar(stream=pipe)
    bar.update("x", 1, 2, force=True)
    bar.close()
    assert pipe.getvalue() == ""
    quiet = ProgressBar(enabled=False, stream=_Terminal())
    quiet.update("x", 1, 2, force=True)
    assert quiet.stream.getvalue() == ""  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "value"), [("2G", 2 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("0x1000", 4096)]
)
def test_sizes_parse(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "argv",
    [
        ["--ram", "3M"],
        ["--ram", "2X"],
        ["--ram", "0"],
        ["--domains", "0"],
        ["--hot", "1.5"],
        ["--rate", "-1"],
        ["--domains", "40", "--ram", "2G"],
        ["--strategy", "nosuch"],
    ],
)
def test_bad_options_end_in_one_line_and_status_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    try:
        status = cli.main(["simulate", "--quiet", *argv])
    except SystemExit as exc:  # argparse refused the option
        status = int(str(exc.code))
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vaalloc simulate")
    assert "Traceback" not in "\n".join(err)


@given(
    n=st.integers(1, 1 << 20),
    unit=st.sampled_from([("", 0), ("K", 10), ("M", 20), ("G", 30), ("KiB", 10), ("GB", 30)]),
)
def test_any_whole_size_parses(n: int, unit: tuple[str, int]) -> None:
    assert parse_size(f"{n}{unit[0]}") == n << unit[1]
    assert parse_size(f"{n}{unit[0].lower()}") == n << unit[1]


def test_every_lookup_strategy_sees_the_same_dirty_pages(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = _run(capsys, "--seed", "6")
    for strategy in ("switched", "walk", "hybrid"):
        other = _run(capsys, "--seed", "6", "--strategy", strategy)
        assert other["strategy"] == strategy
        for mine, theirs in zip(base["rounds"], other["rounds"], strict=True):
            for key in ("pages_sent", "writes", "dirty", "stale_tlb_hits"):
                assert theirs[key] == mine[key], (strategy, key)
    walk = _run(capsys, "--seed", "6", "--strategy", "walk")["totals"]
    assert walk["vlpt_reads"] == 0 and walk["map_domain_page"] > 0
    switched = _run(capsys, "--seed", "6", "--strategy", "switched")["totals"]
    assert switched["context_switch_slot_writes"] > 0
