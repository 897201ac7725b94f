"""Golden vectors: what vaalloc computes, written down so that a C port can check itself.

A port of the allocator or of the VLPT arithmetic into a hypervisor cannot import vaalloc, but
it can replay files.  :func:`write_vectors` writes, into one directory:

``manifest.json``
    the format version, the vaalloc version, the seed, and every file with its kind and the
    number of checks it holds (see "Checks" below).
``alloc-<name>.json``
    an allocator op trace with the expected result of every op, one file per policy
    (``first-fit``, ``best-fit``, ``instant-fit``) and for Xen's ``vm_alloc`` placement
    (``xen_vmap`` over Xen's real vmap region, ``xen_vmap-grow`` over a small region whose
    bitmap has to grow, so ``vm_top`` moves and requests fail).
``alloc-xen_vmap*.txt``
    the same Xen traces as text, one op per line, for a C reader (format below).
``walk-<format>.json``
    page-table walks per translation format: the table memory (every non-zero descriptor) and
    a list of accesses with the expected translation or fault.
``vlpt.json`` / ``vlpt.txt``
    VLPT address computations: for a slot run and an IPA, the hyp VA of the p2m leaf
    (``third``) and of the level-2 entry (``second``), or that the IPA is outside the run.
``vaalloc_xen.h``
    a C header with the layout constants of :mod:`vaalloc.xen.layout` and the VLPT address
    macros, so the port starts from the same numbers.

Conventions.  In JSON, addresses and descriptors are hex strings (``"0x10007000"``: 64-bit
values do not survive every JSON reader as numbers); counts, sizes in granules, levels and
alignments are plain integers.  In the text files every line is one record, fields separated
by spaces, numbers in C syntax (``0x`` hex or decimal), ``-`` for "fails", ``#`` starts a
comment.  Alloc text records::

    allocator xen_vmap START END GRANULE VM_LOW VM_TOP VM_END   (first record: the boot state)
    alloc NR ALIGN EXPECT VM_LOW VM_TOP     EXPECT = address, or '-' for OutOfSpace
    free VA EXPECT VM_LOW VM_TOP            EXPECT = granules freed, or '-' (Xen refuses it)

``VM_LOW``/``VM_TOP`` are the values after the op.  They match Xen's except after a failed
alloc: Xen keeps the bitmap pages it mapped while searching (``vm_top`` stays grown), vaalloc
undoes them (a failed call changes nothing).  Placement is the same either way because
``vm_top`` only bounds the last hole.  VLPT text records::

    third FIRST_SLOT FIRST_GB NR IPA EXPECT               EXPECT = hyp VA, or '-'
    second LOOP_SLOT FIRST_SLOT FIRST_GB NR IPA EXPECT

Checks.  A file's ``checks`` count is the number of expected values a replay compares with
what it computed, the same count ``examples/c_port/replay.c`` prints for a text file: a Xen
alloc trace holds 3 for the boot state (``vm_low``, ``vm_top``, ``vm_end``) and 3 per op (the
result, ``vm_low``, ``vm_top``); a policy alloc trace 1 per op (the result); a walk file 1 per
case (its translation or fault); a VLPT file 2 per case (``third`` and ``second``).

Everything is a pure function of the seed: the same seed writes byte-identical files.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import vaalloc
from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvalidFree, OutOfSpace, RangeError
from vaalloc.lpae import (
    AARCH64_S1_48,
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    Format,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S2Attrs,
    Translation,
    aarch64_s2,
)
from vaalloc.xen import layout
from vaalloc.xen.lookup import new_window
from vaalloc.xen.vlptmath import second_va, third_va

__all__ = [
    "FORMAT",
    "alloc_checks",
    "alloc_text",
    "alloc_trace",
    "c_header",
    "vlpt_case",
    "vlpt_cases",
    "vlpt_text",
    "walk_cases",
    "write_vectors",
]

#: The ``format`` field of ``manifest.json``; bumped when a file's meaning changes.
FORMAT = "vaalloc-vectors/1"

Progress = Callable[[str, int, int], None]

_POLICIES = ("first-fit", "best-fit", "instant-fit")
# Xen's real vmap region (256MB..1GB) and a small one (256MB) whose bitmap must grow.
_XEN_REGIONS = {
    "xen_vmap": (layout.VMAP_VIRT_START, layout.VMAP_VIRT_END),
    "xen_vmap-grow": (0x1000_0000, 0x2000_0000),
}
_WALK_FORMATS: tuple[Format, ...] = (
    ARMV7_S1,
    ARMV7_S1_PL1,
    ARMV7_S2_40,
    AARCH64_S1_48,
    aarch64_s2(40),
)


def _check_seed(seed: object, what: str) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RangeError(f"{what}: seed={seed!r} is not an int")


def _check_count(value: object, what: str, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RangeError(f"{what}: {name}={value!r} is not an int >= 0")


def _hex(value: int) -> str:
    return f"{value:#x}"


# --- allocator traces ---------------------------------------------------------------------


def _xen_state(a: RangeAllocator) -> dict[str, int]:
    return {"vm_low": a.vm_low, "vm_top": a.vm_top}


def _pick_size(rng: random.Random, grow: bool) -> int:
    """Mostly small runs, sometimes a large one (that is what moves vm_top and fills holes);
    ``grow`` traces ask for large runs often enough to fill their small region."""
    roll = rng.random()
    small, medium = (0.5, 0.8) if grow else (0.75, 0.95)
    if roll < small:
        return rng.randint(1, 16)
    if roll < medium:
        return rng.randint(17, 512 if grow else 256)
    return rng.randint(257, 4096 if grow else 1024)


def _pick_align(rng: random.Random, xen: bool) -> int:
    choices = [1, 1, 1, 1, 2, 4, 8, 64]
    if xen:
        choices.append(12)  # not a power of two: Xen uses its lowest set bit (4)
    return rng.choice(choices)


def alloc_trace(name: str, ops: int, seed: int) -> dict[str, Any]:
    """One allocator op trace with the expected result of every op, as a JSON-ready dict.

    ``name`` is a policy (``"first-fit"``, ``"best-fit"``, ``"instant-fit"``: an instance with
    guard pages over Xen's vmap region) or ``"xen_vmap"`` / ``"xen_vmap-grow"`` (Xen placement
    over the real region, or over a small one where large requests make the bitmap grow and
    eventually fail).  About 60% of the ops allocate, the rest free a live run; one free in
    twenty names an address that is not the start of a live run (the expected result is a
    refusal); the ``xen_vmap-grow`` trace allocates 75% of the time.  Xen traces record
    ``vm_low``/``vm_top`` after each op.

    Cost: O(ops log n).  Raises RangeError for an unknown ``name``, an ``ops`` that is not an
    int >= 1 or a ``seed`` that is not an int.
    """
    _check_seed(seed, "alloc_trace")
    if isinstance(ops, bool) or not isinstance(ops, int) or ops < 1:
        raise RangeError(f"alloc_trace({name!r}): ops={ops} must be at least 1")
    xen = name in _XEN_REGIONS
    if xen:
        start, end = _XEN_REGIONS[name]
        a = RangeAllocator.xen_vmap(start, end)
        header: dict[str, Any] = {"kind": "xen_vmap"}
    elif name in _POLICIES:
        start, end = layout.VMAP_VIRT_START, layout.VMAP_VIRT_END
        a = RangeAllocator(start, end, policy=name, guard=True, name=name)
        header = {"kind": "range", "policy": name, "guard": True}
    else:
        raise RangeError(f"alloc_trace: unknown allocator {name!r}")
    header.update(start=_hex(start), end=_hex(end), granule=a.granule)
    if xen:
        header.update(_xen_state(a), vm_end=(end - start) // a.granule)
    rng = random.Random(f"{seed}:{name}")
    grow = name == "xen_vmap-grow"
    p_alloc = 0.75 if grow else 0.6
    live: list[int] = []
    records: list[dict[str, Any]] = []
    for _ in range(ops):
        if not live or rng.random() < p_alloc:
            records.append(_alloc_op(a, rng, grow, xen, live))
        else:
            records.append(_free_op(a, rng, live))
        if xen:
            records[-1].update(_xen_state(a))
    a.check()
    return {
        "format": FORMAT,
        "name": name,
        "seed": seed,
        "allocator": header,
        "ops": records,
        "final": {"allocations": [[_hex(va), nr] for va, nr in a.allocations()]},
    }


def _alloc_op(
    a: RangeAllocator, rng: random.Random, grow: bool, xen: bool, live: list[int]
) -> dict[str, Any]:
    nr, align = _pick_size(rng, grow), _pick_align(rng, xen)
    rec: dict[str, Any] = {"op": "alloc", "nr": nr, "align": align}
    try:
        va = a.alloc(nr, align)
    except OutOfSpace:
        rec.update(result=None, error="OutOfSpace")
        return rec
    live.append(va)
    rec.update(result=_hex(va), error=None)
    return rec


def _free_op(a: RangeAllocator, rng: random.Random, live: list[int]) -> dict[str, Any]:
    va = live[rng.randrange(len(live))]
    if rng.random() < 0.05:
        # The granule after a live start: inside a run (or its guard), never a live start.
        bad = va + a.granule
        rec: dict[str, Any] = {"op": "free", "va": _hex(bad)}
        try:
            a.free(bad)
        except InvalidFree:
            rec.update(result=None, error="InvalidFree")
            return rec
        raise AssertionError(f"free({bad:#x}) of a non-start succeeded")  # pragma: no cover
    live.remove(va)
    return {"op": "free", "va": _hex(va), "result": a.free(va), "error": None}


def alloc_text(trace: dict[str, Any]) -> str:
    """The text form of a Xen alloc trace (see the module docstring). Raises RangeError for
    a trace that is not a ``xen_vmap`` one, or not an :func:`alloc_trace` at all."""
    try:
        return _alloc_text(trace)
    except (KeyError, TypeError, AttributeError, ValueError):
        raise RangeError(f"alloc_text: {trace!r:.80} is not an alloc_trace") from None


def _alloc_text(trace: dict[str, Any]) -> str:
    head = trace["allocator"]
    if head["kind"] != "xen_vmap":
        raise RangeError(f"alloc_text: trace {trace['name']!r} is not a xen_vmap trace")
    lines = [
        f"# vaalloc {vaalloc.__version__}: Xen vm_alloc/vm_free trace {trace['name']!r}, "
        f"seed {trace['seed']}",
        "# alloc NR ALIGN EXPECT VM_LOW VM_TOP | free VA EXPECT VM_LOW VM_TOP ('-' = fails)",
        f"allocator xen_vmap {head['start']} {head['end']} {head['granule']:#x} "
        f"{head['vm_low']} {head['vm_top']} {head['vm_end']}",
    ]
    for op in trace["ops"]:
        result = op["result"]
        shown = "-" if result is None else str(result)
        if op["op"] == "alloc":
            lines.append(f"alloc {op['nr']} {op['align']} {shown} {op['vm_low']} {op['vm_top']}")
        else:
            lines.append(f"free {op['va']} {shown} {op['vm_low']} {op['vm_top']}")
    return "\n".join(lines) + "\n"


# --- page walks ---------------------------------------------------------------------------


def _attrs_for(fmt: Format, rng: random.Random) -> S1Attrs | S2Attrs:
    """A random but legal leaf template: read-only, no-exec, user or AF=0 now and then."""
    af = rng.random() > 0.1
    xn = rng.random() < 0.3
    if fmt.stage == 2:
        return S2Attrs(s2ap=rng.choice([1, 2, 3, 3]), af=af, xn=xn, sw=rng.randrange(16))
    return S1Attrs(
        ap=rng.randrange(4), af=af, xn=xn, pxn=fmt.regime == "el1&0" and rng.random() < 0.2
    )


def _build_tables(fmt: Format, rng: random.Random) -> tuple[PhysicalMemory, PageTable, list[int]]:
    """Tables with a 1GB block (where the format allows one at level 1), two 2MB blocks and two
    runs of 4KB pages in different tables, each run with its own random attributes; returns
    the memory, the table and the start of every run."""
    mem = PhysicalMemory(pa_bits=fmt.oa_bits)
    pt = PageTable(mem, fmt)
    gb, mb2, kb4 = 1 << 30, 1 << 21, 1 << 12
    runs = [
        (2 * gb + rng.randrange(256) * mb2, 0x8000_0000 + rng.randrange(64) * mb2, 2 * mb2),
        (3 * gb + rng.randrange(1, 256) * mb2 + rng.randrange(1, 400) * kb4, 0x1000_0000, 40 * kb4),
        (3 * gb + 512 * (1 << 20) + rng.randrange(256) * kb4, 0x2000_0000, 3 * kb4),
    ]
    if fmt.can_block(1):
        runs.insert(0, (gb, gb, gb))
    for va, pa, size in runs:
        pt.map(va, pa, size, _attrs_for(fmt, rng))
    return mem, pt, [va for va, _, _ in runs]


def walk_cases(fmt: Format, cases: int, seed: int) -> dict[str, Any]:
    """Page walks of one format with the expected outcome of each, as a JSON-ready dict.

    Builds tables with blocks and pages of random attributes, then walks ``cases`` addresses
    (inside the runs, at their edges, and elsewhere) with every access and, for an EL1&0
    regime, both privileges.  ``memory`` lists every non-zero descriptor as
    ``[pa, value]`` hex pairs; ``root`` is the table base to start from.  Each case holds
    ``va``, ``access``, ``user`` and either ``translation`` (``pa``, ``level``,
    ``descriptor``, ``block_size``, ``readable``, ``writable``, ``executable``) or ``fault``
    (``kind``, ``level``).  Cost: O(cases) walks.  Raises RangeError for a ``fmt`` that is
    not a Format, a ``cases`` that is not an int >= 0 or a ``seed`` that is not an int.
    """
    if not isinstance(fmt, Format):
        raise RangeError(f"walk_cases: fmt={fmt!r} is not a Format")
    _check_count(cases, "walk_cases", "cases")
    _check_seed(seed, "walk_cases")
    rng = random.Random(f"{seed}:walk:{fmt.name}")
    mem, pt, starts = _build_tables(fmt, rng)
    limit = 1 << 32  # every run lies in the first 4GB, which every format translates
    records: list[dict[str, Any]] = []
    for _ in range(cases):
        if rng.random() < 0.8:
            va = rng.choice(starts) + rng.randrange(-2, 48) * 4096 + rng.randrange(512) * 8
            va = min(max(va, 0), limit - 8)
        else:
            va = rng.randrange(limit) & ~7
        access = rng.choice(("read", "write", "exec"))
        user = fmt.regime == "el1&0" and rng.random() < 0.5
        records.append(_walk_record(pt, va, access, user))
    memory = [
        [_hex(pa + 8 * i), _hex(word)]
        for pa, data in sorted(mem.frames())
        for i, word in _nonzero_words(data)
    ]
    return {
        "format": FORMAT,
        "translation_format": _format_dict(fmt),
        "root": _hex(pt.root),
        "memory": memory,
        "cases": records,
    }


def _nonzero_words(data: bytes) -> Iterator[tuple[int, int]]:
    for i in range(0, len(data), 8):
        word = int.from_bytes(data[i : i + 8], "little")
        if word:
            yield i // 8, word


def _format_dict(fmt: Format) -> dict[str, Any]:
    return {
        "name": fmt.name,
        "arch": fmt.arch,
        "stage": fmt.stage,
        "regime": fmt.regime,
        "granule": fmt.granule,
        "ia_bits": fmt.ia_bits,
        "oa_bits": fmt.oa_bits,
        "start_level": fmt.start_level,
    }


def _walk_record(pt: PageTable, va: int, access: str, user: bool) -> dict[str, Any]:
    t = pt.walk(va, access=access, user=user)
    rec: dict[str, Any] = {"va": _hex(va), "access": access, "user": user}
    if isinstance(t, Translation):
        rec["translation"] = {
            "pa": _hex(t.pa),
            "level": t.level,
            "descriptor": _hex(t.descriptor),
            "block_size": t.block_size,
            "readable": t.readable,
            "writable": t.writable,
            "executable": t.executable,
        }
    else:
        rec["fault"] = {"kind": t.kind, "level": t.level}
    return rec


# --- VLPT arithmetic ------------------------------------------------------------------------


def vlpt_cases(cases: int, seed: int) -> dict[str, Any]:
    """VLPT address computations with expected results, as a JSON-ready dict.

    Each case is a slot run (``first_slot``, ``first_gb``, ``nr``: ``nr`` window slots from
    ``first_slot`` showing gigabytes ``first_gb ..`` of IPA) and an IPA, with ``third`` (hyp
    VA of the p2m leaf translating the IPA) and ``second`` (hyp VA of the level-2 entry, read
    through loop slot ``loop_slot``), both ``null`` when the IPA is outside the run.  The
    runs are the ones the model's window allocator hands out for domains of random sizes;
    one case in eight has an IPA just outside its run.  Cost: O(cases).  Raises RangeError
    for a ``cases`` that is not an int >= 0 or a ``seed`` that is not an int.
    """
    _check_count(cases, "vlpt_cases", "cases")
    _check_seed(seed, "vlpt_cases")
    rng = random.Random(f"{seed}:vlpt")
    window = new_window()
    records: list[dict[str, Any]] = []
    runs: list[tuple[int, int, int]] = []
    while len(records) < cases:
        gbs = rng.choice((1, 1, 2, 3, 4, 8))
        try:
            va = window.alloc(gbs)
        except OutOfSpace:
            for live_va, _ in list(window.allocations()):
                if live_va != layout.VLPT_LOOP_VA:
                    window.free(live_va)
            continue
        # Guests start at 2GB of IPA; other first gigabytes exercise the general formula.
        first_gb = layout.GUEST_RAM_BASE >> layout.FIRST_SHIFT
        if rng.random() < 0.5:
            first_gb = rng.randrange(16)
        runs.append((va >> layout.SECOND_SHIFT, first_gb, gbs))
        for _ in range(4):
            records.append(_vlpt_record(rng, *runs[-1]))
    return {
        "format": FORMAT,
        "loop_slot": layout.VLPT_LOOP_SLOT,
        "cases": records[:cases],
    }


def _vlpt_record(rng: random.Random, first_slot: int, first_gb: int, nr: int) -> dict[str, Any]:
    lo = first_gb << layout.FIRST_SHIFT
    hi = (first_gb + nr) << layout.FIRST_SHIFT
    if rng.random() < 0.125:
        ipa = rng.choice((lo - layout.PAGE_SIZE, hi, hi + rng.randrange(1 << 30)))
    else:
        ipa = rng.randrange(lo, hi) & ~(layout.PAGE_SIZE - 1)
    return vlpt_case(first_slot, first_gb, nr, max(ipa, 0))


def vlpt_case(first_slot: int, first_gb: int, nr: int, ipa: int) -> dict[str, Any]:
    """One VLPT vector: the run, the IPA, and the expected ``third``/``second`` hyp VAs (hex
    strings, both ``None`` when ``ipa`` is outside the run), as :func:`vlpt_cases` writes it.

    Raises RangeError if the run does not lie inside the window (not a vector: a bad call)
    or an argument is not an int.
    """
    for name, value in (("first_slot", first_slot), ("first_gb", first_gb), ("nr", nr)):
        _check_count(value, "vlpt_case", name)
    if isinstance(ipa, bool) or not isinstance(ipa, int):
        raise RangeError(f"vlpt_case: ipa={ipa!r} is not an int")
    rec: dict[str, Any] = {
        "first_slot": first_slot,
        "first_gb": first_gb,
        "nr": nr,
        "ipa": _hex(ipa),
    }
    lo = first_gb << layout.FIRST_SHIFT
    if not lo <= ipa < lo + (nr << layout.FIRST_SHIFT):
        third_va(first_slot, first_gb, nr, lo)  # still refuse a run outside the window
        rec["third"] = rec["second"] = None
        return rec
    rec["third"] = _hex(third_va(first_slot, first_gb, nr, ipa))
    rec["second"] = _hex(second_va(layout.VLPT_LOOP_SLOT, first_slot, first_gb, nr, ipa))
    return rec


def vlpt_text(vectors: dict[str, Any]) -> str:
    """The text form of :func:`vlpt_cases` (see the module docstring). Raises RangeError for
    something that is not a :func:`vlpt_cases` result."""
    try:
        return _vlpt_text(vectors)
    except (KeyError, TypeError, AttributeError):
        raise RangeError(f"vlpt_text: {vectors!r:.80} is not a vlpt_cases result") from None


def _vlpt_text(vectors: dict[str, Any]) -> str:
    loop = vectors["loop_slot"]
    lines = [
        f"# vaalloc {vaalloc.__version__}: VLPT address computations ('-' = outside the run)",
        "# third FIRST_SLOT FIRST_GB NR IPA EXPECT | second LOOP FIRST_SLOT FIRST_GB NR IPA EXPECT",
    ]
    for c in vectors["cases"]:
        run = f"{c['first_slot']} {c['first_gb']} {c['nr']} {c['ipa']}"
        lines.append(f"third {run} {c['third'] or '-'}")
        lines.append(f"second {loop} {run} {c['second'] or '-'}")
    return "\n".join(lines) + "\n"


# --- the C header ---------------------------------------------------------------------------

_HEADER_MACROS = """\
/* Hyp VA mapped by xen_second[slot]. */
#define VAALLOC_SLOT_VA(slot) ((uint32_t)(slot) << VAALLOC_SECOND_SHIFT)

