"""``vaalloc simulate``: the per-round costs obey the VLPT design's exact counts, the run is
reproducible, the progress bar stays off the pipe, and bad options end in one line.

Issue 13's items tested here: 5 (the text's rows are the JSON's keys, with units; plurals;
addresses as integers in JSON), 6 (a huge --rate refused, a long run announced) and 8
(--vcpus past Xen's limit refused rather than quietly time-shared)."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import vaalloc.cli as cli
from tests.clirun import first_stderr_line, vaalloc
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


def test_text_rows_are_the_json_keys_with_units(capsys: pytest.CaptureFixture[str]) -> None:
    report = _run(capsys, "--seed", "4")
    assert cli.main(["simulate", *SMALL, "--seed", "4"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("round "))
    assert lines[start].split() == [
        "round",
        "unit",
        *map(str, range(len(report["rounds"]))),
        "total",
    ]
    assert lines[start + 1].split() == ["kind", *(r["kind"] for r in report["rounds"])]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        key, *rest = line.split()
        rows[key] = rest
    keys = set(report["rounds"][0]) - {"round", "kind"}
    assert set(rows) == keys  # every key of a round, and nothing else
    for key, cells in rows.items():
        unit_words = len(cells) - len(report["rounds"]) - (key != "dirty")
        assert unit_words >= 1, key  # every row has its unit
        values = cells[unit_words:]
        assert values[: len(report["rounds"])] == [str(r[key]) for r in report["rounds"]]
        if key != "dirty":
            assert values[-1] == str(report["totals"][key])
    assert "d1: VLPT slots 64..64 at 0x08000000" in out
    assert report["domains"][0]["vlpt_va"] == 0x0800_0000  # an integer in JSON
    assert "stale TLB hits: 0" in out


def test_one_of_everything_is_singular(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--domains", "1", "--ram", "32M", "--cpus", "1", "--vcpus", "1", "--rate", "1"]
    assert cli.main(["simulate", "--quiet", *argv, "--bandwidth", "8192", "--stop-pages", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 domain x 32M RAM, 1 vCPU each: 1 vCPU on 1 pCPU, 1 running")
    assert "1 write per vCPU per slice" in out
    assert "after 1 pre-copy round;" in out


# --- items 6 and 8: limits said, not hidden --------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vcpus", "10000"], "argument --vcpus: 10000 is more than 8 (Xen on ARM32"),
        (["--rate", "100000000"], "argument --rate: 100000000 is more than 1000000"),
        (["--domains", "300"], "argument --domains: 300 is more than 255 (an ARMv7 VMID"),
        (["--cpus", "33"], "argument --cpus: 33 is more than 32"),
    ],
)
def test_past_a_limit_is_a_clear_error_at_once(argv: list[str], message: str) -> None:
    proc = vaalloc("simulate", *argv, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith(f"vaalloc simulate: error: {message}")


def test_more_vcpus_than_pcpus_is_said_not_hidden(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--domains", "2", "--ram", "16M", "--cpus", "2", "--vcpus", "8", "--rate", "5"]
    assert cli.main(["simulate", "--quiet", "--bandwidth", "4096", *argv]) == 0
    assert "8 vCPUs each: 16 vCPUs on 2 pCPUs, 2 running per time slice" in capsys.readouterr().out


def test_a_long_run_is_announced_before_it_starts() -> None:
    line = first_stderr_line("simulate", "--rate", "1000000", "--quiet")
    assert line.startswith("vaalloc simulate: warning: round 0 alone makes 128,000,000 guest")


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
