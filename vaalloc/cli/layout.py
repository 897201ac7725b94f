"""``vaalloc layout``: Xen's ARM32 hyp memory map and the VLPT slot map for given guest sizes.

The memory map is :mod:`vaalloc.xen.layout`'s; the slot map places one domain per size, in
order, exactly as the Xen model does when log-dirty is enabled on them in that order (first
fit over the window in 2MB slots, the loop slot reserved), and shows for each domain its slots
and the hyp VA ranges of its leaf view (``third_va``) and second-level view (``second_va``).
Output as text or ``--json``; ``--chart FILE`` also draws the map (matplotlib).  The exit
status is 1 when a guest does not fit the window.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vaalloc.cli._args import Size, add_command, format_size
from vaalloc.cli._output import plural, table, write_chart_or_fail
from vaalloc.cli.plot import Cell, Strip, chart_path
from vaalloc.errors import OutOfSpace, RangeError

__all__ = ["layout_chart", "memory_map", "register", "slot_map"]

# (name, start, end, what maps it) in VA order; computed from the layout constants.
_REGIONS = (
    ("Xen text/data/bss", "XEN_VIRT_START", "XEN_VIRT_END", "xen_xenmap, 4K pages"),
    ("fixmap", "FIXMAP_VIRT_START", "FIXMAP_VIRT_END", "xen_fixmap, 4K pages"),
    ("boot misc", "BOOT_MISC_VIRT_START", "BOOT_MISC_VIRT_END", "boot mappings"),
    ("frametable", "FRAMETABLE_VIRT_START", "FRAMETABLE_VIRT_END", "2M blocks"),
    ("VLPT window", "VLPT_VIRT_START", "VLPT_VIRT_END", "p2m first-level copies + loop"),
    ("vmap", "VMAP_VIRT_START", "VMAP_VIRT_END", "xen_vmap allocator, 4K pages"),
    ("xenheap", "XENHEAP_VIRT_START", "XENHEAP_VIRT_END", "2M blocks"),
    ("domheap (per CPU)", "DOMHEAP_VIRT_START", "DOMHEAP_VIRT_END", "xen_dommap, 1024 x 2M"),
)


def memory_map() -> list[dict[str, Any]]:
    """The hyp VA map as rows of ``name``, ``start``, ``end``, ``size``, ``slots`` (the
    ``xen_second`` indices covering it) and ``mapped_by``; holes appear as ``unmapped``."""
    from vaalloc.xen import layout

    rows: list[dict[str, Any]] = []
    cursor = 0
    for name, lo_name, hi_name, how in _REGIONS:
        lo, hi = getattr(layout, lo_name), getattr(layout, hi_name)
        if lo > cursor:
            rows.append(_row("unmapped", cursor, lo, ""))
        rows.append(_row(name, lo, hi, how))
        cursor = hi
    return rows


def _row(name: str, lo: int, hi: int, how: str) -> dict[str, Any]:
    from vaalloc.xen.layout import SECOND_SHIFT

    return {
        "name": name,
        "start": lo,
        "end": hi,
        "size": hi - lo,
        "slots": [lo >> SECOND_SHIFT, (hi - 1) >> SECOND_SHIFT],
        "mapped_by": how,
    }


def slot_map(sizes: list[int]) -> dict[str, Any]:
    """Place one domain of each RAM size (bytes) in the VLPT window, in order, as the Xen model
    does at log-dirty enable; return the window, the loop slot and per domain its slots (or
    ``placed: False`` with the reason when the window has no run left for it), leaf view and
    second-level view ranges, and the free slots left.  Raises RangeError for a size that is not
    a positive multiple of 4KB or does not fit the 40-bit IPA space.  O(domains)."""
    from vaalloc.xen import layout
    from vaalloc.xen.lookup import new_window
    from vaalloc.xen.vlptmath import gb_span, second_va, third_va

    window = new_window()
    domains: list[dict[str, Any]] = []
    for k, ram in enumerate(sizes, start=1):
        if ram <= 0 or ram % layout.PAGE_SIZE:
            raise RangeError(f"domain {k}: RAM {ram:#x} is not a positive multiple of 4K")
        base, end = layout.GUEST_RAM_BASE, layout.GUEST_RAM_BASE + ram
        if end > 1 << layout.P2M_IPA_BITS:
            raise RangeError(f"domain {k}: RAM {format_size(ram)} goes past the 40-bit IPA space")
        first_gb, nr = gb_span(base, ram)
        dom: dict[str, Any] = {"domain": k, "ram": ram, "ipa": [base, end], "slots_needed": nr}
        try:
            va = window.alloc(nr)
        except OutOfSpace:
            largest = window.stats().largest_free
            dom.update(placed=False, reason=f"needs {nr} slots, largest free run {largest}")
            domains.append(dom)
            continue
        first = va >> layout.SECOND_SHIFT
        loop = layout.VLPT_LOOP_SLOT
        dom.update(
            placed=True,
            first_slot=first,
            last_slot=first + nr - 1,
            leaf_view=[
                third_va(first, first_gb, nr, base),
                third_va(first, first_gb, nr, end - layout.PAGE_SIZE) + layout.PTE_SIZE,
            ],
            second_view=[
                second_va(loop, first, first_gb, nr, base),
                second_va(loop, first, first_gb, nr, end - layout.PAGE_SIZE) + layout.PTE_SIZE,
            ],
        )
        domains.append(dom)
    free = [
        [va >> layout.SECOND_SHIFT, (va >> layout.SECOND_SHIFT) + n - 1] for va, n in _holes(window)
    ]
    return {
        "window": [layout.VLPT_VIRT_START, layout.VLPT_VIRT_END],
        "first_slot": layout.VLPT_FIRST_SLOT,
        "slots": layout.VLPT_NR_SLOTS,
        "loop_slot": layout.VLPT_LOOP_SLOT,
        "loop_va": layout.VLPT_LOOP_VA,
        "domains": domains,
        "free": free,
    }


def _holes(window: Any) -> list[tuple[int, int]]:
    """Free runs of the window as (va, granules), from its live allocations."""
    out: list[tuple[int, int]] = []
    cursor, g = window.start, window.granule
    for va, nr in window.allocations():
        if va > cursor:
            out.append((cursor, (va - cursor) // g))
        cursor = va + nr * g
    if cursor < window.end:
        out.append((cursor, (window.end - cursor) // g))
    return out


# --- text ------------------------------------------------------------------------------------


def _text(rows: list[dict[str, Any]], slots: dict[str, Any]) -> str:
    """The map and the slots as text, under the names of the JSON output."""
    out = ["Xen ARM32 hyp virtual memory map (32-bit VA through HTTBR)", ""]
    header = ["name", "start", "end", "size", "slots", "mapped_by"]
    units = ["", "hyp VA", "hyp VA", "", "xen_second", ""]
    table_rows = [
        [
            r["name"],
            f"{r['start']:#010x}",
            f"{r['end']:#010x}",
            format_size(r["size"]),
            f"{r['slots'][0]}..{r['slots'][1]}",
            r["mapped_by"],
        ]
        for r in rows
    ]
    out.append(table(header, units, table_rows, align="lrrrrl"))
    w0, w1 = slots["window"]
    last = slots["first_slot"] + slots["slots"] - 1
    out += [
        "",
        f"VLPT window {w0:#010x}-{w1:#010x}: {slots['slots']} slots of 2M "
        f"(xen_second[{slots['first_slot']}..{last}]), "
        f"loop slot {slots['loop_slot']} at {slots['loop_va']:#010x}",
        "",
    ]
    for d in slots["domains"]:
        ipa0, ipa1 = d["ipa"]
        head = f"  d{d['domain']}: ram {format_size(d['ram'])}, ipa {ipa0:#x}-{ipa1:#x}"
        if not d["placed"]:
            out.append(f"{head}: does not fit ({d['reason']})")
            continue
        (l0, l1), (s0, s1) = d["leaf_view"], d["second_view"]
        out.append(f"{head}: slots {d['first_slot']}..{d['last_slot']}")
        out.append(
            f"      leaf_view    {l0:#010x}-{l1:#010x} ({format_size(l1 - l0)}, read by third_va)"
        )
        out.append(
            f"      second_view  {s0:#010x}-{s1:#010x} "
            f"({format_size(s1 - s0)} in {_pages(s0, s1)}, read by second_va)"
        )
    free = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in slots["free"]) or "none"
    n_free = sum(b - a + 1 for a, b in slots["free"])
    out += ["", f"free slots: {free} ({plural(n_free, 'slot')}, {n_free}G of guest RAM)"]
    return "\n".join(out)


def _pages(lo: int, hi: int) -> str:
    return plural(((hi - 1) >> 12) - (lo >> 12) + 1, "page")


# --- the chart ----------------------------------------------------------------------------

# Labels that fit the narrow boxes of the memory map.
_SHORT = {
    "unmapped": "",
    "Xen text/data/bss": "Xen",
    "boot misc": "boot",
    "VLPT window": "VLPT",
    "domheap (per CPU)": "domheap",
}


def layout_chart(rows: list[dict[str, Any]], slots: dict[str, Any], path: Path) -> Path:
    """Draw the map to ``path`` (format from the suffix): the hyp memory map as a bar (widths on
    a log scale, so 2MB regions show beside 2GB ones, each boundary labelled with its address),
    the VLPT window as its 64 slots coloured by domain with the loop slot marked, and a legend
    with each domain's slots and view addresses.  Raises ChartError."""
    from vaalloc.cli.plot import write_strips

    weights = [max(3.0, float((r["size"] >> 20).bit_length())) for r in rows]
    cells, ticks, x = [], [], 0.0
    for r, w in zip(rows, weights, strict=True):
        label = _SHORT.get(r["name"], r["name"])
        colour = "#ffe9a8" if r["name"] == "VLPT window" else None
        if r["name"] != "unmapped":
            colour = colour or "#dde6f0"
            label = f"{label}\n{format_size(r['size'])}"
        cells.append(Cell(x, x + w, label, colour=colour))
        ticks.append((x, f"{r['start']:#010x}"))
        x += w
    ticks.append((x, f"{rows[-1]['end']:#x}"))
    hyp = Strip(
        "hyp virtual address space, 4G through HTTBR (box widths on a log scale)", cells, ticks
    )

    first, nr = slots["first_slot"], slots["slots"]
    loop = slots["loop_slot"]
    window: list[Cell] = []
    legend: list[tuple[str | None, str]] = []
    for d in slots["domains"]:
        name = f"d{d['domain']}"
        if not d["placed"]:
            legend.append((None, f"{name} {format_size(d['ram'])}: does not fit ({d['reason']})"))
            continue
        (l0, l1), (s0, s1) = d["leaf_view"], d["second_view"]
        window.append(Cell(d["first_slot"], d["last_slot"] + 1, name, group=name))
        legend.append(
            (
                name,
                f"{name} {format_size(d['ram'])}: slots {d['first_slot']}..{d['last_slot']}, "
                f"leaf_view {l0:#010x}-{l1:#010x}, second_view {s0:#010x}-{s1:#010x}",
            )
        )
    for a, b in slots["free"]:
        window.append(Cell(a, b + 1, "free" if b - a >= 2 else ""))
    window.append(Cell(loop, loop + 1, "", group="loop", colour="#333333"))
    legend.append(
        (
            "loop",
            f"loop slot {loop} at {slots['loop_va']:#010x}: every second_view reads through it",
        )
    )
    w0, w1 = slots["window"]
    slot_ticks = [(s + 0.5, str(s)) for s in range(first, first + nr, 8)]
    slot_ticks.append((loop + 0.5, str(loop)))
    vlpt = Strip(
        f"VLPT window {w0:#010x}-{w1:#010x}: xen_second slots {first}..{first + nr - 1}, 2M each",
        window,
        slot_ticks,
    )
    return write_strips(
        path,
        title="Xen ARM32 hyp memory map and VLPT slots (vaalloc layout)",
        strips=[hyp, vlpt],
        legend=legend,
    )


