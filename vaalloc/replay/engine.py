"""The replay engine: a trace's records, replayed into each policy side by side.

Every policy gets a fresh allocator over the region and the same records, in order:

``first-fit``, ``best-fit``, ``instant-fit``
    a :class:`~vaalloc.alloc.RangeAllocator` of that policy with ``guard=True`` (one free page
    kept between two areas, as the library's default and Xen do); ``NAME:noguard`` for
    ``guard=False``.
``xen_vmap``
    :meth:`RangeAllocator.xen_vmap <vaalloc.alloc.RangeAllocator.xen_vmap>`: Xen's ``vm_alloc``
    bit for bit (its bitmap pages sit at the start of the region; its alignment is relative to
    the region base, as Xen's; it has no windows).
``linux-vmalloc``
    :class:`~vaalloc.alloc.linuxvmalloc.LinuxVmalloc`: Linux's lowest fit, lazily freed areas
    busy until a purge; when nothing fits and areas wait, it purges and retries once, as
    ``alloc_vmap_area``'s overflow path does.

Guard pages.  A Linux trace's size includes the guard page the kernel adds (``Alloc.guard``
says how much of the size it is).  ``linux-vmalloc`` and the ``:noguard`` policies replay the
size as it is: the guard page is inside the area, as in the kernel.  The policies that keep a
guard of their own (``xen_vmap``, ``first-fit``, ``best-fit``, ``instant-fit``) replay the size
minus that guard page and add theirs, so an area costs the same address space in every policy
and a difference in the results is a difference of placement, not of accounting.  An area
traced without a guard (vm_map_ram, a Xen trace) costs those policies one page more.

Numbers, per policy, in bytes: ``used`` is what live areas hold, guard pages included (for the
guard-keeping policies, the free page they must keep between two areas counts as used, since
nothing can ever be placed there), and, for ``linux-vmalloc``, lazily freed areas not yet
purged; ``free`` the rest of the region; ``largest_free`` the largest free run; ``holes`` the
free runs (guard pages between two areas are not holes); ``fragmentation`` ``1 - largest_free
/ free`` (0 when nothing is free).  They are taken at the end, and at the moment of peak use.

Speed: O(log n) per record and policy (one allocator call, a few dict operations); about
``samples`` ``stats()`` calls per policy for the series a chart draws.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from vaalloc.alloc import RangeAllocator
from vaalloc.alloc.linuxvmalloc import LINUX_VMALLOC, LinuxVmalloc
from vaalloc.errors import OutOfSpace, RangeError
from vaalloc.replay.records import Alloc, Free, Trace
from vaalloc.replay.regions import VMAP_ARM32, Region

__all__ = [
    "DEFAULT_POLICIES",
    "POLICY_NAMES",
    "Failure",
    "Mismatch",
    "PolicyResult",
    "Replay",
    "Snapshot",
    "default_region",
    "policy_names",
    "replay",
]

#: The policies ``vaalloc replay`` runs, in this order, when none is named.
DEFAULT_POLICIES: Final = ("first-fit", "best-fit", "instant-fit", "xen_vmap", LINUX_VMALLOC)
#: Every policy name the engine accepts (plus ``NAME:noguard`` for the first three).
POLICY_NAMES: Final = DEFAULT_POLICIES
_GENERIC: Final = ("first-fit", "best-fit", "instant-fit")
_ALIASES: Final = {"xen-vmap": "xen_vmap", "linux_vmalloc": LINUX_VMALLOC}
NOGUARD: Final = ":noguard"

Progress = Callable[[str, int, int], None]

_ALLOC, _FREE, _PURGE = 0, 1, 2
_TRACED_FAILED: Final = -2  # the traced allocator failed this request
_NOT_TRACED: Final = -3  # no traced address to compare with


@attrs.frozen
class Snapshot:
    """The state of one policy's region after ``record`` records were replayed (0: before the
    first; at peak: the record that brought use to its peak)."""

    record: int
    used_bytes: int
    free_bytes: int
    largest_free_bytes: int
    holes: int

    @property
    def fragmentation(self) -> float:
        """External fragmentation ``1 - largest_free / free`` (0.0 when nothing is free)."""
        if self.free_bytes <= 0:
            return 0.0
        return 1.0 - self.largest_free_bytes / self.free_bytes

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the fragmentation rounded to 6 places."""
        return {
            "record": self.record,
            "used_bytes": self.used_bytes,
            "free_bytes": self.free_bytes,
            "largest_free_bytes": self.largest_free_bytes,
            "holes": self.holes,
            "fragmentation": round(self.fragmentation, 6),
        }


