"""Random raw translation tables, and a checker that compares your walker with vaalloc's.

:func:`raw_tables` writes descriptors straight into a :class:`~vaalloc.lpae.PhysicalMemory`
(no ``PageTable`` rules): tables, blocks and pages at every level, including blocks where the
granule forbids them, invalid entries (bit 0 clear, other bits random), level-3 ``0b01``
entries, AF = 0, read-only and execute-never leaves, table attribute bits (APTable, XNTable),
output addresses beyond the output size, and loops (an entry pointing back at its own table or
an ancestor, as the VLPT does).  Each table comes with probe addresses that go through the
entries written.

:func:`check_walker` walks one address with your walker and with :func:`vaalloc.lpae.walk.walk`
and raises :class:`WalkMismatch` unless both give the same PA or the same fault kind and level.
Your walker is a function ``walker(read64, root, va, access) -> pa | (kind, level)`` where
``read64(pa)`` reads a descriptor and ``kind`` is ``"translation"``, ``"access-flag"``,
``"permission"`` or ``"address-size"``.  :func:`walker_test` turns it into a hypothesis test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import hypothesis.strategies as st
from hypothesis import given
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from vaalloc.lpae import ARMV7_S1, Fault, Format, PhysicalMemory, Translation
from vaalloc.lpae.walk import walk
from vaalloc.testing.alloc import RunStats
from vaalloc.testing.reference import plain_hyp_walker

__all__ = [
    "RawTables",
    "WalkMachine",
    "WalkMismatch",
    "Walker",
    "check_walker",
    "outcome",
    "raw_tables",
    "walk_cases",
    "walker_test",
]

Walker = Callable[[Callable[[int], int], int, int, str], "int | tuple[str, int]"]
"""``walker(read64, root, va, access) -> pa | (fault kind, level)``."""

FRAME = 4096
AF = 1 << 10
AP_RO = 1 << 7  # AP[2]
XN = 1 << 54
PXN = 1 << 53
AP_TABLE_RO = 1 << 62  # APTable[1]
XN_TABLE = 1 << 60


class RawTables:
    """Tables written into ``mem`` for ``fmt`` at ``root``; ``probes`` are input addresses
    through the entries written; ``entries`` describes each write (for a readable repr)."""

    def __init__(self, mem: PhysicalMemory, fmt: Format, root: int) -> None:
        self.mem, self.fmt, self.root = mem, fmt, root
        self.probes: list[int] = []
        self.entries: list[str] = []

    def __repr__(self) -> str:
        return f"RawTables({self.fmt.name}, root={self.root:#x}: " + "; ".join(self.entries) + ")"

    def read64(self, pa: int) -> int:
        """A descriptor read, as a port's walker would do it."""
        return self.mem.read64(pa)


class WalkMismatch(AssertionError):
    """Your walker and vaalloc's disagreed; the message has the address, both outcomes, and
    the tables."""


def outcome(result: Translation | Fault) -> int | tuple[str, int]:
    """vaalloc's result in the walker's terms: the PA, or ``(fault kind, level)``."""
    if isinstance(result, Fault):
        return (result.kind, result.level)
    return result.pa


