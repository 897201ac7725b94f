"""Walkers specialised per format, for the hot paths (TLB misses, ``translate_pa``).

:func:`vaalloc.lpae.walk.walk` is the readable reference: one loop, every step named, every
read recorded.  A Python loop over levels with per-level lookups of shifts and masks costs
about 2 us per walk, too slow for the half a million walks per second the Xen model needs.
So, once per :class:`~vaalloc.lpae.geometry.Format`, this module writes the same steps out as
straight-line Python source with the format's constants (shifts, masks, start level, output
size) inlined and the levels unrolled, and compiles it.  A C port would write the same
function by hand with ``#define``s.

Both generated functions are checked against the reference walk by the test-suite (random
tables, every fault kind), so the two cannot drift apart silently.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from typing import Any

from vaalloc.lpae.walk import Fault, FaultError, Geometry, permission_lines

__all__ = ["LeafFn", "TranslateFn", "leaf_fn", "translate_fn"]

LeafFn = Callable[[Mapping[int, "array[int]"], int, int], tuple[int, int, int, str]]
"""``leaf(frames, root, va) -> (desc, level, tbl, kind)``; ``kind == ""`` on success, with
``tbl`` the OR of the table descriptors above; else the fault kind at ``level``.  ``va`` must
already be below the input register width."""

TranslateFn = Callable[[Mapping[int, "array[int]"], int, int, int, bool], int]
"""``translate(frames, root, va, access_bit, user) -> pa``, raising FaultError."""

_FRAME_MASK = (1 << 36) - 1
_HIERARCHICAL = 0xF << 59  # PXNTable, XNTable, APTable
_LEAF_CACHE: dict[Geometry, LeafFn] = {}
_TRANSLATE_CACHE: dict[Geometry, TranslateFn] = {}


def _fault_source(level: int, translate: bool) -> str:
    """Source template (``{kind!r}`` to fill) that reports a fault at ``level``."""
    if translate:
        return (
            "raise FaultError(Fault({kind!r}, " + str(level) + ", va, stage=STAGE, access=NAME[a]))"
        )
    return "return (d, " + str(level) + ", tbl, {kind!r})"


def _leaf_lines(geo: Geometry, level: int, indent: str, translate: bool) -> list[str]:
    """Source for the checks on a leaf found at ``level`` (address size, AF, permissions)."""
    low = (1 << geo.shifts[level]) - 1
    fault = _fault_source(level, translate)
    lines = [
        f"{indent}if d & {geo.oa_excess}:",
        f"{indent}    " + fault.format(kind="address-size"),
        f"{indent}if not d & 1024:",
        f"{indent}    " + fault.format(kind="access-flag"),
    ]
    if not translate:
        lines.append(f"{indent}return (d, {level}, tbl, '')")
        return lines
    lines += permission_lines(geo, indent)
    lines += [
        f"{indent}if user:",
        f"{indent}    m >>= 3",
        f"{indent}if not m & a:",
        f"{indent}    " + fault.format(kind="permission"),
        f"{indent}return (d & {geo.addr_mask & ~low}) | (va & {low})",
    ]
    return lines


def _read_lines(
    geo: Geometry, level: int, indent: str, fast: bool, root_frame: bool = False
) -> list[str]:
    """Source loading descriptor ``d`` at ``level``; the previous level left its table
    descriptor in ``d`` (or ``slot`` is set, at the root; or, with ``root_frame``, ``r0`` is
    the first storage frame of a root aligned to its size, 4KB granule)."""
    if level == geo.start:
        if root_frame:
            shift = geo.shifts[level]
            pages = (geo.root_mask + 1) >> 9
            frame = "r0" if pages == 1 else f"r0 + ((va >> {shift + 9}) & {pages - 1})"
            return [f"{indent}d = frames[{frame}][(va >> {shift}) & 511]"]
        if fast:
            return [f"{indent}d = frames[slot >> 12][(slot >> 3) & 511]"]
        return [
            f"{indent}w = fget(slot >> 12)",
            f"{indent}d = 0 if w is None else w[(slot >> 3) & 511]",
        ]
    shift = geo.shifts[level]
    if fast and geo.table_mask == 511:  # 4KB tables: one storage frame, frame-aligned
        return [f"{indent}d = frames[(d >> 12) & {_FRAME_MASK}][(va >> {shift}) & 511]"]
    slot = f"{indent}slot = (d & {geo.addr_mask}) | (((va >> {shift}) & {geo.table_mask}) << 3)"
    if fast:  # 16KB/64KB tables span several 4KB storage frames
        return [slot, f"{indent}d = frames[slot >> 12][(slot >> 3) & 511]"]
    return [
        slot,
        f"{indent}w = fget(slot >> 12)",
        f"{indent}d = 0 if w is None else w[(slot >> 3) & 511]",
    ]


def _level_lines(geo: Geometry, level: int, indent: str, translate: bool, fast: bool) -> list[str]:
    """Source for reading and decoding the descriptor at ``level``."""
    fault = _fault_source(level, translate)
    lines = _read_lines(geo, level, indent, fast)
    lines += [f"{indent}if not d & 1:", f"{indent}    " + fault.format(kind="translation")]
    if level == 3:
        lines += [f"{indent}if not d & 2:", f"{indent}    " + fault.format(kind="translation")]
        return lines + _leaf_lines(geo, level, indent, translate)
    lines += [
        f"{indent}if d & 2:",
        f"{indent}    if d & {geo.oa_excess}:",
        f"{indent}        " + fault.format(kind="address-size"),
    ]
    if geo.stage1:
        lines.append(f"{indent}    tbl |= d")
    lines += _level_lines(geo, level + 1, indent + "    ", translate, fast)
    if level < geo.first_block:
        lines.append(f"{indent}" + fault.format(kind="translation"))
    else:
        lines += _leaf_lines(geo, level, indent, translate)
    return lines


#: ``done(level, indent)``: the source to run when the walk reached a valid leaf at ``level``
#: with AF=1, no output beyond the output size and no hierarchical table attributes on the way
#: (the leaf is in ``d``; ``va`` is the input address).
LeafLines = Callable[[int, str], list[str]]


def success_path_lines(
    geo: Geometry, indent: str, done: LeafLines, *, root_frame: bool = False
) -> list[str]:
    """Source of a walk's success path only, from the root entry at ``slot`` (or, with
    ``root_frame``, from the root's first storage frame ``r0``: see :func:`root_frame_ok`):
    one masked compare per descriptor decides "table, carry on" or "leaf, ``done``"; anything
    else (invalid, fault, hierarchical attributes, an unpopulated frame: KeyError) falls
    through to the code after these lines, which must re-run the careful walk to report it
    exactly.

    The shared core of the compiled translate walker and the MMU's generated lookups
    (:mod:`vaalloc.lpae.regime`)."""
    return _success_lines(geo, geo.start, indent, done, root_frame)


def root_frame_ok(geo: Geometry, root: int) -> bool:
    """Whether the root entry can be read as ``frames[r0 + ...][index]`` (4KB granule and a
    root aligned to its size, as the architecture requires of a translation table base): two
    operations fewer per walk than computing the slot address."""
    size = (geo.root_mask + 1) * 8
    return geo.table_mask == 511 and size >= 4096 and root % size == 0


def _success_lines(
    geo: Geometry, level: int, indent: str, done: LeafLines, root_frame: bool = False
) -> list[str]:
    table_check = geo.oa_excess | 3 | (_HIERARCHICAL if geo.stage1 else 0)
    leaf_check = geo.oa_excess | 0x403
    lines = _read_lines(geo, level, indent, fast=True, root_frame=root_frame)
    if level == 3:
        return [*lines, f"{indent}if d & {leaf_check} == 0x403:", *done(level, indent + "    ")]
    lines += [f"{indent}if d & {table_check} == 3:"]
    lines += _success_lines(geo, level + 1, indent + "    ", done)
    if level >= geo.first_block:
        lines += [f"{indent}elif d & {leaf_check} == 0x401:", *done(level, indent + "    ")]
    return lines


def _translate_done(geo: Geometry) -> LeafLines:
    def done(level: int, indent: str) -> list[str]:
        low = (1 << geo.shifts[level]) - 1
        return [
            *permission_lines(geo, indent, tables=False),
            f"{indent}if user:",
            f"{indent}    m >>= 3",
            f"{indent}if m & a:",
            f"{indent}    return (d & {geo.addr_mask & ~low}) | (va & {low})",
        ]

    return done


def _leaf_done(level: int, indent: str) -> list[str]:
    return [f"{indent}return (d, {level}, 0, '')"]


def _source(geo: Geometry, translate: bool, fast: bool) -> str:
    name = ("translate" if translate else "leaf") + ("" if fast else "_safe")
    args = "frames, root, va, a, user" if translate else "frames, root, va"
    if translate:
        oor = (
            f"raise FaultError(Fault('translation', {geo.out_of_range_level}, va, "
            "stage=STAGE, access=NAME[a]))"
        )
    else:
        oor = f"return (0, {geo.out_of_range_level}, 0, 'translation')"
    lines = [
        f"def {name}({args}):",
        f"    if va >= {geo.ia_limit}:",
        f"        {oor}",
        "    tbl = 0",
        f"    slot = root + (((va >> {geo.shifts[geo.start]}) & {geo.root_mask}) << 3)",
    ]
    fallback = f"{name}_safe({args})"
    if fast:
        # Unpopulated memory on the way is rare (it means a fault): let the dict raise
        # KeyError and redo the walk with the careful reads, instead of testing every read.
        done = _translate_done(geo) if translate else _leaf_done
        body = success_path_lines(geo, "        ", done)
        lines += [
            "    try:",
            *body,
            "    except KeyError:",
            "        pass",
            f"    return {fallback}",
        ]
    else:
        lines += ["    fget = frames.get", *_level_lines(geo, geo.start, "    ", translate, False)]
    return "\n".join(lines) + "\n"


def _compile(geo: Geometry, translate: bool) -> Any:
    namespace: dict[str, Any] = {
        "LUT": geo.lut,
        "PERMS": geo.leaf_perms,
        "Fault": Fault,
        "FaultError": FaultError,
        "STAGE": geo.fmt.stage,
        "NAME": {1: "read", 2: "write", 4: "exec"},
    }
    source = _source(geo, translate, False) + _source(geo, translate, True)
    exec(compile(source, f"<lpae-walk {geo.fmt.name}>", "exec"), namespace)
    return namespace["translate" if translate else "leaf"]


def leaf_fn(geo: Geometry) -> LeafFn:
    """The compiled ``leaf`` walker of ``geo`` (see :data:`LeafFn`), cached."""
    fn = _LEAF_CACHE.get(geo)
    if fn is None:
        fn = _LEAF_CACHE[geo] = _compile(geo, translate=False)
    return fn


def translate_fn(geo: Geometry) -> TranslateFn:
    """The compiled ``translate`` walker of ``geo`` (see :data:`TranslateFn`), cached."""
    fn = _TRANSLATE_CACHE.get(geo)
    if fn is None:
        fn = _TRANSLATE_CACHE[geo] = _compile(geo, translate=True)
    return fn