@attrs.frozen
class Failure:
    """An allocation the policy could not place: record number (from 1), source line, request."""

    record: int
    line: int
    size: int
    align: int

    def as_dict(self) -> dict[str, int]:
        """JSON-ready."""
        return attrs.asdict(self)


@attrs.frozen
class Mismatch:
    """A placement that differs from the traced one (None: failed)."""

    record: int
    line: int
    traced: int | None
    placed: int | None

    def as_dict(self) -> dict[str, int | None]:
        """JSON-ready."""
        return attrs.asdict(self)


@attrs.frozen
class PolicyResult:
    """What one policy did with the trace (see the module docstring for the numbers).

    ``mismatches`` is None when the trace has no addresses to compare with (or they are not
    inside the region).  ``series`` holds ``(record, free_bytes, largest_free_bytes)`` points,
    for a chart.  ``seconds`` is the replay time of this policy alone."""

    policy: str
    guard: str
    allocs: int
    failed: int
    first_failure: Failure | None
    mismatches: int | None
    first_mismatch: Mismatch | None
    purges: int
    peak: Snapshot
    end: Snapshot
    series: tuple[tuple[int, int, int], ...]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The issue's keys (``policy``, ``failed``, ``mismatches``, ``peak_used_bytes``,
        ``largest_free_bytes``, ``holes``, ``fragmentation``, ``first_failure``; the last four
        at the end of the trace) and more: ``allocs``, ``used_bytes``, ``free_bytes``,
        ``at_peak``, ``first_mismatch``, ``purges``, ``guard``."""
        return {
            "policy": self.policy,
            "failed": self.failed,
            "mismatches": self.mismatches,
            "peak_used_bytes": self.peak.used_bytes,
            "largest_free_bytes": self.end.largest_free_bytes,
            "holes": self.end.holes,
            "fragmentation": round(self.end.fragmentation, 6),
            "first_failure": None if self.first_failure is None else self.first_failure.as_dict(),
            "allocs": self.allocs,
            "used_bytes": self.end.used_bytes,
            "free_bytes": self.end.free_bytes,
            "at_peak": self.peak.as_dict(),
            "first_mismatch": (
                None if self.first_mismatch is None else self.first_mismatch.as_dict()
            ),
            "purges": self.purges,
            "guard": self.guard,
        }


@attrs.frozen
class Replay:
    """A trace replayed into several policies: what was replayed where, and the results."""

    trace: Trace
    region: Region
    windows: bool
    compared: bool
    records: int
    skipped: int
    notes: tuple[str, ...]
    results: tuple[PolicyResult, ...]

    def as_dict(self) -> dict[str, Any]:
        """``{"format", "records", "skipped", "region", "results": [...]}`` (integers in
        bytes) and ``source``, ``lines``, ``page_size``, ``compared``, ``notes``."""
        return {
            "format": self.trace.format,
            "records": self.records,
            "skipped": self.skipped,
            "region": {
                "name": self.region.name,
                "start": self.region.start,
                "end": self.region.end,
            },
            "results": [r.as_dict() for r in self.results],
            "source": self.trace.source,
            "lines": self.trace.lines,
            "page_size": self.trace.page_size,
            "compared": self.compared,
            "notes": list(self.notes),
        }


def policy_names(specs: Sequence[str]) -> tuple[str, ...]:
    """Normalise policy names (``xen-vmap`` is ``xen_vmap``), refusing unknown ones.

    Raises:
        RangeError: an unknown name (the message lists the known ones), or none at all.
    """
    out: list[str] = []
    for spec in specs:
        name = _ALIASES.get(spec, spec)
        base = name.removesuffix(NOGUARD)
        if name not in POLICY_NAMES and not (name.endswith(NOGUARD) and base in _GENERIC):
            known = ", ".join([*POLICY_NAMES, *(g + NOGUARD for g in _GENERIC)])
            raise RangeError(f"unknown policy {spec!r}; known: {known}")
        out.append(name)
    if not out:
        raise RangeError("no policy to replay into")
    return tuple(out)


def default_region(trace: Trace) -> Region:
    """The window the trace was recorded in when it says (ftrace, a JSON trace with a region),
    else Xen ARM32's 768MB VMAP."""
    if trace.region is not None:
        lo, hi = trace.region
        return Region("trace", lo, hi, "the window the trace was recorded in")
    return VMAP_ARM32


