"""The trace readers: real files captured on this machine, the exact formats, and bad input.

tests/data/vmallocinfo-6.18.44.txt is /proc/vmallocinfo of the Linux 6.18.44 machine the
project was developed on (pointer hashing on); tests/data/ftrace-vmalloc-6.18.44.txt is the
``trace`` file of the same machine with the three vmalloc events enabled while processes were
started (each fork vmallocs a kernel stack), lines 2900-4298 of one capture, with the purge that
nr_lazy > nr_lazy_max triggered.
"""

from __future__ import annotations

from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import given

from vaalloc.errors import VAAllocError
from vaalloc.replay import (
    Alloc,
    Free,
    Purge,
    TraceError,
    detect_format,
    dump_trace,
    parse_ftrace,
    parse_json_trace,
    parse_trace,
    parse_vmallocinfo,
    read_trace,
)

DATA = Path(__file__).resolve().parents[1] / "data"
VMALLOCINFO = DATA / "vmallocinfo-6.18.44.txt"
FTRACE = DATA / "ftrace-vmalloc-6.18.44.txt"
PAGE = 4096


# -- /proc/vmallocinfo -------------------------------------------------------------------------


def test_captured_vmallocinfo_is_read_line_by_line() -> None:
    trace = read_trace(VMALLOCINFO)
    lines = [ln for ln in VMALLOCINFO.read_text().splitlines() if ln.strip()]
    assert trace.format == "vmallocinfo"
    assert len(trace.records) == trace.lines == len(lines) and trace.skipped == 0
    assert all(isinstance(r, Alloc) for r in trace.records)
    # Every SIZE as printed, in file order; the line number is the key.
    assert [r.size for r in trace.records] == [int(ln.split()[1]) for ln in lines]
    assert [r.line for r in trace.records] == list(range(1, len(lines) + 1))
    # This kernel hashes pointers: no address is usable, and the reader says so.
    assert not trace.addresses and all(r.addr is None for r in trace.records)
    assert any("hashed" in n for n in trace.notes)
    unpurged = [r for r in trace.records if isinstance(r, Alloc) and r.unpurged]
    assert len(unpurged) == sum("unpurged vm_area" in ln for ln in lines) > 0


def test_guard_page_of_each_kind_of_line() -> None:
    text = "\n".join(
        [
            "0x1000-0x6000   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc N0=4",
            "0x6000-0x8000    8192 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x00000000000a0000 ioremap",
            "0x8000-0xa000    8192 vm_map_ram",
            "0xa000-0xf000   20480 unpurged vm_area",
            "0xf000-0x10000   4096 pcpu_get_vm_areas+0x0/0x1050 vmalloc",
            "0x10000-0x211000 2101248 pcpu_create_chunk+0x217/0x230 pages=512 vmalloc N0=512",
            "0x211000-0x213000 8192 foo_init+0x10/0x20 [btrfs] pages=2 vmalloc",
            "",
        ]
    )
    trace = parse_vmallocinfo(text, "t")
    recs = [r for r in trace.records if isinstance(r, Alloc)]
    assert [r.guard for r in recs] == [PAGE, PAGE, 0, PAGE, 0, PAGE, 0]
    assert [r.unpurged for r in recs] == [False, False, False, True, False, False, False]
    assert [r.caller for r in recs][2:4] == ["vm_map_ram", "unpurged vm_area"]
    # Real addresses (each line spans exactly SIZE bytes): kept, as the traced placement.
    assert trace.addresses and [r.addr for r in recs][:2] == [0x1000, 0x6000]


