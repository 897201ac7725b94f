"""The replay engine: what each policy reports, against a naive re-computation and the kernel port.

* A trace written by the plain port of Linux's allocator (tests/reference) is replayed by
  ``linux-vmalloc`` with no placement that differs and the same failures.
* Every number the engine keeps incrementally (used, free, largest run, holes, the guard pages
  between areas, the peak and the state at peak, failures, mismatches) equals what a naive
  replay recomputes from the allocator's live areas after every record.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from tests.reference.linux_vmalloc_plain import PlainLinuxVmalloc
from vaalloc.alloc import RangeAllocator
from vaalloc.alloc.linuxvmalloc import LinuxVmalloc
from vaalloc.errors import AlignmentError, OutOfSpace, RangeError
from vaalloc.replay import (
    DEFAULT_POLICIES,
    REGIONS,
    VMAP_ARM32,
    WINDOW_128M,
    Alloc,
    Free,
    Purge,
    Record,
    Region,
    Snapshot,
    Trace,
    build_trace,
    policy_names,
    replay,
)

PAGE = 4096
BASE = 0x1000_0000


def make(records: list[Record], *, addresses: bool = False, region: Any = None) -> Trace:
    return build_trace(
        format="vaalloc-json",
        source="test",
        records=records,
        lines=len(records),
        skipped=0,
        notes=[],
        page_size=PAGE,
        addresses=addresses,
        region=region,
    )


def test_presets_match_the_xen_layout() -> None:
    from vaalloc.xen import layout

    assert (VMAP_ARM32.start, VMAP_ARM32.end) == (layout.VMAP_VIRT_START, layout.VMAP_VIRT_END)
    assert (WINDOW_128M.start, WINDOW_128M.end) == (layout.VLPT_VIRT_START, layout.VLPT_VIRT_END)
    assert VMAP_ARM32.size == 768 << 20 and WINDOW_128M.size == 128 << 20
    assert REGIONS == {"vmap-arm32": VMAP_ARM32, "window-128M": WINDOW_128M}


def test_policy_names() -> None:
    assert DEFAULT_POLICIES == ("first-fit", "best-fit", "instant-fit", "xen_vmap", "linux-vmalloc")
    assert policy_names(["xen-vmap", "best-fit:noguard"]) == ("xen_vmap", "best-fit:noguard")
    with pytest.raises(RangeError, match="unknown policy 'worst-fit'; known: first-fit"):
        policy_names(["worst-fit"])
    with pytest.raises(RangeError, match="unknown policy 'xen_vmap:noguard'"):
        policy_names(["xen_vmap:noguard"])
    with pytest.raises(RangeError):
        policy_names([])


def test_region_must_be_page_aligned_and_not_empty() -> None:
    trace = make([Alloc(1, PAGE)])
    with pytest.raises(AlignmentError, match="not aligned"):
        replay(trace, Region("r", 0x1001, 0x10000))
    with pytest.raises(RangeError, match="empty"):
        replay(trace, Region("r", 0x10000, 0x10000))


# -- linux-vmalloc against the kernel port -----------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "alloc", "alloc", "free", "lazy", "lazy", "purge"]),
        st.integers(1, 24),
        st.sampled_from([1, PAGE, 1, 2 * PAGE, 8 * PAGE]),
        st.integers(0, 1 << 20),
    ),
    max_size=120,
)


def kernel_trace(
    ops: list[tuple[str, int, int, int]], search: str, pages: int
) -> tuple[Trace, int]:
    """Run ``ops`` through the plain port and write what it did as a trace with addresses
    (failures as failed allocs).  Returns the trace and the port's failure count."""
    plain = PlainLinuxVmalloc(BASE, BASE + pages * PAGE, PAGE, search)
    records: list[Record] = []
    live: list[int] = []
    failures = 0
    for n, (op, size, align, pick) in enumerate(ops):
        if op == "alloc":
            va = plain.alloc_vmap_area(size * PAGE, align)
            records.append(
                Alloc(n if va is None else va, size * PAGE, align, addr=va, failed=va is None)
            )
            if va is None:
                failures += 1
            else:
                live.append(va)
        elif op == "purge":
            plain.purge_vmap_area_lazy()
            records.append(Purge())
        elif live:
            va = live.pop(pick % len(live))
            if op == "lazy":
                plain.free_vmap_area_noflush(va)
            else:
                plain.free_vmap_area(va)
            records.append(Free(va, lazy=op == "lazy"))
    return make(records, addresses=True, region=(BASE, BASE + pages * PAGE)), failures