/* Hyp VA of the p2m level-3 entry (leaf) translating ipa, for a run of window slots starting
 * at first_slot that shows gigabytes first_gb.. of IPA (the caller checks ipa is in the run). */
#define VAALLOC_VLPT_THIRD_VA(first_slot, first_gb, ipa)                                  \\
    (VAALLOC_SLOT_VA(first_slot) +                                                        \\
     (uint32_t)((((uint64_t)(ipa) - ((uint64_t)(first_gb) << VAALLOC_FIRST_SHIFT))        \\
                 >> VAALLOC_PAGE_SHIFT) * VAALLOC_PTE_SIZE))

/* Hyp VA of the p2m level-2 entry covering ipa, read through the loop slot: the page that
 * xen_second[slot] points at appears at loop_va + slot * 4KB. */
#define VAALLOC_VLPT_SECOND_VA(loop_slot, first_slot, first_gb, ipa)                       \\
    (VAALLOC_SLOT_VA(loop_slot) +                                                         \\
     (((uint32_t)(first_slot) + (uint32_t)(((uint64_t)(ipa) >> VAALLOC_FIRST_SHIFT)      \\
                                           - (uint64_t)(first_gb))) & VAALLOC_LPAE_ENTRY_MASK) \\
         * VAALLOC_PAGE_SIZE +                                                            \\
     (uint32_t)((((uint64_t)(ipa) >> VAALLOC_SECOND_SHIFT) & VAALLOC_LPAE_ENTRY_MASK)       \\
                * VAALLOC_PTE_SIZE))
