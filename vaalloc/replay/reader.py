"""Read a trace file whatever its format: ``/proc/vmallocinfo``, ftrace text, vaalloc JSON."""

from __future__ import annotations

from pathlib import Path

from vaalloc.replay.errors import TraceError
from vaalloc.replay.ftrace import EVENT_LINE, LOST_LINE, parse_ftrace
from vaalloc.replay.jsontrace import parse_json_trace
from vaalloc.replay.records import Trace
from vaalloc.replay.vmallocinfo import LINE, parse_vmallocinfo

__all__ = ["detect_format", "parse_trace", "read_trace"]


def detect_format(text: str, source: str = "<trace>") -> str:
    """``"vmallocinfo"``, ``"ftrace"`` or ``"vaalloc-json"``, from the first non-blank line:
    ``{`` starts a JSON trace, ``#`` the header of an ftrace ``trace`` file, an area line a
    vmallocinfo snapshot, an event line ``trace_pipe`` output.

    Raises:
        TraceError: the file is empty, or its first line is none of these (naming it).
    """
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("{"):
            return "vaalloc-json"
        if line.startswith("#"):
            return "ftrace"
        if LINE.fullmatch(line):
            return "vmallocinfo"
        if EVENT_LINE.fullmatch(raw) or LOST_LINE.fullmatch(raw):
            return "ftrace"
        clipped = line if len(line) <= 60 else line[:57] + "..."
        raise TraceError(
            f"{source}: line {n}: neither /proc/vmallocinfo, ftrace text of the vmalloc events "
            f"nor a vaalloc.replay/1 JSON trace: {clipped!r}"
        )
    raise TraceError(f"{source}: the file is empty")


def parse_trace(text: str, source: str = "<trace>", page_size: int = 4096) -> Trace:
    """Detect the format of ``text`` and parse it.  ``page_size`` applies to the text formats
    (a JSON trace states its own).

    Raises:
        TraceError: as :func:`detect_format` and the format's parser.
    """
    fmt = detect_format(text, source)
    if fmt == "vaalloc-json":
        return parse_json_trace(text, source)
    if fmt == "ftrace":
        return parse_ftrace(text, source, page_size)
    return parse_vmallocinfo(text, source, page_size)


def read_trace(path: str | Path, page_size: int = 4096) -> Trace:
    """Read and parse the trace file at ``path`` (``/proc/vmallocinfo`` itself works).

    Raises:
        TraceError: the file cannot be read (naming it and the reason), or as
            :func:`parse_trace`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TraceError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    return parse_trace(text, str(path), page_size)
