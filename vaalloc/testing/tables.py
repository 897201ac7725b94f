"""A state machine checking vaalloc's ``PageTable`` against a page-granular dict model.

Random ``map``/``unmap``/``protect`` calls on a 4MB window (1024 pages, two 2MB-block slots, so
blocks are made, split and freed) of one format; the model is ``{page VA: (PA, writable)}``.
After every call the pages around the call's edges, and a few others, are walked for read and
write, and the outcome must be what the model says: the PA, a permission fault on a read-only
page, or a translation fault on an unmapped one.  A refused call must leave the model's answer
unchanged (vaalloc's rule: a failed call changes nothing).  ``vaalloc fuzz`` runs it per format.
"""

from __future__ import annotations

from typing import ClassVar

import hypothesis.strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from vaalloc.errors import MappingError
from vaalloc.lpae import (
    AARCH64_S1_48,
    ARMV7_S1,
    ARMV7_S2_40,
    Fault,
    Format,
    PageTable,
    PhysicalMemory,
    S1Attrs,
    S2Attrs,
    Translation,
    aarch64_s2,
)
from vaalloc.testing.alloc import PortMismatch, RunStats

__all__ = ["FORMATS", "PageTableModelMachine"]

PAGE = 0x1000
WINDOW_PAGES = 1024
PA_BASE = 0x4000_0000

FORMATS: dict[str, Format] = {
    "armv7-s1": ARMV7_S1,
    "armv7-s2": ARMV7_S2_40,
    "aarch64-s1": AARCH64_S1_48,
    "aarch64-s2": aarch64_s2(40),
}
"""The formats ``vaalloc fuzz`` offers as ``pagetable-<name>`` (all 4KB granule)."""


def _attrs(fmt: Format, writable: bool) -> S1Attrs | S2Attrs:
    """Read-write or read-only leaf attributes of the format's stage."""
    if fmt.stage == 2:
        return S2Attrs(s2ap=3 if writable else 1)
    return S1Attrs(ap=0 if writable else 2)


