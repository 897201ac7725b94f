"""Golden vectors: each kind is checked against something independent of the code that wrote it
(Xen's vmap.c ported line by line, walks of tables rebuilt from the file alone, reads through
the Xen model's MMU), and the files are a pure function of the seed."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference.xen_vmap_plain import PlainXenVmap
from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvalidFree, RangeError
from vaalloc.lpae import Format, PhysicalMemory, Translation
from vaalloc.lpae.walk import walk
from vaalloc.vectors import alloc_trace, c_header, vlpt_case, write_vectors
from vaalloc.xen import Xen, layout


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vectors")
    write_vectors(out, seed=11, ops=250, walks=60, vlpt=100)
    return out


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("name", ["xen_vmap", "xen_vmap-grow"])
def test_xen_traces_agree_with_the_plain_vmap_c_port(vectors: Path, name: str) -> None:
    trace = _load(vectors / f"alloc-{name}.json")
    head = trace["allocator"]
    base, granule = int(head["start"], 16), head["granule"]
    plain = PlainXenVmap((int(head["end"], 16) - base) // granule, granule)
    assert (plain.vm_low, plain.vm_top, plain.vm_end) == (
        head["vm_low"],
        head["vm_top"],
        head["vm_end"],
    )
    failed = False  # after a failure Xen keeps vm_top grown; vaalloc undoes it (documented)
    for op in trace["ops"]:
        if op["op"] == "alloc":
            bit = plain.vm_alloc(op["nr"], op["align"])
            got = None if bit is None else hex(base + bit * granule)
            failed |= bit is None
        else:
            idx = (int(op["va"], 16) - base) // granule
            size = plain.vm_size(idx)
            got = size if plain.vm_free(idx) else None
        assert got == op["result"], op
        assert plain.vm_low == op["vm_low"], op
        if not failed:
            assert plain.vm_top == op["vm_top"], op
    if name == "xen_vmap-grow":  # the trace exercises what it is named for
        assert failed
        assert trace["ops"][-1]["vm_top"] > head["vm_top"]


@pytest.mark.parametrize("policy", ["first-fit", "best-fit", "instant-fit"])
def test_policy_traces_hold_guards_and_alignment_and_replay(vectors: Path, policy: str) -> None:
    trace = _load(vectors / f"alloc-{policy}.json")
    head = trace["allocator"]
    start, end, g = int(head["start"], 16), int(head["end"], 16), head["granule"]
    fresh = RangeAllocator(start, end, granule=g, policy=head["policy"], guard=head["guard"])
    live: dict[int, int] = {}
    for op in trace["ops"]:
        if op["op"] == "alloc":
            va = int(op["result"], 16)
            assert (va // g) % op["align"] == 0 and start <= va < va + op["nr"] * g <= end
            for other, nr in live.items():  # a free granule between any two runs
                assert va + op["nr"] * g < other or other + nr * g < va
            live[va] = op["nr"]
            assert fresh.alloc(op["nr"], op["align"]) == va
        elif op["error"] == "InvalidFree":
            with pytest.raises(InvalidFree):
                fresh.free(int(op["va"], 16))
        else:
            assert live.pop(int(op["va"], 16)) == op["result"]
            assert fresh.free(int(op["va"], 16)) == op["result"]
    final = [[hex(va), nr] for va, nr in sorted(live.items())]
    assert trace["final"]["allocations"] == final


def test_walk_vectors_rebuild_from_the_file_alone(vectors: Path) -> None:
    files = sorted(vectors.glob("walk-*.json"))
    assert len(files) == 5
    outcomes: set[str] = set()
    for path in files:
        data = _load(path)
        f = data["translation_format"]
        fmt = Format(**f)
        mem = PhysicalMemory(pa_bits=fmt.oa_bits)
        for pa, value in data["memory"]:
            mem.write64(int(pa, 16), int(value, 16))
        for case in data["cases"]:
            va = int(case["va"], 16)
            t = walk(mem, fmt, int(data["root"], 16), va, case["access"], case["user"])
            if isinstance(t, Translation):
                want = case["translation"]
                assert (hex(t.pa), t.level, hex(t.descriptor)) == (
                    want["pa"],
                    want["level"],
                    want["descriptor"],
                ), (path.name, case)
                assert t.pa % want["block_size"] == va % want["block_size"]
                outcomes.add(f"level{t.level}")
            else:
                assert case["fault"] == {"kind": t.kind, "level": t.level}, (path.name, case)
                outcomes.add(t.kind)
    assert {"level1", "level2", "level3", "translation", "permission"} <= outcomes


def test_vlpt_vectors_address_the_p2m_entries_through_the_mmu() -> None:
    xen = Xen(cpus=1)
    d = xen.create_domain(ram=64 << 20)
    xen.logdirty.enable(d)
    run = xen.vlpt.run(d)
    rng = random.Random(3)
    for _ in range(40):
        ipa = d.ram_base + rng.randrange(d.ram_size >> 12) * 4096
        case = vlpt_case(run.first_slot, run.first_gb, run.nr, ipa)
        leaf = d.p2m.walk(ipa)
        assert isinstance(leaf, Translation)
        assert xen.read_va(0, int(case["third"], 16)) == leaf.descriptor
        l2 = xen.mem.read64(d.p2m.entry_pa(ipa, 2))
        assert xen.read_va(0, int(case["second"], 16)) == l2
    outside = vlpt_case(run.first_slot, run.first_gb, run.nr, d.ram_base + (1 << 30))
    assert outside["third"] is None and outside["second"] is None


def test_vlpt_vectors_follow_the_hardware_walk_formula(vectors: Path) -> None:
    data = _load(vectors / "vlpt.json")
    loop_va = data["loop_slot"] << 21
    inside = 0
    for c in data["cases"]:
        ipa, s, g, nr = int(c["ipa"], 16), c["first_slot"], c["first_gb"], c["nr"]
        gb = ipa >> 30
        if not g <= gb < g + nr:
            assert c["third"] is None and c["second"] is None
            continue
        inside += 1
        i2, i3 = (ipa >> 21) & 511, (ipa >> 12) & 511
        slot = s + gb - g
        assert int(c["third"], 16) == (slot << 21) + i2 * 4096 + i3 * 8
        assert int(c["second"], 16) == loop_va + slot * 4096 + i2 * 8
    assert 0 < inside < len(data["cases"])


def test_text_files_carry_the_json_expectations(vectors: Path) -> None:
    trace = _load(vectors / "alloc-xen_vmap.json")
    lines = [ln for ln in (vectors / "alloc-xen_vmap.txt").read_text().splitlines() if ln[0] != "#"]
    assert lines[0].split()[:2] == ["allocator", "xen_vmap"]
    assert len(lines) == 1 + len(trace["ops"])
    for line, op in zip(lines[1:], trace["ops"], strict=True):
        fields = line.split()
        assert fields[0] == op["op"]
        expect = fields[3] if op["op"] == "alloc" else fields[2]
        assert expect == ("-" if op["result"] is None else str(op["result"]))
    vlpt = [ln for ln in (vectors / "vlpt.txt").read_text().splitlines() if ln[0] != "#"]
    assert len(vlpt) == 2 * 100


def test_header_defines_every_layout_constant() -> None:
    defines = dict(re.findall(r"#define VAALLOC_(\w+) (\w+)ULL", c_header()))
    assert int(defines["VLPT_LOOP_SLOT"], 0) == layout.VLPT_LOOP_SLOT == 127
    assert int(defines["VMAP_VIRT_START"], 0) == layout.VMAP_VIRT_START
    for name, value in vars(layout).items():
        if name.isupper() and type(value) is int and value >= 0:
            assert int(defines[name], 0) == value, name


def test_same_seed_same_bytes_other_seed_other_traces(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((a, 2), (b, 2), (c, 3)):
        write_vectors(out, seed=seed, ops=40, walks=10, vlpt=10)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert (a / "alloc-first-fit.json").read_bytes() != (c / "alloc-first-fit.json").read_bytes()
    manifest = _load(a / "manifest.json")
    assert set(manifest["files"]) == set(names) - {"manifest.json"}


@pytest.mark.parametrize(
    "kwargs", [{"ops": 0}, {"walks": -1}, {"vlpt": 0}, {"ops": True}, {"ops": 1.5}]
)
def test_bad_counts_raise_and_write_nothing(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(RangeError):
        write_vectors(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_unknown_trace_names_and_runs_outside_the_window_are_refused() -> None:
    with pytest.raises(RangeError, match="nosuch"):
        alloc_trace("nosuch", 10, 1)
    with pytest.raises(RangeError, match="ops=0"):
        alloc_trace("first-fit", 0, 1)
    with pytest.raises(RangeError, match="slot 200"):
        vlpt_case(200, 2, 1, 0x8000_0000)


@given(
    first_slot=st.integers(64, 126),
    first_gb=st.integers(0, 1000),
    data=st.data(),
)
def test_any_vlpt_case_follows_the_walk_formula(first_slot: int, first_gb: int, data: Any) -> None:
    nr = data.draw(st.integers(1, 127 - first_slot), label="nr")
    ipa = data.draw(st.integers(0, (first_gb + nr + 2) << 30), label="ipa")
    case = vlpt_case(first_slot, first_gb, nr, ipa)
    gb = ipa >> 30
    if not first_gb <= gb < first_gb + nr:
        assert case["third"] is None and case["second"] is None
        return
    slot, i2, i3 = first_slot + gb - first_gb, (ipa >> 21) & 511, (ipa >> 12) & 511
    assert int(case["third"], 16) == (slot << 21) + i2 * 4096 + i3 * 8
    assert int(case["second"], 16) == (127 << 21) + slot * 4096 + i2 * 8


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32), name=st.sampled_from(["xen_vmap", "xen_vmap-grow"]))
def test_any_seed_gives_traces_xen_agrees_with(seed: int, name: str) -> None:
    trace = alloc_trace(name, 80, seed)
    head = trace["allocator"]
    base, granule = int(head["start"], 16), head["granule"]
    plain = PlainXenVmap((int(head["end"], 16) - base) // granule, granule)
    for op in trace["ops"]:
        if op["op"] == "alloc":
            bit = plain.vm_alloc(op["nr"], op["align"])
            got = None if bit is None else hex(base + bit * granule)
        else:
            idx = (int(op["va"], 16) - base) // granule
            size = plain.vm_size(idx)
            got = size if plain.vm_free(idx) else None
        assert got == op["result"], op
        assert plain.vm_low == op["vm_low"], op
