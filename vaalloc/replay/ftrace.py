"""Reader of the ftrace text output of Linux's vmalloc tracepoints (Linux >= 6.4).

The events, as include/trace/events/vmalloc.h prints them (note the decimal address of the
first)::

    alloc_vmap_area: va_start: %lu size=%lu align=%lu vstart=0x%lx vend=0x%lx failed=%d
    free_vmap_area_noflush: va_start=0x%lx nr_lazy=%lu nr_lazy_max=%lu
    purge_vmap_area_lazy: start=0x%lx end=0x%lx num_purged=%u

each behind the usual ``TASK-PID [CPU] FLAGS TIMESTAMP: event: fields`` prefix of the ``trace``
and ``trace_pipe`` files (the FLAGS column and a ``(TGID)`` column are optional, task names may
hold spaces and dashes).  ``#`` header lines, lines of other events and the ring buffer's
``CPU:N [LOST M EVENTS]`` markers are skipped and counted; any other line is an error.

What the events become: ``alloc_vmap_area`` an :class:`~vaalloc.replay.records.Alloc` keyed by
its address, with the window ``[vstart, vend)``, ``failed`` when ``failed=1`` (the kernel then
purges and retries: a second event follows); ``size`` is what ``alloc_vmap_area`` was asked
for, which for every area made by ``__get_vm_area_node`` includes the guard page (one page of a
size above a page is taken as the guard; vm_map_ram and per-CPU areas have none, and the event
cannot tell them apart).  ``free_vmap_area_noflush`` a lazy
:class:`~vaalloc.replay.records.Free`; ``purge_vmap_area_lazy`` a
:class:`~vaalloc.replay.records.Purge`.
"""

from __future__ import annotations

import re
from collections import Counter

from vaalloc.replay.errors import TraceError
from vaalloc.replay.records import Alloc, Free, Purge, Record, Trace, build_trace

__all__ = ["EVENT_LINE", "parse_ftrace"]

#: ``TASK-PID [(TGID)] [CPU] [FLAGS] TIMESTAMP: EVENT: FIELDS``
EVENT_LINE = re.compile(
    r"\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]*\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[\w.]{4,8})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>[\w:]+):\s?(?P<fields>.*)"
)
LOST_LINE = re.compile(r"\s*CPU:\s*\d+\s+\[LOST\s+(\d+)\s+EVENTS\]\s*")

_ALLOC = re.compile(
    r"va_start:\s*(\d+)\s+size=(\d+)\s+align=(\d+)\s+vstart=0x([0-9a-fA-F]+)\s+"
    r"vend=0x([0-9a-fA-F]+)\s+failed=(-?\d+)\s*"
)
_FREE = re.compile(r"va_start=0x([0-9a-fA-F]+)\s+nr_lazy=(\d+)\s+nr_lazy_max=(\d+)\s*")
_PURGE = re.compile(r"start=0x([0-9a-fA-F]+)\s+end=0x([0-9a-fA-F]+)\s+num_purged=(\d+)\s*")

_FORMATS = {
    "alloc_vmap_area": "va_start: %lu size=%lu align=%lu vstart=0x%lx vend=0x%lx failed=%d",
    "free_vmap_area_noflush": "va_start=0x%lx nr_lazy=%lu nr_lazy_max=%lu",
    "purge_vmap_area_lazy": "start=0x%lx end=0x%lx num_purged=%u",
}


def _clip(text: str) -> str:
    return repr(text if len(text) <= 70 else text[:67] + "...")


def parse_ftrace(text: str, source: str = "<trace>", page_size: int = 4096) -> Trace:
    """Parse ftrace text output (the ``trace`` or ``trace_pipe`` file) into a :class:`Trace`.

    The region the trace was recorded in is the window most allocations asked for (the
    kernel's ``VMALLOC_START``/``VMALLOC_END``), ``vend`` rounded down to the page.  O(lines).

    Raises:
        TraceError: naming the first line that is neither an event, a header nor a lost-events
            marker, a vmalloc event whose fields are not in the tracepoint's format, a size
            that is not a positive multiple of ``page_size`` or an align that is not a power
            of two; or the trace holds no vmalloc event at all.
    """
    records: list[Record] = []
    skipped = headers = others = 0
    lost = 0
    windows: Counter[tuple[int, int]] = Counter()
    lines = 0
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        lines += 1
        if raw.lstrip().startswith("#"):
            skipped += 1
            headers += 1
            continue
        m = EVENT_LINE.fullmatch(raw)
        if m is None:
            lm = LOST_LINE.fullmatch(raw)
            if lm is None:
                raise TraceError(
                    f"{source}: line {n}: not an ftrace event line "
                    f"(TASK-PID [CPU] FLAGS TIMESTAMP: event: fields): {_clip(raw)}"
                )
            skipped += 1
            lost += int(lm[1])
            continue
        event = m["event"].rsplit(":", 1)[-1]
        fields = m["fields"]
        if event not in _FORMATS:
            skipped += 1
            others += 1
            continue
        parser = {"alloc_vmap_area": _ALLOC, "free_vmap_area_noflush": _FREE}.get(event, _PURGE)
        f = parser.fullmatch(fields)
        if f is None:
            raise TraceError(
                f"{source}: line {n}: {event} fields are not {_FORMATS[event]!r}: {_clip(fields)}"
            )
        if event == "alloc_vmap_area":
            addr, size, align = int(f[1]), int(f[2]), int(f[3])
            vstart, vend, failed = int(f[4], 16), int(f[5], 16), int(f[6]) != 0
            if size <= 0 or size % page_size:
                raise TraceError(
                    f"{source}: line {n}: size={size} is not a positive multiple of the "
                    f"{page_size}-byte page"
                )
            if align <= 0 or align & (align - 1):
                raise TraceError(f"{source}: line {n}: align={align} is not a power of two")
            windows[(vstart, vend)] += 1
            records.append(
                Alloc(
                    key=addr,
                    size=size,
                    align=align,
                    guard=page_size if size > page_size else 0,
                    addr=None if failed else addr,
                    vstart=vstart,
                    vend=vend,
                    failed=failed,
                    line=n,
                )
            )
        elif event == "free_vmap_area_noflush":
            records.append(Free(key=int(f[1], 16), lazy=True, line=n))
        else:
            records.append(Purge(int(f[1], 16), int(f[2], 16), int(f[3]), line=n))
    if not records:
        raise TraceError(
            f"{source}: no alloc_vmap_area, free_vmap_area_noflush or purge_vmap_area_lazy "
            "event: were the vmalloc events enabled (events/vmalloc/*/enable)?"
        )
    notes: list[str] = []
    if headers or others:
        notes.append(f"{headers} header lines and {others} lines of other events were skipped")
    if lost:
        notes.append(
            f"the ring buffer lost {lost} events (buffer_size_kb too small?): "
            "the replay misses them"
        )
    region = None
    if windows:
        (vstart, vend), count = windows.most_common(1)[0]
        region = (vstart, vend // page_size * page_size)
        if count < sum(windows.values()):
            notes.append(
                f"{sum(windows.values()) - count} allocations asked for another window than "
                f"[{vstart:#x}, {vend:#x})"
            )
    return build_trace(
        format="ftrace",
        source=source,
        records=records,
        lines=lines,
        skipped=skipped,
        notes=notes,
        page_size=page_size,
        addresses=True,
        region=region,
    )