@settings(max_examples=max(100, settings.default.max_examples))
@given(OPS, st.sampled_from([16, 48, 300]))
def test_linux_vmalloc_reproduces_the_kernel_port(
    ops: list[tuple[str, int, int, int]], pages: int
) -> None:
    # Page alignment (1 byte or PAGE_SIZE) only: v6.x searches for the size, bit for bit.
    ops = [(op, size, min(align, PAGE), pick) for op, size, align, pick in ops]
    trace, failures = kernel_trace(ops, "6.8", pages)
    (res,) = replay(trace, policies=["linux-vmalloc"]).results
    assert res.mismatches == 0, res.first_mismatch
    assert res.failed == failures


@settings(max_examples=max(100, settings.default.max_examples))
@given(OPS, st.sampled_from([16, 48, 300]))
def test_linux_vmalloc_reproduces_the_exact_search_at_any_alignment(
    ops: list[tuple[str, int, int, int]], pages: int
) -> None:
    trace, failures = kernel_trace(ops, "exact", pages)
    (res,) = replay(trace, policies=["linux-vmalloc"]).results
    assert (res.mismatches, res.failed) == (0, failures), res.first_mismatch


def test_the_kernel_port_trace_mismatches_for_the_other_policies() -> None:
    ops = [("alloc", 4, 1, 0), ("alloc", 4, 1, 0), ("lazy", 0, 1, 0), ("alloc", 2, 1, 0)]
    trace, _ = kernel_trace(ops, "6.8", 64)
    results = {r.policy: r for r in replay(trace).results}
    assert results["linux-vmalloc"].mismatches == 0
    # first-fit keeps a guard page (the second area lands one page higher) and reuses the
    # freed area at once, where the kernel's was still waiting for a purge.
    assert results["first-fit"].mismatches == 2
    first = results["first-fit"].first_mismatch
    assert first is not None and (first.record, first.traced) == (2, BASE + 4 * PAGE)


# -- the numbers, against a naive replay --------------------------------------------------------


