"""The records of a trace, whatever file they came from, and the trace that holds them.

Three kinds of record, in bytes and byte addresses as the kernel counts them:

:class:`Alloc`
    an area was asked for: ``size`` bytes (for Linux the guard page included: ``guard`` says how
    many of those bytes are the trailing guard page), aligned to ``align`` bytes, optionally
    inside a window ``[vstart, vend)``; ``addr`` is where the traced allocator put it when the
    trace records real addresses, ``failed`` says the traced allocator could not place it, and
    ``unpurged`` marks an area that was already freed lazily and waits for a purge (a
    ``/proc/vmallocinfo`` "unpurged vm_area" line).
:class:`Free`
    the area allocated under ``key`` was freed, at once or lazily (``lazy``: Linux's
    ``free_vmap_area_noflush``, the area stays busy until the next purge).
:class:`Purge`
    every lazily freed area was released (Linux's ``__purge_vmap_area_lazy``).

A :class:`Trace` is the checked, consistent list: every free names a live area, no key is
allocated twice while live.  :func:`build_trace` makes one from what a reader parsed, and says in
its ``notes`` what it had to drop or infer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

import attrs

__all__ = ["Alloc", "Free", "Purge", "Record", "Trace", "build_trace"]


@attrs.frozen(slots=True)
class Alloc:
    """An allocation request (see the module docstring for the fields)."""

    key: int | str
    size: int
    align: int = 1
    guard: int = 0
    addr: int | None = None
    vstart: int | None = None
    vend: int | None = None
    failed: bool = False
    unpurged: bool = False
    line: int = 0
    caller: str = ""


@attrs.frozen(slots=True)
class Free:
    """The area allocated under ``key`` was freed (``lazy``: it stays busy until a purge).
    ``implied``: the trace shows no free, but the same address was handed out again."""

    key: int | str
    lazy: bool = False
    line: int = 0
    implied: bool = False


@attrs.frozen(slots=True)
class Purge:
    """Every lazily freed area was released.  ``start``/``end``/``count`` are what the kernel's
    ``purge_vmap_area_lazy`` tracepoint reported, when the trace has them."""

    start: int | None = None
    end: int | None = None
    count: int | None = None
    line: int = 0


Record: TypeAlias = Alloc | Free | Purge


@attrs.frozen
class Trace:
    """A consistent sequence of records and what is known about where it came from.

    ``format`` is ``"vmallocinfo"``, ``"ftrace"`` or ``"vaalloc-json"``; ``source`` the file
    name; ``lines`` the lines (or JSON records) read; ``skipped`` how many of them are not
    replayed (headers, other events, frees of areas the trace never allocated...), with the
    reasons in ``notes``; ``page_size`` the page every size is a multiple of; ``addresses``
    whether ``Alloc.addr`` holds real traced placements; ``region`` the ``[start, end)`` the
    trace was recorded in, when the file says (the kernel's ``vstart``/``vend``).
    """

    format: str
    source: str
    records: tuple[Record, ...]
    lines: int
    skipped: int
    notes: tuple[str, ...]
    page_size: int
    addresses: bool
    region: tuple[int, int] | None = None

    @property
    def allocs(self) -> int:
        """Number of allocation records."""
        return sum(1 for r in self.records if isinstance(r, Alloc))


def build_trace(
    *,
    format: str,
    source: str,
    records: Iterable[Record],
    lines: int,
    skipped: int,
    notes: Sequence[str],
    page_size: int,
    addresses: bool,
    region: tuple[int, int] | None = None,
) -> Trace:
    """Check the records for consistency and make the :class:`Trace`.

    A free of a key that is not live (the area was allocated before the trace began, or the
    trace lost events) is skipped and counted; an allocation under a key that is still live
    (the kernel handed the address out again, so it was freed on a path the trace does not
    show) gets an implied :class:`Free` just before it.  Both are reported in ``notes``.
    O(n).
    """
    live: set[int | str] = set()
    out: list[Record] = []
    orphans = implied = 0
    for rec in records:
        if isinstance(rec, Alloc):
            if not rec.failed:
                if rec.key in live:
                    out.append(Free(rec.key, lazy=False, line=rec.line, implied=True))
                    implied += 1
                if not rec.unpurged:
                    live.add(rec.key)
        elif isinstance(rec, Free):
            if rec.key not in live:
                orphans += 1
                continue
            live.discard(rec.key)
        out.append(rec)
    all_notes = list(notes)
    if orphans:
        all_notes.append(
            f"{orphans} frees of areas allocated before the trace began (or whose allocation "
            "was lost) were skipped"
        )
    if implied:
        all_notes.append(
            f"{implied} addresses were handed out again with no traced free in between: "
            "the earlier area is freed just before"
        )
    return Trace(
        format=format,
        source=source,
        records=tuple(out),
        lines=lines,
        skipped=skipped + orphans,
        notes=tuple(all_notes),
        page_size=page_size,
        addresses=addresses,
        region=region,
    )
