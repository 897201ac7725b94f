"""``vaalloc compare``: tables, JSON under the ledger's names, the sweep and its charts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vaalloc.cli import main

SMALL = ["--domains", "3", "--ram", "4", "--duration", "6", "--write-rate", "10"]


run = main


def test_table_lists_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["compare", *SMALL, "--strategies", "partitioned,switched,walk"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines()[2:5]]
    assert rows == ["partitioned", "switched", "walk"]
    assert "cheapest per write fault:" in out


def test_json_holds_raw_counts_under_ledger_names(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", *SMALL, "--json", "--strategies", "partitioned,switched"]
    assert run([*argv, "--weights", "xen_second_writes=100"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["strategy"] for r in report] == ["partitioned", "switched"]
    part, sw = report
    assert sw["counts"]["xen_second_writes"] >= sw["counts"]["context_switch_slot_writes"] > 0
    assert part["counts"].get("context_switch_slot_writes", 0) == 0
    assert part["counts"]["faults"] == sw["counts"]["faults"] > 0


def test_json_is_reproducible_for_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", *SMALL, "--json", "--strategies", "walk", "--seed", "9"]
    run(argv)
    first = capsys.readouterr().out
    run(argv)
    assert capsys.readouterr().out == first


def test_sweep_prints_winners_and_writes_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stem = tmp_path / "chart"
    argv = ["compare", *SMALL, "--sweep", "--rates", "100,3000", "--logdirty-counts", "1"]
    assert run([*argv, "--strategies", "partitioned,walk", "--chart", str(stem)]) == 0
    out = capsys.readouterr().out
    assert "-> partitioned" in out or "-> walk" in out
    assert (tmp_path / "chart.svg").read_text().startswith("<svg")
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_json_with_capacities(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", *SMALL, "--sweep", "--json", "--rates", "500", "--logdirty-counts", "2"]
    argv += ["--capacities", "max,1", "--strategies", "partitioned,hybrid"]
    assert run([*argv, "--chart", str(tmp_path / "c")]) == 0
    report = json.loads(capsys.readouterr().out)
    caps = {
        p["capacity"]: {r["strategy"]: r["supported"] for r in p["results"]}
        for p in report["points"]
    }
    assert caps == {
        None: {"partitioned": True, "hybrid": True},
        1: {"partitioned": False, "hybrid": True},
    }
    assert sorted(Path(p).name for p in report["charts"]) == [
        "c-ld2-cap1.png",
        "c-ld2-cap1.svg",
        "c-ld2-capmax.png",
        "c-ld2-capmax.svg",
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--strategies", "bogus"],
        ["--weights", "nosuch=3"],
        ["--logdirty", "9"],
        ["--ram", "3"],
        ["--capacity", "64", "--strategies", "partitioned"],
    ],
)
def test_bad_values_end_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["compare", *SMALL, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaalloc compare: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv", [["--rates", "0,10"], ["--superpages", "2"], ["--capacities", "x"], ["--pcpus", "0"]]
)
def test_malformed_options_are_argparse_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["compare", *argv])
    assert exc.value.code == 2
