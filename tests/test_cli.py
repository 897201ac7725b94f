"""The ``vaalloc`` command as a whole: how it is started, its help, the argument vocabulary every
sub-command shares, and bad options ending in one line, not a traceback.

Issue 13's items tested here: 3 (one vocabulary), 4 (help, --version, python -m vaalloc), 5
(plurals, sizes, error messages in the user's terms), 6 (progress on a terminal) and 8
(negative seeds refused)."""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import vaalloc
import vaalloc.cli as cli
from tests.clirun import ROOT, env, on_terminal
from tests.clirun import vaalloc as run
from vaalloc.cli._args import format_size, parse_size
from vaalloc.xen import LOOKUPS

COMMANDS = ["simulate", "layout", "compare", "vectors", "fuzz", "demo"]
SMALL_DEMO = ["demo", "--ops", "50", "--seed", "3", "--json"]


# --- item 4: how the command starts, and its help ---------------------------------------------
def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"vaalloc {vaalloc.__version__}"


def test_python_dash_m_vaalloc_is_the_command() -> None:
    mine = run(*SMALL_DEMO)
    assert mine.returncode == 0, mine.stderr
    other = subprocess.run(
        [sys.executable, "-m", "vaalloc.cli", *SMALL_DEMO],
        capture_output=True,
        text=True,
        check=False,
        env=env(),
        timeout=60,
    )
    assert other.returncode == 0 and other.stdout == mine.stdout
    assert json.loads(mine.stdout)["xen_vmap"]["live"] == 50


@functools.cache
def _help(*command: str) -> str:
    proc = run(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_sub_command_describes_itself_without_markup(command: str) -> None:
    text = _help(command)
    description = text.split("\n\n")[1]  # after the usage, before the options
    assert len(description.split()) >= 20, description
    assert not description.startswith(("options:", "positional arguments:"))
    for markup in ("``", ":mod:", ":class:", ":func:", ":data:", "`"):
        assert markup not in text, (command, markup)


def test_the_command_lists_every_sub_command_with_a_line_each() -> None:
    text = _help()
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s+\w", text, flags=re.MULTILINE), command
    assert "--version" in text


def _options(command: str) -> list[argparse.Action]:
    sub = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices[command]._actions)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_every_default(command: str) -> None:
    """Every option that has a value by default says which, in the option's own spelling."""
    text = " ".join(_help(command).split())
    for action in _options(command):
        if action.default in (None, False, argparse.SUPPRESS) or action.nargs == 0:
            continue
        assert action.help, (command, action.dest)
        show = getattr(action.type, "show", str)
        value = action.default
        if isinstance(value, list) and not hasattr(action.type, "item"):
            shown = " ".join(show(v) for v in value)
        else:
            shown = show(value)
        assert f"(default: {shown})" in text, (command, action.dest, shown)


def test_defaults_are_shown_as_the_user_writes_them() -> None:
    text = " ".join(_help("simulate").split())
    assert "RAM per guest, e.g. 2G or 512M (default: 2G)" in text
    compare = " ".join(_help("compare").split())
    assert "switch rates of the sweep, switches/s/pCPU (default: 10,100,1000,10000)" in compare
    assert "(default: 32M)" in compare
    assert "(default: 0x10000000)" in " ".join(_help("demo").split())


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_the_strategies_are_listed_by_name(command: str) -> None:
    text = _help(command)
    assert ", ...)" not in text  # not "(partitioned, switched, walk, ...)"
    for name in LOOKUPS:
        assert re.search(rf"\b{re.escape(name)}\b", text), (command, name)