def naive(trace: Trace, region: Region, policy: str) -> dict[str, Any]:
    """The replay semantics written out plainly, every metric recomputed from the live areas
    after every record (O(n) per record)."""
    start, end = region.start, region.end
    linux = policy == "linux-vmalloc"
    xen = policy == "xen_vmap"
    own_guard = not linux and not policy.endswith(":noguard")
    space: Any
    if linux:
        space = LinuxVmalloc(start, end, PAGE)
    elif xen:
        space = RangeAllocator.xen_vmap(start, end, PAGE)
    else:
        space = RangeAllocator(
            start, end, PAGE, policy=policy.removesuffix(":noguard"), guard=own_guard
        )

    bitmap = space.vm_low if xen else 0  # Xen's bitmap pages, before anything moves vm_low

    def state(record: int) -> Snapshot:
        runs = sorted((va // PAGE, va // PAGE + nr) for va, nr in space.allocations())
        if xen:
            runs.insert(0, (start // PAGE, start // PAGE + bitmap))
        used = sum(e - s for s, e in runs)
        gaps = sum(1 for a, b in pairwise(runs) if b[0] - a[1] == 1) if own_guard else 0
        holes, cursor = [], start // PAGE
        for s, e in runs:
            if s > cursor:
                holes.append(s - cursor)
            cursor = e
        if cursor < end // PAGE:
            holes.append(end // PAGE - cursor)
        free = (end - start) // PAGE - used - gaps
        largest = max(holes, default=0) if free > 0 else 0
        return Snapshot(
            record, (used + gaps) * PAGE, free * PAGE, largest * PAGE, len(holes) - gaps
        )

    where: dict[Any, tuple[int, int]] = {}
    out: dict[str, Any] = {"failed": 0, "first_failure": None, "mismatches": 0}
    peak = state(0)
    for i, rec in enumerate(trace.records, 1):
        if isinstance(rec, Alloc):
            nr = (rec.size - (rec.guard if own_guard else 0)) // PAGE
            align = max(1, rec.align // PAGE)
            try:
                va: int | None = space.alloc(nr, align)
            except OutOfSpace:
                va = None
                if linux and space.lazy_areas:
                    space.purge()
                    try:
                        va = space.alloc(nr, align)
                    except OutOfSpace:
                        va = None
            if trace.addresses and (va != rec.addr):
                out["mismatches"] += 1
            if va is None:
                out["failed"] += 1
                out["first_failure"] = out["first_failure"] or (i, rec.size)
            elif rec.failed:
                space.free(va)
            elif rec.unpurged:
                (space.free_lazy if linux else space.free)(va)
            else:
                where[rec.key] = (va, nr)
        elif isinstance(rec, Free):
            if rec.key in where:
                va, nr = where.pop(rec.key)
                (space.free_lazy if linux and rec.lazy else space.free)(va)
        elif linux and space.lazy_areas:
            space.purge()
        now = state(i)
        if now.used_bytes > peak.used_bytes:
            peak = now
    out["peak"] = peak
    out["end"] = state(len(trace.records))
    return out


RECORDS = st.lists(
    st.one_of(
        st.tuples(
            st.just("alloc"),
            st.integers(1, 40),
            st.sampled_from([1, PAGE, 4 * PAGE, 16 * PAGE]),
            st.booleans(),
            st.integers(0, 9),
        ),
        st.tuples(st.just("free"), st.integers(0, 1 << 16), st.booleans()),
        st.tuples(st.just("purge")),
    ),
    max_size=80,
)


def random_trace(spec: list[tuple[Any, ...]]) -> Trace:
    records: list[Record] = []
    live: list[int] = []
    for n, item in enumerate(spec):
        if item[0] == "alloc":
            _, pages, align, guard, kind = item
            g = PAGE if guard and pages > 1 else 0
            records.append(
                Alloc(n, pages * PAGE, align, g, failed=kind == 0, unpurged=kind == 1, line=n + 1)
            )
            if kind > 1:
                live.append(n)
        elif item[0] == "free" and live:
            records.append(Free(live.pop(item[1] % len(live)), lazy=item[2], line=n + 1))
        elif item[0] == "purge":
            records.append(Purge(line=n + 1))
    return make(records)


POLICIES = [*DEFAULT_POLICIES, "first-fit:noguard", "best-fit:noguard"]


@settings(max_examples=max(40, settings.default.max_examples // 2))
@given(RECORDS, st.sampled_from([24, 96, 512]))
def test_every_number_matches_a_naive_replay(spec: list[tuple[Any, ...]], pages: int) -> None:
    trace = random_trace(spec)
    region = Region("r", BASE, BASE + pages * PAGE)
    result = replay(trace, region, POLICIES, samples=7)
    assert result.records == len(trace.records) and not result.compared
    for res in result.results:
        want = naive(trace, region, res.policy)
        assert res.end == want["end"], res.policy
        assert res.peak == want["peak"], res.policy
        assert res.failed == want["failed"], res.policy
        first = res.first_failure
        assert (None if first is None else (first.record, first.size)) == want["first_failure"]
        assert res.mismatches is None
        # The chart's series: from the start to the end, never above the region.
        assert res.series[0][0] == 0 and res.series[-1][0] == len(trace.records)
        assert res.series[-1][1:] == (res.end.free_bytes, res.end.largest_free_bytes)
        assert all(0 <= largest <= free <= region.size for _, free, largest in res.series)
        assert res.end.used_bytes + res.end.free_bytes == region.size


# -- the decisions, one by one -------------------------------------------------------------------


def test_guard_page_is_counted_once() -> None:
    # Two 16K stacks with their guard page (20K each), the way vmallocinfo shows them.
    trace = make([Alloc(1, 5 * PAGE, guard=PAGE), Alloc(2, 5 * PAGE, guard=PAGE)])
    region = Region("r", BASE, BASE + 64 * PAGE)
    res = {r.policy: r for r in replay(trace, region).results}
    linux, first = res["linux-vmalloc"], res["first-fit"]
    # Same footprint, same places: the guard policies place 16K and keep their own guard.
    assert linux.end.used_bytes == 10 * PAGE  # both guard pages inside the areas
    assert first.end.used_bytes == 9 * PAGE  # the guard between them; the last is a hole's
    assert (linux.end.holes, first.end.holes) == (1, 1)
    assert res["xen_vmap"].end.used_bytes == (1 + 1 + 4 + 1 + 4) * PAGE  # bitmap, guard, ...


def test_unpurged_areas_stay_busy_for_linux_only() -> None:
    trace = make([Alloc(1, 8 * PAGE, unpurged=True), Alloc(2, 8 * PAGE)])
    region = Region("r", BASE, BASE + 12 * PAGE)
    res = {r.policy: r for r in replay(trace, region).results}
    # linux-vmalloc: the lazily freed area blocks the second until its overflow-path purge.
    assert (res["linux-vmalloc"].failed, res["linux-vmalloc"].purges) == (0, 1)
    assert res["first-fit"].end.used_bytes == 8 * PAGE


def test_overflow_path_purges_and_retries() -> None:
    trace = make([Alloc(1, 6 * PAGE), Free(1, lazy=True), Alloc(2, 8 * PAGE), Free(2, lazy=True)])
    region = Region("r", BASE, BASE + 10 * PAGE)
    (linux,) = replay(trace, region, ["linux-vmalloc"]).results
    assert (linux.failed, linux.purges) == (0, 1)
    # The purge came before the second area was placed: never more than 8 pages held.
    assert linux.peak.used_bytes == 8 * PAGE and linux.end.used_bytes == 8 * PAGE
    trace = make([Alloc(1, 6 * PAGE), Alloc(2, 6 * PAGE)])
    (linux,) = replay(trace, region, ["linux-vmalloc"]).results
    assert linux.failed == 1 and linux.first_failure is not None
    assert (linux.first_failure.record, linux.first_failure.size) == (2, 6 * PAGE)


def test_a_traced_failure_is_a_probe() -> None:
    # The traced kernel could not place it; a policy that can is counted as a mismatch and
    # does not keep it.
    trace = make([Alloc(1, 4 * PAGE, failed=True)], addresses=True, region=(BASE, BASE + 8 * PAGE))
    (res,) = replay(trace, policies=["first-fit:noguard"]).results
    assert (res.failed, res.mismatches, res.end.used_bytes) == (0, 1, 0)
    assert res.first_mismatch is not None and res.first_mismatch.traced is None


def test_windows_are_honoured_in_the_traces_own_region() -> None:
    lo, hi = BASE, BASE + 64 * PAGE
    records: list[Record] = [
        Alloc(1, PAGE, vstart=lo + 32 * PAGE, vend=lo + 48 * PAGE),  # a sub-window
        Alloc(2, PAGE, vstart=1 << 44, vend=(1 << 44) + (1 << 30)),  # another window: skipped
        Free(2),
        Alloc(3, PAGE, vstart=lo, vend=hi),  # the whole region
    ]
    trace = make(records, region=(lo, hi))
    result = replay(trace, policies=["linux-vmalloc", "first-fit:noguard", "xen_vmap"])
    assert (result.records, result.skipped, result.windows) == (2, 2, True)
    assert any("outside the region" in n for n in result.notes)
    assert any("xen_vmap has no windows" in n for n in result.notes)
    for res in result.results[:2]:
        # Area 1 at page 32 of its window, area 3 at page 0: free [1, 32) and [33, 64).
        assert (res.end.holes, res.end.largest_free_bytes, res.failed) == (2, 31 * PAGE, 0)
    # With --region the windows are dropped: everything is replayed by size.
    result = replay(trace, Region("r", lo, hi), ["linux-vmalloc"])
    assert (result.records, result.skipped, result.windows) == (4, 0, False)


def test_results_are_reproducible_and_json_ready() -> None:
    import json

    trace = random_trace([("alloc", 5, PAGE, True, 5)] * 20 + [("free", 3, True)] * 5)
    a = replay(trace, WINDOW_128M).as_dict()
    b = replay(trace, WINDOW_128M).as_dict()
    assert a == b
    assert json.loads(json.dumps(a)) == a
    assert {"format", "records", "skipped", "region", "results"} <= set(a)
    for r in a["results"]:
        assert {
            "policy",
            "failed",
            "mismatches",
            "peak_used_bytes",
            "largest_free_bytes",
            "holes",
            "fragmentation",
            "first_failure",
        } <= set(r)


def test_replay_imports_only_errors_and_alloc() -> None:
    # Layering: vaalloc.replay sits above vaalloc.alloc and below vaalloc.cli, and does not
    # need the Xen model (the region presets are its own, cross-checked above).
    import ast
    from pathlib import Path

    allowed = ("vaalloc.errors", "vaalloc.alloc", "vaalloc.replay")
    package = Path(__file__).resolve().parents[2] / "vaalloc" / "replay"
    seen = set()
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                if name.split(".")[0] == "vaalloc":
                    seen.add(name)
                    assert name.startswith(allowed), f"{path.name} imports {name}"
    assert {"vaalloc.alloc", "vaalloc.errors"} <= seen


def test_progress_is_reported_per_policy() -> None:
    trace = random_trace([("alloc", 2, PAGE, True, 5), ("free", 0, False)] * 50)
    calls: list[tuple[str, int, int]] = []
    replay(
        trace,
        WINDOW_128M,
        ["first-fit", "linux-vmalloc"],
        samples=10,
        progress=lambda p, d, t: calls.append((p, d, t)),
    )
    for policy in ("first-fit", "linux-vmalloc"):
        mine = [(d, t) for p, d, t in calls if p == policy]
        assert mine[-1] == (len(trace.records), len(trace.records))
        assert [d for d, _ in mine] == sorted(d for d, _ in mine)