def _table_frames(fmt: Format, root: bool) -> int:
    size = fmt.root_bytes if root else fmt.granule
    return max(1, size // FRAME)


def _output(draw: st.DrawFn, fmt: Format, level: int) -> int:
    """An output address aligned to the level's block size: inside the output size, or (now
    and then) with a bit set above it, which must give an address-size fault."""
    size = fmt.block_size(level)
    limit = 1 << min(fmt.oa_bits, 40)
    pa = draw(st.integers(0, limit // size - 1)) * size
    if fmt.oa_bits < 48 and draw(st.integers(0, 9)) == 0:
        pa |= 1 << draw(st.integers(fmt.oa_bits, 47))
    return pa


def _leaf_attrs(draw: st.DrawFn) -> int:
    bits = AF if draw(st.integers(0, 4)) else 0  # AF = 0 one time in five
    if draw(st.booleans()):
        bits |= AP_RO
    if draw(st.integers(0, 3)) == 0:
        bits |= XN
    if draw(st.integers(0, 3)) == 0:
        bits |= PXN
    return bits | (draw(st.integers(0, 3)) << 8)  # SH, no effect on the outcome


@st.composite
def raw_tables(draw: st.DrawFn, fmt: Format = ARMV7_S1, max_tables: int = 5) -> RawTables:
    """Random raw tables for ``fmt`` (see the module doc); at most ``max_tables`` tables."""
    mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=64 * FRAME)
    root_frames = _table_frames(fmt, True)
    root = mem.alloc_frames(root_frames, align=root_frames)
    raw = RawTables(mem, fmt, root)
    tables: list[tuple[int, int]] = [(fmt.start_level, root)]  # (level, pa)
    queue: list[tuple[int, int, int]] = [(fmt.start_level, root, 0)]  # + VA prefix
    while queue:
        level, table, prefix = queue.pop(0)
        entries = fmt.root_entries if table == root else fmt.entries_per_table
        shift = fmt.shifts[level]
        for _ in range(draw(st.integers(1, 3))):
            index = draw(st.integers(0, min(entries, 4) - 1) | st.integers(0, entries - 1))
            va = prefix | (index << shift)
            if level == 3:
                kinds = ["invalid", "page", "page", "page", "reserved"]
            else:
                kinds = ["invalid", "block", "block", "table", "table", "table", "loop"]
            kind = draw(st.sampled_from(kinds))
            if kind == "table" and len(tables) >= max_tables:
                kind = "loop"
            desc = _descriptor(draw, raw, kind, level, tables, queue, va)
            mem.write64(table + index * 8, desc)
            raw.entries.append(f"L{level}[{index}]@{table:#x}={kind}:{desc:#x}")
            low = draw(st.integers(0, (1 << shift) - 1))
            raw.probes.append(va | (low & ~7))
    if fmt.ia_bits < fmt.ia_reg_bits:  # an input beyond the configured size
        raw.probes.append(draw(st.integers(1 << fmt.ia_bits, (1 << fmt.ia_reg_bits) - 1)))
    return raw


def _descriptor(
    draw: st.DrawFn,
    raw: RawTables,
    kind: str,
    level: int,
    tables: list[tuple[int, int]],
    queue: list[tuple[int, int, int]],
    va: int,
) -> int:
    fmt = raw.fmt
    if kind == "invalid":
        return draw(st.integers(0, (1 << 64) - 1)) & ~1
    if kind in ("block", "page", "reserved"):
        type_bits = 1 if kind != "page" else 3
        return _output(draw, fmt, level) | _leaf_attrs(draw) | type_bits
    table_bits = 0
    if fmt.stage == 1:
        table_bits = draw(st.sampled_from([0, 0, AP_TABLE_RO, XN_TABLE]))
    if kind == "loop":
        _, target = draw(st.sampled_from(tables))
        return target | 3 | table_bits
    frames = _table_frames(fmt, False)
    child = raw.mem.alloc_frames(frames, align=frames)
    tables.append((level + 1, child))
    queue.append((level + 1, child, va))
    if fmt.oa_bits < 48 and draw(st.integers(0, 9)) == 0:
        child |= 1 << 47  # a table address beyond the output size: address-size fault
    return child | 3 | table_bits


def walk_cases(
    fmt: Format = ARMV7_S1, accesses: Sequence[str] = ("read", "write")
) -> st.SearchStrategy[tuple[RawTables, int, str]]:
    """``(tables, va, access)``: random tables, one of their probes, one of ``accesses``."""

    @st.composite
    def case(draw: st.DrawFn) -> tuple[RawTables, int, str]:
        raw = draw(raw_tables(fmt))
        # The last probes go through the deepest tables, which uniform picks would starve.
        va = draw(st.sampled_from(raw.probes[-3:]) | st.sampled_from(raw.probes))
        return raw, va, draw(st.sampled_from(list(accesses)))

    return case()


def check_walker(walker: Walker, raw: RawTables, va: int, access: str = "read") -> None:
    """Walk ``va`` with ``walker`` and with vaalloc; raise :class:`WalkMismatch` unless both
    give the same PA, or the same fault kind and level.  O(levels)."""
    want = outcome(walk(raw.mem, raw.fmt, raw.root, va, access))
    got = walker(raw.read64, raw.root, va, access)
    if got != want:
        raise WalkMismatch(
            f"{access} {va:#x}: your walker gave {_show(got)}, vaalloc {_show(want)}\n{raw!r}"
        )


def walker_test(
    walker: Walker, fmt: Format = ARMV7_S1, accesses: Sequence[str] = ("read", "write")
) -> Callable[[], None]:
    """A hypothesis test (for pytest to collect) checking ``walker`` on random tables::

    test_my_walker = walker_test(my_walker, ARMV7_S1)
    """

    @given(walk_cases(fmt, accesses))
    def test(case: tuple[RawTables, int, str]) -> None:
        check_walker(walker, *case)

    return test


def _show(result: object) -> str:
    if isinstance(result, int):
        return f"pa {result:#x}"
    return f"{result[0]} fault at level {result[1]}" if isinstance(result, tuple) else repr(result)


class WalkMachine(RuleBasedStateMachine):
    """``vaalloc fuzz`` target ``walk-armv7-s1``: vaalloc's walker against
    :func:`~vaalloc.testing.reference.plain_hyp_walker` on random raw tables (one table set
    per example, many probes and accesses)."""

    run_stats: ClassVar[RunStats | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    @initialize(raw=raw_tables(ARMV7_S1))
    def setup(self, raw: RawTables) -> None:
        """The example's table set."""
        self.raw = raw

    @rule(probe=st.integers(0, 63), access=st.sampled_from(["read", "write", "exec"]))
    def walk_probe(self, probe: int, access: str) -> None:
        """One probe address and access, walked by both walkers."""
        self.steps += 1
        try:
            check_walker(
                plain_hyp_walker, self.raw, self.raw.probes[probe % len(self.raw.probes)], access
            )
        except WalkMismatch:
            if self.run_stats is not None:
                self.run_stats.record_failure()
            raise

    def teardown(self) -> None:
        """Count the example for campaigns."""
        if self.run_stats is not None:
            self.run_stats.examples += 1
            self.run_stats.steps += self.steps