def test_hashed_addresses_need_not_be_ordered_or_in_range() -> None:
    text = (
        "0x00000000bad972c9-0x000000005577962d   20480 kernel_clone+0x94/0x3e0 pages=4 vmalloc\n"
        "0x000000008340a7ca-0x00000000bcf58c63    8192 acpi_os_map_iomem+0x1bc/0x1e0 ioremap\n"
    )
    trace = parse_vmallocinfo(text)
    assert not trace.addresses
    assert [r.size for r in trace.records if isinstance(r, Alloc)] == [20480, 8192]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0x1000-0x2000 garbage", "line 2: not a /proc/vmallocinfo line"),
        ("0x1000-0x2000 1000 foo+0x1/0x2", "line 2: SIZE 1000 is not a positive multiple"),
        ("0x1000-0x2000 0 foo+0x1/0x2", "line 2: SIZE 0"),
        ("0x1000-0x3000 8192 foo+0x1/0x2 pages=3 vmalloc", "line 2: pages=3 is more than"),
        ("hello", "line 2: not a /proc/vmallocinfo line"),
    ],
)
def test_a_bad_line_is_named(line: str, match: str) -> None:
    text = f"0x1000-0x3000 8192 ok+0x1/0x2 vmap\n{line}\n"
    with pytest.raises(TraceError, match=match) as info:
        parse_vmallocinfo(text, "snap")
    assert str(info.value).startswith("snap: line 2: ")
    assert "\n" not in str(info.value)
    assert isinstance(info.value, VAAllocError)


# -- ftrace ------------------------------------------------------------------------------------


def test_captured_ftrace_has_the_three_events() -> None:
    trace = read_trace(FTRACE)
    assert trace.format == "ftrace" and trace.addresses
    kinds = {type(r) for r in trace.records}
    assert kinds == {Alloc, Free, Purge}
    allocs = [r for r in trace.records if isinstance(r, Alloc)]
    # x86_64 kernel stacks (THREAD_SIZE 16K, VMAP_STACK): 16K + the guard page, 16K-aligned.
    assert {(r.size, r.align, r.guard) for r in allocs} == {(20480, 16384, PAGE)}
    assert all(r.addr == r.key for r in allocs)
    assert trace.region == (0xFFFF_C900_0000_0000, 0xFFFF_E8FF_FFFF_F000)
    (purge,) = [r for r in trace.records if isinstance(r, Purge)]
    assert purge.count == 3315 and purge.start is not None
    # 13 '#' lines; frees of stacks allocated before line 2900 of the capture are orphans.
    headers = sum(ln.startswith("#") for ln in FTRACE.read_text().splitlines())
    assert trace.skipped > headers == 13
    events = sum(1 for ln in FTRACE.read_text().splitlines() if ": " in ln and "#" not in ln)
    assert len(trace.records) + trace.skipped - headers == events


EXACT = [
    # The tracepoints' TP_printk formats, behind the trace file's prefix.
    "            bash-6061    [001] .....   365.143028: alloc_vmap_area: va_start: "
    "18446683600640180224 size=20480 align=16384 vstart=0xffffc90000000000 "
    "vend=0xffffe8ffffffffff failed=0",
    "     kworker/0:2-5446    [000] .....   369.730808: free_vmap_area_noflush: "
    "va_start=0xffffc90006240000 nr_lazy=13280 nr_lazy_max=16384",
    "     kworker/1:0-23      [001] .....   378.733953: purge_vmap_area_lazy: "
    "start=0xffffc90000558000 end=0xffffc900075ad000 num_purged=3277",
]


def test_the_tracepoint_formats_exactly() -> None:
    trace = parse_ftrace("\n".join(EXACT), "t")
    # The free names an area the trace never allocated: skipped and counted.
    assert trace.skipped == 1
    alloc, purge = trace.records
    assert alloc == Alloc(
        key=18446683600640180224,
        size=20480,
        align=16384,
        guard=PAGE,
        addr=18446683600640180224,
        vstart=0xFFFF_C900_0000_0000,
        vend=0xFFFF_E8FF_FFFF_FFFF,
        line=1,
    )
    assert alloc.addr == 0xFFFF_C900_042E_8000  # "va_start: %lu" is decimal
    assert purge == Purge(0xFFFF_C900_0055_8000, 0xFFFF_C900_075A_D000, 3277, line=3)