# --- the command -------------------------------------------------------------------------------


def _layout(args: argparse.Namespace) -> int:
    rows = memory_map()
    slots = slot_map(args.ram)
    if args.json:
        print(json.dumps({"memory_map": rows, "vlpt": slots}, indent=2))
    else:
        print(_text(rows, slots))
    status = write_chart_or_fail("layout", args.chart, lambda p: layout_chart(rows, slots, p))
    misfits = [d for d in slots["domains"] if not d["placed"]]
    if misfits:
        names = ", ".join(f"d{d['domain']} ({format_size(d['ram'])})" for d in misfits)
        print(
            f"vaalloc layout: {plural(len(misfits), 'guest')} {names} "
            f"{'does' if len(misfits) == 1 else 'do'} not fit the VLPT window",
            file=sys.stderr,
        )
        return 1
    return status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``layout`` to the command's sub-parsers."""
    from vaalloc.xen.layout import GUEST_RAM_BASE, P2M_IPA_BITS

    p = add_command(
        sub,
        "layout",
        help="print Xen's hyp memory map and the VLPT slot map for given guest sizes",
        description="""
        Print the hyp virtual memory map of the Xen-on-ARM32 model (each region, its
        xen_second slots and what maps it), then place one log-dirty guest per RAM size in
        the VLPT window, in the order given, exactly as the model does at log-dirty enable:
        for each guest its slots and the hyp VA ranges of its leaf view (third_va) and
        second-level view (second_va).

        Exit status 1 when a guest does not fit the window (63 slots, one per GB of guest
        IPA); everything is printed first.
        """,
    )
    ram_max = (1 << P2M_IPA_BITS) - GUEST_RAM_BASE
    p.add_argument(
        "ram",
        nargs="*",
        type=Size(4096, ram_max, "guest RAM is 4K pages, from IPA 0x80000000 to 2^40"),
        default=[4 << 30, 2 << 30, 1 << 30],
        metavar="SIZE",
        help="RAM of each log-dirty guest, in enable order, e.g. 4G 512M",
    )
    p.add_argument(
        "--chart",
        type=chart_path,
        default=None,
        metavar="FILE",
        help="also draw the map to FILE (.png, .svg or .pdf; needs matplotlib)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_layout)
