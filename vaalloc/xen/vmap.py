"""vmap: Xen's 256MB-1GB virtual range for mapping arbitrary frames (``xen/common/vmap.c``).

Placement is :meth:`vaalloc.alloc.RangeAllocator.xen_vmap`, bit-for-bit Xen's ``vm_alloc``
(bitmap in the region's first pages, a guard page after every allocation), so the same sequence
of calls gives the same addresses as Xen. Mappings are real: 4KB pages in level-3 tables hung
from ``xen_second[128..511]`` (Xen's ``create_xen_table``), readable through any CPU's MMU.
The pages holding the allocator's own bitmap are accounted as used but not backed here.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaalloc.alloc import RangeAllocator
from vaalloc.errors import InvalidFree, OutOfSpace, RangeError
from vaalloc.lpae._checks import shown
from vaalloc.xen.hypervisor import Hypervisor, check_core
from vaalloc.xen.layout import (
    PAGE_SHIFT,
    PAGE_SIZE,
    PTE_SIZE,
    VMAP_VIRT_END,
    VMAP_VIRT_START,
    XEN_TABLE_ATTRS,
)

__all__ = ["Vmap"]


class Vmap:
    """The vmap area of a :class:`~vaalloc.xen.system.Xen` (``xen.vmap_area``).

    Every call is all or nothing: a vmap or vmalloc that cannot get its VA range, its frames or
    a level-3 table leaves the allocator (``vm_top`` included), memory and Xen's tables as
    they were; a request larger than what is free is refused at once. The constructor
    raises RangeError for a ``core`` that is not a Hypervisor.
    """

    def __init__(self, core: Hypervisor) -> None:
        self.core = check_core(core, "Vmap")
        self.allocator = RangeAllocator.xen_vmap(VMAP_VIRT_START, VMAP_VIRT_END)
        self._vmalloc: dict[int, list[int]] = {}  # va -> frames owned by vmalloc

    def vmap(self, mfns: Sequence[int]) -> int:
        """Map frames ``mfns`` (machine frame numbers) at consecutive VAs; return the first VA.

        Raises RangeError for a ``mfns`` that is not a non-empty sequence of ints (a str, a
        bool, a float is refused) or an MFN beyond physical memory, OutOfSpace when the area
        or the frames for its level-3 tables run out (nothing changed). Cost: ``len(mfns)``
        PTE writes plus one xen_second write per level-3 table created.
        """
        return self._map(self._check_mfns(mfns, "vmap"))

    def _check_mfns(self, mfns: object, what: str) -> list[int]:
        if isinstance(mfns, (str, bytes)) or not isinstance(mfns, Sequence):
            raise RangeError(f"{what}({mfns!r}): expected a sequence of frame numbers")
        if not mfns:
            raise RangeError(f"{what}([]): nothing to map")
        limit = self.core.mem.limit >> PAGE_SHIFT
        out = list(mfns)
        for mfn in out:
            if isinstance(mfn, bool) or not isinstance(mfn, int) or not 0 <= mfn < limit:
                raise RangeError(
                    f"{what}: MFN {shown(mfn)} is not a frame of physical memory "
                    f"({limit:#x} frames)"
                )
        return out

    def _map(self, mfns: list[int]) -> int:
        nr = len(mfns)
        area = self.allocator
        top = area.vm_top
        va: int = area.alloc(nr)
        pt = self.core.pagetables
        missing = pt.missing_third_tables(va, nr * PAGE_SIZE)
        tables: list[int] = []
        try:
            for _ in missing:
                tables.append(pt.alloc_table())
        except BaseException:
            for table in reversed(tables):
                pt.free_table(table)
            self._give_back(va, top)
            raise
        for base, table in zip(missing, tables, strict=True):  # Xen's create_xen_table
            pt.link_third(base, table)
        for i, mfn in enumerate(mfns):
            page_va = va + i * PAGE_SIZE
            table_pa = pt.third_table(page_va, create=False)
            assert table_pa is not None
            pt.write_pte(
                table_pa + pt.third_index(page_va) * PTE_SIZE,
                (mfn << PAGE_SHIFT) | XEN_TABLE_ATTRS,
            )
        return va

    def _give_back(self, va: int, top: int) -> None:
        """Undo ``allocator.alloc`` at ``va``, ``vm_top`` included: Xen's vm_alloc may have
        grown the bitmap for it, which a free never shrinks (snapshot and restore, the rare
        path of a failed vmap that grew the area)."""
        area = self.allocator
        area.free(va)
        if area.vm_top != top:
            snap = area.snapshot()
            snap["xen"]["vm_top"] = top
            area.restore(snap)

    def vunmap(self, va: int) -> int:
        """Unmap the vmap allocation at ``va``, flush its pages on every CPU; return #pages.

        Raises InvalidFree if ``va`` is not the start of a live vmap allocation, or belongs to
        vmalloc (use :meth:`vfree`); nothing changed then.
        """
        self._check_live(va, "vunmap")
        if va in self._vmalloc:
            raise InvalidFree(f"vunmap({va:#x}): allocated by vmalloc, use vfree")
        return self._unmap(va)

    def _check_live(self, va: object, what: str) -> None:
        if isinstance(va, bool) or not isinstance(va, int) or not self._is_start(va):
            raise InvalidFree(f"{what}({shown(va)}): not the start of a live vmap allocation")

    def _is_start(self, va: int) -> bool:
        try:
            self.allocator.size(va)
        except InvalidFree:
            return False
        return True

    def _unmap(self, va: int) -> int:
        nr = self.allocator.size(va)
        pt = self.core.pagetables
        for i in range(nr):
            page_va = va + i * PAGE_SIZE
            table = pt.third_table(page_va, create=False)
            assert table is not None
            pt.write_pte(table + pt.third_index(page_va) * PTE_SIZE, 0)
            self.core.flush_xen_va(page_va)
        self.allocator.free(va)
        return nr

    def vmalloc(self, size: int) -> int:
        """Allocate ``ceil(size / 4KB)`` fresh frames and vmap them; return the VA.

        Raises RangeError for a ``size`` that is not a positive int; OutOfSpace when frames or
        VA run out (refused at once when fewer frames, or less VA, are free than it needs;
        nothing leaked, nothing changed).
        """
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise RangeError(f"vmalloc(size={shown(size)}): size must be positive")
        nr = -(-size // PAGE_SIZE)
        mem = self.core.mem
        free = mem.frames_free
        if nr > free:
            raise OutOfSpace(f"vmalloc({size:#x}): needs {nr} frames, {free} are free")
        room = self.allocator.stats().free
        if nr > room:
            raise OutOfSpace(f"vmalloc({size:#x}): needs {nr} pages of VA, the area has {room}")
        frames: list[int] = []
        try:
            for _ in range(nr):
                frames.append(mem.alloc_frames(1))
            va = self._map([pa >> PAGE_SHIFT for pa in frames])
        except BaseException:
            for pa in reversed(frames):
                mem.free_frames(pa)
            raise
        self._vmalloc[va] = frames
        return va

    def vfree(self, va: int) -> None:
        """Undo :meth:`vmalloc`: unmap, flush, free the frames. Raises InvalidFree for a ``va``
        that is not the start of a live vmalloc allocation (nothing changed)."""
        frames = self._vmalloc.get(va) if isinstance(va, int) else None
        if frames is None:
            raise InvalidFree(f"vfree({shown(va)}): not a live vmalloc allocation")
        self._unmap(va)
        del self._vmalloc[va]
        for pa in frames:
            self.core.mem.free_frames(pa)
