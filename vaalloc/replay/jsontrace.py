"""vaalloc's own trace format: JSON, versioned (``"format": "vaalloc.replay/1"``).

What ``vaalloc replay --record FILE`` writes (any trace it read, converted), and what a library
user or another tool writes to replay its own workload, Xen's ``vm_alloc``/``vm_free`` for
example.  One JSON object::

    {"format": "vaalloc.replay/1",      required, this exact string
     "page_size": 4096,                 optional (4096): every size is a multiple of it
     "source": "free text",             optional: where the records came from
     "region": [START, END],            optional: the window the trace was recorded in
     "addresses": true,                 optional: "addr" fields are real placements
                                        (default: true when any alloc has one)
     "records": [ ... ]}                required, in order

and the records, integers in bytes, keys not listed are refused (a typo must not be ignored)::

    {"op": "alloc", "id": ID, "size": BYTES,    required; ID an integer or a string,
                                                unique among live areas
     "align": BYTES,                            optional (1): a power of two
     "guard": BYTES,                            optional (0): bytes of size that are a
                                                trailing guard page (Linux: one page)
     "addr": ADDRESS,                           optional: where the traced allocator put it
     "vstart": ADDRESS, "vend": ADDRESS,        optional: the window it was asked for in
     "failed": false,                           optional: the traced allocator failed
     "unpurged": false,                         optional: already freed lazily
     "caller": "text"}                          optional
    {"op": "free", "id": ID, "lazy": false}     lazy: stays busy until the next purge;
                                                optional "implied": true, a free the source
                                                trace did not show (see build_trace)
    {"op": "purge"}                             optional "start", "end", "count"

A Xen vmap trace: ``vm_alloc(nr, align)`` is ``{"op": "alloc", "size": nr * 4096, "align":
align * 4096, "guard": 0}`` (Xen adds its guard itself), ``vm_free(va)`` is ``{"op": "free"}``.
:func:`dump_trace` writes one record per line, so that a diff of two traces reads well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from vaalloc.replay.errors import TraceError
from vaalloc.replay.records import Alloc, Free, Purge, Record, Trace, build_trace

__all__ = ["TRACE_FORMAT", "dump_trace", "parse_json_trace", "write_trace"]

#: The ``format`` field this version writes and accepts.
TRACE_FORMAT: Final = "vaalloc.replay/1"

_TOP = {"format", "page_size", "source", "region", "addresses", "records"}
_ALLOC_KEYS = {
    "op",
    "id",
    "size",
    "align",
    "guard",
    "addr",
    "vstart",
    "vend",
    "failed",
    "unpurged",
    "caller",
}
_FREE_KEYS = {"op", "id", "lazy", "implied"}
_PURGE_KEYS = {"op", "start", "end", "count"}


def _int(value: object, what: str, where: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TraceError(f"{where}: {what} must be a non-negative integer, got {value!r}")
    return value


def _bool(value: object, what: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise TraceError(f"{where}: {what} must be true or false, got {value!r}")
    return value


def parse_json_trace(text: str, source: str = "<json>") -> Trace:
    """Parse a ``vaalloc.replay/1`` JSON trace.  O(records).

    Raises:
        TraceError: invalid JSON (naming the line), a wrong or missing ``format``, or a record
            (named by its number, from 1) with a missing, unknown or ill-typed field, a size
            that is not a positive multiple of ``page_size``, an align that is not a power of
            two, or a guard not smaller than the size.
    """
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{source}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or doc.get("format") != TRACE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise TraceError(f"{source}: not a {TRACE_FORMAT} trace (format: {got!r})")
    unknown = set(doc) - _TOP
    if unknown:
        raise TraceError(f"{source}: unknown top-level keys {sorted(unknown)}")
    page = _int(doc.get("page_size", 4096), "page_size", source)
    if page <= 0 or page & (page - 1):
        raise TraceError(f"{source}: page_size {page} is not a power of two")
    raw = doc.get("records")
    if not isinstance(raw, list):
        raise TraceError(f"{source}: records must be a list")
    region = doc.get("region")
    if region is not None:
        if not (isinstance(region, list) and len(region) == 2):
            raise TraceError(f"{source}: region must be [start, end], got {region!r}")
        lo, hi = (_int(v, "region", source) for v in region)
        if hi <= lo:
            raise TraceError(f"{source}: region [{lo:#x}, {hi:#x}) is empty")
        region = (lo, hi)
    records: list[Record] = []
    any_addr = False
    for i, rec in enumerate(raw, 1):
        where = f"{source}: record {i}"
        records.append(_record(rec, where, page, i))
        any_addr = any_addr or (isinstance(records[-1], Alloc) and records[-1].addr is not None)
    addresses = doc.get("addresses", any_addr)
    _bool(addresses, "addresses", source)
    src = doc.get("source", source)
    if not isinstance(src, str):
        raise TraceError(f"{source}: source must be a string")
    return build_trace(
        format="vaalloc-json",
        source=source,
        records=records,
        lines=len(records),
        skipped=0,
        notes=[f"recorded from {src}"] if src != source else [],
        page_size=page,
        addresses=addresses,
        region=region,
    )


def _key(value: object, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TraceError(f"{where}: id must be an integer or a string, got {value!r}")
    return value


def _record(rec: object, where: str, page: int, number: int) -> Record:
    if not isinstance(rec, dict):
        raise TraceError(f"{where}: not an object")
    op = rec.get("op")
    allowed = {"alloc": _ALLOC_KEYS, "free": _FREE_KEYS, "purge": _PURGE_KEYS}.get(str(op))
    if allowed is None:
        raise TraceError(f"{where}: op must be 'alloc', 'free' or 'purge', got {op!r}")
    unknown = set(rec) - allowed
    if unknown:
        raise TraceError(f"{where}: unknown keys {sorted(unknown)} for op {op!r}")
    if op == "purge":
        return Purge(
            _int(rec.get("start"), "start", where, optional=True),
            _int(rec.get("end"), "end", where, optional=True),
            _int(rec.get("count"), "count", where, optional=True),
            line=number,
        )
    if "id" not in rec:
        raise TraceError(f"{where}: {op} needs an id")
    key = _key(rec["id"], where)
    if op == "free":
        return Free(
            key,
            lazy=_bool(rec.get("lazy", False), "lazy", where),
            line=number,
            implied=_bool(rec.get("implied", False), "implied", where),
        )
    if "size" not in rec:
        raise TraceError(f"{where}: alloc needs a size")
    size = _int(rec["size"], "size", where)
    if size <= 0 or size % page:
        raise TraceError(f"{where}: size {size} is not a positive multiple of the {page}-byte page")
    align = _int(rec.get("align", 1), "align", where)
    if align <= 0 or align & (align - 1):
        raise TraceError(f"{where}: align {align} is not a power of two")
    guard = _int(rec.get("guard", 0), "guard", where)
    if guard >= size or guard % page:
        raise TraceError(f"{where}: guard {guard} must be whole pages smaller than size {size}")
    caller = rec.get("caller", "")
    if not isinstance(caller, str):
        raise TraceError(f"{where}: caller must be a string")
    return Alloc(
        key=key,
        size=size,
        align=align,
        guard=guard,
        addr=_int(rec.get("addr"), "addr", where, optional=True),
        vstart=_int(rec.get("vstart"), "vstart", where, optional=True),
        vend=_int(rec.get("vend"), "vend", where, optional=True),
        failed=_bool(rec.get("failed", False), "failed", where),
        unpurged=_bool(rec.get("unpurged", False), "unpurged", where),
        line=number,
        caller=caller,
    )


def _record_json(rec: Record) -> dict[str, Any]:
    if isinstance(rec, Alloc):
        out: dict[str, Any] = {"op": "alloc", "id": rec.key, "size": rec.size}
        if rec.align != 1:
            out["align"] = rec.align
        if rec.guard:
            out["guard"] = rec.guard
        for name in ("addr", "vstart", "vend"):
            value = getattr(rec, name)
            if value is not None:
                out[name] = value
        if rec.failed:
            out["failed"] = True
        if rec.unpurged:
            out["unpurged"] = True
        if rec.caller:
            out["caller"] = rec.caller
        return out
    if isinstance(rec, Free):
        out = {"op": "free", "id": rec.key}
        if rec.lazy:
            out["lazy"] = True
        if rec.implied:
            out["implied"] = True
        return out
    out = {"op": "purge"}
    for name in ("start", "end", "count"):
        value = getattr(rec, name)
        if value is not None:
            out[name] = value
    return out


def dump_trace(trace: Trace) -> str:
    """``trace`` as a ``vaalloc.replay/1`` document, one record per line.  Reading it back
    with :func:`parse_json_trace` gives the same records, numbered from 1 instead of by the
    source's lines (skipped lines are not written)."""
    head: dict[str, Any] = {
        "format": TRACE_FORMAT,
        "page_size": trace.page_size,
        "source": f"{trace.source} ({trace.format})",
        "addresses": trace.addresses,
    }
    if trace.region is not None:
        head["region"] = list(trace.region)
    opening = json.dumps(head)[:-1] + ', "records": ['
    body = ",\n".join(json.dumps(_record_json(r)) for r in trace.records)
    return f"{opening}\n{body}\n]}}\n"


def write_trace(trace: Trace, path: str | Path) -> Path:
    """Write :func:`dump_trace` of ``trace`` to ``path``; return the path.

    Raises:
        TraceError: the file cannot be written (one line naming it and the reason).
    """
    out = Path(path)
    try:
        out.write_text(dump_trace(trace))
    except OSError as exc:
        raise TraceError(f"cannot write trace {str(out)!r}: {exc.strerror or exc}") from None
    return out