def replay(
    trace: Trace,
    region: Region | None = None,
    policies: Sequence[str] = DEFAULT_POLICIES,
    *,
    samples: int = 400,
    progress: Progress | None = None,
) -> Replay:
    """Replay ``trace`` into each of ``policies`` over ``region`` and return the results.

    Without ``region`` the trace is replayed where it was recorded (:func:`default_region`),
    honouring the window each allocation asked for: an allocation whose window lies outside
    the region is skipped (with its free), one whose window is a part of it is placed there
    (``xen_vmap``, which has no windows, places it anywhere).  With ``region`` the windows are
    dropped and every area is replayed by size.  Placements are compared with the traced ones
    when the trace has real addresses inside the region.

    ``progress(policy, done, total)`` is called every few thousand records.  Cost: O(log n)
    per record and policy.

    Raises:
        RangeError: an unknown policy, an empty region.
        AlignmentError: a region not aligned to the trace's page.
    """
    names = policy_names(policies)
    windows = region is None and trace.region is not None
    region = default_region(trace) if region is None else region
    page = trace.page_size
    region.check(page)
    ops, infos, nkeys, window_skips, compare, windowed = _compile(trace, region, windows)
    notes = list(trace.notes)
    if window_skips:
        notes.append(
            f"{window_skips} records asked for a window outside the region and were skipped "
            "(with their frees)"
        )
    if windowed and "xen_vmap" in names:
        notes.append(f"xen_vmap has no windows: {windowed} windowed allocations go anywhere")
    if any(isinstance(r, Alloc) and r.guard for r in trace.records):
        notes.append(
            "guard pages: a size includes the kernel's guard page; linux-vmalloc replays it "
            "as is, the policies that keep their own guard replay it one page smaller"
        )
    results = tuple(
        _run(name, ops, infos, nkeys, region, page, compare, samples, progress) for name in names
    )
    return Replay(
        trace=trace,
        region=region,
        windows=windows,
        compared=compare,
        records=len(trace.records) - window_skips,
        skipped=trace.skipped + window_skips,
        notes=tuple(notes),
        results=results,
    )