# --- item 3 and 8: one vocabulary ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--seed", "-1"],
        ["compare", "--seed", "-1"],
        ["vectors", "out", "--seed", "-1"],
        ["fuzz", "--seed", "-1"],
        ["demo", "--seed", "-1"],
    ],
)
def test_a_negative_seed_is_refused_everywhere(argv: list[str]) -> None:
    """``random.Random(-1)`` is ``random.Random(1)``: a negative seed would repeat a run."""
    proc = run(*argv, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].endswith("argument --seed: must be non-negative: '-1'")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--ram", "2X"], "argument --ram: not a size: '2X' (e.g. 2G, 512M, 4096)"),
        (["compare", "--ram", "2X"], "argument --ram: not a size: '2X' (e.g. 2G, 512M, 4096)"),
        (["layout", "2X"], "argument SIZE: not a size: '2X' (e.g. 2G, 512M, 4096)"),
        (["simulate", "--hot", "1.5"], "argument --hot: must be from 0 to 1: '1.5'"),
        (["compare", "--superpages", "1.5"], "argument --superpages: must be from 0 to 1: '1.5'"),
        (["simulate", "--superpages", "1.5"], "argument --superpages: must be from 0 to 1: '1.5'"),
        (["simulate", "--domains", "0"], "argument --domains: must be positive: '0'"),
        (["compare", "--domains", "0"], "argument --domains: must be positive: '0'"),
        (["demo", "--ops", "0"], "argument --ops: must be positive: '0'"),
    ],
)
def test_one_spelling_one_message_in_every_sub_command(argv: list[str], message: str) -> None:
    proc = run(*argv, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == f"vaalloc {argv[0]}: error: {message}"


@pytest.mark.parametrize("command", ["simulate", "compare"])
def test_superpages_is_a_share_in_both_and_alone_means_all(command: str) -> None:
    common = ["--json", "--quiet", "--ram", "8M", "--domains", "1"]
    if command == "simulate":
        common += ["--cpus", "1", "--vcpus", "1", "--bandwidth", "512", "--rate", "20"]
    else:
        common += ["--strategies", "walk", "--logdirty", "1", "--duration", "5"]
    half = run(command, *common, "--superpages", "0.5")
    alone = run(command, *common, "--superpages")
    assert half.returncode == alone.returncode == 0, half.stderr + alone.stderr
    if command == "simulate":
        share = json.loads(half.stdout)["scenario"]["superpages"]
        assert share == 0.5 and json.loads(alone.stdout)["scenario"]["superpages"] == 1.0
        splits = [json.loads(p.stdout)["totals"]["superpage_splits"] for p in (half, alone)]
        assert 0 < splits[0] < splits[1]  # half the 2M blocks to split, then all of them
    else:
        assert json.loads(half.stdout)[0]["counts"]["faults"] > 0


@given(st.integers(1, 1 << 50))
def test_sizes_print_in_the_largest_exact_unit_and_read_back(size: int) -> None:
    shown = format_size(size)
    assert parse_size(shown) == size
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "B": 1}[shown[-1]]
    larger = [u for u in (1 << 10, 1 << 20, 1 << 30, 1 << 40) if u > unit]
    assert all(size % u for u in larger)  # no larger unit divides it


def test_ten_terabytes_is_10t() -> None:
    assert format_size(10 << 40) == "10T"
    assert format_size(3 << 29) == "1536M"
    proc = run("simulate", "--ram", "10TB", timeout=60)
    assert proc.returncode == 2
    assert "10TB is more than 1022G" in proc.stderr
    assert not re.search(r"\d{5,}MB", proc.stderr)