class PageTableModelMachine(RuleBasedStateMachine):
    """``PageTable`` of ``fmt`` (a class attribute) against ``{page VA: (PA, writable)}``."""

    fmt: ClassVar[Format] = ARMV7_S1
    run_stats: ClassVar[RunStats | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.steps = 0
        self.model: dict[int, tuple[int, bool]] = {}
        self.trace: list[str] = []

    @initialize()
    def setup(self) -> None:
        """A fresh PageTable in a small RAM, and the window it is fuzzed in."""
        fmt = self.fmt
        self.mem = PhysicalMemory(40, ram_base=0x8000_0000, ram_size=512 * PAGE)
        self.pt = PageTable(self.mem, fmt)
        # The window's middle is a 1GB boundary (two level-2 tables), at 512GB where the input
        # is wide enough (two level-0 entries, or two concatenated stage-2 root pages).
        self.base = (1 << (39 if fmt.ia_bits > 39 else 31)) - 0x20_0000
        self.trace.append(f"PageTable({fmt.name}), window {self.base:#x} + {WINDOW_PAGES} pages")

    def _pages(self, first: int, count: int) -> range:
        count = min(count, WINDOW_PAGES - first)
        va = self.base + first * PAGE
        return range(va, va + count * PAGE, PAGE)

    def _call(self, what: str, call: object, expect_ok: bool) -> bool:
        self.steps += 1
        try:
            call()  # type: ignore[operator]
        except MappingError as exc:
            self.trace.append(f"{what} -> MappingError")
            if expect_ok:
                raise self._mismatch(
                    f"{what}: refused ({exc}), the model expected success"
                ) from exc
            return False
        self.trace.append(f"{what} -> ok")
        if not expect_ok:
            raise self._mismatch(f"{what}: succeeded, the model expected MappingError")
        return True

    def _mismatch(self, what: str) -> PortMismatch:
        if self.run_stats is not None:
            self.run_stats.record_failure()
        steps = "\n".join(f"  {i}: {line}" for i, line in enumerate(self.trace))
        return PortMismatch(f"{what}\ntrace:\n{steps}")

    @rule(
        first=st.integers(0, WINDOW_PAGES - 1),
        count=st.integers(1, 8) | st.integers(1, 600),
        pa_block_aligned=st.booleans(),
        writable=st.booleans(),
    )
    def map(self, first: int, count: int, pa_block_aligned: bool, writable: bool) -> None:
        """Map pages (blocks where VA and PA allow); refused exactly when one is mapped."""
        pages = self._pages(first, count)
        pa = PA_BASE + (first if pa_block_aligned else first + 1) * PAGE
        ok = not any(p in self.model for p in pages)
        what = f"map({pages.start:#x}, {pa:#x}, {len(pages)} pages, writable={writable})"
        attrs = _attrs(self.fmt, writable)
        if self._call(what, lambda: self.pt.map(pages.start, pa, len(pages) * PAGE, attrs), ok):
            for i, p in enumerate(pages):
                self.model[p] = (pa + i * PAGE, writable)
        self._probe_edges(pages)

    @rule(first=st.integers(0, WINDOW_PAGES - 1), count=st.integers(1, 600))
    def unmap(self, first: int, count: int) -> None:
        """Unmap pages; refused exactly when one of them is not mapped."""
        pages = self._pages(first, count)
        ok = all(p in self.model for p in pages)
        what = f"unmap({pages.start:#x}, {len(pages)} pages)"
        if self._call(what, lambda: self.pt.unmap(pages.start, len(pages) * PAGE), ok):
            for p in pages:
                del self.model[p]
        self._probe_edges(pages)

    @rule(first=st.integers(0, WINDOW_PAGES - 1), count=st.integers(1, 600), writable=st.booleans())
    def protect(self, first: int, count: int, writable: bool) -> None:
        """Make pages read-only or read-write; refused exactly when one is not mapped."""
        pages = self._pages(first, count)
        ok = all(p in self.model for p in pages)
        what = f"protect({pages.start:#x}, {len(pages)} pages, writable={writable})"
        attrs = _attrs(self.fmt, writable)
        if self._call(what, lambda: self.pt.protect(pages.start, len(pages) * PAGE, attrs), ok):
            for p in pages:
                self.model[p] = (self.model[p][0], writable)
        self._probe_edges(pages)

    @rule(page=st.integers(0, WINDOW_PAGES - 1), offset=st.integers(0, PAGE // 8 - 1))
    def probe(self, page: int, offset: int) -> None:
        """Walk one address of the window for read and write against the model."""
        self.steps += 1
        self._check_page(self.base + page * PAGE, offset * 8)

    def _probe_edges(self, pages: range) -> None:
        for p in (pages.start - PAGE, pages.start, pages[-1], pages[-1] + PAGE):
            if self.base <= p < self.base + WINDOW_PAGES * PAGE:
                self._check_page(p, PAGE - 8)

    def _check_page(self, va: int, offset: int) -> None:
        """Walk ``va + offset`` for read and write and compare with the model."""
        entry = self.model.get(va)
        for access in ("read", "write"):
            got = self.pt.walk(va + offset, access)
            if entry is None:
                ok = isinstance(got, Fault) and got.kind == "translation"
                want = "a translation fault"
            elif access == "write" and not entry[1]:
                ok = isinstance(got, Fault) and got.kind == "permission"
                want = "a permission fault"
            else:
                ok = isinstance(got, Translation) and got.pa == entry[0] + offset
                want = f"pa {entry[0] + offset:#x}"
            if not ok:
                raise self._mismatch(f"walk({va + offset:#x}, {access}) gave {got}, model: {want}")

    @invariant()
    def tables_are_consistent(self) -> None:
        """PageTable.check() after every step: each table linked once, none left empty."""
        if hasattr(self, "pt"):
            self.pt.check()

    def teardown(self) -> None:
        """Count the example for campaigns."""
        if self.run_stats is not None:
            self.run_stats.examples += 1
            self.run_stats.steps += self.steps
