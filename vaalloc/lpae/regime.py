"""A single-stage translation regime as the MMU runs it: its tables, its tag, and its lookup.

Two regimes translate in one stage: the hyp regime (HTTBR / TTBR0_EL2, Xen's own tables) and a
guest whose stage 1 is off (VTTBR: IPA -> PA).  Both are what the Xen model runs millions of
times, so for each one :func:`build_lookup` writes out, once per regime, the whole access as
one Python function (the way :mod:`vaalloc.lpae.fastwalk` writes out a walk)::

    lookup(addr, access_bit) -> PA, or REFUSED (-1) when the permissions refuse the access

1. *TLB probe*: the regime's bucket of the smallest leaf size first (a dict from block number
   to :class:`~vaalloc.lpae.tlb.TLBEntry`, bound once: one shift and one dict probe), the
   buckets of block sizes only while they hold something; a hit counts ``hits`` and, under LRU
   replacement, refreshes the entry.
2. *Miss*: count ``misses``, walk (the success path unrolled per level with the format's
   constants; anything unusual re-walks with the careful compiled walker, which reports the
   exact fault), count the descriptors read, build the entry, fill it, answer.

The same template also writes :data:`LookupMany`, the batch: the probe and the unrolled walk
inside the loop over the addresses, the counters kept in locals and added once.

A translation, access-flag or address-size fault raises :class:`~vaalloc.lpae.walk.FaultError`
(nothing cached, as on hardware); a permission refusal returns :data:`REFUSED`, so that a
hypervisor's abort handler (Xen's log-dirty fault) decides what to do without an exception.
The function checks nothing about its arguments on the hit path: the MMU's public methods, the
boundary, pass an int address (any other type raises TypeError from the key arithmetic, which
they report as RangeError) and a valid access bit.  An address outside the regime can never
hit (its key matches no entry), and the miss path range-checks it.

The readable reference of every step is :func:`vaalloc.lpae.walk.walk`; the test-suite checks
the MMU against it on random tables, every fault kind, hit and miss.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

from vaalloc.errors import RangeError
from vaalloc.lpae._checks import shown
from vaalloc.lpae.fastwalk import LeafFn, leaf_fn, root_frame_ok, success_path_lines
from vaalloc.lpae.geometry import Format
from vaalloc.lpae.memory import PhysicalMemory
from vaalloc.lpae.tlb import BLOCK_SHIFT, HYP, S2, TLB, TLBEntry, bucket_id
from vaalloc.lpae.walk import Fault, FaultError, Geometry, geometry_of, permission_lines

__all__ = ["REFUSED", "Counters", "Lookup", "LookupMany", "Regime", "build_lookup"]

#: What a lookup returns when the leaf's permissions refuse the access.
REFUSED: Final = -1

#: ``lookup(addr, access_bit) -> PA or REFUSED``; raises FaultError for any other fault.
Lookup = Callable[[int, int], int]

#: ``lookup_many(addrs, access_bit, refused) -> PAs``: ``[lookup(a) for a in addrs]`` with the
#: same effects, the walk inlined into the loop and the counters added once; the first refusal
#: raises ``refused(addr, access_bit)`` (an exception), any other fault FaultError.  The
#: addresses must be checked ints in ``[0, ia_reg_limit)``: the batch trusts them.
LookupMany = Callable[[Iterable[int], int, Callable[[int, int], Exception]], list[int]]

#: ``check(addr, entry, access_bit)``: the stale-entry detector, run on every hit when enabled.
HitCheck = Callable[[int, TLBEntry, int], None]

_NAMES = {1: "read", 2: "write", 4: "exec"}


class Counters(Protocol):
    """What a lookup counts into (the MMU)."""

    hits: int
    misses: int
    walk_reads: int


class Regime:
    """One configured regime: ``fmt`` and its ``geo``, table base ``root``, entry ``kind``
    (:data:`~vaalloc.lpae.tlb.HYP`, :data:`~vaalloc.lpae.tlb.S2`, or GUEST for a guest stage 1),
    ``tag`` (VMID for stage 2, ASID for a guest stage 1, 0 for hyp) and, for a single-stage
    regime, its ``lookup``.  Built by the MMU's ``set_*`` calls."""

    __slots__ = ("fmt", "geo", "kind", "leaf", "lookup", "lookup_many", "root", "tag")

    def __init__(self, fmt: Format, root: int, kind: int, tag: int) -> None:
        self.fmt = fmt
        self.geo: Geometry = geometry_of(fmt)
        self.root = root
        self.kind = kind
        self.tag = tag
        self.leaf: LeafFn = leaf_fn(self.geo)
        self.lookup: Lookup = _unbound
        self.lookup_many: LookupMany = _unbound_many

    @property
    def shifts(self) -> tuple[int, ...]:
        """log2 of the leaf sizes, smallest first (the probe order)."""
        return self.geo.leaf_shifts

    def key(self, addr: int, shift: int, asid: int | None = None) -> int:
        """The TLB key of this regime's entry for the ``1 << shift`` block holding ``addr``."""
        vmid = self.tag if self.kind != HYP else 0
        return (addr >> shift) << BLOCK_SHIFT | bucket_id(self.kind, shift, vmid, asid)