def test_prefix_variants_headers_lost_events_and_other_events() -> None:
    lines = [
        "# tracer: nop",
        "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
        # trace_pipe without the flags column; a task name with a space and dashes; a tgid.
        "  Web Content-12-7  [000]   10.000001: alloc_vmap_area: va_start: 8192 size=8192 "
        "align=4096 vstart=0x0 vend=0x100000 failed=0",
        "   sh-9 (    9) [001] d..1.   10.000002: free_vmap_area_noflush: va_start=0x2000 "
        "nr_lazy=2 nr_lazy_max=16384",
        "CPU:1 [LOST 42 EVENTS]",
        "   sh-9 [001] .....   10.000003: sched_switch: prev_comm=sh prev_pid=9",
        "   sh-9 [001] .....   10.000004: alloc_vmap_area: va_start: 1048576 size=16384 "
        "align=1 vstart=0x0 vend=0x100000 failed=1",
    ]
    trace = parse_ftrace("\n".join(lines), "t")
    a, f, failed = trace.records
    assert (a.key, a.size, a.guard) == (8192, 8192, PAGE)  # type: ignore[union-attr]
    assert f == Free(8192, lazy=True, line=4)
    assert isinstance(failed, Alloc) and failed.failed and failed.addr is None
    assert trace.skipped == 4
    assert any("lost 42 events" in n for n in trace.notes)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("not a trace line at all", "line 2: not an ftrace event line"),
        (
            "   sh-9 [001] .....   10.5: alloc_vmap_area: va_start=0x1000 size=4096",
            "line 2: alloc_vmap_area fields are not 'va_start: %lu",
        ),
        (
            "   sh-9 [001] .....   10.5: alloc_vmap_area: va_start: 4096 size=100 align=1 "
            "vstart=0x0 vend=0x1000 failed=0",
            "line 2: size=100 is not a positive multiple",
        ),
        (
            "   sh-9 [001] .....   10.5: alloc_vmap_area: va_start: 4096 size=4096 align=3 "
            "vstart=0x0 vend=0x100000 failed=0",
            "line 2: align=3 is not a power of two",
        ),
        (
            "   sh-9 [001] .....   10.5: purge_vmap_area_lazy: start=0x0 end=0x1000",
            "line 2: purge_vmap_area_lazy fields are not",
        ),
    ],
)
def test_a_bad_ftrace_line_is_named(line: str, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        parse_ftrace(f"{EXACT[0]}\n{line}\n", "t")


def test_a_trace_without_vmalloc_events_says_what_to_enable() -> None:
    with pytest.raises(TraceError, match="events/vmalloc"):
        parse_ftrace("# tracer: nop\n#\n", "t")


# -- vaalloc JSON traces -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [VMALLOCINFO, FTRACE], ids=["vmallocinfo", "ftrace"])
def test_json_round_trip_of_the_captured_files(path: Path) -> None:
    trace = read_trace(path)
    text = dump_trace(trace)
    again = parse_json_trace(text, "again.json")
    # Line numbers become record numbers; everything else is kept.
    strip = [_without_line(r) for r in trace.records]
    assert [_without_line(r) for r in again.records] == strip
    assert (again.page_size, again.addresses, again.region) == (
        trace.page_size,
        trace.addresses,
        trace.region,
    )
    assert detect_format(text) == "vaalloc-json"
    assert len(text.splitlines()) == len(trace.records) + 2  # one record per line


def _without_line(rec: Alloc | Free | Purge) -> tuple[object, ...]:
    import attrs

    return attrs.astuple(attrs.evolve(rec, line=0))


def test_json_xen_trace_and_defaults() -> None:
    text = """{"format": "vaalloc.replay/1", "source": "xen vm_alloc log",
      "records": [
        {"op": "alloc", "id": "a", "size": 8192, "align": 8192},
        {"op": "alloc", "id": 7, "size": 4096, "addr": 268464128},
        {"op": "free", "id": "a"},
        {"op": "purge"}
      ]}"""
    trace = parse_json_trace(text, "x.json")
    a, b, f, p = trace.records
    assert a == Alloc("a", 8192, 8192, line=1)
    assert isinstance(b, Alloc) and b.addr == 0x1000_7000
    assert (f, p) == (Free("a", line=3), Purge(line=4))
    assert trace.addresses  # an alloc has an addr
    assert "recorded from xen vm_alloc log" in trace.notes


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('{"format": "vaalloc.replay/1", "records": [\n{"op": "alloc"\n', "line 3: not valid JSON"),
        ('{"format": "other/1", "records": []}', "not a vaalloc.replay/1 trace"),
        ('{"format": "vaalloc.replay/1", "records": [], "extra": 1}', "unknown top-level"),
        ('{"format": "vaalloc.replay/1", "records": [{"op": "map"}]}', "record 1: op must be"),
        (
            '{"format": "vaalloc.replay/1", "records": [{"op": "alloc", "id": 1, "sise": 1}]}',
            "record 1: unknown keys \\['sise'\\]",
        ),
        (
            '{"format": "vaalloc.replay/1", "records": [{"op": "alloc", "id": 1, "size": 10}]}',
            "record 1: size 10 is not a positive multiple",
        ),
        (
            '{"format": "vaalloc.replay/1", "records": '
            '[{"op": "alloc", "id": 1, "size": 4096, "guard": 4096}]}',
            "record 1: guard 4096 must be whole pages smaller",
        ),
        (
            '{"format": "vaalloc.replay/1", "records": [{"op": "free", "id": true}]}',
            "record 1: id must be an integer or a string",
        ),
        (
            '{"format": "vaalloc.replay/1", "records": '
            '[{"op": "alloc", "id": 1, "size": 4096, "align": 6}]}',
            "record 1: align 6 is not a power of two",
        ),
    ],
)
def test_a_bad_json_trace_is_named(body: str, match: str) -> None:
    with pytest.raises(TraceError, match=match):
        parse_json_trace(body, "t.json")