# --- item 5: errors in the user's terms -------------------------------------------------------
INTERNAL = re.compile(r"\b[A-Z][a-z]+[A-Z][A-Za-z]*\b|\w+\.\w+=|\bWorkload\b|\bDomainSpec\b")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["compare", "--ram", "3M"], "3M is not a multiple of 2M"),
        (["compare", "--logdirty", "9"], "--logdirty 9 is more than --domains 4"),
        (["compare", "--logdirty-counts", "1,7", "--sweep"], "--logdirty-counts 7 is more than"),
        (
            ["compare", "--capacity", "63", "--pcpus", "2", "--strategies", "switched"],
            "capacity 63 x --pcpus 2 is more than the window's 63 slots",
        ),
        (["compare", "--strategies", "bogus"], "unknown strategy 'bogus'"),
        (["compare", "--weights", "nosuch=3"], "weight 'nosuch=3'"),
        (["demo", "--start", "0x1001"], "0x1001 is not a multiple of 4K"),
        (["demo", "--start", "0x40000000"], "--end 0x40000000 must be above --start 0x40000000"),
        (["demo", "--ops", "100000"], "--ops 100000 is more than 21844"),
        (["simulate", "--domains", "40", "--ram", "2G"], "--domains 40 x --ram 2G need 80"),
        (
            ["simulate", "--strategy", "switched", "--ram", "20G"],
            "--ram 20G spans 20 GB of IPA (a VLPT slot each); --strategy switched gives each of "
            "the 4 pCPUs a window of 15 slots",
        ),
        (["layout", "0x1001"], "0x1001 is not a multiple of 4K"),
    ],
)
def test_errors_speak_in_options_and_hex(argv: list[str], says: str) -> None:
    proc = run(*argv, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"vaalloc {argv[0]}: ") and says in last, last
    message = last.split(": error: ", 1)[-1]
    assert not INTERNAL.search(message.replace("TLBIALLH", "")), message
    assert not re.search(r"\b(3145728|4097|1073741824)\b", message)  # no decimal addresses


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--ops", "many"],
        ["demo", "--start", "0x1000", "--end", "0x1000"],
        ["demo", "--start", "0x1001"],
        ["no-such-command"],
    ],
)
def test_bad_options_end_in_one_line_and_nonzero_status(argv: list[str]) -> None:
    proc = run(*argv, timeout=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(("vaalloc", "usage"))


# --- item 5: demo's table -------------------------------------------------------------------
def test_demo_names_its_columns_as_its_json_and_gives_their_units() -> None:
    text = run("demo", "--ops", "60").stdout.splitlines()
    as_json = json.loads(run("demo", "--ops", "60", "--json").stdout)
    header, units = text[3].split(), text[4].split()
    assert header[0] == "allocator" and set(header[1:]) == set(as_json["first-fit"])
    assert units == ["granules", "granules", "granules", "runs", "holes", "addresses"]
    first = as_json["xen_vmap"]["first_placements"]
    assert all(isinstance(a, int) for a in first)  # integers in JSON...
    assert " ".join(f"{a:#x}" for a in first) in text[-1]  # ...hex in text


def test_demo_json_reports_every_allocator_consistently() -> None:
    report = json.loads(run("demo", "--ops", "200", "--seed", "7", "--json").stdout)
    assert set(report) == {"first-fit", "best-fit", "instant-fit", "xen_vmap"}
    granules = (0x4000_0000 - 0x1000_0000) // 4096
    for row in report.values():
        assert row["used"] + row["free"] == granules
        assert row["live"] == 200
        assert 0 < row["largest_free"] <= row["free"]


def test_demo_ops_are_capped_by_what_the_range_holds() -> None:
    # 256 granules, one of them Xen's bitmap: 28 requests of 8 granules and a guard fit.
    proc = run("demo", "--start", "0x10000000", "--end", "0x10100000", "--ops", "28", "--json")
    assert proc.returncode == 0, proc.stderr
    assert all(r["live"] == 28 for r in json.loads(proc.stdout).values())
    refused = run("demo", "--start", "0x10000000", "--end", "0x10100000", "--ops", "29")
    assert refused.returncode == 2 and "--ops 29 is more than 28" in refused.stderr


# --- item 6: progress on a terminal, on stderr only -------------------------------------------
def test_progress_is_drawn_on_a_terminal_and_erased() -> None:
    status, out, drawn = on_terminal("demo", "--ops", "3000")
    assert status == 0
    assert "allocator xen_vmap" in drawn and "%" in drawn
    assert drawn.rstrip(" ").endswith("\r")  # erased before the results
    assert "first-fit" in out and "\r" not in out
    piped = run("demo", "--ops", "3000")
    assert piped.stderr == ""  # no bar when stderr is not a terminal


def test_a_closed_pipe_is_not_an_error() -> None:
    # ``vaalloc layout | head -1``: the reader leaves early; the command must end quietly.
    # The read end is closed before the child has started, so its first write meets EPIPE.
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaalloc", "layout", "4G"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err