def _unbound(addr: int, access: int) -> int:
    raise AssertionError("a regime without a lookup (a guest stage 1) was asked to translate")


def _unbound_many(
    addrs: Iterable[int], access: int, refused: Callable[[int, int], Exception]
) -> list[int]:
    raise AssertionError("a regime without a lookup (a guest stage 1) was asked to translate")


def build_lookup(
    regime: Regime,
    mem: PhysicalMemory,
    tlb: TLB,
    counters: Counters,
    check_hit: HitCheck | None,
) -> tuple[Lookup, LookupMany]:
    """The generated :data:`Lookup` of a single-stage ``regime`` (see the module docstring)
    and its batch form, :data:`LookupMany`, bound to ``mem``, ``tlb`` (the regime's buckets)
    and ``counters``; ``check_hit`` (the stale detector) runs on every hit when given.  The
    source is compiled once per format and variant and cached; binding it to a regime (a
    context switch) costs two closures."""
    geo = regime.geo
    aligned = root_frame_ok(geo, regime.root)
    variant = (geo, regime.kind, tlb.capacity > 0, tlb.lru, check_hit is not None, aligned)
    factory = _FACTORIES.get(variant)
    if factory is None:
        factory = _FACTORIES[variant] = _compile(*variant)
    vmid = regime.tag if regime.kind == S2 else 0
    bids = [bucket_id(regime.kind, shift, vmid) for shift in geo.leaf_shifts]
    lookup, many = factory(
        counters,
        tlb.fill,
        tlb.refresh,
        mem.storage,
        regime.root,
        bids,
        [tlb.bucket(bid) for bid in bids],
        regime.leaf,
        check_hit,
    )
    return lookup, many


_FACTORIES: dict[tuple[Geometry, int, bool, bool, bool, bool], Any] = {}


class _Style:
    """How generated access code delivers its answer and counts: one access returning it
    (``lookup``), or an item of a batch appending it (``lookup_many``, counting in locals that
    are added to the counters once, at the end)."""

    def __init__(self, batch: bool) -> None:
        self.batch = batch

    def count(self, name: str, n: int | str) -> str:
        return f"{name} += {n}" if self.batch else f"counters.{name} += {n}"

    def answer(self, indent: str, value: str) -> list[str]:
        if self.batch:
            return [f"{indent}append({value})", f"{indent}continue"]
        return [f"{indent}return {value}"]

    def refuse(self, indent: str) -> list[str]:
        if self.batch:
            return [f"{indent}raise refused(va, a)"]
        return [f"{indent}return {REFUSED}"]


