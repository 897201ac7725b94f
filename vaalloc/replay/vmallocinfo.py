"""Reader of ``/proc/vmallocinfo`` snapshots (Linux 4.x to 6.x).

One area per line, as ``s_show``/``show_purge_info`` in mm/vmalloc.c print them::

    0xSTART-0xEND   SIZE caller [pages=N] [phys=0x...] [ioremap] [vmalloc] [vmap] [user]
                    [vpages] [N0=..]
    0xSTART-0xEND   SIZE vm_map_ram
    0xSTART-0xEND   SIZE unpurged vm_area

``SIZE`` is the span of the vmap area, which includes the guard page that ``__get_vm_area_node``
adds unless the area has ``VM_NO_GUARD`` (vm_map_ram areas have none).  The addresses are printed
with ``%pK``: on a kernel with pointer hashing (the default unless ``kptr_restrict`` lets the
reader see them) they are hashed, not ordered and not even inside the vmalloc range.  The reader
accepts them and then replays the areas by size only, in file order (which is the kernel's
address order, busy areas first, then the lazily freed ones).

What each line becomes (one record per line): an :class:`~vaalloc.replay.records.Alloc` of SIZE
bytes, page-aligned (the file does not say how the area was aligned), with ``guard``:

* ``pages=N`` given: the bytes past the N pages (one page, or none) are the guard;
* ``vm_map_ram``: none;
* otherwise one page when SIZE is more than one page (every area made by
  ``__get_vm_area_node``; ``VM_NO_GUARD`` areas, rare, cannot be told apart);

and an "unpurged vm_area" line is an area already freed lazily (``unpurged=True``).
"""

from __future__ import annotations

import re

from vaalloc.replay.errors import TraceError
from vaalloc.replay.records import Alloc, Record, Trace, build_trace

__all__ = ["LINE", "parse_vmallocinfo"]

#: One line of /proc/vmallocinfo: start, end, size, and the rest.
LINE = re.compile(r"0x([0-9a-fA-F]+)-0x([0-9a-fA-F]+)\s+(\d+)(?:\s+(.*?))?\s*")

_UNPURGED = "unpurged vm_area"
_VM_MAP_RAM = "vm_map_ram"


def _clip(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def parse_vmallocinfo(text: str, source: str = "<vmallocinfo>", page_size: int = 4096) -> Trace:
    """Parse the text of a ``/proc/vmallocinfo`` snapshot into a :class:`Trace`.

    Blank lines are ignored; every other line must be an area.  O(lines).

    Raises:
        TraceError: naming the first line that is not an area, whose SIZE is not a positive
            multiple of ``page_size``, or whose ``pages=N`` does not fit in SIZE; or the file
            holds no area at all.
    """
    rows: list[tuple[int, int, int, int, int, bool, str]] = []
    unpurged = ram = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        m = LINE.fullmatch(line)
        if m is None:
            raise TraceError(
                f"{source}: line {n}: not a /proc/vmallocinfo line "
                f"(0xSTART-0xEND SIZE caller ...): {_clip(raw)}"
            )
        start, end, size = int(m[1], 16), int(m[2], 16), int(m[3])
        if size <= 0 or size % page_size:
            raise TraceError(
                f"{source}: line {n}: SIZE {size} is not a positive multiple of the "
                f"{page_size}-byte page"
            )
        rest = m[4] or ""
        lazy = rest.startswith(_UNPURGED)
        if lazy:
            unpurged += 1
            caller = _UNPURGED
            guard = page_size if size > page_size else 0
        elif rest.split()[:1] == [_VM_MAP_RAM]:
            ram += 1
            caller = _VM_MAP_RAM
            guard = 0
        else:
            caller = rest.split()[0] if rest else ""
            guard = page_size if size > page_size else 0
            pages = re.search(r"(?:^|\s)pages=(\d+)(?:\s|$)", rest)
            if pages is not None:
                extra = size - int(pages[1]) * page_size
                if extra < 0:
                    raise TraceError(
                        f"{source}: line {n}: pages={pages[1]} is more than SIZE {size} "
                        f"holds in {page_size}-byte pages"
                    )
                guard = page_size if extra >= page_size else 0
        rows.append((n, start, end, size, guard, lazy, caller))
    if not rows:
        raise TraceError(f"{source}: no area in the file: is it /proc/vmallocinfo?")
    # With real addresses every area spans exactly SIZE bytes; hashed ones never do.
    real = all(end - start == size for _, start, end, size, _, _, _ in rows)
    records: list[Record] = [
        Alloc(
            key=n,
            size=size,
            align=1,
            guard=guard,
            addr=start if real else None,
            unpurged=lazy,
            line=n,
            caller=caller,
        )
        for n, start, end, size, guard, lazy, caller in rows
    ]
    notes = [
        "vmallocinfo does not say how an area was aligned: every area is replayed page-aligned"
    ]
    if not real:
        notes.insert(
            0,
            "the addresses are hashed (printed with %pK): the areas are replayed by size only, "
            "in file order, and no placement is compared",
        )
    if unpurged:
        notes.append(
            f"{unpurged} 'unpurged vm_area' lines are areas freed lazily and not yet purged: "
            "linux-vmalloc keeps them busy, the other policies free them"
        )
    if ram:
        notes.append(f"{ram} vm_map_ram areas have no guard page")
    return build_trace(
        format="vmallocinfo",
        source=source,
        records=records,
        lines=len(rows),
        skipped=0,
        notes=notes,
        page_size=page_size,
        addresses=real,
    )