# -- detection, files --------------------------------------------------------------------------


def test_detection_and_unreadable_files(tmp_path: Path) -> None:
    assert detect_format(VMALLOCINFO.read_text()) == "vmallocinfo"
    assert detect_format(FTRACE.read_text()) == "ftrace"
    assert detect_format("\n\n" + EXACT[0]) == "ftrace"  # trace_pipe: no header
    with pytest.raises(TraceError, match="line 2: neither /proc/vmallocinfo"):
        parse_trace("\nsomething else\n", "f")
    with pytest.raises(TraceError, match="empty"):
        parse_trace("  \n", "f")
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing")


def test_this_machines_vmallocinfo_reads() -> None:
    proc = Path("/proc/vmallocinfo")
    if not proc.exists():
        pytest.skip("not a Linux machine")
    trace = read_trace(proc)
    assert trace.format == "vmallocinfo" and len(trace.records) > 0


@given(
    st.lists(
        st.tuples(st.integers(1, 600), st.booleans(), st.booleans(), st.integers(0, 1 << 48)),
        min_size=1,
        max_size=30,
    )
)
def test_any_vmallocinfo_line_round_trips(
    areas: list[tuple[int, bool, bool, int]],
) -> None:
    lines = []
    for pages, vmalloc, lazy, addr in areas:
        size = pages * PAGE
        start = f"0x{addr:016x}-0x{(addr * 7 + 3) % (1 << 64):016x} {size:7d}"
        if lazy:
            lines.append(f"{start} unpurged vm_area")
        elif vmalloc and pages > 1:
            lines.append(f"{start} f+0x1/0x2 pages={pages - 1} vmalloc N0={pages - 1}")
        else:
            lines.append(f"{start} f+0x1/0x2 phys=0x1000 ioremap")
    trace = parse_vmallocinfo("\n".join(lines))
    got = [(r.size, r.guard, r.unpurged) for r in trace.records if isinstance(r, Alloc)]
    want = [(p * PAGE, PAGE if p > 1 else 0, lazy) for p, _, lazy, _ in areas]
    assert got == want


def test_build_trace_drops_orphan_frees_and_infers_missing_ones() -> None:
    from vaalloc.replay import build_trace

    records = [
        Free(99, lazy=True, line=1),  # allocated before the trace began
        Alloc(0x1000, PAGE, line=2),
        Alloc(0x1000, PAGE, line=3),  # handed out again: its free was not traced
        Alloc(0x9000, PAGE, failed=True, line=4),  # a failure is no live area
        Free(0x9000, line=5),
    ]
    trace = build_trace(
        format="ftrace",
        source="t",
        records=records,
        lines=5,
        skipped=2,
        notes=["n"],
        page_size=PAGE,
        addresses=True,
    )
    assert trace.records == (
        records[1],
        Free(0x1000, lazy=False, line=3, implied=True),
        records[2],
        records[3],
    )
    assert trace.skipped == 2 + 2
    assert trace.notes[0] == "n" and len(trace.notes) == 3
    assert trace.allocs == 3