def _entry_lines(
    geo: Geometry, level: int, indent: str, cache: bool, stage2: bool, style: _Style
) -> list[str]:
    """Source for a valid leaf ``d`` found at ``level`` by the unrolled walk: count the reads,
    build and cache the entry, answer."""
    shift = geo.shifts[level]
    low = (1 << shift) - 1
    lines = [
        indent + style.count("walk_reads", level - geo.start + 1),
        *permission_lines(geo, indent, tables=False),
        f"{indent}base = d & {geo.addr_mask & ~low}",
    ]
    if cache:
        k = geo.leaf_shifts.index(shift)
        # Stage 2 has one privilege level: the entry's unprivileged half is the same mask.
        perm = "m | m << 3" if stage2 else "m"
        lines.append(
            f"{indent}fill(bid{k}, va >> {shift}, E(base, {low}, {perm}, {level}, d, {shift}))"
        )
    return [
        *lines,
        f"{indent}if m & a:",
        *style.answer(indent + "    ", f"base | (va & {low})"),
        *style.refuse(indent),
    ]


def _hit_lines(k: int, shift: int, indent: str, lru: bool, stale: bool, style: _Style) -> list[str]:
    """Source for a hit on ``e`` in the bucket of leaf size ``k`` (``1 << shift`` bytes)."""
    lines = [indent + style.count("hits", 1)]
    if lru:
        lines.append(f"{indent}refresh(bid{k}, va >> {shift}, e)")
    if stale:
        lines.append(f"{indent}check_hit(va, e, a)")
    return [
        *lines,
        f"{indent}if e.perm & a:",
        *style.answer(indent + "    ", "e.base | (va & e.low)"),
        *style.refuse(indent),
    ]


def _probe_lines(geo: Geometry, indent: str, lru: bool, stale: bool, style: _Style) -> list[str]:
    """Source probing the buckets for ``va``, smallest leaf size first; a bucket of blocks is
    probed only once it holds something.  Falls through on a miss."""
    shifts = geo.leaf_shifts
    lines = [
        f"{indent}e = get0(va >> {shifts[0]})",
        f"{indent}if e is not None:",
        *_hit_lines(0, shifts[0], indent + "    ", lru, stale, style),
    ]
    for k, shift in enumerate(shifts[1:], start=1):
        lines += [
            f"{indent}if bucket{k}:",
            f"{indent}    e = bucket{k}.get(va >> {shift})",
            f"{indent}    if e is not None:",
            *_hit_lines(k, shift, indent + "        ", lru, stale, style),
        ]
    return lines


def _walk_lines(
    geo: Geometry, indent: str, cache: bool, stage2: bool, aligned: bool, style: _Style
) -> list[str]:
    """Source of the unrolled walk's success path from the root entry of ``va``; falls through
    (or raises KeyError, for an unpopulated frame) on anything the careful walk must report.
    ``aligned``: the root is aligned to its size, its entry read from frame ``r0`` directly."""

    def done(level: int, ind: str) -> list[str]:
        return _entry_lines(geo, level, ind, cache, stage2, style)

    if aligned:
        return success_path_lines(geo, indent, done, root_frame=True)
    return [
        f"{indent}slot = root + (((va >> {geo.shifts[geo.start]}) & {geo.root_mask}) << 3)",
        *success_path_lines(geo, indent, done),
    ]