def _compile(
    trace: Trace, region: Region, windows: bool
) -> tuple[list[tuple[Any, ...]], list[tuple[int, int, int, int]], int, int, bool, int]:
    """The records as flat tuples, in pages, ready for the replay loop.

    An alloc is ``(_ALLOC, key, pages with the guard, pages without it, align in pages,
    window lo, window hi, traced address, unpurged, info)``, a free ``(_FREE, key, lazy)``, a
    purge ``(_PURGE,)``; ``info`` indexes the second list, ``(record number, line, size,
    align)`` of each alloc, read only when one fails or mismatches.  Returns (ops, infos,
    number of keys, records skipped for their window, whether placements are compared,
    windowed allocations kept)."""
    page = trace.page_size
    rs, re_ = region.start, region.end
    keys: dict[int | str, int] = {}
    dead: set[int | str] = set()
    ops: list[tuple[Any, ...]] = []
    infos: list[tuple[int, int, int, int]] = []
    skips = windowed = 0
    compare = trace.addresses
    for number, rec in enumerate(trace.records, 1):
        if isinstance(rec, Alloc):
            lo = hi = None
            if windows and (rec.vstart is not None or rec.vend is not None):
                lo = max(rs, -(-(rec.vstart if rec.vstart is not None else rs) // page) * page)
                hi = min(re_, (rec.vend if rec.vend is not None else re_) // page * page)
                if lo >= hi:
                    skips += 1
                    dead.add(rec.key)
                    continue
                if lo == rs and hi == re_:
                    lo = hi = None
                else:
                    windowed += 1
            dead.discard(rec.key)
            if rec.failed:
                k = -1
                traced = _TRACED_FAILED
            else:
                k = keys.setdefault(rec.key, len(keys))
                traced = _NOT_TRACED if rec.addr is None else rec.addr
                if rec.addr is not None and not rs <= rec.addr < re_:
                    compare = False
            full = rec.size // page
            payload = (rec.size - rec.guard) // page
            align = rec.align // page if rec.align > page else 1
            ops.append((_ALLOC, k, full, payload, align, lo, hi, traced, rec.unpurged, len(infos)))
            infos.append((number, rec.line, rec.size, rec.align))
        elif isinstance(rec, Free):
            if rec.key in dead:
                skips += 1
                continue
            ops.append((_FREE, keys[rec.key], rec.lazy))
        else:
            ops.append((_PURGE,))
    return ops, infos, len(keys), skips, compare, windowed


def _run(
    name: str,
    ops: list[tuple[Any, ...]],
    infos: list[tuple[int, int, int, int]],
    nkeys: int,
    region: Region,
    page: int,
    compare: bool,
    samples: int,
    progress: Progress | None,
) -> PolicyResult:
    """Replay the compiled records into a fresh allocator of policy ``name``.

    One loop for every policy: the per-policy differences are a few flags tested on the rare
    paths (failure, windows, lazy frees) and the guard bookkeeping of the guard-keeping ones."""
    rs, re_ = region.start, region.end
    linux = name == LINUX_VMALLOC
    xen = name == "xen_vmap"
    own_guard = xen or name in _GENERIC
    space: Any
    if linux:
        space = LinuxVmalloc(rs, re_, granule=page, name=name)
    elif xen:
        space = RangeAllocator.xen_vmap(rs, re_, granule=page, name=name)
    else:
        space = RangeAllocator(
            rs, re_, granule=page, policy=name.removesuffix(NOGUARD), guard=own_guard, name=name
        )
    alloc = space.alloc
    free = space.free
    free_lazy = space.free_lazy if linux else free
    stats = space.stats
    size_at = 3 if own_guard else 2  # which size an alloc op gives this policy

    # Guard pages between two live areas (guard-keeping policies): counted as used, not as
    # holes.  ``starts``/``ends`` map each live run's first unit to its end and back.
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    gaps = 0
    if xen:  # the bitmap pages are a run the first area keeps a guard from
        base = rs // page
        starts[base] = base + space.vm_low
        ends[base + space.vm_low] = base

    def snapshot(record: int) -> Snapshot:
        st = stats()
        free_u = st.free - gaps
        largest = st.largest_free if free_u > 0 else 0
        return Snapshot(
            record, (st.total - free_u) * page, free_u * page, largest * page, st.holes - gaps
        )

    used = stats().used
    lazy_units = 0
    where = [-1] * nkeys
    sizes = [0] * nkeys
    peak_used = used
    peak = snapshot(0)
    peak_at = 0  # the record after which use was at its peak
    pending = False
    allocs = failed = purges = 0
    first_failure: Failure | None = None
    mismatches = 0
    first_mismatch: Mismatch | None = None
    total = len(ops)
    step = max(1, total // max(1, samples))
    countdown = step
    series: list[tuple[int, int, int]] = [(0, peak.free_bytes, peak.largest_free_bytes)]
    started = time.perf_counter()
    for i, op in enumerate(ops, 1):
        code = op[0]
        if code == _ALLOC:
            nr = op[size_at]
            try:
                if op[5] is None:
                    va = alloc(nr, op[4])
                elif linux:
                    va = alloc(nr, op[4], vstart=op[5], vend=op[6])
                elif xen:
                    va = alloc(nr, op[4])
                else:
                    va = alloc(nr, op[4], min_addr=op[5], max_addr=op[6])
            except OutOfSpace:
                va = -1
                if linux and lazy_units:
                    # alloc_vmap_area's overflow path: purge the lazy areas, retry once.
                    if pending:
                        peak, pending = snapshot(peak_at), False
                    space.purge()
                    used -= lazy_units
                    lazy_units = 0
                    purges += 1
                    try:
                        va = alloc(nr, op[4], vstart=op[5], vend=op[6])
                    except OutOfSpace:
                        va = -1
            allocs += 1
            if compare:
                traced = op[7]
                if traced != _NOT_TRACED and ((va != traced) if traced >= 0 else va >= 0):
                    mismatches += 1
                    if first_mismatch is None:
                        info = infos[op[9]]
                        first_mismatch = Mismatch(
                            info[0],
                            info[1],
                            traced if traced >= 0 else None,
                            va if va >= 0 else None,
                        )
            k = op[1]
            if va < 0:
                failed += 1
                if first_failure is None:
                    first_failure = Failure(*infos[op[9]])
            elif k < 0:
                free(va)  # the traced allocator failed this one: a probe, not kept
            else:
                used += nr
                if own_guard:
                    u = va // page
                    e = u + nr
                    if u - 1 in ends:
                        gaps += 1
                    if e + 1 in starts:
                        gaps += 1
                    starts[u] = e
                    ends[e] = u
                if op[8]:  # unpurged: already freed lazily in the source
                    if linux:
                        free_lazy(va)
                        lazy_units += nr
                    else:
                        free(va)
                        used -= nr
                        if own_guard:
                            del starts[u], ends[e]
                            if u - 1 in ends:
                                gaps -= 1
                            if e + 1 in starts:
                                gaps -= 1
                else:
                    where[k] = va
                    sizes[k] = nr
                if used + gaps > peak_used:
                    peak_used = used + gaps
                    peak_at = i
                    pending = True
        elif code == _FREE:
            k = op[1]
            va = where[k]
            if va >= 0:
                where[k] = -1
                if pending:
                    peak, pending = snapshot(peak_at), False
                if op[2] and linux:
                    free_lazy(va)
                    lazy_units += sizes[k]
                else:
                    free(va)
                    nr = sizes[k]
                    used -= nr
                    if own_guard:
                        u = va // page
                        e = u + nr
                        del starts[u], ends[e]
                        if u - 1 in ends:
                            gaps -= 1
                        if e + 1 in starts:
                            gaps -= 1
        elif lazy_units:  # a purge, and something to purge (linux-vmalloc only)
            if pending:
                peak, pending = snapshot(peak_at), False
            space.purge()
            used -= lazy_units
            lazy_units = 0
            purges += 1
        countdown -= 1
        if not countdown:
            countdown = step
            st = stats()
            free_u = st.free - gaps
            series.append((i, free_u * page, (st.largest_free if free_u > 0 else 0) * page))
            if progress is not None:
                progress(name, i, total)
    seconds = time.perf_counter() - started
    end = snapshot(total)
    if pending:
        peak = snapshot(peak_at)
    if series[-1][0] != total:
        series.append((total, end.free_bytes, end.largest_free_bytes))
    if progress is not None:
        progress(name, total, total)
    return PolicyResult(
        policy=name,
        guard="own" if own_guard else "inside",
        allocs=allocs,
        failed=failed,
        first_failure=first_failure,
        mismatches=mismatches if compare else None,
        first_mismatch=first_mismatch,
        purges=purges,
        peak=peak,
        end=end,
        series=tuple(series),
        seconds=seconds,
    )