"""


def c_header() -> str:
    """A C header with every integer constant of :mod:`vaalloc.xen.layout` (prefixed
    ``VAALLOC_``, unsigned 64-bit literals) and the VLPT address macros
    ``VAALLOC_SLOT_VA``, ``VAALLOC_VLPT_THIRD_VA`` and ``VAALLOC_VLPT_SECOND_VA``."""
    lines = [
        f"/* Generated by `vaalloc vectors` (vaalloc {vaalloc.__version__}): do not edit. */",
        "/* Xen-on-ARM32 layout constants and VLPT address arithmetic, from vaalloc.xen. */",
        "#ifndef VAALLOC_XEN_H",
        "#define VAALLOC_XEN_H",
        "",
        "#include <stdint.h>",
        "",
    ]
    for name in sorted(vars(layout)):
        value = getattr(layout, name)
        if name.isupper() and type(value) is int and value >= 0:
            shown = f"{value}" if value < 0x10000 else f"{value:#x}"
            lines.append(f"#define VAALLOC_{name} {shown}ULL")
    lines += ["", _HEADER_MACROS, "#endif /* VAALLOC_XEN_H */", ""]
    return "\n".join(lines)


# --- writing a directory ----------------------------------------------------------------------


def alloc_checks(trace: dict[str, Any]) -> int:
    """The expected values of an alloc trace that a replay compares (module docstring,
    "Checks"): for a Xen trace, the three boot values then, per op, the result, ``vm_low`` and
    ``vm_top``; for a policy trace, the result of each op."""
    if trace["allocator"]["kind"] == "xen_vmap":
        return 3 + 3 * len(trace["ops"])
    return len(trace["ops"])


def _dump(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def write_vectors(
    directory: str | Path,
    *,
    seed: int = 1,
    ops: int = 400,
    walks: int = 200,
    vlpt: int = 400,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the golden vectors into ``directory`` (created if missing) and return the
    manifest (also written as ``manifest.json``).

    ``ops`` is the length of each allocator trace, ``walks`` the walks per format, ``vlpt``
    the VLPT cases.  ``progress(step, done, total)`` is called after each file.  The output
    is a pure function of the arguments.  Cost: O(ops log n + walks + vlpt).

    Raises RangeError for a count below 1, a ``directory`` that is not a str or Path, a
    ``seed`` that is not an int or a ``progress`` that is not callable, and ``OSError`` (not
    a vaalloc error) when the directory cannot be written.
    """
    if not isinstance(directory, (str, Path)):
        raise RangeError(f"write_vectors: directory={directory!r} is not a str or Path")
    _check_seed(seed, "write_vectors")
    if progress is not None and not callable(progress):
        raise RangeError(f"write_vectors: progress={progress!r} is not callable")
    for label, count in (("ops", ops), ("walks", walks), ("vlpt", vlpt)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise RangeError(f"write_vectors: {label}={count!r} must be an int of at least 1")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    names = [*_POLICIES, *_XEN_REGIONS]
    total = len(names) + len(_WALK_FORMATS) + 2
    done = 0

    def step(label: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(label, done, total)

    for name in names:
        trace = alloc_trace(name, ops, seed)
        checks = alloc_checks(trace)
        _dump(out / f"alloc-{name}.json", trace)
        files[f"alloc-{name}.json"] = {"kind": "alloc", "checks": checks}
        if name in _XEN_REGIONS:
            (out / f"alloc-{name}.txt").write_text(alloc_text(trace), encoding="utf-8")
            files[f"alloc-{name}.txt"] = {"kind": "alloc-text", "checks": checks}
        step(f"alloc {name}")
    for fmt in _WALK_FORMATS:
        data = walk_cases(fmt, walks, seed)
        _dump(out / f"walk-{fmt.name}.json", data)
        files[f"walk-{fmt.name}.json"] = {"kind": "walk", "checks": len(data["cases"])}
        step(f"walk {fmt.name}")
    v = vlpt_cases(vlpt, seed)
    _dump(out / "vlpt.json", v)
    (out / "vlpt.txt").write_text(vlpt_text(v), encoding="utf-8")
    files["vlpt.json"] = {"kind": "vlpt", "checks": 2 * len(v["cases"])}
    files["vlpt.txt"] = {"kind": "vlpt-text", "checks": 2 * len(v["cases"])}
    step("vlpt")
    (out / "vaalloc_xen.h").write_text(c_header(), encoding="utf-8")
    files["vaalloc_xen.h"] = {"kind": "c-header", "checks": 0}
    step("header")
    manifest = {
        "format": FORMAT,
        "vaalloc": vaalloc.__version__,
        "seed": seed,
        "files": files,
    }
    _dump(out / "manifest.json", manifest)
    return manifest