def _source(geo: Geometry, kind: int, cache: bool, lru: bool, stale: bool, aligned: bool) -> str:
    stage2 = kind == S2
    ipa = "va" if stage2 else "None"
    fault = f"FaultError(Fault({{kind}}, {{level}}, va, stage={geo.fmt.stage}, ipa={ipa}, "
    fault += "access=NAMES[a]))"
    shifts = geo.leaf_shifts
    names = ", ".join(f"bid{k}" for k in range(len(shifts)))
    buckets = ", ".join(f"bucket{k}" for k in range(len(shifts)))
    one, many = _Style(batch=False), _Style(batch=True)
    lines = [
        "def factory(counters, fill, refresh, frames, root, bids, buckets, leaf, check_hit):",
        "    r0 = root >> 12",
        f"    {names}, = bids",
        f"    {buckets}, = buckets",
        "    get0 = bucket0.get",
        "",
        # miss: everything after a TLB miss, for one access.
        "    def miss(va, a):",
        f"        if va.__class__ is not int or not 0 <= va < {geo.ia_reg_limit}:",
        "            raise bad_address(va)",
        "        counters.misses += 1",
        f"        if va >= {geo.ia_limit}:",
        "            raise " + fault.format(kind="'translation'", level=geo.out_of_range_level),
        "        try:",
        *_walk_lines(geo, "            ", cache, stage2, aligned, one),
        "        except KeyError:",
        "            pass",
        # The careful walk: reports the exact fault, folds table attributes in.
        "        d, level, tbl, kind = leaf(frames, root, va)",
        f"        counters.walk_reads += level - {geo.start - 1}",
        "        if kind:",
        "            raise " + fault.format(kind="kind", level="level"),
        "        shift = SHIFTS[level]",
        "        low = (1 << shift) - 1",
        "        m = permissions(d, tbl)",
    ]
    if stage2:
        lines.append("        m |= m << 3")
    lines.append(f"        base = d & {geo.addr_mask} & ~low")
    if cache:
        lines.append(
            "        fill(bids[SIZES.index(shift)], va >> shift, E(base, low, m, level, d, shift))"
        )
    lines += [
        "        if m & a:",
        "            return base | (va & low)",
        f"        return {REFUSED}",
        "",
    ]
    if cache:
        lines += [
            "    def lookup(va, a):",
            *_probe_lines(geo, "        ", lru, stale, one),
            "        return miss(va, a)",
            "",
        ]
    else:
        lines += ["    lookup = miss", ""]
    # lookup_many: the same access for each item of a batch, the walk inlined, the counters
    # kept in locals; anything unusual goes through miss(), which counts for itself.  Its
    # caller (MMU.guest_pa_many) has checked every item is an int in [0, ia_reg_limit), so
    # only the bound of the translated range is left to test here.
    lines += [
        "    def lookup_many(vas, a, refused):",
        "        out = []",
        "        append = out.append",
        "        hits = misses = walk_reads = 0",
        "        try:",
        "            for va in vas:",
    ]
    if cache:
        lines += _probe_lines(geo, "                ", lru, stale, many)
    lines += [
        f"                if va < {geo.ia_limit}:",
        "                    misses += 1",
        "                    try:",
        *_walk_lines(geo, "                        ", cache, stage2, aligned, many),
        "                    except KeyError:",
        "                        pass",
        "                    misses -= 1  # miss() below counts this access itself",
        "                pa = miss(va, a)",
        "                if pa < 0:",
        "                    raise refused(va, a)",
        "                append(pa)",
        "        finally:",
        "            counters.hits += hits",
        "            counters.misses += misses",
        "            counters.walk_reads += walk_reads",
        "        return out",
        "",
        "    return lookup, lookup_many",
    ]
    return "\n".join(lines) + "\n"


def _bad_address(fmt: Format, kind: int) -> Callable[[object], RangeError]:
    what = "hyp virtual address" if kind == HYP else "IPA"

    def bad(va: object) -> RangeError:
        return RangeError(f"{shown(va)} is not a {fmt.ia_reg_bits}-bit {what} of {fmt.name}")

    return bad


def _compile(geo: Geometry, kind: int, cache: bool, lru: bool, stale: bool, aligned: bool) -> Any:
    namespace: dict[str, Any] = {
        "LUT": geo.lut,
        "PERMS": geo.leaf_perms,
        "SHIFTS": geo.shifts,
        "SIZES": geo.leaf_shifts,
        "Fault": Fault,
        "FaultError": FaultError,
        "NAMES": _NAMES,
        "E": TLBEntry,
        "permissions": geo.permissions,
        "bad_address": _bad_address(geo.fmt, kind),
    }
    source = _source(geo, kind, cache, lru, stale, aligned)
    name = (
        f"<lpae-lookup {geo.fmt.name} kind={kind} cache={cache} lru={lru} stale={stale} "
        f"aligned={aligned}>"
    )
    exec(compile(source, name, "exec"), namespace)
    return namespace["factory"]
