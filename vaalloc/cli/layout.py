"""``vaalloc layout``: Xen's ARM32 hyp memory map and the VLPT slot map for given guest sizes.

The memory map is :mod:`vaalloc.xen.layout`'s; the slot map places one domain per size, in
order, exactly as the Xen model does when log-dirty is enabled on them in that order (first
fit over the window in 2MB slots, the loop slot reserved), and shows for each domain its slots
and the hyp VA ranges of its leaf view (``third_va``) and second-level view (``second_va``).
Output as text, ``--json``, or an SVG picture (``--svg FILE``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from vaalloc.cli._args import parse_size
from vaalloc.errors import OutOfSpace, RangeError

__all__ = ["memory_map", "register", "slot_map", "svg"]

# (name, start, end, what maps it) in VA order; computed from the layout constants.
_REGIONS = (
    ("Xen text/data/bss", "XEN_VIRT_START", "XEN_VIRT_END", "xen_xenmap, 4KB pages"),
    ("fixmap", "FIXMAP_VIRT_START", "FIXMAP_VIRT_END", "xen_fixmap, 4KB pages"),
    ("boot misc", "BOOT_MISC_VIRT_START", "BOOT_MISC_VIRT_END", "boot mappings"),
    ("frametable", "FRAMETABLE_VIRT_START", "FRAMETABLE_VIRT_END", "2MB blocks"),
    ("VLPT window", "VLPT_VIRT_START", "VLPT_VIRT_END", "p2m first-level copies + loop"),
    ("vmap", "VMAP_VIRT_START", "VMAP_VIRT_END", "xen_vmap allocator, 4KB pages"),
    ("xenheap", "XENHEAP_VIRT_START", "XENHEAP_VIRT_END", "2MB blocks"),
    ("domheap (per CPU)", "DOMHEAP_VIRT_START", "DOMHEAP_VIRT_END", "xen_dommap, 1024 x 2MB"),
)


def _size(n: int) -> str:
    for unit, shift in (("GB", 30), ("MB", 20), ("KB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


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
            raise RangeError(f"domain {k}: RAM {ram:#x} is not a positive multiple of 4KB")
        base, end = layout.GUEST_RAM_BASE, layout.GUEST_RAM_BASE + ram
        if end > 1 << layout.P2M_IPA_BITS:
            raise RangeError(f"domain {k}: RAM {_size(ram)} goes past the 40-bit IPA space")
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
    out = ["Xen ARM32 hyp virtual memory map (32-bit VA through HTTBR)", ""]
    out.append(f"  {'start':>10}  {'end':>11}  {'size':>6}  {'region':<18} {'xen_second':>12}")
    for r in rows:
        a, b = r["slots"]
        end = f"{r['end']:#010x}"
        out.append(
            f"  {r['start']:#010x}  {end:>11}  {_size(r['size']):>6}  "
            f"{r['name']:<18} {f'[{a}..{b}]':>12}  {r['mapped_by']}".rstrip()
        )
    w0, w1 = slots["window"]
    out += [
        "",
        f"VLPT window {w0:#010x}-{w1:#010x}: {slots['slots']} slots of 2MB "
        f"(xen_second[{slots['first_slot']}..{slots['first_slot'] + slots['slots'] - 1}]), "
        f"loop slot {slots['loop_slot']} at {slots['loop_va']:#010x}",
        "",
    ]
    for d in slots["domains"]:
        head = (
            f"  d{d['domain']}: {_size(d['ram']):>6} RAM, IPA [{d['ipa'][0]:#x}, {d['ipa'][1]:#x})"
        )
        if not d["placed"]:
            out.append(f"{head}: does not fit ({d['reason']})")
            continue
        (l0, l1), (s0, s1) = d["leaf_view"], d["second_view"]
        out.append(f"{head}: slots {d['first_slot']}..{d['last_slot']}")
        out.append(f"      leaf view   {l0:#010x}-{l1:#010x} ({_size(l1 - l0)})  third_va")
        out.append(
            f"      second view {s0:#010x}-{s1:#010x} ({_size(s1 - s0)} in {_pages(s0, s1)})  "
            "second_va"
        )
    free = ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in slots["free"]) or "none"
    n_free = sum(b - a + 1 for a, b in slots["free"])
    out += ["", f"free slots: {free} ({n_free} slots, {n_free}GB of guest RAM)"]
    return "\n".join(out)


def _pages(lo: int, hi: int) -> str:
    pages = ((hi - 1) >> 12) - (lo >> 12) + 1
    return f"{pages} page{'s' if pages != 1 else ''}"


# --- SVG -------------------------------------------------------------------------------------

# Labels that fit the narrow boxes of the bar.
_SHORT = {
    "unmapped": "",
    "Xen text/data/bss": "Xen",
    "boot misc": "boot",
    "VLPT window": "VLPT",
    "domheap (per CPU)": "domheap",
}
_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")
_W = 960


def _t(x: float, y: float, text: str, size: int = 11, anchor: str = "start", **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(text)}</text>"
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, stroke: str = "#333") -> str:
    return (
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'fill="{fill}" stroke="{stroke}" stroke-width="1"/>'
    )


def svg(rows: list[dict[str, Any]], slots: dict[str, Any]) -> str:
    """An SVG picture: the hyp memory map as a bar (widths on a log scale, so 2MB regions show
    beside 2GB ones), a zoom on the VLPT window as 64 slot cells coloured by domain with the
    loop slot marked, and a legend giving each domain's slots and view addresses."""
    parts: list[str] = []
    left, bar_w, y0 = 20.0, _W - 40.0, 50.0
    parts.append(_t(left, 24, "Xen ARM32 hyp memory map and VLPT slots (vaalloc layout)", 15))
    weights = [max(3.0, (r["size"] >> 20).bit_length()) for r in rows]
    scale = bar_w / sum(weights)
    x = left
    vlpt_x = (0.0, 0.0)
    for r, w in zip(rows, weights, strict=True):
        width = w * scale
        fill = "#ffffff" if r["name"] == "unmapped" else "#dde6f0"
        if r["name"] == "VLPT window":
            fill, vlpt_x = "#ffe9a8", (x, x + width)
        parts.append(_rect(x, y0, width, 46, fill))
        label = _SHORT.get(r["name"], r["name"])
        parts.append(_t(x + width / 2, y0 + 18, label, 10, "middle"))
        parts.append(_t(x + width / 2, y0 + 34, _size(r["size"]), 10, "middle", fill="#555"))
        if width >= 60:  # narrower boxes leave no room for an address under them
            parts.append(_t(x, y0 + 60, f"{r['start']:#x}", 8, "start", fill="#555"))
        x += width
    parts.append(_t(left + bar_w, y0 + 60, "0x100000000", 8, "end", fill="#555"))
    # The zoom: 64 cells, one per xen_second slot of the window.
    cy, cell = 170.0, bar_w / slots["slots"]
    parts.append(
        f'<path d="M{vlpt_x[0]:.1f},{y0 + 46} L{left},{cy - 24} M{vlpt_x[1]:.1f},{y0 + 46} '
        f'L{left + bar_w},{cy - 24}" stroke="#999" stroke-dasharray="4,3" fill="none"/>'
    )
    owner: dict[int, int] = {}
    for i, d in enumerate(slots["domains"]):
        if d["placed"]:
            for s in range(d["first_slot"], d["last_slot"] + 1):
                owner[s] = i
    first = slots["first_slot"]
    for k in range(slots["slots"]):
        s = first + k
        if s == slots["loop_slot"]:
            fill = "#333333"
        elif s in owner:
            fill = _COLOURS[owner[s] % len(_COLOURS)]
        else:
            fill = "#ffffff"
        parts.append(_rect(left + k * cell, cy, cell, 34, fill, "#666"))
        if k % 8 == 0 or s == slots["loop_slot"]:
            parts.append(_t(left + k * cell + cell / 2, cy + 48, str(s), 9, "middle"))
    parts.append(
        _t(
            left,
            cy - 8,
            f"VLPT window {slots['window'][0]:#010x}-{slots['window'][1]:#010x}: "
            f"xen_second slots {first}..{first + slots['slots'] - 1}, 2MB each",
            11,
        )
    )
    # Legend.
    ly = cy + 78
    parts.append(_rect(left, ly - 10, 12, 12, "#333333"))
    parts.append(
        _t(
            left + 18,
            ly,
            f"loop slot {slots['loop_slot']} at {slots['loop_va']:#010x}: "
            "xen_second page 0 read as a level-3 table (second-level view)",
            11,
        )
    )
    for i, d in enumerate(slots["domains"]):
        ly += 20
        colour = _COLOURS[i % len(_COLOURS)] if d["placed"] else "#ffffff"
        parts.append(_rect(left, ly - 10, 12, 12, colour))
        label = f"d{d['domain']} {_size(d['ram'])}: "
        if d["placed"]:
            (l0, l1), (s0, s1) = d["leaf_view"], d["second_view"]
            label += (
                f"slots {d['first_slot']}..{d['last_slot']}, leaf view {l0:#010x}-{l1:#010x}, "
                f"second-level view {s0:#010x}-{s1:#010x}"
            )
        else:
            label += f"does not fit ({d['reason']})"
        parts.append(_t(left + 18, ly, label, 11))
    height = ly + 24
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height:.0f}" '
        f'viewBox="0 0 {_W} {height:.0f}" font-family="monospace">'
    )
    background = f'<rect width="{_W}" height="{height:.0f}" fill="#fafafa"/>'
    return "\n".join([head, background, *parts, "</svg>"]) + "\n"


# --- the command -------------------------------------------------------------------------------


def _layout(args: argparse.Namespace) -> int:
    rows = memory_map()
    slots = slot_map(args.ram)
    if args.svg is not None:
        try:
            Path(args.svg).write_text(svg(rows, slots), encoding="utf-8")
        except OSError as exc:
            raise RangeError(f"cannot write {args.svg}: {exc.strerror}") from None
    if args.json:
        print(json.dumps({"memory_map": rows, "vlpt": slots}, indent=2))
    else:
        print(_text(rows, slots))
        if args.svg is not None:
            print(f"\nSVG written to {args.svg}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``layout`` to the command's sub-parsers."""
    p = sub.add_parser(
        "layout",
        help="print Xen's hyp memory map and the VLPT slot map for given guest sizes",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "ram",
        nargs="*",
        type=parse_size,
        default=[4 << 30, 2 << 30, 1 << 30],
        help="RAM of each log-dirty guest, in enable order (default: 4G 2G 1G)",
    )
    p.add_argument("--svg", metavar="FILE", help="also write the picture as SVG")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_layout)
