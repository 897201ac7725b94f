"""Replay real workloads: what Linux and Xen actually allocated, placed by each policy.

Readers turn a trace file into a :class:`Trace` of records (:class:`Alloc`, :class:`Free`,
:class:`Purge`): ``/proc/vmallocinfo`` snapshots (:func:`parse_vmallocinfo`), the ftrace text of
Linux's vmalloc tracepoints (:func:`parse_ftrace`) and vaalloc's own versioned JSON trace
(:func:`parse_json_trace`, written by :func:`write_trace`); :func:`read_trace` detects which.
:func:`replay` places the records in each policy over a :class:`Region` (the presets of
:data:`REGIONS`: Xen ARM32's 768MB VMAP, the 128MB window) and reports, per policy, failures,
peak use, the largest free run and the holes at the end and at peak, fragmentation, and how many
placements differ from the traced ones.  See docs/replay.md.

Layering: this package uses :mod:`vaalloc.alloc` and :mod:`vaalloc.errors` only (not the Xen
model), and :mod:`vaalloc.cli` uses it.
"""

from __future__ import annotations

from vaalloc.replay.engine import (
    DEFAULT_POLICIES,
    POLICY_NAMES,
    Failure,
    Mismatch,
    PolicyResult,
    Replay,
    Snapshot,
    default_region,
    policy_names,
    replay,
)
from vaalloc.replay.errors import TraceError
from vaalloc.replay.ftrace import parse_ftrace
from vaalloc.replay.jsontrace import TRACE_FORMAT, dump_trace, parse_json_trace, write_trace
from vaalloc.replay.reader import detect_format, parse_trace, read_trace
from vaalloc.replay.records import Alloc, Free, Purge, Record, Trace, build_trace
from vaalloc.replay.regions import REGIONS, VMAP_ARM32, WINDOW_128M, Region, region_from
from vaalloc.replay.vmallocinfo import parse_vmallocinfo

__all__ = [
    "DEFAULT_POLICIES",
    "POLICY_NAMES",
    "REGIONS",
    "TRACE_FORMAT",
    "VMAP_ARM32",
    "WINDOW_128M",
    "Alloc",
    "Failure",
    "Free",
    "Mismatch",
    "PolicyResult",
    "Purge",
    "Record",
    "Region",
    "Replay",
    "Snapshot",
    "Trace",
    "TraceError",
    "build_trace",
    "default_region",
    "detect_format",
    "dump_trace",
    "parse_ftrace",
    "parse_json_trace",
    "parse_trace",
    "parse_vmallocinfo",
    "policy_names",
    "read_trace",
    "region_from",
    "replay",
    "write_trace",
]
